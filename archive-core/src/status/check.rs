//! Turns a [`Report`] into findings with Nagios levels, by thresholds.
//!
//! Levels: OK 0, WARNING 1, CRITICAL 2, UNKNOWN 3 (the exit codes of
//! `archive-status check`). The overall level is the worst one, ranked
//! CRITICAL > UNKNOWN > WARNING > OK: a server that cannot be read hides
//! what may be critical, so it outranks a warning, but a problem that is
//! known to be critical is not masked by one that cannot be checked.

use serde::{Deserialize, Serialize};

use super::{human_age, ClusterReport, Report, ServerReport};

/// A Nagios service state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Nothing to do.
    #[default]
    Ok,
    /// Look at it soon.
    Warning,
    /// Act now: a restore would fail or lose data.
    Critical,
    /// Could not be checked.
    Unknown,
}

impl Level {
    /// Nagios exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::Unknown => 3,
        }
    }

    /// "OK", "WARNING", "CRITICAL", "UNKNOWN".
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Unknown => 2,
            Level::Critical => 3,
        }
    }

    /// The worse of the two.
    pub fn worst(self, other: Level) -> Level {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// One thing that needs attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What was checked: "unreadable", "newest_age", "gap", "chain",
    /// "no_backup", "one_sided", "divergent", "unverified", "owed",
    /// "conflicts", "dropped", "backup_age", "failed_tasks", "stuck_tasks",
    /// "queue", "host_health".
    pub check: String,
    /// The cluster, if it is about one.
    pub cluster: Option<String>,
    /// The server, if it is about one.
    pub server: Option<String>,
    /// A few words for the Nagios summary line.
    pub short: String,
    /// The whole story: what, where, and what to do.
    pub message: String,
}

impl Finding {
    /// "main/arch1", "main", "arch1" or "".
    pub fn scope(&self) -> String {
        match (&self.cluster, &self.server) {
            (Some(c), Some(s)) => format!("{c}/{s}"),
            (Some(c), None) => c.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => String::new(),
        }
    }
}

/// A count's thresholds: WARNING from `warn`, CRITICAL from `crit` (0: off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// WARNING at this count or more (0: never).
    pub warn: u64,
    /// CRITICAL at this count or more (0: never).
    pub crit: u64,
}

impl Limit {
    /// The level of `n`.
    pub fn level(&self, n: u64) -> Level {
        if self.crit > 0 && n >= self.crit {
            Level::Critical
        } else if self.warn > 0 && n >= self.warn {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

/// Every threshold, with the defaults of `archive-status check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Age of a server's newest segment, seconds (1 h / 6 h).
    pub newest_age: Limit,
    /// A server's last backup older than this many times its periodicity:
    /// WARNING (1.25); 0: off.
    pub backup_age_warn_factor: f64,
    /// ... CRITICAL (2.0); 0: off.
    pub backup_age_crit_factor: f64,
    /// Periodicity in days when the queue does not say (4).
    pub periodicity_days: u32,
    /// Segments missing on every server in a chain (CRITICAL from 1).
    pub gaps: Limit,
    /// Same-named files with different content (CRITICAL from 1).
    pub divergent: Limit,
    /// Same-named files of different size not compared (WARNING from 1).
    pub unverified: Limit,
    /// Files only one server holds (WARNING from 1).
    pub one_sided: Limit,
    /// Segments dropped by the push queue limit, unresolved (CRITICAL from 1).
    pub dropped: Limit,
    /// Failed, uncleared backup tasks (CRITICAL from 1).
    pub failed_tasks: Limit,
    /// Tasks running longer than the stuck threshold (WARNING from 1).
    pub stuck_tasks: Limit,
    /// Files a server owes its peer (WARNING from 10).
    pub owed: Limit,
    /// Parked conflicts plus rejected copies on a server (WARNING from 1).
    pub conflicts: Limit,
    /// Consecutive failures of a host on the primary (WARNING from 1).
    pub host_failures: Limit,
    /// Level of a host in cooldown on the primary (WARNING).
    pub host_cooldown: Level,
    /// Level of a server without a complete backup (WARNING).
    pub no_backup: Level,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            newest_age: Limit {
                warn: 3600,
                crit: 6 * 3600,
            },
            backup_age_warn_factor: 1.25,
            backup_age_crit_factor: 2.0,
            periodicity_days: 4,
            gaps: Limit { warn: 0, crit: 1 },
            divergent: Limit { warn: 0, crit: 1 },
            unverified: Limit { warn: 1, crit: 0 },
            one_sided: Limit { warn: 1, crit: 0 },
            dropped: Limit { warn: 0, crit: 1 },
            failed_tasks: Limit { warn: 0, crit: 1 },
            stuck_tasks: Limit { warn: 1, crit: 0 },
            owed: Limit { warn: 10, crit: 0 },
            conflicts: Limit { warn: 1, crit: 0 },
            host_failures: Limit { warn: 1, crit: 0 },
            host_cooldown: Level::Warning,
            no_backup: Level::Warning,
        }
    }
}

