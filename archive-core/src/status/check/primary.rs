//! Findings about the primary: segments it dropped (push queue limit) that
//! are still missing and needed, and archive servers it failed to reach.

use super::{some_names, Sink, Thresholds};
use crate::status::{human_age, ClusterReport, PrimaryReport};

/// Unresolved segments of the cluster's drop log.
pub(super) fn dropped(c: &ClusterReport, t: &Thresholds, sink: &mut Sink<'_>) {
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
}

/// Each archive server's failure counter and cooldown on this primary.
pub(super) fn host_health(p: &PrimaryReport, t: &Thresholds, sink: &mut Sink<'_>) {
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

#[cfg(test)]
mod tests {
    use crate::status::check::tests::{assert_default_levels, Breaker};
    use crate::status::check::Level;
    use crate::status::{DroppedReport, DroppedSegment, HostHealth, PrimaryReport, Report};

    #[test]
    fn each_primary_problem_gets_its_default_level() {
        let cases: Vec<(&str, Level, Breaker)> = vec![
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
        assert_default_levels(cases);
    }
}
