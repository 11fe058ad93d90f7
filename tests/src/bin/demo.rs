//! The quickstart demo: on one machine with nothing configured, two archive
//! servers (local sshd), a primary archiving through archive-cmd under
//! pgbench, a log-shipping standby fed by restore-cmd, a backup_queue
//! database and a base backup, an outage of one server and its healing.
//!
//! Run as root through `scripts/demo.sh` (it installs what is missing and
//! builds the binaries). `--keep` leaves everything running and says how to
//! stop it.

use std::time::{Duration, Instant};

use e2e::{decode, wait_archived, Lab, PgCluster, PgOptions};

const FINGERPRINT: &str =
    "select count(*) || ' accounts, balance ' || sum(abalance) from pgbench_accounts";

fn step(t0: Instant, msg: &str) {
    println!("[{:>5.1}s] {msg}", t0.elapsed().as_secs_f64());
}

/// Waits until `pg` has archived `name`; at the archiver's first failure
/// (none is expected here) shows pg_stat_archiver and the server log's
/// lines about it and returns false at once instead of waiting out a
/// timeout.
fn archived_or_explain(pg: &PgCluster, name: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let row = pg
            .try_psql(
                "select coalesce(last_archived_wal, '') || '|' || failed_count || '|' || \
                 coalesce(last_failed_wal, '') from pg_stat_archiver",
            )
            .unwrap_or_default();
        let mut f = row.split('|');
        let (last, failed, failed_wal) = (
            f.next().unwrap_or(""),
            f.next().unwrap_or("0"),
            f.next().unwrap_or(""),
        );
        if last >= name && last.len() == name.len() {
            return true;
        }
        // A command that cannot run (exit 126/127) makes the archiver exit
        // before pg_stat_archiver counts a failure: the log says it.
        let log = std::fs::read_to_string(pg.log_path()).unwrap_or_default();
        if failed != "0" || log.contains("archive command failed") || Instant::now() > deadline {
            eprintln!(
                "demo: archiving does not work: pg_stat_archiver says archived up to {last:?}, \
                 {failed} failure(s), last failed {failed_wal:?}"
            );
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("archive")
                        || l.contains("ERROR")
                        || l.contains("FATAL")
                        || l.starts_with("sh: ")
                })
                .collect();
            // The lab (and this log) is removed on the way out: quote it.
            eprintln!("demo: PostgreSQL's log said:");
            for l in &lines[lines.len().saturating_sub(8)..] {
                eprintln!("  {l}");
            }
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops the cluster and the lab (their Drop), then exits 1: exiting
/// straight away would leave PostgreSQL and both sshd running.
fn stop_and_fail(pg: PgCluster, lab: Lab) -> ! {
    drop(pg);
    drop(lab);
    std::process::exit(1)
}

