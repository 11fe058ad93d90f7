//! base-backup end to end: a real primary archiving to both servers, a real
//! backup_queue database, base-backup run on the archive servers the way
//! cron runs it. Backups are checked on disk, verified, rotated, killed
//! mid-way, and one is restored.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::{
    bin, descendants, lab_processes_matching, list_files, run, stderr, wait_archived, wait_until,
    Lab, PgCluster, PgOptions, QueueDb,
};

/// A queue, and a primary with some data whose WAL goes to both servers
/// (DST-DIR `<archive>/main`); the servers' config points at the queue.
fn setup(lab: &Lab, keep: i32) -> (QueueDb, PgCluster) {
    let q = lab.queue_db();
    let pg = lab.init_cluster("primary", PgOptions::default());
    pg.set_conf(&format!(
        "archive_mode = on\narchive_command = '{}'\nwal_keep_size = '2GB'\n",
        lab.archive_command(&lab.dst("main"), "main")
    ));
    pg.start();
    pg.pgbench(&["-i", "-s", "2", "-q"]);
    let w = pg.switch_wal();
    wait_archived(&pg, &w, Duration::from_secs(120));
    lab.set_server_config_extra(&format!(
        "queue_dsn = \"{}\"\nbackup_checkpoint = \"fast\"\nbackup_progress_interval = 1\n",
        q.dsn()
    ));
    let mut row = lab.host_row("main", &pg, "main");
    row.keep_backups_cnt = keep;
    q.add(&row);
    (q, pg)
}

/// Runs base-backup on server `n` with extra `--set`s; panics with its log
/// unless it exits `want`.
fn base_backup(lab: &Lab, n: usize, sets: &[&str], want: i32) -> String {
    let mut cmd = lab.base_backup_cmd(n);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    let out = run(&mut cmd);
    let log = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(want),
        "base-backup on arch{n} exited {} (wanted {want})\n{log}",
        out.status
    );
    log
}

