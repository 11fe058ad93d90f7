//! `archive-remote-cmd verify` end to end: a real primary archiving to both
//! servers, a real backup made by base-backup on arch1, verify run on each
//! server the way cron runs it, checking its own copies and (over the peer
//! key, through real sshd) the other's. A clean archive passes; a flipped byte in a stored
//! segment (compressed, or plain in a page header), a truncated backup
//! archive and a missing segment are each named and make it exit 6;
//! archive-status shows the last result.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use archive_core::client::verify::VerifyReport;
use archive_core::status::{Level, Report};
use e2e::{
    bin, descendants, mkdir_postgres, run, stderr, stdout, wait_archived, wait_until, Lab,
    PgCluster, PgOptions, QueueDb,
};

/// A queue, a primary with some data archived to both servers, and one
/// backup made by base-backup on arch1 whose WAL is archived too.
fn setup(lab: &Lab) -> (QueueDb, PgCluster) {
    let q = lab.queue_db();
    // 1 MiB segments: enough of them before the backup's START WAL.
    let pg = lab.init_cluster(
        "primary",
        PgOptions {
            wal_segsize_mb: 1,
            ..PgOptions::default()
        },
    );
    pg.set_conf(&format!(
        "archive_mode = on\narchive_command = '{}'\n",
        lab.archive_command(&lab.dst("main"), "main")
    ));
    pg.start();
    pg.pgbench(&["-i", "-s", "1", "-q"]);
    let w = pg.switch_wal();
    wait_archived(&pg, &w, Duration::from_secs(120));
    lab.set_server_config_extra(&format!(
        "queue_dsn = \"{}\"\nbackup_checkpoint = \"fast\"\n",
        q.dsn()
    ));
    q.add(&lab.host_row("main", &pg, "main"));
    let out = run(&mut lab.base_backup_cmd(1));
    assert!(out.status.success(), "base-backup: {}", stderr(&out));
    // The backup's own WAL, on both servers.
    pg.pgbench(&["-t", "200", "-c", "2"]);
    let w = pg.switch_wal();
    wait_archived(&pg, &w, Duration::from_secs(120));
    (q, pg)
}

/// verify on server `n` (its own copies and the other server's, fetched
/// over the peer key); returns its exit code, its output and the JSON
/// report.
fn verify(lab: &Lab, n: usize) -> (Option<i32>, String, VerifyReport) {
    let reports = lab.dir().join("verify-reports");
    mkdir_postgres(&reports, 0o755);
    let report = reports.join("verify.json");
    let _ = fs::remove_file(&report);
    let peer = if n == 1 { "arch2" } else { "arch1" };
    let mut cmd = lab.server_cmd(n, bin("archive-remote-cmd"));
    cmd.args(["verify", "--dir"])
        .arg(lab.dst("main"))
        .arg("--backup-dir")
        .arg(lab.backup_dir("main"))
        .args(["--peer", peer, "--max-rate", "200M", "--json"])
        .arg(&report);
    let out: Output = run(&mut cmd);
    let text = stdout(&out);
    let json = fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {text}\n{}", stderr(&out)));
    let _ = fs::remove_file(&report);
    (
        out.status.code(),
        format!("{text}\n{}", stderr(&out)),
        VerifyReport::from_json(&json).unwrap(),
    )
}

/// archive-status's JSON report, its Nagios check's exit code, and its
/// text and Prometheus output, as the monitor key sees them.
fn status(lab: &Lab) -> (Report, Option<i32>, String) {
    let args = [
        "--hosts".to_string(),
        "arch1 arch2".into(),
        "--wals-dir".into(),
        lab.dst("main"),
        "--backup-dir".into(),
        lab.backup_dir("main"),
    ];
    let cfg = lab.monitor_config();
    let mut cmd = lab.postgres_cmd(bin("archive-status"));
    cmd.arg("--config").arg(&cfg).args(&args).arg("--json");
    let out = run(&mut cmd);
    let report =
        Report::from_json(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    let mut cmd = lab.postgres_cmd(bin("archive-status"));
    cmd.arg("--config").arg(&cfg).arg("check").args(&args);
    let check = run(&mut cmd);
    let mut text_cmd = lab.postgres_cmd(bin("archive-status"));
    text_cmd.arg("--config").arg(&cfg).args(&args);
    let mut prom_cmd = lab.postgres_cmd(bin("archive-status"));
    prom_cmd
        .arg("--config")
        .arg(&cfg)
        .args(&args)
        .arg("--prometheus");
    let text = format!(
        "{}\n{}",
        stdout(&run(&mut text_cmd)),
        stdout(&run(&mut prom_cmd))
    );
    (report, check.status.code(), text)
}

/// The nice value of process `pid` (field 19 of /proc/PID/stat).
fn nice(pid: i32) -> Option<i64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(16)?.parse().ok()
}

