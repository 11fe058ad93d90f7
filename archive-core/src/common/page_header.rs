//! The long page header at the start of every WAL segment.
//!
//! Checking it before storing a segment catches files that are not WAL, a
//! segment stored under the wrong name, and (through
//! [`LongPageHeader::system_identifier`]) WAL of another cluster.
//!
//! The magic identifies the PostgreSQL version (10 to 18 are known). A
//! newer version must never stall archiving: a magic of the `0xD1xx` family
//! above the newest known one is accepted when every other field is
//! consistent, and reported in [`LongPageHeader::unknown_magic`] so the
//! caller logs a warning naming it; such a header with an inconsistent field
//! is refused naming both ([`HeaderError::FutureMagic`]). Any other magic is
//! refused. Layout (`XLogLongPageHeaderData`, little-endian, x86_64):
//!
//! | offset | field |
//! |--------|-------|
//! | 0 | u16 `xlp_magic` |
//! | 2 | u16 `xlp_info` |
//! | 4 | u32 `xlp_tli` |
//! | 8 | u64 `xlp_pageaddr` |
//! | 16 | u32 `xlp_rem_len` (then 4 bytes of padding) |
//! | 24 | u64 `xlp_sysid` |
//! | 32 | u32 `xlp_seg_size` |
//! | 36 | u32 `xlp_xlog_blcksz` |

use crate::common::wal::{WalName, WalNameError};

/// Size of the long page header that starts every segment.
pub const LONG_HEADER_LEN: usize = 40;

/// `xlp_info` flag: this page has the long header (first page of a segment).
pub const XLP_LONG_HEADER: u16 = 0x0002;

/// `xlp_info` flag: the page starts with an `XLOG_OVERWRITE_CONTRECORD`
/// record, which replaces a record left incomplete by a crash (added by a
/// fix of 2021 to every branch then supported). It is set on the page where
/// the lost record would have continued, often a segment's first.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;

/// All `xlp_info` bits PostgreSQL defines (`XLP_ALL_FLAGS` in
/// `xlog_internal.h`, 0x000F in 18); any other bit means the bytes are not
/// a page header.
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// `XLOG_PAGE_MAGIC` of each supported major version (from
/// `src/include/access/xlog_internal.h` of each release branch; 18's read
/// from the header PostgreSQL 18.6 installs, and from a segment it wrote).
/// The magic changes whenever the WAL format does, so it also identifies the
/// version.
const MAGICS: [(u32, u16); 9] = [
    (10, 0xD097),
    (11, 0xD098),
    (12, 0xD101),
    (13, 0xD106),
    (14, 0xD10D),
    (15, 0xD110),
    (16, 0xD113),
    (17, 0xD116),
    (18, 0xD118),
];

/// The newest magic in [`MAGICS`].
const NEWEST_MAGIC: u16 = MAGICS[MAGICS.len() - 1].1;

/// The newest major version in [`MAGICS`].
const NEWEST_VERSION: u32 = MAGICS[MAGICS.len() - 1].0;

/// True for a magic a PostgreSQL version newer than the known ones could
/// write: every release since 12 has used `0xD1xx`, counting up.
pub fn is_future_magic(magic: u16) -> bool {
    magic > NEWEST_MAGIC && magic & 0xFF00 == 0xD100
}

const MIN_SEG_SIZE: u32 = 1024 * 1024;
const MAX_SEG_SIZE: u32 = 1024 * 1024 * 1024;
const MIN_BLOCK_SIZE: u32 = 1024;
const MAX_BLOCK_SIZE: u32 = 64 * 1024;

/// The block size of every stock PostgreSQL build (`XLOG_BLCKSZ`).
const DEFAULT_BLOCK_SIZE: u32 = 8192;