fn main() {
    let keep = std::env::args().any(|a| a == "--keep");
    if keep {
        std::env::set_var("KEEP_LAB", "1");
    }
    let t0 = Instant::now();
    step(
        t0,
        "starting two archive servers (sshd on 127.0.0.2 and 127.0.0.3, each with its own storage)",
    );
    let lab = Lab::new();
    let dst = lab.dst("demo");
    for n in [1, 2] {
        let s = lab.server(n);
        println!(
            "         {}: {}:{} storage {}",
            s.name(),
            s.ip(),
            s.port(),
            s.storage().display()
        );
    }

    step(
        t0,
        "creating a PostgreSQL 15 primary with archive_command = archive-cmd",
    );
    let pg = lab.init_cluster("primary", PgOptions::default());
    let command = lab.archive_command(&dst, "demo");
    pg.set_conf(&format!(
        "archive_mode = on\narchive_command = '{command}'\n"
    ));
    pg.start();
    println!("         archive_command = '{command}'");

    step(t0, "pgbench -i -s 10, then 10 s of pgbench load");
    pg.pgbench(&["-i", "-s", "10", "-q"]);
    // Archiving must work before the load: say at once when it does not.
    let first = pg.switch_wal();
    if !archived_or_explain(&pg, &first, Duration::from_secs(120)) {
        stop_and_fail(pg, lab);
    }
    pg.pgbench(&["-c", "2", "-T", "10", "-n"]);
    let last = pg.switch_wal();
    step(t0, &format!("waiting for the archiver to reach {last}"));
    if !archived_or_explain(&pg, &last, Duration::from_secs(300)) {
        stop_and_fail(pg, lab);
    }
    println!(
        "         pg_stat_archiver: {}",
        pg.psql("select 'archived ' || archived_count || ', failed ' || failed_count || ', last ' || last_archived_wal from pg_stat_archiver")
    );

    // The first server answered; the second copy follows in the background.
    lab.settle();
    step(t0, "what each archive server holds (stored compressed, verified to decompress to the original)");
    let names1 = lab.stored_names(1, &dst);
    let names2 = lab.stored_names(2, &dst);
    for (n, names) in [(1, &names1), (2, &names2)] {
        let stored: u64 = names
            .iter()
            .map(|f| {
                std::fs::metadata(lab.stored_path(n, &dst, f))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum();
        let raw: u64 = names
            .iter()
            .filter_map(|f| lab.stored_bytes(n, &dst, f))
            .map(|b| b.len() as u64)
            .sum();
        println!(
            "         arch{n}: {} files, {:.1} MB of WAL stored in {:.1} MB ({:.1}x smaller)",
            names.len(),
            raw as f64 / 1e6,
            stored as f64 / 1e6,
            raw as f64 / stored.max(1) as f64
        );
        for f in names.iter().take(3) {
            println!("           {f}");
        }
        if names.len() > 3 {
            println!("           ... {}", names.last().unwrap());
        }
    }
    let same = names1 == names2
        && names1.iter().all(|f| {
            let a = std::fs::read(lab.stored_path(1, &dst, f)).ok();
            let b = std::fs::read(lab.stored_path(2, &dst, f)).ok();
            matches!((a, b), (Some(a), Some(b)) if decode(&a) == decode(&b))
        });
    println!(
        "         both servers hold the same WAL: {}",
        if same { "yes" } else { "NO" }
    );

    step(
        t0,
        "a log-shipping standby: restore_command = restore-cmd, no streaming replication",
    );
    let restore_cfg = lab.restore_config("standby-cfg", "");
    let standby = lab.log_shipping_standby(
        &pg,
        "standby",
        &lab.restore_command(&restore_cfg, &dst, None),
    );
    standby.start();
    let want = pg.psql(FINGERPRINT);
    standby.wait_for(FINGERPRINT, &want, Duration::from_secs(120));
    println!("         standby caught up from the archive: {want}");

    step(
        t0,
        "a backup_queue database and base-backup, as cron runs it on arch1",
    );
    let q = lab.queue_db();
    lab.set_server_config_extra(&format!(
        "queue_dsn = \"{}\"\nbackup_checkpoint = \"fast\"\n",
        q.dsn()
    ));
    q.add(&lab.host_row("demo", &pg, "demo"));
    let out = e2e::run(&mut lab.base_backup_cmd(1));
    assert!(
        out.status.success(),
        "base-backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backup = lab.stored_backup_dir(1, "demo").join("data.master.0");
    println!("         {}:", backup.display());
    for f in e2e::list_files(&backup) {
        let len = std::fs::metadata(backup.join(&f))
            .map(|m| m.len())
            .unwrap_or(0);
        println!("           {f} ({:.1} MB)", len as f64 / 1e6);
    }

    step(
        t0,
        "archiving with arch1 down: the same calls go to arch2, which owes arch1 a copy",
    );
    lab.stop_server(1);
    pg.pgbench(&["-c", "2", "-T", "3", "-n"]);
    let last = pg.switch_wal();
    wait_archived(&pg, &last, Duration::from_secs(120));
    println!(
        "         arch2 owes arch1 {} segment(s)",
        lab.owed_names(2, &dst).len()
    );
    lab.start_server(1);
    step(
        t0,
        "arch1 is back: the next segments bring it what it missed",
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while lab.stored_names(1, &dst) != lab.stored_names(2, &dst) && Instant::now() < deadline {
        pg.psql("select pg_logical_emit_message(false, 'demo', 'tick')");
        let last = pg.switch_wal();
        wait_archived(&pg, &last, Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(2));
    }
    println!(
        "         arch1 {} files, arch2 {} files, owed {}",
        lab.stored_names(1, &dst).len(),
        lab.stored_names(2, &dst).len(),
        lab.owed_names(2, &dst).len()
    );

    let want = pg.psql(FINGERPRINT);
    standby.wait_for(FINGERPRINT, &want, Duration::from_secs(120));
    println!("         standby still equals the primary: {want}");

    step(t0, "done");
    if keep {
        println!(
            "Left running in {}. Stop it with: pkill -f {}; then rm -rf {}",
            lab.dir().display(),
            lab.dir().display(),
            lab.dir().display()
        );
        std::mem::forget(pg);
        std::mem::forget(standby);
        std::mem::forget(q);
        std::mem::forget(lab);
    }
}
