//! bench-backup: base-backup against plain pg_basebackup (issue 4, item 4).
//! Not a test: it asserts no timing; it prints figures and compares them
//! with the target (base-backup within 10% of pg_basebackup's wall time).
//!
//! In one lab run: a PostgreSQL 15 cluster filled by `pgbench -i -s SCALE`,
//! a backup_queue database, and for each compression, ROUNDS alternating
//! pairs of
//!
//! - `pg_basebackup`: the same command base-backup runs (`--format=tar
//!   --wal-method=none --manifest-checksums=CRC32C --checkpoint=fast
//!   --compress=C`, into a directory under the archive root), run as postgres
//!   in archive server 1's namespace, like base-backup; its output removed
//!   after each round, outside the measured window;
//! - `base-backup`: the whole cron job on server 1 (lock, get_next,
//!   pg_basebackup, verification against the manifest, backup_label,
//!   SUCCESS, rotation with keep_backups_cnt = 1 — which removes the
//!   previous round's backup — and backups.stop), with
//!   `backup_wal_maintenance = false` (wal-cleanup and wal-sync measure
//!   something else: the WAL archive).
//!
//! A first, unmeasured pair warms the caches. Figures: median wall time of
//! each, throughput (database bytes / wall time), base-backup / plain.
//!
//! Run as root after `cargo build --release --workspace --bins` (or use
//! `scripts/bench-backup.sh`). Environment:
//!
//! - `BENCH_SCALE` (100): `pgbench -i -s` (about 15 MiB per unit);
//! - `BENCH_ROUNDS` (3): measured pairs per compression;
//! - `BENCH_COMPRESS` (`client-zstd:1,none`): comma-separated `--compress`
//!   values;
//! - `BENCH_RESULTS_DIR`: where the results file goes (default
//!   `docs/benchmarks/`, `YYYY-MM-DD-backup.md`, a section appended per
//!   completed run: see `e2e::bench_results`); set but empty, none is
//!   written;
//! - `KEEP_LAB=1`: keep the lab dir.
//!
//! Exit status: 0 when every run succeeded (target met or not), 1 when a run
//! failed.

use std::process::ExitCode;

use e2e::bench_common::{
    bench_backup_queue, dir_bytes, env_list, env_or, median, open_lab, pgbench_cluster, timed,
};
use e2e::bench_results::{Results, Table};
use e2e::{bin, LabOptions};

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-backup: {e}");
            ExitCode::from(1)
        }
    }
}

fn bench() -> Result<(), String> {
    let scale: u32 = env_or("BENCH_SCALE", 100)?;
    let rounds: usize = env_or("BENCH_ROUNDS", 3)?;
    let compressions = env_list("BENCH_COMPRESS", "client-zstd:1,none");
    let mut out = Results::new("backup");
    let lab = open_lab(&mut out, LabOptions::default());
    let q = lab.queue_db();
    let (pg, db_bytes) = pgbench_cluster(&lab, "bench-backup", scale)?;
    bench_backup_queue(&lab, &q, &pg);
    let plain_dir = lab.archive_root().join("plain");
    let plain_host = lab.server(1).stored("plain");

    let pg_basebackup = |c: &str| {
        let mut cmd = lab.server_cmd(1, e2e::pg_bin("pg_basebackup"));
        cmd.arg("--dbname")
            .arg(format!(
                "host={} port={} user=postgres",
                pg.socket_dir().display(),
                pg.port()
            ))
            .arg("--pgdata")
            .arg(&plain_dir)
            .args([
                "--format=tar",
                "--wal-method=none",
                "--manifest-checksums=CRC32C",
                "--checkpoint=fast",
                "--no-password",
            ])
            .arg(format!("--compress={c}"));
        cmd
    };
    let base_backup = |c: &str| {
        let mut cmd = lab.server_cmd(1, bin("base-backup"));
        cmd.arg("--set").arg(format!("backup_compress={c}"));
        cmd
    };

    let mut report = String::new();
    let mut all_ok = true;
    let mut table = Table::new(&[
        "--compress",
        "pg_basebackup s",
        "MiB/s",
        "base-backup s",
        "MiB/s",
        "ratio",
        "target",
        "stored MiB",
        "base-backup's own pg_basebackup / total s",
    ]);
    for c in &compressions {
        let mut plain = Vec::new();
        let mut ours = Vec::new();
        let mut stored = 0u64;
        for round in 0..=rounds {
            let p = timed(&mut pg_basebackup(c), "pg_basebackup")?;
            stored = dir_bytes(&plain_host);
            std::fs::remove_dir_all(&plain_host).map_err(|e| format!("remove plain: {e}"))?;
            q.age_history(2);
            let b = timed(&mut base_backup(c), "base-backup")?;
            if round > 0 {
                plain.push(p);
                ours.push(b);
            }
            let own = q.sql(
                "select format('pg_basebackup %ss, then verification %ss, rotation %ss; job %ss', \
                 details->>'pg_basebackup_seconds', details->>'verify_extra_seconds', \
                 details->>'rotate_seconds', details->>'total_seconds') \
                 from backups.tasks where status = 'done' order by id desc limit 1",
            );
            eprintln!(
                "bench-backup: {c} round {round}{}: pg_basebackup {p:.2}s, base-backup {b:.2}s (its {own})",
                if round == 0 { " (warm-up)" } else { "" }
            );
        }
        let (mp, mb) = (median(&plain), median(&ours));
        let ratio = mb / mp;
        let ok = ratio <= 1.10;
        all_ok &= ok;
        let details = q.sql(
            "select details->>'pg_basebackup_seconds' || ' / ' || (details->>'total_seconds') \
             from backups.tasks where status = 'done' order by id desc limit 1",
        );
        report.push_str(&format!(
            "{c:<16} pg_basebackup {mp:6.2}s {:7.1} MiB/s | base-backup {mb:6.2}s {:7.1} MiB/s | ratio {ratio:.3} ({}) | stored {:.1} MiB | base-backup's own pg_basebackup/total {details}s\n",
            db_bytes as f64 / 1048576.0 / mp,
            db_bytes as f64 / 1048576.0 / mb,
            if ok { "within 10%" } else { "MISSED the 10% target" },
            stored as f64 / 1048576.0,
        ));
        table.row(vec![
            c.clone(),
            format!("{mp:.2}"),
            format!("{:.1}", db_bytes as f64 / 1048576.0 / mp),
            format!("{mb:.2}"),
            format!("{:.1}", db_bytes as f64 / 1048576.0 / mb),
            format!("{ratio:.3}"),
            if ok {
                "within 10%"
            } else {
                "MISSED the 10% target"
            }
            .into(),
            format!("{:.1}", stored as f64 / 1048576.0),
            details,
        ]);
    }
    let status = q.sql("select count(*) filter (where status = 'done') || ' done, ' || count(*) filter (where status <> 'done') || ' not' from backups.tasks");
    out.say(format!(
        "bench-backup: database {:.1} MiB (pgbench scale {scale}), {rounds} measured rounds per compression, medians; tasks: {status}\n{report}target (base-backup within 10% of pg_basebackup): {}",
        db_bytes as f64 / 1048576.0,
        if all_ok { "met" } else { "missed" }
    ));
    out.table(
        &format!(
            "Database {:.1} MiB (pgbench scale {scale}), medians of {rounds} rounds",
            db_bytes as f64 / 1048576.0
        ),
        table,
    );
    out.write();
    Ok(())
}
