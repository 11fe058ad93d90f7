//! bench-incremental: an incremental base backup against a full one of the
//! same cluster, in one run (issue 23). Not a test: it asserts no timing;
//! it prints figures.
//!
//! In one lab run (PostgreSQL 17 or later: `E2E_PG_VERSION`, 18 by the
//! script): a cluster filled by `pgbench -i -s SCALE` with `summarize_wal =
//! on`, a backup_queue database, and ROUNDS rounds of
//!
//! - a full backup: base-backup on server 1 with `incrementals_per_full = 0`
//!   (the whole cron job, as cron runs it);
//! - CHANGE_PERMILLE / 10 % of pgbench_accounts' rows updated, the first
//!   ones (contiguous pages; their new versions fill as many new pages, and
//!   the primary key index gets entries for them): about twice that share
//!   of the table's pages changed;
//! - an incremental backup: base-backup with `incrementals_per_full = 1`,
//!   against the full one.
//!
//! Figures, per kind (medians): pg_basebackup's wall time as base-backup
//! recorded it, the whole job's, the data sent (uncompressed bytes in the
//! archives) and the bytes stored; incremental / full ratios. Both run with
//! `backup_wal_maintenance = false` and `keep_backups_cnt = 1` (the chain
//! stays whole: the full backup is kept while its incremental is).
//!
//! Run as root after `cargo build --release --workspace --bins` (or use
//! `scripts/bench-incremental.sh`). Environment:
//!
//! - `BENCH_SCALE` (100): `pgbench -i -s` (about 15 MiB per unit);
//! - `BENCH_ROUNDS` (2): measured rounds;
//! - `BENCH_CHANGE_PERMILLE` (25): rows updated between the two backups,
//!   in thousandths of pgbench_accounts;
//! - `BENCH_RESULTS_DIR`: where the results file goes (default
//!   `docs/benchmarks/`, `YYYY-MM-DD-incremental.md`; set but empty, none
//!   is written);
//! - `KEEP_LAB=1`: keep the lab dir.
//!
//! Exit status: 0 when every run succeeded, 1 when one failed.

use std::process::ExitCode;

use e2e::bench_common::{
    bench_backup_queue, env_or, exit_code, median, open_lab, pgbench_cluster, timed,
};
use e2e::bench_results::{Results, Table};
use e2e::{bin, LabOptions, QueueDb};

fn main() -> ExitCode {
    exit_code("bench-incremental", bench())
}

/// One backup's figures, from base-backup's own record in the queue.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    job: f64,
    pg_basebackup: f64,
    data_bytes: f64,
    stored_bytes: f64,
}

fn last_task(q: &QueueDb, job: f64) -> Result<(Figures, String), String> {
    let row = q.sql(
        "select concat_ws(' ', details->>'pg_basebackup_seconds', details->>'data_bytes', \
         details->>'stored_bytes', details->>'kind', coalesce(details->>'parent', '-')) \
         from backups.tasks where status = 'done' order by id desc limit 1",
    );
    let f: Vec<&str> = row.split_whitespace().collect();
    let num = |i: usize| -> Result<f64, String> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("task details {row:?}"))
    };
    Ok((
        Figures {
            job,
            pg_basebackup: num(0)?,
            data_bytes: num(1)?,
            stored_bytes: num(2)?,
        },
        format!(
            "{} (parent {})",
            f.get(3).unwrap_or(&"?"),
            f.get(4).unwrap_or(&"?")
        ),
    ))
}

