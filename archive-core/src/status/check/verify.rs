//! Findings about the last `archive-remote-cmd verify` a server ran: the
//! damage it found (here or on the peer it checked), a check that could
//! not run to its end, and a verify grown older than its threshold.

use super::{some_names, Level, Sink, Thresholds};
use crate::status::{human_age, ServerReport};

/// The last verify of server `s`: WARNING for damage, for a part that
/// could not be checked, and for a result older than `t.verify_age`.
pub(super) fn last_run(s: &ServerReport, t: &Thresholds, sink: &mut Sink<'_>) {
    let Some(v) = &s.verify else {
        return;
    };
    let host = Some(s.host.as_str());
    for part in std::iter::once(&v.local).chain(v.peer.as_ref()) {
        if part.damaged > 0 {
            sink.add(
                Level::Warning,
                "verify",
                host,
                format!("verify found {} damaged on {}", part.damaged, part.host),
                format!(
                    "the last verify run on {} found {} damaged or missing item(s) among {}'s copies: {}; restore them from the other server (wal-sync for WAL, a new backup for a backup) and run verify again",
                    s.host,
                    part.damaged,
                    part.host,
                    some_names(&part.damaged_names, part.damaged, 5)
                ),
            );
        }
        if let Some(e) = &part.error {
            sink.add(
                Level::Warning,
                "verify",
                host,
                format!("verify incomplete on {}", part.host),
                format!(
                    "the last verify run on {} could not check all of {}'s copies: {e}",
                    s.host, part.host
                ),
            );
        }
    }
    if let Some(age) = s.verify_age_secs {
        if t.verify_age > 0 && age > t.verify_age as i64 {
            sink.add(
                Level::Warning,
                "verify",
                host,
                format!("last verify {} ago", human_age(age)),
                format!(
                    "the last verify on {} finished {} ago (threshold {}): check its cron job or timer (archive-remote-cmd verify)",
                    s.host,
                    human_age(age),
                    human_age(t.verify_age as i64)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_default_levels, Breaker};
    use super::*;
    use crate::net::wire::{VerifyCounts, VerifySummary};
    use crate::status::{evaluate, Report};

    /// arch1's last verify, `age` seconds ago, with `local` and `peer` parts.
    fn verified(age: i64, local: VerifyCounts, peer: Option<VerifyCounts>) -> Breaker {
        Box::new(move |r: &mut Report| {
            let s = &mut r.clusters[0].servers[0];
            s.verify = Some(VerifySummary {
                local: local.clone(),
                peer: peer.clone(),
                ..Default::default()
            });
            s.verify_age_secs = Some(age);
        })
    }

    fn counts(host: &str, damaged: u64, error: Option<&str>) -> VerifyCounts {
        VerifyCounts {
            host: host.into(),
            damaged,
            damaged_names: (0..damaged).map(|i| format!("f{i}: bad")).collect(),
            error: error.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn damage_a_part_not_checked_and_an_old_verify_warn() {
        assert_default_levels(vec![
            (
                "verify",
                Level::Warning,
                verified(60, counts("arch1", 2, None), None),
            ),
            (
                "verify",
                Level::Warning,
                verified(60, counts("arch1", 0, None), Some(counts("arch2", 1, None))),
            ),
            (
                "verify",
                Level::Warning,
                verified(
                    60,
                    counts("arch1", 0, None),
                    Some(counts("arch2", 0, Some("down"))),
                ),
            ),
            (
                "verify",
                Level::Warning,
                verified(9 * 86400, counts("arch1", 0, None), None),
            ),
        ]);
    }

    #[test]
    fn a_recent_clean_verify_and_none_at_all_are_ok() {
        for r in [
            verified(60, counts("arch1", 0, None), Some(counts("arch2", 0, None))),
            // Never run: not warned about (the age threshold is for a cron
            // job that stopped).
            Box::new(|_: &mut Report| {}) as Breaker,
        ] {
            let mut report = super::super::tests::clean();
            r(&mut report);
            evaluate(&mut report, &Thresholds::default());
            assert!(
                report.findings.iter().all(|f| f.check != "verify"),
                "{:?}",
                report.findings
            );
        }
        // The age threshold can be turned off.
        let mut report = super::super::tests::clean();
        verified(99 * 86400, counts("arch1", 0, None), None)(&mut report);
        let t = Thresholds {
            verify_age: 0,
            ..Thresholds::default()
        };
        evaluate(&mut report, &t);
        assert!(report.findings.iter().all(|f| f.check != "verify"));
    }
}
