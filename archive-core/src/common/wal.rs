//! PostgreSQL WAL archive file names: validate, classify, order, step.
//!
//! Every name that reaches the archive passes through here before it is used
//! as a path, so a name is refused unless it is exactly what PostgreSQL's
//! archiver writes (see `xlog_internal.h`: `XLogFileName`, `TLHistoryFileName`,
//! `BackupHistoryFileName` and the `.partial` suffix).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// PostgreSQL's default WAL segment size (`--wal-segsize` at initdb).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// Longest name PostgreSQL gives an archived file (`MAXFNAMELEN` is 64).
const MAX_NAME_LEN: usize = 64;

/// Smallest and largest segment sizes initdb accepts.
const MIN_SEGMENT_SIZE: u64 = 1024 * 1024;
const MAX_SEGMENT_SIZE: u64 = 1024 * 1024 * 1024;

/// The LSN space per "log" (the middle 8 hex digits of a segment name).
const LOG_SPAN: u64 = 0x1_0000_0000;

/// With the smallest segment size a log holds 4096 segments, so no valid
/// segment name's `seg` half can reach this, whatever the segment size.
const MAX_SEGS_PER_LOG: u64 = LOG_SPAN / MIN_SEGMENT_SIZE;

/// Longest part of a refused name echoed into an error message.
const MAX_ECHO: usize = 80;

/// Why a file name or segment size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalNameError {
    /// The name is not one PostgreSQL could have handed to archive_command.
    #[error("file name {name} is not a PostgreSQL WAL file name: {reason}")]
    InvalidName {
        /// The name, quoted and escaped for logs (see [`quote_for_log`]).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The segment size is not one initdb can create.
    #[error("invalid WAL segment size {0}: must be a power of two from 1 MiB to 1 GiB")]
    SegmentSize(u64),
}

impl WalNameError {
    fn invalid(name: &str, reason: impl Into<String>) -> Self {
        WalNameError::InvalidName {
            name: quote_for_log(name),
            reason: reason.into(),
        }
    }
}

impl From<WalNameError> for crate::Error {
    fn from(e: WalNameError) -> Self {
        crate::Error::Refused(e.to_string())
    }
}

/// Quotes an untrusted string for a log line: printable ASCII is kept, every
/// other character (control characters, escape sequences, non-ASCII) is
/// escaped, and very long input is cut, so a hostile name cannot forge or
/// flood log lines.
pub fn quote_for_log(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_ECHO) + 2);
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        if i == MAX_ECHO {
            out.push_str("...");
            break;
        }
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.extend(c.escape_default()),
        }
    }
    out.push('"');
    out
}

