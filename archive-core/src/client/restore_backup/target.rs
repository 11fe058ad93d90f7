//! Recovery targets and timelines, and the choice of the backup to restore
//! for them.
//!
//! The rule: PostgreSQL cannot stop recovery before the end of the backup
//! it started from ("requested recovery stop point is before consistent
//! recovery point"), so the chosen backup must have *ended* at or before
//! the target; the newest such backup replays the least WAL. Where the
//! archive cannot tell (an `xid:` target: nothing records which
//! transactions a backup holds), the oldest backup is the only safe
//! choice.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::common::error::{Error, Result};
use crate::common::page_header::format_lsn;
use crate::net::wire::BackupEntry;
use crate::server::backups::parse_lsn;

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Replay everything archived.
    Latest,
    /// recovery_target = 'immediate': stop as soon as the backup is consistent.
    Immediate,
    /// recovery_target_time (as PostgreSQL parses it) and its UTC instant.
    Time(String, DateTime<Utc>),
    /// recovery_target_lsn.
    Lsn(u64),
    /// recovery_target_name (a restore point).
    Name(String),
    /// recovery_target_xid (a 32-bit xid or an epoch-qualified 64-bit one).
    Xid(u64),
}

impl Target {
    /// Parses `latest`, `immediate`, `time:<timestamp>`, `lsn:<X/Y>`,
    /// `name:<restore point>` or `xid:<xid>`.
    pub fn parse(s: &str) -> Result<Target> {
        let bad = |why: &str| {
            Err(Error::Usage(format!(
                "target {s:?}: {why}; use latest, immediate, time:'2026-11-25 10:00:00+00', \
                 lsn:0/3000000, name:before_upgrade or xid:7412"
            )))
        };
        match s {
            "latest" => return Ok(Target::Latest),
            "immediate" => return Ok(Target::Immediate),
            _ => {}
        }
        let Some((kind, value)) = s.split_once(':') else {
            return bad("unknown form");
        };
        match kind {
            "time" => match parse_time(value) {
                Some(t) => Ok(Target::Time(value.to_string(), t)),
                None => bad("cannot read the time (give a zone, e.g. +00)"),
            },
            "lsn" => match parse_lsn(value) {
                Some(l) => Ok(Target::Lsn(l)),
                None => bad("cannot read the LSN"),
            },
            "name" if !value.is_empty() && !value.contains('\'') => Ok(Target::Name(value.into())),
            // Xids 0 to 2 are special (invalid, bootstrap, frozen): never committed.
            "xid" => match value.parse::<u64>() {
                Ok(x) if x >= 3 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(Target::Xid(x)),
                _ => bad("the xid is a decimal transaction id, 3 or more"),
            },
            _ => bad("unknown form"),
        }
    }

    /// The postgresql.auto.conf lines that set it.
    pub(super) fn settings(&self) -> Vec<String> {
        match self {
            Target::Latest => vec![],
            Target::Immediate => vec!["recovery_target = 'immediate'".into()],
            Target::Time(text, _) => vec![format!("recovery_target_time = '{text}'")],
            Target::Lsn(l) => vec![format!("recovery_target_lsn = '{}'", format_lsn(*l))],
            Target::Name(n) => vec![format!("recovery_target_name = '{n}'")],
            Target::Xid(x) => vec![format!("recovery_target_xid = '{x}'")],
        }
    }
}

/// Which timeline recovery follows (recovery_target_timeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeline {
    /// The newest timeline in the archive (PostgreSQL's default).
    Latest,
    /// The backup's own timeline.
    Current,
    /// This timeline: the backup must be on it or on one of its ancestors
    /// before it branched off.
    Id(u32),
}

impl Timeline {
    /// Parses `latest`, `current` or a timeline number.
    pub fn parse(s: &str) -> Result<Timeline> {
        match s {
            "latest" => Ok(Timeline::Latest),
            "current" => Ok(Timeline::Current),
            _ => match s.parse::<u32>() {
                Ok(n) if n >= 1 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(Timeline::Id(n)),
                _ => Err(Error::Usage(format!(
                    "--target-timeline {s:?}: use latest, current or a timeline number (1, 2, …)"
                ))),
            },
        }
    }