/// Why a WAL file's first page was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer bytes than a long page header.
    #[error("too short for a WAL page header: {0} bytes, need {LONG_HEADER_LEN}")]
    TooShort(usize),
    /// Neither the page magic of PostgreSQL 10 to 18 nor one a newer
    /// version could use (see [`is_future_magic`]).
    #[error(
        "unknown WAL page magic 0x{0:04X} (not WAL of PostgreSQL 10 to {NEWEST_VERSION}, nor of a newer version)"
    )]
    UnknownMagic(u16),
    /// A magic only a newer PostgreSQL could write, in a header with an
    /// inconsistent field: not accepted on the magic's benefit of the doubt.
    #[error(
        "unknown WAL page magic 0x{magic:04X} (a PostgreSQL version newer than {NEWEST_VERSION}?) and {error}"
    )]
    FutureMagic {
        /// `xlp_magic`.
        magic: u16,
        /// What else is wrong with the header.
        error: Box<HeaderError>,
    },
    /// The first page lacks the long-header flag.
    #[error("first WAL page has no long header (xlp_info 0x{0:04X})")]
    NotLongHeader(u16),
    /// Flag bits PostgreSQL never sets.
    #[error("WAL page header has unknown flag bits (xlp_info 0x{0:04X})")]
    UnknownFlags(u16),
    /// Timeline 0 never exists.
    #[error("WAL page header has timeline 0")]
    ZeroTimeline,
    /// A segment size initdb cannot create.
    #[error(
        "WAL page header has invalid segment size {0}: must be a power of two from 1 MiB to 1 GiB"
    )]
    SegmentSize(u32),
    /// A block size PostgreSQL cannot be built with.
    #[error(
        "WAL page header has invalid block size {0}: must be a power of two from 1 KiB to 64 KiB"
    )]
    BlockSize(u32),
    /// The file kind has no page header (history file, backup label).
    #[error("{0} has no WAL page header to check")]
    NoPageHeader(String),
    /// The name cannot exist with the header's segment size.
    #[error("{0} (segment size {1} from the page header)")]
    NameForSegmentSize(WalNameError, u32),
    /// The page address is not the start of the named segment.
    #[error(
        "page address {} does not match file name {name} (expected {})",
        format_lsn(*found),
        format_lsn(*expected)
    )]
    PageAddress {
        /// The file name the content was checked against.
        name: String,
        /// `xlp_pageaddr` of the first page.
        found: u64,
        /// The start LSN of the named segment.
        expected: u64,
    },
    /// The page's timeline is newer than the name's.
    #[error("page timeline {found} is greater than timeline {expected} of file name {name}")]
    Timeline {
        /// The file name the content was checked against.
        name: String,
        /// `xlp_tli` of the first page.
        found: u32,
        /// The timeline in the name.
        expected: u32,
    },
}

impl From<HeaderError> for crate::Error {
    fn from(e: HeaderError) -> Self {
        crate::Error::Refused(e.to_string())
    }
}

/// The fields of a segment's first page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPageHeader {
    /// `xlp_magic`.
    pub magic: u16,
    /// PostgreSQL major version that `magic` identifies (10 to 18); `None`
    /// for an unknown magic (then `unknown_magic` is set).
    pub pg_version: Option<u32>,
    /// The magic, when no known version writes it: a newer PostgreSQL's
    /// (see [`is_future_magic`]), accepted because every other field is
    /// consistent. The caller logs [`LongPageHeader::unknown_magic_warning`].
    pub unknown_magic: Option<u16>,
    /// `xlp_info` flag bits.
    pub info: u16,
    /// `xlp_tli`: timeline of the first record on the page.
    pub tli: u32,
    /// `xlp_pageaddr`: the LSN of this page.
    pub page_addr: u64,
    /// `xlp_rem_len`: bytes of a record continued from the previous segment.
    pub rem_len: u32,
    /// `xlp_sysid`: the cluster's system identifier (from pg_control).
    pub system_identifier: u64,
    /// `xlp_seg_size`: the cluster's WAL segment size.
    pub seg_size: u32,
    /// `xlp_xlog_blcksz`: the WAL block (page) size.
    pub block_size: u32,
}

impl LongPageHeader {
    /// For a header with an unknown magic, the WARNING to log about `file`
    /// (its name or path): the magic, the newest known one, and what to do.
    pub fn unknown_magic_warning(&self, file: &str) -> Option<String> {
        self.unknown_magic.map(|m| {
            format!(
                "{file}: unknown WAL page magic 0x{m:04X}, probably a PostgreSQL version newer than \
                 {NEWEST_VERSION} (0x{NEWEST_MAGIC:04X}); accepted because the rest of its page \
                 header is consistent; upgrade pgarchive to check this version's WAL fully"
            )
        })
    }
}

