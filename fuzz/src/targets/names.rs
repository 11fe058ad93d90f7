//! `names`: one string (the input, as UTF-8 with invalid bytes replaced)
//! through every check of a name a client sends.
//!
//! - `wal::validate_file_name`: accepted means 1 to 64 ASCII letters, digits
//!   and dots, no leading dot; so never `/`, NUL, `.` or `..`.
//! - `WalName::parse`: accepted means `validate_file_name` accepts it, the
//!   shape matches the kind, the timeline is not 0, the name displays as
//!   itself and parses back equal; the segment arithmetic
//!   (`segment_number`, `start_lsn`, `next_segment`, `from_segment_number`)
//!   does not panic and round-trips for every segment size the name allows;
//!   the order agrees with the byte order of the names (as documented).
//! - `names::validate_dir_arg`: absolute, at most 1024 bytes, no `.`/`..`
//!   component, no NUL, only the documented characters.
//! - `names::validate_host_name`, `validate_cluster_name`: the documented
//!   lengths and characters, never a leading `-` (an ssh option) or `.`.
//! - `names::parse_hosts`: one or two distinct valid hosts.
//! - `wal::quote_for_log` and every error message: printable ASCII only, bounded.

use archive_core::common::names::{
    parse_hosts, validate_cluster_name, validate_dir_arg, validate_host_name,
};
use archive_core::common::wal::{quote_for_log, validate_file_name, WalKind, WalName};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::{ensure, Target};
use crate::mutate::{mutated, with_edits};

/// The target.
pub static TARGET: Target = Target {
    name: "names",
    what: "WAL file names, archive directories, host and cluster names",
    check,
    strategy,
    seeds,
};

const SEG_SIZES: [u64; 11] = [
    1 << 20,
    1 << 21,
    1 << 22,
    1 << 23,
    1 << 24,
    1 << 25,
    1 << 26,
    1 << 27,
    1 << 28,
    1 << 29,
    1 << 30,
];

fn printable_and_short(what: &str, s: &str, max: usize) -> Result<(), String> {
    ensure(s.bytes().all(|b| (0x20..0x7F).contains(&b)), || {
        format!("{what} has a non-printable character: {s:?}")
    })?;
    ensure(s.len() <= max, || {
        format!("{what} is {} bytes long: {s:?}", s.len())
    })
}

fn safe_charset(s: &str, extra: &[char]) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// The properties, over the input read as UTF-8.
pub fn check(input: &[u8]) -> Result<(), String> {
    let s = String::from_utf8_lossy(input);
    let s = s.as_ref();
    // quote_for_log: one printable line, bounded whatever the input.
    let q = quote_for_log(s);
    printable_and_short("quote_for_log", &q, 2 + 80 * 10 + 3)?;

    match validate_file_name(s) {
        Ok(()) => {
            ensure(!s.is_empty() && s.len() <= 64, || {
                format!("validate_file_name accepted {} bytes", s.len())
            })?;
            ensure(safe_charset(s, &['.']) && !s.starts_with('.'), || {
                format!("validate_file_name accepted {s:?}")
            })?;
        }
        Err(e) => printable_and_short("a file name error", &e.to_string(), 1000)?,
    }
    match WalName::parse(s) {
        Ok(w) => check_wal_name(s, &w)?,
        Err(e) => printable_and_short("a WAL name error", &e.to_string(), 1200)?,
    }
    match validate_dir_arg(s) {
        Ok(()) => {
            ensure(s.starts_with('/') && s.len() <= 1024, || {
                format!("validate_dir_arg accepted {s:?}")
            })?;
            ensure(
                s.split('/').all(|c| c != "." && c != "..")
                    && safe_charset(s, &['.', '-', '_', '/']),
                || format!("validate_dir_arg accepted {s:?}"),
            )?;
        }
        Err(e) => ensure(!e.to_string().contains('\n'), || {
            format!("a directory error spans lines: {e}")
        })?,
    }
    if validate_host_name(s).is_ok() {
        ensure(
            !s.is_empty()
                && s.len() <= 253
                && !s.starts_with(['-', '.'])
                && safe_charset(s, &['.', '-', '_']),
            || format!("validate_host_name accepted {s:?}"),
        )?;
    }
    if validate_cluster_name(s).is_ok() {
        ensure(
            !s.is_empty()
                && s.len() <= 64
                && !s.starts_with(['-', '.'])
                && safe_charset(s, &['.', '-', '_']),
            || format!("validate_cluster_name accepted {s:?}"),
        )?;
    }
    if let Ok(hosts) = parse_hosts(s) {
        ensure(matches!(hosts.len(), 1 | 2), || {
            format!("parse_hosts gave {} hosts for {s:?}", hosts.len())
        })?;
        ensure(hosts.len() == 1 || hosts[0] != hosts[1], || {
            format!("parse_hosts accepted the same host twice: {s:?}")
        })?;
        for h in &hosts {
            ensure(
                validate_host_name(h).is_ok() && s.contains(h.as_str()),
                || format!("parse_hosts gave {h:?} for {s:?}"),
            )?;
        }
    }
    Ok(())
}

