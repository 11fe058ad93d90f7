//! A [`Report`] as readable text, as a Nagios check result, as JSON and in
//! Prometheus' text exposition format (for node_exporter's textfile
//! collector). Everything returns a `String`: printing is the binary's job.

use std::fmt::Write as _;

use super::check::some_names;
use super::{human_age, ClusterReport, Report, ServerReport};

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn when(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// The readable report (`archive-status report`).
pub fn text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {} ({} cluster(s), {} finding(s)) at {}, in {:.2} s",
        r.program,
        r.status.as_str(),
        r.clusters.len(),
        r.findings.len(),
        when(r.generated_at),
        r.duration_secs
    );
    if let Some(q) = &r.queue {
        match &q.error {
            Some(e) => {
                let _ = writeln!(o, "backup queue: UNREADABLE: {e}");
            }
            None => {
                let _ = writeln!(o, "backup queue: read");
            }
        }
    }
    for c in &r.clusters {
        o.push('\n');
        cluster_text(&mut o, c);
    }
    if let Some(p) = &r.primary {
        let _ = writeln!(
            o,
            "\nhost health recorded here by archive-cmd ({}/health):",
            p.state_dir
        );
        if p.hosts.is_empty() {
            let _ = writeln!(o, "  no records (no failure ever)");
        }
        for h in &p.hosts {
            let mut line = format!("  {}: {} consecutive failure(s)", h.host, h.failures);
            if h.in_cooldown {
                let _ = write!(
                    line,
                    ", IN COOLDOWN until {} (tried last)",
                    when(h.cooldown_until)
                );
            }
            if h.last_failure > 0 {
                let _ = write!(
                    line,
                    "; last failure {} ({})",
                    when(h.last_failure),
                    h.last_error
                );
            }
            let _ = writeln!(o, "{line}");
        }
    }
    o.push_str("\nfindings:\n");
    if r.findings.is_empty() {
        o.push_str("  none: everything is OK\n");
    }
    for f in &r.findings {
        let _ = writeln!(o, "  {} {}: {}", f.level.as_str(), f.scope(), f.message);
    }
    o
}

fn cluster_text(o: &mut String, c: &ClusterReport) {
    let _ = writeln!(o, "cluster {} [{}]", c.name, c.status.as_str());
    let _ = writeln!(
        o,
        "  WAL dir {} on {}; backups {}; {} segments ({})",
        c.wals_dir,
        c.hosts.join(", "),
        c.backup_dir.as_deref().unwrap_or("(not given)"),
        c.segment_size
            .map(|s| format!("{} MiB", s >> 20))
            .unwrap_or_else(|| "?".into()),
        c.segment_size_source
    );
    match (&c.newest_segment, c.timeline) {
        (Some(n), Some(t)) => {
            let mut line = format!("  newest segment {n} (timeline {t}");
            for h in &c.history {
                let _ = write!(
                    line,
                    "; left timeline {} at {}",
                    h.parent_tli,
                    super::chain::format_lsn(h.switchpoint)
                );
            }
            let _ = writeln!(o, "{line})");
        }
        _ => {
            let _ = writeln!(o, "  no WAL segment archived");
        }
    }
    if let Some(q) = &c.queue {
        if q.in_queue {
            let _ = writeln!(
                o,
                "  queue: {}, every {} day(s) per server, keep {}",
                if q.enabled { "enabled" } else { "DISABLED" },
                q.periodicity_days,
                q.keep_backups_cnt
            );
        } else {
            let _ = writeln!(o, "  queue: NOT in backups.hosts");
        }
    }
    for s in &c.servers {
        server_text(o, c, s);
    }
    let _ = writeln!(
        o,
        "  same-named files compared by content: {}; divergent: {}; not compared: {}",
        c.compared,
        c.divergent.len(),
        c.unverified.len()
    );
    for d in c.divergent.iter().take(20) {
        let copies: Vec<String> = d
            .copies
            .iter()
            .map(|cp| {
                format!(
                    "{}: {} bytes stored, {} raw, blake3 {}",
                    cp.server,
                    cp.stored_size,
                    cp.raw_size.map_or("?".into(), |s| s.to_string()),
                    cp.blake3.as_deref().map_or("?", |b| &b[..b.len().min(16)])
                )
            })
            .collect();
        let _ = writeln!(o, "    DIVERGENT {}: {}", d.name, copies.join("; "));
    }
    if !c.unverified.is_empty() {
        let _ = writeln!(
            o,
            "    not compared: {}",
            some_names(&c.unverified, c.unverified.len() as u64, 10)
        );
    }
    if let Some(d) = &c.dropped {
        let _ = writeln!(
            o,
            "  dropped by the primary (push_queue_max, {}): {} in the log, {} unresolved",
            d.log, d.total, d.unresolved
        );
        for s in d.segments.iter().rev().take(10) {
            let _ = writeln!(
                o,
                "    {} {} (backlog {}, limit {}){}",
                s.time,
                s.name,
                s.backlog,
                s.limit,
                if s.unresolved { " UNRESOLVED" } else { "" }
            );
        }
    }
    for n in &c.notes {
        let _ = writeln!(o, "  note: {n}");
    }
}

