//! bench-restore-backup: restore-backup against plain `pg_basebackup` +
//! `tar -x`, and pgBackRest's `restore` where it is installed (issue 22).
//! Not a test: it asserts no timing; it prints figures and compares them
//! with the target (restore-backup within 1.2x of pg_basebackup + tar -x).
//!
//! In one lab run: a PostgreSQL 15 cluster filled by `pgbench -i -s SCALE`
//! (about 1.5 GiB at the default) and RANDOM MiB of random bytes (pgbench's
//! tables compress about 20:1, which would leave the transfer out of the
//! measure), one base-backup on archive server 1
//! (`backup_compress` COMPRESS), then ROUNDS rounds of, in turn:
//!
//! - `restore-backup`: the DBA's restore from arch1 over ssh into an empty
//!   directory (stream, decompress, unpack; recovery settings written),
//!   as postgres;
//! - `pg_basebackup + tar -x`: what a DBA without an archive does: a fresh
//!   `pg_basebackup --format=tar --wal-method=none --compress=COMPRESS
//!   --no-sync` from the database (the same data, the same compression),
//!   then `tar -x` of it (through `zstd`, `gzip` or `lz4`),
//!   the two wall times added; `--no-sync` because neither tar nor
//!   restore-backup fsyncs the unpacked files (PostgreSQL syncs the data
//!   directory when recovery starts);
//! - `pgbackrest restore` (when `pgbackrest` is on PATH): of a full backup
//!   taken once beforehand into a local repository (zstd level 1, one
//!   process; `--no-archive-check`, the lab cluster archives nowhere). Its
//!   repository is a local directory, not an archive server over ssh.
//!
//! Each restored directory is compared (file count and bytes) with the
//! first restore-backup's, then removed outside the measured window.
//! Figures: median wall time of each, MiB/s of database, ratios.
//!
//! Run as root after `cargo build --release --workspace --bins` (or
//! `scripts/bench-restore-backup.sh`). Environment:
//!
//! - `BENCH_SCALE` (100): `pgbench -i -s` (about 15 MiB per unit);
//! - `BENCH_RANDOM_MIB` (256): MiB of incompressible rows added (table
//!   `noise`, 1 KiB random bytea per row);
//! - `BENCH_ROUNDS` (3): measured rounds;
//! - `BENCH_COMPRESS` (`client-zstd:1`): base-backup's `backup_compress`
//!   and pg_basebackup's `--compress`;
//! - `BENCH_RESULTS_DIR`: where the results file goes (default
//!   `docs/benchmarks/`, `YYYY-MM-DD-restore-backup.md`); set but empty,
//!   none is written;
//! - `KEEP_LAB=1`: keep the lab dir.
//!
//! Exit status: 0 when every run succeeded (target met or not), 1 when a run
//! failed.

use std::path::Path;
use std::process::{Command, ExitCode};

use e2e::bench_common::{
    dir_bytes, env_or, env_string, exit_code, median, open_lab, pgbench_cluster, timed,
};
use e2e::bench_results::{Results, Table};
use e2e::{mkdir_postgres, run, Lab, LabOptions, PgCluster};

fn main() -> ExitCode {
    exit_code("bench-restore-backup", bench())
}

/// Files and bytes below `dir`, for comparing two restores.
fn shape(dir: &Path) -> (usize, u64) {
    let files = e2e::walk(dir)
        .iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .count();
    (files, dir_bytes(dir))
}

/// The decompressing filter `tar -x` needs for a `--compress` value.
fn tar_filter(compress: &str) -> Option<&'static str> {
    let method = compress.split(':').next().unwrap_or_default();
    match method.rsplit('-').next().unwrap_or_default() {
        "zstd" => Some("zstd"),
        "gzip" => Some("gzip"),
        "lz4" => Some("lz4"),
        _ => None,
    }
}

