//! The report's data model: what one run found, per cluster and per
//! server, as collected, evaluated, rendered and serialized to JSON.

use serde::{Deserialize, Serialize};

use super::chain::{GapRange, HistoryEntry};
use super::check::{Finding, Level};
use crate::common::error::{Error, Result};
use crate::net::wire::{PeerFiles, VerifySummary};

/// Everything one run found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Program and version that made it.
    pub program: String,
    /// Unix time it was made.
    pub generated_at: i64,
    /// Seconds the collection took.
    pub duration_secs: f64,
    /// The worst level of all findings.
    pub status: Level,
    /// What needs attention, worst first.
    pub findings: Vec<Finding>,
    /// The clusters checked.
    pub clusters: Vec<ClusterReport>,
    /// The backup queue, when one was consulted.
    pub queue: Option<QueueSource>,
    /// The primary's host health, when run where archive-cmd keeps it.
    pub primary: Option<PrimaryReport>,
}

impl Report {
    /// Parses a report printed with `--json`.
    pub fn from_json(text: &str) -> Result<Report> {
        serde_json::from_str(text)
            .map_err(|e| Error::Usage(format!("not an archive-status JSON report: {e}")))
    }
}

/// The backup queue as consulted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueueSource {
    /// Why it could not be read, if it could not.
    pub error: Option<String>,
}

/// One cluster: its archive directory on every server.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterReport {
    /// Cluster name.
    pub name: String,
    /// The archive directory (DST-DIR) on the servers.
    pub wals_dir: String,
    /// The backup directory on the servers.
    pub backup_dir: Option<String>,
    /// The archive servers, in order.
    pub hosts: Vec<String>,
    /// The worst level of this cluster's findings.
    pub status: Level,
    /// WAL segment size used for the chain.
    pub segment_size: Option<u64>,
    /// Where it came from ("option", "backup labels", "segment", "default").
    pub segment_size_source: String,
    /// The chain's end: the newest timeline's highest segment on any server.
    pub newest_segment: Option<String>,
    /// Its timeline.
    pub timeline: Option<u32>,
    /// That timeline's history (its ancestors and switch points).
    pub history: Vec<HistoryEntry>,
    /// Per server.
    pub servers: Vec<ServerReport>,
    /// Same-named files compared by content.
    pub compared: u64,
    /// Same-named files whose content differs.
    pub divergent: Vec<Divergent>,
    /// Same-named files of different stored size left uncompared (over
    /// the digest limit, or a server could not decode them).
    pub unverified: Vec<String>,
    /// What the primary dropped (push queue limit), when read on it.
    pub dropped: Option<DroppedReport>,
    /// The cluster's row in the backup queue.
    pub queue: Option<QueueCluster>,
    /// Remarks that are not findings.
    pub notes: Vec<String>,
}

/// A same-named file with different content on the servers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Divergent {
    /// File name.
    pub name: String,
    /// Each server's copy.
    pub copies: Vec<CopyInfo>,
}

/// One server's copy of a file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CopyInfo {
    /// Host.
    pub server: String,
    /// Bytes on disk.
    pub stored_size: u64,
    /// Decompressed size.
    pub raw_size: Option<u64>,
    /// Hex blake3 of the decompressed bytes.
    pub blake3: Option<String>,
}

/// One archive server's view of a cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerReport {
    /// Host (ssh alias).
    pub host: String,
    /// Why it could not be (completely) read.
    pub error: Option<String>,
    /// Requests sent to it for this cluster.
    pub requests: u32,
    /// Its configured server_name.
    pub server_name: Option<String>,
    /// WAL files (segments, history, backup labels, partials).
    pub files: u64,
    /// Of which segments.
    pub segments: u64,
    /// Bytes on disk.
    pub stored_bytes: u64,
    /// Lowest segment.
    pub oldest_segment: Option<String>,
    /// Newest segment (newest timeline, highest position).
    pub newest_segment: Option<String>,
    /// Its mtime (when PostgreSQL finished it: archiving keeps the mtime).
    pub newest_mtime: Option<i64>,
    /// Its age in seconds.
    pub newest_age_secs: Option<i64>,
    /// The backups, oldest first.
    pub backups: Vec<BackupInfo>,
    /// N of the oldest complete backup with a readable label.
    pub oldest_backup: Option<u32>,
    /// Age of the newest complete backup, seconds.
    pub newest_backup_age_secs: Option<i64>,
    /// The WAL chain from the oldest backup (or oldest segment) on.
    pub chain: Option<ChainReport>,
    /// Files only this server holds (the peer lacks them).
    pub one_sided: u64,
    /// Their first names.
    pub one_sided_names: Vec<String>,
    /// Files this server owes its peer(s); `None` when unknown.
    pub owed: Option<u64>,
    /// Per peer.
    pub owed_to: Vec<PeerFiles>,
    /// Owed files parked as conflicting with the peer's copy.
    pub conflicts: Option<u64>,
    /// Per peer.
    pub conflicts_with: Vec<PeerFiles>,
    /// Incoming copies refused as conflicting, kept aside.
    pub rejected: Option<u64>,
    /// Their first names.
    pub rejected_names: Vec<String>,
    /// Server clock minus this machine's, seconds.
    pub clock_skew_secs: Option<i64>,
    /// The queue's view of this server for the cluster.
    pub queue: Option<QueueServer>,
    /// The last `archive-remote-cmd verify` this server ran for the
    /// directory; `None`: never (or an older server).
    pub verify: Option<VerifySummary>,
    /// Seconds since it finished (server clock).
    pub verify_age_secs: Option<i64>,
}

