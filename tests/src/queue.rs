//! Helpers for the backup tests: a backup_queue database in the lab, clusters
//! added to it, the schedule's clock, and base-backup run on a server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{bin, run, Lab, PgCluster, PgOptions};

/// A backup_queue database: a lab cluster with the schema migrated by
/// `backup-queue migrate`.
#[derive(Debug)]
pub struct QueueDb {
    pg: PgCluster,
}

/// A row of backups.hosts, with test-friendly defaults.
#[derive(Debug, Clone)]
pub struct HostRow {
    pub cluster_name: String,
    pub host: String,
    pub port: u16,
    pub archiver1: String,
    pub archiver2: String,
    pub directory: String,
    pub wals_dir: String,
    pub periodicity_days: i32,
    pub keep_backups_cnt: i32,
    pub start_time: String,
    pub time_zone: String,
}

impl HostRow {
    /// Cluster `name` on arch1/arch2, every 4 days per server, keep 2,
    /// starting at 03:07 UTC, backed up from 127.0.0.1:5432, directories
    /// under `/var/lib/pgarchive`.
    pub fn new(name: &str) -> HostRow {
        HostRow {
            cluster_name: name.to_string(),
            host: "127.0.0.1".into(),
            port: 5432,
            archiver1: "arch1".into(),
            archiver2: "arch2".into(),
            directory: format!("/var/lib/pgarchive/backups/{name}"),
            wals_dir: format!("/var/lib/pgarchive/{name}"),
            periodicity_days: 4,
            keep_backups_cnt: 2,
            start_time: "03:07".into(),
            time_zone: "UTC".into(),
        }
    }
}

/// A task as get_next handed it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handed {
    pub id: i64,
    pub cluster: String,
    pub peer: String,
}

/// SQL string literal.
pub fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The schedule's clock in tests: `day` days after 2026-03-01 (a Sunday) at
/// `hhmm` UTC, as a timestamptz literal.
pub fn clock(day: i32, hhmm: &str) -> String {
    format!("('2026-03-01 {hhmm}:00+00'::timestamptz + {day} * interval '1 day')")
}

impl QueueDb {
    /// The cluster under the database.
    pub fn pg(&self) -> &PgCluster {
        &self.pg
    }

    /// libpq connection string (Unix socket), usable from the servers too.
    pub fn dsn(&self) -> String {
        self.pg.connstr()
    }

    /// `backup-queue --dsn <dsn> ARGS…` as postgres.
    pub fn tool(&self, lab: &Lab, args: &[&str]) -> Output {
        run(lab
            .postgres_cmd(bin("backup-queue"))
            .arg("--dsn")
            .arg(self.dsn())
            .args(args))
    }

    /// Runs SQL, returns psql's unaligned output (panics on error).
    pub fn sql(&self, sql: &str) -> String {
        self.pg.psql(sql)
    }

    /// Runs SQL, returns the error text on failure.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        self.pg.try_psql(sql)
    }

    /// Inserts a cluster into backups.hosts.
    pub fn add(&self, h: &HostRow) {
        self.sql(&format!(
            "insert into backups.hosts (cluster_name, host, port, archiver1, archiver2, directory, \
             wals_dir, periodicity_days, keep_backups_cnt, start_time, time_zone) values \
             ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
            sql_str(&h.cluster_name),
            sql_str(&h.host),
            h.port,
            sql_str(&h.archiver1),
            sql_str(&h.archiver2),
            sql_str(&h.directory),
            sql_str(&h.wals_dir),
            h.periodicity_days,
            h.keep_backups_cnt,
            sql_str(&h.start_time),
            sql_str(&h.time_zone),
        ));
    }

    /// `backups.next_task(archiver, now)` with `now` a timestamptz SQL
    /// expression (see [`clock`]).
    pub fn get_next_at(&self, archiver: &str, now: &str) -> Option<Handed> {
        let out = self.sql(&format!(
            "set client_min_messages = error;\n\
             select task_id, cluster_name, peer from backups.next_task({}, {now})",
            sql_str(archiver)
        ));
        let line = out.lines().last().filter(|l| !l.is_empty())?;
        let mut f = line.split('|');
        Some(Handed {
            id: f.next()?.parse().ok()?,
            cluster: f.next()?.to_string(),
            peer: f.next()?.to_string(),
        })
    }

    /// `backups.stop(id, null)` as base-backup calls it (not Archive 2.0's
    /// one-argument form); panics on error.
    pub fn stop(&self, id: i64) -> bool {
        self.sql(&format!("select backups.stop({id}::bigint, null)")) == "t"
    }

    /// `backups.clear(id)`.
    pub fn clear(&self, id: i64) -> bool {
        self.sql(&format!("select backups.clear({id})")) == "t"
    }

    /// Status of task `id` (running, done, failed).
    pub fn status(&self, id: i64) -> String {
        self.sql(&format!("select status from backups.tasks where id = {id}"))
    }

    /// Error text of task `id` ("" when none).
    pub fn error(&self, id: i64) -> String {
        self.sql(&format!(
            "select coalesce(error, '') from backups.tasks where id = {id}"
        ))
    }

    /// Moves the whole history `days` days back, as if that much time had
    /// passed (for base-backup runs, which use the real clock).
    pub fn age_history(&self, days: i32) {
        self.sql(&format!(
            "update backups.tasks set started_at = started_at - {days} * interval '1 day'"
        ));
    }
}

