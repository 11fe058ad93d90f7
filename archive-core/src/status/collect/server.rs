//! One server's part of a cluster's report: its files, its backups, what
//! it owes and refused, and the WAL chain a restore from its oldest backup
//! needs.

use std::collections::HashMap;

use crate::common::error::Result;
use crate::common::wal::{self, WalKind, WalName};
use crate::net::wire::{DirStatus, ListEntry};
use crate::status::chain::{self, Timelines};
use crate::status::{BackupInfo, ChainReport, ServerReport};

use super::requests::{HostData, Listing};
use super::Target;

/// The report of server `h` (without its chain and one-sided files);
/// `now` is this machine's clock.
pub(super) fn server_report(t: &Target, h: &HostData, now: i64, seg_size: u64) -> ServerReport {
    let mut s = ServerReport {
        host: h.host.clone(),
        error: h.error.clone(),
        queue: t.queue_servers.get(&h.host).cloned(),
        ..Default::default()
    };
    let Some(l) = &h.listing else {
        return s;
    };
    s.server_name = l.server_name.clone();
    add_files(&mut s, l, now, seg_size);
    let status = h.details.as_ref().map(|d| &d.status);
    add_backups(&mut s, l, status, now);
    match status {
        Some(Ok(st)) => add_dir_status(&mut s, st, now),
        Some(Err(e)) => {
            s.error = Some(format!(
                "host {}: owed, parked and rejected files of {} unknown: {e}; if archive-remote-cmd there is older than archive-status, upgrade it",
                h.host, t.wals_dir
            ));
        }
        None => {}
    }
    s
}

/// Counts, bytes, and the oldest and newest segment of the listing.
fn add_files(s: &mut ServerReport, l: &Listing, now: i64, seg_size: u64) {
    s.files = l.files.len() as u64;
    s.stored_bytes = l.files.iter().map(|e| e.size).sum();
    let mut segs: Vec<(WalName, &ListEntry)> = l
        .files
        .iter()
        .filter_map(|e| WalName::parse(&e.name).ok().map(|w| (w, e)))
        .filter(|(w, _)| w.kind() == WalKind::Segment)
        .collect();
    s.segments = segs.len() as u64;
    segs.sort_by(|a, b| a.0.cmp(&b.0));
    s.oldest_segment = segs
        .iter()
        .min_by(|a, b| wal::cmp_by_position(&a.0, &b.0, seg_size))
        .map(|(w, _)| w.to_string());
    if let Some((w, e)) = segs.last() {
        s.newest_segment = Some(w.to_string());
        s.newest_mtime = Some(e.mtime);
        s.newest_age_secs = Some(now - e.mtime);
    }
}

/// The backups of the listing, aged by their SUCCESS marker (from
/// `DirStatus`), else by the START TIME of their label.
fn add_backups(s: &mut ServerReport, l: &Listing, status: Option<&Result<DirStatus>>, now: i64) {
    let finished: HashMap<u32, i64> = match status {
        Some(Ok(st)) => st
            .backups
            .iter()
            .filter_map(|b| Some((b.index, b.finished?)))
            .collect(),
        _ => HashMap::new(),
    };
    for b in l.backups.iter().flatten() {
        let fin = finished.get(&b.index).copied();
        let age = fin
            .or_else(|| {
                b.start_time
                    .as_deref()
                    .and_then(crate::client::restore_backup::parse_time)
                    .map(|t| t.timestamp())
            })
            .map(|t| now - t);
        s.backups.push(BackupInfo {
            index: b.index,
            complete: b.complete,
            start_wal: b.start_wal.clone(),
            start_lsn: b.start_lsn,
            start_time: b.start_time.clone(),
            finished: fin,
            age_secs: age,
            incremental: b.incremental,
            parent: b.parent,
        });
    }
    s.oldest_backup = s
        .backups
        .iter()
        .find(|b| b.complete && b.start_wal.is_some() && b.start_lsn.is_some())
        .map(|b| b.index);
    s.newest_backup_age_secs = s
        .backups
        .iter()
        .rev()
        .find(|b| b.complete)
        .and_then(|b| b.age_secs);
}

/// Owed, parked and rejected files, and the clock skew.
fn add_dir_status(s: &mut ServerReport, st: &DirStatus, now: i64) {
    s.owed = Some(st.owed.iter().map(|p| p.count).sum());
    s.owed_to = st.owed.clone();
    s.conflicts = Some(st.conflicts.iter().map(|p| p.count).sum());
    s.conflicts_with = st.conflicts.clone();
    s.rejected = Some(st.rejected);
    s.rejected_names = st.rejected_names.clone();
    s.clock_skew_secs = Some(st.now - now);
    s.verify = st.verify.as_deref().cloned();
    s.verify_age_secs = st.verify.as_ref().map(|v| st.now - v.finished);
}

