//! `page_header`: a file name and the first bytes of its content through
//! `page_header::parse_long_header` and `validate_first_page`.
//!
//! Input: one byte N, N bytes of name (UTF-8, invalid bytes replaced), then
//! the content. Properties: no panic; an accepted header has a supported
//! magic (and the version it names), the long-header flag and no unknown
//! flag, a timeline other than 0, a power-of-two segment size from 1 MiB
//! to 1 GiB and block size from 1 KiB to 64 KiB; `validate_first_page`
//! accepts only a segment or partial segment whose name exists with that
//! segment size, whose start LSN is the page address, and whose timeline is
//! not lower than the page's; a header rebuilt with `build_long_header`
//! from the parsed fields parses to the same fields.

use archive_core::common::page_header::{
    build_long_header, build_long_header_with_magic, format_lsn, magic_for_pg_version,
    parse_long_header, pg_version_for_magic, validate_first_page, HeaderError, LONG_HEADER_LEN,
    XLP_ALL_FLAGS, XLP_LONG_HEADER,
};
use archive_core::common::wal::WalName;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::{ensure, Target};
use crate::mutate::{mutated, with_edits};

/// The target.
pub static TARGET: Target = Target {
    name: "page_header",
    what: "WAL long page headers checked against file names",
    check,
    strategy,
    seeds,
};

/// Splits an input into (name, content).
pub fn split(input: &[u8]) -> (String, &[u8]) {
    let Some((&n, rest)) = input.split_first() else {
        return (String::new(), &[]);
    };
    let n = usize::from(n).min(rest.len());
    (String::from_utf8_lossy(&rest[..n]).into_owned(), &rest[n..])
}

/// Joins a name and content into an input.
pub fn join(name: &str, content: &[u8]) -> Vec<u8> {
    let name = &name.as_bytes()[..name.len().min(255)];
    let mut v = vec![name.len() as u8];
    v.extend_from_slice(name);
    v.extend_from_slice(content);
    v
}

fn sane(buf: &[u8], h: &archive_core::common::page_header::LongPageHeader) -> Result<(), String> {
    ensure(buf.len() >= LONG_HEADER_LEN, || {
        format!("accepted {} bytes", buf.len())
    })?;
    ensure(
        match h.pg_version {
            Some(v) => {
                pg_version_for_magic(h.magic) == Some(v)
                    && magic_for_pg_version(v) == Some(h.magic)
                    && h.unknown_magic.is_none()
            }
            // A future version's magic: flagged, and of PostgreSQL's family.
            None => {
                h.unknown_magic == Some(h.magic)
                    && h.magic & 0xFF00 == 0xD100
                    && pg_version_for_magic(h.magic).is_none()
            }
        },
        || {
            format!(
                "magic {:04X}, version {:?} and unknown_magic {:?} disagree",
                h.magic, h.pg_version, h.unknown_magic
            )
        },
    )?;
    ensure(
        h.info & XLP_LONG_HEADER != 0 && h.info & !XLP_ALL_FLAGS == 0,
        || format!("accepted xlp_info {:04X}", h.info),
    )?;
    ensure(h.tli != 0, || "accepted timeline 0".into())?;
    ensure(
        h.seg_size.is_power_of_two() && (1 << 20..=1 << 30).contains(&h.seg_size),
        || format!("accepted segment size {}", h.seg_size),
    )?;
    ensure(
        h.block_size.is_power_of_two() && (1 << 10..=1 << 16).contains(&h.block_size),
        || format!("accepted block size {}", h.block_size),
    )
}

