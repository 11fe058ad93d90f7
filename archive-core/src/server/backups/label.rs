//! What a backup's `backup_label` says ([`Label`]), and PostgreSQL's LSN
//! notation.

use crate::common::wal::WalName;

/// What a backup_label says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// START WAL LOCATION's segment file.
    pub start_wal: String,
    /// START WAL LOCATION as an LSN.
    pub start_lsn: u64,
    /// START TIME as written.
    pub start_time: String,
    /// START TIMELINE.
    pub timeline: u32,
}

/// Parses a backup_label's text.
pub fn parse_label(text: &str) -> std::result::Result<Label, String> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .ok_or_else(|| format!("no {key} line"))
    };
    let start = field("START WAL LOCATION:")?;
    // "0/2000028 (file 000000010000000000000002)"
    let (lsn, file) = start
        .split_once(" (file ")
        .ok_or_else(|| format!("malformed START WAL LOCATION {start:?}"))?;
    let start_wal = file.trim_end_matches(')').to_string();
    WalName::parse(&start_wal).map_err(|e| e.to_string())?;
    let start_lsn = parse_lsn(lsn).ok_or_else(|| format!("malformed LSN {lsn:?}"))?;
    let timeline = field("START TIMELINE:")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| {
            WalName::parse(&start_wal)
                .map(|w| w.timeline())
                .unwrap_or(1)
        });
    Ok(Label {
        start_wal,
        start_lsn,
        start_time: field("START TIME:").unwrap_or_default(),
        timeline,
    })
}

/// Parses "X/Y" as PostgreSQL prints an LSN.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) const LABEL_TEXT: &str =
        "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2026-11-25 01:02:03 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n";

    #[test]
    fn label_is_parsed() {
        let l = parse_label(LABEL_TEXT).unwrap();
        assert_eq!(l.start_wal, "000000010000000000000002");
        assert_eq!(l.start_lsn, 0x2000028);
        assert_eq!(l.timeline, 1);
        assert_eq!(l.start_time, "2026-11-25 01:02:03 UTC");
        assert!(parse_label("LABEL: x\n").is_err());
    }
}