    /// The recovery_target_timeline line.
    pub(super) fn setting(&self) -> String {
        let v = match self {
            Timeline::Latest => "latest".to_string(),
            Timeline::Current => "current".to_string(),
            Timeline::Id(n) => n.to_string(),
        };
        format!("recovery_target_timeline = '{v}'")
    }
}

/// A timeline's ancestry, from its history file: each ancestor and the LSN
/// at which the next timeline branched off it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The timeline the history file is of.
    pub timeline: u32,
    /// (ancestor timeline, LSN where it ended), oldest first.
    pub ancestors: Vec<(u32, u64)>,
}

impl History {
    /// Parses `<timeline>.history` ("parentTLI <tab> switchpoint <tab>
    /// reason" lines, `#` comments), as PostgreSQL's readTimeLineHistory.
    pub fn parse(timeline: u32, text: &str) -> std::result::Result<History, String> {
        let mut ancestors = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let tli = fields.next().and_then(|t| t.parse::<u32>().ok());
            let lsn = fields.next().and_then(parse_lsn);
            match (tli, lsn) {
                (Some(t), Some(l)) if t < timeline => ancestors.push((t, l)),
                _ => return Err(format!("unreadable line {line:?}")),
            }
        }
        Ok(History {
            timeline,
            ancestors,
        })
    }

    /// True when recovery along this timeline can start from `b`: it is on
    /// the timeline itself, or on an ancestor and ended before that
    /// ancestor branched off.
    pub fn contains(&self, b: &BackupEntry) -> bool {
        let Some(tli) = backup_timeline(b) else {
            return false;
        };
        if tli == self.timeline {
            return true;
        }
        let end = b.stop_lsn.or(b.start_lsn);
        self.ancestors
            .iter()
            .any(|(t, switch)| *t == tli && end.is_some_and(|e| e <= *switch))
    }
}

/// The timeline a backup started on (from its START WAL's name).
pub fn backup_timeline(b: &BackupEntry) -> Option<u32> {
    let wal = b.start_wal.as_deref()?;
    u32::from_str_radix(wal.get(..8)?, 16).ok()
}

