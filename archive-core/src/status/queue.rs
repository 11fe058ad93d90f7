//! What archive-status reads from the backup_queue database: the clusters
//! (`backups.hosts`) and, per cluster and archive server, the last done
//! task, failed tasks nobody cleared and running tasks.

use std::collections::HashMap;
use std::time::Duration;

use crate::net::queue::{self, db_error};
use crate::status::{QueueCluster, QueueServer, TaskInfo};
use crate::{Error, Result};

/// A row of `backups.hosts`.
#[derive(Debug, Clone)]
pub struct HostRow {
    /// cluster_name.
    pub cluster: String,
    /// archiver1, archiver2.
    pub archivers: [String; 2],
    /// directory (backups).
    pub directory: String,
    /// wals_dir.
    pub wals_dir: String,
    /// The row as the report shows it.
    pub info: QueueCluster,
}

/// Everything read, in one snapshot.
#[derive(Debug, Default)]
pub struct QueueData {
    /// The clusters, by name.
    pub hosts: Vec<HostRow>,
    last_done: HashMap<(String, String), TaskInfo>,
    failed: HashMap<(String, String), Vec<TaskInfo>>,
    running: HashMap<(String, String), Vec<TaskInfo>>,
}

impl QueueData {
    /// The row of `cluster`.
    pub fn host(&self, cluster: &str) -> Option<&HostRow> {
        self.hosts.iter().find(|h| h.cluster == cluster)
    }

    /// The queue's view of `cluster` on `archiver`; running tasks older
    /// than `stuck_after` are stuck.
    pub fn server(&self, cluster: &str, archiver: &str, stuck_after: Duration) -> QueueServer {
        let key = (cluster.to_string(), archiver.to_string());
        let running = self.running.get(&key).cloned().unwrap_or_default();
        let last_done = self.last_done.get(&key).cloned();
        QueueServer {
            periodicity_days: self.host(cluster).map_or(0, |h| h.info.periodicity_days),
            backup_age_secs: last_done.as_ref().map(|t| t.age_secs),
            last_done,
            failed: self.failed.get(&key).cloned().unwrap_or_default(),
            stuck: running
                .iter()
                .filter(|t| t.age_secs > stuck_after.as_secs() as i64)
                .cloned()
                .collect(),
            running,
        }
    }
}

fn secs(v: Option<f64>) -> Option<i64> {
    v.map(|s| s.round() as i64)
}

/// Reads the queue at `dsn`.
pub fn read(dsn: &str, connect_timeout: Duration) -> Result<QueueData> {
    let mut client = queue::connect(dsn, connect_timeout, "archive-status")?;
    client
        .batch_execute("set statement_timeout = '60s'; set default_transaction_read_only = on")
        .map_err(db_error)?;
    let installed: bool = client
        .query_one("select to_regclass('backups.tasks') is not null", &[])
        .map_err(db_error)?
        .get(0);
    if !installed {
        return Err(Error::NotFound(
            "the backups schema is not installed in the queue database: run backup-queue migrate"
                .into(),
        ));
    }
    let mut data = QueueData::default();
    // One snapshot for all queries.
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(db_error)?;
    for r in tx
        .query(
            "select cluster_name, archiver1, archiver2, directory, coalesce(wals_dir, ''), periodicity_days, \
                    keep_backups_cnt, enabled, extract(epoch from now() - created_at)::float8 \
               from backups.hosts order by cluster_name",
            &[],
        )
        .map_err(db_error)?
    {
        let periodicity: i32 = r.get(5);
        let keep: i32 = r.get(6);
        data.hosts.push(HostRow {
            cluster: r.get(0),
            archivers: [r.get(1), r.get(2)],
            directory: r.get(3),
            wals_dir: r.get(4),
            info: QueueCluster {
                in_queue: true,
                enabled: r.get(7),
                periodicity_days: periodicity.max(0) as u32,
                keep_backups_cnt: keep.max(0) as u32,
                created_age_secs: secs(r.get(8)).unwrap_or(0),
            },
        });
    }
    let task = |r: &postgres::Row| -> ((String, String), TaskInfo) {
        (
            (r.get(0), r.get(1)),
            TaskInfo {
                id: r.get(2),
                age_secs: secs(r.get(3)).unwrap_or(0),
                finished_age_secs: secs(r.get(4)),
                error: r.get(5),
            },
        )
    };
    let cols = "cluster_name, archiver, id, extract(epoch from now() - started_at)::float8, \
                extract(epoch from now() - finished_at)::float8, error";
    for r in tx
        .query(
            &format!(
                "select distinct on (cluster_name, archiver) {cols} from backups.tasks \
                  where status = 'done' order by cluster_name, archiver, started_at desc, id desc"
            ),
            &[],
        )
        .map_err(db_error)?
    {
        let (k, t) = task(&r);
        data.last_done.insert(k, t);
    }
    for r in tx
        .query(
            &format!(
                "select {cols} from backups.tasks \
                  where status = 'failed' and cleared_at is null order by id"
            ),
            &[],
        )
        .map_err(db_error)?
    {
        let (k, t) = task(&r);
        data.failed.entry(k).or_default().push(t);
    }
    for r in tx
        .query(
            &format!("select {cols} from backups.tasks where status = 'running' order by id"),
            &[],
        )
        .map_err(db_error)?
    {
        let (k, t) = task(&r);
        data.running.entry(k).or_default().push(t);
    }
    tx.commit().map_err(db_error)?;
    Ok(data)
}
