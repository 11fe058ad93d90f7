//! The queue as base-backup sees it: connect, take the next task, report an
//! error, stop a task.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, Result};
use postgres::{Client, NoTls};

/// Name used for the queue in error messages.
pub const QUEUE: &str = "backup_queue";

/// A backup to make, as `backups.get_next` hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// tasks.id (give it back to [`stop`]).
    pub id: i64,
    /// Cluster name.
    pub cluster: String,
    /// Where pg_basebackup connects.
    pub host: String,
    /// Its port.
    pub port: i32,
    /// Role pg_basebackup logs in as.
    pub pg_user: String,
    /// Backup directory on this server.
    pub directory: String,
    /// The cluster's WAL directory on the archive servers; `None` for rows
    /// taken over from Archive 2.0 until someone sets it.
    pub wals_dir: Option<String>,
    /// Backups to keep here.
    pub keep_backups_cnt: i32,
    /// Days of retention window (every backup needed to restore to a point
    /// of the last this many days is kept); `None`: none.
    pub keep_days: Option<i32>,
    /// The cluster's other archive server.
    pub peer: String,
    /// The cluster's PostgreSQL client programs, overriding the config's
    /// `pg_bin_dir`.
    pub pg_bin_dir: Option<PathBuf>,
    /// Incremental backups this server takes after each full one before
    /// the next full one (backups.hosts.incrementals_per_full; 0: every
    /// backup is full).
    pub incrementals_per_full: i32,
}

/// A task left running by this archiver (get_next will mark it failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// tasks.id.
    pub id: i64,
    /// Cluster name.
    pub cluster: String,
    /// What it recorded with set_error, if anything.
    pub error: Option<String>,
    /// The cluster's backup directory (where it may have left a partial backup).
    pub directory: String,
}

/// The text of a database error (the server's message, detail and hint
/// when it sent one).
pub fn db_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" (detail: {d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" (hint: {h})"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}

/// A database error as the suite's error (retry-able: exit 1).
pub fn db_error(e: postgres::Error) -> Error {
    Error::host(QUEUE, db_message(&e))
}

/// Connects to the queue. `dsn` is a libpq key=value string or a
/// postgresql:// URL; `connect_timeout` applies unless it sets its own.
/// TCP keepalives are on, so a dead network never hangs a call.
pub fn connect(dsn: &str, connect_timeout: Duration, application_name: &str) -> Result<Client> {
    let mut cfg: postgres::Config = dsn
        .parse()
        .map_err(|e| Error::Usage(format!("queue_dsn is not a valid connection string: {e}")))?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(connect_timeout);
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name(application_name);
    }
    cfg.keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    cfg.connect(NoTls).map_err(db_error)
}

/// `backups.next_task(archiver)` (Archive 2.0's `get_next` hands out the
/// same tasks with fewer columns), with the cluster's row's retention window,
/// PostgreSQL programs and incrementals.
pub fn get_next(client: &mut Client, archiver: &str) -> Result<Option<Task>> {
    let row = client
        .query_opt(
            "select n.task_id, n.cluster_name, n.host, n.port, n.pg_user, n.directory, n.wals_dir, \
                    n.keep_backups_cnt, n.peer, h.keep_days, h.pg_bin_dir, h.incrementals_per_full \
               from backups.next_task($1) n join backups.hosts h on h.cluster_name = n.cluster_name",
            &[&archiver],
        )
        .map_err(db_error)?;
    Ok(row.map(|r| Task {
        id: r.get(0),
        cluster: r.get(1),
        host: r.get(2),
        port: r.get(3),
        pg_user: r.get(4),
        directory: r.get(5),
        wals_dir: r.get(6),
        keep_backups_cnt: r.get(7),
        peer: r.get(8),
        keep_days: r.get(9),
        pg_bin_dir: r.get::<_, Option<String>>(10).map(PathBuf::from),
        incrementals_per_full: r.get(11),
    }))
}

/// Tasks this archiver left running (a crashed or killed run); the next
/// get_next marks them failed.
pub fn unfinished(client: &mut Client, archiver: &str) -> Result<Vec<Unfinished>> {
    let rows = client
        .query(
            "select t.id, t.cluster_name, t.error, h.directory \
               from backups.tasks t join backups.hosts h using (cluster_name) \
              where t.archiver = $1 and t.status = 'running' order by t.id",
            &[&archiver],
        )
        .map_err(db_error)?;
    Ok(rows
        .iter()
        .map(|r| Unfinished {
            id: r.get(0),
            cluster: r.get(1),
            error: r.get(2),
            directory: r.get(3),
        })
        .collect())
}

/// `backups.set_error(id, text)`: what went wrong, for monitoring.
pub fn set_error(client: &mut Client, id: i64, error: &str) -> Result<()> {
    client
        .execute("select backups.set_error($1, $2)", &[&id, &error])
        .map_err(db_error)?;
    Ok(())
}

/// `backups.stop(id, details)`: the task is done. `details` is a JSON
/// object text (stored as jsonb).
pub fn stop(client: &mut Client, id: i64, details: &str) -> Result<bool> {
    client
        .query_one("select backups.stop($1, $2::text::jsonb)", &[&id, &details])
        .map(|r| r.get(0))
        .map_err(db_error)
}