/// The properties.
pub fn check(input: &[u8]) -> Result<(), String> {
    let (name, buf) = split(input);
    let parsed = parse_long_header(buf);
    match &parsed {
        Ok(h) => {
            sane(buf, h)?;
            let _ = format_lsn(h.page_addr);
            let rebuilt = build_long_header_with_magic(
                h.magic,
                h.tli,
                h.page_addr,
                h.system_identifier,
                h.seg_size,
            );
            let r = parse_long_header(&rebuilt)
                .map_err(|e| format!("a rebuilt header is refused: {e}"))?;
            ensure(
                (r.magic, r.tli, r.page_addr, r.system_identifier, r.seg_size)
                    == (h.magic, h.tli, h.page_addr, h.system_identifier, h.seg_size),
                || format!("rebuilt {r:?} differs from {h:?}"),
            )?;
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let Ok(w) = WalName::parse(&name) else {
        return Ok(());
    };
    match validate_first_page(buf, &w) {
        Ok(h) => {
            ensure(w.has_page_header(), || {
                format!("{name}: a header accepted for a file without one")
            })?;
            ensure(parsed.as_ref() == Ok(&h), || {
                format!("{name}: validate_first_page and parse_long_header disagree")
            })?;
            sane(buf, &h)?;
            let size = u64::from(h.seg_size);
            ensure(w.check_segment_size(size).is_ok(), || {
                format!("{name} accepted with segment size {size} it cannot have")
            })?;
            ensure(h.page_addr == w.start_lsn(size), || {
                format!(
                    "{name} accepted with page address {} (starts at {})",
                    format_lsn(h.page_addr),
                    format_lsn(w.start_lsn(size))
                )
            })?;
            ensure(h.tli <= w.timeline(), || {
                format!("{name} accepted with page timeline {}", h.tli)
            })?;
        }
        Err(e) => {
            let _ = e.to_string();
            if !w.has_page_header() {
                ensure(matches!(e, HeaderError::NoPageHeader(_)), || {
                    format!("{name}: {e:?}")
                })?;
            }
        }
    }
    Ok(())
}

/// Tokens for byte mutations: magics, flags, sizes.
pub const DICT: &[&[u8]] = &[
    &[0x97, 0xD0],
    &[0x16, 0xD1],
    &[0x18, 0xD1],
    &[0x02, 0x00],
    &[0x07, 0x00],
    &[0x00, 0x00, 0x00, 0x01],
    &[0x00, 0x00, 0x10, 0x00],
    &[0x00, 0x00, 0x00, 0x40],
    &[0x00, 0x20, 0x00, 0x00],
    b".partial",
    b"FFFFFFFF",
];

/// A valid header for a name: (name, content).
fn valid_pair() -> impl Strategy<Value = (String, Vec<u8>)> {
    (
        10u32..=17,
        1u32..=8,
        prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()],
        any::<u32>(),
        20u32..=30,
        any::<bool>(),
        0u32..=2,
        any::<u64>(),
        vec(any::<u8>(), 0..32),
    )
        .prop_map(
            |(version, tli, log, seg, shift, partial, tli_down, sysid, tail)| {
                let size = 1u64 << shift;
                let per_log = (1u64 << 32) / size;
                let seg = u64::from(seg) % per_log;
                let segno = u64::from(log) * per_log + seg;
                let w = WalName::from_segment_number(tli, segno, size);
                let name = if partial {
                    format!("{w}.partial")
                } else {
                    w.to_string()
                };
                let mut page = build_long_header(
                    version,
                    tli.saturating_sub(tli_down).max(1),
                    w.start_lsn(size),
                    sysid,
                    size as u32,
                )
                .to_vec();
                page.extend(tail);
                (name, page)
            },
        )
}

/// Valid pairs and their mutations, a valid header under another name,
/// corpus mutations, arbitrary bytes.
pub fn strategy(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let valid = valid_pair().prop_map(|(n, c)| join(&n, &c));
    let other_name = (
        valid_pair(),
        select(vec![
            "00000001.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000001",
            "FFFFFFFFFFFFFFFF00000FFF",
            "000000010000000000000FFF.partial",
        ]),
    )
        .prop_map(|((_, c), n)| join(n, &c));
    let raw = (
        select(vec!["000000010000000000000001", "00000001.history", ""]),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(n, c)| join(n, &c));
    prop_oneof![
        2 => valid_pair().prop_map(|(n, c)| join(&n, &c)),
        4 => with_edits(valid, 4, DICT),
        1 => other_name,
        3 => mutated(seeds, DICT),
        1 => raw,
    ]
    .boxed()
}

/// Valid headers of each supported version and segment size extremes,
/// and a few refusals.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for v in 10..=17 {
        let h = build_long_header(v, 1, 0x200_0000, 7_301_234_567_890_123_456, 16 << 20);
        out.push((format!("pg{v}-16mib"), join("000000010000000000000002", &h)));
    }
    let h = build_long_header(13, 1, 0x5_1000_0000, 42, 1 << 20);
    out.push(("1mib".into(), join("000000010000000500000100", &h)));
    let h = build_long_header(17, 1, 0x2_C000_0000, 42, 1 << 30);
    out.push(("1gib".into(), join("000000010000000200000003", &h)));
    let h = build_long_header(16, 2, 0x200_0000, 42, 16 << 20);
    out.push((
        "partial-lower-tli".into(),
        join("000000030000000000000002.partial", &h),
    ));
    let h = build_long_header(16, 4, 0x200_0000, 42, 16 << 20);
    out.push(("higher-tli".into(), join("000000030000000000000002", &h)));
    let mut page = vec![0xAAu8; 8192];
    page[..LONG_HEADER_LEN].copy_from_slice(&build_long_header(16, 1, 0, 42, 16 << 20));
    page[2] |= 0x01;
    out.push(("whole-page".into(), join("000000010000000000000000", &page)));
    let h = build_long_header(16, 1, 0x200_0000, 42, 16 << 20);
    out.push(("history".into(), join("00000001.history", &h)));
    out.push(("short".into(), join("000000010000000000000002", &h[..39])));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass_and_valid_ones_are_accepted() {
        for (name, input) in seeds() {
            assert_eq!(check(&input), Ok(()), "{name}");
            let (n, c) = split(&input);
            let w = WalName::parse(&n).unwrap();
            let ok = validate_first_page(c, &w).is_ok();
            let refused = ["higher-tli", "history", "short"];
            let should = !refused.contains(&name.as_str());
            assert_eq!(ok, should, "{name}");
        }
    }
}
