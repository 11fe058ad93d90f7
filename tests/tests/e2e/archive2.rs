//! The migration drill from Archive 2.0: archive servers holding what it
//! left (pbzip2 WAL, `data.master.N` backups in its tar and plain layouts),
//! a queue database with its schema and its documented inserts; then
//! `backup-queue migrate`, the primary switched through the compatibility
//! name archive_cmd_2, base-backup, wal-cleanup, a point-in-time restore
//! from an old backup to a point inside its WAL, and a standby fed from the
//! mixed archive. Nothing lost, the old rows still there.

use std::fs;
use std::path::Path;
use std::time::Duration;

use e2e::{
    bin, mkdir_postgres, run, run_ok, stderr, wait_archived, wait_until, Lab, PgCluster, PgOptions,
    ARCHIVE2_SCHEMA,
};

/// A backup as Archive 2.0's base-backup_2 left it on server `server`:
/// `pg_basebackup -Ft` (its default WAL method, stream: a pg_wal.tar
/// beside base.tar) with backup_label and global/pg_control extracted
/// beside base.tar, or a plain directory without WAL.
fn old_backup(lab: &Lab, pg: &PgCluster, server: usize, n: u32, tar: bool) {
    let parent = lab.stored_backup_dir(server, "main");
    mkdir_postgres(&parent, 0o700);
    let dir = parent.join(format!("data.master.{n}"));
    run_ok(
        lab.postgres_cmd(e2e::pg_client_dir().join("pg_basebackup"))
            .arg("-h")
            .arg(pg.socket_dir())
            .args(["-p", &pg.port().to_string(), "-c", "fast"])
            .args(if tar { ["-F", "t"] } else { ["-X", "none"] })
            .arg("-D")
            .arg(&dir),
    );
    if tar {
        assert!(dir.join("pg_wal.tar").is_file());
        run_ok(
            lab.postgres_cmd("tar")
                .arg("-xf")
                .arg(dir.join("base.tar"))
                .arg("-C")
                .arg(&dir)
                .args(["backup_label", "global/pg_control"]),
        );
    }
}

/// Segment `name` of `start` is at or after `cut` by log/segment.
fn at_or_after(name: &str, cut: &str) -> bool {
    name.len() < 24 || name[8..24] >= cut[8..24]
}

/// restore-backup of data.master.`n` from server `from` into a new lab
/// cluster, started; `extra` adds options (target, --standby).
fn restore(lab: &Lab, name: &str, from: usize, n: u32, extra: &[&str]) -> PgCluster {
    let restore_cmd = format!(
        "{} --config {}",
        bin("restore-cmd").display(),
        lab.restore_config(name, "").display()
    );
    let pg = lab.adopt_cluster(name, |dir| {
        let out = run(lab
            .postgres_cmd(bin("restore-backup"))
            .arg("--config")
            .arg(lab.standby_config())
            .args(["--from", &format!("arch{from}")])
            .args(["--backup-dir", &lab.backup_dir("main")])
            .args(["--wals-dir", &lab.dst("main")])
            .args(["--hosts", "arch1 arch2"])
            .args(["--backup", &n.to_string()])
            .args(["--restore-cmd", &restore_cmd])
            .args(extra)
            .arg(dir));
        assert!(out.status.success(), "restore-backup: {}", stderr(&out));
    });
    pg.start_no_wait();
    pg
}