/// Flips one byte in the middle of a file.
fn flip_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

#[test]
fn verify_passes_a_clean_archive_and_names_a_flipped_byte_a_truncated_backup_and_a_missing_segment()
{
    let lab = Lab::new();
    let (_q, _pg) = setup(&lab);
    let dst = lab.dst("main");

    // Clean: both servers, every WAL file and the backup.
    let (code, out, report) = verify(&lab, 1);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(report.servers.len(), 2, "{out}");
    let (here, peer) = (&report.servers[0], &report.servers[1]);
    assert_eq!(peer.host, "arch2");
    for s in [here, peer] {
        assert_eq!(s.damaged_total, 0, "{}: {:?}", s.host, s.damaged);
        assert!(s.error.is_none(), "{:?}", s.error);
        assert!(s.wal_files >= 3, "{}: {} WAL files", s.host, s.wal_files);
    }
    assert_eq!(here.backups, 1, "arch1 holds the backup");
    assert!(out.contains("clean"), "{out}");

    // archive-status shows it: clean, just now.
    let (st, code, text) = status(&lab);
    let arch1 = &st.clusters[0].servers[0];
    let v = arch1.verify.as_ref().expect("arch1's last verify");
    assert_eq!(v.local.damaged, 0);
    assert_eq!(v.peer.as_ref().unwrap().host, "arch2");
    assert!(arch1.verify_age_secs.unwrap() < 600);
    assert!(
        st.findings.iter().all(|f| f.check != "verify"),
        "{:?}",
        st.findings
    );
    // (arch2 holding no backup is a warning of its own.)
    assert!(code.is_some(), "{text}");
    assert!(text.contains("verify: never run"), "arch2: {text}");
    assert!(
        st.clusters[0].servers[1].verify.is_none(),
        "arch2 never ran one"
    );
    assert!(text.contains("arch1: clean"), "{text}");

    // From arch2: the backup is the peer's, streamed and checked here.
    let (code, out, report) = verify(&lab, 2);
    assert_eq!(code, Some(0), "{out}");
    let peer = &report.servers[1];
    assert_eq!(peer.host, "arch1");
    assert_eq!((peer.backups, peer.damaged_total), (1, 0), "{out}");
    assert!(peer.error.is_none(), "{:?}", peer.error);

    // The peer down: this server's copies are checked, the peer's could not
    // be: exit 1, not 0, and the record says so.
    lab.stop_server(2);
    let (code, out, report) = verify(&lab, 1);
    lab.start_server(2);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(report.servers[0].damaged_total, 0, "{out}");
    assert!(report.servers[1].error.is_some(), "{out}");
    assert!(out.contains("on arch2: INCOMPLETE"), "{out}");

    // It runs in the background: nice 19 and the idle I/O class, seen on
    // the running process (a low --max-rate keeps it running a while).
    let mut cmd = lab.server_cmd(1, bin("archive-remote-cmd"));
    cmd.args(["verify", "--max-rate", "1M", "--dir"])
        .arg(lab.dst("main"))
        .arg("--backup-dir")
        .arg(lab.backup_dir("main"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut seen = None;
    wait_until(Duration::from_secs(60), "verify at nice 19", || {
        seen = descendants(child.id() as i32)
            .into_iter()
            .find(|p| nice(*p) == Some(19));
        seen.is_some()
    });
    let io = stdout(&run(Command::new("ionice")
        .arg("-p")
        .arg(seen.unwrap().to_string())));
    assert!(io.trim() == "idle", "{io}");
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // Damage: a flipped byte in a stored segment (arch1) and in the peer's
    // copy of another, a truncated backup archive, a missing segment.
    let mut segs: Vec<String> = lab
        .stored_names(1, &dst)
        .into_iter()
        .filter(|n| n.len() == 24)
        .collect();
    segs.sort();
    assert!(segs.len() >= 6, "{segs:?}");
    let flipped = lab.stored_path(1, &dst, &segs[2]);
    flip_byte(&flipped);
    let flipped_on_peer = lab.stored_path(2, &dst, &segs[3]);
    flip_byte(&flipped_on_peer);
    // A segment stored plain, without its digest record (as Archive 2.0
    // left them), one byte of a page header flipped: the page check finds it.
    let raw_name = &segs[4];
    let mut raw = lab.stored_bytes(1, &dst, raw_name).unwrap();
    raw[5 * 8192 + 9] ^= 0x01;
    fs::write(lab.stored_path(1, &dst, raw_name), &raw).unwrap();
    fs::remove_file(lab.stored_path(1, &dst, ".pgarchive/digest").join(raw_name)).unwrap();
    let missing = lab.stored_path(1, &dst, &segs[1]);
    fs::remove_file(&missing).unwrap();
    let backup = lab.stored_backup_dir(1, "main").join("data.master.0");
    let archive = fs::read_dir(&backup)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("base.tar"))
        .expect("base.tar*");
    let archive_path = backup.join(&archive);
    let len = fs::metadata(&archive_path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&archive_path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let (code, out, report) = verify(&lab, 1);
    assert_eq!(code, Some(6), "{out}");
    let named = |server: usize, what: &str| {
        report.servers[server]
            .damaged
            .iter()
            .find(|d| d.path.ends_with(what))
            .unwrap_or_else(|| {
                panic!(
                    "{what} not named on {}: {:?}",
                    report.servers[server].host, report.servers[server].damaged
                )
            })
            .problem
            .clone()
    };
    let p = named(0, &segs[2]);
    assert!(!p.is_empty());
    let p = named(0, &segs[1]);
    assert!(p.starts_with("missing"), "{p}");
    let p = named(0, &format!("data.master.0/{archive}"));
    assert!(!p.is_empty());
    let p = named(0, raw_name);
    assert!(p.starts_with("the page header of page 5 "), "{p}");
    let p = named(1, &segs[3]);
    assert!(!p.is_empty());
    assert_eq!(
        report.servers[1].damaged_total, 1,
        "{:?}",
        report.servers[1]
    );
    for what in [&segs[2], &segs[1], &archive, &segs[3]] {
        assert!(
            out.contains(what.as_str()),
            "{what} not in the summary:\n{out}"
        );
    }

    // From arch2, arch1's damage is found over the peer key, named on arch1.
    let (code, out, report) = verify(&lab, 2);
    assert_eq!(code, Some(6), "{out}");
    let on_arch1 = &report.servers[1];
    for what in [
        &segs[2],
        &segs[1],
        raw_name,
        &format!("data.master.0/{archive}"),
    ] {
        let d = on_arch1
            .damaged
            .iter()
            .find(|d| d.path.ends_with(what.as_str()))
            .unwrap_or_else(|| panic!("{what} not named: {:?}", on_arch1.damaged));
        assert!(d.path.starts_with("arch1:"), "{d:?}");
    }
    assert_eq!(on_arch1.damaged_total, 4, "{:?}", on_arch1.damaged);
    assert_eq!(
        report.servers[0].damaged_total, 1,
        "{:?}",
        report.servers[0]
    );

    // archive-status warns, naming the damage.
    let (st, code, text) = status(&lab);
    let v = st.clusters[0].servers[0].verify.as_ref().unwrap();
    assert_eq!(v.local.damaged, 4, "{v:?}");
    let v = st.clusters[0].servers[1].verify.as_ref().unwrap();
    assert_eq!(v.peer.as_ref().unwrap().damaged, 4, "{v:?}");
    let f = st
        .findings
        .iter()
        .find(|f| f.check == "verify" && f.short.contains("arch1"))
        .unwrap_or_else(|| panic!("no verify finding: {:?}", st.findings));
    assert_eq!(f.level, Level::Warning);
    assert!(f.message.contains(&segs[2]), "{}", f.message);
    assert!(code.unwrap_or(0) >= 1, "{text}");
    assert!(text.contains("DAMAGED"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("pgarchive_verify_damaged{")
                && l.contains("server=\"arch1\",checked=\"arch1\"")
                && l.ends_with(" 4")),
        "{text}"
    );
}