/// Reads a timestamp with a zone ("2026-11-25 10:00:00+00", RFC 3339, or
/// as backup labels write it: "... UTC", "... +03"). A zone abbreviation
/// such as MSK is not read: they are ambiguous (IST, CST).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f %#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let utc = s.strip_suffix(" UTC").or_else(|| s.strip_suffix(" GMT"))?;
    NaiveDateTime::parse_from_str(utc, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

/// Choose the backup for `target` among `backups` (oldest first); with a
/// `history`, only backups that timeline can start from.
pub fn choose(
    backups: &[BackupEntry],
    target: &Target,
    wanted: Option<u32>,
    history: Option<&History>,
) -> Result<BackupEntry> {
    let complete: Vec<&BackupEntry> = backups.iter().filter(|b| b.complete).collect();
    let on_timeline = |b: &BackupEntry| history.is_none_or(|h| h.contains(b));
    if let Some(n) = wanted {
        let b = complete.iter().find(|b| b.index == n).ok_or_else(|| {
            Error::NotFound(format!(
                "backup data.master.{n} does not exist or is not complete"
            ))
        })?;
        if !on_timeline(b) {
            return Err(off_timeline(&[b], history));
        }
        return Ok((*b).clone());
    }
    if complete.is_empty() {
        return Err(Error::NotFound("no complete backup to restore".into()));
    }
    let candidates: Vec<&BackupEntry> = complete
        .iter()
        .copied()
        .filter(|b| on_timeline(b))
        .collect();
    if candidates.is_empty() {
        return Err(off_timeline(&complete, history));
    }
    // No record tells which transactions a backup holds: only the oldest
    // one certainly started before the transaction committed.
    if matches!(target, Target::Xid(_)) {
        return Ok(candidates[0].clone());
    }
    // The backup's end is compared, not its start (see the module docs).
    // Servers of older versions tell only the start.
    let fits = |b: &BackupEntry| match target {
        Target::Latest | Target::Immediate | Target::Name(_) | Target::Xid(_) => true,
        Target::Lsn(l) => b.stop_lsn.or(b.start_lsn).is_some_and(|s| s <= *l),
        Target::Time(_, t) => consistent_by(b).is_some_and(|c| c <= t.timestamp()),
    };
    candidates
        .iter()
        .rev()
        .find(|b| fits(b))
        .map(|b| (*b).clone())
        .ok_or_else(|| {
            let unknown: Vec<String> = candidates
                .iter()
                .filter(|b| matches!(target, Target::Time(..)) && consistent_by(b).is_none())
                .map(|b| format!("data.master.{}", b.index))
                .collect();
            if unknown.is_empty() {
                Error::Refused(format!(
                    "the target is before the oldest backup ends: {}; nothing to restore from",
                    describe(candidates[0])
                ))
            } else {
                Error::Refused(format!(
                    "when {} can be restored from is not known (its server runs an older version, \
                     and a START TIME zone given by abbreviation cannot be read); pick a backup \
                     with --backup N, or give an lsn: target",
                    unknown.join(", ")
                ))
            }
        })
}

fn off_timeline(backups: &[&BackupEntry], history: Option<&History>) -> Error {
    let tli = history.map(|h| h.timeline).unwrap_or_default();
    let list: Vec<String> = backups
        .iter()
        .map(|b| {
            format!(
                "data.master.{} on timeline {}",
                b.index,
                backup_timeline(b).map_or("?".into(), |t| t.to_string())
            )
        })
        .collect();
    Error::Refused(format!(
        "timeline {tli} cannot be reached from {}: a backup must be on that timeline, or on \
         one of its ancestors and end before it branched off (see {tli:08X}.history); choose \
         another --target-timeline",
        list.join(", ")
    ))
}

/// Unix seconds at or after which `b` can be restored: when the server
/// recorded it, else its START TIME (older servers), if readable.
fn consistent_by(b: &BackupEntry) -> Option<i64> {
    b.consistent_by.or_else(|| {
        b.start_time
            .as_deref()
            .and_then(parse_time)
            .map(|t| t.timestamp())
    })
}

/// "data.master.N (START WAL …, started …, consistent by … UTC at LSN …)",
/// for messages.
pub fn describe(b: &BackupEntry) -> String {
    let mut s = format!(
        "data.master.{} (START WAL {}, started {}",
        b.index,
        b.start_wal.as_deref().unwrap_or("?"),
        b.start_time.as_deref().unwrap_or("?")
    );
    if let Some(t) = b.consistent_by.and_then(|c| DateTime::from_timestamp(c, 0)) {
        s.push_str(&format!(
            ", consistent by {}",
            t.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    if let Some(l) = b.stop_lsn {
        s.push_str(&format!(" at {}", format_lsn(l)));
    }
    s.push(')');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup entry as an older server sends it: no end recorded.
    fn b(index: u32, complete: bool, lsn: u64, time: &str) -> BackupEntry {
        BackupEntry {
            index,
            complete,
            start_wal: Some(format!("0000000100000000000000{:02X}", lsn >> 24)),
            start_lsn: Some(lsn),
            start_time: Some(time.into()),
            consistent_by: None,
            incremental: false,
            parent: None,
            stop_lsn: None,
            files: vec![],
        }
    }

    fn ended(mut e: BackupEntry, at: &str, stop_lsn: u64) -> BackupEntry {
        e.consistent_by = Some(parse_time(at).unwrap().timestamp());
        e.stop_lsn = Some(stop_lsn);
        e
    }

    fn on_timeline(mut e: BackupEntry, tli: u32) -> BackupEntry {
        let wal = e.start_wal.take().unwrap();
        e.start_wal = Some(format!("{tli:08X}{}", &wal[8..]));
        e
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("latest").unwrap(), Target::Latest);
        assert_eq!(Target::parse("immediate").unwrap(), Target::Immediate);
        assert_eq!(
            Target::parse("lsn:0/3000000").unwrap(),
            Target::Lsn(0x3000000)
        );
        assert!(matches!(
            Target::parse("time:2026-11-25 10:00:00+00").unwrap(),
            Target::Time(..)
        ));
        assert!(matches!(
            Target::parse("time:2026-11-25T10:00:00Z").unwrap(),
            Target::Time(..)
        ));
        assert_eq!(Target::parse("xid:7412").unwrap(), Target::Xid(7412));
        assert_eq!(
            Target::parse("xid:4294967301").unwrap(),
            Target::Xid(4_294_967_301)
        );
        for bad in ["xid:", "xid:2", "xid:+5", "xid:0x10", "xid:1'"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert!(Target::parse("time:yesterday").is_err());
        assert!(Target::parse("name:a'b").is_err());
        assert!(Target::parse("sometime").is_err());
        assert_eq!(
            Target::Xid(7412).settings(),
            vec!["recovery_target_xid = '7412'"]
        );
        assert_eq!(
            Target::Immediate.settings(),
            vec!["recovery_target = 'immediate'"]
        );
    }

    #[test]
    fn timelines_parse() {
        assert_eq!(Timeline::parse("latest").unwrap(), Timeline::Latest);
        assert_eq!(Timeline::parse("current").unwrap(), Timeline::Current);
        assert_eq!(Timeline::parse("3").unwrap(), Timeline::Id(3));
        for bad in ["0", "-1", "+2", "0x2", "two", ""] {
            assert!(Timeline::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Timeline::Id(3).setting(), "recovery_target_timeline = '3'");
    }

    #[test]
    fn without_a_recorded_end_the_newest_backup_starting_before_the_target_is_chosen() {
        let list = [
            b(0, true, 0x2000028, "2026-11-25 01:00:00 UTC"),
            b(1, false, 0x5000028, "2026-11-25 02:00:00 UTC"),
            b(2, true, 0x8000028, "2026-11-25 03:00:00 UTC"),
        ];
        let pick = |t: &Target| choose(&list, t, None, None).map(|b| b.index);
        let t = Target::parse("time:2026-11-25 02:30:00+00").unwrap();
        assert_eq!(pick(&t).unwrap(), 0, "incomplete skipped");
        let t = Target::parse("time:2026-11-25 03:30:00+00").unwrap();
        assert_eq!(pick(&t).unwrap(), 2);
        assert_eq!(pick(&Target::Latest).unwrap(), 2);
        assert_eq!(pick(&Target::Immediate).unwrap(), 2);
        assert_eq!(pick(&Target::Lsn(0x7000000)).unwrap(), 0);
        let early = Target::parse("time:2026-11-25 00:30:00+00").unwrap();
        let e = pick(&early).unwrap_err();
        assert!(
            e.to_string().contains("before the oldest backup ends"),
            "{e}"
        );
        assert!(
            choose(&list, &Target::Latest, Some(1), None).is_err(),
            "incomplete"
        );
    }

    #[test]
    fn an_xid_target_takes_the_oldest_backup_unless_one_is_named() {
        let list = [
            b(0, false, 0x1000028, "2026-11-25 00:00:00 UTC"),
            b(1, true, 0x2000028, "2026-11-25 01:00:00 UTC"),
            b(2, true, 0x8000028, "2026-11-25 03:00:00 UTC"),
        ];
        let x = Target::Xid(7412);
        assert_eq!(choose(&list, &x, None, None).unwrap().index, 1);
        assert_eq!(choose(&list, &x, Some(2), None).unwrap().index, 2);
    }

    #[test]
    fn a_target_inside_a_backup_takes_the_one_before() {
        // Labels in a zone given by abbreviation only: the recorded end
        // decides, the START TIME is not needed.
        let list = [
            ended(
                b(0, true, 0x2000028, "2026-11-25 04:00:00 MSK"),
                "2026-11-25 01:10:00+00",
                0x2000100,
            ),
            ended(
                b(1, true, 0x5000028, "2026-11-25 06:00:00 MSK"),
                "2026-11-25 03:10:00+00",
                0x6000100,
            ),
        ];
        let t = |s: &str| Target::parse(&format!("time:{s}")).unwrap();
        let pick = |target: &Target| choose(&list, target, None, None).map(|b| b.index);
        // Started (03:00 UTC) but not yet ended (03:10 UTC).
        assert_eq!(pick(&t("2026-11-25 03:05:00+00")).unwrap(), 0);
        assert_eq!(pick(&t("2026-11-25 03:10:00+00")).unwrap(), 1);
        assert_eq!(pick(&t("2026-11-25 06:30:00+03")).unwrap(), 1);
        assert_eq!(pick(&Target::Lsn(0x5800000)).unwrap(), 0);
        assert_eq!(pick(&Target::Lsn(0x6000100)).unwrap(), 1);
        // From an older server, with an unreadable START TIME zone: said so.
        let old = [b(0, true, 0x2000028, "2026-11-25 04:00:00 MSK")];
        let e = choose(&old, &t("2026-11-25 06:00:00+00"), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("when data.master.0 can be restored from is not known"),
            "{e}"
        );
        let e = pick(&t("2026-11-25 01:05:00+00")).unwrap_err().to_string();
        assert!(
            e.contains("before the oldest backup ends")
                && e.contains("consistent by 2026-11-25 01:10:00 UTC at 0/2000100"),
            "{e}"
        );
    }

    #[test]
    fn a_timeline_takes_only_backups_on_its_history() {
        // Timeline 2 branched off 1 at 0/5000000; timeline 3 off 2 at 0/9000000.
        let h3 = History::parse(
            3,
            "1\t0/5000000\tno recovery target specified\n\n2\t0/9000000\tbefore 2000-01-01\n",
        )
        .unwrap();
        assert_eq!(h3.ancestors, vec![(1, 0x5000000), (2, 0x9000000)]);
        let h2 = History::parse(2, "# comment\n1\t0/5000000\tx\n").unwrap();
        let list = [
            ended(
                b(0, true, 0x2000028, "x"),
                "2026-11-25 01:00:00+00",
                0x2000100,
            ),
            // On timeline 1 after the branch: only timeline 1 has it.
            on_timeline(
                ended(
                    b(1, true, 0x6000028, "x"),
                    "2026-11-25 02:00:00+00",
                    0x6000100,
                ),
                1,
            ),
            on_timeline(
                ended(
                    b(2, true, 0x7000028, "x"),
                    "2026-11-25 03:00:00+00",
                    0x7000100,
                ),
                2,
            ),
        ];
        let pick = |h: Option<&History>| choose(&list, &Target::Latest, None, h).map(|b| b.index);
        assert_eq!(pick(None).unwrap(), 2);
        assert_eq!(pick(Some(&h3)).unwrap(), 2);
        assert_eq!(pick(Some(&h2)).unwrap(), 2);
        let h1 = History {
            timeline: 1,
            ancestors: vec![],
        };
        assert_eq!(pick(Some(&h1)).unwrap(), 1);
        // Timeline 4 branched off 1 before any backup ended.
        let h4 = History::parse(4, "1\t0/1000000\tx\n").unwrap();
        let e = pick(Some(&h4)).unwrap_err().to_string();
        assert!(
            e.contains("timeline 4 cannot be reached from data.master.0 on timeline 1"),
            "{e}"
        );
        let e = choose(&list, &Target::Latest, Some(1), Some(&h2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.master.1 on timeline 1"), "{e}");
        assert!(History::parse(2, "2\t0/1\tx\n").is_err(), "not an ancestor");
        assert!(History::parse(2, "one\t0/1\tx\n").is_err());
    }

    #[test]
    fn label_times_with_numeric_zones_parse_abbreviations_do_not() {
        let at = |s: &str| parse_time(s).map(|t| t.timestamp());
        assert_eq!(at("1970-01-01 01:00:00 UTC"), Some(3600));
        assert_eq!(at("1970-01-01 03:00:00 +03"), Some(0));
        assert_eq!(at("1970-01-01 00:00:00 -0130"), Some(5400));
        assert_eq!(at("1970-01-01 05:30:00+05:30"), Some(0));
        assert_eq!(at("2026-03-01 03:00:00 MSK"), None);
        assert_eq!(at("garbage"), None);
    }
}
