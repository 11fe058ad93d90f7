//! Findings about backups and the backup queue: no complete backup, an
//! unreadable label, the last backup's age against its periodicity, failed
//! and stuck tasks, a cluster missing from or disabled in the queue, a
//! queue that cannot be read.

use super::{some_names, Finding, Level, Sink, Thresholds};
use crate::status::{human_age, ClusterReport, QueueSource, ServerReport};

/// The backup queue could not be read.
pub(super) fn queue_unreadable(q: &QueueSource) -> Option<Finding> {
    let e = q.error.as_ref()?;
    Some(Finding {
        level: Level::Unknown,
        check: "queue".into(),
        cluster: None,
        server: None,
        short: "backup queue unreadable".into(),
        message: format!("the backup queue could not be read: {e}"),
    })
}

/// No complete backup on the server's disk, or one whose label cannot be read.
pub(super) fn on_disk(c: &ClusterReport, s: &ServerReport, t: &Thresholds, sink: &mut Sink<'_>) {
    let host = Some(s.host.as_str());
    if s.error.is_none() && c.backup_dir.is_some() && s.oldest_backup.is_none() {
        sink.add(
            t.no_backup,
            "no_backup",
            host,
            "no complete backup".into(),
            format!(
                "{} has no complete backup with a readable label in {}: base-backup has not succeeded there yet",
                s.host,
                c.backup_dir.as_deref().unwrap_or_default()
            ),
        );
    }
    for b in s
        .backups
        .iter()
        .filter(|b| b.complete && b.start_wal.is_none())
    {
        sink.add(
            Level::Warning,
            "no_backup",
            host,
            format!("label of data.master.{} unreadable", b.index),
            format!(
                "backup data.master.{} on {} is complete but its backup_label cannot be read: wal-cleanup aborts until it is fixed",
                b.index, s.host
            ),
        );
    }
}

/// The server's last backup against its periodicity: the queue's last done
/// task when the cluster is queued, else the newest complete backup on disk.
pub(super) fn age(c: &ClusterReport, s: &ServerReport, t: &Thresholds, sink: &mut Sink<'_>) {
    let host = Some(s.host.as_str());
    let queued = match (&s.queue, &c.queue) {
        (Some(q), Some(cq)) if cq.in_queue && cq.enabled => Some((q, cq)),
        _ => None,
    };
    let (age, period_days, source) = if let Some((q, cq)) = queued {
        match q.backup_age_secs {
            Some(age) => (
                age,
                q.periodicity_days,
                format!(
                    "the last backup done on {} (task #{}) started",
                    s.host,
                    q.last_done.as_ref().map(|d| d.id).unwrap_or_default()
                ),
            ),
            None => (
                cq.created_age_secs,
                q.periodicity_days,
                format!(
                    "no backup was ever done on {}; the cluster was added to the queue",
                    s.host
                ),
            ),
        }
    } else {
        match s.newest_backup_age_secs {
            Some(age) if s.error.is_none() => (
                age,
                t.periodicity_days,
                format!("the newest complete backup on {} finished", s.host),
            ),
            _ => return,
        }
    };
    let period = i64::from(period_days.max(1)) * 86400;
    let factor = age as f64 / period as f64;
    let level = if t.backup_age_crit_factor > 0.0 && factor > t.backup_age_crit_factor {
        Level::Critical
    } else if t.backup_age_warn_factor > 0.0 && factor > t.backup_age_warn_factor {
        Level::Warning
    } else {
        Level::Ok
    };
    sink.add(
        level,
        "backup_age",
        host,
        format!("backup {} old", human_age(age)),
        format!(
            "{source} {} ago, {factor:.1} times its periodicity of {period_days} day(s): is base-backup running from cron there, and is the cluster due (backup-queue show)?",
            human_age(age)
        ),
    );
}

