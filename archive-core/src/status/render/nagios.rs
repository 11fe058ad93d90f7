//! The Nagios check result (`archive-status check`): one summary line with
//! performance data, then one line per finding.

use std::fmt::Write as _;

use crate::status::Report;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::render::tests::report;

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
}