/// The PostgreSQL major version whose WAL carries `magic`, if supported.
pub fn pg_version_for_magic(magic: u16) -> Option<u32> {
    MAGICS.iter().find(|&&(_, m)| m == magic).map(|&(v, _)| v)
}

/// The `XLOG_PAGE_MAGIC` of PostgreSQL major version `pg_version`, if
/// supported.
pub fn magic_for_pg_version(pg_version: u32) -> Option<u16> {
    MAGICS
        .iter()
        .find(|&&(v, _)| v == pg_version)
        .map(|&(_, m)| m)
}

/// Formats an LSN as PostgreSQL does (`%X/%X`: high and low 32 bits), so
/// messages can be compared with `pg_waldump` and server logs.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn as u32)
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// The magic at the start of `buf`: a known one or a future one (see
/// [`is_future_magic`]).
fn plausible_magic(buf: &[u8]) -> Result<u16, HeaderError> {
    if buf.len() < LONG_HEADER_LEN {
        return Err(HeaderError::TooShort(buf.len()));
    }
    let magic = u16_at(buf, 0);
    if pg_version_for_magic(magic).is_none() && !is_future_magic(magic) {
        return Err(HeaderError::UnknownMagic(magic));
    }
    Ok(magic)
}

/// Names an unknown magic in the error of a header that carries one.
fn with_magic(magic: u16, e: HeaderError) -> HeaderError {
    if pg_version_for_magic(magic).is_some() {
        e
    } else {
        HeaderError::FutureMagic {
            magic,
            error: Box::new(e),
        }
    }
}

/// Parses and sanity-checks the long page header at the start of `buf`
/// (the first bytes of a segment; at least [`LONG_HEADER_LEN`]).
///
/// Checks only what the header says about itself; use
/// [`validate_first_page`] to check it against the file name.
pub fn parse_long_header(buf: &[u8]) -> Result<LongPageHeader, HeaderError> {
    let magic = plausible_magic(buf)?;
    parse_fields(buf, magic).map_err(|e| with_magic(magic, e))
}

/// [`parse_long_header`] after the magic's check.
fn parse_fields(buf: &[u8], magic: u16) -> Result<LongPageHeader, HeaderError> {
    let pg_version = pg_version_for_magic(magic);
    let info = u16_at(buf, 2);
    if info & !XLP_ALL_FLAGS != 0 {
        return Err(HeaderError::UnknownFlags(info));
    }
    if info & XLP_LONG_HEADER == 0 {
        return Err(HeaderError::NotLongHeader(info));
    }
    let hdr = LongPageHeader {
        magic,
        pg_version,
        unknown_magic: pg_version.is_none().then_some(magic),
        info,
        tli: u32_at(buf, 4),
        page_addr: u64_at(buf, 8),
        rem_len: u32_at(buf, 16),
        system_identifier: u64_at(buf, 24),
        seg_size: u32_at(buf, 32),
        block_size: u32_at(buf, 36),
    };
    if hdr.tli == 0 {
        return Err(HeaderError::ZeroTimeline);
    }
    if !hdr.seg_size.is_power_of_two() || !(MIN_SEG_SIZE..=MAX_SEG_SIZE).contains(&hdr.seg_size) {
        return Err(HeaderError::SegmentSize(hdr.seg_size));
    }
    if !hdr.block_size.is_power_of_two()
        || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&hdr.block_size)
    {
        return Err(HeaderError::BlockSize(hdr.block_size));
    }
    Ok(hdr)
}

/// Checks that `buf`, the start of a segment or partial segment, is the
/// first page of the segment `name` says it is.
///
/// The page address must be the segment's start LSN. The page timeline may
/// be lower than the name's but not higher: the first segment of a new
/// timeline is a copy of the old timeline's segment up to the switch point,
/// so its first page still carries the old timeline ID.
///
/// A future magic (see [`is_future_magic`]) passes when everything else
/// does, flagged in [`LongPageHeader::unknown_magic`]; the caller also
/// compares the system identifier and logs the warning.
pub fn validate_first_page(buf: &[u8], name: &WalName) -> Result<LongPageHeader, HeaderError> {
    if !name.has_page_header() {
        return Err(HeaderError::NoPageHeader(name.to_string()));
    }
    let magic = plausible_magic(buf)?;
    parse_fields(buf, magic)
        .and_then(|hdr| check_name(hdr, name))
        .map_err(|e| with_magic(magic, e))
}

