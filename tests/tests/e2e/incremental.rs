//! Incremental base backups (PostgreSQL 17 and later): a full backup, two
//! incrementals with pgbench load between them, the second restored with
//! pg_combinebackup to a point after it; rotation keeping the chain whole;
//! a missing parent making the next backup a full one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::{descendants, run, stderr, wait_archived, Lab, PgCluster, QueueDb};

/// base-backup on server 1, made due first; returns what it logged.
fn backup(lab: &Lab, q: &QueueDb) -> String {
    q.age_history(2);
    let out = run(&mut lab.base_backup_cmd(1));
    let said = stderr(&out);
    assert!(out.status.success(), "base-backup on arch1: {said}");
    said
}

/// SUCCESS of data.master.`n` on server 1.
fn success(lab: &Lab, n: u32) -> String {
    let p = lab
        .stored_backup_dir(1, "main")
        .join(format!("data.master.{n}"))
        .join("SUCCESS");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The backups on server 1, as "data.master.N" names (numbered only).
fn backups(lab: &Lab) -> Vec<String> {
    names(&lab.stored_backup_dir(1, "main"))
        .into_iter()
        .filter(|n| {
            n.strip_prefix("data.master.")
                .is_some_and(|i| i.parse::<u32>().is_ok())
        })
        .collect()
}

/// Sorted names of everything in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn accounts(pg: &PgCluster) -> String {
    pg.psql("select count(*) || ':' || sum(abalance) from pgbench_accounts")
}

/// The major version of the lab's `program` (a client program).
fn client_major(program: &str) -> u32 {
    let out = run(Command::new(e2e::pg_bin(program)).arg("--version"));
    let text = e2e::stdout(&out);
    // "pg_combinebackup (PostgreSQL) 18.1"
    text.split_whitespace()
        .last()
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("pg_combinebackup --version: {text}"))
}

fn skip_before_17(test: &str) -> bool {
    if e2e::pg_version() < 17 {
        eprintln!(
            "{test}: skipped: incremental backups need PostgreSQL 17 or later (E2E_PG_VERSION={})",
            e2e::pg_version()
        );
        return true;
    }
    false
}

/// [`Lab::pitr_setup`] with `incrementals_per_full`, keep_backups_cnt 1 and
/// pgbench's tables at `scale`.
fn setup(lab: &Lab, primary_conf: &str, per_full: u32, scale: u32) -> (QueueDb, PgCluster) {
    let (q, primary) = lab.pitr_setup(primary_conf);
    q.sql(&format!(
        "update backups.hosts set incrementals_per_full = {per_full}, keep_backups_cnt = 1 \
         where cluster_name = 'main'"
    ));
    primary.pgbench(&["-i", "-s", &scale.to_string(), "-q"]);
    (q, primary)
}