fn bench() -> Result<(), String> {
    let scale: u32 = env_or("BENCH_SCALE", 100)?;
    let rounds: usize = env_or("BENCH_ROUNDS", 2)?;
    let permille: u32 = env_or("BENCH_CHANGE_PERMILLE", 25)?;
    if e2e::pg_version() < 17 {
        return Err(format!(
            "incremental backups need PostgreSQL 17 or later; E2E_PG_VERSION is {}",
            e2e::pg_version()
        ));
    }
    let mut out = Results::new("incremental");
    let lab = open_lab(&mut out, LabOptions::default());
    let q = lab.queue_db();
    let (pg, db_bytes) = pgbench_cluster(&lab, "bench-incremental", scale)?;
    pg.psql("alter system set summarize_wal = on");
    pg.psql("select pg_reload_conf()");
    bench_backup_queue(&lab, &q, &pg);
    let rows: u64 = u64::from(scale) * 100_000 * u64::from(permille) / 1000;
    let pages = pg.psql("select relpages from pg_class where relname = 'pgbench_accounts'");

    let backup = |per_full: u32, what: &str| -> Result<(Figures, String), String> {
        q.sql(&format!(
            "update backups.hosts set incrementals_per_full = {per_full} where cluster_name = 'bench'"
        ));
        q.age_history(2);
        let job = timed(&mut lab.server_cmd(1, bin("base-backup")), what)?;
        last_task(&q, job)
    };
    let (mut full, mut incr) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (f, kind_f) = backup(0, "full base-backup")?;
        pg.psql(&format!(
            "update pgbench_accounts set abalance = abalance + 1 where aid <= {rows}"
        ));
        let (i, kind_i) = backup(1, "incremental base-backup")?;
        if !kind_i.starts_with("incremental") {
            return Err(format!("the second backup of round {round} was {kind_i}"));
        }
        eprintln!(
            "bench-incremental: round {round}: {kind_f}: job {:.2}s, pg_basebackup {:.2}s, {:.1} MiB sent, {:.1} MiB stored | {kind_i}: job {:.2}s, pg_basebackup {:.2}s, {:.1} MiB sent, {:.1} MiB stored",
            f.job,
            f.pg_basebackup,
            f.data_bytes / 1048576.0,
            f.stored_bytes / 1048576.0,
            i.job,
            i.pg_basebackup,
            i.data_bytes / 1048576.0,
            i.stored_bytes / 1048576.0,
        );
        full.push(f);
        incr.push(i);
    }
    let med = |v: &[Figures], f: fn(&Figures) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let mut table = Table::new(&[
        "backup",
        "pg_basebackup s",
        "whole job s",
        "sent MiB",
        "stored MiB",
    ]);
    let mut lines = String::new();
    for (name, v) in [("full", &full), ("incremental", &incr)] {
        let (p, j, d, s) = (
            med(v, |x| x.pg_basebackup),
            med(v, |x| x.job),
            med(v, |x| x.data_bytes) / 1048576.0,
            med(v, |x| x.stored_bytes) / 1048576.0,
        );
        lines.push_str(&format!(
            "{name:<12} pg_basebackup {p:6.2}s | job {j:6.2}s | sent {d:8.1} MiB | stored {s:8.1} MiB\n"
        ));
        table.row(vec![
            name.into(),
            format!("{p:.2}"),
            format!("{j:.2}"),
            format!("{d:.1}"),
            format!("{s:.1}"),
        ]);
    }
    let ratio = |f: fn(&Figures) -> f64| med(&incr, f) / med(&full, f);
    let ratios = format!(
        "incremental / full: pg_basebackup time {:.3}x, whole job {:.3}x, sent {:.3}x, stored {:.3}x",
        ratio(|x| x.pg_basebackup),
        ratio(|x| x.job),
        ratio(|x| x.data_bytes),
        ratio(|x| x.stored_bytes)
    );
    let title = format!(
        "Database {:.1} MiB (pgbench scale {scale}, pgbench_accounts {pages} pages), {rows} rows \
         ({:.1}%) of pgbench_accounts updated between the full and the incremental backup, \
         PostgreSQL {}, backup_compress client-{}:1, medians of {rounds} rounds",
        db_bytes as f64 / 1048576.0,
        f64::from(permille) / 10.0,
        e2e::pg_version(),
        e2e::lab_compress()
    );
    out.say(format!("bench-incremental: {title}\n{lines}{ratios}"));
    out.table(&format!("{title}; {ratios}"), table);
    out.write();
    Ok(())
}
