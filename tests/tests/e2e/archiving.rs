//! Archiving onto two servers: archive-cmd on the primary, archive-remote-cmd
//! on the servers, real sshd, real PostgreSQL, bytes checked on disk.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::{
    decode, list_files, run, stderr, temp_files, wait_archived, wait_until, write_postgres_file,
    Lab, LabOptions, PgOptions,
};

/// A lab with short cooldowns so failover can be watched in a test.
fn lab() -> Lab {
    Lab::with(LabOptions::short_cooldowns())
}

/// Runs archive-cmd for one segment of `wal_dir` and returns its output.
fn archive(lab: &Lab, dst: &str, wal_dir: &Path, name: &str) -> std::process::Output {
    run(&mut lab.archive_cmd(dst, &wal_dir.join(name), name, "main"))
}

fn assert_archived_ok(out: &std::process::Output, name: &str) {
    assert!(
        out.status.success(),
        "archive-cmd {name} failed ({}): {}",
        out.status,
        stderr(out)
    );
}

/// Both servers hold `name`, decompressing to exactly the bytes in
/// `reference`. Waits for the copies first: server 1 forwards in the
/// background, after archive-cmd returned.
fn assert_on_both(lab: &Lab, dst: &str, reference: &Path, name: &str) {
    wait_until(Duration::from_secs(60), "both servers to hold it", || {
        [1, 2]
            .iter()
            .all(|&n| lab.stored_path(n, dst, name).exists())
    });
    let want = fs::read(reference.join(name)).unwrap();
    for n in [1, 2] {
        let got = lab
            .stored_bytes(n, dst, name)
            .unwrap_or_else(|| panic!("arch{n} lacks {name}"));
        assert!(
            got == want,
            "arch{n}'s copy of {name} differs from the original"
        );
    }
}

#[test]
fn pgbench_wal_reaches_both_servers_byte_identical() {
    let lab = lab();
    let dst = lab.dst("main");
    let refdir = lab.dir().join("reference");
    let pg = lab.init_cluster("primary", PgOptions::default());
    pg.set_conf(&format!(
        "archive_mode = on\narchive_command = '{}'\narchive_timeout = 0\n",
        lab.archive_command_with_reference(&dst, "main", &refdir)
    ));
    pg.start();
    pg.pgbench(&["-i", "-s", "10", "-q"]);
    pg.pgbench(&["-c", "2", "-T", "5", "-n"]);
    // At least 21 segments of 16 MiB written.
    while pg.psql("select pg_current_wal_lsn() > '0/15000000'::pg_lsn") != "t" {
        pg.pgbench(&["-c", "2", "-t", "1000", "-n"]);
    }
    let last = pg.switch_wal();
    wait_archived(&pg, &last, Duration::from_secs(180));
    let names = list_files(&refdir);
    assert!(names.len() >= 20, "only {} segments archived", names.len());
    // arch1 forwards in the background: the second copy may trail the
    // archiver by a moment.
    wait_until(
        Duration::from_secs(60),
        "arch2 to hold every segment",
        || lab.stored_names(2, &dst) == names && lab.owed_names(1, &dst).is_empty(),
    );
    for name in &names {
        assert_on_both(&lab, &dst, &refdir, name);
    }
    // Nothing owed, nothing half-written.
    assert!(lab.owed_names(1, &dst).is_empty());
    for n in [1, 2] {
        assert_eq!(
            lab.stored_names(n, &dst),
            names,
            "arch{n} holds exactly the WAL"
        );
    }
    assert!(
        pg.log().contains("archive-cmd"),
        "archive-cmd logs to the server log"
    );
}