#[test]
fn incrementals_restore_through_their_chain_and_rotation_keeps_it_whole() {
    if skip_before_17("incrementals_restore_through_their_chain") {
        return;
    }
    let lab = Lab::new();
    let (q, primary) = setup(&lab, "summarize_wal = on\n", 2, 2);
    let shown = e2e::stdout(&q.tool(&lab, &["show"]));
    assert!(shown.contains("1d, 2 incremental(s) per full"), "{shown}");

    let said = backup(&lab, &q);
    assert!(said.contains("full backup: no complete backup"), "{said}");
    assert!(!success(&lab, 0).contains("kind="), "{}", success(&lab, 0));

    primary.pgbench(&["-t", "300", "-c", "2"]);
    let said = backup(&lab, &q);
    assert!(
        said.contains("incremental backup against data.master.0"),
        "{said}"
    );
    let s1 = success(&lab, 1);
    assert!(
        s1.contains("kind=incremental\n") && s1.contains("parent=data.master.0\n"),
        "{s1}"
    );
    // keep_backups_cnt 1: the incremental is the one restorable point kept,
    // and its full backup stays with it.
    assert_eq!(backups(&lab), ["data.master.0", "data.master.1"]);

    primary.pgbench(&["-t", "300", "-c", "2"]);
    let said = backup(&lab, &q);
    assert!(
        said.contains("incremental backup against data.master.1"),
        "{said}"
    );
    assert!(success(&lab, 2).contains("parent=data.master.1\n"));
    assert_eq!(
        backups(&lab),
        ["data.master.0", "data.master.1", "data.master.2"]
    );
    // archive-status shows the chain.
    let out = run(lab
        .postgres_cmd(e2e::bin("archive-status"))
        .arg("--config")
        .arg(lab.monitor_config())
        .args(["report", "--queue-dsn", &q.dsn()]));
    let report = e2e::stdout(&out);
    for want in [
        "backup data.master.1: complete, incremental of data.master.0, START WAL",
        "backup data.master.2: complete, incremental of data.master.1, START WAL",
    ] {
        assert!(report.contains(want), "{want} in {report}");
    }
    assert!(
        report.contains("backup data.master.0 [oldest kept]: complete, START WAL"),
        "{report}"
    );
    // archive-remote-cmd verify proves incrementals like full backups.
    let out = run(lab.server_cmd(1, e2e::bin("archive-remote-cmd")).args([
        "verify",
        "--dir",
        &lab.dst("main"),
        "--backup-dir",
        &lab.backup_dir("main"),
    ]));
    let said = e2e::stdout(&out);
    assert!(
        out.status.success() && said.contains(": clean: ") && said.contains(" 3 backup(s)"),
        "{said}\n{}",
        stderr(&out)
    );
    // An incremental holds the changed blocks only.
    let size = |n: u32| -> u64 {
        let dir = lab
            .stored_backup_dir(1, "main")
            .join(format!("data.master.{n}"));
        std::fs::metadata(dir.join(e2e::lab_base_tar()))
            .unwrap()
            .len()
    };
    assert!(
        size(2) * 2 < size(0),
        "incremental {} vs full {}",
        size(2),
        size(0)
    );

    // A point after the second incremental.
    primary.psql("insert into t(i, k) values (1, 'before')");
    std::thread::sleep(Duration::from_millis(1100));
    let target = primary.psql("select now()::text");
    let want_accounts = accounts(&primary);
    std::thread::sleep(Duration::from_millis(1100));
    primary.psql("insert into t(i, k) values (2, 'after')");
    primary.pgbench(&["-t", "50"]);
    let w = primary.switch_wal();
    wait_archived(&primary, &w, Duration::from_secs(120));

    let cfg = lab.restore_config("restore-incr", "");
    let target_arg = format!("time:{target}");
    if client_major("pg_combinebackup") == e2e::pg_version() {
        let (pg, said) = lab.restore_backup_and_start("incr", 1, &cfg, &["--target", &target_arg]);
        assert!(said.contains("restored data.master.2 "), "{said}");
        assert_eq!(
            pg.psql("select string_agg(i || k, ',' order by i) from t"),
            "1before"
        );
        assert_eq!(accounts(&pg), want_accounts);
        pg.stop();
    } else {
        // The lab's PostgreSQL 17 has no pg_combinebackup of its own (its
        // client programs are 18's), which cannot read 17's pg_control.
        eprintln!(
            "restore of the chain: refused, no pg_combinebackup of PostgreSQL {}",
            e2e::pg_version()
        );
        let dir = lab.dir().join("pg").join("incr");
        let out = run(lab
            .restore_backup_cmd(1, &cfg, &dir)
            .args(["--target", &target_arg]));
        let said = stderr(&out);
        assert!(!out.status.success(), "{said}");
        assert!(
            said.contains(&format!(
                "needs PostgreSQL {v}'s pg_combinebackup, but the one found is {}'s",
                client_major("pg_combinebackup"),
                v = e2e::pg_version()
            )),
            "{said}"
        );
    }
    assert!(
        !names(&lab.dir().join("pg"))
            .iter()
            .any(|n| n.contains(".chain.")),
        "the scratch chain is removed"
    );

    // Two incrementals since the full one: the next is full, and the old
    // chain then goes as a whole.
    let said = backup(&lab, &q);
    assert!(said.contains("a full backup is due"), "{said}");
    assert_eq!(backups(&lab), ["data.master.0"]);
    assert!(!success(&lab, 0).contains("kind="));

    // A missing parent: the incremental left is no restorable point and
    // the next backup is full.
    let said = backup(&lab, &q);
    assert!(
        said.contains("incremental backup against data.master.0"),
        "{said}"
    );
    let stored = lab.stored_backup_dir(1, "main");
    std::fs::remove_dir_all(stored.join("data.master.0")).unwrap();
    let out = run(lab
        .restore_backup_cmd(1, &cfg, &lab.dir().join("pg").join("broken"))
        .args(["--backup", "1"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "backup data.master.1 is incremental and the backup it was taken against is gone"
        ),
        "{}",
        stderr(&out)
    );
    let said = backup(&lab, &q);
    assert!(said.contains("parent is gone"), "{said}");
    assert_eq!(backups(&lab), ["data.master.0"]);
    assert!(!success(&lab, 0).contains("kind="), "a full backup");
}

/// summarize_wal off, WAL summaries gone (as after
/// `wal_summary_keep_time`: pg_basebackup refuses the incremental and a full
/// one is taken in the same run), and a damaged parent manifest: each gives
/// a full backup, the reason logged. An incremental verifies with
/// pg_verifybackup too.
#[test]
fn without_wal_summaries_or_with_a_damaged_parent_the_backup_is_full() {
    if skip_before_17("without_wal_summaries_or_with_a_damaged_parent") {
        return;
    }
    let lab = Lab::new();
    let (q, primary) = setup(&lab, "", 3, 1);
    backup(&lab, &q);
    let said = backup(&lab, &q);
    assert!(
        said.contains("full backup: summarize_wal is off on"),
        "{said}"
    );
    assert_eq!(backups(&lab), ["data.master.0"]);

    primary.psql("alter system set summarize_wal = on");
    primary.psql("select pg_reload_conf()");
    primary.pgbench(&["-t", "100"]);
    // pg_verifybackup reads only its own version's pg_control: the lab's
    // PostgreSQL 17 has 18's.
    let verify = if client_major("pg_verifybackup") == e2e::pg_version() {
        "pg_verifybackup"
    } else {
        "manifest"
    };
    let incremental_verified = |parent: &str| {
        q.age_history(2);
        let out = run(lab
            .base_backup_cmd(1)
            .args(["--set", &format!("backup_verify={verify}")]));
        let said = stderr(&out);
        assert!(out.status.success(), "{said}");
        assert!(
            said.contains(&format!(
                "incremental (parent {parent}) backup verified ({verify}"
            )),
            "{said}"
        );
    };
    incremental_verified("data.master.0");
    assert!(success(&lab, 1).contains("kind=incremental\n"));
    assert_eq!(backups(&lab), ["data.master.0", "data.master.1"]);

    // The WAL summaries since the parent are gone (once written).
    primary.pgbench(&["-t", "100"]);
    let lsn = primary.psql("select pg_current_wal_lsn()");
    primary.psql("checkpoint");
    e2e::wait_until(Duration::from_secs(60), "WAL summaries", || {
        primary.psql(&format!(
            "select coalesce(max(end_lsn) >= '{lsn}', false) from pg_available_wal_summaries()"
        )) == "t"
    });
    let summaries = primary.data_dir().join("pg_wal").join("summaries");
    for f in names(&summaries) {
        std::fs::remove_file(summaries.join(f)).unwrap();
    }
    primary.pgbench(&["-t", "100"]);
    let said = backup(&lab, &q);
    assert!(
        said.contains("the incremental backup against data.master.1 failed")
            && said.contains("taking a full backup instead"),
        "{said}"
    );
    assert_eq!(backups(&lab), ["data.master.0"]);
    assert!(!success(&lab, 0).contains("kind="), "{}", success(&lab, 0));

    // The newest backup's manifest damaged: not a parent.
    primary.pgbench(&["-t", "100"]);
    incremental_verified("data.master.0");
    let manifest = lab
        .stored_backup_dir(1, "main")
        .join("data.master.1")
        .join("backup_manifest");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replacen("\"Size\": ", "\"Size\":  ", 1)).unwrap();
    let said = backup(&lab, &q);
    assert!(
        said.contains("full backup: ") && said.contains("manifest checksum mismatch"),
        "{said}"
    );
    assert_eq!(backups(&lab), ["data.master.0"]);
    assert!(!success(&lab, 0).contains("kind="));
}