/// Checks that `name` is safe to use as a file name in an archive directory:
/// 1 to 64 ASCII letters, digits and dots, not starting with a dot.
///
/// This is the shape of every file PostgreSQL archives, so it rules out
/// paths, `.`/`..`, hidden and temp files, and shell metacharacters, before
/// the name is ever joined to a directory.
pub fn validate_file_name(name: &str) -> Result<(), WalNameError> {
    if name.is_empty() {
        return Err(WalNameError::invalid(name, "the name is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(WalNameError::invalid(
            name,
            format!(
                "it is {} bytes long, at most {MAX_NAME_LEN} are allowed",
                name.len()
            ),
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
        return Err(WalNameError::invalid(
            name,
            "only letters, digits and dots are allowed",
        ));
    }
    if name.starts_with('.') {
        return Err(WalNameError::invalid(name, "it must not start with a dot"));
    }
    Ok(())
}

/// Checks a WAL segment size: a power of two from 1 MiB to 1 GiB, the sizes
/// `initdb --wal-segsize` can create. The arithmetic in this module assumes a
/// size that passed this check.
pub fn check_segment_size(seg_size: u64) -> Result<(), WalNameError> {
    if seg_size.is_power_of_two() && (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&seg_size) {
        Ok(())
    } else {
        Err(WalNameError::SegmentSize(seg_size))
    }
}

/// Segments per "log" (the `XLogSegmentsPerXLogId` of PostgreSQL).
fn segments_per_log(seg_size: u64) -> u64 {
    debug_assert!(
        check_segment_size(seg_size).is_ok(),
        "invalid segment size {seg_size}"
    );
    LOG_SPAN / seg_size
}

/// What an archived WAL file is, which decides how it is checked and kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalKind {
    /// A complete WAL segment: `TTTTTTTTXXXXXXXXYYYYYYYY`.
    Segment,
    /// A timeline history file: `TTTTTTTT.history`.
    History,
    /// A backup history file (label): `<segment>.XXXXXXXX.backup`.
    Backup,
    /// The last, incomplete segment of a timeline that a promotion ended:
    /// `<segment>.partial`.
    Partial,
}

impl WalKind {
    /// Rank used for ordering names of the same position; it matches the
    /// byte order of the names (`.history` < segment < `.backup` < `.partial`).
    fn rank(self) -> u8 {
        match self {
            WalKind::History => 0,
            WalKind::Segment => 1,
            WalKind::Backup => 2,
            WalKind::Partial => 3,
        }
    }
}

/// A parsed, valid PostgreSQL WAL archive file name.
///
/// Construct with [`WalName::parse`] (or `str::parse`) or
/// [`WalName::from_segment_number`]; a `WalName` always holds a name PostgreSQL
/// could have written, so its text is safe to use as a file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WalName {
    name: String,
    kind: WalKind,
    tli: u32,
    log: u32,
    seg: u32,
}

fn is_upper_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

/// Parses 8 uppercase hex digits (the caller checked the characters).
fn hex8(s: &str) -> u32 {
    u32::from_str_radix(s, 16).expect("8 hex digits always fit in u32")
}

/// The shape of a name, before range checks.
fn classify(name: &str) -> Option<WalKind> {
    let is_seg = |s: &str| s.len() == 24 && is_upper_hex(s);
    if is_seg(name) {
        return Some(WalKind::Segment);
    }
    if let Some(tli) = name.strip_suffix(".history") {
        return (tli.len() == 8 && is_upper_hex(tli)).then_some(WalKind::History);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return is_seg(seg).then_some(WalKind::Partial);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        let (seg, offset) = rest.split_once('.')?;
        return (is_seg(seg) && offset.len() == 8 && is_upper_hex(offset))
            .then_some(WalKind::Backup);
    }
    None
}

impl WalName {
    /// Parses an archive file name: a segment, a timeline history file, a
    /// backup label or a partial segment, exactly as PostgreSQL spells them.
    ///
    /// Lowercase hex is refused: PostgreSQL never writes it, and accepting it
    /// would let two names denote the same segment.
    pub fn parse(name: &str) -> Result<WalName, WalNameError> {
        validate_file_name(name)?;
        let Some(kind) = classify(name) else {
            let reason = if classify(&name.to_ascii_uppercase()).is_some() {
                "hexadecimal digits must be uppercase, as PostgreSQL writes them"
            } else {
                "expected a segment (24 hexadecimal digits), a timeline history file \
                 (TTTTTTTT.history), a backup label (<segment>.XXXXXXXX.backup) or a \
                 partial segment (<segment>.partial)"
            };
            return Err(WalNameError::invalid(name, reason));
        };
        let tli = hex8(&name[0..8]);
        let (log, seg) = match kind {
            WalKind::History => (0, 0),
            _ => (hex8(&name[8..16]), hex8(&name[16..24])),
        };
        if tli == 0 {
            return Err(WalNameError::invalid(
                name,
                "timeline 0 does not exist (timelines start at 1)",
            ));
        }
        if u64::from(seg) >= MAX_SEGS_PER_LOG {
            return Err(WalNameError::invalid(
                name,
                format!(
                    "segment part {seg:08X} is out of range for any segment size \
                     (at most {:08X})",
                    MAX_SEGS_PER_LOG - 1
                ),
            ));
        }
        Ok(WalName {
            name: name.to_string(),
            kind,
            tli,
            log,
            seg,
        })
    }