/// `key=value` lines of a backup's SUCCESS marker.
fn success_field(backup: &Path, key: &str) -> String {
    let text = fs::read_to_string(backup.join("SUCCESS"))
        .unwrap_or_else(|e| panic!("{}/SUCCESS: {e}", backup.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_string()
}

/// Names in a backup directory (dirs included), but its identity marker.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != archive_core::server::backups::DIR_MARKER)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn assert_complete_backup(b: &Path, archive: &str) {
    let files = list_files(b);
    for f in ["SUCCESS", "backup_label", "backup_manifest", archive] {
        assert!(files.contains(&f.to_string()), "{}: {files:?}", b.display());
    }
    let label = fs::read_to_string(b.join("backup_label")).unwrap();
    let parsed = archive_core::server::backups::parse_label(&label).expect("a valid backup_label");
    assert_eq!(success_field(b, "start_wal"), parsed.start_wal);
    // Its end, for choosing a backup for a recovery target.
    let stop = archive_core::server::backups::parse_lsn(&success_field(b, "stop_lsn")).unwrap();
    assert!(
        stop > parsed.start_lsn,
        "{stop:X} after {:X}",
        parsed.start_lsn
    );
    let success = fs::read_to_string(b.join("SUCCESS")).unwrap();
    let at = |k: &str| archive_core::server::backups::success_time_micros(&success, k).expect(k);
    // consistent_by is rounded up to the second.
    assert!(
        at("consistent_by") - 1_000_000 <= at("finished"),
        "pg_basebackup exited before the backup verified"
    );
    // The stored backup verifies on its own too.
    let out = run(std::process::Command::new(bin("base-backup"))
        .arg("--verify")
        .arg(b));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_due_backup_lands_verifies_rotates_to_keep_backups_cnt_and_restores() {
    let lab = Lab::new();
    let (q, pg) = setup(&lab, 2);
    let dir1 = lab.stored_backup_dir(1, "main");
    let dir2 = lab.stored_backup_dir(2, "main");

    // The first backup of the cluster goes to arch1.
    let log = base_backup(&lab, 2, &[], 0);
    assert!(log.contains("no backup is due on arch2"), "{log}");
    let log = base_backup(&lab, 1, &[], 0);
    assert!(log.contains("backup verified"), "{log}");
    assert!(
        log.contains("pg_basebackup: checkpoint completed"),
        "progress is logged: {log}"
    );
    assert_eq!(entries(&dir1), vec!["data.master.0"]);
    let b0 = dir1.join("data.master.0");
    assert_complete_backup(&b0, e2e::lab_base_tar());
    let label = fs::read_to_string(b0.join("backup_label")).unwrap();
    assert!(
        label.contains("LABEL: base-backup task 1 of main on arch1"),
        "{label}"
    );
    assert_eq!(q.status(1), "done");
    assert_eq!(
        q.sql("select details->>'start_wal' from backups.tasks where id = 1"),
        success_field(&b0, "start_wal")
    );

    // Then it is arch2's turn (every day per server here): arch1 has nothing
    // to do, arch2 backs up, here with server-side gzip (PostgreSQL 15 and
    // later compress on the server) and pg_verifybackup on an extracted copy.
    let log = base_backup(&lab, 1, &[], 0);
    assert!(log.contains("no backup is due on arch1"), "{log}");
    let log = base_backup(
        &lab,
        2,
        &[
            "backup_verify=pg_verifybackup",
            if e2e::pg_version() >= 15 {
                "backup_compress=server-gzip:1"
            } else {
                "backup_compress=client-gzip:1"
            },
        ],
        0,
    );
    assert!(log.contains("backup verified (pg_verifybackup"), "{log}");
    assert_eq!(entries(&dir2), vec!["data.master.0"]);
    assert_complete_backup(&dir2.join("data.master.0"), "base.tar.gz");
    assert_eq!(q.status(2), "done");

    // Two more on arch1 (a day apart each): keep_backups_cnt = 2 remain,
    // the oldest as .0.
    for _ in 0..2 {
        pg.pgbench(&["-t", "200", "-n"]);
        q.age_history(2);
        base_backup(&lab, 1, &[], 0);
    }
    assert_eq!(entries(&dir1), vec!["data.master.0", "data.master.1"]);
    let tasks: Vec<String> = ["data.master.0", "data.master.1"]
        .iter()
        .map(|b| success_field(&dir1.join(b), "task"))
        .collect();
    assert_eq!(tasks, vec!["3", "4"], "task 1's backup was rotated out");
    for b in ["data.master.0", "data.master.1"] {
        assert_complete_backup(&dir1.join(b), e2e::lab_base_tar());
    }
    assert_eq!(
        q.sql("select string_agg(status, ',' order by id) from backups.tasks"),
        "done,done,done,done"
    );

    // A damaged copy does not verify.
    let copy = lab.dir().join("damaged");
    fs::create_dir(&copy).unwrap();
    for f in ["backup_manifest", "base.tar.gz"] {
        fs::copy(dir2.join("data.master.0").join(f), copy.join(f)).unwrap();
    }
    let p = copy.join("base.tar.gz");
    let mut bytes = fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&p, bytes).unwrap();
    let out = run(std::process::Command::new(bin("base-backup"))
        .arg("--verify")
        .arg(&copy));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // The newest backup restores: the data as of the backup, consistent.
    let want = pg.psql("select sum(delta), count(*) from pgbench_history");
    let restored = restore(&lab, &pg, &dir1.join("data.master.1"));
    assert_eq!(
        restored.psql("select sum(delta), count(*) from pgbench_history"),
        want
    );
}

/// Extracts `backup`'s base archive into a new cluster and recovers it to
/// consistency with WAL read from the primary's pg_wal (this test is about
/// the backup, not the archive), then opens it.
fn restore(lab: &Lab, primary: &PgCluster, backup: &Path) -> PgCluster {
    let pg = lab.init_cluster("restored", PgOptions::default());
    let data = pg.data_dir().to_path_buf();
    fs::remove_dir_all(&data).unwrap();
    e2e::mkdir_postgres(&data, 0o700);
    let mut tar_bytes = Vec::new();
    let packed = fs::read(backup.join(e2e::lab_base_tar())).unwrap();
    let codec = archive_core::common::codec::sniff(&packed);
    archive_core::common::codec::decoder(codec, &packed[..])
        .unwrap()
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let tar_path = lab.dir().join("restore.tar");
    e2e::write_postgres_file(&tar_path, tar_bytes, 0o600);
    e2e::run_ok(
        lab.postgres_cmd("tar")
            .arg("-xf")
            .arg(&tar_path)
            .arg("-C")
            .arg(&data),
    );
    e2e::mkdir_postgres(data.join("pg_wal"), 0o700);
    pg.set_conf(&format!(
        "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{sock}'\n\
         archive_mode = off\nrestore_command = 'cp {wal}/%f %p'\nrecovery_target = 'immediate'\n\
         recovery_target_action = 'promote'\n",
        port = pg.port(),
        sock = pg.socket_dir().display(),
        wal = primary.pg_wal().display(),
    ));
    pg.create_recovery_signal();
    pg.start();
    pg.wait_for("select pg_is_in_recovery()", "f", Duration::from_secs(60));
    pg
}

/// The leftover temp dirs in a backup directory.
fn temp_dirs(dir: &Path) -> Vec<PathBuf> {
    entries(dir)
        .into_iter()
        .filter(|n| n.starts_with("data.master.new."))
        .map(|n| dir.join(n))
        .collect()
}

#[test]
fn a_killed_run_fails_its_task_a_concurrent_run_exits_at_once_and_no_backup_is_lost() {
    let lab = Lab::new();
    let (q, _pg) = setup(&lab, 1);
    let dir1 = lab.stored_backup_dir(1, "main");
    base_backup(&lab, 1, &[], 0);
    assert_eq!(entries(&dir1), vec!["data.master.0"]);
    let good = success_field(&dir1.join("data.master.0"), "task");
    q.age_history(2);

    // A slow run (32 kB/s), killed during pg_basebackup.
    let log_path = lab.dir().join("slow.log");
    let mut slow = lab.base_backup_cmd(1);
    slow.args(["--set", "backup_max_rate=32k"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log_path).unwrap());
    let mut child = slow.spawn().unwrap();
    let nsenter = child.id() as i32;
    let comm = e2e::comm;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let copying = descendants(nsenter)
            .iter()
            .any(|&p| comm(p) == "pg_basebackup");
        // Progress lines say it is copying (the compressed file may still
        // be empty: zstd holds its output back).
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        let progress = log.matches("kB (").count();
        if copying && progress >= 2 && temp_dirs(&dir1).len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg_basebackup did not start copying (running: {copying}; {:?})\n{log}",
            entries(&dir1),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(q.status(2), "running");

    // Meanwhile a second run exits at once, naming the holder.
    let t = Instant::now();
    let out = run(&mut lab.base_backup_cmd(1));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is held by base-backup on arch1 (pid"),
        "{}",
        stderr(&out)
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // SIGKILL base-backup itself: its pg_basebackup dies with it.
    e2e::kill_descendant_named(nsenter, "base-backup");
    let status = child.wait().unwrap();
    assert!(!status.success());
    wait_until(
        Duration::from_secs(10),
        "pg_basebackup to die with base-backup",
        || lab_processes_matching("data.master.new.").is_empty(),
    );
    // The good backup is untouched; the partial one is a temp dir, not a backup.
    assert_eq!(
        entries(&dir1)
            .into_iter()
            .filter(|n| !n.starts_with("data.master.new."))
            .collect::<Vec<_>>(),
        vec!["data.master.0"]
    );
    assert_eq!(success_field(&dir1.join("data.master.0"), "task"), good);
    assert_eq!(temp_dirs(&dir1).len(), 1);
    assert_eq!(q.status(2), "running", "nobody stopped it");

    // The next run: the task is marked failed, the leftover removed, and
    // arch1 makes no backup of the cluster until the failure is cleared.
    let log = base_backup(&lab, 1, &[], 0);
    assert!(log.contains("task #2 (main) was left unfinished"), "{log}");
    assert!(log.contains("no backup is due on arch1"), "{log}");
    assert_eq!(q.status(2), "failed");
    assert!(q
        .error(2)
        .contains("not stopped before the next get_next on arch1"));
    assert!(temp_dirs(&dir1).is_empty(), "{:?}", entries(&dir1));
    assert_eq!(success_field(&dir1.join("data.master.0"), "task"), good);
    let out = q.tool(&lab, &["show", "--check"]);
    assert_eq!(out.status.code(), Some(6));

    // Cleared: the next due run makes a new backup, which replaces the old
    // one (keep 1).
    assert!(q.clear(2));
    q.age_history(2);
    base_backup(&lab, 1, &[], 0);
    assert_eq!(entries(&dir1), vec!["data.master.0"]);
    assert_eq!(success_field(&dir1.join("data.master.0"), "task"), "3");
    assert_eq!(q.status(3), "done");
    let log = fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("task #2: backing up main"), "{log}");
}

#[test]
fn a_failing_pg_basebackup_leaves_the_task_unfinished_with_its_reason() {
    let lab = Lab::new();
    let q = lab.queue_db();
    lab.set_server_config_extra(&format!("queue_dsn = \"{}\"\n", q.dsn()));
    let mut row = e2e::HostRow::new("gone");
    row.directory = lab.backup_dir("gone");
    row.wals_dir = lab.dst("gone");
    row.port = e2e::free_port(std::net::Ipv4Addr::LOCALHOST);
    row.start_time = "00:00".into();
    q.add(&row);
    let log = base_backup(&lab, 1, &[], 1);
    assert!(
        log.contains("task #1 (gone): pg_basebackup failed; the task stays unfinished"),
        "{log}"
    );
    assert_eq!(q.status(1), "running");
    assert!(
        q.error(1).contains("pg_basebackup failed"),
        "{}",
        q.error(1)
    );
    assert!(
        entries(&lab.stored_backup_dir(1, "gone")).is_empty(),
        "nothing left behind"
    );
    assert!(
        lab.stored_backup_dir(1, "gone")
            .join(archive_core::server::backups::DIR_MARKER)
            .is_file(),
        "but the directory is marked as the cluster's"
    );
    // A task outside the archive roots is refused (exit 3).
    q.sql("delete from backups.hosts");
    row.directory = "/etc/backups".into();
    q.add(&row);
    let log = base_backup(&lab, 1, &[], 3);
    assert!(log.contains("not under an archive root"), "{log}");
    // No queue configured: exit 2.
    lab.set_server_config_extra("");
    let log = base_backup(&lab, 1, &[], 2);
    assert!(log.contains("queue_dsn is not set"), "{log}");
}