/// The checks of [`validate_first_page`] against the file name.
fn check_name(hdr: LongPageHeader, name: &WalName) -> Result<LongPageHeader, HeaderError> {
    let seg_size = u64::from(hdr.seg_size);
    name.check_segment_size(seg_size)
        .map_err(|e| HeaderError::NameForSegmentSize(e, hdr.seg_size))?;
    let expected = name.start_lsn(seg_size);
    if hdr.page_addr != expected {
        return Err(HeaderError::PageAddress {
            name: name.to_string(),
            found: hdr.page_addr,
            expected,
        });
    }
    if hdr.tli > name.timeline() {
        return Err(HeaderError::Timeline {
            name: name.to_string(),
            found: hdr.tli,
            expected: name.timeline(),
        });
    }
    Ok(hdr)
}

/// Builds a valid long page header (8 KiB blocks, no continuation), for
/// tests that fabricate WAL.
///
/// # Panics
/// If `pg_version` is not 10 to 18.
#[doc(hidden)]
pub fn build_long_header(
    pg_version: u32,
    tli: u32,
    page_addr: u64,
    sysid: u64,
    seg_size: u32,
) -> [u8; LONG_HEADER_LEN] {
    let magic = magic_for_pg_version(pg_version)
        .unwrap_or_else(|| panic!("unsupported PostgreSQL version {pg_version}"));
    build_long_header_with_magic(magic, tli, page_addr, sysid, seg_size)
}

