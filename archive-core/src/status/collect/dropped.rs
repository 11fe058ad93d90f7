//! The primary's drop log against the servers: which segments dropped by
//! the push queue limit are still missing everywhere and still needed.

use std::path::Path;

use crate::common::wal::WalName;
use crate::status::local;
use crate::status::{ClusterReport, DroppedReport};

use super::requests::HostData;

/// Reads `cluster`'s drop log under `state_dir` (when there is one) into
/// `report.dropped`; call once the servers' chains are in `report`.
pub(super) fn add_dropped(
    report: &mut ClusterReport,
    state_dir: &Path,
    cluster: &str,
    hosts: &[HostData],
    readable: &[usize],
    seg_size: u64,
) {
    let (log, mut segments) = match local::read_dropped(state_dir, cluster) {
        Ok(Some(found)) => (found.path, found.segments),
        Ok(None) => return,
        Err(e) => {
            report.notes.push(format!("drop log: {e}"));
            return;
        }
    };
    // A dropped segment older than every chain's start is needed by no kept
    // backup; without any chain, every one may be.
    let oldest_needed = report
        .servers
        .iter()
        .filter_map(|s| s.chain.as_ref())
        .filter_map(|c| WalName::parse(&c.from).ok())
        .map(|w| w.segment_number(seg_size))
        .min();
    for d in &mut segments {
        let stored = readable.iter().any(|&i| hosts[i].has(&d.name).is_some());
        let needed = match (oldest_needed, WalName::parse(&d.name)) {
            (Some(min), Ok(w)) => w.segment_number(seg_size) >= min,
            _ => true,
        };
        d.unresolved = !stored && needed;
    }
    report.dropped = Some(DroppedReport {
        log,
        total: segments.len() as u64,
        unresolved: segments.iter().filter(|d| d.unresolved).count() as u64,
        segments,
    });
}