/// One backup directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupInfo {
    /// N of data.master.N.
    pub index: u32,
    /// SUCCESS marker present.
    pub complete: bool,
    /// START WAL from its label.
    pub start_wal: Option<String>,
    /// START WAL LOCATION.
    pub start_lsn: Option<u64>,
    /// START TIME as written in the label.
    pub start_time: Option<String>,
    /// When it finished (SUCCESS marker), Unix time.
    pub finished: Option<i64>,
    /// Seconds since it finished (or started, when that is all we know).
    pub age_secs: Option<i64>,
    /// An incremental backup (PostgreSQL 17+): restoring it needs its parent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
    /// An incremental's parent (N of data.master.N); `None` for a full
    /// backup, or an incremental whose parent is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
}

/// The WAL chain a restore from a server's oldest backup needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainReport {
    /// First segment (the oldest backup's START WAL).
    pub from: String,
    /// The backup it starts at; `None`: no backup, from the oldest segment.
    pub from_backup: Option<u32>,
    /// Last segment (the cluster's newest).
    pub to: String,
    /// Segments in the chain.
    pub expected: u64,
    /// Missing here but on another server.
    pub missing_here: u64,
    /// Missing on every server: a restore cannot cross them.
    pub gap_segments: u64,
    /// The gaps as runs.
    pub gaps: Vec<GapRange>,
    /// Why the chain cannot be followed, if it cannot.
    pub error: Option<String>,
}

/// Segments the primary acknowledged without storing them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DroppedReport {
    /// The log read.
    pub log: String,
    /// Lines in it.
    pub total: u64,
    /// Dropped segments still missing on every server and needed by a kept
    /// backup (or by all of them, when that cannot be told).
    pub unresolved: u64,
    /// The entries.
    pub segments: Vec<DroppedSegment>,
}

/// One line of `dropped.log`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DroppedSegment {
    /// When, as written.
    pub time: String,
    /// Segment.
    pub name: String,
    /// Unarchived backlog then, as written.
    pub backlog: String,
    /// The limit, as written.
    pub limit: String,
    /// Still missing on every server that answered, and needed.
    pub unresolved: bool,
}

/// The primary's view of the archive servers (`<state_dir>/health`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrimaryReport {
    /// The state directory read.
    pub state_dir: String,
    /// Per host.
    pub hosts: Vec<HostHealth>,
}

/// A host's failure counter and cooldown.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostHealth {
    /// Host alias.
    pub host: String,
    /// Consecutive failures.
    pub failures: u32,
    /// In cooldown now (tried last).
    pub in_cooldown: bool,
    /// Until when, Unix time (0: none).
    pub cooldown_until: i64,
    /// Last failure, Unix time (0: none).
    pub last_failure: i64,
    /// Its message.
    pub last_error: String,
}

/// A cluster's row in `backups.hosts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueCluster {
    /// False when the cluster is not in the queue.
    pub in_queue: bool,
    /// `enabled`.
    pub enabled: bool,
    /// `periodicity_days` (per server).
    pub periodicity_days: u32,
    /// `keep_backups_cnt`.
    pub keep_backups_cnt: u32,
    /// Seconds since the row was created.
    pub created_age_secs: i64,
}

/// The queue's tasks of one cluster on one server.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueServer {
    /// Days between two backups on this server.
    pub periodicity_days: u32,
    /// The last task marked done.
    pub last_done: Option<TaskInfo>,
    /// Seconds since it started (what the schedule counts from).
    pub backup_age_secs: Option<i64>,
    /// Failed tasks nobody cleared: they block this server's backups.
    pub failed: Vec<TaskInfo>,
    /// Running for longer than the stuck threshold.
    pub stuck: Vec<TaskInfo>,
    /// Running (stuck ones included).
    pub running: Vec<TaskInfo>,
}

/// A row of `backups.tasks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskInfo {
    /// `id`.
    pub id: i64,
    /// Seconds since `started_at`.
    pub age_secs: i64,
    /// Seconds since `finished_at`.
    pub finished_age_secs: Option<i64>,
    /// `error`.
    pub error: Option<String>,
}
