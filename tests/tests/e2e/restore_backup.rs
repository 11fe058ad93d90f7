//! restore-backup end to end: backups taken by base-backup in every format
//! it writes, with tablespaces, restored to every kind of target and
//! timeline, and started for real: the rows are the proof.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use e2e::{mkdir_postgres, run, stderr, wait_archived, Lab, PgCluster, QueueDb};

/// base-backup on server `n` with `backup_compress = compress`, made due
/// first (the servers alternate; the history is aged a period back).
fn backup(lab: &Lab, q: &QueueDb, n: usize, compress: &str) {
    q.age_history(2);
    let out = run(lab
        .base_backup_cmd(n)
        .args(["--set", &format!("backup_compress={compress}")]));
    assert!(
        out.status.success(),
        "base-backup on arch{n}: {}",
        stderr(&out)
    );
}

/// Runs `cmd` on a terminal (script(1)), as postgres when a lab is given;
/// returns what the screen got.
fn on_terminal(cmd: &Command, as_postgres: Option<&Lab>) -> String {
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| e2e::sh_quote(&a.to_string_lossy()))
        .collect();
    let mut script = match as_postgres {
        Some(lab) => lab.postgres_cmd("script"),
        None => Command::new("script"),
    };
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    script
        .env("TERM", "xterm")
        .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"]);
    let out = run(&mut script);
    let screen = e2e::stdout(&out);
    assert!(out.status.success(), "{screen}");
    screen
}

/// Switches WAL and waits until the primary has archived it.
fn archive_all(pg: &PgCluster) {
    let w = pg.switch_wal();
    wait_archived(pg, &w, Duration::from_secs(120));
}

/// The rows of `t`, "1a,2b".
fn rows(pg: &PgCluster, filter: &str) -> String {
    pg.psql(&format!(
        "select coalesce(string_agg(i || k, ',' order by i), '') from t {filter}"
    ))
}

/// Runs restore-backup from server `from` into a new cluster `name` with
/// `args`, starts it and waits for the end of recovery; returns it and
/// what restore-backup said.
fn restore(lab: &Lab, name: &str, from: usize, args: &[&str]) -> (PgCluster, String) {
    let cfg = lab.restore_config(&format!("restore-{name}"), "");
    lab.restore_backup_and_start(name, from, &cfg, args)
}

/// restore-backup that is expected to fail.
fn restore_fails(lab: &Lab, from: usize, args: &[&str]) -> Output {
    let cfg = lab.restore_config("restore-fails", "");
    let dir = lab.dir().join("pg").join("refused");
    let out = run(lab.restore_backup_cmd(from, &cfg, &dir).args(args));
    assert!(!out.status.success(), "restore-backup {args:?} succeeded");
    out
}

/// Now, with a second either side, so that a time target falls cleanly
/// between two transactions.
fn a_moment(pg: &PgCluster) -> String {
    std::thread::sleep(Duration::from_millis(1100));
    let t = pg.psql("select now()::text");
    std::thread::sleep(Duration::from_millis(1100));
    t
}