/// What every server's chain shares: the servers, the timelines and the
/// chain's end.
pub(super) struct ChainInputs<'a> {
    pub(super) hosts: &'a [HostData],
    /// Indexes of the hosts that could be listed.
    pub(super) readable: &'a [usize],
    pub(super) timelines: &'a std::result::Result<Timelines, String>,
    pub(super) seg_size: u64,
    /// The cluster's newest segment; `None`: no chain to walk.
    pub(super) newest: Option<&'a WalName>,
}

/// The chain of server `hosts[me]` (whose report is `s`): from its oldest
/// backup's START WAL, or without a backup from the oldest segment on the
/// newest timeline's path, to the cluster's newest segment. `None` when
/// there is no newest segment, or no backup and no segment on that path.
pub(super) fn chain_report(
    s: &ServerReport,
    me: usize,
    c: &ChainInputs<'_>,
) -> Option<ChainReport> {
    let newest = c.newest?;
    let backup = s
        .oldest_backup
        .and_then(|n| s.backups.iter().find(|b| b.index == n));
    let mut report = ChainReport {
        from_backup: backup.map(|b| b.index),
        to: newest.to_string(),
        ..Default::default()
    };
    let tl = match c.timelines {
        Ok(tl) => tl,
        Err(e) => {
            report.from = backup
                .and_then(|b| b.start_wal.clone())
                .unwrap_or_else(|| s.oldest_segment.clone().unwrap_or_default());
            report.error = Some(e.clone());
            return Some(report);
        }
    };
    let start = match backup {
        Some(b) => {
            report.from = b.start_wal.as_deref().unwrap_or_default().to_string();
            match backup_start(b, tl, c.seg_size, newest) {
                Ok(segno) => segno,
                Err(e) => {
                    report.error = Some(e);
                    return Some(report);
                }
            }
        }
        None => {
            let first = first_segment_on_path(tl, c)?;
            report.from = first.to_string();
            first.segment_number(c.seg_size)
        }
    };
    let seg_size = c.seg_size;
    let end = newest.segment_number(seg_size);
    let anywhere = |n: &str| c.readable.iter().any(|&i| c.hosts[i].has(n).is_some());
    let here = |n: &str| c.hosts[me].has(n).is_some();
    match chain::walk(tl, seg_size, start, end.max(start), here, anywhere) {
        Ok(w) => {
            report.expected = w.expected;
            report.missing_here = w.missing_here;
            report.gap_segments = w.gap_segments;
            report.gaps = w.gaps;
        }
        Err(e) => report.error = Some(e),
    }
    Some(report)
}

/// The segment number backup `b` starts in, or why its chain cannot be
/// followed (START WAL not a segment, or off the newest timeline's path).
fn backup_start(
    b: &BackupInfo,
    tl: &Timelines,
    seg_size: u64,
    newest: &WalName,
) -> std::result::Result<u64, String> {
    let name = b.start_wal.as_deref().unwrap_or_default();
    let w = match WalName::parse(name) {
        Ok(w) if w.check_segment_size(seg_size).is_ok() => w,
        _ => {
            return Err(format!(
                "START WAL {name} of data.master.{} is not a segment name for {} MiB segments",
                b.index,
                seg_size >> 20
            ))
        }
    };
    let lsn = b.start_lsn.unwrap_or_else(|| w.start_lsn(seg_size));
    if !tl.leads_to_newest(w.timeline(), lsn) {
        let why = match tl.end_of(w.timeline()) {
            Some(end) => format!(
                "timeline {} was left at {} for timeline {}",
                w.timeline(),
                chain::format_lsn(end),
                tl.newest()
            ),
            None => format!(
                "timeline {} is not an ancestor of timeline {}",
                w.timeline(),
                tl.newest()
            ),
        };
        return Err(format!(
            "data.master.{} starts at {} on timeline {}, which does not lead to the newest segment {}: {why}",
            b.index,
            chain::format_lsn(lsn),
            w.timeline(),
            newest
        ));
    }
    Ok(w.segment_number(seg_size))
}

