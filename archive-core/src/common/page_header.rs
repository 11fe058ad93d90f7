//! The long page header at the start of every WAL segment.
//!
//! Checking it before storing a segment catches files that are not WAL, WAL
//! of an unsupported PostgreSQL version, a segment stored under the wrong
//! name, and (through [`LongPageHeader::system_identifier`]) WAL of another
//! cluster. Layout (`XLogLongPageHeaderData`, little-endian, x86_64):
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
/// `src/include/access/xlog_internal.h` of each release branch). The magic
/// changes whenever the WAL format does, so it also identifies the version.
const MAGICS: [(u32, u16); 8] = [
    (10, 0xD097),
    (11, 0xD098),
    (12, 0xD101),
    (13, 0xD106),
    (14, 0xD10D),
    (15, 0xD110),
    (16, 0xD113),
    (17, 0xD116),
];

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
    /// Not the page magic of PostgreSQL 10 to 17.
    #[error("unknown WAL page magic 0x{0:04X} (not WAL of PostgreSQL 10 to 17)")]
    UnknownMagic(u16),
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
    /// PostgreSQL major version that `magic` identifies (10 to 17).
    pub pg_version: u32,
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

/// Parses and sanity-checks the long page header at the start of `buf`
/// (the first bytes of a segment; at least [`LONG_HEADER_LEN`]).
///
/// Checks only what the header says about itself; use
/// [`validate_first_page`] to check it against the file name.
pub fn parse_long_header(buf: &[u8]) -> Result<LongPageHeader, HeaderError> {
    if buf.len() < LONG_HEADER_LEN {
        return Err(HeaderError::TooShort(buf.len()));
    }
    let magic = u16_at(buf, 0);
    let pg_version = pg_version_for_magic(magic).ok_or(HeaderError::UnknownMagic(magic))?;
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
pub fn validate_first_page(buf: &[u8], name: &WalName) -> Result<LongPageHeader, HeaderError> {
    if !name.has_page_header() {
        return Err(HeaderError::NoPageHeader(name.to_string()));
    }
    let hdr = parse_long_header(buf)?;
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
/// If `pg_version` is not 10 to 17.
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
        ];
        for (v, magic) in expected {
            let b = build_long_header(v, 3, 0x2_0500_0000, SYSID, 16 * MIB);
            assert_eq!(u16::from_le_bytes([b[0], b[1]]), magic);
            let h = parse_long_header(&b).unwrap();
            assert_eq!(h.pg_version, v);
            assert_eq!(h.magic, magic);
            assert_eq!(h.tli, 3);
            assert_eq!(h.page_addr, 0x2_0500_0000);
            assert_eq!(h.system_identifier, SYSID);
            assert_eq!(h.seg_size, 16 * MIB);
            assert_eq!(h.block_size, 8192);
            assert_eq!(h.rem_len, 0);
            assert_eq!(h.info, XLP_LONG_HEADER);
            let h = validate_first_page(&b, &name("000000030000000200000005")).unwrap();
            assert_eq!(h.pg_version, v);
        }
        assert_eq!(magic_for_pg_version(9), None);
        assert_eq!(magic_for_pg_version(18), None);
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
        b[0..2].copy_from_slice(&0xD118u16.to_le_bytes());
        let e = parse_long_header(&b).unwrap_err();
        assert_eq!(e, HeaderError::UnknownMagic(0xD118));
        assert!(e.to_string().contains("0xD118"), "{e}");
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