#[test]
fn host1_down_calls_go_through_host2_then_cooldown_then_host1_gets_its_copies() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("a", 7, 1);
    lab.stop_server(1);

    // Every call succeeds, through arch2, in the same call.
    for name in &names[..3] {
        let out = archive(&lab, &dst, &wal, name);
        assert_archived_ok(&out, name);
        assert!(stderr(&out).contains("to arch1 failed"), "{}", stderr(&out));
    }
    // Three consecutive failures: arch1 is in cooldown and not tried at all.
    let out = archive(&lab, &dst, &wal, &names[3]);
    assert_archived_ok(&out, &names[3]);
    assert!(
        !stderr(&out).contains("to arch1 failed"),
        "arch1 was tried: {}",
        stderr(&out)
    );
    assert!(lab.stored_names(1, &dst).is_empty());
    assert_eq!(lab.stored_names(2, &dst), names[..4]);
    assert_eq!(
        lab.owed_names(2, &dst),
        names[..4],
        "arch2 owes arch1 these"
    );

    // After the cooldown arch1 is tried first again (and fails: still down).
    thread_sleep(7);
    let out = archive(&lab, &dst, &wal, &names[4]);
    assert_archived_ok(&out, &names[4]);
    assert!(stderr(&out).contains("to arch1 failed"), "{}", stderr(&out));

    // arch1 is back: it takes the next segment first, and receives every
    // segment it missed without any wal-sync.
    lab.start_server(1);
    thread_sleep(7);
    let out = archive(&lab, &dst, &wal, &names[5]);
    assert_archived_ok(&out, &names[5]);
    assert!(stderr(&out).contains("to arch1:"), "{}", stderr(&out));
    wait_until(
        Duration::from_secs(30),
        "arch1 to receive what it missed",
        || lab.stored_names(1, &dst) == names[..6],
    );
    for name in &names[..6] {
        assert_on_both(&lab, &dst, &wal, name);
    }
    wait_until(
        Duration::from_secs(10),
        "arch2's owed list to empty",
        || lab.owed_names(2, &dst).is_empty(),
    );
}

#[test]
fn frozen_host1_stalls_are_cut_by_timeouts_and_the_call_falls_through_to_host2() {
    // A black-holed server (processes stopped, connections hang) must cost
    // a timeout, not a hang.
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("frozen", 3, 1);
    assert_archived_ok(&archive(&lab, &dst, &wal, &names[0]), &names[0]);
    // Its forward must not be frozen halfway.
    assert_on_both(&lab, &dst, &wal, &names[0]);
    lab.freeze_server(1);
    for name in &names[1..] {
        let t = Instant::now();
        let out = archive(&lab, &dst, &wal, name);
        assert_archived_ok(&out, name);
        assert!(stderr(&out).contains("to arch1 failed"), "{}", stderr(&out));
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the call must end within its timeouts ({:?})",
            t.elapsed()
        );
    }
    assert_eq!(lab.stored_names(2, &dst), names);
    lab.thaw_server(1);
}

#[test]
fn host2_down_forward_is_owed_then_delivered_without_wal_sync() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("b", 5, 1);
    lab.stop_server(2);
    for name in &names[..3] {
        let t = Instant::now();
        let out = archive(&lab, &dst, &wal, name);
        assert_archived_ok(&out, name);
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "a failed forward must not hang the call ({:?})",
            t.elapsed()
        );
    }
    assert_eq!(lab.stored_names(1, &dst), names[..3]);
    assert!(lab.stored_names(2, &dst).is_empty());
    assert_eq!(
        lab.owed_names(1, &dst),
        names[..3],
        "recorded as owed to arch2"
    );

    lab.start_server(2);
    thread_sleep(3); // forward_cooldown
    let out = archive(&lab, &dst, &wal, &names[3]);
    assert_archived_ok(&out, &names[3]);
    wait_until(
        Duration::from_secs(30),
        "arch2 to receive what it missed",
        || lab.stored_names(2, &dst) == names[..4],
    );
    for name in &names[..4] {
        assert_on_both(&lab, &dst, &wal, name);
    }
    assert!(lab.owed_names(1, &dst).is_empty());
}

