//! Restoring from the two servers: restore-cmd as the restore_command of
//! log-shipping standbys and of a point-in-time recovery (real PostgreSQL
//! 15, real sshd), and called directly the way PostgreSQL calls it (as
//! postgres, in the data directory, %p = pg_wal/RECOVERYXLOG), bytes checked.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use e2e::sampler::Sampler;
use e2e::{
    list_files, niceness, prefetch_dir, prefetch_wal_bytes, prefetch_workers, run,
    run_with_timeout, stderr, temp_files, wait_archived, wait_until, write_postgres_file, Lab,
    LabOptions, RECOVERYXLOG,
};

const MIB: u64 = 1 << 20;

/// A lab with short cooldowns so failover can be watched in a test.
fn lab() -> Lab {
    Lab::with(LabOptions::short_cooldowns())
}

fn run_limited(cmd: &mut Command) -> Output {
    run_with_timeout(cmd, Duration::from_secs(180))
        .unwrap_or_else(|| panic!("{} hung", e2e::command_line(cmd)))
}

/// restore-cmd for `name` in `data_dir`, as PostgreSQL runs it.
fn restore(lab: &Lab, cfg: &Path, src: &str, data_dir: &Path, name: &str) -> Output {
    run_limited(&mut lab.restore_cmd(cfg, src, data_dir, name))
}

/// The same with DELAY-SECONDS.
fn restore_delayed(
    lab: &Lab,
    cfg: &Path,
    src: &str,
    data_dir: &Path,
    name: &str,
    delay: u64,
) -> Output {
    let mut cmd = lab.restore_cmd(cfg, src, data_dir, name);
    cmd.arg(delay.to_string());
    run_limited(&mut cmd)
}

fn assert_restored(out: &Output, name: &str) {
    assert!(
        out.status.success(),
        "restore-cmd {name} failed ({}): {}",
        out.status,
        stderr(out)
    );
}

/// Takes the restored file out of `data_dir` (as PostgreSQL does with
/// RECOVERYXLOG) and checks it is exactly `original`.
fn take_and_check(data_dir: &Path, original: &Path) {
    let p = data_dir.join(RECOVERYXLOG);
    let got = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let want = fs::read(original).unwrap();
    assert!(
        got == want,
        "restored bytes of {} differ from the original",
        original.display()
    );
    fs::remove_file(&p).unwrap();
}

fn archive_all(lab: &Lab, dst: &str, wal: &Path, names: &[String]) {
    for n in names {
        let out = run(&mut lab.archive_cmd(dst, &wal.join(n), n, "main"));
        assert!(out.status.success(), "archive {n}: {}", stderr(&out));
    }
    wait_until(Duration::from_secs(60), "both servers to hold all", || {
        names
            .iter()
            .all(|n| lab.stored_path(1, dst, n).exists() && lab.stored_path(2, dst, n).exists())
    });
}

/// Flips a byte in the middle of a stored file (its owner and mode stay).
fn corrupt(path: &Path) {
    let mut b = fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x5a;
    fs::write(path, b).unwrap();
}

fn set_mtime(path: &Path, secs_ago: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// The same data on both sides: every account's balance, and the history.
const CHECKSUM: &str = "select count(*) || ':' || sum(abalance) || ':' || \
     md5(string_agg(aid::text || '=' || abalance::text, ',' order by aid)) \
     || '/' || (select count(*) || ':' || coalesce(sum(delta), 0) from pgbench_history) \
     from pgbench_accounts";

/// restore-cmd lines at ERROR level in a server log.
fn restore_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("restore-cmd[") && l.contains(" ERROR: "))
        .collect()
}

#[test]
fn standby_replays_pgbench_wal_from_the_archive_and_matches_the_primary() {
    let lab = lab();
    let dst = lab.dst("main");
    let pg = lab.archiving_primary("primary", &dst, "");
    pg.pgbench(&["-i", "-s", "2", "-q"]);
    let cfg = lab.restore_config("sb", "restore_queue_max = \"8MiB\"\n");
    let sb = lab.log_shipping_standby(&pg, "standby", &lab.restore_command(&cfg, &dst, None));
    sb.start();
    pg.pgbench(&["-c", "2", "-j", "2", "-t", "1500", "-n"]);
    let last = pg.switch_wal();
    wait_archived(&pg, &last, Duration::from_secs(180));
    let want = pg.psql(CHECKSUM);
    sb.wait_for(CHECKSUM, &want, Duration::from_secs(300));
    let log = sb.log();
    assert!(
        log.contains("restore-cmd[") && log.contains(&format!("restored {last}")),
        "restore-cmd logs each file into the server log"
    );
    assert!(
        log.contains("from the prefetch buffer"),
        "later segments come from the prefetch buffer"
    );
    assert!(
        restore_errors(&log).is_empty(),
        "{:?}",
        restore_errors(&log)
    );
    assert!(sb.is_running());
}

