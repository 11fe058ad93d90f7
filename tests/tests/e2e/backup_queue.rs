//! The backup_queue schema against a real PostgreSQL 15: migrations, and
//! get_next's schedule (alternation, periodicity, failure blocking, start
//! time, first server, concurrent callers) driven by a controllable clock.

use std::thread;

use e2e::{clock, run_with_input, stderr, stdout, HostRow, Lab, QueueDb, ARCHIVE2_SCHEMA};

/// Calls get_next for each archiver in `order` at 04:00 of days `0..days`,
/// stopping each task at once; returns (day, archiver, cluster) per task.
fn simulate(q: &QueueDb, days: i32, order: &[&str]) -> Vec<(i32, String, String)> {
    let mut got = Vec::new();
    for day in 0..days {
        for a in order {
            if let Some(t) = q.get_next_at(a, &clock(day, "04:00")) {
                assert!(q.stop(t.id));
                got.push((day, a.to_string(), t.cluster));
            }
        }
    }
    got
}

fn on(v: &[(i32, String, String)], archiver: &str) -> Vec<i32> {
    v.iter().filter(|t| t.1 == archiver).map(|t| t.0).collect()
}

#[test]
fn migrate_is_idempotent_versioned_and_refuses_an_edited_migration() {
    let lab = Lab::new();
    let q = lab.queue_db();
    // Again: nothing to do.
    let out = q.tool(&lab, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("up to date"), "{}", stderr(&out));
    assert_eq!(
        q.sql("select version, name from backups.schema_migrations order by 1"),
        "1|init\n2|archive2_retention\n3|incrementals"
    );
    // Column types are what they mean.
    assert_eq!(
        q.sql(
            "select data_type from information_schema.columns \
             where table_schema = 'backups' and table_name = 'hosts' and column_name = 'keep_backups_cnt'"
        ),
        "integer"
    );
    // show works on an empty queue.
    let out = q.tool(&lab, &["show"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("schema version 3"),
        "{}",
        stdout(&out)
    );

    // An applied migration whose text changed is refused (exit 3).
    q.sql("update backups.schema_migrations set md5 = 'x' where version = 1");
    let out = q.tool(&lab, &["migrate"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("different text"), "{}", stderr(&out));

    // `backup-queue sql` is the same schema as a psql script, and migrate
    // then has nothing left to do on that database.
    q.sql("create database q2");
    let script = stdout(&q.tool(&lab, &["sql"]));
    let out = run_with_input(
        q.pg().cmd("psql").args(["-X", "-q", "-d", "q2", "-f", "-"]),
        script,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = e2e::run(
        lab.postgres_cmd(e2e::bin("backup-queue"))
            .arg("--dsn")
            .arg(q.pg().connstr_db("q2"))
            .arg("migrate"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("up to date"), "{}", stderr(&out));
}

#[test]
fn first_backup_goes_to_the_first_server_and_never_before_the_start_time() {
    let lab = Lab::new();
    let q = lab.queue_db();
    q.add(&HostRow::new("main"));
    // arch2 never makes a cluster's first backup.
    assert_eq!(q.get_next_at("arch2", &clock(0, "04:00")), None);
    // Not before 03:07 (UTC here).
    assert_eq!(q.get_next_at("arch1", &clock(0, "03:06")), None);
    let t = q
        .get_next_at("arch1", &clock(0, "03:07"))
        .expect("due at 03:07");
    assert_eq!(t.cluster, "main");
    assert_eq!(t.peer, "arch2", "the peer is the other archiver");
    assert_eq!(q.status(t.id), "running");
    assert!(q.stop(t.id));
    assert_eq!(q.status(t.id), "done");
    assert!(!q.stop(t.id), "stopping twice is harmless");

    // arch2's turn comes periodicity_days / 2 = 2 days later, at 03:07.
    assert_eq!(q.get_next_at("arch2", &clock(1, "23:59")), None);
    assert_eq!(q.get_next_at("arch2", &clock(2, "03:06")), None);
    let t2 = q
        .get_next_at("arch2", &clock(2, "03:07"))
        .expect("arch2 due");
    assert_eq!(t2.peer, "arch1");

    // The start time is local to the cluster's time zone; disabled clusters
    // are never handed out.
    let mut msk = HostRow::new("msk");
    msk.time_zone = "Europe/Moscow".into(); // UTC+3
    q.add(&msk);
    assert_eq!(
        q.get_next_at("arch1", &clock(5, "00:06")),
        None,
        "03:06 MSK"
    );
    let t = q
        .get_next_at("arch1", &clock(5, "00:07"))
        .expect("03:07 MSK");
    assert_eq!(t.cluster, "msk");
    q.stop(t.id);
    let mut off = HostRow::new("off");
    off.archiver1 = "arch3".into();
    q.add(&off);
    q.sql("update backups.hosts set enabled = false where cluster_name = 'off'");
    assert_eq!(q.get_next_at("arch3", &clock(9, "12:00")), None);
    q.sql("update backups.hosts set enabled = true where cluster_name = 'off'");
    assert!(q.get_next_at("arch3", &clock(9, "12:00")).is_some());
}

#[test]
fn backups_alternate_and_each_server_keeps_its_period() {
    let lab = Lab::new();
    let q = lab.queue_db();
    let mut h = HostRow::new("c4");
    h.periodicity_days = 4;
    q.add(&h);
    let got = simulate(&q, 17, &["arch1", "arch2"]);
    assert_eq!(on(&got, "arch1"), vec![0, 4, 8, 12, 16], "{got:?}");
    assert_eq!(on(&got, "arch2"), vec![2, 6, 10, 14], "{got:?}");

    // The order in which the servers ask does not matter.
    q.sql("delete from backups.hosts");
    let mut h = HostRow::new("c3");
    h.periodicity_days = 3;
    q.add(&h);
    let got = simulate(&q, 10, &["arch2", "arch1"]);
    assert_eq!(on(&got, "arch1"), vec![0, 3, 6, 9], "{got:?}");
    assert_eq!(on(&got, "arch2"), vec![1, 4, 7], "{got:?}");

    // Every day on each server: both back up daily, one after the other.
    q.sql("delete from backups.hosts");
    let mut h = HostRow::new("c1");
    h.periodicity_days = 1;
    q.add(&h);
    let got = simulate(&q, 3, &["arch2", "arch1", "arch2"]);
    assert_eq!(on(&got, "arch1"), vec![0, 1, 2], "{got:?}");
    assert_eq!(on(&got, "arch2"), vec![0, 1, 2], "{got:?}");
    // Never both at once: while arch1's task runs, arch2 gets nothing.
    let t = q.get_next_at("arch1", &clock(3, "04:00")).unwrap();
    assert_eq!(q.get_next_at("arch2", &clock(3, "04:01")), None);
    q.stop(t.id);
    assert!(q.get_next_at("arch2", &clock(3, "04:02")).is_some());
}

#[test]
fn an_unstopped_task_fails_and_blocks_its_server_until_cleared_while_the_other_goes_on() {
    let lab = Lab::new();
    let q = lab.queue_db();
    q.add(&HostRow::new("main")); // every 4 days per server
    let first = q.get_next_at("arch1", &clock(0, "04:00")).unwrap();
    q.sql(&format!(
        "select backups.set_error({}, 'pg_basebackup failed')",
        first.id
    ));
    // arch1 asks again without having stopped it: marked failed.
    assert_eq!(q.get_next_at("arch1", &clock(0, "04:10")), None);
    assert_eq!(q.status(first.id), "failed");
    let err = q.error(first.id);
    assert!(
        err.contains("not stopped before the next get_next on arch1")
            && err.contains("pg_basebackup failed"),
        "{err}"
    );
    // A failed task cannot be stopped late: it does not count.
    let e = q
        .try_sql(&format!("select backups.stop({}::bigint, null)", first.id))
        .unwrap_err();
    assert!(e.contains("already marked failed"), "{e}");
    assert!(e.contains(&format!("backups.clear({})", first.id)), "{e}");

    // monitoring sees it.
    let out = q.tool(&lab, &["show", "--check"]);
    assert_eq!(out.status.code(), Some(6), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("FAILED #{}", first.id)));

    // arch2 goes on alone, at the full period; arch1 stays blocked.
    let mut got = Vec::new();
    for day in 0..10 {
        for a in ["arch1", "arch2"] {
            if let Some(t) = q.get_next_at(a, &clock(day, "05:00")) {
                q.stop(t.id);
                got.push((day, a));
            }
        }
    }
    assert_eq!(got, vec![(0, "arch2"), (4, "arch2"), (8, "arch2")]);

    // Cleared on day 9: arch1 takes its turn half a period after arch2's
    // last backup, then they alternate again.
    assert!(q.clear(first.id));
    assert!(!q.clear(first.id), "clearing twice is harmless");
    let out = q.tool(&lab, &["show", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let mut got = Vec::new();
    for day in 9..15 {
        for a in ["arch1", "arch2"] {
            if let Some(t) = q.get_next_at(a, &clock(day, "05:00")) {
                q.stop(t.id);
                got.push((day, a));
            }
        }
    }
    assert_eq!(got, vec![(10, "arch1"), (12, "arch2"), (14, "arch1")]);

    // clear_failures clears by cluster (and archiver).
    let t = q.get_next_at("arch2", &clock(16, "05:00")).unwrap();
    assert_eq!(q.get_next_at("arch2", &clock(16, "06:00")), None);
    assert_eq!(q.status(t.id), "failed");
    assert_eq!(q.sql("select backups.clear_failures('main', 'arch2')"), "1");
    assert_eq!(q.sql("select backups.clear_failures('main')"), "0");
}

#[test]
fn a_stuck_task_fails_after_a_period_and_a_silent_server_loses_its_turn() {
    let lab = Lab::new();
    let q = lab.queue_db();
    q.add(&HostRow::new("main")); // every 4 days per server
                                  // arch1's backup never ends and arch1 never asks again (it is down).
    let t = q.get_next_at("arch1", &clock(0, "04:00")).unwrap();
    // Meanwhile arch2 must not back up the same cluster.
    assert_eq!(q.get_next_at("arch2", &clock(2, "04:00")), None);
    assert_eq!(q.get_next_at("arch2", &clock(3, "23:00")), None);
    // After a whole period it is stuck: failed, and arch2 goes on.
    let t2 = q
        .get_next_at("arch2", &clock(4, "04:00"))
        .expect("arch2 goes on");
    assert_eq!(q.status(t.id), "failed");
    assert!(q.error(t.id).contains("stuck"), "{}", q.error(t.id));
    q.stop(t2.id);

    // A server that lets its turn pass (arch2 here, never asking) does not
    // stop the cluster's backups: arch1 goes on at its own full period.
    q.sql("delete from backups.hosts");
    q.add(&HostRow::new("other"));
    let a = q.get_next_at("arch1", &clock(0, "04:00")).unwrap();
    q.stop(a.id);
    assert_eq!(
        q.get_next_at("arch1", &clock(2, "04:00")),
        None,
        "arch2's turn"
    );
    assert_eq!(q.get_next_at("arch1", &clock(3, "04:00")), None);
    assert!(q.get_next_at("arch1", &clock(4, "04:00")).is_some());
}

#[test]
fn two_servers_asking_at_the_same_instant_never_get_the_same_task() {
    let lab = Lab::new();
    let q = lab.queue_db();
    // n clusters, cluster k on servers xk and yk, each of which made one
    // backup long ago: both may take it now.
    let n = 12;
    for k in 0..n {
        let mut h = HostRow::new(&format!("c{k:02}"));
        h.archiver1 = format!("x{k}");
        h.archiver2 = format!("y{k}");
        q.add(&h);
        for a in [&h.archiver1, &h.archiver2] {
            q.sql(&format!(
                "insert into backups.tasks (cluster_name, archiver, started_at, finished_at, status) \
                 values ('{}', '{a}', {}, {}, 'done')",
                h.cluster_name,
                clock(0, "04:00"),
                clock(0, "05:00")
            ));
        }
    }
    // Round k: xk and yk ask at the same instant (two sessions woken by
    // pg_sleep_until at the same time), once each, as their cron would.
    let now = clock(30, "04:00");
    let t0 = q.sql("select (now() + interval '3 seconds')::text");
    let script = |side: &str| {
        let mut s = String::from("set client_min_messages = error;\n");
        for k in 0..n {
            s.push_str(&format!(
                "select pg_sleep_until('{t0}'::timestamptz + {k} * interval '250 ms');\n\
                 select '{k}|' || task_id || '|' || cluster_name from backups.next_task('{side}{k}', {now});\n"
            ));
        }
        s
    };
    let run_for = |side: &'static str| {
        let script = script(side);
        let mut cmd = q.pg().cmd("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
        move || run_with_input(&mut cmd, script)
    };
    let (ox, oy) = thread::scope(|s| {
        let hx = s.spawn(run_for("x"));
        let hy = s.spawn(run_for("y"));
        (hx.join().unwrap(), hy.join().unwrap())
    });
    for o in [&ox, &oy] {
        assert!(o.status.success(), "{}", stderr(o));
    }
    let rows = |o: &std::process::Output| -> Vec<(usize, String)> {
        stdout(o)
            .lines()
            .filter(|l| l.contains('|'))
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                (f[0].parse().unwrap(), f[2].to_string())
            })
            .collect()
    };
    let (rx, ry) = (rows(&ox), rows(&oy));
    for k in 0..n {
        let got: Vec<&(usize, String)> = rx.iter().chain(ry.iter()).filter(|r| r.0 == k).collect();
        assert_eq!(
            got.len(),
            1,
            "round {k}: exactly one server gets c{k:02}: {rx:?} {ry:?}"
        );
        assert_eq!(got[0].1, format!("c{k:02}"));
    }
    assert_eq!(
        q.sql("select count(*) from backups.tasks where status = 'running'"),
        n.to_string()
    );

    // A caller in a long transaction holds the other back; the other then
    // sees its task and gets nothing for that cluster.
    q.sql("delete from backups.hosts where cluster_name <> 'c00'");
    q.sql("update backups.tasks set status = 'done', finished_at = started_at where status = 'running'");
    q.sql(&format!(
        "update backups.tasks set started_at = {} where status = 'done'",
        clock(0, "04:00")
    ));
    let mut slow = q.pg().cmd("psql");
    slow.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
    let slow_sql = format!(
        "set client_min_messages = error;\nbegin;\nselect cluster_name from backups.next_task('x0', {now});\nselect pg_sleep(2);\ncommit;\n"
    );
    let (a, b) = thread::scope(|s| {
        let h1 = s.spawn(move || run_with_input(&mut slow, slow_sql));
        thread::sleep(std::time::Duration::from_millis(500));
        let b = q.get_next_at("y0", &now);
        (h1.join().unwrap(), b)
    });
    assert_eq!(stdout(&a).trim(), "c00", "{}", stderr(&a));
    assert_eq!(b, None, "y0 waited for x0's decision and saw its task");
}

/// Archive 2.0's documented inserts (with and without bareos_on).
const ARCHIVE2_INSERTS: &str = r#"
insert into backups.hosts (host, cluster_name, archiver_name, bareos_on, keep_backups_cnt, periodicity_days, directory) values
                          ('master7-sb', 'master7', '{"archive_1", "archive_2"}', 'archive_1', 2, 4,  '/archive_path7/');
insert into backups.hosts (host, cluster_name, archiver_name, keep_backups_cnt, periodicity_days, directory) values
                          ('master1-sb', 'master1', '{"archive_1", "archive_2"}', 2, 8, '/archive_path/');
"#;

/// What Archive 2.0's users and scripts run keeps working on our schema:
/// its inserts, get_next with its result columns, stop, is_failed, and
/// clearing a failed task by deleting its row or by stop.
#[test]
fn archive2_sql_works_as_is() {
    let lab = Lab::new();
    let q = lab.queue_db();
    q.sql(ARCHIVE2_INSERTS);
    assert_eq!(
        q.sql("select cluster_name, archiver1, archiver2, array_to_string(archiver_name, ','), keep_backups_cnt, wals_dir is null from backups.hosts order by 1"),
        "master1|archive_1|archive_2|archive_1,archive_2|2|t\nmaster7|archive_1|archive_2|archive_1,archive_2|2|t"
    );
    // archiver_name and archiver1/2 stay equal whichever is updated.
    q.sql(
        r#"update backups.hosts set archiver_name = '{"a1", "a2"}' where cluster_name = 'master7'"#,
    );
    assert_eq!(
        q.sql("select archiver1, archiver2 from backups.hosts where cluster_name = 'master7'"),
        "a1|a2"
    );
    q.sql("update backups.hosts set archiver2 = 'archive_2', archiver1 = 'archive_1' where cluster_name = 'master7'");
    assert_eq!(
        q.sql("select array_to_string(archiver_name, ',') from backups.hosts where cluster_name = 'master7'"),
        "archive_1,archive_2"
    );
    assert!(q
        .try_sql(r#"insert into backups.hosts (host, cluster_name, archiver_name, keep_backups_cnt, periodicity_days, directory) values ('x', 'x', '{"only_one"}', 2, 4, '/x/')"#)
        .unwrap_err()
        .contains("exactly two"));
    // The real clock decides in get_next: no start time of day in the way.
    q.sql("update backups.hosts set start_time = '00:00'");

    // get_next as Archive 2.0's base-backup_2 calls it: its columns, in order.
    let out = q.sql("select * from backups.get_next('archive_1')");
    let id: i64 = out.split('|').next().unwrap().parse().unwrap();
    assert_eq!(
        out,
        format!("{id}|master1-sb|5432|archive_2|2|/archive_path/|archive_1")
    );
    assert_eq!(
        q.sql("select last_archiver, last_backup_id = backup_id, t.host from backups.hosts h join backups.tasks t on t.backup_id = h.last_backup_id where h.cluster_name = 'master1'"),
        "archive_1|t|master1-sb"
    );
    assert_eq!(q.sql(&format!("select * from backups.stop({id})")), "t");
    assert_eq!(
        q.sql(&format!("select status, end_txtime is not null, is_failed from backups.tasks where backup_id = {id}")),
        "done|t|f"
    );

    // A failed task blocks its archiver; deleting its row clears it.
    let later = "now() + interval '10 days'";
    let t = q.get_next_at("archive_2", later).expect("archive_2's turn");
    assert_eq!(
        q.get_next_at("archive_2", later),
        None,
        "marked failed, blocked"
    );
    assert_eq!(
        q.sql("select backup_id from backups.tasks where is_failed"),
        t.id.to_string()
    );
    q.sql(&format!(
        "delete from backups.tasks where backup_id = {}",
        t.id
    ));
    let t = q
        .get_next_at("archive_2", later)
        .expect("cleared by the delete");
    // ... and so does Archive 2.0's stop(backup_id), without counting it.
    assert_eq!(q.get_next_at("archive_2", later), None);
    assert_eq!(q.sql(&format!("select * from backups.stop({})", t.id)), "t");
    assert_eq!(
        q.sql(&format!(
            "select status, is_failed from backups.tasks where backup_id = {}",
            t.id
        )),
        "failed|f"
    );
    assert!(
        q.get_next_at("archive_2", later).is_some(),
        "cleared by stop"
    );
    assert_eq!(q.sql("select * from backups.stop(99999)"), "f");
}

/// `backup-queue migrate` takes over a queue database as Archive 2.0 left
/// it: in place, keeping its clusters and task history (ids included), in
/// one transaction (a row it cannot take leaves everything as it was), and
/// idempotently.
#[test]
fn migrate_takes_over_an_archive2_queue_in_place() {
    let lab = Lab::new();
    let q = lab.queue_db_empty("queue");
    q.sql(ARCHIVE2_SCHEMA);
    q.sql(ARCHIVE2_INSERTS);
    q.sql(
        "insert into backups.hosts (host, cluster_name, archiver_name, keep_backups_cnt, periodicity_days, directory) \
         values ('bad host', 'bad name', '{a,b}', 2, 4, '/x/');
         insert into backups.tasks (host, archiver_name, start_txtime, end_txtime, is_failed) values
           ('master1-sb', 'archive_1', '2026-11-01 04:00+00', '2026-11-01 05:00+00', false),
           ('master1-sb', 'archive_2', '2026-11-03 04:00+00', null, true),
           ('master7-sb', 'archive_1', '2026-11-02 04:00+00', null, false),
           ('master7-sb', 'archive_1', '2026-11-04 04:00+00', null, false),
           ('gone-sb', 'archive_1', '2026-10-01 04:00+00', '2026-10-01 05:00+00', false);
         update backups.hosts set last_archiver = 'archive_1', last_backup_id = 4,
           last_backup_start_txtime = '2026-11-04 04:00+00' where host = 'master7-sb';",
    );
    let original = q.sql("select * from backups.hosts order by id");

    // A cluster name ours cannot take: refused, nothing changed.
    let out = q.tool(&lab, &["migrate"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(q.sql("select * from backups.hosts order by id"), original);
    assert_eq!(
        q.sql("select to_regnamespace('backups_archive2') is null"),
        "t"
    );

    q.sql("delete from backups.hosts where host = 'bad host'");
    let out = q.tool(&lab, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("took over the Archive 2.0 queue: 2 cluster(s) and 4 task(s) copied (1 task(s) of clusters no longer listed stay there only)"),
        "{log}"
    );
    assert!(log.contains("master1, master7 have no wals_dir"), "{log}");
    // The clusters, with their ids and history.
    assert_eq!(
        q.sql("select id, cluster_name, host, archiver1, archiver2, keep_backups_cnt, periodicity_days, directory, last_backup_id from backups.hosts order by id"),
        "1|master7|master7-sb|archive_1|archive_2|2|4|/archive_path7/|4\n2|master1|master1-sb|archive_1|archive_2|2|8|/archive_path/|"
    );
    assert_eq!(
        q.sql("select id, cluster_name, archiver, status, cleared_at is not null, is_failed from backups.tasks order by id"),
        "1|master1|archive_1|done|f|f\n\
         2|master1|archive_2|failed|f|t\n\
         3|master7|archive_1|failed|t|f\n\
         4|master7|archive_1|running|f|f"
    );
    // The old rows are still there, untouched.
    assert_eq!(q.sql("select count(*) from backups_archive2.hosts"), "2");
    assert_eq!(q.sql("select count(*) from backups_archive2.tasks"), "5");
    // Again: nothing to do.
    let out = q.tool(&lab, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("up to date"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("took over"), "{}", stderr(&out));
    // show reads the taken-over rows (no wals_dir yet) and their failure.
    let out = q.tool(&lab, &["show", "--check"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stdout(&out).contains("FAILED #2"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("NOT SET: no wal-cleanup, no wal-sync"),
        "{}",
        stdout(&out)
    );

    // The queue goes on: archive_1's open task is failed by its next
    // get_next; master1 is blocked on archive_2 until cleared, as before.
    let later = "now() + interval '30 days'";
    q.sql("update backups.hosts set start_time = '00:00'");
    let t = q
        .get_next_at("archive_1", later)
        .expect("a task for archive_1");
    assert!(t.id > 5, "new ids follow the old ones: {}", t.id);
    assert_eq!(t.cluster, "master1", "archive_1 is blocked for master7 now");
    assert_eq!(q.status(4), "failed");
    q.stop(t.id);
    let t = q
        .get_next_at("archive_2", later)
        .expect("master7 on archive_2");
    assert_eq!(t.cluster, "master7");
    q.stop(t.id);
    // master1's failed task blocks it on archive_2 at any time...
    let much_later = "now() + interval '60 days'";
    let mut got = Vec::new();
    while let Some(t) = q.get_next_at("archive_2", much_later) {
        got.push(t.cluster);
        q.stop(t.id);
    }
    assert_eq!(got, ["master7"], "master1 blocked");
    // ... until its row is deleted.
    q.sql("delete from backups.tasks where backup_id = 2");
    let t = q.get_next_at("archive_2", much_later).expect("cleared");
    assert_eq!(t.cluster, "master1");
}