#[test]
fn every_format_base_backup_writes_restores_to_a_point_in_time() {
    let lab = Lab::new();
    let (q, primary) = lab.pitr_setup("");
    primary.pgbench(&["-i", "-s", "1", "-q"]);
    // Every format the lab's pg_basebackup writes (PostgreSQL 18's PyPI
    // build: gzip and none only).
    let formats = e2e::lab_formats();
    let last = formats.len() - 1;
    for (i, (compress, archive)) in formats.into_iter().enumerate() {
        let server = 1 + i % 2;
        if i < last {
            backup(&lab, &q, server, compress);
        } else {
            // On a terminal: progress.
            q.age_history(2);
            let mut cmd = lab.base_backup_cmd(server);
            cmd.args(["--set", &format!("backup_compress={compress}")]);
            let screen = on_terminal(&cmd, None);
            // A bar sized by that server's previous backup; a spinner when
            // it has none yet (with gzip and none only, as on 18's lab).
            let want = if i >= 2 {
                "backing up main ["
            } else {
                "backing up main "
            };
            assert!(screen.contains(want), "{screen}");
        }
        let newest = lab.stored_backup_dir(server, "main");
        let stored = e2e::list_files(newest.join(format!("data.master.{}", i / 2)));
        assert!(
            stored.contains(&archive.to_string()),
            "{compress}: {stored:?}"
        );

        primary.psql(&format!("insert into t(i, k) values ({i}, 'before')"));
        let target = a_moment(&primary);
        primary.psql(&format!(
            "insert into t(i, k) values ({}, 'after')",
            i + 100
        ));
        archive_all(&primary);

        let name = format!("pitr-{compress}");
        let (pg, said) = restore(
            &lab,
            &name,
            server,
            &["--target", &format!("time:{target}")],
        );
        assert!(
            said.contains(&format!("restored data.master.{} ", i / 2)),
            "{said}"
        );
        let want = rows(&primary, &format!("where at <= '{target}'"));
        assert!(
            want.contains(&format!("{i}before")) && !want.contains(&format!("{}after", i + 100)),
            "{want}"
        );
        assert_eq!(rows(&pg, ""), want, "{compress}: the rows as of the target");
        assert_eq!(
            pg.psql("select count(*) || ':' || sum(abalance) from pgbench_accounts"),
            primary.psql("select count(*) || ':' || sum(abalance) from pgbench_accounts"),
            "{compress}"
        );
        pg.stop();
    }

    // On a terminal: a progress bar with bytes, rate and time left.
    let cfg = lab.restore_config("restore-tty", "");
    let cmd = lab.restore_backup_cmd(2, &cfg, &lab.dir().join("pg").join("tty"));
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| e2e::sh_quote(&a.to_string_lossy()))
        .collect();
    let out = run(lab.postgres_cmd("script").env("TERM", "xterm").args([
        "-q",
        "-e",
        "-c",
        &line.join(" "),
        "/dev/null",
    ]));
    let screen = e2e::stdout(&out);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains(&format!("restoring data.master.{} from arch2 [", last / 2))
            && screen.contains("ETA"),
        "{screen}"
    );
}

/// Damaged data in the middle of a stored archive stops the unpacker; the
/// transfer then meets a closed pipe. The message names the damage, not
/// the pipe (it said "cannot write base.tar locally: Broken pipe").
#[test]
fn a_damaged_archive_is_named_as_the_cause_not_the_broken_pipe() {
    let lab = Lab::new();
    let (q, primary) = lab.pitr_setup("");
    primary.pgbench(&["-i", "-s", "2", "-q"]);
    backup(&lab, &q, 1, "none");
    let tar_path = lab
        .stored_backup_dir(1, "main")
        .join("data.master.0/base.tar");
    let mut bytes = std::fs::read(&tar_path).unwrap();
    // The header of a member a quarter in: megabytes follow, more than the
    // pipe and the buffers hold.
    let mut archive = tar::Archive::new(&bytes[..]);
    let header_at = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().raw_header_position())
        .find(|p| *p as usize > bytes.len() / 4)
        .unwrap() as usize;
    assert!(bytes.len() - header_at > 8 << 20, "{} bytes", bytes.len());
    bytes[header_at + 148..header_at + 156].copy_from_slice(b"0000000\0"); // its checksum
    std::fs::write(&tar_path, bytes).unwrap();

    let out = restore_fails(&lab, 1, &["--target", "latest"]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("base.tar: cannot read the archive"), "{said}");
    assert!(said.contains("damaged"), "{said}");
    assert!(!said.contains("Broken pipe"), "{said}");
}