#[test]
fn standby_restores_from_host2_while_host1_is_down() {
    let lab = lab();
    let dst = lab.dst("main");
    let pg = lab.archiving_primary("primary", &dst, "");
    pg.pgbench(&["-i", "-s", "1", "-q"]);
    let cfg = lab.restore_config("sb", "");
    let sb = lab.log_shipping_standby(&pg, "standby", &lab.restore_command(&cfg, &dst, None));
    lab.stop_server(1);
    pg.pgbench(&["-c", "2", "-j", "2", "-t", "1000", "-n"]);
    let last = pg.switch_wal();
    wait_archived(&pg, &last, Duration::from_secs(180));
    assert!(
        !lab.stored_names(1, &dst).contains(&last),
        "arch1 is down: the tail is on arch2 only"
    );
    sb.start();
    let want = pg.psql(CHECKSUM);
    sb.wait_for(CHECKSUM, &want, Duration::from_secs(300));
    let log = sb.log();
    assert!(log.contains(&format!("restored {last}")), "{log}");
    assert!(
        restore_errors(&log).is_empty(),
        "{:?}",
        restore_errors(&log)
    );
}

#[test]
fn a_bad_copy_on_host1_is_replaced_by_host2s_and_two_bad_copies_fail_naming_both() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("c", 3, 1);
    archive_all(&lab, &dst, &wal, &names);
    let dd = lab.fake_data_dir("sb", true);
    let cfg = lab.restore_config("sb", "restore_prefetch = false\n");

    // A flipped byte in arch1's zstd copy: it fails to decode.
    corrupt(&lab.stored_path(1, &dst, &names[0]));
    let out = restore(&lab, &cfg, &dst, &dd, &names[0]);
    assert_restored(&out, &names[0]);
    assert!(stderr(&out).contains("on arch1 is bad"), "{}", stderr(&out));
    assert!(stderr(&out).contains("from arch2"), "{}", stderr(&out));
    take_and_check(&dd, &wal.join(&names[0]));

    // A copy that decodes, but is another segment: its page header says so.
    fs::copy(
        lab.stored_path(1, &dst, &names[2]),
        lab.stored_path(1, &dst, &names[1]),
    )
    .unwrap();
    let out = restore(&lab, &cfg, &dst, &dd, &names[1]);
    assert_restored(&out, &names[1]);
    assert!(
        stderr(&out).contains("not the file its name says"),
        "{}",
        stderr(&out)
    );
    take_and_check(&dd, &wal.join(&names[1]));

    // Both copies bad: not restored, nothing at %p, both hosts named.
    corrupt(&lab.stored_path(2, &dst, &names[0]));
    let out = restore(&lab, &cfg, &dst, &dd, &names[0]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("arch1: bad copy") && err.contains("arch2: bad copy"),
        "{err}"
    );
    assert!(!dd.join(RECOVERYXLOG).exists());

    // The same in archive recovery: PostgreSQL must stop, not end recovery.
    let pitr = lab.fake_data_dir("pitr", false);
    write_postgres_file(pitr.join("recovery.signal"), "", 0o600);
    let out = restore(&lab, &cfg, &dst, &pitr, &names[0]);
    assert_eq!(out.status.code(), Some(200), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("archive recovery"),
        "{}",
        stderr(&out)
    );
    assert!(!pitr.join(RECOVERYXLOG).exists());
}

#[test]
fn a_missing_segment_is_not_available_then_restores_once_archived() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("m", 2, 1);
    archive_all(&lab, &dst, &wal, &names[..1]);
    let dd = lab.fake_data_dir("sb", true);
    let cfg = lab.restore_config("sb", "");
    // A missing state directory is made, not fatal.
    let state = lab.dir().join("sb/state");
    fs::remove_dir_all(&state).unwrap();
    let out = restore(&lab, &cfg, &dst, &dd, &names[1]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(state.join("health").is_dir());
    assert!(!dd.join(RECOVERYXLOG).exists());
    assert!(
        !stderr(&out).contains("ERROR"),
        "\"not found\" is quiet: {}",
        stderr(&out)
    );
    // Not a failure: both hosts stay healthy.
    let health = lab.dir().join("sb/state/health");
    for f in list_files(&health) {
        let text = fs::read_to_string(health.join(&f)).unwrap();
        assert!(text.contains("\"failures\":0"), "{f}: {text}");
    }

    archive_all(&lab, &dst, &wal, &names[1..]);
    let out = restore(&lab, &cfg, &dst, &dd, &names[1]);
    assert_restored(&out, &names[1]);
    take_and_check(&dd, &wal.join(&names[1]));
    let out = restore(&lab, &cfg, &dst, &dd, &names[0]);
    assert_restored(&out, &names[0]);
    take_and_check(&dd, &wal.join(&names[0]));
}