fn check_wal_name(s: &str, w: &WalName) -> Result<(), String> {
    ensure(validate_file_name(s).is_ok(), || {
        format!("WalName::parse accepted {s:?}, validate_file_name refuses it")
    })?;
    ensure(w.as_str() == s && w.to_string() == s, || {
        format!("{s:?} displays as {w}")
    })?;
    ensure(WalName::parse(&w.to_string()).as_ref() == Ok(w), || {
        format!("{s:?} does not parse back equal")
    })?;
    ensure(w.timeline() != 0, || format!("{s:?}: timeline 0 accepted"))?;
    let shape_ok = match w.kind() {
        WalKind::Segment => s.len() == 24,
        WalKind::History => s.len() == 16 && s.ends_with(".history"),
        WalKind::Backup => s.len() == 40 && s.ends_with(".backup"),
        WalKind::Partial => s.len() == 32 && s.ends_with(".partial"),
    };
    ensure(shape_ok, || {
        format!("{s:?} is not shaped like a {:?}", w.kind())
    })?;
    ensure(
        w.segment_name()
            .is_none_or(|seg| s.starts_with(seg) && seg.len() == 24),
        || format!("{s:?}: segment name {:?}", w.segment_name()),
    )?;
    // Names to compare with: the order must agree with the byte order.
    let mut related = vec![w.clone()];
    for &size in &SEG_SIZES {
        if w.check_segment_size(size).is_err() {
            continue;
        }
        let segno = w.segment_number(size);
        let _ = w.start_lsn(size);
        if w.kind() != WalKind::History {
            let back = WalName::from_segment_number(w.timeline(), segno, size);
            ensure(Some(back.as_str()) == w.segment_name(), || {
                format!("{s:?}: segment {segno} of {size} bytes is {back}")
            })?;
        }
        let Some(next) = w.next_segment(size) else {
            // The last segment of the LSN space has no next one.
            ensure(
                (segno + 1) / (0x1_0000_0000 / size) > u64::from(u32::MAX),
                || format!("{s:?}: no next segment for size {size}"),
            )?;
            continue;
        };
        ensure(next.segment_number(size) == segno + 1, || {
            format!("{s:?}: next segment {next} for size {size}")
        })?;
        ensure(WalName::parse(next.as_str()).as_ref() == Ok(&next), || {
            format!("{s:?}: next segment {next} does not parse")
        })?;
        related.push(next);
    }
    if let Some(seg) = w.segment_name() {
        for other in [
            seg.to_string(),
            format!("{seg}.partial"),
            format!("{seg}.00000028.backup"),
            format!("{}.history", &seg[..8]),
        ] {
            if let Ok(o) = WalName::parse(&other) {
                related.push(o);
            }
        }
    }
    for a in &related {
        for b in &related {
            ensure(a.cmp(b) == a.as_str().cmp(b.as_str()), || {
                format!("{a} and {b}: the order is not the byte order")
            })?;
        }
    }
    Ok(())
}

