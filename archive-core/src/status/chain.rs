//! The WAL chain a restore needs, across timelines, and its gaps.
//!
//! As WAL-G's `wal-verify timeline/integrity` does: the history file of the
//! newest timeline (`TTTTTTTT.history`, lines `parentTLI switchpoint reason`)
//! lists every ancestor timeline and the LSN where it was left. A restore
//! from a backup to the newest WAL reads, for each segment number, the file
//! of the newest timeline that had begun by that segment (PostgreSQL's
//! `XLogFileReadAnyTLI`: a timeline begins in the segment holding its
//! switch point). The expected chain is that sequence of names from the
//! backup's START WAL to the newest segment; an expected name missing on
//! every server is a gap, missing on some servers only it is one-sided.

use serde::{Deserialize, Serialize};

use crate::common::wal::{check_segment_size, WalKind, WalName};
use crate::server::backups::parse_lsn;

/// One line of a timeline history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The ancestor timeline.
    pub parent_tli: u32,
    /// LSN at which it was left (the child begins here).
    pub switchpoint: u64,
    /// Why (free text).
    pub reason: String,
}

/// Parses a timeline history file (comments and blank lines skipped), as
/// PostgreSQL's `readTimeLineHistory` does; timelines must increase.
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>, String> {
    let mut out: Vec<HistoryEntry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, char::is_whitespace);
        let tli = fields.next().unwrap_or_default();
        let tli: u32 = tli
            .parse()
            .map_err(|_| format!("line {}: {tli:?} is not a timeline ID", i + 1))?;
        let lsn = fields.next().unwrap_or_default().trim();
        let switchpoint =
            parse_lsn(lsn).ok_or_else(|| format!("line {}: {lsn:?} is not an LSN", i + 1))?;
        let reason = fields.next().unwrap_or_default().trim().to_string();
        if let Some(prev) = out.last() {
            if tli <= prev.parent_tli {
                return Err(format!(
                    "line {}: timeline {tli} does not follow timeline {}",
                    i + 1,
                    prev.parent_tli
                ));
            }
            if switchpoint < prev.switchpoint {
                return Err(format!("line {}: switch point goes backwards", i + 1));
            }
        }
        out.push(HistoryEntry {
            parent_tli: tli,
            switchpoint,
            reason,
        });
    }
    Ok(out)
}

/// Formats an LSN as PostgreSQL prints it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The ancestry of the newest timeline: each timeline with the LSN where it
/// begins, oldest first; the last one is the newest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timelines {
    spans: Vec<(u32, u64)>,
}

impl Timelines {
    /// A timeline without ancestors (or whose history is unknown).
    pub fn single(tli: u32) -> Timelines {
        Timelines {
            spans: vec![(tli, 0)],
        }
    }

    /// Timeline `newest` with the entries of its history file.
    pub fn from_history(newest: u32, entries: &[HistoryEntry]) -> Result<Timelines, String> {
        let mut spans = Vec::with_capacity(entries.len() + 1);
        let mut begin = 0;
        for e in entries {
            if e.parent_tli >= newest {
                return Err(format!(
                    "the history of timeline {newest} names timeline {} as an ancestor",
                    e.parent_tli
                ));
            }
            spans.push((e.parent_tli, begin));
            begin = e.switchpoint;
        }
        spans.push((newest, begin));
        Ok(Timelines { spans })
    }

    /// The newest timeline.
    pub fn newest(&self) -> u32 {
        self.spans.last().expect("never empty").0
    }

    /// True when `tli` is the newest timeline or one of its ancestors.
    pub fn contains(&self, tli: u32) -> bool {
        self.spans.iter().any(|&(t, _)| t == tli)
    }

    /// LSN where `tli` was left for its child; `None` for the newest
    /// timeline or one not in the ancestry.
    pub fn end_of(&self, tli: u32) -> Option<u64> {
        let i = self.spans.iter().position(|&(t, _)| t == tli)?;
        self.spans.get(i + 1).map(|&(_, begin)| begin)
    }