fn server_text(o: &mut String, c: &ClusterReport, s: &ServerReport) {
    let name = match &s.server_name {
        Some(n) if *n != s.host => format!(" (server_name {n})"),
        _ => String::new(),
    };
    let _ = writeln!(o, "  server {}{name}:", s.host);
    if let Some(e) = &s.error {
        let _ = writeln!(o, "    ERROR: {e}");
    }
    if s.error.is_some() && s.files == 0 && s.backups.is_empty() {
        return;
    }
    let newest = match (&s.newest_segment, s.newest_age_secs) {
        (Some(n), Some(a)) => format!("newest {n}, {} old", human_age(a)),
        _ => "no segment".into(),
    };
    let _ = writeln!(
        o,
        "    {} files ({} segments, oldest {}), {}; {newest}",
        s.files,
        s.segments,
        s.oldest_segment.as_deref().unwrap_or("-"),
        mb(s.stored_bytes)
    );
    if c.backup_dir.is_some() {
        if s.backups.is_empty() {
            let _ = writeln!(o, "    backups: none");
        }
        for b in &s.backups {
            let oldest = if Some(b.index) == s.oldest_backup {
                " [oldest kept]"
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "    backup data.master.{}{oldest}: {}, START WAL {}, started {}, {}",
                b.index,
                if b.complete { "complete" } else { "INCOMPLETE" },
                b.start_wal.as_deref().unwrap_or("? (label unreadable)"),
                b.start_time.as_deref().unwrap_or("?"),
                match (b.finished, b.age_secs) {
                    (Some(f), Some(a)) => format!("finished {} ({} ago)", when(f), human_age(a)),
                    (None, Some(a)) => format!("{} ago", human_age(a)),
                    _ => "age unknown".into(),
                }
            );
        }
    }
    if let Some(ch) = &s.chain {
        let from = match ch.from_backup {
            Some(n) => format!("data.master.{n} ({})", ch.from),
            None => format!("the oldest segment {} (no backup)", ch.from),
        };
        if let Some(e) = &ch.error {
            let _ = writeln!(o, "    chain from {from}: BROKEN: {e}");
        }
    }
    if let Some(ch) = s.chain.as_ref().filter(|c| c.error.is_none()) {
        let from = match ch.from_backup {
            Some(n) => format!("data.master.{n} ({})", ch.from),
            None => format!("the oldest segment {} (no backup)", ch.from),
        };
        let mut line = format!(
            "    chain from {from} to {}: {} segment(s), {} missing here only, {} missing on every server",
            ch.to, ch.expected, ch.missing_here, ch.gap_segments
        );
        if !ch.gaps.is_empty() {
            let gaps: Vec<String> = ch
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
            let _ = write!(
                line,
                " (GAPS: {})",
                some_names(&gaps, gaps.len() as u64, 10)
            );
        }
        let _ = writeln!(o, "{line}");
    }
    let opt = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
    let mut line = format!("    only here: {}", s.one_sided);
    if s.one_sided > 0 {
        let _ = write!(
            line,
            " ({})",
            some_names(&s.one_sided_names, s.one_sided, 5)
        );
    }
    let _ = write!(
        line,
        "; owed: {}; parked conflicts: {}; rejected copies: {}",
        opt(s.owed),
        opt(s.conflicts),
        opt(s.rejected)
    );
    if let Some(skew) = s.clock_skew_secs.filter(|k| k.abs() > 60) {
        let _ = write!(line, "; clock {skew:+} s off");
    }
    let _ = writeln!(o, "{line}");
    if let Some(q) = &s.queue {
        let last = match (&q.last_done, q.backup_age_secs) {
            (Some(t), Some(a)) => format!("last done #{} started {} ago", t.id, human_age(a)),
            _ => "never done".into(),
        };
        let mut line = format!(
            "    queue: {last} (every {} day(s)); failed {}; stuck {}; running {}",
            q.periodicity_days,
            q.failed.len(),
            q.stuck.len(),
            q.running.len()
        );
        for f in &q.failed {
            let _ = write!(
                line,
                "; FAILED #{} {} ago: {}",
                f.id,
                human_age(f.age_secs),
                f.error.as_deref().unwrap_or("-")
            );
        }
        for f in &q.stuck {
            let _ = write!(line, "; STUCK #{} running {}", f.id, human_age(f.age_secs));
        }
        let _ = writeln!(o, "{line}");
    }
}