/// Names for a message: the first few, then "and N more".
pub fn some_names<S: AsRef<str>>(names: &[S], total: u64, max: usize) -> String {
    let shown: Vec<&str> = names.iter().take(max).map(AsRef::as_ref).collect();
    let more = total.saturating_sub(shown.len() as u64);
    let mut out = shown.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

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
    if let Some(q) = &report.queue {
        if let Some(e) = &q.error {
            all.push(Finding {
                level: Level::Unknown,
                check: "queue".into(),
                cluster: None,
                server: None,
                short: "backup queue unreadable".into(),
                message: format!("the backup queue could not be read: {e}"),
            });
        }
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
        for h in &p.hosts {
            let mut level = t.host_failures.level(u64::from(h.failures));
            if h.in_cooldown {
                level = level.worst(t.host_cooldown);
            }
            let cooldown = if h.in_cooldown {
                format!(
                    ", in cooldown for {} more (archive-cmd tries it last)",
                    human_age(h.cooldown_until - crate::net::health::now())
                )
            } else {
                String::new()
            };
            sink.add(
                level,
                "host_health",
                Some(&h.host),
                format!(
                    "{} failure(s){}",
                    h.failures,
                    if h.in_cooldown { ", cooldown" } else { "" }
                ),
                format!(
                    "archive-cmd on this primary failed {} time(s) in a row to reach {}{cooldown}; last error: {}; check that {} is up and reachable over ssh",
                    h.failures, h.host, h.last_error, h.host
                ),
            );
        }
    }
    all.sort_by_key(|f| std::cmp::Reverse(level_rank(f.level)));
    report.status = all.iter().fold(Level::Ok, |l, f| l.worst(f.level));
    report.findings = all;
}

fn level_rank(l: Level) -> u8 {
    l.rank()
}