#[test]
fn both_hosts_down_or_frozen_fails_within_the_timeouts() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("b", 1, 1);
    archive_all(&lab, &dst, &wal, &names);
    let dd = lab.fake_data_dir("sb", true);
    let cfg = lab.restore_config("sb", "restore_prefetch = false\n");

    lab.stop_server(1);
    lab.stop_server(2);
    let t = Instant::now();
    let out = restore(&lab, &cfg, &dst, &dd, &names[0]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    let err = stderr(&out);
    assert!(
        err.contains("arch1") && err.contains("arch2") && err.contains("failed"),
        "{err}"
    );
    assert!(!dd.join(RECOVERYXLOG).exists());

    // Black holes: connections hang; the connect timeout ends the call.
    lab.start_server(1);
    lab.start_server(2);
    lab.freeze_server(1);
    lab.freeze_server(2);
    let t = Instant::now();
    let out = restore(&lab, &cfg, &dst, &dd, &names[0]);
    lab.thaw_server(1);
    lab.thaw_server(2);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(t.elapsed() < Duration::from_secs(90), "{:?}", t.elapsed());
    assert!(!dd.join(RECOVERYXLOG).exists());

    // Back: restored.
    let out = restore(&lab, &cfg, &dst, &dd, &names[0]);
    assert_restored(&out, &names[0]);
    take_and_check(&dd, &wal.join(&names[0]));
}

#[test]
fn bzip2_gzip_and_plain_copies_restore() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("z", 4, 1);
    archive_all(&lab, &dst, &wal, &names[..1]);
    // Archive 2.0 stored pbzip2 output (one bzip2 stream per block); gzip
    // and uncompressed files come from other tools. Written straight into
    // both servers' storage.
    let pbzip2 = run_ok_bytes(
        Command::new("pbzip2")
            .args(["-c", "-b1", "-p2"])
            .arg(wal.join(&names[1])),
    );
    let streams = pbzip2
        .windows(10)
        .filter(|w| w.starts_with(b"BZh") && w[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59])
        .count();
    assert!(streams >= 2, "pbzip2 wrote {streams} stream(s)");
    let gzip = run_ok_bytes(Command::new("gzip").arg("-c").arg(wal.join(&names[2])));
    let plain = fs::read(wal.join(&names[3])).unwrap();
    for n in [1, 2] {
        write_postgres_file(lab.stored_path(n, &dst, &names[1]), &pbzip2, 0o600);
        write_postgres_file(lab.stored_path(n, &dst, &names[2]), &gzip, 0o600);
        write_postgres_file(lab.stored_path(n, &dst, &names[3]), &plain, 0o600);
    }
    // Through the hosts (prefetch off) and through the prefetch worker.
    for (tag, extra) in [("direct", "restore_prefetch = false\n"), ("prefetch", "")] {
        let dd = lab.fake_data_dir(&format!("sb-{tag}"), true);
        let cfg = lab.restore_config(&format!("sb-{tag}"), extra);
        for (i, codec) in [(0, "zstd"), (1, "bzip2"), (2, "gzip"), (3, "plain")] {
            if tag == "prefetch" && i > 0 {
                let buffered = prefetch_dir(&dd).join(&names[i]);
                wait_until(Duration::from_secs(60), "the worker to buffer it", || {
                    buffered.exists()
                });
            }
            let out = restore(&lab, &cfg, &dst, &dd, &names[i]);
            assert_restored(&out, &names[i]);
            let err = stderr(&out);
            assert!(err.contains(&format!("({codec}, ")), "{tag}: {err}");
            if tag == "prefetch" && i > 0 {
                assert!(err.contains("from the prefetch buffer"), "{err}");
            }
            take_and_check(&dd, &wal.join(&names[i]));
        }
    }
}

