//! The lab itself: two real sshd archive servers with separate storage, that
//! can be stopped and restarted, and a real PostgreSQL 15 cluster.

use std::time::{Duration, Instant};

use e2e::{list_files, run, run_ok, Lab, LabOptions, PgOptions};

fn open_lab() -> Lab {
    Lab::with(LabOptions {
        forced_command: false,
        ..Default::default()
    })
}

#[test]
fn servers_have_separate_storage() {
    let lab = open_lab();
    let f = lab.archive_root().join("f");
    let f = f.to_str().unwrap();
    run_ok(&mut lab.ssh("arch1", &format!("echo one > {f}")));
    run_ok(&mut lab.ssh("arch2", &format!("echo two > {f}")));

    let s1 = std::fs::read_to_string(lab.server(1).storage().join("f")).unwrap();
    let s2 = std::fs::read_to_string(lab.server(2).storage().join("f")).unwrap();
    assert_eq!(s1, "one\n");
    assert_eq!(s2, "two\n");
    assert!(
        !lab.archive_root().join("f").exists(),
        "the host namespace must not see the servers' storage"
    );
    assert_eq!(list_files(lab.server(1).storage()), ["f"]);

    // Each server reads back its own copy, and finds its config through sshd's SetEnv.
    assert_eq!(run_ok(&mut lab.ssh("arch1", &format!("cat {f}"))), "one\n");
    assert_eq!(run_ok(&mut lab.ssh("arch2", &format!("cat {f}"))), "two\n");
    let env = run_ok(&mut lab.ssh("arch2", "echo $PGARCHIVE_CONFIG"));
    assert_eq!(env.trim(), lab.server(2).config_path().to_str().unwrap());

    // A server reaches its peer with its own key and config (the forwarding path).
    let cfg = lab.server(1).ssh_config_path();
    let hop = run_ok(&mut lab.ssh("arch1", &format!("ssh -F {} arch2 cat {f}", cfg.display())));
    assert_eq!(hop, "two\n");
}

#[test]
fn server_can_be_stopped_and_restarted() {
    let lab = open_lab();
    assert_eq!(run_ok(&mut lab.ssh("arch1", "echo up")), "up\n");

    // A multiplexed master to arch1, as the transport keeps one.
    let ctl = lab.primary_dir().join("run").join("m1");
    let ssh_cfg = lab.primary_ssh_config();
    let master = |extra: &[&str]| {
        let mut cmd = lab.postgres_cmd("ssh");
        cmd.arg("-F").arg(&ssh_cfg).arg("-o");
        cmd.arg(format!("ControlPath={}", ctl.display()));
        cmd.args(extra).arg("arch1");
        cmd
    };
    run_ok(&mut master(&[
        "-f",
        "-N",
        "-o",
        "ControlMaster=yes",
        "-o",
        "ControlPersist=30",
    ]));
    assert!(run(&mut master(&["-O", "check"])).status.success());

    lab.stop_server(1);
    let t = Instant::now();
    let out = run(&mut lab.ssh("arch1", "true"));
    assert!(!out.status.success(), "ssh to a stopped server must fail");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "failing took {:?}",
        t.elapsed()
    );
    assert_eq!(run_ok(&mut lab.ssh("arch2", "echo still")), "still\n");
    e2e::wait_until(Duration::from_secs(10), "the ControlMaster to die", || {
        !run(&mut master(&["-O", "check"])).status.success()
    });

    lab.start_server(1);
    assert_eq!(run_ok(&mut lab.ssh("arch1", "echo back")), "back\n");
}

#[test]
fn frozen_server_hangs_and_thaws() {
    let lab = open_lab();
    lab.freeze_server(2);
    let t = Instant::now();
    let out = e2e::run_with_timeout(&mut lab.ssh("arch2", "true"), Duration::from_secs(3));
    assert!(
        out.is_none(),
        "ssh to a frozen server must hang, got {out:?}"
    );
    assert!(t.elapsed() >= Duration::from_secs(3));
    lab.thaw_server(2);
    assert_eq!(run_ok(&mut lab.ssh("arch2", "echo thawed")), "thawed\n");
}