#[test]
fn both_down_postgres_keeps_wal_and_every_segment_arrives_later() {
    let lab = lab();
    let dst = lab.dst("main");
    let refdir = lab.dir().join("reference");
    let pg = lab.init_cluster(
        "primary",
        PgOptions {
            wal_segsize_mb: 1,
            ..Default::default()
        },
    );
    pg.set_conf(&format!(
        "archive_mode = on\narchive_command = '{}'\n",
        lab.archive_command_with_reference(&dst, "main", &refdir)
    ));
    pg.start();
    pg.psql("create table t(i int)");
    let first = pg.switch_wal();
    wait_archived(&pg, &first, Duration::from_secs(60));

    lab.stop_server(1);
    lab.stop_server(2);
    let mut names = Vec::new();
    for i in 0..4 {
        pg.psql(&format!("insert into t values ({i})"));
        names.push(pg.switch_wal());
    }
    wait_until(
        Duration::from_secs(60),
        "the archiver to report failures",
        || pg.psql("select failed_count > 0 from pg_stat_archiver") == "t",
    );
    // PostgreSQL keeps the WAL: .ready files stay.
    for n in &names {
        assert!(pg.archive_status_dir().join(format!("{n}.ready")).exists());
    }
    // A direct call fails, non-zero, well within its timeouts.
    let t = Instant::now();
    let out = archive(&lab, &dst, &pg.pg_wal(), &names[0]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        stderr(&out).contains("PostgreSQL keeps the file"),
        "{}",
        stderr(&out)
    );

    lab.start_server(2);
    wait_archived(&pg, names.last().unwrap(), Duration::from_secs(120));
    lab.start_server(1);
    // Later puts close the single-copy window: the missed segments reach
    // arch1 as soon as it answers, while WAL keeps flowing.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        pg.psql("insert into t values (99)");
        let last = pg.switch_wal();
        wait_archived(&pg, &last, Duration::from_secs(120));
        let refs = list_files(&refdir);
        if lab.stored_names(1, &dst) == refs && lab.stored_names(2, &dst) == refs {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "arch1 never received what it missed"
        );
        thread_sleep(1);
    }
    for name in list_files(&refdir) {
        assert_on_both(&lab, &dst, &refdir, &name);
    }
}

#[test]
fn owed_segments_are_delivered_by_the_cron_sweep_when_no_more_wal_comes() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("s", 3, 1);
    lab.stop_server(1);
    for name in &names {
        assert_archived_ok(&archive(&lab, &dst, &wal, name), name);
    }
    assert_eq!(lab.owed_names(2, &dst), names);
    // Monitoring sees the single-copy segments.
    let status = e2e::run_ok(
        lab.server_cmd(2, e2e::bin("archive-remote-cmd"))
            .arg("status"),
    );
    assert!(status.contains("\"owed\":3"), "{status}");
    lab.start_server(1);
    // No more WAL comes: the cron sweep on arch2 delivers.
    let out = run(lab
        .server_cmd(2, e2e::bin("archive-remote-cmd"))
        .arg("deliver-owed"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lab.stored_names(1, &dst), names);
    for name in &names {
        assert_on_both(&lab, &dst, &wal, name);
    }
    assert!(lab.owed_names(2, &dst).is_empty());
}

#[test]
fn duplicate_same_content_is_ok_different_content_is_refused() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("c", 2, 1);
    let name = &names[0];
    assert_archived_ok(&archive(&lab, &dst, &wal, name), name);
    let stored = fs::read(lab.stored_path(1, &dst, name)).unwrap();
    let again = archive(&lab, &dst, &wal, name);
    assert_archived_ok(&again, name);
    assert!(
        stderr(&again).contains("already archived"),
        "{}",
        stderr(&again)
    );

    // Same name, other content (the other segment's body under this name,
    // with this name's header so it passes validation).
    let mut other = fs::read(wal.join(&names[1])).unwrap();
    let mine = fs::read(wal.join(name)).unwrap();
    other[..40].copy_from_slice(&mine[..40]);
    let fake_dir = lab.dir().join("fake");
    e2e::mkdir_postgres(&fake_dir, 0o755);
    write_postgres_file(fake_dir.join(name), &other, 0o600);
    let out = archive(&lab, &dst, &fake_dir, name);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("different content"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read(lab.stored_path(1, &dst, name)).unwrap(),
        stored,
        "untouched"
    );
    let rejected = lab.stored_path(1, &dst, ".pgarchive").join("rejected");
    let kept = list_files(&rejected);
    assert_eq!(kept.len(), 1, "incoming copy kept aside");
    assert_eq!(decode(&fs::read(rejected.join(&kept[0])).unwrap()), other);
}