#[test]
fn the_manual_directory_is_searched_first() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("md", 2, 1);
    archive_all(&lab, &dst, &wal, &names[..1]);
    let manual = lab.dir().join("manual");
    e2e::mkdir_postgres(&manual, 0o700);
    // An operator's copy of a segment the archive lacks, pbzip2-compressed.
    let bz = run_ok_bytes(
        Command::new("pbzip2")
            .args(["-c", "-b1"])
            .arg(wal.join(&names[1])),
    );
    write_postgres_file(manual.join(&names[1]), &bz, 0o600);
    let dd = lab.fake_data_dir("sb", true);
    let cfg = lab.restore_config(
        "sb",
        &format!("restore_manual_dir = {:?}\n", manual.to_string_lossy()),
    );
    lab.stop_server(1);
    lab.stop_server(2);
    let out = restore(&lab, &cfg, &dst, &dd, &names[1]);
    assert_restored(&out, &names[1]);
    assert!(
        stderr(&out).contains("manual directory"),
        "{}",
        stderr(&out)
    );
    take_and_check(&dd, &wal.join(&names[1]));
    // Not there: on to the hosts (down here).
    let out = restore(&lab, &cfg, &dst, &dd, &names[0]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

fn run_ok_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    out.stdout
}

#[test]
fn delay_is_honoured_with_one_message_per_segment() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("d", 2, 1);
    archive_all(&lab, &dst, &wal, &names);
    for n in [1, 2] {
        for name in &names {
            set_mtime(&lab.stored_path(n, &dst, name), 30);
        }
    }
    for (tag, extra) in [("direct", "restore_prefetch = false\n"), ("prefetch", "")] {
        let dd = lab.fake_data_dir(&format!("sb-{tag}"), true);
        let cfg = lab.restore_config(&format!("sb-{tag}"), extra);
        // Archived 30 s ago, an hour's delay: not yet, one line said.
        let out = restore_delayed(&lab, &cfg, &dst, &dd, &names[0], 3600);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(!dd.join(RECOVERYXLOG).exists());
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("DELAY-SECONDS is 3600"), "{err}");
        // PostgreSQL asks again: quiet.
        for _ in 0..3 {
            let out = restore_delayed(&lab, &cfg, &dst, &dd, &names[0], 3600);
            assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
            assert_eq!(stderr(&out), "", "no log flood");
        }
        if tag == "prefetch" {
            // The worker holds it (and the next one) while it matures.
            let b = prefetch_dir(&dd);
            wait_until(Duration::from_secs(60), "the worker to buffer them", || {
                b.join(&names[0]).exists() && b.join(&names[1]).exists()
            });
            let out = restore_delayed(&lab, &cfg, &dst, &dd, &names[0], 3600);
            assert_eq!(out.status.code(), Some(1));
        }
        // A 10 s delay: old enough.
        let out = restore_delayed(&lab, &cfg, &dst, &dd, &names[0], 10);
        assert_restored(&out, &names[0]);
        take_and_check(&dd, &wal.join(&names[0]));
        let out = restore_delayed(&lab, &cfg, &dst, &dd, &names[1], 10);
        assert_restored(&out, &names[1]);
        take_and_check(&dd, &wal.join(&names[1]));
    }
}

/// Samples a prefetch buffer in the background: the most WAL bytes and the
/// most workers seen at once, which [`Sampler::finish`] returns.
fn sample_buffer(buffer: PathBuf) -> Sampler<(u64, usize)> {
    Sampler::start("buffer-sampler", move |stop| {
        let (mut bytes, mut workers) = (0, 0);
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            bytes = bytes.max(prefetch_wal_bytes(&buffer));
            i += 1;
            if i.is_multiple_of(10) {
                workers = workers.max(prefetch_workers(&buffer).len());
            }
            thread::sleep(Duration::from_millis(1));
        }
        (bytes, workers)
    })
}