#[test]
fn postgres_cluster_starts() {
    let lab = open_lab();
    let pg = lab.init_cluster("main", PgOptions::default());
    pg.start();
    assert_eq!(pg.psql("select 1"), "1");
    // The lab runs the version E2E_PG_VERSION asks for (the matrix relies on it).
    assert_eq!(
        pg.psql("select current_setting('server_version_num')::int / 10000"),
        e2e::pg_version().to_string()
    );
    let seg = pg.switch_wal();
    assert_eq!(seg.len(), 24, "{seg:?}");
    assert!(seg.chars().all(|c| c.is_ascii_hexdigit()), "{seg:?}");
    let next = pg.switch_wal();
    assert!(next > seg, "{next} must follow {seg}");
    pg.stop();
    assert!(!pg.is_running());
}

#[test]
fn stopping_a_server_kills_what_it_started() {
    let lab = open_lab();
    // A daemonized ssh master inside arch1 (as a forwarding archive-remote-cmd
    // would leave behind), connected to arch2.
    let ctl = lab.server(1).runtime_dir().join("peer");
    run_ok(&mut lab.ssh(
        "arch1",
        &format!(
            "ssh -F {} -f -N -o ControlMaster=yes -o ControlPersist=60 -o ControlPath={} arch2",
            lab.server(1).ssh_config_path().display(),
            ctl.display()
        ),
    ));
    let ctl_s = ctl.to_str().unwrap().to_string();
    let master_pids = || -> Vec<i32> { e2e::lab_processes_matching(&ctl_s) };
    assert_eq!(master_pids().len(), 1, "the master runs inside arch1");
    assert!(lab.server(1).processes().len() >= 2);

    lab.stop_server(1);
    assert!(master_pids().is_empty(), "arch1's daemons die with it");
    assert!(lab.server(1).processes().is_empty());
    assert!(lab.server(2).is_running());
}

#[test]
fn forced_command_replaces_what_the_client_asks_for() {
    let lab = Lab::new();
    assert!(lab.forced_command());
    let target = lab.archive_root().join("pwned");
    // Whatever archive-remote-cmd does with it, the shell command must not run.
    let _ = e2e::run_with_timeout(
        &mut lab.ssh("arch1", &format!("touch {}", target.display())),
        Duration::from_secs(20),
    );
    assert!(list_files(lab.server(1).storage()).is_empty());
}

#[test]
fn base_backup_replays_archived_wal() {
    let lab = open_lab();
    let wal_archive = lab.dir().join("pg").join("walarchive");
    e2e::mkdir_postgres(&wal_archive, 0o700);
    let primary = lab.init_cluster(
        "primary",
        PgOptions {
            wal_segsize_mb: 1,
            ..Default::default()
        },
    );
    primary.set_conf(&format!(
        "archive_mode = on\narchive_command = 'cp %p {}/%f'",
        wal_archive.display()
    ));
    primary.start();
    primary.psql("create table t(i int); insert into t select generate_series(1, 1000);");

    let standby = lab.base_backup(&primary, "standby");
    standby.set_conf(&format!(
        "restore_command = 'cp {}/%f %p'\nhot_standby = on",
        wal_archive.display()
    ));
    standby.create_standby_signal();

    primary.psql("insert into t select generate_series(1001, 5000);");
    let seg = primary.switch_wal();
    e2e::wait_until(
        Duration::from_secs(30),
        "the segment to be archived",
        || list_files(&wal_archive).contains(&seg),
    );
    // The archiver renames .ready to .done just after the copy: wait, don't race it.
    e2e::wait_until(Duration::from_secs(30), "the .ready file to go", || {
        !primary
            .archive_status_dir()
            .join(format!("{seg}.ready"))
            .exists()
    });

    standby.start();
    standby.wait_for("select count(*) from t", "5000", Duration::from_secs(60));
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "t");
}

#[test]
#[ignore = "manual: checks that a panicking test cleans up"]
fn panicking_test_cleans_up() {
    let lab = open_lab();
    let pg = lab.init_cluster("p", PgOptions::default());
    pg.start();
    let ctl = lab.primary_runtime_dir().join("m");
    run_ok(
        lab.postgres_cmd("ssh")
            .arg("-F")
            .arg(lab.primary_ssh_config())
            .args([
                "-f",
                "-N",
                "-o",
                "ControlMaster=yes",
                "-o",
                "ControlPersist=60",
            ])
            .arg("-o")
            .arg(format!("ControlPath={}", ctl.display()))
            .arg("arch2"),
    );
    panic!("deliberate, lab at {}", lab.dir().display());
}
