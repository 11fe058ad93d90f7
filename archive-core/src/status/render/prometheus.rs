//! The report in Prometheus' text exposition format, for node_exporter's
//! textfile collector: every metric a gauge, labelled by cluster and
//! server. Unknown values are left out rather than written as 0.

use std::fmt::Write as _;

use crate::status::{ChainReport, ClusterReport, PrimaryReport, Report, ServerReport};

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric: its help text and its samples, in the order added.
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<String>,
}

/// The metrics, in the order first added.
struct Prom {
    families: Vec<Family>,
}

impl Prom {
    fn family(&mut self, name: &'static str, help: &'static str) -> usize {
        if let Some(i) = self.families.iter().position(|f| f.name == name) {
            return i;
        }
        self.families.push(Family {
            name,
            help,
            samples: Vec::new(),
        });
        self.families.len() - 1
    }

    fn add(&mut self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: f64) {
        let i = self.family(name, help);
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        let value = if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{}", v as i64)
        } else {
            format!("{v}")
        };
        let sample = if l.is_empty() {
            format!("{name} {value}")
        } else {
            format!("{name}{{{}}} {value}", l.join(","))
        };
        self.families[i].samples.push(sample);
    }

    /// The exposition text: per family its HELP, TYPE and samples.
    fn render(&self) -> String {
        let mut o = String::new();
        for Family {
            name,
            help,
            samples,
        } in &self.families
        {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} gauge");
            for s in samples {
                let _ = writeln!(o, "{s}");
            }
        }
        o
    }
}

/// The report in Prometheus' text exposition format. Unknown values are
/// left out rather than written as 0.
pub fn prometheus(r: &Report) -> String {
    let mut p = Prom {
        families: Vec::new(),
    };
    run_metrics(&mut p, r);
    for c in &r.clusters {
        cluster_metrics(&mut p, c);
    }
    if let Some(pr) = &r.primary {
        primary_metrics(&mut p, pr);
    }
    p.render()
}

/// When the run was, how long it took, whether the queue could be read.
fn run_metrics(p: &mut Prom, r: &Report) {
    p.add(
        "pgarchive_status_timestamp_seconds",
        "When archive-status ran (Unix time).",
        &[],
        r.generated_at as f64,
    );
    p.add(
        "pgarchive_status_duration_seconds",
        "How long archive-status took.",
        &[],
        r.duration_secs,
    );
    if let Some(q) = &r.queue {
        p.add(
            "pgarchive_queue_up",
            "Whether the backup_queue database could be read.",
            &[],
            if q.error.is_none() { 1.0 } else { 0.0 },
        );
    }
}

/// A cluster's level, its servers, its comparison and drops.
fn cluster_metrics(p: &mut Prom, c: &ClusterReport) {
    let cl = c.name.as_str();
    p.add(
        "pgarchive_status",
        "The cluster's check level: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        &[("cluster", cl)],
        c.status.exit_code() as f64,
    );
    for s in &c.servers {
        server_metrics(p, c, s);
    }
    for s in &c.servers {
        schedule_metrics(p, c, s);
    }
    if c.servers.iter().filter(|o| o.error.is_none()).count() >= 2 {
        p.add(
            "pgarchive_divergent_files",
            "Same-named files whose content differs between the servers.",
            &[("cluster", cl)],
            c.divergent.len() as f64,
        );
        p.add(
            "pgarchive_unverified_files",
            "Same-named files of different stored size not compared by content.",
            &[("cluster", cl)],
            c.unverified.len() as f64,
        );
    }
    if let Some(d) = &c.dropped {
        p.add(
            "pgarchive_dropped_segments",
            "Segments the primary dropped (push_queue_max) that are still missing and needed.",
            &[("cluster", cl)],
            d.unresolved as f64,
        );
        p.add(
            "pgarchive_dropped_segments_logged",
            "Lines of the primary's drop log.",
            &[("cluster", cl)],
            d.total as f64,
        );
    }
}