#[test]
fn prefetch_serves_from_a_bounded_buffer_and_the_worker_leaves_when_idle() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("p", 12, 1);
    archive_all(&lab, &dst, &wal, &names);
    let dd = lab.fake_data_dir("sb", true);
    let cfg = lab.restore_config(
        "sb",
        "restore_queue_max = \"3MiB\"\nrestore_parallel = 2\nrestore_prefetch_idle = 3\n",
    );
    let buffer = prefetch_dir(&dd);
    let sampler = sample_buffer(buffer.clone());
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            wait_until(Duration::from_secs(60), "the worker to buffer it", || {
                buffer.join(n).exists()
            });
            assert_identity_recorded(&buffer, n);
        }
        let out = restore(&lab, &cfg, &dst, &dd, n);
        assert_restored(&out, n);
        if i > 0 {
            assert!(
                stderr(&out).contains("from the prefetch buffer"),
                "{}",
                stderr(&out)
            );
        }
        take_and_check(&dd, &wal.join(n));
    }
    let (max_bytes, max_workers) = sampler.finish();
    assert!(
        max_bytes <= 3 * MIB,
        "the buffer held {max_bytes} bytes, over its 3 MiB bound"
    );
    assert!(max_bytes >= 2 * MIB, "it did prefetch ahead ({max_bytes})");
    assert_eq!(max_workers, 1, "one worker per buffer");
    // The worker yields the CPU to PostgreSQL. It runs in a session of its
    // own, so under autogroup scheduling its own nice ranks it only among
    // its threads: its group's nice must be lowered too.
    let workers = prefetch_workers(&buffer);
    assert_eq!(workers.len(), 1, "the worker is still there (idle 3 s)");
    // 5 more than the caller's (this test's, inherited by restore-cmd).
    let ours = niceness(std::process::id() as i32).0.expect("our nice");
    let want = (ours + 5).min(19);
    let (own, group) = niceness(workers[0]);
    assert_eq!(own, Some(want), "the worker's nice");
    if let Some(g) = group {
        assert_eq!(g, want, "the worker's autogroup nice");
    }
    // And it is batch work: a waking call preempts it sooner.
    let policies = e2e::thread_policies(workers[0]);
    assert!(!policies.is_empty(), "no threads of {}", workers[0]);
    assert!(
        policies.iter().all(|&p| p == libc::SCHED_BATCH as u32),
        "the worker's threads' policies: {policies:?}"
    );
    // Nothing asked for 3 s: the worker empties the buffer and leaves.
    wait_until(Duration::from_secs(60), "the idle worker to leave", || {
        prefetch_workers(&buffer).is_empty()
    });
    assert_eq!(prefetch_wal_bytes(&buffer), 0);
}

/// The worker records each buffered file's identity, which spares a call
/// reading and hashing it again (unit tests in archive-core's restore).
fn assert_identity_recorded(buffer: &Path, name: &str) {
    let b = archive_core::client::restore::buffer::Buffer::at(buffer);
    let meta = b.read_meta(name).expect("a record next to the segment");
    let file = fs::File::open(buffer.join(name)).unwrap();
    let now = archive_core::client::restore::buffer::FileId::of(&file);
    assert!(meta.file.is_some(), "no identity in {name}'s record");
    assert_eq!(meta.file, now, "{name}'s identity");
}

/// The worker used to start only once a call had handed its segment over,
/// so a standby's first calls each downloaded a segment by themselves while
/// the worker got going. It now starts as soon as a host has the requested
/// segment, sizing its queue by pg_control's segment size. Both copies of
/// the requested segment are bad here: the call fails, so only that early
/// start can start the worker, which buffers the next segments within the
/// queue bound and serves them.
fn early_start_with_bad_copies(tag: &str, count: usize, seg_mb: u32, queue_mib: u64) {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments(tag, count, seg_mb);
    archive_all(&lab, &dst, &wal, &names);
    corrupt(&lab.stored_path(1, &dst, &names[0]));
    corrupt(&lab.stored_path(2, &dst, &names[0]));
    let dd = lab.fake_data_dir("sb", true);
    lab.copy_pg_control(tag, &dd);
    // The worker must outlast the wait below: with 5 s idle it emptied the
    // buffer and left before the second call on a loaded CI machine (64 MiB
    // segments), and the call fetched from arch1.
    let cfg = lab.restore_config(
        "sb",
        &format!(
            "restore_queue_max = \"{queue_mib}MiB\"\nrestore_parallel = 3\nrestore_prefetch_idle = 60\n"
        ),
    );
    let buffer = prefetch_dir(&dd);
    let sampler = sample_buffer(buffer.clone());
    let out = restore(&lab, &cfg, &dst, &dd, &names[0]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!dd.join(RECOVERYXLOG).exists());
    wait_until(Duration::from_secs(60), "two segments buffered", || {
        buffer.join(&names[1]).exists() && buffer.join(&names[2]).exists()
    });
    thread::sleep(Duration::from_secs(1));
    let (max_bytes, _) = sampler.finish();
    assert!(
        max_bytes <= queue_mib * MIB,
        "the buffer held {} MiB, over its {queue_mib} MiB bound",
        max_bytes >> 20
    );
    let out = restore(&lab, &cfg, &dst, &dd, &names[1]);
    assert_restored(&out, &names[1]);
    assert!(
        stderr(&out).contains("from the prefetch buffer"),
        "{}",
        stderr(&out)
    );
    take_and_check(&dd, &wal.join(&names[1]));
}

