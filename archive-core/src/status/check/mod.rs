//! Turns a [`Report`] into findings with Nagios levels, by thresholds.
//!
//! Levels: OK 0, WARNING 1, CRITICAL 2, UNKNOWN 3 (the exit codes of
//! `archive-status check`). The overall level is the worst one, ranked
//! CRITICAL > UNKNOWN > WARNING > OK: a server that cannot be read hides
//! what may be critical, so it outranks a warning, but a problem that is
//! known to be critical is not masked by one that cannot be checked.
//!
//! The files: `finding` (levels and findings), `thresholds`, and one file
//! per family of findings: `wal` (servers, chains, copies), `backups`
//! (backups and the queue), `primary` (drops, host health), `verify` (the
//! last `archive-remote-cmd verify`).

mod backups;
mod finding;
mod primary;
mod thresholds;
mod verify;
mod wal;

pub use finding::{Finding, Level};
pub use thresholds::{Limit, Thresholds};

use super::{ClusterReport, Report, ServerReport};

/// Names for a message: the first few, then "and N more".
pub(crate) fn some_names<S: AsRef<str>>(names: &[S], total: u64, max: usize) -> String {
    let shown: Vec<&str> = names.iter().take(max).map(AsRef::as_ref).collect();
    let more = total.saturating_sub(shown.len() as u64);
    let mut out = shown.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

/// Collects the findings of one scope, leaving out those at OK.
struct Sink<'a> {
    out: &'a mut Vec<Finding>,
    cluster: Option<String>,
}

impl Sink<'_> {
    fn add(
        &mut self,
        level: Level,
        check: &str,
        server: Option<&str>,
        short: String,
        message: String,
    ) {
        if level == Level::Ok {
            return;
        }
        self.out.push(Finding {
            level,
            check: check.to_string(),
            cluster: self.cluster.clone(),
            server: server.map(str::to_string),
            short,
            message,
        });
    }
}

/// Sets `report.findings`, each cluster's status and the overall status.
pub fn evaluate(report: &mut Report, t: &Thresholds) {
    let mut all = Vec::new();
    if let Some(f) = report.queue.as_ref().and_then(backups::queue_unreadable) {
        all.push(f);
    }
    for c in &mut report.clusters {
        let mut found = Vec::new();
        cluster_findings(c, t, &mut found);
        c.status = found.iter().fold(Level::Ok, |l, f| l.worst(f.level));
        all.extend(found);
    }
    if let Some(p) = &report.primary {
        let mut sink = Sink {
            out: &mut all,
            cluster: None,
        };
        primary::host_health(p, t, &mut sink);
    }
    all.sort_by_key(|f| std::cmp::Reverse(f.level.rank()));
    report.status = all.iter().fold(Level::Ok, |l, f| l.worst(f.level));
    report.findings = all;
}

/// A cluster's findings: its servers' first, then the cluster's own.
fn cluster_findings(c: &ClusterReport, t: &Thresholds, out: &mut Vec<Finding>) {
    let mut sink = Sink {
        out,
        cluster: Some(c.name.clone()),
    };
    for s in &c.servers {
        server_findings(c, s, t, &mut sink);
    }
    wal::cluster(c, t, &mut sink);
    primary::dropped(c, t, &mut sink);
    backups::queue_row(c, &mut sink);
}