/// Failed and stuck backup tasks of the cluster on the server.
pub(super) fn tasks(c: &ClusterReport, s: &ServerReport, t: &Thresholds, sink: &mut Sink<'_>) {
    let host = Some(s.host.as_str());
    if let Some(q) = &s.queue {
        let n = q.failed.len() as u64;
        let ids: Vec<String> = q
            .failed
            .iter()
            .map(|f| {
                format!(
                    "#{} ({})",
                    f.id,
                    f.error.as_deref().unwrap_or("no error recorded")
                )
            })
            .collect();
        sink.add(
            t.failed_tasks.level(n),
            "failed_tasks",
            host,
            format!("{n} failed backup task(s)"),
            format!(
                "{n} failed backup task(s) of {} on {}: {}; they block its backups until cleared: fix the cause, then select backups.clear(<id>)",
                c.name,
                s.host,
                some_names(&ids, n, 3)
            ),
        );
        let n = q.stuck.len() as u64;
        let ids: Vec<String> = q
            .stuck
            .iter()
            .map(|f| format!("#{} running for {}", f.id, human_age(f.age_secs)))
            .collect();
        sink.add(
            t.stuck_tasks.level(n),
            "stuck_tasks",
            host,
            format!("{n} stuck backup task(s)"),
            format!(
                "{n} backup task(s) of {} on {} never stopped: {}; is base-backup still running there (its lock, pg_basebackup)? the cluster gets no other backup meanwhile",
                c.name,
                s.host,
                some_names(&ids, n, 3)
            ),
        );
    }
}

/// The cluster is missing from, or disabled in, the backup queue.
pub(super) fn queue_row(c: &ClusterReport, sink: &mut Sink<'_>) {
    if let Some(q) = &c.queue {
        if !q.in_queue {
            sink.add(
                Level::Warning,
                "queue",
                None,
                "not in the backup queue".into(),
                format!(
                    "cluster {} is not in backups.hosts: no backup is scheduled for it; add it with an insert into backups.hosts",
                    c.name
                ),
            );
        } else if !q.enabled {
            sink.add(
                Level::Warning,
                "queue",
                None,
                "disabled in the backup queue".into(),
                format!(
                    "cluster {} is disabled in backups.hosts: no backup is scheduled for it",
                    c.name
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::status::check::tests::queued_and_backed_up;
    use crate::status::check::tests::{assert_default_levels, Breaker};
    use crate::status::check::Level;
    use crate::status::{QueueCluster, QueueServer, QueueSource, Report, TaskInfo};

    #[test]
    fn each_backup_problem_gets_its_default_level() {
        let cases: Vec<(&str, Level, Breaker)> = vec![
            (
                "no_backup",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].oldest_backup = None;
                }),
            ),
            (
                "backup_age",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].newest_backup_age_secs = Some(5 * 86400 + 10);
                }),
            ),
            (
                "backup_age",
                Level::Critical,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].newest_backup_age_secs = Some(9 * 86400);
                }),
            ),
            (
                "failed_tasks",
                Level::Critical,
                Box::new(|r: &mut Report| {
                    queued_and_backed_up(r);
                    r.clusters[0].servers[0]
                        .queue
                        .as_mut()
                        .unwrap()
                        .failed
                        .push(TaskInfo {
                            id: 7,
                            ..Default::default()
                        });
                }),
            ),
            (
                "stuck_tasks",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    queued_and_backed_up(r);
                    r.clusters[0].servers[1]
                        .queue
                        .as_mut()
                        .unwrap()
                        .stuck
                        .push(TaskInfo {
                            id: 8,
                            age_secs: 90000,
                            ..Default::default()
                        });
                }),
            ),
            (
                "backup_age",
                Level::Critical,
                Box::new(|r: &mut Report| {
                    // The queue's view wins over the disk's: never backed up,
                    // queued 10 days ago with a 4-day period.
                    r.clusters[0].queue = Some(QueueCluster {
                        in_queue: true,
                        enabled: true,
                        periodicity_days: 4,
                        created_age_secs: 10 * 86400,
                        ..Default::default()
                    });
                    for s in &mut r.clusters[0].servers {
                        s.queue = Some(QueueServer {
                            periodicity_days: 4,
                            ..Default::default()
                        });
                    }
                }),
            ),
            (
                "queue",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    r.clusters[0].queue = Some(QueueCluster::default());
                }),
            ),
            (
                "queue",
                Level::Unknown,
                Box::new(|r: &mut Report| {
                    r.queue = Some(QueueSource {
                        error: Some("refused".into()),
                    });
                }),
            ),
        ];
        assert_default_levels(cases);
    }
}
