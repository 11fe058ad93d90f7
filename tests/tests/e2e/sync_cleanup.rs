//! wal-sync and wal-cleanup, run on an archive server as its cron would,
//! against the peer over real ssh.

use std::fs;
use std::io::Write;
use std::process::{Child, Output, Stdio};

use std::time::Duration;

use e2e::{
    bin, decode, list_files, run, stderr, wait_archived, write_postgres_file, Lab, PgOptions,
};

fn wal_sync(lab: &Lab, on: usize, dst: &str, extra: &[&str]) -> Output {
    let peer = if on == 1 { "arch2" } else { "arch1" };
    let mut cmd = lab.server_cmd(on, bin("wal-sync"));
    cmd.args(extra).arg(dst).arg(peer);
    run(&mut cmd)
}

fn wal_cleanup(lab: &Lab, on: usize, backups: &str, dst: &str, extra: &[&str]) -> Output {
    let peer = if on == 1 { "arch2" } else { "arch1" };
    let mut cmd = lab.server_cmd(on, bin("wal-cleanup"));
    cmd.args(extra).arg(backups).arg(dst).arg(peer);
    run(&mut cmd)
}

/// Holds a lock on server `n` through a protocol channel with its peer's
/// key, as another run would, until the returned child is killed.
fn hold_lock(lab: &Lab, n: usize, dst: &str, name: &str) -> Child {
    let host = if n == 1 { "arch1" } else { "arch2" };
    let mut cmd = lab.postgres_cmd("ssh");
    cmd.arg("-F")
        .arg(lab.server(3 - n).ssh_config_path())
        .arg(host)
        .arg(lab.remote_command());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for json in [
        r#"{"op":"hello","version":1}"#.to_string(),
        format!(r#"{{"op":"lock","dir":"{dst}","name":"{name}","holder":"the test's other run"}}"#),
    ] {
        stdin.write_all(&(json.len() as u32).to_be_bytes()).unwrap();
        stdin.write_all(json.as_bytes()).unwrap();
    }
    stdin.flush().unwrap();
    // Wait for both replies (hello, locked) before handing the lock over.
    let mut stdout = child.stdout.take().unwrap();
    for _ in 0..2 {
        let mut len = [0u8; 4];
        std::io::Read::read_exact(&mut stdout, &mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        std::io::Read::read_exact(&mut stdout, &mut body).unwrap();
        let text = String::from_utf8_lossy(&body).into_owned();
        assert!(text.contains("hello") || text.contains("locked"), "{text}");
    }
    std::mem::forget(stdin);
    std::mem::forget(stdout);
    child
}

#[test]
fn wal_sync_fills_gaps_both_ways_byte_identical() {
    let lab = Lab::new();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("sync", 6, 1);
    // Single-archive mode on each side leaves one-sided files, as an
    // outage without owed records would.
    for n in &names[..3] {
        lab.archive_to("arch1", &dst, &wal, n);
    }
    for n in &names[3..] {
        lab.archive_to("arch2", &dst, &wal, n);
    }
    // An Archive 2.0 file written by pbzip2 straight into arch2's storage.
    let legacy = "00000002.history";
    let text = b"1\t0/3000000\tno recovery target specified\n";
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(text).unwrap();
    write_postgres_file(
        lab.stored_path(2, &dst, legacy),
        bz.finish().unwrap(),
        0o600,
    );

    let dry = wal_sync(&lab, 1, &dst, &["--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stderr(&dry).contains("3 to copy to arch2, 4 to copy from arch2"),
        "{}",
        stderr(&dry)
    );
    assert_eq!(
        lab.stored_names(1, &dst),
        names[..3],
        "a dry run copies nothing"
    );

    let out = wal_sync(&lab, 1, &dst, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut all = names.clone();
    all.push(legacy.to_string());
    all.sort();
    for n in [1, 2] {
        assert_eq!(lab.stored_names(n, &dst), all, "arch{n}");
    }
    for name in &all {
        let a = fs::read(lab.stored_path(1, &dst, name)).unwrap();
        let b = fs::read(lab.stored_path(2, &dst, name)).unwrap();
        assert!(a == b, "{name}: copied as stored, byte-identical");
        if name != legacy {
            assert!(
                decode(&a) == fs::read(wal.join(name)).unwrap(),
                "{name} content"
            );
        }
    }
    assert_eq!(
        decode(&fs::read(lab.stored_path(1, &dst, legacy)).unwrap()),
        text
    );
    // Nothing left to do the second time.
    let again = wal_sync(&lab, 2, &dst, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("0 to copy to arch1, 0 to copy from arch1"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn wal_sync_reports_a_divergent_file_and_leaves_both_alone() {
    let lab = Lab::new();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("div", 3, 1);
    lab.archive_to("arch1", &dst, &wal, &names[0]);
    lab.archive_to("arch1", &dst, &wal, &names[2]);
    // arch2 holds another file under names[0]: the body of names[1] (zstd,
    // as it would have been stored).
    let other = fs::read(wal.join(&names[1])).unwrap();
    let z = zstd::encode_all(&other[..], 1).unwrap();
    e2e::mkdir_postgres(lab.stored_path(2, &dst, "x").parent().unwrap(), 0o700);
    write_postgres_file(lab.stored_path(2, &dst, &names[0]), &z, 0o600);
    let before1 = fs::read(lab.stored_path(1, &dst, &names[0])).unwrap();

    let out = wal_sync(&lab, 1, &dst, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{} differs", names[0])),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read(lab.stored_path(1, &dst, &names[0])).unwrap(),
        before1
    );
    assert_eq!(fs::read(lab.stored_path(2, &dst, &names[0])).unwrap(), z);
    // The rest is still synced.
    assert!(lab.stored_names(2, &dst).contains(&names[2]));
}

#[test]
fn concurrent_runs_are_refused_naming_the_holder() {
    let lab = Lab::new();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("lock", 1, 1);
    lab.archive_to("arch1", &dst, &wal, &names[0]);
    let mut holder = hold_lock(&lab, 2, &dst, "wal-sync");
    let out = wal_sync(&lab, 1, &dst, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the test's other run"),
        "{}",
        stderr(&out)
    );
    assert!(lab.stored_names(2, &dst).is_empty());
    let _ = holder.kill();
    let _ = holder.wait();

    let backups = lab.dst("backups");
    let mut holder = hold_lock(&lab, 1, &dst, "wal-cleanup");
    let out = wal_cleanup(&lab, 2, &backups, &dst, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the test's other run"),
        "{}",
        stderr(&out)
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

/// Writes a complete backup `data.master.<n>` whose label starts at `start`.
fn fake_backup(lab: &Lab, server: usize, backups: &str, n: u32, start: &str, success: bool) {
    let dir = lab.stored_path(server, backups, &format!("data.master.{n}"));
    e2e::mkdir_postgres(&dir, 0o700);
    let label = format!(
        "START WAL LOCATION: 0/{}000028 (file {start})\nCHECKPOINT LOCATION: 0/{}000060\n\
         BACKUP METHOD: streamed\nBACKUP FROM: standby\nSTART TIME: 2026-11-25 01:00:00 UTC\n\
         LABEL: base-backup\nSTART TIMELINE: 1\n",
        &start[16..],
        &start[16..]
    );
    write_postgres_file(dir.join("backup_label"), label, 0o600);
    if success {
        write_postgres_file(dir.join("SUCCESS"), b"", 0o600);
    }
}

#[test]
fn cleanup_removes_exactly_what_is_older_than_both_oldest_backups() {
    let lab = Lab::new();
    let dst = lab.dst("main");
    let backups = lab.dst("backups");
    let (wal, names) = lab.wal_segments("clean", 8, 1);
    for n in &names {
        lab.archive_to("arch1 arch2", &dst, &wal, n);
    }
    // A timeline switch: a history file and segments of timeline 2 from
    // names[5]'s position on (placed as a promotion would leave them).
    let tl2: Vec<String> = names[5..]
        .iter()
        .map(|n| format!("00000002{}", &n[8..]))
        .collect();
    for server in [1, 2] {
        write_postgres_file(
            lab.stored_path(server, &dst, "00000002.history"),
            b"x",
            0o600,
        );
        for n in &tl2 {
            write_postgres_file(lab.stored_path(server, &dst, n), b"x", 0o600);
        }
    }
    // arch1's oldest complete backup starts at names[5] on timeline 2;
    // arch2's at names[3]: everything older than names[3] goes, on both.
    fake_backup(&lab, 1, &backups, 0, &names[1], false); // incomplete: ignored
    fake_backup(&lab, 1, &backups, 1, &tl2[0], true);
    fake_backup(&lab, 2, &backups, 0, &names[3], true);
    let before: Vec<Vec<String>> = [1, 2].iter().map(|&s| lab.stored_names(s, &dst)).collect();

    let dry = wal_cleanup(&lab, 1, &backups, &dst, &["--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stderr(&dry).contains(&format!("keeping from {}", names[3])),
        "{}",
        stderr(&dry)
    );
    assert!(stderr(&dry).contains("3 here"), "{}", stderr(&dry));
    for s in [1, 2] {
        assert_eq!(
            lab.stored_names(s, &dst),
            before[s - 1],
            "dry run removes nothing"
        );
    }

    let out = wal_cleanup(&lab, 1, &backups, &dst, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut kept: Vec<String> = names[3..].to_vec();
    kept.extend(tl2.iter().cloned());
    kept.push("00000002.history".into());
    kept.sort();
    for s in [1, 2] {
        assert_eq!(lab.stored_names(s, &dst), kept, "arch{s}");
    }
}

#[test]
fn cleanup_aborts_without_deleting_when_in_doubt() {
    let lab = Lab::new();
    let dst = lab.dst("main");
    let backups = lab.dst("backups");
    let (wal, names) = lab.wal_segments("doubt", 5, 1);
    for n in &names {
        lab.archive_to("arch1 arch2", &dst, &wal, n);
    }
    let all = lab.stored_names(1, &dst);
    let unchanged = |lab: &Lab| {
        for s in [1, 2] {
            assert_eq!(lab.stored_names(s, &dst), all, "arch{s} must be untouched");
        }
    };

    // The peer's backup directory does not exist (never used, or not
    // mounted): not proven, so nothing goes.
    fake_backup(&lab, 1, &backups, 0, &names[3], true);
    let out = wal_cleanup(&lab, 1, &backups, &dst, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "the backup directory {backups} on arch2 has no identity marker"
        )),
        "{}",
        stderr(&out)
    );
    unchanged(&lab);

    // A complete backup whose label is missing.
    fake_backup(&lab, 2, &backups, 0, &names[2], true);
    fs::remove_file(lab.stored_path(2, &backups, "data.master.0/backup_label")).unwrap();
    let out = wal_cleanup(&lab, 1, &backups, &dst, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("backup_label"), "{}", stderr(&out));
    unchanged(&lab);

    // The peer cannot be read.
    fake_backup(&lab, 2, &backups, 0, &names[2], true);
    lab.stop_server(2);
    let out = wal_cleanup(&lab, 1, &backups, &dst, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    lab.start_server(2);
    unchanged(&lab);

    // The segment the oldest backup needs is on neither server.
    for s in [1, 2] {
        fs::remove_file(lab.stored_path(s, &dst, &names[2])).unwrap();
    }
    let out = wal_cleanup(&lab, 1, &backups, &dst, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("on neither"), "{}", stderr(&out));
    let left = list_files(lab.stored_path(1, &dst, "x").parent().unwrap());
    assert_eq!(
        left.len(),
        names.len() - 1,
        "nothing else removed: {left:?}"
    );
    assert!(left.contains(&names[0]));
}

/// Names of WAL files (not .history) strictly older than `start` by
/// log/segment.
fn older_than(names: &[String], start: &str) -> Vec<String> {
    names
        .iter()
        .filter(|n| !n.ends_with(".history") && n.len() >= 24 && n[8..24] < start[8..24])
        .cloned()
        .collect()
}

/// Backups alternate between the servers, and arch2's first task failed:
/// arch1's backup alone decides, on both servers. But a backup directory
/// replaced by an empty, unmarked one (an unmounted disk) stops cleanup
/// with nothing removed.
#[test]
fn cleanup_follows_the_backups_that_exist_and_stops_at_an_unproven_directory() {
    let lab = Lab::new();
    let q = lab.queue_db();
    let dst = lab.dst("main");
    let backups = lab.backup_dir("main");
    let pg = lab.init_cluster("primary", PgOptions::default());
    pg.set_conf(&format!(
        "archive_mode = on\narchive_command = '{}'\n",
        lab.archive_command(&dst, "main")
    ));
    pg.start();
    pg.pgbench(&["-i", "-s", "1", "-q"]);
    for _ in 0..3 {
        pg.psql("create table if not exists t (x int); insert into t values (1)");
        let w = pg.switch_wal();
        wait_archived(&pg, &w, Duration::from_secs(120));
    }
    lab.set_server_config_extra(&format!(
        "queue_dsn = \"{}\"\nbackup_checkpoint = \"fast\"\n",
        q.dsn()
    ));
    q.add(&lab.host_row("main", &pg, "main"));
    // The cluster's own PostgreSQL programs, from its row.
    q.sql(&format!(
        "update backups.hosts set pg_bin_dir = '{}'",
        e2e::pg_client_dir().display()
    ));

    // arch1's backup: arch2 has not used its directory yet, so its cleanup
    // keeps everything (a warning, not a failed task).
    let out = run(&mut lab.base_backup_cmd(1));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("keeping everything"),
        "{}",
        stderr(&out)
    );
    let label = fs::read_to_string(
        lab.stored_backup_dir(1, "main")
            .join("data.master.0/backup_label"),
    )
    .unwrap();
    let start = archive_core::server::backups::parse_label(&label)
        .unwrap()
        .start_wal;
    // arch2's turn fails (the row now names a directory without
    // pg_basebackup, overriding the config): no backup, but its directory
    // is marked as the cluster's.
    q.sql("update backups.hosts set pg_bin_dir = '/usr/lib/postgresql'");
    let out = run(&mut lab.base_backup_cmd(2));
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/usr/lib/postgresql"),
        "{}",
        stderr(&out)
    );
    let arch2_dir = lab.stored_backup_dir(2, "main");
    assert!(arch2_dir
        .join(archive_core::server::backups::DIR_MARKER)
        .is_file());
    assert!(!arch2_dir.join("data.master.0").exists());

    let before: Vec<Vec<String>> = [1, 2].iter().map(|&s| lab.stored_names(s, &dst)).collect();
    for (s, names) in before.iter().enumerate() {
        assert!(
            !older_than(names, &start).is_empty(),
            "arch{}: WAL older than {start} to remove: {names:?}",
            s + 1
        );
    }

    // arch2's directory replaced by an empty, unmarked one: refused.
    let aside = arch2_dir.with_extension("aside");
    fs::rename(&arch2_dir, &aside).unwrap();
    e2e::mkdir_postgres(&arch2_dir, 0o700);
    let out = wal_cleanup(&lab, 1, &backups, &dst, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("on arch2 has no identity marker"),
        "{}",
        stderr(&out)
    );
    for s in [1, 2] {
        assert_eq!(
            lab.stored_names(s, &dst),
            before[s - 1],
            "arch{s} untouched"
        );
    }

    // The right directory back: WAL older than arch1's backup goes on both.
    fs::remove_dir(&arch2_dir).unwrap();
    fs::rename(&aside, &arch2_dir).unwrap();
    let out = wal_cleanup(&lab, 1, &backups, &dst, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("keeping from {start}")),
        "{}",
        stderr(&out)
    );
    for s in [1, 2] {
        let want: Vec<String> = before[s - 1]
            .iter()
            .filter(|n| !older_than(&before[s - 1], &start).contains(n))
            .cloned()
            .collect();
        assert_eq!(lab.stored_names(s, &dst), want, "arch{s}");
        assert!(want.contains(&start), "arch{s} keeps {start}");
    }
}