#[test]
fn moving_from_archive2_loses_nothing() {
    let lab = Lab::new();
    let dst = lab.dst("main");

    // Archive 2.0's world. The primary archives into a local directory (in
    // place of archive_cmd_2); its segments reach both servers compressed
    // with pbzip2, as archive_remote_cmd_2 stored them.
    let staging = lab.dir().join("archive2-wal");
    mkdir_postgres(&staging, 0o700);
    let pg = lab.init_cluster(
        "primary",
        PgOptions {
            wal_segsize_mb: 1,
            conf: format!(
                "archive_mode = on\narchive_command = 'cp %p {}/%f'\nwal_keep_size = '1GB'\n",
                staging.display()
            ),
            ..Default::default()
        },
    );
    pg.start();
    pg.psql("create table t (i int primary key, phase text not null)");
    let insert = |from: i32, to: i32, phase: &str| {
        pg.psql(&format!(
            "insert into t select i, '{phase}' from generate_series({from}, {to}) i"
        ))
    };
    insert(1, 5, "before");
    old_backup(&lab, &pg, 1, 0, true);
    old_backup(&lab, &pg, 2, 0, true);
    insert(6, 10, "mid");
    pg.psql("select pg_create_restore_point('inside_old_wal')");
    insert(11, 15, "after");
    old_backup(&lab, &pg, 1, 1, false);
    let w = pg.switch_wal();
    wait_archived(&pg, &w, Duration::from_secs(60));
    let first_start = archive_core::server::backups::parse_label(
        &fs::read_to_string(
            lab.stored_backup_dir(1, "main")
                .join("data.master.0/backup_label"),
        )
        .unwrap(),
    )
    .unwrap()
    .start_wal;
    let mut old_names: Vec<String> = fs::read_dir(&staging)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    old_names.sort();
    for server in [1, 2] {
        let dir = lab.stored_path(server, &dst, "x");
        mkdir_postgres(dir.parent().unwrap(), 0o700);
        for n in &old_names {
            let out = lab.stored_path(server, &dst, n);
            let compressed = run(lab.postgres_cmd("pbzip2").arg("-c").arg(staging.join(n)));
            assert!(compressed.status.success(), "{}", stderr(&compressed));
            e2e::write_postgres_file(&out, compressed.stdout, 0o600);
        }
    }
    assert!(old_names.iter().any(|n| !at_or_after(n, &first_start)));

    // Its queue: the original schema, its example inserts, our cluster in
    // the same form, and some history.
    let q = lab.queue_db_empty("queue");
    q.sql(ARCHIVE2_SCHEMA);
    q.sql(&format!(
        r#"insert into backups.hosts (host, cluster_name, archiver_name, bareos_on, keep_backups_cnt, periodicity_days, directory) values
                                      ('master7-sb', 'master7', '{{"archive_1", "archive_2"}}', 'archive_1', 2, 4,  '/archive_path7/');
           insert into backups.hosts (host, cluster_name, archiver_name, keep_backups_cnt, periodicity_days, directory) values
                                      ('master1-sb', 'master1', '{{"archive_1", "archive_2"}}', 2, 8, '/archive_path/');
           insert into backups.hosts (host, port, cluster_name, archiver_name, keep_backups_cnt, periodicity_days, directory) values
                                      ('{}', {}, 'main', '{{"arch1", "arch2"}}', 3, 2, '{}');
           insert into backups.tasks (host, archiver_name, start_txtime, end_txtime) values
             ('{0}', 'arch1', now() - interval '3 days', now() - interval '3 days'),
             ('{0}', 'arch2', now() - interval '2 days', now() - interval '2 days');
           update backups.hosts set last_archiver = 'arch2', last_backup_id = 2,
             last_backup_start_txtime = now() - interval '2 days' where cluster_name = 'main';"#,
        pg.socket_dir().display(),
        pg.port(),
        lab.backup_dir("main")
    ));

    // The switch. The queue first: taken over in place.
    let out = q.tool(&lab, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("3 cluster(s) and 2 task(s) copied"),
        "{}",
        stderr(&out)
    );
    // wals_dir is the one thing Archive 2.0's rows lack; start_time so that
    // the drill does not depend on the hour it runs at.
    q.sql(&format!(
        "update backups.hosts set wals_dir = '{dst}', start_time = '00:00' where cluster_name = 'main'"
    ));
    lab.set_server_config_extra(&format!(
        "queue_dsn = \"{}\"\nbackup_checkpoint = \"fast\"\n",
        q.dsn()
    ));
    // The primary, through Archive 2.0's program name.
    let bindir = lab.dir().join("bin");
    mkdir_postgres(&bindir, 0o755);
    for b in [
        "archive-cmd",
        "restore-cmd",
        "archive-remote-cmd",
        "base-backup",
        "wal-cleanup",
    ] {
        std::os::unix::fs::symlink(bin(b), bindir.join(b)).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-compat-links.sh");
    run_ok(std::process::Command::new(script).arg(&bindir));
    let archive_cmd_2 = bindir.join("archive_cmd_2");
    pg.set_conf(&format!(
        "archive_command = '{}'\n",
        lab.archive_command(&dst, "main").replacen(
            &bin("archive-cmd").display().to_string(),
            &archive_cmd_2.display().to_string(),
            1
        )
    ));
    pg.reload();
    insert(16, 20, "new");
    let w = pg.switch_wal();
    wait_archived(&pg, &w, Duration::from_secs(120));

    // base-backup on arch1: its turn (arch2 made the last backup); the old
    // backups stay (keep 3) and wal-cleanup goes by the oldest of them.
    let out = run(&mut lab.base_backup_cmd(1));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("keeping from {first_start}")),
        "{}",
        stderr(&out)
    );
    let arch1 = lab.stored_backup_dir(1, "main");
    assert!(arch1.join("data.master.2/SUCCESS").is_file());
    for n in ["data.master.0/base.tar", "data.master.1/PG_VERSION"] {
        assert!(arch1.join(n).is_file(), "{n} kept");
    }
    for server in [1, 2] {
        let names = lab.stored_names(server, &dst);
        assert!(names.contains(&first_start), "arch{server}: {names:?}");
        assert!(
            names.iter().all(|n| at_or_after(n, &first_start)),
            "arch{server} removed what no backup needs: {names:?}"
        );
    }

    // A point-in-time restore from Archive 2.0's tar backup to a point
    // inside its WAL (pbzip2 segments).
    let restored = restore(
        &lab,
        "restored",
        1,
        0,
        &["--target", "name:inside_old_wal", "--action", "promote"],
    );
    wait_until(Duration::from_secs(180), "the restore to finish", || {
        restored
            .try_psql("select pg_is_in_recovery()")
            .ok()
            .as_deref()
            == Some("f")
    });
    assert_eq!(
        restored.psql("select string_agg(distinct phase, ',' order by phase), count(*) from t"),
        "before,mid|10"
    );

    // A standby from the old plain backup (served as a tar made from its
    // directory), fed from the mixed archive (old pbzip2 segments, then
    // ours), reaches the primary.
    let standby = restore(&lab, "standby", 1, 1, &["--standby"]);
    let want = pg.psql("select count(*), sum(i) from t");
    standby.wait_for(
        "select count(*), sum(i) from t",
        &want,
        Duration::from_secs(180),
    );

    // The old rows are still there, beside the copies.
    assert_eq!(q.sql("select count(*) from backups_archive2.hosts"), "3");
    assert_eq!(
        q.sql("select count(*) from backups.tasks where cluster_name = 'main' and status = 'done'"),
        "3"
    );
}