#[test]
fn bad_input_is_refused_with_a_clear_message_and_nothing_visible() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("d", 1, 1);
    let name = &names[0];
    let empty = wal.join("000000010000000000000042");
    write_postgres_file(&empty, b"", 0o600);

    let bad: Vec<(String, String, String, &str)> = vec![
        (
            dst.clone(),
            "../x".into(),
            "main".into(),
            "not a PostgreSQL WAL file name",
        ),
        (
            dst.clone(),
            "0".repeat(65),
            "main".into(),
            "not a PostgreSQL WAL file name",
        ),
        (
            dst.clone(),
            "0000000100000000000000;rm".into(),
            "main".into(),
            "not a PostgreSQL",
        ),
        (
            dst.clone(),
            name.clone(),
            "ma$(id)in".into(),
            "cluster name",
        ),
        (
            format!("{dst}/a;b"),
            name.clone(),
            "main".into(),
            "archive directory",
        ),
        (
            format!("{dst}/../x"),
            name.clone(),
            "main".into(),
            "archive directory",
        ),
        (
            "/etc/elsewhere".into(),
            name.clone(),
            "main".into(),
            "archive root",
        ),
    ];
    for (d, n, cluster, why) in bad {
        let path = wal.join(name);
        let out = run(&mut lab.archive_cmd_hosts("arch1 arch2", &d, &path, &n, &cluster));
        assert_eq!(
            out.status.code(),
            Some(3),
            "{d} {n} {cluster}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(why),
            "{d} {n}: expected {why:?} in {}",
            stderr(&out)
        );
    }
    let out = archive(&lab, &dst, &wal, "000000010000000000000042");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));

    // WAL of another cluster into this cluster's directory.
    assert_archived_ok(&archive(&lab, &dst, &wal, name), name);
    let (wal2, names2) = lab.wal_segments("other", 1, 1);
    let out = archive(&lab, &dst, &wal2, &names2[0]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another database"),
        "{}",
        stderr(&out)
    );
    for n in [1, 2] {
        assert_eq!(lab.stored_names(n, &dst), std::slice::from_ref(name));
    }
    // Nothing landed outside the archive directory either.
    assert_eq!(list_files(lab.server(1).storage()), Vec::<String>::new());
}