/// The Nagios check result: one summary line (with performance data),
/// then one line per finding.
pub fn nagios(r: &Report) -> String {
    let mut o = String::new();
    let servers: usize = r.clusters.iter().map(|c| c.servers.len()).sum();
    let summary = if r.findings.is_empty() {
        format!(
            "{} cluster(s) on {servers} server(s) checked, no problem",
            r.clusters.len()
        )
    } else {
        let worst: Vec<String> = r
            .findings
            .iter()
            .take(3)
            .map(|f| {
                let scope = f.scope();
                if scope.is_empty() {
                    f.short.clone()
                } else {
                    format!("{scope}: {}", f.short)
                }
            })
            .collect();
        let more = r.findings.len().saturating_sub(3);
        let mut s = worst.join("; ");
        if more > 0 {
            let _ = write!(s, "; and {more} more");
        }
        s
    };
    let _ = writeln!(
        o,
        "PGARCHIVE {} - {summary} | {}",
        r.status.as_str(),
        perfdata(r)
    );
    for f in &r.findings {
        let _ = writeln!(o, "{} {}: {}", f.level.as_str(), f.scope(), f.message);
    }
    o
}

fn perfdata(r: &Report) -> String {
    let servers = || r.clusters.iter().flat_map(|c| c.servers.iter());
    let gaps: u64 = servers()
        .filter_map(|s| s.chain.as_ref())
        .map(|c| c.gap_segments)
        .max()
        .unwrap_or(0);
    let one_sided: u64 = servers().map(|s| s.one_sided).sum();
    let divergent: usize = r.clusters.iter().map(|c| c.divergent.len()).sum();
    let dropped: u64 = r
        .clusters
        .iter()
        .filter_map(|c| c.dropped.as_ref())
        .map(|d| d.unresolved)
        .sum();
    let owed: u64 = servers().filter_map(|s| s.owed).sum();
    let failed: usize = servers()
        .filter_map(|s| s.queue.as_ref())
        .map(|q| q.failed.len())
        .sum();
    let stuck: usize = servers()
        .filter_map(|s| s.queue.as_ref())
        .map(|q| q.stuck.len())
        .sum();
    let age = servers()
        .filter_map(|s| s.newest_age_secs)
        .max()
        .unwrap_or(0);
    format!(
        "gaps={gaps} one_sided={one_sided} divergent={divergent} dropped={dropped} owed={owed} failed_tasks={failed} stuck_tasks={stuck} newest_age={age}s"
    )
}

