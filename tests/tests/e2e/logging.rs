//! Logging: archive-cmd at its default level keeps PostgreSQL's log for
//! problems (nothing for a good segment, one line for a failover); the
//! level and the destination are the configuration's.

use std::fs;
use std::time::Duration;

use e2e::{run, stderr, wait_archived, Lab, LabOptions};

/// PostgreSQL's log lines written by archive-cmd about `segment`.
fn archive_cmd_lines(log: &str, segment: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" archive-cmd[") && l.contains(segment))
        .map(str::to_string)
        .collect()
}

/// A lab whose client configs leave `log_level` unset (the lab's usual
/// configs set "info").
fn lab_with_default_levels() -> Lab {
    Lab::with(LabOptions {
        client_log_level: None,
        ..Default::default()
    })
}

#[test]
fn archive_cmd_by_default_logs_nothing_for_a_good_segment_and_one_line_for_a_failover() {
    let lab = lab_with_default_levels();
    let dst = lab.dst("main");
    let pg = lab.archiving_primary("primary", &dst, "");
    pg.psql("create table t as select g from generate_series(1, 1000) g");
    let good = pg.switch_wal();
    wait_archived(&pg, &good, Duration::from_secs(60));
    lab.settle();
    let log = fs::read_to_string(pg.log_path()).unwrap();
    assert!(
        lab.stored_bytes(1, &dst, &good).is_some(),
        "arch1 lacks {good}"
    );
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" archive-cmd["))
        .collect();
    assert!(
        lines.is_empty(),
        "archive-cmd wrote to PostgreSQL's log: {lines:#?}"
    );

    // arch1 down: the segment goes to arch2, and one WARNING says both.
    lab.stop_server(1);
    pg.psql("insert into t select g from generate_series(1, 1000) g");
    let failover = pg.switch_wal();
    wait_archived(&pg, &failover, Duration::from_secs(120));
    let log = fs::read_to_string(pg.log_path()).unwrap();
    let lines = archive_cmd_lines(&log, &failover);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    for want in [
        "WARNING: ",
        &format!("archiving {failover} to arch1 failed"),
        &format!("then archived {failover} to arch2"),
    ] {
        assert!(line.contains(want), "{want:?} not in {line}");
    }
    assert!(
        lab.stored_bytes(2, &dst, &failover).is_some(),
        "arch2 lacks {failover}"
    );
}

#[test]
fn log_level_and_destination_come_from_the_configuration() {
    let lab = lab_with_default_levels();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("log", 3, 1);
    let log_file = lab.dir().join("archive-cmd.log");
    e2e::write_postgres_file(&log_file, "", 0o600);

    // info into a file: nothing on stderr, one line per segment in the file,
    // with time, program, pid and level.
    let out = run(lab
        .archive_cmd(&dst, &wal.join(&names[0]), &names[0], "main")
        .args(["--set", "log_level=info", "--set"])
        .arg(format!("log_destination={}", log_file.display())));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "nothing on stderr");
    let text = fs::read_to_string(&log_file).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&names[0]))
        .unwrap_or_else(|| panic!("no line about {} in {text}", names[0]));
    assert!(
        line.contains(" UTC archive-cmd[") && line.contains("] INFO: archived "),
        "{line}"
    );

    // error only: a good segment writes nothing, even at info's place.
    let before = fs::read_to_string(&log_file).unwrap();
    let out = run(lab
        .archive_cmd(&dst, &wal.join(&names[1]), &names[1], "main")
        .args(["--set", "log_level=error", "--set"])
        .arg(format!("log_destination={}", log_file.display())));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&log_file).unwrap(), before);

    // journald where there is none: said on stderr, and stderr carries on.
    let out = run(lab
        .archive_cmd(&dst, &wal.join(&names[2]), &names[2], "main")
        .args([
            "--set",
            "log_level=info",
            "--set",
            "log_destination=journald",
        ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    if !std::path::Path::new("/run/systemd/journal/socket").exists() {
        assert!(err.contains("cannot reach journald"), "{err}");
        assert!(
            err.contains(&format!("INFO: archived {}", names[2])),
            "{err}"
        );
    }

    // A bad value is refused naming the key.
    let out = run(lab
        .archive_cmd(&dst, &wal.join(&names[2]), &names[2], "main")
        .args(["--set", "log_level=loud"]));
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("log_level"), "{}", stderr(&out));
}