/// [`build_long_header`] with any magic (a future version's, for tests).
#[doc(hidden)]
pub fn build_long_header_with_magic(
    magic: u16,
    tli: u32,
    page_addr: u64,
    sysid: u64,
    seg_size: u32,
) -> [u8; LONG_HEADER_LEN] {
    let mut b = [0u8; LONG_HEADER_LEN];
    b[0..2].copy_from_slice(&magic.to_le_bytes());
    b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
    b[4..8].copy_from_slice(&tli.to_le_bytes());
    b[8..16].copy_from_slice(&page_addr.to_le_bytes());
    b[24..32].copy_from_slice(&sysid.to_le_bytes());
    b[32..36].copy_from_slice(&seg_size.to_le_bytes());
    b[36..40].copy_from_slice(&DEFAULT_BLOCK_SIZE.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u32 = 1024 * 1024;
    const GIB: u32 = 1024 * MIB;
    const SYSID: u64 = 7_301_234_567_890_123_456;

    fn name(s: &str) -> WalName {
        WalName::parse(s).unwrap()
    }

    fn header(tli: u32, page_addr: u64) -> [u8; LONG_HEADER_LEN] {
        build_long_header(16, tli, page_addr, SYSID, 16 * MIB)
    }

    #[test]
    fn every_supported_version_is_accepted() {
        let expected = [
            (10, 0xD097),
            (11, 0xD098),
            (12, 0xD101),
            (13, 0xD106),
            (14, 0xD10D),
            (15, 0xD110),
            (16, 0xD113),
            (17, 0xD116),
            (18, 0xD118),
        ];
        for (v, magic) in expected {
            let b = build_long_header(v, 3, 0x2_0500_0000, SYSID, 16 * MIB);
            assert_eq!(u16::from_le_bytes([b[0], b[1]]), magic);
            let h = parse_long_header(&b).unwrap();
            assert_eq!(h.pg_version, Some(v));
            assert_eq!(h.unknown_magic, None);
            assert_eq!(h.unknown_magic_warning("x"), None);
            assert_eq!(h.magic, magic);
            assert_eq!(h.tli, 3);
            assert_eq!(h.page_addr, 0x2_0500_0000);
            assert_eq!(h.system_identifier, SYSID);
            assert_eq!(h.seg_size, 16 * MIB);
            assert_eq!(h.block_size, 8192);
            assert_eq!(h.rem_len, 0);
            assert_eq!(h.info, XLP_LONG_HEADER);
            let h = validate_first_page(&b, &name("000000030000000200000005")).unwrap();
            assert_eq!(h.pg_version, Some(v));
        }
        assert_eq!(magic_for_pg_version(9), None);
        assert_eq!(magic_for_pg_version(18), Some(0xD118));
        assert_eq!(magic_for_pg_version(19), None);
    }

    /// The first 40 bytes of a segment PostgreSQL 18.6 wrote (initdb, then
    /// `pg_switch_wal()`; 16 MiB segments).
    const PG18_SEGMENT_3: &str =
        "18d1020001000000000000030000000000000000000000001fc1539a05ae136b0000000100200000";

    #[test]
    fn a_real_postgresql_18_header_is_accepted_with_its_version() {
        let b: Vec<u8> = (0..PG18_SEGMENT_3.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&PG18_SEGMENT_3[i..i + 2], 16).unwrap())
            .collect();
        let h = validate_first_page(&b, &name("000000010000000000000003")).unwrap();
        assert_eq!(h.magic, 0xD118);
        assert_eq!(h.pg_version, Some(18));
        assert_eq!(h.unknown_magic, None);
        assert_eq!(h.system_identifier, 7_715_701_925_703_041_311);
        assert_eq!(h.seg_size, 16 * MIB);
        assert_eq!(h.page_addr, 0x300_0000);
        assert_eq!(
            b,
            build_long_header(18, 1, 0x300_0000, 7_715_701_925_703_041_311, 16 * MIB)
        );
    }

    #[test]
    fn the_future_magic_family() {
        assert!(!is_future_magic(0xD118), "18's own");
        assert!(!is_future_magic(0xD117), "below the newest known");
        assert!(!is_future_magic(0xD097));
        assert!(is_future_magic(0xD119));
        assert!(is_future_magic(0xD11B));
        assert!(is_future_magic(0xD1FF));
        assert!(!is_future_magic(0xD200));
        assert!(!is_future_magic(0xE119));
    }

    #[test]
    fn a_future_magic_with_consistent_fields_is_accepted_and_flagged() {
        let n = name("000000020000000100000004");
        let b = build_long_header_with_magic(0xD11B, 2, 0x1_0400_0000, SYSID, 16 * MIB);
        let h = validate_first_page(&b, &n).unwrap();
        assert_eq!(h.magic, 0xD11B);
        assert_eq!(h.unknown_magic, Some(0xD11B));
        assert_eq!(h.pg_version, None);
        assert_eq!(h.system_identifier, SYSID);
        assert_eq!(h.seg_size, 16 * MIB);
        let w = h.unknown_magic_warning(&n.to_string()).unwrap();
        assert!(w.starts_with("000000020000000100000004: "), "{w}");
        assert!(w.contains("0xD11B") && w.contains("0xD118"), "{w}");
        assert!(w.contains("newer than 18"), "{w}");
        // A partial segment too, and on its own (no name).
        let p = name("000000020000000100000004.partial");
        assert_eq!(
            validate_first_page(&b, &p).unwrap().unknown_magic,
            Some(0xD11B)
        );
        assert_eq!(parse_long_header(&b).unwrap().unknown_magic, Some(0xD11B));
    }

    #[test]
    fn a_future_magic_with_an_inconsistent_field_is_refused_naming_both() {
        let n = name("000000020000000100000004");
        // Page address of another segment.
        let b = build_long_header_with_magic(0xD11B, 2, 0x1_0500_0000, SYSID, 16 * MIB);
        let e = validate_first_page(&b, &n).unwrap_err();
        match &e {
            HeaderError::FutureMagic { magic, error } => {
                assert_eq!(*magic, 0xD11B);
                assert!(
                    matches!(**error, HeaderError::PageAddress { .. }),
                    "{error}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "unknown WAL page magic 0xD11B (a PostgreSQL version newer than 18?) and page \
             address 1/5000000 does not match file name 000000020000000100000004 \
             (expected 1/4000000)"
        );
        // A timeline above the name's, a bad segment size, stray flag bits,
        // no long-header flag, timeline 0.
        let b = build_long_header_with_magic(0xD11B, 3, 0x1_0400_0000, SYSID, 16 * MIB);
        let e = validate_first_page(&b, &n).unwrap_err();
        assert!(e.to_string().contains("0xD11B") && e.to_string().contains("page timeline 3"));
        let b = build_long_header_with_magic(0xD11B, 2, 0x1_0400_0000, SYSID, 3 * MIB);
        let e = parse_long_header(&b).unwrap_err();
        assert!(
            matches!(e, HeaderError::FutureMagic { magic: 0xD11B, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("segment size 3145728"), "{e}");
        let mut b = build_long_header_with_magic(0xD11B, 2, 0x1_0400_0000, SYSID, 16 * MIB);
        b[2..4].copy_from_slice(&0x0012u16.to_le_bytes());
        let e = validate_first_page(&b, &n).unwrap_err();
        assert!(e.to_string().contains("unknown flag bits"), "{e}");
        b[2..4].copy_from_slice(&0x0001u16.to_le_bytes());
        let e = validate_first_page(&b, &n).unwrap_err();
        assert!(e.to_string().contains("no long header"), "{e}");
        let b = build_long_header_with_magic(0xD11B, 0, 0x1_0400_0000, SYSID, 16 * MIB);
        let e = validate_first_page(&b, &n).unwrap_err();
        assert!(e.to_string().contains("timeline 0"), "{e}");
        // A known magic's errors are not wrapped.
        let b = build_long_header(18, 2, 0x1_0500_0000, SYSID, 16 * MIB);
        let e = validate_first_page(&b, &n).unwrap_err();
        assert!(matches!(e, HeaderError::PageAddress { .. }), "{e}");
    }

    #[test]
    fn a_magic_outside_the_family_is_refused() {
        let n = name("000000010000000000000002");
        for magic in [0xD117, 0xD0FF, 0xD200, 0xE119, 0x18D1, 0xFFFF] {
            let b = build_long_header_with_magic(magic, 1, 0x200_0000, SYSID, 16 * MIB);
            let e = validate_first_page(&b, &n).unwrap_err();
            assert_eq!(e, HeaderError::UnknownMagic(magic));
        }
    }

    #[test]
    fn reads_a_whole_page_not_just_the_header() {
        let mut page = vec![0xAAu8; 8192];
        page[..LONG_HEADER_LEN].copy_from_slice(&header(1, 0));
        page[16..20].copy_from_slice(&77u32.to_le_bytes());
        page[2] |= 0x01; // XLP_FIRST_IS_CONTRECORD
        let h = validate_first_page(&page, &name("000000010000000000000000")).unwrap();
        assert_eq!(h.rem_len, 77);
    }

    #[test]
    fn wrong_magic_is_named_in_hex() {
        let mut b = header(1, 0);
        b[0..2].copy_from_slice(&0xD0A5u16.to_le_bytes());
        let e = parse_long_header(&b).unwrap_err();
        assert_eq!(e, HeaderError::UnknownMagic(0xD0A5));
        assert_eq!(
            e.to_string(),
            "unknown WAL page magic 0xD0A5 (not WAL of PostgreSQL 10 to 18, nor of a newer version)"
        );
        assert_eq!(
            parse_long_header(&[0u8; 40]),
            Err(HeaderError::UnknownMagic(0))
        );
    }

    #[test]
    fn short_buffer() {
        let b = header(1, 0);
        assert_eq!(parse_long_header(&b[..39]), Err(HeaderError::TooShort(39)));
        assert_eq!(parse_long_header(&[]), Err(HeaderError::TooShort(0)));
    }

    #[test]
    fn missing_long_flag_and_unknown_flags() {
        let mut b = header(1, 0);
        b[2..4].copy_from_slice(&0x0001u16.to_le_bytes());
        assert_eq!(parse_long_header(&b), Err(HeaderError::NotLongHeader(1)));
        b[2..4].copy_from_slice(&0x0012u16.to_le_bytes());
        assert_eq!(parse_long_header(&b), Err(HeaderError::UnknownFlags(0x12)));
        b[2..4].copy_from_slice(&0x0007u16.to_le_bytes());
        assert!(parse_long_header(&b).is_ok());
        // XLP_FIRST_IS_OVERWRITE_CONTRECORD, on the first page after a
        // record lost at a crash.
        b[2..4].copy_from_slice(&0x000Au16.to_le_bytes());
        assert_eq!(parse_long_header(&b).unwrap().info, 0x000A);
        b[2..4].copy_from_slice(&XLP_ALL_FLAGS.to_le_bytes());
        assert!(parse_long_header(&b).is_ok());
    }

    #[test]
    fn bad_segment_and_block_sizes() {
        for bad in [0, 1, MIB / 2, 3 * MIB, 16 * MIB + 8192, 2 * GIB] {
            let b = build_long_header(16, 1, 0, SYSID, bad);
            assert_eq!(parse_long_header(&b), Err(HeaderError::SegmentSize(bad)));
        }
        for bad in [0u32, 512, 3000, 128 * 1024] {
            let mut b = header(1, 0);
            b[36..40].copy_from_slice(&bad.to_le_bytes());
            assert_eq!(parse_long_header(&b), Err(HeaderError::BlockSize(bad)));
        }
        let mut b = header(1, 0);
        b[36..40].copy_from_slice(&(32u32 * 1024).to_le_bytes());
        assert_eq!(parse_long_header(&b).unwrap().block_size, 32 * 1024);
    }

    #[test]
    fn zero_timeline_refused() {
        assert_eq!(
            parse_long_header(&header(0, 0)),
            Err(HeaderError::ZeroTimeline)
        );
    }

    #[test]
    fn page_address_mismatch() {
        let n = name("000000010000000000000002");
        let e = validate_first_page(&header(1, 0x300_0000), &n).unwrap_err();
        assert_eq!(
            e.to_string(),
            "page address 0/3000000 does not match file name 000000010000000000000002 \
             (expected 0/2000000)"
        );
        let n = name("0000000100000003000000FF");
        let e = validate_first_page(&header(1, 0x3_FE00_0000), &n).unwrap_err();
        assert!(e.to_string().contains("(expected 3/FF000000)"), "{e}");
        assert!(validate_first_page(&header(1, 0x3_FF00_0000), &n).is_ok());
    }

    #[test]
    fn timeline_greater_than_name_refused_smaller_accepted() {
        let n = name("000000030000000000000002");
        let e = validate_first_page(&header(4, 0x200_0000), &n).unwrap_err();
        assert_eq!(
            e.to_string(),
            "page timeline 4 is greater than timeline 3 of file name 000000030000000000000002"
        );
        // First segment of timeline 3 is a copy of timeline 2's.
        assert_eq!(
            validate_first_page(&header(2, 0x200_0000), &n).unwrap().tli,
            2
        );
        assert_eq!(
            validate_first_page(&header(3, 0x200_0000), &n).unwrap().tli,
            3
        );
    }

    #[test]
    fn partial_checked_history_and_backup_refused() {
        let b = header(1, 0x200_0000);
        assert!(validate_first_page(&b, &name("000000010000000000000002.partial")).is_ok());
        let e = validate_first_page(&b, &name("00000001.history")).unwrap_err();
        assert!(matches!(e, HeaderError::NoPageHeader(_)));
        let e =
            validate_first_page(&b, &name("000000010000000000000002.00000028.backup")).unwrap_err();
        assert!(matches!(e, HeaderError::NoPageHeader(_)));
    }

    #[test]
    fn one_mib_segments() {
        // Segment 0x100 of log 5 with 1 MiB segments starts at 5/10000000.
        let n = name("000000010000000500000100");
        let b = build_long_header(13, 1, 0x5_1000_0000, SYSID, MIB);
        let h = validate_first_page(&b, &n).unwrap();
        assert_eq!(h.seg_size, MIB);
        // The same name read with 16 MiB segments would start elsewhere.
        let b = build_long_header(13, 1, 0x5_1000_0000, SYSID, 16 * MIB);
        assert!(validate_first_page(&b, &n).is_err());
    }

    #[test]
    fn one_gib_segments() {
        let n = name("000000010000000200000003");
        let b = build_long_header(17, 1, 0x2_C000_0000, SYSID, GIB);
        assert_eq!(validate_first_page(&b, &n).unwrap().seg_size, GIB);
        // seg 4 cannot exist with 1 GiB segments (4 per log).
        let n = name("000000010000000200000004");
        let b = build_long_header(17, 1, 0x3_0000_0000, SYSID, GIB);
        let e = validate_first_page(&b, &n).unwrap_err();
        assert!(matches!(e, HeaderError::NameForSegmentSize(_, GIB)), "{e}");
    }

    #[test]
    fn lsn_format() {
        assert_eq!(format_lsn(0), "0/0");
        assert_eq!(format_lsn(0x200_0000), "0/2000000");
        assert_eq!(format_lsn(0x1_6B37_4D48), "1/6B374D48");
        assert_eq!(format_lsn(u64::MAX), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn error_converts_to_refused() {
        let e: crate::Error = HeaderError::TooShort(3).into();
        assert!(matches!(e, crate::Error::Refused(_)));
    }
}