#[test]
fn xid_and_immediate_targets_reach_their_rows() {
    let lab = Lab::new();
    let (q, primary) = lab.pitr_setup("");
    primary.psql("insert into t(i, k) values (1, 'before-backups')");
    backup(&lab, &q, 1, e2e::lab_compress());
    primary.psql("insert into t(i, k) values (2, 'between')");
    archive_all(&primary);
    backup(&lab, &q, 2, e2e::lab_compress());
    let at_backup = rows(&primary, "");
    // The inserting transaction's xid is the new row's xmin.
    let xid = primary.psql("insert into t(i, k) values (3, 'the-xid') returning xmin");
    primary.psql("insert into t(i, k) values (4, 'after')");
    archive_all(&primary);

    // xid: the oldest backup (no record says which xids a backup holds).
    let (pg, said) = restore(&lab, "xid", 1, &["--target", &format!("xid:{xid}")]);
    assert!(said.contains("restored data.master.0 "), "{said}");
    assert_eq!(rows(&pg, ""), "1before-backups,2between,3the-xid");
    pg.stop();
    // Naming a newer backup replays less, and ends at the same row.
    let (pg, _) = restore(
        &lab,
        "xid-named",
        2,
        &["--target", &format!("xid:{xid}"), "--backup", "0"],
    );
    assert_eq!(rows(&pg, ""), "1before-backups,2between,3the-xid");
    pg.stop();

    // immediate: the newest backup, as it was when it ended.
    let (pg, said) = restore(&lab, "immediate", 2, &["--target", "immediate"]);
    assert!(said.contains("restored data.master.0 "), "{said}");
    assert_eq!(rows(&pg, ""), at_backup);
    assert_eq!(at_backup, "1before-backups,2between");
    pg.stop();
}

