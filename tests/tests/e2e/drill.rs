//! The full-system drill, the way a DBA would prove the suite before
//! trusting it: a primary archiving under pgbench, a log-shipping standby,
//! base backups alternating between the servers from the backup_queue, one
//! server down for a while, wal-sync and wal-cleanup, then point-in-time
//! restores started for real.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use e2e::{bin, run, stderr, wait_archived, wait_until, Lab, LabOptions, PgCluster};

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        stderr(&out)
    );
    stderr(&out)
}

/// A checksum of the data a restore must reproduce.
fn fingerprint(pg: &PgCluster) -> String {
    pg.psql(
        "select (select count(*) || ':' || sum(abalance) from pgbench_accounts) || '/' || \
         (select count(*) || ':' || coalesce(max(i), 0) from drill)",
    )
}

/// Restores with restore-backup into a new lab cluster and starts it;
/// returns it and what restore-backup said.
fn restore(lab: &Lab, name: &str, from: usize, target: &str, config: &Path) -> (PgCluster, String) {
    lab.restore_backup_and_start(name, from, config, &["--target", target])
}

fn drill(failing: usize) {
    let other = 3 - failing;
    let lab = Lab::with(LabOptions {
        extra_client_config: "retry_count = 3\ncooldown = 5\n".into(),
        ..Default::default()
    });
    let dst = lab.dst("main");
    let q = lab.queue_db();
    let primary = lab.archiving_primary("primary", &dst, "wal_keep_size = '1GB'");
    primary.pgbench(&["-i", "-s", "2", "-q"]);
    primary.psql(
        "create table drill(i int primary key, at timestamptz not null default clock_timestamp())",
    );
    let w = primary.switch_wal();
    wait_archived(&primary, &w, Duration::from_secs(120));

    // A log-shipping standby: restore_command only, no primary_conninfo.
    let restore_cfg = lab.restore_config("restore", "");
    let standby = lab.log_shipping_standby(
        &primary,
        "standby",
        &lab.restore_command(&restore_cfg, &dst, None),
    );
    standby.start();

    // Backups from the queue: arch1 first, then arch2 (they alternate).
    lab.set_server_config_extra(&format!(
        "queue_dsn = \"{}\"\nbackup_checkpoint = \"fast\"\nforward_cooldown = 2\n",
        q.dsn()
    ));
    q.add(&lab.host_row("main", &primary, "main"));
    ok(run(&mut lab.base_backup_cmd(1)), "base-backup on arch1");
    assert!(lab
        .stored_backup_dir(1, "main")
        .join("data.master.0/SUCCESS")
        .exists());
    // With a 1-day period arch2 is due half a period (0 days) later.
    ok(run(&mut lab.base_backup_cmd(2)), "base-backup on arch2");
    assert!(lab
        .stored_backup_dir(2, "main")
        .join("data.master.0/SUCCESS")
        .exists());

    // One server down for a while, WAL flowing.
    lab.stop_server(failing);
    primary.pgbench(&["-c", "2", "-T", "4", "-n"]);
    for i in 1..=5 {
        primary.psql(&format!("insert into drill(i) values ({i})"));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let target = primary.psql("select now()::text");
    std::thread::sleep(Duration::from_millis(1500));
    for i in 6..=10 {
        primary.psql(&format!("insert into drill(i) values ({i})"));
    }
    let w = primary.switch_wal();
    wait_archived(&primary, &w, Duration::from_secs(180));
    assert!(lab.stored_names(failing, &dst).len() < lab.stored_names(other, &dst).len());
    lab.start_server(failing);

    // wal-sync heals the gap, wal-cleanup runs, the standby catches up.
    let peer = format!("arch{failing}");
    let mut sync = lab.server_cmd(other, bin("wal-sync"));
    sync.arg(&dst).arg(&peer);
    ok(run(&mut sync), "wal-sync");
    assert_eq!(
        lab.stored_names(1, &dst),
        lab.stored_names(2, &dst),
        "wal-sync healed the gap"
    );
    let mut cleanup = lab.server_cmd(other, bin("wal-cleanup"));
    cleanup.arg(lab.backup_dir("main")).arg(&dst).arg(&peer);
    ok(run(&mut cleanup), "wal-cleanup");
    let want = fingerprint(&primary);
    wait_until(
        Duration::from_secs(180),
        "the standby to replay everything",
        || {
            standby
                .try_psql("select count(*) from drill")
                .ok()
                .as_deref()
                == Some("10")
        },
    );
    assert_eq!(fingerprint(&standby), want, "standby equals the primary");

    // PITR to the recorded time: exactly the rows committed before it.
    let (pitr, _) = restore(
        &lab,
        "pitr",
        failing,
        &format!("time:{target}"),
        &restore_cfg,
    );
    assert_eq!(
        pitr.psql("select count(*) || ' ' || max(i) from drill"),
        "5 5"
    );
    assert_eq!(
        pitr.psql(&format!("select count(*) from drill where at > '{target}'")),
        "0"
    );
    pitr.stop();
    // Restore to the end equals the primary.
    let (latest, _) = restore(&lab, "latest", other, "latest", &restore_cfg);
    assert_eq!(
        fingerprint(&latest),
        want,
        "restore to latest equals the primary"
    );
}

#[test]
fn full_drill_with_host1_failing() {
    drill(1);
}

#[test]
fn full_drill_with_host2_failing() {
    drill(2);
}

/// A time target inside the newest backup (after its START, before its
/// end) restores from the backup before it: PostgreSQL cannot stop recovery
/// before the end of the backup it started from ("requested recovery stop
/// point is before consistent recovery point"). The primary writes its
/// backup labels' START TIME in a zone named by abbreviation only (MSK), as
/// any server outside UTC does.
#[test]
fn a_time_inside_the_newest_backup_restores_from_the_one_before() {
    let lab = Lab::new();
    let dst = lab.dst("main");
    let q = lab.queue_db();
    let primary = lab.archiving_primary("primary", &dst, "log_timezone = 'Europe/Moscow'");
    primary.psql("create table ticks(i serial primary key, at timestamptz not null default clock_timestamp())");
    lab.set_server_config_extra(&format!(
        "queue_dsn = \"{}\"\nbackup_checkpoint = \"fast\"\n",
        q.dsn()
    ));
    q.add(&lab.host_row("main", &primary, "main"));
    // arch1, then arch2 (they alternate), then arch1 again a day later,
    // while transactions commit throughout.
    ok(run(&mut lab.base_backup_cmd(1)), "base-backup on arch1");
    ok(run(&mut lab.base_backup_cmd(2)), "base-backup on arch2");
    q.age_history(2);
    // Some transactions well before the backup, so that "all committed
    // before the target are restored" cannot hold vacuously.
    for _ in 0..5 {
        primary.psql("insert into ticks default values");
    }
    std::thread::sleep(Duration::from_millis(2100));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                primary.psql("insert into ticks default values");
            }
        });
        let out = run(&mut lab.base_backup_cmd(1));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        ok(out, "second base-backup on arch1");
    });
    primary.psql("insert into ticks default values");
    let w = primary.switch_wal();
    wait_archived(&primary, &w, Duration::from_secs(120));

    let newest = lab.stored_backup_dir(1, "main").join("data.master.1");
    let label = std::fs::read_to_string(newest.join("backup_label")).unwrap();
    let parsed = archive_core::server::backups::parse_label(&label).unwrap();
    let start = parsed.start_time;
    let success = std::fs::read_to_string(newest.join("SUCCESS")).unwrap();
    let field = |k: &str| archive_core::server::backups::success_value(&success, k).unwrap();
    // "2026-12-01 10:11:12 MSK": Moscow is UTC+3 all year. The START TIME
    // is cut to the second: the target is at or before the backup's start.
    let target = format!("{}+03", start.strip_suffix(" MSK").expect(&label));
    let during = primary.psql(&format!(
        "select count(*) from ticks where at > '{target}' and at < '{}'::timestamptz",
        field("consistent_by")
    ));
    assert_ne!(during, "0", "transactions committed during the backup");

    let cfg = lab.restore_config("restore", "");
    let (pitr, said) = restore(&lab, "pitr", 1, &format!("time:{target}"), &cfg);
    assert!(said.contains("restored data.master.0 "), "{said}");
    assert_eq!(
        pitr.psql(&format!("select count(*) from ticks where at > '{target}'")),
        "0"
    );
    // Every transaction committed before the target is there (`at` is
    // taken a moment before its commit: a second's margin).
    let before: i64 = primary
        .psql(&format!(
            "select count(*) from ticks where at <= '{target}'::timestamptz - interval '1 s'"
        ))
        .parse()
        .unwrap();
    let got: i64 = pitr.psql("select count(*) from ticks").parse().unwrap();
    assert!(
        before >= 5 && got >= before,
        "{got} rows, {before} expected"
    );
    pitr.stop();

    // An LSN strictly inside the newest backup: the one before it, too.
    let stop_lsn = archive_core::server::backups::parse_lsn(field("stop_lsn")).unwrap();
    assert!(stop_lsn > parsed.start_lsn + 1, "{label}");
    let inside = archive_core::common::page_header::format_lsn((parsed.start_lsn + stop_lsn) / 2);
    let (pitr, said) = restore(&lab, "pitr-lsn", 1, &format!("lsn:{inside}"), &cfg);
    assert!(said.contains("restored data.master.0 "), "{said}");
    pitr.stop();
}