#[test]
fn the_worker_starts_as_soon_as_a_host_has_the_requested_segment() {
    early_start_with_bad_copies("e", 3, 16, 32);
}

/// The early start first guessed 16 MiB segments when it had no size yet
/// (review): with 64 MiB ones, three transfers counted as 16 MiB each put
/// 178-256 MiB in a 128 MiB queue.
#[test]
fn an_early_start_sizes_the_queue_by_the_clusters_segments() {
    early_start_with_bad_copies("g", 5, 64, 128);
}

/// restore_command as a DBA may write it: paths relative to the data
/// directory, where PostgreSQL runs it. The prefetch worker used to run in
/// `/`, so a relative `--config` broke it silently (no prefetch, a new
/// worker forked per call); a bare %p was renamed into place and then the
/// call failed on fsyncing directory "".
#[test]
fn relative_paths_work_for_the_call_and_its_prefetch_worker() {
    let lab = lab();
    let dst = lab.dst("rel");
    let (wal, names) = lab.wal_segments("r", 3, 1);
    archive_all(&lab, &dst, &wal, &names);
    let dd = lab.fake_data_dir("sb", true);
    let cfg = lab.restore_config("sb", "");
    write_postgres_file(
        dd.join("restore.toml"),
        fs::read_to_string(&cfg).unwrap(),
        0o600,
    );
    let rel = Path::new("restore.toml");

    // By hand, prefetch off: %p is a bare name in the current directory.
    let out = run_limited(
        lab.postgres_cmd(e2e::bin("restore-cmd"))
            .args([
                "--config",
                "restore.toml",
                "--set",
                "restore_prefetch=false",
            ])
            .arg(lab.hosts())
            .arg(&dst)
            .arg(&names[0])
            .arg("by-hand.seg")
            .current_dir(&dd),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        fs::read(dd.join("by-hand.seg")).unwrap() == fs::read(wal.join(&names[0])).unwrap(),
        "by-hand.seg is not the original"
    );

    // As PostgreSQL calls it: the worker reads the same relative config.
    let buffer = prefetch_dir(&dd);
    let out = restore(&lab, rel, &dst, &dd, &names[1]);
    assert_restored(&out, &names[1]);
    take_and_check(&dd, &wal.join(&names[1]));
    wait_until(
        Duration::from_secs(60),
        "the worker to buffer the next segment",
        || buffer.join(&names[2]).exists(),
    );
    let out = restore(&lab, rel, &dst, &dd, &names[2]);
    assert_restored(&out, &names[2]);
    assert!(
        stderr(&out).contains("from the prefetch buffer"),
        "{}",
        stderr(&out)
    );
    take_and_check(&dd, &wal.join(&names[2]));
}

#[test]
fn a_timeline_change_empties_the_prefetch_queue() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("t", 6, 1);
    archive_all(&lab, &dst, &wal, &names);
    // A history file, and the next timeline's copy of names[3] (what a
    // promotion at its start makes: the old timeline's page header).
    let history = "00000002.history";
    let tl2 = format!("00000002{}", &names[3][8..]);
    let history_text = format!("1\t0/{:X}\tno recovery target specified\n", 3 << 20);
    for n in [1, 2] {
        write_postgres_file(lab.stored_path(n, &dst, history), &history_text, 0o600);
        write_postgres_file(
            lab.stored_path(n, &dst, &tl2),
            fs::read(wal.join(&names[3])).unwrap(),
            0o600,
        );
    }
    let dd = lab.fake_data_dir("sb", true);
    let cfg = lab.restore_config("sb", "restore_queue_max = \"4MiB\"\n");
    let buffer = prefetch_dir(&dd);
    let has_tl1 = || {
        list_files(&buffer)
            .iter()
            .any(|f| f.starts_with("00000001"))
    };

    let out = restore(&lab, &cfg, &dst, &dd, &names[0]);
    assert_restored(&out, &names[0]);
    take_and_check(&dd, &wal.join(&names[0]));
    wait_until(
        Duration::from_secs(60),
        "the worker to fill the buffer",
        || buffer.join(&names[1]).exists() && buffer.join(&names[2]).exists(),
    );
    // A history file restored: the queue empties and the worker leaves.
    let out = restore(&lab, &cfg, &dst, &dd, history);
    assert_restored(&out, history);
    assert_eq!(
        fs::read_to_string(dd.join(RECOVERYXLOG)).unwrap(),
        history_text
    );
    fs::remove_file(dd.join(RECOVERYXLOG)).unwrap();
    assert!(!has_tl1(), "emptied by the call itself");
    wait_until(Duration::from_secs(30), "the worker to leave", || {
        prefetch_workers(&buffer).is_empty() && prefetch_wal_bytes(&buffer) == 0
    });
    let log = fs::read_to_string(buffer.join("worker.log")).unwrap();
    assert!(log.contains("leaves: the request was withdrawn"), "{log}");

    // Back on timeline 1: prefetch starts again.
    let out = restore(&lab, &cfg, &dst, &dd, &names[1]);
    assert_restored(&out, &names[1]);
    assert!(
        !stderr(&out).contains("prefetch buffer"),
        "{}",
        stderr(&out)
    );
    take_and_check(&dd, &wal.join(&names[1]));
    wait_until(
        Duration::from_secs(60),
        "the worker to buffer timeline 1",
        || buffer.join(&names[2]).exists(),
    );
    // A segment of timeline 2: what was buffered for timeline 1 goes.
    let out = restore(&lab, &cfg, &dst, &dd, &tl2);
    assert_restored(&out, &tl2);
    take_and_check(&dd, &wal.join(&names[3]));
    wait_until(
        Duration::from_secs(30),
        "timeline 1 to leave the buffer",
        || !has_tl1(),
    );
}