/// No backup: the oldest segment on any server that lies on the newest
/// timeline's path.
fn first_segment_on_path(tl: &Timelines, c: &ChainInputs<'_>) -> Option<WalName> {
    let seg_size = c.seg_size;
    c.readable
        .iter()
        .flat_map(|&i| c.hosts[i].files().iter())
        .filter_map(|e| WalName::parse(&e.name).ok())
        .filter(|w| w.kind() == WalKind::Segment && w.check_segment_size(seg_size).is_ok())
        .filter(|w| tl.tli_for_segment(w.segment_number(seg_size), seg_size) == w.timeline())
        .min_by_key(|w| w.segment_number(seg_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn seg(tli: u32, segno: u64) -> String {
        WalName::from_segment_number(tli, segno, MB).to_string()
    }

    fn server_with_backup(start: Option<(String, u64)>) -> ServerReport {
        let mut s = ServerReport::default();
        if let Some((wal, lsn)) = start {
            s.backups.push(BackupInfo {
                index: 0,
                complete: true,
                start_wal: Some(wal),
                start_lsn: Some(lsn),
                ..Default::default()
            });
            s.oldest_backup = Some(0);
        }
        s
    }

    fn inputs<'a>(
        hosts: &'a [HostData],
        readable: &'a [usize],
        timelines: &'a std::result::Result<Timelines, String>,
        newest: &'a WalName,
    ) -> ChainInputs<'a> {
        ChainInputs {
            hosts,
            readable,
            timelines,
            seg_size: MB,
            newest: Some(newest),
        }
    }

    #[test]
    fn chain_without_a_backup_starts_at_the_oldest_segment_on_the_path() {
        // Timeline 2 begins in segment 4. Timeline 1's segments 5 and 6
        // (the old primary went on) are off the path; so is the lone
        // segment 2 of timeline 2, from before it began.
        let h = chain::parse_history("1\t0/400000\tx\n").unwrap();
        let tl = Ok(Timelines::from_history(2, &h).unwrap());
        let a = HostData::listed(
            "arch1",
            &[
                &seg(2, 2),
                &seg(1, 3),
                &seg(2, 4),
                &seg(1, 5),
                &seg(1, 6),
                &seg(2, 6),
            ],
        );
        let b = HostData::listed("arch2", &[&seg(1, 3), &seg(2, 4)]);
        let hosts = [a, b];
        let end = WalName::parse(&seg(2, 6)).unwrap();
        let s = server_with_backup(None);
        let ch = chain_report(&s, 1, &inputs(&hosts, &[0, 1], &tl, &end)).unwrap();
        assert_eq!(ch.from, seg(1, 3));
        assert_eq!(ch.from_backup, None);
        assert_eq!(ch.expected, 4);
        assert_eq!(ch.gap_segments, 1, "{ch:?}");
        assert_eq!(ch.gaps[0].from, seg(2, 5));
        assert_eq!(
            ch.missing_here, 1,
            "segment 6 of timeline 2 is on arch1 only"
        );
    }

    #[test]
    fn chain_from_a_backup_checks_its_timeline_and_its_start_segment() {
        let h = chain::parse_history("1\t0/400000\tx\n").unwrap();
        let tl = Ok(Timelines::from_history(2, &h).unwrap());
        let a = HostData::listed("arch1", &[&seg(1, 2), &seg(1, 3), &seg(2, 4)]);
        let hosts = [a];
        let end = WalName::parse(&seg(2, 4)).unwrap();
        let c = inputs(&hosts, &[0], &tl, &end);
        // Before the switch: fine.
        let s = server_with_backup(Some((seg(1, 2), 2 * MB + 0x28)));
        let ch = chain_report(&s, 0, &c).unwrap();
        assert_eq!(
            (ch.expected, ch.gap_segments, ch.error.clone()),
            (3, 0, None)
        );
        // On timeline 1 after the switch: off the path.
        let s = server_with_backup(Some((seg(1, 4), 4 * MB + 0x28)));
        let ch = chain_report(&s, 0, &c).unwrap();
        assert!(ch
            .error
            .unwrap()
            .contains("timeline 1 was left at 0/400000"));
        // On a timeline that is no ancestor at all.
        let s = server_with_backup(Some((seg(3, 3), 3 * MB + 0x28)));
        let ch = chain_report(&s, 0, &c).unwrap();
        assert!(ch.error.unwrap().contains("not an ancestor"));
        // A backup whose START WAL is newer than every segment: the START
        // WAL itself is the gap.
        let s = server_with_backup(Some((seg(2, 7), 7 * MB + 0x28)));
        let ch = chain_report(&s, 0, &c).unwrap();
        assert_eq!((ch.expected, ch.gap_segments), (1, 1));
        assert_eq!(ch.gaps[0].from, seg(2, 7));
        // A missing history file: the chain cannot be followed.
        let broken: std::result::Result<Timelines, String> = Err("no history".into());
        let ch = chain_report(&s, 0, &inputs(&hosts, &[0], &broken, &end)).unwrap();
        assert_eq!(ch.error.as_deref(), Some("no history"));
    }
}