    /// Checks that this name can exist with segments of `seg_size` bytes:
    /// larger segments mean fewer per log, so e.g. `...000000000000FF` is
    /// valid with 16 MiB segments but not with 1 GiB ones.
    pub fn check_segment_size(&self, seg_size: u64) -> Result<(), WalNameError> {
        check_segment_size(seg_size)?;
        let per_log = segments_per_log(seg_size);
        if u64::from(self.seg) >= per_log {
            return Err(WalNameError::invalid(
                &self.name,
                format!(
                    "segment part {:08X} is out of range for {} MiB segments (at most {:08X})",
                    self.seg,
                    seg_size / MIN_SEGMENT_SIZE,
                    per_log - 1
                ),
            ));
        }
        Ok(())
    }

    /// The kind of file this name denotes.
    pub fn kind(&self) -> WalKind {
        self.kind
    }

    /// The name as PostgreSQL wrote it.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The timeline ID (first 8 hex digits).
    pub fn timeline(&self) -> u32 {
        self.tli
    }

    /// The "log" half of the segment position (0 for a history file).
    pub fn log(&self) -> u32 {
        self.log
    }

    /// The "seg" half of the segment position (0 for a history file).
    pub fn seg(&self) -> u32 {
        self.seg
    }

    /// The absolute segment number (`XLogFromFileName`); 0 for a history
    /// file. `seg_size` must pass [`check_segment_size`].
    pub fn segment_number(&self, seg_size: u64) -> u64 {
        u64::from(self.log) * segments_per_log(seg_size) + u64::from(self.seg)
    }

    /// The LSN at which this name's segment starts, i.e. the page address
    /// its first page must carry. `seg_size` must pass [`check_segment_size`].
    pub fn start_lsn(&self, seg_size: u64) -> u64 {
        self.segment_number(seg_size).wrapping_mul(seg_size)
    }

    /// The segment name for timeline `tli` and absolute segment number
    /// `segno` (`XLogFileName`). `tli` must not be 0, `seg_size` must pass
    /// [`check_segment_size`] and `segno` must lie within the 64-bit LSN
    /// space.
    pub fn from_segment_number(tli: u32, segno: u64, seg_size: u64) -> WalName {
        debug_assert!(tli != 0, "timeline 0 does not exist");
        let per_log = segments_per_log(seg_size);
        debug_assert!(
            segno / per_log <= u64::from(u32::MAX),
            "segment number {segno} beyond the LSN space"
        );
        let log = (segno / per_log) as u32;
        let seg = (segno % per_log) as u32;
        WalName {
            name: format!("{tli:08X}{log:08X}{seg:08X}"),
            kind: WalKind::Segment,
            tli,
            log,
            seg,
        }
    }

    /// The segment that follows this file's segment on the same timeline
    /// (for a history file, which has no segment, the one after segment 0);
    /// `None` after the last segment of the 64-bit LSN space.
    pub fn next_segment(&self, seg_size: u64) -> Option<WalName> {
        let next = self.segment_number(seg_size) + 1;
        (next / segments_per_log(seg_size) <= u64::from(u32::MAX))
            .then(|| WalName::from_segment_number(self.tli, next, seg_size))
    }

    /// The 24-character segment part of a segment, backup label or partial
    /// segment name; `None` for a history file.
    pub fn segment_name(&self) -> Option<&str> {
        match self.kind {
            WalKind::History => None,
            _ => Some(&self.name[..24]),
        }
    }

    /// True for files that start with a WAL page header (segments and
    /// partial segments), the ones whose content can be checked against the
    /// name.
    pub fn has_page_header(&self) -> bool {
        matches!(self.kind, WalKind::Segment | WalKind::Partial)
    }

    /// The most raw bytes a file of this name can hold: the largest
    /// segment for segments and partial segments, `other_max` (a
    /// configured limit) for history files and backup labels.
    pub fn max_raw_size(&self, other_max: u64) -> u64 {
        if self.has_page_header() {
            MAX_SEGMENT_SIZE
        } else {
            other_max
        }
    }
}