/// What one server holds of the cluster.
fn server_metrics(p: &mut Prom, c: &ClusterReport, s: &ServerReport) {
    let cl = c.name.as_str();
    let l = [("cluster", cl), ("server", s.host.as_str())];
    p.add(
        "pgarchive_up",
        "Whether the archive server could be read (1) or not (0).",
        &l,
        if s.error.is_none() { 1.0 } else { 0.0 },
    );
    p.add(
        "pgarchive_status_requests",
        "Protocol requests archive-status sent to the server for the cluster.",
        &l,
        f64::from(s.requests),
    );
    if s.error.is_some() && s.files == 0 {
        return;
    }
    file_metrics(p, &l, s);
    if let Some(ch) = &s.chain {
        chain_metrics(p, &l, ch);
    }
    copy_metrics(p, c, &l, s);
    verify_metrics(p, &l, s);
    if c.backup_dir.is_some() {
        p.add(
            "pgarchive_backups",
            "Complete backups on the server.",
            &l,
            s.backups.iter().filter(|b| b.complete).count() as f64,
        );
    }
    if let Some(a) = s.newest_backup_age_secs {
        p.add(
            "pgarchive_newest_backup_age_seconds",
            "Age of the newest complete backup on the server's disk.",
            &l,
            a as f64,
        );
    }
}

/// Files, bytes and the newest segment.
fn file_metrics(p: &mut Prom, l: &[(&str, &str)], s: &ServerReport) {
    p.add(
        "pgarchive_files",
        "WAL files (segments, history, backup labels, partials) on the server.",
        l,
        s.files as f64,
    );
    p.add(
        "pgarchive_stored_bytes",
        "Bytes the cluster's WAL takes on the server (compressed).",
        l,
        s.stored_bytes as f64,
    );
    if let (Some(age), Some(mtime)) = (s.newest_age_secs, s.newest_mtime) {
        p.add(
            "pgarchive_newest_segment_age_seconds",
            "Age of the newest WAL segment on the server (from its mtime).",
            l,
            age as f64,
        );
        p.add(
            "pgarchive_newest_segment_timestamp_seconds",
            "mtime of the newest WAL segment on the server (Unix time).",
            l,
            mtime as f64,
        );
    }
}

/// The chain from the server's oldest backup.
fn chain_metrics(p: &mut Prom, l: &[(&str, &str)], ch: &ChainReport) {
    p.add(
        "pgarchive_wal_chain_segments",
        "Segments in the WAL chain from the server's oldest backup to the newest segment.",
        l,
        ch.expected as f64,
    );
    p.add(
        "pgarchive_wal_chain_broken",
        "1 when the chain from the server's oldest backup cannot be followed (timeline history).",
        l,
        if ch.error.is_some() { 1.0 } else { 0.0 },
    );
    if ch.error.is_none() {
        p.add(
            "pgarchive_wal_gaps",
            "Segments of that chain missing on every server.",
            l,
            ch.gap_segments as f64,
        );
        p.add(
            "pgarchive_wal_missing_here_segments",
            "Segments of that chain missing on this server but present on another.",
            l,
            ch.missing_here as f64,
        );
    }
}

/// One-sided, owed, parked and rejected files.
fn copy_metrics(p: &mut Prom, c: &ClusterReport, l: &[(&str, &str)], s: &ServerReport) {
    if c.servers.iter().filter(|o| o.error.is_none()).count() >= 2 {
        p.add(
            "pgarchive_one_sided_segments",
            "Files on this server that another server lacks.",
            l,
            s.one_sided as f64,
        );
    }
    if let Some(n) = s.owed {
        p.add(
            "pgarchive_owed_segments",
            "Files the server owes its peer (stored here, not forwarded yet).",
            l,
            n as f64,
        );
    }
    if let Some(n) = s.conflicts {
        p.add(
            "pgarchive_parked_conflicts",
            "Owed files parked because the peer holds other content under the name.",
            l,
            n as f64,
        );
    }
    if let Some(n) = s.rejected {
        p.add(
            "pgarchive_rejected_copies",
            "Incoming copies refused as conflicting and kept aside.",
            l,
            n as f64,
        );
    }
}