/// A queue database as Archive 2.0 left it: its tables with their
/// columns, and functions with its signatures (bodies reduced to what the
/// take-over needs: it moves them aside, never runs them).
pub const ARCHIVE2_SCHEMA: &str = "
create schema backups;
create table backups.hosts (
  id serial primary key,
  host text not null,
  port int default 5432,
  cluster_name text not null,
  archiver_name text[2] not null,
  bareos_on text default 'archive_1',
  keep_backups_cnt text not null,
  periodicity_days int not null,
  directory text not null,
  last_archiver text,
  last_backup_id int,
  last_backup_start_txtime timestamptz default 'epoch',
  constraint host unique (host),
  constraint cluster_name unique (cluster_name));
create table backups.tasks (
  backup_id serial primary key,
  host text not null,
  archiver_name text not null,
  start_txtime timestamptz,
  end_txtime timestamptz,
  is_failed boolean default false not null);
create index on backups.tasks (start_txtime);
create function backups.get_next(i_archiver text, out o_backip_id int, out o_pghost text,
    out o_pgport int, out o_remote_archiver text, out o_keep_backups_cnt int,
    out o_backups_dir text, out o_bareos_on text)
  returns setof record language sql as $$ select null::int, null, null::int, null, null::int, null, null where false $$;
create function backups.stop(i_backup_id integer, out o_info boolean)
  returns boolean language sql as $$ select false $$;
";

impl Lab {
    /// A PostgreSQL cluster `name` for a queue database, started, with
    /// nothing in it yet.
    pub fn queue_db_empty(&self, name: &str) -> QueueDb {
        let pg = self.init_cluster(name, PgOptions::default());
        pg.start();
        QueueDb { pg }
    }

    /// A new backup_queue database (cluster `queue`), started and migrated.
    pub fn queue_db(&self) -> QueueDb {
        let q = self.queue_db_empty("queue");
        let out = q.tool(self, &["migrate"]);
        assert!(
            out.status.success(),
            "backup-queue migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        q
    }

    /// `<lab>/archive/backups/<name>`: a backup directory as the servers see it.
    pub fn backup_dir(&self, name: &str) -> String {
        self.archive_root()
            .join("backups")
            .join(name)
            .display()
            .to_string()
    }

    /// Host-side path of server `n`'s backup directory `name`.
    pub fn stored_backup_dir(&self, n: usize, name: &str) -> PathBuf {
        self.server(n).stored(Path::new("backups").join(name))
    }

    /// A cluster row for `pg` (backed up over its Unix socket) with the lab's
    /// directories, due every day from midnight.
    pub fn host_row(&self, name: &str, pg: &PgCluster, wals: &str) -> HostRow {
        HostRow {
            host: pg.socket_dir().display().to_string(),
            port: pg.port(),
            directory: self.backup_dir(name),
            wals_dir: self.dst(wals),
            periodicity_days: 1,
            start_time: "00:00".into(),
            ..HostRow::new(name)
        }
    }

    /// A queue and a primary archiving to both servers (`primary_conf` added
    /// to its postgresql.conf) with table `t` (`i`, `k`, commit-ish time
    /// `at`); base-backup's config points at the queue, with fast
    /// checkpoints, and the queue has cluster `main`'s row.
    pub fn pitr_setup(&self, primary_conf: &str) -> (QueueDb, PgCluster) {
        let q = self.queue_db();
        let primary = self.archiving_primary("primary", &self.dst("main"), primary_conf);
        primary.psql(
            "create table t(i int primary key, k text not null, \
             at timestamptz not null default clock_timestamp())",
        );
        self.set_server_config_extra(&format!(
            "queue_dsn = \"{}\"\nbackup_checkpoint = \"fast\"\n",
            q.dsn()
        ));
        q.add(&self.host_row("main", &primary, "main"));
        (q, primary)
    }

    /// base-backup as cron runs it on server `n`.
    pub fn base_backup_cmd(&self, n: usize) -> Command {
        self.server_cmd(n, bin("base-backup"))
    }
}