#[test]
fn two_standbys_on_one_machine_never_share_a_buffer() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("s", 3, 1);
    archive_all(&lab, &dst, &wal, &names);
    let spool = lab.dir().join("spool");
    e2e::mkdir_postgres(&spool, 0o700);
    let cfg = lab.restore_config(
        "sb",
        &format!("restore_buffer_dir = {:?}\n", spool.to_string_lossy()),
    );
    let a = lab.fake_data_dir("sb-a", true);
    let b = lab.fake_data_dir("sb-b", true);
    for dd in [&a, &b] {
        let out = restore(&lab, &cfg, &dst, dd, &names[0]);
        assert_restored(&out, &names[0]);
        take_and_check(dd, &wal.join(&names[0]));
    }
    let dirs: Vec<PathBuf> = fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 2, "one buffer per data directory: {dirs:?}");
    for d in &dirs {
        wait_until(Duration::from_secs(60), "each worker to buffer", || {
            d.join(&names[1]).exists()
        });
        assert_eq!(prefetch_workers(d).len(), 1, "{}", d.display());
    }
    // Each standby takes its own copy.
    for dd in [&a, &b] {
        let out = restore(&lab, &cfg, &dst, dd, &names[1]);
        assert_restored(&out, &names[1]);
        assert!(stderr(&out).contains("prefetch buffer"), "{}", stderr(&out));
        take_and_check(dd, &wal.join(&names[1]));
    }
}

#[test]
fn sigkill_mid_fetch_never_leaves_a_partial_file() {
    let lab = lab();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("k", 1, 16);
    archive_all(&lab, &dst, &wal, &names);
    let dd = lab.fake_data_dir("sb", true);
    let cfg = lab.restore_config("sb", "restore_prefetch = false\n");
    let original = fs::read(wal.join(&names[0])).unwrap();
    let target = dd.join(RECOVERYXLOG);
    let mut complete = 0;
    for i in 0..15u64 {
        let mut child = lab
            .restore_cmd(&cfg, &dst, &dd, &names[0])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_millis(5 + i * 10));
        let _ = child.kill();
        let _ = child.wait();
        if target.exists() {
            assert!(
                fs::read(&target).unwrap() == original,
                "killed after {} ms: a partial or wrong file at %p",
                5 + i * 10
            );
            fs::remove_file(&target).unwrap();
            complete += 1;
        }
    }
    eprintln!("{complete} of 15 killed calls had finished");
    let out = restore(&lab, &cfg, &dst, &dd, &names[0]);
    assert_restored(&out, &names[0]);
    take_and_check(&dd, &wal.join(&names[0]));
    let leftovers = temp_files(dd.join("pg_wal"));
    assert!(
        leftovers.is_empty(),
        "temps of killed calls remain: {leftovers:?}"
    );
}

/// Segments arch1 holds and arch2 lacks.
fn only_on_arch1(lab: &Lab, dst: &str) -> Vec<String> {
    let on2 = lab.stored_names(2, dst);
    lab.stored_names(1, dst)
        .into_iter()
        .filter(|n| n.len() == 24 && !on2.contains(n))
        .collect()
}