/// The server's last verify: its age, and per server checked (label
/// `checked`: this one, or the peer it fetched from) the damage found and
/// whether the check ran to its end.
fn verify_metrics(p: &mut Prom, l: &[(&str, &str)], s: &ServerReport) {
    let (Some(v), Some(age)) = (&s.verify, s.verify_age_secs) else {
        return;
    };
    p.add(
        "pgarchive_verify_age_seconds",
        "Seconds since the server's last archive-remote-cmd verify finished.",
        l,
        age as f64,
    );
    for part in std::iter::once(&v.local).chain(v.peer.as_ref()) {
        let mut pl = l.to_vec();
        pl.push(("checked", part.host.as_str()));
        p.add(
            "pgarchive_verify_damaged",
            "Damaged or missing items the last verify found among the checked server's copies.",
            &pl,
            part.damaged as f64,
        );
        p.add(
            "pgarchive_verify_complete",
            "1 when the last verify checked all of the checked server's copies.",
            &pl,
            if part.error.is_none() { 1.0 } else { 0.0 },
        );
    }
}

/// The server's last backup against its schedule, and its tasks.
fn schedule_metrics(p: &mut Prom, c: &ClusterReport, s: &ServerReport) {
    let cl = c.name.as_str();
    let l = [("cluster", cl), ("server", s.host.as_str())];
    let queued = c.queue.as_ref().is_some_and(|q| q.in_queue);
    let (age, period) = match &s.queue {
        Some(q) if queued => (
            q.backup_age_secs,
            Some(f64::from(q.periodicity_days) * 86400.0),
        ),
        _ => (s.newest_backup_age_secs, None),
    };
    if let Some(a) = age {
        p.add(
            "pgarchive_backup_age_seconds",
            "Age of the server's last backup: the queue's last done task (since it started), else the newest complete backup on disk.",
            &l,
            a as f64,
        );
    }
    if let Some(period) = period {
        p.add(
            "pgarchive_backup_periodicity_seconds",
            "periodicity_days of the cluster in the queue, in seconds (per server).",
            &l,
            period,
        );
    }
    if let Some(q) = s.queue.as_ref().filter(|_| queued) {
        p.add(
            "pgarchive_failed_tasks",
            "Failed backup tasks not cleared (they block the server's backups of the cluster).",
            &l,
            q.failed.len() as f64,
        );
        p.add(
            "pgarchive_stuck_tasks",
            "Backup tasks running longer than the stuck threshold.",
            &l,
            q.stuck.len() as f64,
        );
        p.add(
            "pgarchive_running_tasks",
            "Backup tasks running.",
            &l,
            q.running.len() as f64,
        );
    }
}

/// The archive servers' failure counters and cooldowns on this primary.
fn primary_metrics(p: &mut Prom, pr: &PrimaryReport) {
    for h in &pr.hosts {
        let l = [("server", h.host.as_str())];
        p.add(
            "pgarchive_host_failures",
            "Consecutive failures of the archive server seen by archive-cmd on this primary.",
            &l,
            f64::from(h.failures),
        );
        p.add(
            "pgarchive_host_in_cooldown",
            "1 while archive-cmd on this primary tries the server last (cooldown).",
            &l,
            if h.in_cooldown { 1.0 } else { 0.0 },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::render::tests::report;

    #[test]
    fn prometheus_text_is_well_formed() {
        let text = prometheus(&report());
        assert!(text.contains("# TYPE pgarchive_wal_gaps gauge\n"), "{text}");
        assert!(
            text.contains("pgarchive_wal_gaps{cluster=\"ma\\\"in\",server=\"arch1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pgarchive_status{cluster=\"ma\\\"in\"} 2\n"),
            "{text}"
        );
        assert!(text.contains(
            "pgarchive_newest_segment_age_seconds{cluster=\"ma\\\"in\",server=\"arch2\"} 30\n"
        ));
        // Every sample line belongs to the family declared above it.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_string();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, family, "{line}");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        // Families are declared once.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut dedup = types.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(types.len(), dedup.len());
    }
}