    /// True when a point `lsn` of timeline `tli` leads to the newest
    /// timeline (it lies before the point where `tli` was left).
    pub fn leads_to_newest(&self, tli: u32, lsn: u64) -> bool {
        self.contains(tli)
            && match self.end_of(tli) {
                Some(end) => lsn < end,
                None => true,
            }
    }

    /// The timeline whose file of segment `segno` a restore reads: the
    /// newest one that had begun by that segment.
    pub fn tli_for_segment(&self, segno: u64, seg_size: u64) -> u32 {
        self.spans
            .iter()
            .rev()
            .find(|&&(_, begin)| begin / seg_size <= segno)
            .map(|&(t, _)| t)
            .unwrap_or(self.spans[0].0)
    }
}

/// A run of consecutive expected segments missing on every server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapRange {
    /// First missing name.
    pub from: String,
    /// Last missing name.
    pub to: String,
    /// Segments in the run.
    pub count: u64,
}

impl GapRange {
    /// The segment's name, or "FROM..TO (COUNT)" for a longer run.
    pub(crate) fn describe(&self) -> String {
        if self.count == 1 {
            self.from.clone()
        } else {
            format!("{}..{} ({})", self.from, self.to, self.count)
        }
    }
}

/// What walking the expected chain found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainWalk {
    /// Expected segments (both ends included).
    pub expected: u64,
    /// Missing on every server.
    pub gap_segments: u64,
    /// The gaps as runs, at most [`MAX_GAP_RANGES`].
    pub gaps: Vec<GapRange>,
    /// Missing on the server walked for, present elsewhere.
    pub missing_here: u64,
}

/// Gap runs kept in a report (the count is always complete).
pub const MAX_GAP_RANGES: usize = 100;
/// Longest chain walked (100 TB of 16 MiB segments); more is a bad input.
pub const MAX_CHAIN: u64 = 1 << 23;

/// Walks segment numbers `from..=to`, naming each on its timeline, and
/// sorts each name into present, missing here (`here` false, `anywhere`
/// true) or a gap (`anywhere` false).
pub fn walk(
    timelines: &Timelines,
    seg_size: u64,
    from: u64,
    to: u64,
    here: impl Fn(&str) -> bool,
    anywhere: impl Fn(&str) -> bool,
) -> Result<ChainWalk, String> {
    check_segment_size(seg_size).map_err(|e| e.to_string())?;
    let mut w = ChainWalk::default();
    if to < from {
        return Ok(w);
    }
    if to - from >= MAX_CHAIN {
        return Err(format!(
            "the chain would be {} segments long; the newest segment or the backup label is wrong",
            to - from + 1
        ));
    }
    let mut open: Option<GapRange> = None;
    for segno in from..=to {
        let name = WalName::from_segment_number(
            timelines.tli_for_segment(segno, seg_size),
            segno,
            seg_size,
        );
        let name = name.as_str();
        w.expected += 1;
        if !anywhere(name) {
            w.gap_segments += 1;
            match &mut open {
                Some(g) => {
                    g.to = name.to_string();
                    g.count += 1;
                }
                None => {
                    open = Some(GapRange {
                        from: name.to_string(),
                        to: name.to_string(),
                        count: 1,
                    })
                }
            }
            continue;
        }
        if let Some(g) = open.take() {
            if w.gaps.len() < MAX_GAP_RANGES {
                w.gaps.push(g);
            }
        }
        if !here(name) {
            w.missing_here += 1;
        }
    }
    if let Some(g) = open.take() {
        if w.gaps.len() < MAX_GAP_RANGES {
            w.gaps.push(g);
        }
    }
    Ok(w)
}

/// The end of the chain: the newest timeline among `names` and its highest
/// segment. `None` when there is no segment.
pub fn newest_segment<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<WalName> {
    names
        .into_iter()
        .filter_map(|n| WalName::parse(n).ok())
        .filter(|w| w.kind() == WalKind::Segment)
        .max()
}