/// Orders as PostgreSQL's archive lists them: by timeline, then position,
/// then kind (history, segment, backup label, partial). This is also the
/// byte order of the names, so a sorted directory listing agrees with it.
impl Ord for WalName {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.tli, self.log, self.seg, self.kind.rank())
            .cmp(&(other.tli, other.log, other.seg, other.kind.rank()))
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for WalName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Orders by position in the WAL stream first, across timelines, then by
/// timeline (then kind and name, for a total order).
///
/// This is how pg_archivecleanup decides what is older: it ignores the
/// timeline, because after a promotion segments of the old timeline up to
/// the switch point are still needed by a backup taken before it.
/// `seg_size` must pass [`check_segment_size`].
pub fn cmp_by_position(a: &WalName, b: &WalName, seg_size: u64) -> Ordering {
    a.segment_number(seg_size)
        .cmp(&b.segment_number(seg_size))
        .then_with(|| a.tli.cmp(&b.tli))
        .then_with(|| a.kind.rank().cmp(&b.kind.rank()))
        .then_with(|| a.name.cmp(&b.name))
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl FromStr for WalName {
    type Err = WalNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WalName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    fn p(s: &str) -> WalName {
        WalName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn validate_accepts_postgres_names() {
        for n in [
            "000000010000000000000001",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003.partial",
            "a",
            &"A".repeat(64),
        ] {
            assert_eq!(validate_file_name(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn validate_refuses_paths_and_odd_names() {
        for n in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            ".hidden",
            ".000000010000000000000001.tmp",
            "a;b",
            "$(x)",
            "`x`",
            "a b",
            "a\nb",
            "a\0b",
            "é",
            "x_y",
            "x-y",
            &"A".repeat(65),
        ] {
            assert!(validate_file_name(n).is_err(), "{n:?} accepted");
        }
    }

    #[test]
    fn error_message_names_the_name_and_why() {
        let e = validate_file_name("../x").unwrap_err().to_string();
        assert_eq!(
            e,
            r#"file name "../x" is not a PostgreSQL WAL file name: only letters, digits and dots are allowed"#
        );
        let e = validate_file_name(".x").unwrap_err().to_string();
        assert!(e.contains("must not start with a dot"), "{e}");
        let e = validate_file_name(&"A".repeat(65)).unwrap_err().to_string();
        assert!(e.contains("65 bytes"), "{e}");
        assert!(validate_file_name("")
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }

    #[test]
    fn error_message_escapes_control_characters_and_truncates() {
        let e = validate_file_name("a\n\x1b[31mb\"\u{202e}")
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#""a\n\u{1b}[31mb\"\u{202e}""#), "{e}");
        assert!(!e.contains('\n') && !e.contains('\x1b'), "{e}");
        let e = validate_file_name(&"/".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200, "{e}");
        assert!(e.contains("...\""), "{e}");
    }

    #[test]
    fn parse_each_kind() {
        let s = p("0000000A000000FF00000E01");
        assert_eq!(s.kind(), WalKind::Segment);
        assert_eq!((s.timeline(), s.log(), s.seg()), (10, 0xFF, 0xE01));
        assert_eq!(s.segment_name(), Some("0000000A000000FF00000E01"));
        assert!(s.has_page_header());

        let h = p("0000000B.history");
        assert_eq!(h.kind(), WalKind::History);
        assert_eq!((h.timeline(), h.log(), h.seg()), (11, 0, 0));
        assert_eq!(h.segment_name(), None);
        assert!(!h.has_page_header());

        let b = p("000000010000000200000003.00000028.backup");
        assert_eq!(b.kind(), WalKind::Backup);
        assert_eq!((b.timeline(), b.log(), b.seg()), (1, 2, 3));
        assert_eq!(b.segment_name(), Some("000000010000000200000003"));
        assert!(!b.has_page_header());

        let pa = p("000000010000000200000003.partial");
        assert_eq!(pa.kind(), WalKind::Partial);
        assert_eq!(pa.segment_name(), Some("000000010000000200000003"));
        assert!(pa.has_page_header());
    }

    #[test]
    fn parse_refuses_everything_else() {
        for n in [
            "",
            "../000000010000000000000001",
            "000000010000000000000001/",
            "00000001000000000000000",          // 23
            "0000000100000000000000010",        // 25
            "00000001000000000000000a",         // lowercase
            "0000000a.history",                 // lowercase
            "000000010000000000000001.partiaL", // suffix case
            "00000001.History",                 // suffix case
            "0000001.history",                  // 7 hex
            "000000001.history",                // 9 hex
            "0000000G0000000000000001",         // not hex
            "000000010000000000000001.0000028.backup",
            "000000010000000000000001.000000280.backup",
            "000000010000000000000001.00000028",
            "000000010000000000000001.backup",
            "000000010000000000000001.history",
            "00000001.partial",
            "000000010000000000000001.partial.partial",
            "000000010000000000000001.ready",
            "000000010000000000000001.tmp",
            "000000000000000000000001", // timeline 0
            "00000000.history",         // timeline 0
            "000000010000000000001000", // seg beyond any segment size
            "a;b",
            "$(x)",
            &"0".repeat(65),
        ] {
            assert!(WalName::parse(n).is_err(), "{n:?} accepted");
        }
    }

    #[test]
    fn lowercase_hex_gets_a_specific_reason() {
        let e = WalName::parse("00000001000000000000000a")
            .unwrap_err()
            .to_string();
        assert!(e.contains("uppercase"), "{e}");
        let e = WalName::parse("hello").unwrap_err().to_string();
        assert!(e.contains("expected a segment"), "{e}");
    }

    #[test]
    fn round_trips() {
        for n in [
            "000000010000000000000001",
            "FFFFFFFFFFFFFFFF00000FFF",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003.partial",
        ] {
            let w: WalName = n.parse().unwrap();
            assert_eq!(w.as_str(), n);
            assert_eq!(w.to_string(), n);
            assert_eq!(p(&w.to_string()), w);
        }
        for &size in &[MIB, 16 * MIB, 64 * MIB, GIB] {
            for segno in [0, 1, 255, 256, 4095, 4096, 1 << 20, 123_456_789] {
                let w = WalName::from_segment_number(7, segno, size);
                assert_eq!(w.segment_number(size), segno);
                assert_eq!(w.start_lsn(size), segno * size);
                assert_eq!(p(w.as_str()), w);
                assert_eq!(w.check_segment_size(size), Ok(()));
            }
        }
    }

    #[test]
    fn segment_number_and_lsn() {
        let w = p("000000010000000300000004");
        assert_eq!(w.segment_number(16 * MIB), 3 * 256 + 4);
        assert_eq!(w.start_lsn(16 * MIB), 0x3_0400_0000);
        assert_eq!(w.segment_number(MIB), 3 * 4096 + 4);
        assert_eq!(w.segment_number(GIB), 3 * 4 + 4);
        assert_eq!(DEFAULT_SEGMENT_SIZE, 16 * MIB);
    }

    #[test]
    fn next_segment_crosses_log_boundary_16mib() {
        let w = p("0000000100000000000000FE");
        let n = w.next_segment(16 * MIB).unwrap();
        assert_eq!(n.as_str(), "0000000100000000000000FF");
        let n = n.next_segment(16 * MIB).unwrap();
        assert_eq!(n.as_str(), "000000010000000100000000");
        assert_eq!(n.kind(), WalKind::Segment);
    }

    #[test]
    fn next_segment_crosses_log_boundary_1mib() {
        let n = p("0000000200000005000000FF").next_segment(MIB).unwrap();
        assert_eq!(n.as_str(), "000000020000000500000100");
        let n = p("000000020000000500000FFF").next_segment(MIB).unwrap();
        assert_eq!(n.as_str(), "000000020000000600000000");
    }

    #[test]
    fn there_is_no_segment_after_the_last_one() {
        for (name, size) in [
            ("00000001FFFFFFFF000000FF", 16 * MIB),
            ("00000001FFFFFFFF00000FFF", MIB),
            ("00000001FFFFFFFF00000003", GIB),
        ] {
            assert_eq!(p(name).next_segment(size), None, "{name}");
        }
    }

    #[test]
    fn next_segment_crosses_log_boundary_1gib() {
        let n = p("000000030000000000000002").next_segment(GIB).unwrap();
        assert_eq!(n.as_str(), "000000030000000000000003");
        let n = n.next_segment(GIB).unwrap();
        assert_eq!(n.as_str(), "000000030000000100000000");
    }

    #[test]
    fn next_segment_of_backup_and_partial() {
        let b = p("000000010000000000000002.00000028.backup");
        assert_eq!(
            b.next_segment(16 * MIB).unwrap().as_str(),
            "000000010000000000000003"
        );
        let pa = p("0000000100000000000000FF.partial");
        assert_eq!(
            pa.next_segment(16 * MIB).unwrap().as_str(),
            "000000010000000100000000"
        );
    }

    #[test]
    fn segment_size_checks() {
        for s in [MIB, 2 * MIB, 16 * MIB, 256 * MIB, GIB] {
            assert_eq!(check_segment_size(s), Ok(()));
        }
        for s in [0, 1, MIB / 2, 3 * MIB, 16 * MIB + 1, 2 * GIB, u64::MAX] {
            assert_eq!(check_segment_size(s), Err(WalNameError::SegmentSize(s)));
        }
        let w = p("0000000100000000000000FF");
        assert!(w.check_segment_size(16 * MIB).is_ok());
        assert!(w.check_segment_size(MIB).is_ok());
        let e = w.check_segment_size(GIB).unwrap_err().to_string();
        assert!(e.contains("out of range for 1024 MiB segments"), "{e}");
        assert!(p("000000010000000000000100")
            .check_segment_size(16 * MIB)
            .is_err());
        assert!(p("000000010000000000000FFF")
            .check_segment_size(MIB)
            .is_ok());
        assert!(w.check_segment_size(3 * MIB).is_err());
    }

    #[test]
    fn ordering_matches_archive_listing() {
        let mut names: Vec<WalName> = [
            "000000020000000000000001",
            "000000010000000000000002.partial",
            "00000002.history",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000002.00000010.backup",
            "000000010000000100000000",
            "0000000100000000000000FF",
            "000000010000000000000001",
        ]
        .iter()
        .map(|s| p(s))
        .collect();
        names.sort();
        let got: Vec<&str> = names.iter().map(WalName::as_str).collect();
        assert_eq!(
            got,
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000010.backup",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000002.partial",
                "0000000100000000000000FF",
                "000000010000000100000000",
                "00000002.history",
                "000000020000000000000001",
            ]
        );
        // The order is the byte order of the names.
        let mut by_text = got.clone();
        by_text.sort();
        assert_eq!(got, by_text);
    }

    #[test]
    fn cmp_by_position_ignores_timeline_first() {
        let old_tl_late = p("000000010000000000000005");
        let new_tl_early = p("000000020000000000000003");
        assert_eq!(old_tl_late.cmp(&new_tl_early), Ordering::Less);
        assert_eq!(
            cmp_by_position(&old_tl_late, &new_tl_early, 16 * MIB),
            Ordering::Greater
        );
        let a = p("000000010000000000000003");
        assert_eq!(cmp_by_position(&a, &new_tl_early, 16 * MIB), Ordering::Less);
        assert_eq!(cmp_by_position(&a, &a, 16 * MIB), Ordering::Equal);
        // With 1 MiB segments the last of log 0 precedes the first of log 1.
        let x = p("000000030000000000000FFF");
        let y = p("000000010000000100000000");
        assert_eq!(cmp_by_position(&x, &y, MIB), Ordering::Less);
    }

    #[test]
    fn error_converts_to_refused() {
        let e: crate::Error = WalName::parse("../x").unwrap_err().into();
        assert!(matches!(e, crate::Error::Refused(_)));
        assert_eq!(
            crate::common::error::Failure::exit_code(&e),
            crate::common::error::EXIT_REFUSED
        );
    }
}