/// The report as pretty JSON (parse it back with [`Report::from_json`]).
pub fn json(r: &Report) -> String {
    let mut s = serde_json::to_string_pretty(r).expect("the report serializes");
    s.push('\n');
    s
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Prom {
    families: Vec<(&'static str, &'static str, Vec<String>)>,
}

impl Prom {
    fn family(&mut self, name: &'static str, help: &'static str) -> usize {
        if let Some(i) = self.families.iter().position(|f| f.0 == name) {
            return i;
        }
        self.families.push((name, help, Vec::new()));
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
        self.families[i].2.push(sample);
    }
}

/// The report in Prometheus' text exposition format. Unknown values are
/// left out rather than written as 0.
pub fn prometheus(r: &Report) -> String {
    let mut p = Prom {
        families: Vec::new(),
    };
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
    for c in &r.clusters {
        let cl = c.name.as_str();
        p.add(
            "pgarchive_status",
            "The cluster's check level: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
            &[("cluster", cl)],
            c.status.exit_code() as f64,
        );
        for s in &c.servers {
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
                continue;
            }
            p.add(
                "pgarchive_files",
                "WAL files (segments, history, backup labels, partials) on the server.",
                &l,
                s.files as f64,
            );
            p.add(
                "pgarchive_stored_bytes",
                "Bytes the cluster's WAL takes on the server (compressed).",
                &l,
                s.stored_bytes as f64,
            );
            if let (Some(age), Some(mtime)) = (s.newest_age_secs, s.newest_mtime) {
                p.add(
                    "pgarchive_newest_segment_age_seconds",
                    "Age of the newest WAL segment on the server (from its mtime).",
                    &l,
                    age as f64,
                );
                p.add(
                    "pgarchive_newest_segment_timestamp_seconds",
                    "mtime of the newest WAL segment on the server (Unix time).",
                    &l,
                    mtime as f64,
                );
            }
            if let Some(ch) = &s.chain {
                p.add(
                    "pgarchive_wal_chain_segments",
                    "Segments in the WAL chain from the server's oldest backup to the newest segment.",
                    &l,
                    ch.expected as f64,
                );
                p.add(
                    "pgarchive_wal_chain_broken",
                    "1 when the chain from the server's oldest backup cannot be followed (timeline history).",
                    &l,
                    if ch.error.is_some() { 1.0 } else { 0.0 },
                );
                if ch.error.is_none() {
                    p.add(
                        "pgarchive_wal_gaps",
                        "Segments of that chain missing on every server.",
                        &l,
                        ch.gap_segments as f64,
                    );
                    p.add(
                        "pgarchive_wal_missing_here_segments",
                        "Segments of that chain missing on this server but present on another.",
                        &l,
                        ch.missing_here as f64,
                    );
                }
            }
            if c.servers.iter().filter(|o| o.error.is_none()).count() >= 2 {
                p.add(
                    "pgarchive_one_sided_segments",
                    "Files on this server that another server lacks.",
                    &l,
                    s.one_sided as f64,
                );
            }
            if let Some(n) = s.owed {
                p.add(
                    "pgarchive_owed_segments",
                    "Files the server owes its peer (stored here, not forwarded yet).",
                    &l,
                    n as f64,
                );
            }
            if let Some(n) = s.conflicts {
                p.add(
                    "pgarchive_parked_conflicts",
                    "Owed files parked because the peer holds other content under the name.",
                    &l,
                    n as f64,
                );
            }
            if let Some(n) = s.rejected {
                p.add(
                    "pgarchive_rejected_copies",
                    "Incoming copies refused as conflicting and kept aside.",
                    &l,
                    n as f64,
                );
            }
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
        for s in &c.servers {
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
    if let Some(pr) = &r.primary {
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
    let mut o = String::new();
    for (name, help, samples) in &p.families {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        for s in samples {
            let _ = writeln!(o, "{s}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{
        evaluate, ChainReport, ClusterReport, GapRange, Report, ServerReport, Thresholds,
    };

    fn report() -> Report {
        let server = |h: &str, gaps: u64| ServerReport {
            host: h.into(),
            files: 5,
            segments: 5,
            newest_segment: Some("000000010000000000000005".into()),
            newest_mtime: Some(1000),
            newest_age_secs: Some(30),
            owed: Some(0),
            conflicts: Some(0),
            rejected: Some(0),
            oldest_backup: Some(0),
            chain: Some(ChainReport {
                from: "000000010000000000000001".into(),
                from_backup: Some(0),
                to: "000000010000000000000005".into(),
                expected: 5,
                gap_segments: gaps,
                gaps: (0..gaps)
                    .map(|_| GapRange {
                        from: "000000010000000000000003".into(),
                        to: "000000010000000000000003".into(),
                        count: 1,
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut r = Report {
            program: "archive-status 0.1.0".into(),
            clusters: vec![ClusterReport {
                name: "ma\"in".into(),
                wals_dir: "/a/main".into(),
                backup_dir: Some("/a/b".into()),
                newest_segment: Some("000000010000000000000005".into()),
                timeline: Some(1),
                servers: vec![server("arch1", 1), server("arch2", 0)],
                ..Default::default()
            }],
            ..Default::default()
        };
        evaluate(&mut r, &Thresholds::default());
        r
    }

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

    #[test]
    fn nagios_output_has_one_summary_line_first() {
        let r = report();
        let text = nagios(&r);
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with("PGARCHIVE CRITICAL - ma\"in/arch1: 1 segment(s) missing"),
            "{first}"
        );
        assert!(first.contains("| gaps=1 "), "{first}");
        assert!(text
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("CRITICAL ma\"in/arch1: "));
    }

    #[test]
    fn json_round_trips_and_text_mentions_the_gap() {
        let r = report();
        let back = Report::from_json(&json(&r)).unwrap();
        assert_eq!(back, r);
        let t = text(&r);
        assert!(t.contains("GAPS: 000000010000000000000003"), "{t}");
        assert!(t.contains("CRITICAL"), "{t}");
    }
}