#[test]
fn server_refuses_short_transfers_and_bad_requests_itself() {
    // Speaks the protocol directly, as a broken or hostile client would, so
    // the server's own checks are tested, not just archive-cmd's.
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("e", 1, 1);
    let body = fs::read(wal.join(&names[0])).unwrap();
    let put = |name: &str, dir: &str, size: usize| {
        frame(format!(
            r#"{{"op":"put","dir":"{dir}","name":"{name}","size":{size},"mtime":0,"cluster":"main","forward_to":null}}"#
        ))
    };
    let hello = frame(r#"{"op":"hello","version":1}"#.into());
    let end = |data: &[u8]| {
        frame(format!(
            r#"{{"op":"end","checksum":"{}"}}"#,
            blake3::hash(data).to_hex()
        ))
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Declared 1 MiB, sends half, then the stream ends.
        (
            [
                hello.clone(),
                put(&names[0], &dst, body.len()),
                body[..body.len() / 2].to_vec(),
            ]
            .concat(),
            "missing",
        ),
        // Declared size smaller than the segment: not a whole segment.
        (
            [
                hello.clone(),
                put(&names[0], &dst, 8192),
                body[..8192].to_vec(),
                end(&body[..8192]),
            ]
            .concat(),
            "never partial",
        ),
        (
            [
                hello.clone(),
                put("../../etc/x", &dst, 3),
                b"abc".to_vec(),
                end(b"abc"),
            ]
            .concat(),
            "not a PostgreSQL WAL file name",
        ),
        (
            [
                hello.clone(),
                put(&names[0], "/tmp", 3),
                b"abc".to_vec(),
                end(b"abc"),
            ]
            .concat(),
            "archive root",
        ),
        (
            [hello.clone(), put(&names[0], &dst, 0), end(b"")].concat(),
            "empty",
        ),
    ];
    for (input, why) in cases {
        let mut cmd = lab.ssh("arch1", &lab.remote_command());
        let out = e2e::run_with_input(&mut cmd, input);
        let said = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
        assert!(said.contains(why), "expected {why:?}: {said}");
    }
    assert!(
        lab.stored_names(1, &dst).is_empty(),
        "nothing visible at a final name"
    );
}

#[test]
fn killed_remote_mid_transfer_leaves_no_partial_file_and_retry_succeeds() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("f", 1, 16);
    let name = &names[0];
    let body = fs::read(wal.join(name)).unwrap();
    // Start a put by hand and stop sending halfway, keeping the channel open.
    let mut cmd = lab.ssh("arch1", &lab.remote_command());
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    stdin
        .write_all(&frame(r#"{"op":"hello","version":1}"#.into()))
        .unwrap();
    stdin
        .write_all(&frame(format!(
            r#"{{"op":"put","dir":"{dst}","name":"{name}","size":{},"mtime":0,"cluster":"main","forward_to":"arch2"}}"#,
            body.len()
        )))
        .unwrap();
    stdin.write_all(&body[..body.len() / 2]).unwrap();
    stdin.flush().unwrap();
    let dir = lab
        .stored_path(1, &dst, "x")
        .parent()
        .unwrap()
        .to_path_buf();
    wait_until(Duration::from_secs(10), "a temp file to appear", || {
        fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            })
            .unwrap_or(false)
    });
    let remote: Vec<i32> = lab
        .server(1)
        .processes()
        .into_iter()
        .filter(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("archive-remote-cmd"))
                .unwrap_or(false)
        })
        .collect();
    assert!(!remote.is_empty(), "the remote process is running");
    for p in remote {
        e2e::kill_tree(p, Duration::from_secs(5));
    }
    let _ = child.wait();
    assert!(
        !dir.join(name).exists(),
        "no partial file at the final name"
    );

    let out = archive(&lab, &dst, &wal, name);
    assert_archived_ok(&out, name);
    assert_on_both(&lab, &dst, &wal, name);
    let temps = temp_files(&dir);
    assert!(
        temps.is_empty(),
        "the dead writer's temp file was cleared: {temps:?}"
    );
}

#[test]
fn concurrent_calls_for_different_and_same_segments() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("g", 8, 1);
    let mut children = Vec::new();
    for name in &names {
        children.push((
            name.clone(),
            lab.archive_cmd(&dst, &wal.join(name), name, "main")
                .spawn()
                .unwrap(),
        ));
    }
    // Two more for the same segment.
    for _ in 0..2 {
        let n = names[3].clone();
        children.push((
            n.clone(),
            lab.archive_cmd(&dst, &wal.join(&n), &n, "main")
                .spawn()
                .unwrap(),
        ));
    }
    for (name, mut c) in children {
        let st = c.wait().unwrap();
        assert!(st.success(), "{name}: {st}");
    }
    wait_until(Duration::from_secs(30), "both servers to hold all", || {
        lab.stored_names(1, &dst) == names && lab.stored_names(2, &dst) == names
    });
    for name in &names {
        assert_on_both(&lab, &dst, &wal, name);
    }
}

