//! A [`Report`] as readable text ([`text`]), as a Nagios check result
//! ([`nagios`]), as JSON ([`json`]) and in Prometheus' text exposition
//! format ([`prometheus`], for node_exporter's textfile collector).
//! Everything returns a `String`: printing is the binary's job.

mod nagios;
mod prometheus;
mod text;

pub use self::nagios::nagios;
pub use self::prometheus::prometheus;
pub use self::text::text;

use super::Report;

/// The report as pretty JSON (parse it back with [`Report::from_json`]).
pub fn json(r: &Report) -> String {
    let mut s = serde_json::to_string_pretty(r).expect("the report serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{
        evaluate, ChainReport, ClusterReport, GapRange, Report, ServerReport, Thresholds,
    };

    /// Two servers, a gap on arch1, evaluated.
    pub(super) fn report() -> Report {
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
    fn json_round_trips_and_text_mentions_the_gap() {
        let r = report();
        let back = Report::from_json(&json(&r)).unwrap();
        assert_eq!(back, r);
        let t = text(&r);
        assert!(t.contains("GAPS: 000000010000000000000003"), "{t}");
        assert!(t.contains("CRITICAL"), "{t}");
    }
}