/// `pgbackrest` with the lab's stanza options (no config file).
fn pgbackrest(lab: &Lab, pg: &PgCluster, command: &str) -> Command {
    let repo = lab.dir().join("pgbackrest");
    let mut cmd = lab.postgres_cmd("pgbackrest");
    cmd.arg(format!(
        "--config={}",
        repo.join("pgbackrest.conf").display()
    ))
    .arg("--stanza=bench")
    .arg(format!("--repo1-path={}", repo.join("repo").display()))
    .arg(format!("--lock-path={}", repo.join("lock").display()))
    .arg(format!("--log-path={}", repo.join("log").display()))
    .arg("--log-level-console=warn")
    .arg(command);
    if command != "restore" {
        cmd.arg(format!("--pg1-socket-path={}", pg.socket_dir().display()))
            .arg(format!("--pg1-port={}", pg.port()));
    }
    if command != "stanza-create" {
        cmd.arg("--process-max=1");
    }
    if command == "backup" {
        cmd.args(["--compress-type=zst", "--compress-level=1"]);
    }
    cmd
}

fn bench() -> Result<(), String> {
    let scale: u32 = env_or("BENCH_SCALE", 100)?;
    let rounds: usize = env_or("BENCH_ROUNDS", 3)?;
    let compress = env_string("BENCH_COMPRESS", "client-zstd:1");
    let mut out = Results::new("restore-backup");
    let lab = open_lab(&mut out, LabOptions::default());
    let q = lab.queue_db();
    let random_mib: u64 = env_or("BENCH_RANDOM_MIB", 256)?;
    let (pg, _) = pgbench_cluster(&lab, "bench-restore-backup", scale)?;
    // 1 KiB of random bytes per row (64 md5s): what no compression shrinks.
    pg.psql(&format!(
        "create table noise as select r, decode(string_agg(md5(random()::text), ''), 'hex') b \
         from generate_series(1, {}) r, generate_series(1, 64) g group by r; checkpoint",
        random_mib * 1024
    ));
    let db_bytes: u64 = pg
        .psql("select sum(pg_database_size(oid)) from pg_database")
        .trim()
        .parse()
        .map_err(|e| format!("database size: {e}"))?;
    let db_mib = db_bytes as f64 / 1048576.0;

    // The backup restore-backup restores.
    lab.set_server_config_extra(&format!(
        "queue_dsn = \"{}\"\nbackup_checkpoint = \"fast\"\nbackup_wal_maintenance = false\n\
         quiet = true\nbackup_compress = \"{compress}\"\n",
        q.dsn()
    ));
    // Named main: restore-backup's lab command restores backups/main.
    q.add(&lab.host_row("main", &pg, "main"));
    timed(&mut lab.base_backup_cmd(1), "base-backup")?;
    let stored = dir_bytes(&lab.stored_backup_dir(1, "main"));

    // pgBackRest's, when it is installed.
    let have_pgbackrest = run(Command::new("pgbackrest").arg("version"))
        .status
        .success();
    let mut pgbackrest_note =
        String::from("pgbackrest is not installed (apt-get install pgbackrest)");
    if have_pgbackrest {
        let repo = lab.dir().join("pgbackrest");
        for d in ["", "repo", "lock", "log"] {
            mkdir_postgres(repo.join(d), 0o700);
        }
        e2e::write_postgres_file(repo.join("pgbackrest.conf"), "", 0o600);
        let data = format!("--pg1-path={}", pg.data_dir().display());
        timed(
            pgbackrest(&lab, &pg, "stanza-create").arg(&data),
            "pgbackrest stanza-create",
        )?;
        let secs = timed(
            pgbackrest(&lab, &pg, "backup").arg(&data).args([
                "--type=full",
                "--start-fast",
                "--no-archive-check",
            ]),
            "pgbackrest backup",
        )?;
        pgbackrest_note = format!(
            "{}: full backup in {secs:.1}s, repository {:.1} MiB (local directory, zst level 1, process-max 1)",
            e2e::stdout(&run(Command::new("pgbackrest").arg("version"))).trim(),
            dir_bytes(&repo.join("repo")) as f64 / 1048576.0
        );
    }
    out.say(format!(
        "bench-restore-backup: database {db_mib:.1} MiB (pgbench scale {scale}, {random_mib} MiB random); backup_compress {compress}: {:.1} MiB stored on arch1; {pgbackrest_note}",
        stored as f64 / 1048576.0
    ));

    let target = lab.dir().join("pg").join("target");
    let plain = lab.dir().join("plain");
    let cfg = lab.restore_config("bench-restore", "");
    let reset = |p: &Path| {
        let _ = std::fs::remove_dir_all(p);
    };
    let mut want = None;
    let (mut ours, mut baseline, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    let mut check = |what: &str, dir: &Path| -> Result<(), String> {
        let got = shape(dir);
        match want {
            None => want = Some(got),
            Some(w) if w.0.abs_diff(got.0) <= 4 && w.1.abs_diff(got.1) <= 1 << 20 => {}
            Some(w) => {
                return Err(format!(
                    "{what} restored {got:?} (files, bytes), restore-backup {w:?}"
                ))
            }
        }
        Ok(())
    };
    for round in 1..=rounds {
        // restore-backup.
        reset(&target);
        let secs = timed(
            &mut lab.restore_backup_cmd(1, &cfg, &target),
            "restore-backup",
        )?;
        check("restore-backup", &target)?;
        reset(&target);
        ours.push(secs);

        // pg_basebackup, then tar -x.
        reset(&plain);
        mkdir_postgres(&plain, 0o700);
        let pgbb = timed(
            pg.cmd("pg_basebackup")
                .arg("--pgdata")
                .arg(plain.join("tar"))
                .args([
                    "--format=tar",
                    "--wal-method=none",
                    "--checkpoint=fast",
                    "--no-sync",
                    "--no-password",
                ])
                .arg(format!("--compress={compress}")),
            "pg_basebackup",
        )?;
        let archive = std::fs::read_dir(plain.join("tar"))
            .map_err(|e| format!("{}: {e}", plain.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("base.tar"))
            .ok_or("pg_basebackup wrote no base.tar")?;
        mkdir_postgres(&target, 0o700);
        let mut tar = lab.postgres_cmd("tar");
        tar.arg("-xf")
            .arg(plain.join("tar").join(&archive))
            .arg("-C")
            .arg(&target);
        if let Some(f) = tar_filter(&compress) {
            tar.arg(format!("--use-compress-program={f}"));
        }
        let untar = timed(&mut tar, "tar -x")?;
        check("pg_basebackup + tar -x", &target)?;
        reset(&target);
        reset(&plain);
        baseline.push(pgbb + untar);

        // pgbackrest restore.
        let mut theirs_line = String::new();
        if have_pgbackrest {
            mkdir_postgres(&target, 0o700);
            let secs = timed(
                pgbackrest(&lab, &pg, "restore").arg(format!("--pg1-path={}", target.display())),
                "pgbackrest restore",
            )?;
            check("pgbackrest restore", &target)?;
            reset(&target);
            theirs.push(secs);
            theirs_line = format!(", pgbackrest restore {secs:.2}s");
        }
        eprintln!(
            "bench-restore-backup: round {round}: restore-backup {:.2}s, pg_basebackup {pgbb:.2}s + tar -x {untar:.2}s{theirs_line}",
            ours[round - 1]
        );
    }
    let (mo, mb) = (median(&ours), median(&baseline));
    let ratio = mo / mb;
    let ok = ratio <= 1.2;
    let mut table = Table::new(&[
        "restore",
        "median s",
        "MiB/s of database",
        "vs pg_basebackup + tar -x",
    ]);
    let mut row = |name: &str, secs: f64| {
        table.row(vec![
            name.into(),
            format!("{secs:.2}"),
            format!("{:.1}", db_mib / secs),
            format!("{:.2}x", secs / mb),
        ])
    };
    row("restore-backup (from arch1 over ssh)", mo);
    row("pg_basebackup + tar -x", mb);
    let mut lines = format!(
        "restore-backup          {mo:6.2}s {:7.1} MiB/s\npg_basebackup + tar -x  {mb:6.2}s {:7.1} MiB/s\n",
        db_mib / mo,
        db_mib / mb
    );
    if !theirs.is_empty() {
        let mt = median(&theirs);
        row("pgbackrest restore (local repository)", mt);
        lines.push_str(&format!(
            "pgbackrest restore      {mt:6.2}s {:7.1} MiB/s\n",
            db_mib / mt
        ));
    }
    out.say(format!(
        "bench-restore-backup: medians of {rounds} rounds\n{lines}restore-backup / (pg_basebackup + tar -x) = {ratio:.2} (target at most 1.2: {})",
        if ok { "met" } else { "MISSED" }
    ));
    out.table(
        &format!("Database {db_mib:.1} MiB (pgbench scale {scale}, {random_mib} MiB random), backup_compress {compress}, medians of {rounds} rounds"),
        table,
    );
    out.write();
    Ok(())
}