#[test]
fn lookahead_sends_the_backlog_and_later_calls_return_from_records() {
    let lab = Lab::with(LabOptions {
        extra_client_config: "lookahead_max = 8\n".into(),
        ..Default::default()
    });
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("h", 10, 1);
    mark_ready(&wal, &names);
    let out = archive(&lab, &dst, &wal, &names[0]);
    assert_archived_ok(&out, &names[0]);
    assert!(
        stderr(&out).contains("look-ahead sent 7 more"),
        "{}",
        stderr(&out)
    );
    assert_eq!(lab.stored_names(1, &dst), names[..8]);
    // PostgreSQL marks each done and asks for the next: answered from records.
    let mut changed = fs::read(wal.join(&names[5])).unwrap();
    for (i, n) in names.iter().enumerate().skip(1) {
        let st = wal.join("archive_status");
        fs::rename(
            st.join(format!("{}.ready", names[i - 1])),
            st.join(format!("{}.done", names[i - 1])),
        )
        .unwrap();
        if i == 5 {
            // The record proves content, not a name: a changed file is sent again.
            let last = changed.len() - 1;
            changed[last] ^= 0xff;
            write_postgres_file(wal.join(n), &changed, 0o600);
            let out = archive(&lab, &dst, &wal, n);
            assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
            assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
            continue;
        }
        let out = archive(&lab, &dst, &wal, n);
        assert_archived_ok(&out, n);
        if i < 8 {
            assert!(
                stderr(&out).contains("by look-ahead"),
                "{n}: {}",
                stderr(&out)
            );
        }
    }
    let all: Vec<String> = names.iter().filter(|n| *n != &names[5]).cloned().collect();
    let mut expect = all.clone();
    expect.push(names[5].clone());
    expect.sort();
    wait_until(Duration::from_secs(30), "both servers to hold all", || {
        lab.stored_names(2, &dst) == expect
    });
    for name in &all {
        assert_on_both(&lab, &dst, &wal, name);
    }
}

#[test]
fn push_queue_max_drops_with_a_warning_and_a_record_when_no_server_answers() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("i", 3, 1);
    mark_ready(&wal, &names);
    lab.stop_server(1);
    lab.stop_server(2);
    // Off by default: the call fails and PostgreSQL keeps the WAL.
    let out = archive(&lab, &dst, &wal, &names[0]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // Backlog of 3 MiB over a 2 MiB limit: acknowledged, loudly.
    let mut cmd = lab.archive_cmd(&dst, &wal.join(&names[0]), &names[0], "main");
    cmd.args(["--set", "push_queue_max=2MiB"]);
    let out = run(&mut cmd);
    assert_archived_ok(&out, &names[0]);
    assert!(stderr(&out).contains("DROPPED"), "{}", stderr(&out));
    let log = fs::read_to_string(lab.primary_state_dir().join("main").join("dropped.log")).unwrap();
    assert!(log.contains(&names[0]), "{log}");
    // Under the limit it is not dropped.
    let mut cmd = lab.archive_cmd(&dst, &wal.join(&names[1]), &names[1], "main");
    cmd.args(["--set", "push_queue_max=1GiB"]);
    assert_eq!(run(&mut cmd).status.code(), Some(1));
}

/// A local error (here %p unreadable) used to count as a failure of each
/// host in turn, so with a backlog over push_queue_max the segment was
/// "dropped" (exit 0: PostgreSQL would delete it) while both servers were
/// fine, and both hosts went toward cooldown.
#[test]
fn a_local_error_never_drops_a_segment_nor_blames_the_hosts() {
    use std::os::unix::fs::PermissionsExt;
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("u", 3, 1);
    mark_ready(&wal, &names);
    let p = wal.join(&names[0]);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = lab.archive_cmd(&dst, &p, &names[0], "main");
    cmd.args(["--set", "push_queue_max=2MiB"]);
    let out = run(&mut cmd);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("DROPPED"), "{}", stderr(&out));
    assert!(stderr(&out).contains(&names[0]), "{}", stderr(&out));
    assert!(!lab
        .primary_state_dir()
        .join("main")
        .join("dropped.log")
        .exists());
    let health =
        archive_core::net::health::HealthBook::open(&lab.primary_state_dir().join("health"))
            .unwrap();
    for host in ["arch1", "arch2"] {
        assert_eq!(health.state(host).failures, 0, "{host} was blamed");
    }
    // Readable again: archived as usual.
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    assert_archived_ok(&archive(&lab, &dst, &wal, &names[0]), &names[0]);
}