/// One server's findings, in the order they are reported within a level.
fn server_findings(c: &ClusterReport, s: &ServerReport, t: &Thresholds, sink: &mut Sink<'_>) {
    wal::reachability(s, t, sink);
    wal::chain(s, t, sink);
    backups::on_disk(c, s, t, sink);
    wal::copies(c, s, t, sink);
    backups::age(c, s, t, sink);
    backups::tasks(c, s, t, sink);
    verify::last_run(s, t, sink);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{
        ChainReport, ClusterReport, QueueCluster, QueueServer, ServerReport, TaskInfo,
    };

    fn server(host: &str) -> ServerReport {
        ServerReport {
            host: host.into(),
            newest_segment: Some("000000010000000000000005".into()),
            newest_age_secs: Some(60),
            oldest_backup: Some(0),
            newest_backup_age_secs: Some(3600),
            owed: Some(0),
            conflicts: Some(0),
            rejected: Some(0),
            chain: Some(ChainReport {
                from: "000000010000000000000002".into(),
                from_backup: Some(0),
                to: "000000010000000000000005".into(),
                expected: 4,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(super) fn clean() -> Report {
        Report {
            clusters: vec![ClusterReport {
                name: "main".into(),
                wals_dir: "/a/main".into(),
                backup_dir: Some("/a/backups/main".into()),
                newest_segment: Some("000000010000000000000005".into()),
                servers: vec![server("arch1"), server("arch2")],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// The first cluster in the queue, every server with a recent backup.
    pub(super) fn queued_and_backed_up(r: &mut Report) {
        r.clusters[0].queue = Some(QueueCluster {
            in_queue: true,
            enabled: true,
            periodicity_days: 4,
            ..Default::default()
        });
        for s in &mut r.clusters[0].servers {
            s.queue = Some(QueueServer {
                periodicity_days: 4,
                backup_age_secs: Some(60),
                last_done: Some(TaskInfo::default()),
                ..Default::default()
            });
        }
    }

    fn checks(r: &Report) -> Vec<(Level, String, Option<String>)> {
        r.findings
            .iter()
            .map(|f| (f.level, f.check.clone(), f.server.clone()))
            .collect()
    }

    #[test]
    fn a_clean_report_is_ok() {
        let mut r = clean();
        evaluate(&mut r, &Thresholds::default());
        assert_eq!(checks(&r), []);
        assert_eq!(r.status, Level::Ok);
        assert_eq!(r.clusters[0].status, Level::Ok);
    }

    pub(super) type Breaker = Box<dyn Fn(&mut Report)>;

    /// Breaks a clean report each way and expects the finding at its level.
    pub(super) fn assert_default_levels(cases: Vec<(&str, Level, Breaker)>) {
        let t = Thresholds::default();
        for (check, level, break_it) in cases {
            let mut r = clean();
            break_it(&mut r);
            evaluate(&mut r, &t);
            let found = checks(&r);
            assert!(
                found.iter().any(|(l, c, _)| *l == level && c == check),
                "{check}: expected {level:?}, got {found:?}"
            );
            assert_eq!(r.status, found[0].0, "{check}: worst first");
        }
    }

    #[test]
    fn critical_outranks_unknown_outranks_warning() {
        assert_eq!(Level::Warning.worst(Level::Unknown), Level::Unknown);
        assert_eq!(Level::Unknown.worst(Level::Critical), Level::Critical);
        assert_eq!(Level::Critical.worst(Level::Warning), Level::Critical);
        assert_eq!(Level::Ok.worst(Level::Ok), Level::Ok);
        let mut r = clean();
        r.clusters[0].servers[1] = ServerReport {
            host: "arch2".into(),
            error: Some("down".into()),
            ..Default::default()
        };
        r.clusters[0].servers[0].one_sided = 3;
        evaluate(&mut r, &Thresholds::default());
        assert_eq!(r.status, Level::Unknown);
        assert_eq!(r.status.exit_code(), 3);
    }

    #[test]
    fn thresholds_can_be_turned_off_or_tightened() {
        let mut r = clean();
        r.clusters[0].servers[0].one_sided = 3;
        r.clusters[0].servers[0].owed = Some(3);
        let t = Thresholds {
            one_sided: Limit { warn: 0, crit: 0 },
            owed: Limit { warn: 1, crit: 3 },
            ..Default::default()
        };
        evaluate(&mut r, &t);
        assert_eq!(
            checks(&r),
            [(
                Level::Critical,
                "owed".to_string(),
                Some("arch1".to_string())
            )]
        );
        assert_eq!(Limit { warn: 0, crit: 0 }.level(u64::MAX), Level::Ok);
    }

    #[test]
    fn names_are_shortened() {
        assert_eq!(some_names(&["a", "b", "c"], 3, 2), "a, b and 1 more");
        assert_eq!(some_names(&["a"], 1, 2), "a");
        assert_eq!(some_names(&["a", "b"], 40, 5), "a, b and 38 more");
    }
}
