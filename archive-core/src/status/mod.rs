//! Monitoring (`archive-status`): what a DBA needs to know before a
//! restore fails, for one cluster or every cluster of the backup queue.
//!
//! Per archive server: the newest segment and its age, the backups and the
//! oldest one's START WAL, the WAL chain from there to the newest segment
//! (following timelines, see [`chain`]) and its gaps, files only this
//! server holds, owed / parked / rejected files; per cluster: same-named
//! files whose content differs, segments the primary dropped (push queue
//! limit); from the queue: the last backup per server against its
//! periodicity, failed and stuck tasks; on the primary: host health.
//!
//! Cost: per server one `List`, one `ListBackups` and one `DirStatus`
//! request, plus a `Get` of the newest timeline's history file and
//! `Digest`s only for same-named files whose stored sizes differ (or all
//! of them with `checksum`): no per-file round trips.
//!
//! The pieces: [`collect`] talks to the servers and fills a [`Report`],
//! [`check`] turns it into findings with Nagios levels, [`render`] prints it
//! as text, JSON or Prometheus, `local` reads what lives on this machine
//! (the primary's drop log and host health; a server's owed lists),
//! `queue` reads the backup queue, and [`command`] runs `archive-status`
//! from its options. The report's types are in `report`, re-exported here.

pub mod chain;
pub mod check;
pub mod collect;
pub mod command;
pub(crate) mod local;
pub(crate) mod queue;
pub mod render;
mod report;

pub use chain::{GapRange, HistoryEntry};
pub use check::{evaluate, Finding, Level, Limit, Thresholds};
pub use collect::{Collector, Options, Target};
pub use report::{
    BackupInfo, ChainReport, ClusterReport, CopyInfo, Divergent, DroppedReport, DroppedSegment,
    HostHealth, PrimaryReport, QueueCluster, QueueServer, QueueSource, Report, ServerReport,
    TaskInfo,
};

/// Formats seconds as "3d 4h", "2h 5m", "4m 10s", "12s".
pub fn human_age(secs: i64) -> String {
    let neg = secs < 0;
    let s = secs.unsigned_abs();
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    let t = if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    };
    if neg {
        format!("-{t}")
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(human_age(12), "12s");
        assert_eq!(human_age(250), "4m 10s");
        assert_eq!(human_age(7500), "2h 5m");
        assert_eq!(human_age(3 * 86400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(human_age(-30), "-30s");
    }
}
