//! archive-status against the lab: real archive servers over ssh (forced
//! command), real WAL archived by archive-cmd, a real backup_queue
//! database. Each state (clean, gap, one-sided, divergent, dropped, failed
//! and stuck tasks, stale backup, unreachable server, timeline switch) is
//! read in all three formats and by the Nagios check. `STATUS_SHOW=1` prints
//! every view (with `--nocapture`).

use std::fs;
use std::process::{Command, Output};

use archive_core::common::wal::WalName;
use archive_core::status::{chain::format_lsn, Level, Report};
use e2e::{
    bin, mkdir_postgres, run, stderr, stdout, write_postgres_file, HostRow, Lab, LabOptions,
    QueueDb,
};

const MB: u64 = 1 << 20;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// "YYYY-MM-DD HH:MM:SS" in UTC, by date(1).
fn utc(unix: i64) -> String {
    let out = run(Command::new("date")
        .arg("-u")
        .arg("-d")
        .arg(format!("@{unix}"))
        .arg("+%Y-%m-%d %H:%M:%S"));
    assert!(out.status.success());
    stdout(&out).trim().to_string()
}

/// A complete backup `data.master.<n>` on `server` whose label starts in
/// segment `start` (1 MiB segments) and that finished `age` seconds ago
/// (SUCCESS's mtime, as a marker written by another tool would say).
fn fake_backup(lab: &Lab, server: usize, n: u32, start: &str, age: i64) {
    let dir = lab
        .stored_backup_dir(server, "main")
        .join(format!("data.master.{n}"));
    mkdir_postgres(&dir, 0o700);
    let lsn = WalName::parse(start).unwrap().start_lsn(MB) + 0x28;
    let t = now() - age;
    let label = format!(
        "START WAL LOCATION: {} (file {start})\nCHECKPOINT LOCATION: {}\n\
         BACKUP METHOD: streamed\nBACKUP FROM: standby\nSTART TIME: {} UTC\n\
         LABEL: base-backup\nSTART TIMELINE: {}\n",
        format_lsn(lsn),
        format_lsn(lsn + 0x38),
        utc(t - 60),
        WalName::parse(start).unwrap().timeline()
    );
    write_postgres_file(dir.join("backup_label"), label, 0o600);
    let success = dir.join("SUCCESS");
    write_postgres_file(&success, b"", 0o600);
    let out = run(Command::new("touch")
        .arg("-d")
        .arg(format!("@{t}"))
        .arg(&success));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// archive-status as the primary runs it (its config with the monitor
/// key, as postgres).
fn status_cmd(lab: &Lab, args: &[String]) -> Command {
    let mut cmd = lab.postgres_cmd(bin("archive-status"));
    cmd.arg("--config").arg(lab.monitor_config()).args(args);
    cmd
}

/// Every view of one state.
struct Views {
    text: Output,
    json: Report,
    prom: String,
    check: Output,
}

impl Views {
    fn of(lab: &Lab, args: &[String]) -> Views {
        let text = run(&mut status_cmd(lab, args));
        let mut a = args.to_vec();
        a.push("--json".into());
        let json_out = run(&mut status_cmd(lab, &a));
        let json = Report::from_json(&stdout(&json_out)).unwrap_or_else(|e| {
            panic!(
                "{e}\nstdout: {}\nstderr: {}",
                stdout(&json_out),
                stderr(&json_out)
            )
        });
        let mut a = args.to_vec();
        a.push("--prometheus".into());
        let prom_out = run(&mut status_cmd(lab, &a));
        let mut a = vec!["check".to_string()];
        a.extend(args.iter().cloned());
        let check = run(&mut status_cmd(lab, &a));
        let v = Views {
            text,
            json,
            prom: stdout(&prom_out),
            check,
        };
        if std::env::var("STATUS_SHOW").is_ok_and(|v| v == "1") {
            eprintln!(
                "--- report\n{}--- check ({:?})\n{}--- prometheus\n{}",
                v.text_out(),
                v.check.status.code(),
                v.check_out(),
                v.prom
            );
        }
        // The formats agree on the level.
        let first = v.check_line();
        assert!(
            first.starts_with(&format!("PGARCHIVE {} - ", v.json.status.as_str())),
            "check says {first:?}, JSON says {:?}\n{}",
            v.json.status,
            v.text_out()
        );
        assert_eq!(v.check.status.code(), Some(v.json.status.exit_code()));
        assert!(
            v.text_out().starts_with(&format!(
                "archive-status {}: {}",
                env!("CARGO_PKG_VERSION"),
                v.json.status.as_str()
            )),
            "{}",
            v.text_out()
        );
        v
    }

    fn text_out(&self) -> String {
        stdout(&self.text)
    }

    fn check_line(&self) -> String {
        stdout(&self.check)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    fn check_out(&self) -> String {
        stdout(&self.check)
    }

    fn server(&self, host: &str) -> &archive_core::status::ServerReport {
        self.json.clusters[0]
            .servers
            .iter()
            .find(|s| s.host == host)
            .unwrap_or_else(|| panic!("no {host} in the report"))
    }

    /// The value of one Prometheus sample, e.g. `pgarchive_wal_gaps{cluster="main",server="arch1"}`.
    fn metric(&self, sample: &str) -> Option<f64> {
        self.prom
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .map(|v| v.parse().unwrap())
    }

    fn assert_metric(&self, sample: &str, want: f64) {
        assert_eq!(self.metric(sample), Some(want), "{sample}\n{}", self.prom);
    }
}

fn one_cluster_args(lab: &Lab) -> Vec<String> {
    vec![
        "--hosts".into(),
        "arch1 arch2".into(),
        "--wals-dir".into(),
        lab.dst("main"),
        "--backup-dir".into(),
        lab.backup_dir("main"),
        "--cluster".into(),
        "main".into(),
    ]
}

/// `count` segments archived to both servers, a backup from the first one
/// on each server, finished an hour ago.
fn archived_with_backups(lab: &Lab, tag: &str, count: usize) -> (std::path::PathBuf, Vec<String>) {
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments(tag, count, 1);
    for n in &names {
        lab.archive_to("arch1 arch2", &dst, &wal, n);
    }
    for s in [1, 2] {
        fake_backup(lab, s, 0, &names[0], 3600);
    }
    (wal, names)
}

fn queue_with_main(lab: &Lab) -> QueueDb {
    let q = lab.queue_db();
    q.add(&HostRow {
        directory: lab.backup_dir("main"),
        wals_dir: lab.dst("main"),
        periodicity_days: 4,
        ..HostRow::new("main")
    });
    q
}

fn insert_task(
    q: &QueueDb,
    archiver: &str,
    status: &str,
    started_hours_ago: i64,
    error: Option<&str>,
) -> i64 {
    let finished = if status == "running" {
        "null".to_string()
    } else {
        format!("now() - interval '{} minutes'", started_hours_ago * 60 - 30)
    };
    let error = error.map_or("null".to_string(), e2e::sql_str);
    q.sql(&format!(
        "insert into backups.tasks (cluster_name, archiver, status, started_at, finished_at, error) \
         values ('main', '{archiver}', '{status}', now() - interval '{started_hours_ago} hours', {finished}, {error}) \
         returning id"
    ))
    .lines()
    .last()
    .unwrap()
    .parse()
    .unwrap()
}

#[test]
fn a_clean_state_is_ok_in_every_format_with_a_few_requests_per_server() {
    let lab = Lab::new();
    let (_, names) = archived_with_backups(&lab, "clean", 4);
    // All clusters of the queue (here one), as cron on a monitoring host.
    let q = queue_with_main(&lab);
    for a in ["arch1", "arch2"] {
        insert_task(&q, a, "done", 2, None);
    }
    let v = Views::of(&lab, &["--queue-dsn".into(), q.dsn()]);
    assert_eq!(v.check.status.code(), Some(0), "{}", v.check_out());
    assert!(
        v.check_line()
            .starts_with("PGARCHIVE OK - 1 cluster(s) on 2 server(s) checked, no problem |"),
        "{}",
        v.check_out()
    );
    assert!(v.text.status.success(), "{}", stderr(&v.text));
    assert!(
        v.text_out().contains("none: everything is OK"),
        "{}",
        v.text_out()
    );

    let c = &v.json.clusters[0];
    assert_eq!(c.name, "main");
    assert_eq!(c.segment_size, Some(MB));
    assert_eq!(c.segment_size_source, "backup labels");
    assert_eq!(c.newest_segment.as_deref(), Some(names[3].as_str()));
    assert!(c.divergent.is_empty() && c.unverified.is_empty());
    for host in ["arch1", "arch2"] {
        let s = v.server(host);
        assert_eq!(s.error, None);
        assert_eq!(s.segments, 4);
        assert_eq!(s.newest_segment.as_deref(), Some(names[3].as_str()));
        assert!(s.newest_age_secs.unwrap() < 600, "{s:?}");
        let ch = s.chain.as_ref().unwrap();
        assert_eq!(
            (ch.from.as_str(), ch.from_backup, ch.expected),
            (names[0].as_str(), Some(0), 4)
        );
        assert_eq!((ch.gap_segments, ch.missing_here), (0, 0));
        assert_eq!(
            (s.one_sided, s.owed, s.conflicts, s.rejected),
            (0, Some(0), Some(0), Some(0))
        );
        let qs = s.queue.as_ref().unwrap();
        assert!(qs.last_done.is_some() && qs.failed.is_empty() && qs.stuck.is_empty());
        assert_eq!(qs.periodicity_days, 4);
        // One listing per server: List, ListBackups, DirStatus.
        assert!(s.requests <= 3, "{host}: {} requests", s.requests);
        v.assert_metric(
            &format!("pgarchive_up{{cluster=\"main\",server=\"{host}\"}}"),
            1.0,
        );
        v.assert_metric(
            &format!("pgarchive_wal_gaps{{cluster=\"main\",server=\"{host}\"}}"),
            0.0,
        );
        v.assert_metric(
            &format!("pgarchive_one_sided_segments{{cluster=\"main\",server=\"{host}\"}}"),
            0.0,
        );
        v.assert_metric(
            &format!("pgarchive_owed_segments{{cluster=\"main\",server=\"{host}\"}}"),
            0.0,
        );
        v.assert_metric(
            &format!("pgarchive_failed_tasks{{cluster=\"main\",server=\"{host}\"}}"),
            0.0,
        );
        v.assert_metric(
            &format!("pgarchive_backup_periodicity_seconds{{cluster=\"main\",server=\"{host}\"}}"),
            4.0 * 86400.0,
        );
        let age = v
            .metric(&format!(
                "pgarchive_backup_age_seconds{{cluster=\"main\",server=\"{host}\"}}"
            ))
            .unwrap();
        assert!((7000.0..8000.0).contains(&age), "{age}");
    }
    v.assert_metric("pgarchive_status{cluster=\"main\"}", 0.0);
    v.assert_metric("pgarchive_divergent_files{cluster=\"main\"}", 0.0);
    v.assert_metric("pgarchive_queue_up", 1.0);

    // --output writes the same exposition atomically, readable by others.
    let prom_file = lab.primary_dir().join("pgarchive.prom");
    fs::write(&prom_file, b"old").unwrap();
    e2e::chown_postgres(&prom_file);
    let out = run(&mut status_cmd(
        &lab,
        &[
            "--queue-dsn".into(),
            q.dsn(),
            "--prometheus".into(),
            "--output".into(),
            prom_file.display().to_string(),
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let written = fs::read_to_string(&prom_file).unwrap();
    assert!(
        written.contains("pgarchive_wal_gaps{cluster=\"main\",server=\"arch1\"} 0\n"),
        "{written}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&prom_file).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn a_segment_missing_on_both_servers_is_a_critical_gap() {
    let lab = Lab::new();
    let (_, names) = archived_with_backups(&lab, "gap", 5);
    let dst = lab.dst("main");
    for s in [1, 2] {
        fs::remove_file(lab.stored_path(s, &dst, &names[2])).unwrap();
    }
    let v = Views::of(&lab, &one_cluster_args(&lab));
    assert_eq!(v.check.status.code(), Some(2), "{}", v.check_out());
    assert!(
        v.check_line()
            .contains("main/arch1: 1 segment(s) missing on all servers"),
        "{}",
        v.check_out()
    );
    assert!(
        v.check_out()
            .contains(&format!("are missing on every server: {}", names[2])),
        "{}",
        v.check_out()
    );
    assert_eq!(
        v.text.status.code(),
        Some(0),
        "the report itself is complete"
    );
    assert!(
        v.text_out().contains(&format!("GAPS: {}", names[2])),
        "{}",
        v.text_out()
    );
    for host in ["arch1", "arch2"] {
        let ch = v.server(host).chain.clone().unwrap();
        assert_eq!(ch.expected, 5);
        assert_eq!(ch.gap_segments, 1);
        assert_eq!(
            (ch.gaps[0].from.as_str(), ch.gaps[0].count),
            (names[2].as_str(), 1)
        );
        assert_eq!(
            v.server(host).one_sided,
            0,
            "missing on both is not one-sided"
        );
        v.assert_metric(
            &format!("pgarchive_wal_gaps{{cluster=\"main\",server=\"{host}\"}}"),
            1.0,
        );
    }
    v.assert_metric("pgarchive_status{cluster=\"main\"}", 2.0);
}

#[test]
fn a_segment_on_one_server_only_is_a_warning() {
    let lab = Lab::new();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("one", 4, 1);
    for n in &names[..3] {
        lab.archive_to("arch1 arch2", &dst, &wal, n);
    }
    // Single-archive mode: arch2 only, nothing owed.
    lab.archive_to("arch2", &dst, &wal, &names[3]);
    for s in [1, 2] {
        fake_backup(&lab, s, 0, &names[0], 3600);
    }
    let v = Views::of(&lab, &one_cluster_args(&lab));
    assert_eq!(v.check.status.code(), Some(1), "{}", v.check_out());
    assert!(
        v.check_line()
            .starts_with("PGARCHIVE WARNING - main/arch2: 1 file(s) only here"),
        "{}",
        v.check_out()
    );
    assert!(
        v.check_out().contains(&format!("wal-sync {dst} arch1")),
        "what to do: {}",
        v.check_out()
    );
    let (a1, a2) = (v.server("arch1"), v.server("arch2"));
    assert_eq!(
        (a2.one_sided, a2.one_sided_names.clone()),
        (1, vec![names[3].clone()])
    );
    assert_eq!(a1.one_sided, 0);
    assert_eq!(a1.chain.as_ref().unwrap().missing_here, 1);
    assert_eq!(a1.chain.as_ref().unwrap().gap_segments, 0);
    assert_eq!(a1.newest_segment.as_deref(), Some(names[2].as_str()));
    assert_eq!(
        v.json.clusters[0].newest_segment.as_deref(),
        Some(names[3].as_str())
    );
    v.assert_metric(
        "pgarchive_one_sided_segments{cluster=\"main\",server=\"arch2\"}",
        1.0,
    );
    v.assert_metric(
        "pgarchive_one_sided_segments{cluster=\"main\",server=\"arch1\"}",
        0.0,
    );
    v.assert_metric(
        "pgarchive_wal_missing_here_segments{cluster=\"main\",server=\"arch1\"}",
        1.0,
    );
    v.assert_metric("pgarchive_wal_gaps{cluster=\"main\",server=\"arch1\"}", 0.0);
    assert!(
        v.text_out()
            .contains(&format!("only here: 1 ({})", names[3])),
        "{}",
        v.text_out()
    );
    // The threshold is an option.
    let mut a = vec!["check".to_string(), "--one-sided-warn".into(), "0".into()];
    a.extend(one_cluster_args(&lab));
    let out = run(&mut status_cmd(&lab, &a));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn a_divergent_file_is_critical_and_a_differently_compressed_copy_is_not() {
    let lab = Lab::new();
    let (wal, names) = archived_with_backups(&lab, "div", 3);
    let dst = lab.dst("main");
    // arch2: names[1] holds names[2]'s WAL; names[0] the same WAL as on
    // arch1, compressed harder. Both differ in stored size from arch1's.
    let other = zstd::encode_all(&fs::read(wal.join(&names[2])).unwrap()[..], 19).unwrap();
    let same = zstd::encode_all(&fs::read(wal.join(&names[0])).unwrap()[..], 19).unwrap();
    for (name, bytes) in [(&names[1], &other), (&names[0], &same)] {
        let p = lab.stored_path(2, &dst, name);
        assert_ne!(
            fs::metadata(&p).unwrap().len(),
            bytes.len() as u64,
            "{name}: sizes must differ for the test"
        );
        write_postgres_file(&p, bytes, 0o600);
    }
    let v = Views::of(&lab, &one_cluster_args(&lab));
    assert_eq!(v.check.status.code(), Some(2), "{}", v.check_out());
    assert!(
        v.check_line().contains("main: 1 divergent file(s)"),
        "{}",
        v.check_out()
    );
    let c = &v.json.clusters[0];
    assert_eq!(
        c.compared, 2,
        "only the files of different stored size are decoded"
    );
    assert_eq!(c.divergent.len(), 1, "{:?}", c.divergent);
    let d = &c.divergent[0];
    assert_eq!(d.name, names[1]);
    assert_eq!(d.copies.len(), 2);
    assert_ne!(d.copies[0].blake3, d.copies[1].blake3);
    assert_eq!(d.copies[0].raw_size, Some(MB));
    v.assert_metric("pgarchive_divergent_files{cluster=\"main\"}", 1.0);
    assert!(
        v.text_out().contains(&format!("DIVERGENT {}", names[1])),
        "{}",
        v.text_out()
    );
    // Digests: one batch per server on top of the listing requests.
    assert!(
        v.server("arch1").requests <= 4,
        "{}",
        v.server("arch1").requests
    );

    // --checksum compares every same-named file.
    let mut a = one_cluster_args(&lab);
    a.extend(["--checksum".to_string(), "--json".into()]);
    let out = run(&mut status_cmd(&lab, &a));
    let r = Report::from_json(&stdout(&out)).unwrap();
    assert_eq!(r.clusters[0].compared, 3);
    assert_eq!(r.clusters[0].divergent.len(), 1);
}

#[test]
fn a_segment_dropped_by_the_push_queue_limit_is_critical_with_host_health() {
    let lab = Lab::with(LabOptions {
        extra_client_config: "retry_count = 2\ncooldown = 600\n".into(),
        ..Default::default()
    });
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("drop", 3, 1);
    lab.archive_to("arch1 arch2", &dst, &wal, &names[0]);
    for s in [1, 2] {
        fake_backup(&lab, s, 0, &names[0], 3600);
    }
    for n in &names[1..] {
        write_postgres_file(
            wal.join("archive_status").join(format!("{n}.ready")),
            b"",
            0o600,
        );
    }
    lab.stop_server(1);
    lab.stop_server(2);
    let out = run(&mut lab.archive_cmd(&dst, &wal.join(&names[1]), &names[1], "main"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mut cmd = lab.archive_cmd(&dst, &wal.join(&names[1]), &names[1], "main");
    cmd.args(["--set", "push_queue_max=1MiB"]);
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("DROPPED"), "{}", stderr(&out));
    lab.start_server(1);
    lab.start_server(2);
    lab.archive_to("arch1 arch2", &dst, &wal, &names[2]);

    let v = Views::of(&lab, &one_cluster_args(&lab));
    assert_eq!(v.check.status.code(), Some(2), "{}", v.check_out());
    assert!(
        v.check_out().contains("main: 1 dropped segment(s)"),
        "{}",
        v.check_out()
    );
    let d = v.json.clusters[0]
        .dropped
        .clone()
        .expect("the drop log is read");
    assert_eq!((d.total, d.unresolved), (1, 1));
    assert_eq!(d.segments[0].name, names[1]);
    assert!(d.segments[0].unresolved);
    assert!(d.log.ends_with("main/dropped.log"), "{}", d.log);
    // The hole is also a gap in the chain.
    assert_eq!(
        v.server("arch1").chain.as_ref().unwrap().gaps[0].from,
        names[1]
    );
    v.assert_metric("pgarchive_dropped_segments{cluster=\"main\"}", 1.0);
    v.assert_metric("pgarchive_dropped_segments_logged{cluster=\"main\"}", 1.0);
    assert!(
        v.text_out().contains(&format!("{} (backlog", names[1])),
        "{}",
        v.text_out()
    );
    assert!(v.text_out().contains("UNRESOLVED"), "{}", v.text_out());
    // Host health on the primary: arch1 answered again (reset); arch2 was
    // not contacted since, so its failures and cooldown stand.
    let p = v
        .json
        .primary
        .clone()
        .expect("host health is read on the primary");
    let h2 = p
        .hosts
        .iter()
        .find(|h| h.host == "arch2")
        .expect("arch2 record");
    assert_eq!(h2.failures, 2);
    assert!(h2.in_cooldown);
    let h1 = p
        .hosts
        .iter()
        .find(|h| h.host == "arch1")
        .expect("arch1 record");
    assert_eq!(h1.failures, 0);
    v.assert_metric("pgarchive_host_failures{server=\"arch2\"}", 2.0);
    v.assert_metric("pgarchive_host_in_cooldown{server=\"arch2\"}", 1.0);
    v.assert_metric("pgarchive_host_in_cooldown{server=\"arch1\"}", 0.0);
    assert!(
        v.check_out()
            .contains("WARNING arch2: archive-cmd on this primary failed 2 time(s)"),
        "{}",
        v.check_out()
    );
    assert!(
        v.text_out()
            .contains("arch2: 2 consecutive failure(s), IN COOLDOWN"),
        "{}",
        v.text_out()
    );
}

#[test]
fn failed_and_stuck_backup_tasks_are_read_from_the_queue() {
    let lab = Lab::new();
    archived_with_backups(&lab, "tasks", 3);
    let q = queue_with_main(&lab);
    insert_task(&q, "arch1", "done", 30, None);
    insert_task(&q, "arch2", "done", 20, None);
    let failed = insert_task(
        &q,
        "arch1",
        "failed",
        10,
        Some("pg_basebackup: could not connect to the standby"),
    );
    let stuck = insert_task(&q, "arch2", "running", 30, None);
    let v = Views::of(&lab, &["--queue-dsn".into(), q.dsn()]);
    assert_eq!(v.check.status.code(), Some(2), "{}", v.check_out());
    assert!(
        v.check_line()
            .contains("main/arch1: 1 failed backup task(s)"),
        "{}",
        v.check_out()
    );
    assert!(
        v.check_out()
            .contains(&format!("#{failed} (pg_basebackup: could not connect")),
        "{}",
        v.check_out()
    );
    assert!(
        v.check_out().contains("select backups.clear(<id>)"),
        "{}",
        v.check_out()
    );
    assert!(v.check_out().contains(&format!("WARNING main/arch2: 1 backup task(s) of main on arch2 never stopped: #{stuck} running for 1d 6h")), "{}", v.check_out());
    let q1 = v.server("arch1").queue.clone().unwrap();
    assert_eq!(q1.failed.iter().map(|t| t.id).collect::<Vec<_>>(), [failed]);
    let q2 = v.server("arch2").queue.clone().unwrap();
    assert_eq!(q2.stuck.iter().map(|t| t.id).collect::<Vec<_>>(), [stuck]);
    assert_eq!(q2.running.len(), 1);
    v.assert_metric(
        "pgarchive_failed_tasks{cluster=\"main\",server=\"arch1\"}",
        1.0,
    );
    v.assert_metric(
        "pgarchive_failed_tasks{cluster=\"main\",server=\"arch2\"}",
        0.0,
    );
    v.assert_metric(
        "pgarchive_stuck_tasks{cluster=\"main\",server=\"arch2\"}",
        1.0,
    );
    v.assert_metric(
        "pgarchive_running_tasks{cluster=\"main\",server=\"arch2\"}",
        1.0,
    );
    assert!(
        v.text_out().contains(&format!("FAILED #{failed}")),
        "{}",
        v.text_out()
    );
    assert!(
        v.text_out().contains(&format!("STUCK #{stuck}")),
        "{}",
        v.text_out()
    );
    // A longer stuck threshold: only the failed task is left.
    let out = run(&mut status_cmd(
        &lab,
        &[
            "check".into(),
            "--queue-dsn".into(),
            q.dsn(),
            "--stuck-after".into(),
            "2d".into(),
        ],
    ));
    assert!(!stdout(&out).contains("never stopped"), "{}", stdout(&out));
    assert_eq!(out.status.code(), Some(2));
    // Cleared: nothing left but the stuck task.
    q.clear(failed);
    let out = run(&mut status_cmd(
        &lab,
        &["check".into(), "--queue-dsn".into(), q.dsn()],
    ));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

#[test]
fn a_stale_backup_is_reported_from_disk_and_from_the_queue() {
    let lab = Lab::new();
    let (_, names) = archived_with_backups(&lab, "stale", 3);
    // On disk: arch1's only backup finished 9 days ago, with a 4-day period.
    fs::remove_dir_all(lab.stored_backup_dir(1, "main").join("data.master.0")).unwrap();
    fake_backup(&lab, 1, 0, &names[0], 9 * 86400);
    let v = Views::of(&lab, &one_cluster_args(&lab));
    assert_eq!(v.check.status.code(), Some(2), "{}", v.check_out());
    assert!(
        v.check_line().contains("main/arch1: backup 9d 0h old"),
        "{}",
        v.check_out()
    );
    assert!(
        !v.check_out().contains("main/arch2: backup"),
        "{}",
        v.check_out()
    );
    let b = &v.server("arch1").backups[0];
    assert!(b.complete);
    assert_eq!(b.start_wal.as_deref(), Some(names[0].as_str()));
    let age = v
        .metric("pgarchive_backup_age_seconds{cluster=\"main\",server=\"arch1\"}")
        .unwrap();
    assert!(
        (9.0 * 86400.0..9.0 * 86400.0 + 600.0).contains(&age),
        "{age}"
    );
    assert!(
        v.text_out()
            .contains("backup data.master.0 [oldest kept]: complete"),
        "{}",
        v.text_out()
    );
    // A longer period on the command line: fine.
    let mut a = vec!["check".to_string(), "--periodicity-days".into(), "8".into()];
    a.extend(one_cluster_args(&lab));
    let out = run(&mut status_cmd(&lab, &a));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // From the queue: arch2's last done backup started 6 days ago, with a
    // 4-day period (1.5 times: WARNING); arch1's a day ago. The queue's
    // view replaces the disk's.
    let q = queue_with_main(&lab);
    insert_task(&q, "arch1", "done", 24, None);
    insert_task(&q, "arch2", "done", 6 * 24, None);
    let v = Views::of(&lab, &["--queue-dsn".into(), q.dsn()]);
    assert_eq!(v.check.status.code(), Some(1), "{}", v.check_out());
    assert!(
        v.check_line()
            .starts_with("PGARCHIVE WARNING - main/arch2: backup 6d 0h old"),
        "{}",
        v.check_out()
    );
    assert!(
        v.check_out()
            .contains("1.5 times its periodicity of 4 day(s)"),
        "{}",
        v.check_out()
    );
    let age = v
        .metric("pgarchive_backup_age_seconds{cluster=\"main\",server=\"arch2\"}")
        .unwrap();
    assert!(
        (6.0 * 86400.0 - 60.0..6.0 * 86400.0 + 600.0).contains(&age),
        "{age}"
    );
    assert!(v.text_out().contains("last done #"), "{}", v.text_out());
}

#[test]
fn an_unreachable_server_is_unknown_and_named_with_what_to_do() {
    let lab = Lab::new();
    archived_with_backups(&lab, "down", 2);
    lab.stop_server(2);
    let v = Views::of(&lab, &one_cluster_args(&lab));
    assert_eq!(v.check.status.code(), Some(3), "{}", v.check_out());
    assert!(
        v.check_line()
            .starts_with("PGARCHIVE UNKNOWN - main/arch2: cannot be read"),
        "{}",
        v.check_out()
    );
    assert!(
        v.check_out().contains("check that arch2 is up"),
        "{}",
        v.check_out()
    );
    assert_eq!(v.text.status.code(), Some(1), "report: incomplete");
    let e = v.server("arch2").error.clone().unwrap();
    assert!(e.contains("arch2") && e.contains(&lab.dst("main")), "{e}");
    assert_eq!(v.server("arch1").error, None);
    assert_eq!(v.server("arch1").chain.as_ref().unwrap().gap_segments, 0);
    v.assert_metric("pgarchive_up{cluster=\"main\",server=\"arch2\"}", 0.0);
    v.assert_metric("pgarchive_up{cluster=\"main\",server=\"arch1\"}", 1.0);
    v.assert_metric("pgarchive_status{cluster=\"main\"}", 3.0);
    assert_eq!(
        v.metric("pgarchive_one_sided_segments{cluster=\"main\",server=\"arch1\"}"),
        None,
        "unknown, not 0"
    );
    // A critical problem outranks the unknown server.
    let dst = lab.dst("main");
    let names = lab.stored_names(1, &dst);
    fs::remove_file(lab.stored_path(1, &dst, &names[0])).unwrap();
    let mut a = vec!["check".to_string()];
    a.extend(one_cluster_args(&lab));
    let out = run(&mut status_cmd(&lab, &a));
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    // Bad usage in check mode is UNKNOWN too, with the reason.
    let out = run(&mut status_cmd(
        &lab,
        &["check".into(), "--hosts".into(), "arch1".into()],
    ));
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("PGARCHIVE UNKNOWN - --hosts needs --wals-dir"),
        "{}",
        stdout(&out)
    );
    let out = run(&mut status_cmd(&lab, &["--hosts".into(), "arch1".into()]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn timelines_are_followed_through_the_history_file() {
    let lab = Lab::new();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("tli", 4, 1);
    for n in &names {
        lab.archive_to("arch1 arch2", &dst, &wal, n);
    }
    // A promotion at the start of names[2]'s segment: timeline 2 from
    // there, as its history file says. Timeline 2's copy of names[3]'s
    // position is missing on both servers; timeline 1's copy of it (which
    // went on after the switch) does not fill that gap.
    let switch = WalName::parse(&names[2]).unwrap().start_lsn(MB);
    let tl2: Vec<String> = [2usize, 3]
        .iter()
        .map(|&i| format!("00000002{}", &names[i][8..]))
        .chain([WalName::parse(&format!("00000002{}", &names[3][8..]))
            .unwrap()
            .next_segment(MB)
            .unwrap()
            .to_string()])
        .collect();
    let history = format!("1\t{}\tno recovery target specified\n", format_lsn(switch));
    for s in [1, 2] {
        write_postgres_file(
            lab.stored_path(s, &dst, "00000002.history"),
            &history,
            0o600,
        );
        for n in [&tl2[0], &tl2[2]] {
            write_postgres_file(lab.stored_path(s, &dst, n), b"x", 0o600);
        }
    }
    // arch1's backup is before the switch; arch2's on timeline 1 after it:
    // it cannot lead to timeline 2.
    fake_backup(&lab, 1, 0, &names[0], 3600);
    fake_backup(&lab, 2, 0, &names[3], 3600);

    let v = Views::of(&lab, &one_cluster_args(&lab));
    assert_eq!(v.check.status.code(), Some(2), "{}", v.check_out());
    let c = &v.json.clusters[0];
    assert_eq!(c.timeline, Some(2));
    assert_eq!(c.newest_segment.as_deref(), Some(tl2[2].as_str()));
    assert_eq!(c.history.len(), 1);
    assert_eq!(c.history[0].switchpoint, switch);
    let ch = v.server("arch1").chain.clone().unwrap();
    assert_eq!(ch.error, None);
    assert_eq!(ch.expected, 5, "names[0], names[1], then timeline 2 x3");
    assert_eq!(ch.gap_segments, 1);
    assert_eq!(
        ch.gaps[0].from, tl2[1],
        "timeline 2's file, not timeline 1's"
    );
    let ch2 = v.server("arch2").chain.clone().unwrap();
    let e = ch2.error.expect("arch2's backup is off the history");
    assert!(e.contains("timeline 1 was left at"), "{e}");
    v.assert_metric("pgarchive_wal_gaps{cluster=\"main\",server=\"arch1\"}", 1.0);
    v.assert_metric(
        "pgarchive_wal_chain_broken{cluster=\"main\",server=\"arch2\"}",
        1.0,
    );
    v.assert_metric(
        "pgarchive_wal_chain_broken{cluster=\"main\",server=\"arch1\"}",
        0.0,
    );
    assert!(
        v.check_out()
            .contains("CRITICAL main/arch2: the WAL chain from backup data.master.0"),
        "{}",
        v.check_out()
    );
    assert!(
        v.text_out().contains("left timeline 1 at"),
        "{}",
        v.text_out()
    );

    // Without the history file a restore cannot switch timelines at all.
    for s in [1, 2] {
        fs::remove_file(lab.stored_path(s, &dst, "00000002.history")).unwrap();
    }
    let mut a = one_cluster_args(&lab);
    a.push("--json".into());
    let r = Report::from_json(&stdout(&run(&mut status_cmd(&lab, &a)))).unwrap();
    let e = r.clusters[0].servers[0]
        .chain
        .clone()
        .unwrap()
        .error
        .unwrap();
    assert!(
        e.contains("00000002.history") && e.contains("missing on every server"),
        "{e}"
    );
    assert_eq!(r.status, Level::Critical);
}