#[test]
fn a_target_timeline_follows_that_timeline() {
    let lab = Lab::new();
    let (q, primary) = lab.pitr_setup("");
    primary.psql("insert into t(i, k) values (1, 'common')");
    backup(&lab, &q, 1, e2e::lab_compress());
    primary.psql("insert into t(i, k) values (2, 'common')");
    let branch = a_moment(&primary);
    primary.psql("insert into t(i, k) values (3, 'timeline1')");
    archive_all(&primary);

    // A failover: a PITR copy promoted at `branch` archives to the same
    // archive on timeline 2, while the old primary goes on on timeline 1.
    let (tl2, _) = restore(
        &lab,
        "tl2",
        1,
        &["--target", &format!("time:{branch}"), "--keep-archiving"],
    );
    assert_eq!(
        tl2.psql("select timeline_id from pg_control_checkpoint()"),
        "2"
    );
    tl2.psql("insert into t(i, k) values (4, 'timeline2')");
    archive_all(&tl2);
    primary.psql("insert into t(i, k) values (5, 'timeline1')");
    // A backup of the old primary after the branch, on timeline 1 (arch2,
    // then arch1 again: they alternate): timeline 2 cannot start from it.
    backup(&lab, &q, 2, e2e::lab_compress());
    backup(&lab, &q, 1, e2e::lab_compress());
    archive_all(&primary);
    let want2 = rows(&tl2, "");
    let want1 = rows(&primary, "");
    assert_eq!(want2, "1common,2common,4timeline2");

    let (pg, said) = restore(&lab, "follow-2", 1, &["--target-timeline", "2"]);
    assert!(said.contains("restored data.master.0 "), "{said}");
    assert_eq!(rows(&pg, ""), want2);
    pg.stop();
    // latest is timeline 2 (PostgreSQL follows the newest), so the backup
    // before the branch, not the newest one.
    let (pg, said) = restore(&lab, "follow-latest", 1, &[]);
    assert!(said.contains("restored data.master.0 "), "{said}");
    assert_eq!(rows(&pg, ""), want2, "latest is timeline 2");
    pg.stop();
    for tli in ["1", "current"] {
        let (pg, said) = restore(
            &lab,
            &format!("follow-{tli}"),
            1,
            &["--target-timeline", tli],
        );
        assert!(said.contains("restored data.master.1 "), "{said}");
        assert_eq!(rows(&pg, ""), want1, "--target-timeline {tli}");
        pg.stop();
    }
    // A timeline the archive has no history of.
    let out = restore_fails(&lab, 1, &["--target-timeline", "7"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("00000007.history is not in"),
        "{}",
        stderr(&out)
    );
}

/// `<lab>/<name>`, owned by postgres.
fn postgres_dir(lab: &Lab, name: &str) -> PathBuf {
    let p = lab.dir().join(name);
    mkdir_postgres(&p, 0o700);
    p
}

/// Where `pg` keeps each tablespace, "one=/path,two=/path".
fn locations(pg: &PgCluster) -> String {
    pg.psql(
        "select string_agg(spcname || '=' || pg_tablespace_location(oid), ',' order by spcname) \
         from pg_tablespace where spcname in ('one', 'two')",
    )
}

fn tablespace_rows(pg: &PgCluster) -> String {
    pg.psql("select (select sum(i) from a) || '/' || (select sum(i) from b)")
}

#[test]
fn tablespaces_restore_to_their_paths_or_remapped_ones() {
    let lab = Lab::new();
    let (q, primary) = lab.pitr_setup("");
    let ts = postgres_dir(&lab, "ts");
    let (one, two) = (postgres_dir(&lab, "ts/one"), postgres_dir(&lab, "ts/two"));
    primary.psql(&format!(
        "create tablespace one location '{}'",
        one.display()
    ));
    primary.psql(&format!(
        "create tablespace two location '{}'",
        two.display()
    ));
    primary.psql("create table a tablespace one as select generate_series(1, 50000) i");
    primary.psql("create table b tablespace two as select generate_series(1, 70000) i");
    backup(&lab, &q, 1, e2e::lab_compress());
    let stored = e2e::list_files(lab.stored_backup_dir(1, "main").join("data.master.0"));
    assert_eq!(
        stored
            .iter()
            .filter(|f| f.ends_with(e2e::lab_base_tar().trim_start_matches("base")))
            .count(),
        3,
        "base.tar and one per tablespace: {stored:?}"
    );
    // The tablespaces' archives verify against the manifest on their own too.
    let out = run(Command::new(e2e::bin("base-backup"))
        .arg("--verify")
        .arg(lab.stored_backup_dir(1, "main").join("data.master.0")));
    assert!(out.status.success(), "{}", stderr(&out));
    primary.psql("insert into a values (1000000)");
    primary.psql("insert into b values (2000000)");
    archive_all(&primary);
    let want = tablespace_rows(&primary);

    // Remapped, beside the primary, which keeps running.
    let moved = postgres_dir(&lab, "moved");
    let (new_one, new_two) = (moved.join("one"), moved.join("two"));
    let map = |from: &Path, to: &Path| format!("{}={}", from.display(), to.display());
    let (pg, _) = restore(
        &lab,
        "remapped",
        1,
        &[
            "--tablespace-map",
            &map(&one, &new_one),
            "--tablespace-map",
            &map(&two, &new_two),
        ],
    );
    assert_eq!(tablespace_rows(&pg), want);
    assert_eq!(
        locations(&pg),
        format!("one={},two={}", new_one.display(), new_two.display())
    );
    pg.stop();
    // A non-empty target is refused.
    let out = restore_fails(&lab, 1, &["--tablespace-map", &map(&one, &new_one)]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));

    // To the original paths, once the primary and its tablespaces are gone.
    let primary_locations = locations(&primary);
    primary.stop();
    std::fs::rename(&ts, lab.dir().join("ts-lost")).unwrap();
    postgres_dir(&lab, "ts");
    let (pg, _) = restore(&lab, "original", 1, &[]);
    assert_eq!(tablespace_rows(&pg), want);
    assert_eq!(locations(&pg), primary_locations);
}
