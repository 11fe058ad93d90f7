//! Comparing the servers of a cluster with each other: which same-named
//! files to compare by content, which of them differ (divergent), and the
//! files only one server holds (one-sided).

use std::collections::BTreeSet;

use super::requests::HostData;
use super::Options;
use crate::status::{ClusterReport, CopyInfo, Divergent};

/// Same-named files to compare by content: those whose stored sizes
/// differ, or all of them with `checksum`; at most `max_digests`, the rest
/// are returned as left uncompared.
pub(super) fn candidates(
    hosts: &[HostData],
    readable: &[usize],
    union: &BTreeSet<&str>,
    opts: &Options,
) -> Candidates {
    let mut chosen: Vec<String> = Vec::new();
    if readable.len() >= 2 {
        for name in union {
            let sizes: Vec<u64> = readable
                .iter()
                .filter_map(|&i| hosts[i].has(name).map(|e| e.size))
                .collect();
            if sizes.len() >= 2 && (opts.checksum || sizes.iter().any(|&s| s != sizes[0])) {
                chosen.push(name.to_string());
            }
        }
    }
    let over = chosen.split_off(chosen.len().min(opts.max_digests));
    Candidates {
        names: chosen,
        over_limit: over,
    }
}

/// The outcome of [`candidates`].
pub(super) struct Candidates {
    /// To compare by content.
    pub(super) names: Vec<String>,
    /// Over the digest limit: left uncompared.
    pub(super) over_limit: Vec<String>,
}

/// Divergent and unverified files from the digests.
pub(super) fn compare(report: &mut ClusterReport, hosts: &[HostData], candidates: &[String]) {
    let failed = digest_failures(report, hosts);
    for name in candidates {
        if failed.contains(name) {
            report.unverified.push(name.clone());
            continue;
        }
        let copies = copies_of(hosts, name);
        if copies.len() < 2 {
            continue;
        }
        report.compared += 1;
        let first = (&copies[0].raw_size, &copies[0].blake3);
        if copies.iter().any(|c| (&c.raw_size, &c.blake3) != first) {
            report.divergent.push(Divergent {
                name: name.clone(),
                copies,
            });
        }
    }
    report.unverified.sort();
}

/// The names some server could not digest, each failure noted in `report`.
fn digest_failures(report: &mut ClusterReport, hosts: &[HostData]) -> BTreeSet<String> {
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for h in hosts {
        if let Some(d) = &h.details {
            for de in &d.digest_errors {
                report.notes.push(format!(
                    "{} could not digest {} file(s) ({}…): {}",
                    h.host,
                    de.names.len(),
                    de.names[0],
                    de.error
                ));
                failed.extend(de.names.iter().cloned());
            }
        }
    }
    failed
}

/// Every digested copy of `name`.
fn copies_of(hosts: &[HostData], name: &str) -> Vec<CopyInfo> {
    let mut copies = Vec::new();
    for h in hosts {
        let (Some(entry), Some(d)) = (h.has(name), &h.details) else {
            continue;
        };
        // Removed since the listing (retention): nothing to compare.
        let Some(Some(dig)) = d.digests.get(name) else {
            continue;
        };
        copies.push(CopyInfo {
            server: h.host.clone(),
            stored_size: entry.size,
            raw_size: Some(dig.raw_size),
            blake3: Some(dig.blake3.clone()),
        });
    }
    copies
}

/// The files of `hosts[me]` that another readable server lacks.
pub(super) fn one_sided<'a>(hosts: &'a [HostData], me: usize, readable: &[usize]) -> Vec<&'a str> {
    hosts[me]
        .files()
        .iter()
        .filter(|e| {
            readable
                .iter()
                .filter(|&&j| j != me)
                .any(|&j| hosts[j].has(&e.name).is_none())
        })
        .map(|e| e.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::wire::{DirStatus, RawDigest};
    use crate::status::collect::requests::{Details, DigestError};

    const MB: u64 = 1 << 20;

    #[test]
    fn only_different_digests_make_a_divergent_file() {
        let mut a = HostData::listed(
            "arch1",
            &[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003",
            ],
        );
        let mut b = HostData::listed(
            "arch2",
            &[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003",
            ],
        );
        let dig = |size: u64, h: &str| {
            Some(RawDigest {
                raw_size: size,
                blake3: h.into(),
            })
        };
        let details = |d: Vec<(&str, Option<RawDigest>)>, errors: Vec<DigestError>| Details {
            digests: d.into_iter().map(|(n, g)| (n.to_string(), g)).collect(),
            digest_errors: errors,
            status: Ok(DirStatus::default()),
        };
        a.details = Some(details(
            vec![
                ("000000010000000000000001", dig(MB, "aa")),
                ("000000010000000000000002", dig(MB, "bb")),
            ],
            vec![],
        ));
        b.details = Some(details(
            vec![
                // Same content, another compression: not divergent.
                ("000000010000000000000001", dig(MB, "aa")),
                ("000000010000000000000002", dig(MB, "cc")),
            ],
            vec![DigestError {
                names: vec!["000000010000000000000003".into()],
                error: "does not decode".into(),
            }],
        ));
        let mut r = ClusterReport::default();
        let candidates: Vec<String> = (1..=3)
            .map(|i| format!("00000001000000000000000{i}"))
            .collect();
        compare(&mut r, &[a, b], &candidates);
        assert_eq!(r.compared, 2);
        assert_eq!(r.divergent.len(), 1);
        assert_eq!(r.divergent[0].name, "000000010000000000000002");
        assert_eq!(r.unverified, ["000000010000000000000003"]);
        assert!(
            r.notes[0].contains("arch2 could not digest 1 file(s)"),
            "{:?}",
            r.notes
        );
    }
}