#[test]
fn archive_recovery_stops_instead_of_ending_early_when_a_host_fails_or_has_a_bad_copy() {
    let lab = lab();
    let dst = lab.dst("main");
    let pg = lab.archiving_primary("primary", &dst, "");
    pg.pgbench(&["-i", "-s", "1", "-q"]);
    let pitr = lab.base_backup(&pg, "pitr");
    // The tail reaches arch1 only (arch2 is down; nothing delivers it later).
    lab.stop_server(2);
    pg.psql("create table marker(i int); insert into marker select generate_series(1, 1000)");
    pg.pgbench(&["-c", "2", "-j", "2", "-t", "300", "-n"]);
    let last = pg.switch_wal();
    wait_archived(&pg, &last, Duration::from_secs(120));
    pg.stop();
    lab.start_server(2);
    let tail = only_on_arch1(&lab, &dst);
    assert!(tail.len() >= 2, "tail on arch1 only: {tail:?}");
    // arch1's copy of the first of them goes bad.
    let victim = lab.stored_path(1, &dst, &tail[0]);
    let good = fs::read(&victim).unwrap();
    corrupt(&victim);

    // PITR to the end of the archive: it must not end at the bad segment.
    let cfg = lab.restore_config("pitr", "");
    pitr.set_conf(&format!(
        "restore_command = '{}'\narchive_mode = off\n",
        lab.restore_command(&cfg, &dst, None)
    ));
    pitr.create_recovery_signal();
    pitr.start_no_wait();
    wait_until(
        Duration::from_secs(180),
        "PostgreSQL to stop on restore-cmd's fatal exit",
        || pitr.log().contains("exit code 200") && !pitr.is_running(),
    );
    let log = pitr.log();
    assert!(log.contains("restored "), "it replayed what it could first");
    assert!(log.contains("FATAL"), "{log}");
    assert!(log.contains("on arch1 is bad"), "{log}");
    assert!(
        !log.contains("selected new timeline ID")
            && !log.contains("database system is ready to accept connections"),
        "recovery ended early and promoted:\n{log}"
    );
    assert!(
        pitr.data_dir().join("recovery.signal").exists(),
        "still an archive recovery, to be resumed"
    );

    // The copy is repaired, but arch1 is down now: a failed host stops the
    // recovery the same way (arch2 cannot tell what arch1 holds).
    fs::write(&victim, good).unwrap();
    lab.stop_server(1);
    pitr.start_no_wait();
    wait_until(
        Duration::from_secs(180),
        "PostgreSQL to stop again while arch1 is down",
        || pitr.log().matches("exit code 200").count() >= 2 && !pitr.is_running(),
    );
    let log = pitr.log();
    assert!(
        !log.contains("selected new timeline ID")
            && !log.contains("database system is ready to accept connections"),
        "recovery ended early and promoted:\n{log}"
    );

    // arch1 is back: the recovery completes, with all the data.
    lab.start_server(1);
    pitr.start();
    pitr.wait_for(
        "select pg_is_in_recovery()::text || (select count(*) from marker)",
        "false1000",
        Duration::from_secs(120),
    );
}

#[test]
fn a_standby_keeps_retrying_while_a_host_is_down_and_catches_up_when_it_returns() {
    let lab = lab();
    let dst = lab.dst("main");
    let pg = lab.archiving_primary("primary", &dst, "");
    pg.pgbench(&["-i", "-s", "1", "-q"]);
    let cfg = lab.restore_config("sb", "retry_count = 2\ncooldown = 3\n");
    let sb = lab.log_shipping_standby(&pg, "standby", &lab.restore_command(&cfg, &dst, None));
    lab.stop_server(2);
    pg.psql("create table marker(i int); insert into marker select generate_series(1, 1000)");
    let last = pg.switch_wal();
    wait_archived(&pg, &last, Duration::from_secs(120));
    lab.stop_server(1);
    lab.start_server(2);
    assert!(!only_on_arch1(&lab, &dst).is_empty());

    sb.start();
    wait_until(
        Duration::from_secs(120),
        "the standby to ask for the missing segment",
        || sb.log().contains("from arch1 failed"),
    );
    // It retries (exit 1), it does not stop.
    thread::sleep(Duration::from_secs(8));
    assert!(sb.is_running());
    let log = sb.log();
    assert!(
        !log.contains("FATAL") && !log.contains("exit code 200"),
        "{log}"
    );
    assert_eq!(
        sb.psql("select count(*) from pg_class where relname = 'marker'"),
        "0"
    );

    lab.start_server(1);
    sb.wait_for(
        "select count(*) from marker",
        "1000",
        Duration::from_secs(180),
    );
}