#[test]
fn forced_command_key_cannot_run_anything_else() {
    let lab = lab();
    assert!(lab.forced_command());
    let marker = lab.dir().join("pwned");
    let out = run(&mut lab.ssh("arch1", &format!("touch {}", marker.display())));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("may only run"), "{}", stderr(&out));
    assert!(!marker.exists());
    let out = run(&mut lab.ssh("arch1", "sh -c 'archive-remote-cmd serve'"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// One protocol frame: length, then JSON (what archive-remote-cmd reads).
fn frame(json: String) -> Vec<u8> {
    let mut v = (json.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(json.as_bytes());
    v
}

/// `archive_status/<name>.ready` for each: a backlog PostgreSQL has not
/// archived yet.
fn mark_ready(wal: &Path, names: &[String]) {
    for n in names {
        write_postgres_file(
            wal.join("archive_status").join(format!("{n}.ready")),
            b"",
            0o600,
        );
    }
}

fn thread_sleep(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

#[test]
fn with_wait_for_forward_the_call_returns_only_once_both_servers_hold_it() {
    let lab = Lab::with(LabOptions {
        extra_client_config: "wait_for_forward = true\n".into(),
        ..Default::default()
    });
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("w", 3, 1);
    for name in &names {
        let out = archive(&lab, &dst, &wal, name);
        assert_archived_ok(&out, name);
        // Checked at once, without waiting: the forward was part of the call.
        assert!(
            lab.stored_path(2, &dst, name).exists(),
            "arch2 lacks {name} when archive-cmd returned: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("forwarded to arch2"),
            "{}",
            stderr(&out)
        );
    }
    assert!(lab.owed_names(1, &dst).is_empty());
}

/// arch1's ssh alias for its peer reaching arch1 itself: every forward
/// used to be answered "already stored" by arch1 and counted as the second
/// copy, so nothing was owed and only one copy existed.
#[test]
fn a_peer_alias_reaching_the_server_itself_is_no_second_copy() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("self", 2, 1);
    let (s1, s2) = (lab.server(1), lab.server(2));
    let text = fs::read_to_string(s1.ssh_config_path()).unwrap();
    let to_arch2 = format!("HostName {}\n  Port {}\n", s2.ip(), s2.port());
    assert!(text.contains(&to_arch2), "{text}");
    let to_itself = format!("HostName {}\n  Port {}\n", s1.ip(), s1.port());
    write_postgres_file(
        s1.ssh_config_path(),
        text.replace(&to_arch2, &to_itself),
        0o644,
    );
    // ... and arch1 accepts its own key, as arch2 does (as a peer).
    let peer_line = fs::read_to_string(s2.authorized_keys_path())
        .unwrap()
        .lines()
        .find(|l| l.ends_with(" lab-arch1"))
        .expect("arch2 authorizes arch1's key")
        .to_string();
    let mut keys = fs::read_to_string(s1.authorized_keys_path()).unwrap();
    keys.push_str(&peer_line);
    keys.push('\n');
    write_postgres_file(s1.authorized_keys_path(), keys, 0o600);
    for name in &names {
        assert_archived_ok(&archive(&lab, &dst, &wal, name), name);
    }
    // Forwards run in the background: give them time to (wrongly) finish.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(lab.stored_names(1, &dst), names);
    assert!(lab.stored_names(2, &dst).is_empty());
    assert_eq!(lab.owed_names(1, &dst), names, "still owed to arch2");
    // And arch1 says why, where its peer's health is kept.
    let health =
        archive_core::net::health::HealthBook::open(&s1.state_dir().join("health")).unwrap();
    let st = health.state("arch2");
    assert!(
        st.last_error.contains("answers as this server itself"),
        "{st:?}"
    );
}