/// Chunks names are made of.
const TOKENS: &[&str] = &[
    "0",
    "1",
    "9",
    "A",
    "F",
    "a",
    "f",
    "G",
    ".",
    "..",
    "/",
    "\0",
    "-",
    "_",
    " ",
    "\t",
    "\n",
    "history",
    ".history",
    ".partial",
    ".backup",
    ".ready",
    ".tmp",
    "é",
    "\u{202e}",
    "\x1b[31m",
    "00000001",
    "FFFFFFFF",
    "000000FF",
    "00000FFF",
    "00001000",
    "00000000",
    "$(x)",
    ";",
    "'",
    "\"",
    "\\",
    "-oProxyCommand=x",
    "arch1",
    "arch2",
    "/var/lib/pgarchive",
    "main",
];

/// The dictionary for byte mutations.
pub const DICT: &[&[u8]] = &[
    b".",
    b"..",
    b"/",
    b"\0",
    b"-",
    b" ",
    b"\n",
    b".history",
    b".partial",
    b".backup",
    b"FFFFFFFF",
    b"00000000",
    b"00000001",
    b"\xc3\xa9",
    b"\xff",
    b"A",
    b"a",
];

fn wal_names() -> impl Strategy<Value = String> {
    let hex8 = prop_oneof![
        select(vec![0u32, 1, 2, 0xFF, 0x100, 0xFFF, 0x1000, u32::MAX]),
        any::<u32>(),
    ];
    (hex8.clone(), hex8.clone(), hex8.clone(), hex8, 0u8..4).prop_map(
        |(tli, log, seg, off, kind)| {
            let base = format!("{tli:08X}{log:08X}{seg:08X}");
            match kind {
                0 => base,
                1 => format!("{tli:08X}.history"),
                2 => format!("{base}.{off:08X}.backup"),
                _ => format!("{base}.partial"),
            }
        },
    )
}

fn boundary_lengths() -> impl Strategy<Value = String> {
    (
        select(vec![
            0usize, 1, 63, 64, 65, 252, 253, 254, 1022, 1023, 1024, 1025,
        ]),
        select(vec!["A", "a", ".", "/", "/a", "é"]),
        select(vec!["", "/", "-", "."]),
    )
        .prop_map(|(n, unit, prefix)| {
            let mut s = prefix.to_string();
            while s.len() < n {
                s.push_str(unit);
            }
            s
        })
}

/// Structured names, their mutations, corpus mutations, arbitrary bytes.
pub fn strategy(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let tokens = vec(select(TOKENS), 0..12).prop_map(|t| t.concat().into_bytes());
    let wal = wal_names().prop_map(String::into_bytes);
    let hosts = (vec(select(TOKENS), 0..4), vec(select(TOKENS), 0..4))
        .prop_map(|(a, b)| format!("{} {}", a.concat(), b.concat()).into_bytes());
    prop_oneof![
        3 => with_edits(wal, 3, DICT),
        3 => tokens,
        1 => hosts,
        1 => boundary_lengths().prop_map(String::into_bytes),
        3 => mutated(seeds, DICT),
        1 => vec(any::<u8>(), 0..80),
    ]
    .boxed()
}

/// Real names of each kind, and names each check must refuse.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |name: &str, s: &str| out.push((name.to_string(), s.as_bytes().to_vec()));
    add("segment", "000000010000000000000001");
    add("segment-last-16mib", "0000000100000000000000FF");
    add("segment-last-1mib", "000000010000000100000FFF");
    add("segment-high", "FFFFFFFF0000FFFF000000FE");
    add("history", "00000002.history");
    add("backup", "000000010000000000000002.00000028.backup");
    add("partial", "000000010000000000000003.partial");
    add("lowercase", "00000001000000000000000a");
    add("timeline-0", "000000000000000000000001");
    add("traversal", "../000000010000000000000001");
    add("dir", "/var/lib/pgarchive/main-15.a_b");
    add("dir-dotdot", "/var/lib/pgarchive/../etc");
    add("hosts", "arch1 arch2");
    add("host-option", "-oProxyCommand=x");
    add("cluster", "main.15-a_b");
    add("control-chars", "a\n\x1b[31mb\"\u{202e}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass() {
        for (name, input) in seeds() {
            assert_eq!(check(&input), Ok(()), "{name}");
        }
    }
}
