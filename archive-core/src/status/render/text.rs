//! The readable report (`archive-status report`): each cluster and its
//! servers, the primary's host health, then the findings.

use std::fmt::Write as _;

use crate::status::chain::format_lsn;
use crate::status::check::some_names;
use crate::status::{
    human_age, ChainReport, ClusterReport, DroppedReport, GapRange, PrimaryReport, QueueServer,
    Report, ServerReport,
};

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
        primary_text(&mut o, p);
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

/// The archive servers' failure counters and cooldowns on this primary.
fn primary_text(o: &mut String, p: &PrimaryReport) {
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

fn cluster_text(o: &mut String, c: &ClusterReport) {
    cluster_header(o, c);
    for s in &c.servers {
        server_text(o, c, s);
    }
    comparison_text(o, c);
    if let Some(d) = &c.dropped {
        dropped_text(o, d);
    }
    for n in &c.notes {
        let _ = writeln!(o, "  note: {n}");
    }
}

/// Name, directories, segment size, newest segment and timeline history,
/// the queue's row.
fn cluster_header(o: &mut String, c: &ClusterReport) {
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
                    format_lsn(h.switchpoint)
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
}

/// Same-named files compared, divergent and left uncompared.
fn comparison_text(o: &mut String, c: &ClusterReport) {
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
}

/// What the primary dropped (push_queue_max), newest first.
fn dropped_text(o: &mut String, d: &DroppedReport) {
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
    files_line(o, s);
    if c.backup_dir.is_some() {
        backups_text(o, s);
    }
    if let Some(ch) = &s.chain {
        chain_line(o, ch);
    }
    copies_line(o, s);
    verify_line(o, s);
    if let Some(q) = &s.queue {
        queue_line(o, q);
    }
}

/// Files, segments, bytes and the newest segment's age.
fn files_line(o: &mut String, s: &ServerReport) {
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
}

/// One line per backup directory.
fn backups_text(o: &mut String, s: &ServerReport) {
    if s.backups.is_empty() {
        let _ = writeln!(o, "    backups: none");
    }
    for b in &s.backups {
        let oldest = if Some(b.index) == s.oldest_backup {
            " [oldest kept]"
        } else {
            ""
        };
        let kind = match (b.incremental, b.parent) {
            (false, _) => String::new(),
            (true, Some(p)) => format!(", incremental of data.master.{p}"),
            (true, None) => ", incremental, PARENT MISSING (not restorable)".to_string(),
        };
        let _ = writeln!(
            o,
            "    backup data.master.{}{oldest}: {}{kind}, START WAL {}, started {}, {}",
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

/// The chain from the oldest backup: broken, or its length and gaps.
fn chain_line(o: &mut String, ch: &ChainReport) {
    let from = match ch.from_backup {
        Some(n) => format!("data.master.{n} ({})", ch.from),
        None => format!("the oldest segment {} (no backup)", ch.from),
    };
    if let Some(e) = &ch.error {
        let _ = writeln!(o, "    chain from {from}: BROKEN: {e}");
        return;
    }
    let mut line = format!(
        "    chain from {from} to {}: {} segment(s), {} missing here only, {} missing on every server",
        ch.to, ch.expected, ch.missing_here, ch.gap_segments
    );
    if !ch.gaps.is_empty() {
        let gaps: Vec<String> = ch.gaps.iter().map(GapRange::describe).collect();
        let _ = write!(
            line,
            " (GAPS: {})",
            some_names(&gaps, gaps.len() as u64, 10)
        );
    }
    let _ = writeln!(o, "{line}");
}

/// One-sided, owed, parked and rejected files, and clock skew.
fn copies_line(o: &mut String, s: &ServerReport) {
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
}

/// The last verify: when, and what it found here and on the peer.
fn verify_line(o: &mut String, s: &ServerReport) {
    let Some(v) = &s.verify else {
        if s.error.is_none() {
            let _ = writeln!(o, "    verify: never run");
        }
        return;
    };
    let mut line = format!(
        "    verify: {} ago",
        s.verify_age_secs.map_or("?".into(), human_age)
    );
    for part in std::iter::once(&v.local).chain(v.peer.as_ref()) {
        let state = if part.damaged > 0 {
            format!(
                "DAMAGED ({})",
                some_names(&part.damaged_names, part.damaged, 3)
            )
        } else if let Some(e) = &part.error {
            format!("INCOMPLETE ({e})")
        } else {
            "clean".into()
        };
        let _ = write!(
            line,
            "; {}: {state}, {} WAL file(s), {} backup(s)",
            part.host, part.wal_files, part.backups
        );
    }
    let _ = writeln!(o, "{line}");
}

/// The queue's view: last done task, failed and stuck tasks.
fn queue_line(o: &mut String, q: &QueueServer) {
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