/// Infers the segment size from backup labels: the one size (a power of
/// two from 1 MiB to 1 GiB) for which every START WAL LOCATION lies in the
/// segment its file name says. `None` when no label decides it.
pub fn segment_size_from_labels<'a>(
    labels: impl IntoIterator<Item = (&'a str, u64)>,
) -> Option<u64> {
    let labels: Vec<(WalName, u64)> = labels
        .into_iter()
        .filter_map(|(n, lsn)| WalName::parse(n).ok().map(|w| (w, lsn)))
        .collect();
    if labels.is_empty() {
        return None;
    }
    let fits: Vec<u64> = (20..=30)
        .map(|k| 1u64 << k)
        .filter(|&size| {
            labels.iter().all(|(w, lsn)| {
                w.check_segment_size(size).is_ok() && w.segment_number(size) == lsn / size
            })
        })
        .collect();
    match fits.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const MB16: u64 = 16 << 20;

    fn name(tli: u32, segno: u64) -> String {
        WalName::from_segment_number(tli, segno, MB16).to_string()
    }

    #[test]
    fn history_files_parse_as_postgres_writes_them() {
        let text = "1\t0/3000000\tno recovery target specified\n\n\
                    # a comment\n2\t0/5000A28\tat restore point \"x\"\n";
        let h = parse_history(text).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].parent_tli, 1);
        assert_eq!(h[0].switchpoint, 0x300_0000);
        assert_eq!(h[0].reason, "no recovery target specified");
        assert_eq!(h[1].switchpoint, 0x500_0A28);
        assert_eq!(format_lsn(h[1].switchpoint), "0/5000A28");
        assert!(parse_history("x\t0/1\n").is_err());
        assert!(parse_history("1\tnope\n").is_err());
        assert!(
            parse_history("2\t0/5\n1\t0/6\n").is_err(),
            "timelines increase"
        );
        assert!(
            parse_history("1\t0/6\n2\t0/5\n").is_err(),
            "switch points too"
        );
        assert_eq!(parse_history("").unwrap(), []);
    }

    #[test]
    fn each_segment_comes_from_the_newest_timeline_begun_by_then() {
        // TLI 1 left at 0/3000000 (a boundary), TLI 2 left at 0/5000A28
        // (inside segment 5): segment 5 is read from TLI 3.
        let h = parse_history("1\t0/3000000\tx\n2\t0/5000A28\ty\n").unwrap();
        let tl = Timelines::from_history(3, &h).unwrap();
        let tlis: Vec<u32> = (0..8).map(|s| tl.tli_for_segment(s, MB16)).collect();
        assert_eq!(tlis, [1, 1, 1, 2, 2, 3, 3, 3]);
        assert_eq!(tl.newest(), 3);
        assert!(tl.contains(2) && !tl.contains(4));
        assert_eq!(tl.end_of(1), Some(0x300_0000));
        assert_eq!(tl.end_of(3), None);
        assert!(tl.leads_to_newest(1, 0x200_0028));
        assert!(
            !tl.leads_to_newest(1, 0x400_0028),
            "TLI 1 after it was left"
        );
        assert!(tl.leads_to_newest(2, 0x500_0000));
        assert!(tl.leads_to_newest(3, 0x900_0000));
        assert!(!tl.leads_to_newest(4, 0));
        assert!(Timelines::from_history(2, &parse_history("3\t0/1\tx\n").unwrap()).is_err());
    }

    fn set(names: &[String]) -> HashSet<String> {
        names.iter().cloned().collect()
    }

    #[test]
    fn walk_follows_timelines_and_finds_gaps_and_one_sided_files() {
        let h = parse_history("1\t0/3000000\tx\n2\t0/5000A28\ty\n").unwrap();
        let tl = Timelines::from_history(3, &h).unwrap();
        // Server A: the whole chain except segment 6 (on B only) and
        // segments 3 and 7 (on neither); the old timelines' copies of
        // segments past their switch points do not count.
        let a = set(&[
            name(1, 1),
            name(1, 2),
            name(2, 4),
            name(3, 5),
            name(2, 5), // TLI 2's own copy of the switch segment
            name(1, 3), // TLI 1 went on past its end: not on the chain
            name(3, 8),
        ]);
        let b = set(&[name(3, 6)]);
        let w = walk(
            &tl,
            MB16,
            1,
            8,
            |n| a.contains(n),
            |n| a.contains(n) || b.contains(n),
        )
        .unwrap();
        assert_eq!(w.expected, 8);
        assert_eq!(w.gap_segments, 2);
        assert_eq!(
            w.gaps,
            [
                GapRange {
                    from: name(2, 3),
                    to: name(2, 3),
                    count: 1
                },
                GapRange {
                    from: name(3, 7),
                    to: name(3, 7),
                    count: 1
                }
            ]
        );
        assert_eq!(w.missing_here, 1, "segment 6 is on B only");
    }

    #[test]
    fn consecutive_missing_segments_form_one_run_across_a_switch() {
        let h = parse_history("1\t0/3000000\tx\n").unwrap();
        let tl = Timelines::from_history(2, &h).unwrap();
        let present = set(&[name(1, 1), name(2, 5)]);
        let w = walk(
            &tl,
            MB16,
            1,
            5,
            |n| present.contains(n),
            |n| present.contains(n),
        )
        .unwrap();
        assert_eq!(
            w.gaps,
            [GapRange {
                from: name(1, 2),
                to: name(2, 4),
                count: 3
            }]
        );
        assert_eq!(w.missing_here, 0);
        let empty = walk(&tl, MB16, 5, 4, |_| true, |_| true).unwrap();
        assert_eq!(empty.expected, 0);
        assert!(walk(&tl, MB16, 0, MAX_CHAIN, |_| true, |_| true).is_err());
        assert!(walk(&tl, 12345, 0, 1, |_| true, |_| true).is_err());
    }

    #[test]
    fn segments_cross_log_boundaries_with_small_segments() {
        let mb1 = 1 << 20;
        let tl = Timelines::single(1);
        // 4096 one-MiB segments per log: segment 4095 then 4096 (log 1).
        let last = WalName::from_segment_number(1, 4095, mb1).to_string();
        let next = WalName::from_segment_number(1, 4096, mb1).to_string();
        assert_eq!(last, "000000010000000000000FFF");
        assert_eq!(next, "000000010000000100000000");
        let w = walk(&tl, mb1, 4095, 4096, |n| n == last, |n| n == last).unwrap();
        assert_eq!(w.gaps[0].from, next);
    }

    #[test]
    fn newest_segment_prefers_the_newest_timeline() {
        let names = [
            "000000010000000000000009",
            "000000020000000000000005",
            "00000003.history",
            "000000020000000000000004.00000028.backup",
            "000000020000000000000006.partial",
        ];
        assert_eq!(
            newest_segment(names).unwrap().as_str(),
            "000000020000000000000005"
        );
        assert!(newest_segment(["00000002.history"]).is_none());
    }

    #[test]
    fn segment_size_is_inferred_from_labels_when_they_decide_it() {
        // 0/2000028 in segment 2: 16 MiB.
        assert_eq!(
            segment_size_from_labels([("000000010000000000000002", 0x200_0028)]),
            Some(MB16)
        );
        // 0/200028 in segment 2: 1 MiB.
        assert_eq!(
            segment_size_from_labels([("000000010000000000000002", 0x20_0028)]),
            Some(1 << 20)
        );
        // Segment 0 fits every size.
        assert_eq!(
            segment_size_from_labels([("000000010000000000000000", 0x28)]),
            None
        );
        // A label that fits no size.
        assert_eq!(
            segment_size_from_labels([("000000010000000000000002", 0x28)]),
            None
        );
        // Log 1 with 16 MiB segments: 1/3000028 is segment 256 + 3.
        assert_eq!(
            segment_size_from_labels([("000000010000000100000003", 0x1_0300_0028)]),
            Some(MB16)
        );
    }
}