/// An incremental killed while pg_basebackup copies leaves the chain as it
/// was: the partial directory is removed by the next run, and once the
/// failed task is cleared the next incremental is taken against the same
/// parent.
#[test]
fn an_interrupted_incremental_leaves_the_chain_as_it_was() {
    if skip_before_17("an_interrupted_incremental_leaves_the_chain_as_it_was") {
        return;
    }
    let lab = Lab::new();
    let (q, primary) = setup(&lab, "summarize_wal = on\n", 3, 1);
    backup(&lab, &q);
    let full = success(&lab, 0);
    primary.pgbench(&["-t", "300"]);
    q.age_history(2);

    // Slow (32 kB/s), killed while pg_basebackup copies.
    let mut slow = lab.base_backup_cmd(1);
    slow.args(["--set", "backup_max_rate=32k"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = slow.spawn().unwrap();
    let nsenter = child.id() as i32;
    let partial = || {
        names(&lab.stored_backup_dir(1, "main"))
            .into_iter()
            .filter(|n| n.starts_with("data.master.new."))
            .count()
    };
    e2e::wait_until(Duration::from_secs(60), "pg_basebackup copying", || {
        descendants(nsenter)
            .iter()
            .any(|&p| e2e::comm(p) == "pg_basebackup")
            && partial() == 1
    });
    e2e::kill_descendant_named(nsenter, "base-backup");
    assert!(!child.wait().unwrap().success());
    e2e::wait_until(
        Duration::from_secs(10),
        "pg_basebackup to die with base-backup",
        || e2e::lab_processes_matching("data.master.new.").is_empty(),
    );
    assert_eq!(backups(&lab), ["data.master.0"]);
    assert_eq!(success(&lab, 0), full, "the parent untouched");

    // The next run removes the partial directory; cleared, the next
    // incremental has the same parent.
    let said = backup(&lab, &q);
    assert!(said.contains("was left unfinished"), "{said}");
    assert_eq!(partial(), 0);
    assert!(q.clear(2));
    let said = backup(&lab, &q);
    assert!(
        said.contains("incremental backup against data.master.0 (incremental 1 of 3"),
        "{said}"
    );
    assert_eq!(backups(&lab), ["data.master.0", "data.master.1"]);
    assert!(success(&lab, 1).contains("parent=data.master.0\n"));
}