fn cluster_findings(c: &ClusterReport, t: &Thresholds, out: &mut Vec<Finding>) {
    let mut sink = Sink {
        out,
        cluster: Some(c.name.clone()),
    };
    let readable = c.servers.iter().filter(|s| s.error.is_none()).count();
    for s in &c.servers {
        server_findings(c, s, t, &mut sink);
    }
    if readable > 0 && c.newest_segment.is_none() {
        sink.add(
            Level::Warning,
            "newest_age",
            None,
            "no WAL archived".into(),
            format!(
                "no WAL segment in {} on any server that answered: is archive_command set to archive-cmd with this directory?",
                c.wals_dir
            ),
        );
    }
    let n = c.divergent.len() as u64;
    let names: Vec<&str> = c.divergent.iter().map(|d| d.name.as_str()).collect();
    sink.add(
        t.divergent.level(n),
        "divergent",
        None,
        format!("{n} divergent file(s)"),
        format!(
            "{n} file(s) differ between the servers under the same name: {}; neither copy is overwritten by wal-sync: compare them (archive-status --json lists sizes and checksums) and keep the one whose WAL page headers match the cluster",
            some_names(&names, n, 10)
        ),
    );
    let n = c.unverified.len() as u64;
    sink.add(
        t.unverified.level(n),
        "unverified",
        None,
        format!("{n} file(s) not compared"),
        format!(
            "{n} same-named file(s) differ in stored size but were not compared by content: {}; rerun with a higher --max-digests",
            some_names(&c.unverified, n, 10)
        ),
    );
    if let Some(d) = &c.dropped {
        let unresolved: Vec<&str> = d
            .segments
            .iter()
            .filter(|s| s.unresolved)
            .map(|s| s.name.as_str())
            .collect();
        sink.add(
            t.dropped.level(d.unresolved),
            "dropped",
            None,
            format!("{} dropped segment(s)", d.unresolved),
            format!(
                "the primary dropped {} segment(s) it could not archive (push_queue_max): {}; point-in-time recovery cannot cross them: take a new base backup (recorded in {})",
                d.unresolved,
                some_names(&unresolved, d.unresolved, 10),
                d.log
            ),
        );
    }
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

fn server_findings(c: &ClusterReport, s: &ServerReport, t: &Thresholds, sink: &mut Sink<'_>) {
    let host = Some(s.host.as_str());
    if let Some(e) = &s.error {
        sink.add(
            Level::Unknown,
            "unreadable",
            host,
            "cannot be read".into(),
            e.clone(),
        );
    }
    if let (Some(age), Some(name)) = (s.newest_age_secs, &s.newest_segment) {
        let level = t.newest_age.level(age.max(0) as u64);
        sink.add(
            level,
            "newest_age",
            host,
            format!("newest segment {} old", human_age(age)),
            format!(
                "the newest segment on {} is {name}, {} old: is the primary archiving (pg_stat_archiver, its log), or idle without archive_timeout?",
                s.host,
                human_age(age)
            ),
        );
    }
    if let Some(ch) = &s.chain {
        let from = match ch.from_backup {
            Some(n) => format!("backup data.master.{n} (START WAL {})", ch.from),
            None => format!("the oldest segment {} (no backup)", ch.from),
        };
        if let Some(e) = &ch.error {
            sink.add(
                Level::Critical,
                "chain",
                host,
                "WAL chain broken".into(),
                format!(
                    "the WAL chain from {from} on {} cannot be followed: {e}",
                    s.host
                ),
            );
        }
        let ranges: Vec<String> = ch
            .gaps
            .iter()
            .map(|g| {
                if g.count == 1 {
                    g.from.clone()
                } else {
                    format!("{}..{} ({})", g.from, g.to, g.count)
                }
            })
            .collect();
        sink.add(
            t.gaps.level(ch.gap_segments),
            "gap",
            host,
            format!("{} segment(s) missing on all servers", ch.gap_segments),
            format!(
                "{} segment(s) of the WAL chain from {from} on {} to {} are missing on every server: {}; a restore from that backup cannot go past them: if the primary still has them in pg_wal, archive them again with archive-cmd; otherwise take a new base backup",
                ch.gap_segments,
                s.host,
                ch.to,
                some_names(&ranges, ch.gaps.len() as u64, 5)
            ),
        );
    }
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
    let peers: Vec<&str> = c
        .servers
        .iter()
        .filter(|o| o.host != s.host)
        .map(|o| o.host.as_str())
        .collect();
    sink.add(
        t.one_sided.level(s.one_sided),
        "one_sided",
        host,
        format!("{} file(s) only here", s.one_sided),
        format!(
            "{} file(s) are on {} but not on {}: {}; a single copy until wal-sync (or the owed delivery) runs: wal-sync {} {}",
            s.one_sided,
            s.host,
            peers.join(", "),
            some_names(&s.one_sided_names, s.one_sided, 5),
            c.wals_dir,
            peers.first().copied().unwrap_or("PEER")
        ),
    );
    if let Some(n) = s.owed {
        let to: Vec<String> = s
            .owed_to
            .iter()
            .map(|p| format!("{} to {}", p.count, p.peer))
            .collect();
        sink.add(
            t.owed.level(n),
            "owed",
            host,
            format!("{n} file(s) owed"),
            format!(
                "{} owes {n} file(s) ({}) it could not forward: is the peer down? they are delivered when it answers (archive-remote-cmd deliver-owed)",
                s.host,
                to.join(", ")
            ),
        );
    }
    let parked = s.conflicts.unwrap_or(0);
    let rejected = s.rejected.unwrap_or(0);
    sink.add(
        t.conflicts.level(parked + rejected),
        "conflicts",
        host,
        format!("{parked} parked conflict(s), {rejected} rejected copy(ies)"),
        format!(
            "{} holds {parked} owed file(s) parked because the peer has other content under the name, and {rejected} incoming copy(ies) refused as conflicting ({}/.pgarchive/conflicts, .pgarchive/rejected): compare them with the stored files, then remove them",
            s.host, c.wals_dir
        ),
    );
    backup_age_finding(c, s, t, sink);
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

fn backup_age_finding(c: &ClusterReport, s: &ServerReport, t: &Thresholds, sink: &mut Sink<'_>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{
        ChainReport, ClusterReport, Divergent, DroppedReport, DroppedSegment, GapRange, HostHealth,
        PrimaryReport, QueueCluster, QueueServer, QueueSource, ServerReport, TaskInfo,
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

    fn clean() -> Report {
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
    fn queued_and_backed_up(r: &mut Report) {
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

    #[test]
    fn each_problem_gets_its_default_level() {
        let t = Thresholds::default();
        type Breaker = Box<dyn Fn(&mut Report)>;
        let cases: Vec<(&str, Level, Breaker)> = vec![
            (
                "gap",
                Level::Critical,
                Box::new(|r: &mut Report| {
                    let ch = r.clusters[0].servers[0].chain.as_mut().unwrap();
                    ch.gap_segments = 1;
                    ch.gaps.push(GapRange {
                        from: "000000010000000000000003".into(),
                        to: "000000010000000000000003".into(),
                        count: 1,
                    });
                }),
            ),
            (
                "chain",
                Level::Critical,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].chain.as_mut().unwrap().error = Some("x".into());
                }),
            ),
            (
                "one_sided",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[1].one_sided = 1;
                }),
            ),
            (
                "divergent",
                Level::Critical,
                Box::new(|r: &mut Report| {
                    r.clusters[0].divergent.push(Divergent::default());
                }),
            ),
            (
                "dropped",
                Level::Critical,
                Box::new(|r: &mut Report| {
                    r.clusters[0].dropped = Some(DroppedReport {
                        total: 1,
                        unresolved: 1,
                        segments: vec![DroppedSegment {
                            unresolved: true,
                            ..Default::default()
                        }],
                        ..Default::default()
                    });
                }),
            ),
            (
                "owed",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].owed = Some(10);
                }),
            ),
            (
                "conflicts",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].rejected = Some(1);
                }),
            ),
            (
                "newest_age",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].newest_age_secs = Some(2 * 3600);
                }),
            ),
            (
                "newest_age",
                Level::Critical,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].newest_age_secs = Some(7 * 3600);
                }),
            ),
            (
                "unreadable",
                Level::Unknown,
                Box::new(|r: &mut Report| {
                    let s = &mut r.clusters[0].servers[1];
                    *s = ServerReport {
                        host: "arch2".into(),
                        error: Some("host arch2: down".into()),
                        ..Default::default()
                    };
                }),
            ),
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
            (
                "host_health",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    r.primary = Some(PrimaryReport {
                        state_dir: "/s".into(),
                        hosts: vec![HostHealth {
                            host: "arch1".into(),
                            failures: 6,
                            in_cooldown: true,
                            cooldown_until: crate::net::health::now() + 60,
                            ..Default::default()
                        }],
                    });
                }),
            ),
        ];
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
