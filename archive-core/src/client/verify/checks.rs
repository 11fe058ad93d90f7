//! What is wrong with a stored WAL file, a listing or a backup, wherever
//! the bytes come from (this server's disk or the peer's channel). The
//! checks themselves are the restore's and base-backup's; this file only
//! applies them and words the result.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

use crate::client::base_backup::verify::{check_against_manifest, Scan};
use crate::client::restore::verify::{decode_into, decode_verify, Check, Verified, VerifyError};
use crate::common::wal::{WalKind, WalName};

use super::pages::PageCheck;

/// Decodes one stored WAL file from `input` in full, with a restore's
/// checks (codec, the first page's header against the name, system
/// identifier, size, and the recorded raw blake3 `proof` when there is
/// one) and the header of every other page ([`PageCheck`]). Memory stays
/// at one buffer whatever the file.
pub(super) fn wal_file(
    name: &WalName,
    input: impl Read,
    sysid: Option<u64>,
    proof: Option<blake3::Hash>,
) -> Result<Verified, String> {
    let check = Check {
        name: name.clone(),
        sysid,
        hash: false,
        seg_size: None,
        proof,
    };
    let words = |e| match e {
        VerifyError::Bad(m) => m,
        VerifyError::Write(e) => format!("cannot read: {e}"),
    };
    if !name.has_page_header() {
        return decode_verify(input, &mut io::sink(), &check).map_err(words);
    }
    let mut pages = PageCheck::new(name);
    let v = decode_into(input, &mut pages, &check).map_err(words)?;
    pages.verdict()?;
    Ok(v)
}

/// A run of segments missing inside one timeline: the segments before and
/// after it are stored, so a restore that reaches it stops there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hole {
    /// First missing segment.
    pub first: String,
    /// Last missing segment.
    pub last: String,
    /// How many.
    pub count: u64,
}

impl Hole {
    /// The report's wording.
    pub fn problem(&self) -> String {
        let which = if self.count == 1 {
            "missing".to_string()
        } else {
            format!(
                "missing, with the {} segments up to {}",
                self.count - 1,
                self.last
            )
        };
        format!(
            "{which}: the segments before and after are stored, so a restore stops here; copy it from the other server (wal-sync) if it has it"
        )
    }
}

/// The holes of each timeline among `names` (any kinds; only segments
/// count), for segments of `seg_size` bytes. Bounded by the number of
/// names, whatever the names say.
pub(super) fn holes(names: &[WalName], seg_size: u64) -> Vec<Hole> {
    let mut by_tli: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for n in names.iter().filter(|n| n.kind() == WalKind::Segment) {
        by_tli
            .entry(n.timeline())
            .or_default()
            .push(n.segment_number(seg_size));
    }
    let mut out = Vec::new();
    for (tli, mut segs) in by_tli {
        segs.sort_unstable();
        segs.dedup();
        for w in segs.windows(2) {
            if w[1] > w[0] + 1 {
                let name = |s| WalName::from_segment_number(tli, s, seg_size).to_string();
                out.push(Hole {
                    first: name(w[0] + 1),
                    last: name(w[1] - 1),
                    count: w[1] - w[0] - 1,
                });
            }
        }
    }
    out
}

/// The segment size most of the decoded segments declared (the default
/// when none did).
pub(super) fn seg_size_of(declared: &BTreeMap<u64, u64>) -> u64 {
    declared
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(s, _)| *s)
        .unwrap_or(crate::common::wal::DEFAULT_SEGMENT_SIZE)
}

/// Compares what a backup's archives hold (`scan`) with the backup_manifest
/// in `manifest_dir` (base-backup's check), and the backup's system
/// identifier with the archive directory's.
pub(super) fn backup_against_manifest(
    manifest_dir: &Path,
    scan: Scan,
    sysid: Option<u64>,
) -> Result<(), String> {
    let v = check_against_manifest(manifest_dir, scan).map_err(|e| e.to_string())?;
    match (v.system_identifier, sysid) {
        (Some(b), Some(d)) if b != d => Err(format!(
            "a backup of another database: system identifier {b}, the archive directory's is {d}"
        )),
        _ => Ok(()),
    }
}

/// `message` without the leading `<path>: ` base-backup's checks put
/// there: the report names the path beside it.
pub(super) fn without_path(message: String, path: &Path) -> String {
    match message.strip_prefix(&format!("{}: ", path.display())) {
        Some(rest) => rest.to_string(),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::restore::verify::tests::{segment, zstd, SEG, SYSID};

    fn w(s: &str) -> WalName {
        WalName::parse(s).unwrap()
    }

    #[test]
    fn holes_are_runs_inside_a_timeline() {
        let names = [
            w("000000010000000000000001"),
            w("000000010000000000000002"),
            w("000000010000000000000005"),
            w("000000010000000000000007"),
            w("00000002.history"),
            // A new timeline starts where the old one ended: no hole.
            w("000000020000000000000007"),
            w("000000020000000000000008"),
        ];
        let h = holes(&names, SEG);
        assert_eq!(
            h,
            [
                Hole {
                    first: "000000010000000000000003".into(),
                    last: "000000010000000000000004".into(),
                    count: 2
                },
                Hole {
                    first: "000000010000000000000006".into(),
                    last: "000000010000000000000006".into(),
                    count: 1
                }
            ]
        );
        assert!(h[1].problem().starts_with("missing:"), "{}", h[1].problem());
        assert!(h[0].problem().contains("000000010000000000000004"));
    }

    #[test]
    fn a_flipped_byte_is_found_by_the_recorded_digest() {
        let name = "000000010000000000000003";
        let seg = segment(name);
        let mut flipped = seg.clone();
        flipped[150_000] ^= 0x40;
        let proof = Some(blake3::hash(&seg));
        assert!(wal_file(&w(name), &zstd(&seg)[..], Some(SYSID), proof).is_ok());
        let e = wal_file(&w(name), &flipped[..], Some(SYSID), proof).unwrap_err();
        assert!(e.contains("not the file that was archived"), "{e}");
        let e = wal_file(&w(name), &seg[..seg.len() / 2], Some(SYSID), None).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = wal_file(&w(name), &seg[..], Some(SYSID + 1), None).unwrap_err();
        assert!(e.contains("another database"), "{e}");
    }
}
