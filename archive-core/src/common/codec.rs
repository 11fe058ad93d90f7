//! Compression: recognise compressed files, decompress them, compress with
//! zstd.
//!
//! The archive server stores an already compressed file as it came and
//! compresses anything else with zstd; restore decompresses by sniffing
//! again. Both sides use [`sniff`], so they agree by construction.
//!
//! Sniffing asks the shared-mime-info database (through `tree_magic_mini`)
//! and ALSO requires the compressor's exact signature. A false positive is
//! the costly error: a plain file taken for compressed would be stored
//! uncompressed and then fail to "decompress" on restore. A miss only costs
//! a second compression layer. The signature check keeps sniffing correct on
//! a machine without the database (`/usr/share/mime`), where
//! `tree_magic_mini` recognises nothing. A WAL segment can never match: it
//! starts with the page magic (`xx D1`), and history and backup files are
//! text starting with digits or `START`.

use std::io::{self, Read, Write};
use std::sync::OnceLock;

/// How many leading bytes callers should pass to [`sniff`]; enough for every
/// signature and for the database's magic rules.
pub const SNIFF_LEN: usize = 4096;

/// A stored file's compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Not compressed.
    Plain,
    /// Zstandard (what this suite writes).
    Zstd,
    /// gzip, possibly several members.
    Gzip,
    /// bzip2, possibly several streams (pbzip2, Archive 2.0).
    Bzip2,
    /// xz: recognised so it is stored as is, but not decoded.
    Xz,
}

impl Codec {
    /// Lowercase name for logs and serialized records.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Plain => "plain",
            Codec::Zstd => "zstd",
            Codec::Gzip => "gzip",
            Codec::Bzip2 => "bzip2",
            Codec::Xz => "xz",
        }
    }

    /// MIME names the database may use for this codec: the canonical one and
    /// aliases, which differ between shared-mime-info releases (2.2 calls
    /// bzip2 `application/x-bzip`, with `x-bzip2` as an alias).
    fn mime_names(self) -> &'static [&'static str] {
        match self {
            Codec::Plain => &[],
            Codec::Zstd => &["application/zstd", "application/x-zstd"],
            Codec::Gzip => &["application/gzip", "application/x-gzip"],
            Codec::Bzip2 => &[
                "application/x-bzip2",
                "application/x-bzip",
                "application/bzip2",
            ],
            Codec::Xz => &["application/x-xz"],
        }
    }

    /// A minimal header carrying this codec's signature, used to ask the
    /// database whether it knows the codec at all.
    fn probe(self) -> &'static [u8] {
        match self {
            Codec::Plain => &[],
            Codec::Zstd => &[0x28, 0xB5, 0x2F, 0xFD, 0x20, 0x00, 0x01, 0x00, 0x00],
            Codec::Gzip => &[0x1F, 0x8B, 0x08, 0, 0, 0, 0, 0, 0, 0x03],
            Codec::Bzip2 => b"BZh91AY&SY\0\0\0\0",
            Codec::Xz => &[0xFD, b'7', b'z', b'X', b'Z', 0x00, 0x00, 0x04],
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

const COMPRESSED: [Codec; 4] = [Codec::Zstd, Codec::Gzip, Codec::Bzip2, Codec::Xz];

/// The codec whose exact signature `head` starts with, if any.
///
/// Stricter than the database's rules on purpose: gzip must use deflate
/// (method 8), and bzip2 must have a valid block size digit followed by the
/// first block's magic (pi) — "BZh" alone starts plenty of text.
fn signature(head: &[u8]) -> Option<Codec> {
    const BZ_BLOCK_MAGIC: [u8; 6] = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
    if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Some(Codec::Zstd)
    } else if head.starts_with(&[0x1F, 0x8B, 0x08]) {
        Some(Codec::Gzip)
    } else if head.len() >= 10
        && head.starts_with(b"BZh")
        && (b'1'..=b'9').contains(&head[3])
        && head[4..10] == BZ_BLOCK_MAGIC
    {
        Some(Codec::Bzip2)
    } else if head.starts_with(&[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) {
        Some(Codec::Xz)
    } else {
        None
    }
}

/// The compressed codec a MIME type names, if any.
fn codec_of_mime(mime: &str) -> Option<Codec> {
    COMPRESSED
        .into_iter()
        .find(|c| c.mime_names().contains(&mime))
}

/// Whether the database on this machine recognises `codec` (probed once).
/// False for every codec when the database is missing.
fn db_knows(codec: Codec) -> bool {
    static KNOWN: OnceLock<[bool; 4]> = OnceLock::new();
    let known = KNOWN.get_or_init(|| COMPRESSED.map(|c| db_says(c, c.probe())));
    COMPRESSED
        .iter()
        .position(|&c| c == codec)
        .is_some_and(|i| known[i])
}

/// Whether the database classifies `head` as `codec`: either the most
/// specific type it finds is one of the codec's names, or the codec's own
/// rule matches (the walk may have descended into a subtype such as
/// `application/x-compressed-tar`).
fn db_says(codec: Codec, head: &[u8]) -> bool {
    codec_of_mime(tree_magic_mini::from_u8(head)) == Some(codec)
        || codec
            .mime_names()
            .iter()
            .any(|m| tree_magic_mini::match_u8(m, head))
}

/// The decision rule, apart from the lookups: a positive needs the signature,
/// and also the database's agreement when the database knows the codec.
fn decide(
    sig: Option<Codec>,
    known: impl Fn(Codec) -> bool,
    agrees: impl Fn(Codec) -> bool,
) -> Codec {
    match sig {
        Some(c) if !known(c) || agrees(c) => c,
        _ => Codec::Plain,
    }
}

/// Decides how `head` (the first [`SNIFF_LEN`] bytes of a file, or all of a
/// shorter one) is compressed. Anything not positively recognised is
/// [`Codec::Plain`].
pub fn sniff(head: &[u8]) -> Codec {
    let head = &head[..head.len().min(SNIFF_LEN)];
    decide(signature(head), db_knows, |c| db_says(c, head))
}

/// The MIME type the shared-mime-info database gives `head`, for logs
/// (`application/octet-stream` when nothing matches or there is no database).
pub fn mime_type(head: &[u8]) -> &'static str {
    tree_magic_mini::from_u8(&head[..head.len().min(SNIFF_LEN)])
}

/// Wraps `r` so that reading yields the decompressed bytes.
///
/// Multi-part files decode in full: concatenated zstd frames, gzip members
/// and bzip2 streams (pbzip2 writes one stream per block). Corrupt or
/// truncated input fails with an error rather than a short read. Xz is
/// refused with [`io::ErrorKind::Unsupported`].
pub fn decoder<'a, R: Read + 'a>(codec: Codec, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match codec {
        Codec::Plain => Box::new(r),
        Codec::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Codec::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        Codec::Xz => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "xz-compressed files are stored as received but cannot be decompressed \
                 by this tool; decompress with xz(1)",
            ))
        }
    })
}

/// [`decoder`] that fails once more than `max` decoded bytes come out, so
/// a small compressed file cannot expand without bound (a decompression
/// bomb: 1 MiB of zstd can hold 32 GiB, a few KiB of bzip2 streams keep a
/// CPU busy for minutes). The work done is bounded by `max`.
pub fn decoder_limited<'a, R: Read + 'a>(
    codec: Codec,
    r: R,
    max: u64,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(Box::new(Limited {
        inner: decoder(codec, r)?,
        left: max,
        max,
    }))
}

struct Limited<R> {
    inner: R,
    left: u64,
    max: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the limit is enough to know it is exceeded.
        let cap = self.left.saturating_add(1).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..cap])?;
        if n as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("it decodes to more than {} bytes", self.max),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A zstd encoder writing to `w`, with the frame content checksum on so a
/// stored file corrupted later fails to decode instead of restoring wrong
/// WAL. The level (CPU versus size) is the caller's choice, usually from
/// configuration. Call `finish()` to complete the frame.
pub fn zstd_encoder<W: Write>(
    w: W,
    level: i32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(w, level)?;
    enc.include_checksum(true)?;
    Ok(enc)
}

/// Compresses a whole buffer into one zstd frame that records its content
/// size and checksum, like [`zstd_encoder`]'s.
pub fn zstd_compress(raw: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.include_checksum(true)?;
    c.include_contentsize(true)?;
    c.compress(raw)
}

/// Length in bytes of the zstd frame at the start of `r`, found by walking
/// its block headers without decompressing anything (RFC 8878 §3.1.1): a
/// cheap proof that the frame is complete. `Ok(None)` when `r` does not
/// start with a zstd frame or the frame is cut short.
pub fn zstd_frame_len<R: Read + io::Seek>(r: &mut R) -> io::Result<Option<u64>> {
    r.seek(io::SeekFrom::Start(0))?;
    let mut head = [0u8; 5];
    if read_full(r, &mut head)? < head.len() || head[..4] != [0x28, 0xB5, 0x2F, 0xFD] {
        return Ok(None);
    }
    let fhd = head[4];
    let single_segment = fhd & 0x20 != 0;
    let checksum = fhd & 0x04 != 0;
    let window = if single_segment { 0 } else { 1 };
    let dict_id = [0, 1, 2, 4][usize::from(fhd & 0x03)];
    let fcs = match fhd >> 6 {
        0 => u64::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut pos = 5 + window + dict_id + fcs;
    r.seek(io::SeekFrom::Start(pos))?;
    loop {
        let mut bh = [0u8; 3];
        if read_full(r, &mut bh)? < 3 {
            return Ok(None);
        }
        let v = u32::from(bh[0]) | u32::from(bh[1]) << 8 | u32::from(bh[2]) << 16;
        let last = v & 1 != 0;
        let size = u64::from(v >> 3);
        let content = match (v >> 1) & 3 {
            0 | 2 => size,
            1 => 1,
            _ => return Ok(None),
        };
        pos += 3 + content;
        if last {
            pos += if checksum { 4 } else { 0 };
            // The frame ends inside the input only if its last byte exists.
            let end = r.seek(io::SeekFrom::End(0))?;
            return Ok((pos <= end).then_some(pos));
        }
        r.seek(io::SeekFrom::Start(pos))?;
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

/// Decompresses a whole buffer (small files and tests).
pub fn decode_all(codec: Codec, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    decoder(codec, bytes)?.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limited_decoder_stops_past_its_limit() {
        let raw = vec![0u8; 10 << 20];
        let z = zstd_compress(&raw, 1).unwrap();
        assert!(z.len() < 4096, "a bomb: {} bytes", z.len());
        let mut out = Vec::new();
        let e = decoder_limited(Codec::Zstd, &z[..], 1 << 20)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(e.to_string().contains("more than 1048576"), "{e}");
        assert!(out.len() <= 1 << 20);
        // Exactly at the limit is fine.
        let mut out = Vec::new();
        decoder_limited(Codec::Zstd, &z[..], 10 << 20)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, raw);
    }

    #[test]
    fn zstd_frame_len_walks_blocks_and_sees_truncation() {
        // Zeros (RLE blocks), text (compressed blocks), noise (raw blocks).
        let mut raw = vec![0u8; 300_000];
        raw.extend(sample());
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        raw.extend((0..200_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }));
        for (level, pledge) in [(1, true), (3, false), (19, true)] {
            let mut enc = zstd_encoder(Vec::new(), level).unwrap();
            if pledge {
                enc.set_pledged_src_size(Some(raw.len() as u64)).unwrap();
            }
            enc.write_all(&raw).unwrap();
            let z = enc.finish().unwrap();
            let len = |b: &[u8]| zstd_frame_len(&mut io::Cursor::new(b)).unwrap();
            assert_eq!(len(&z), Some(z.len() as u64), "level {level}");
            for cut in [z.len() - 1, z.len() - 5, z.len() / 2, 6] {
                assert_eq!(len(&z[..cut]), None, "level {level} cut at {cut}");
            }
            let mut two = z.clone();
            two.extend_from_slice(&z);
            assert_eq!(len(&two), Some(z.len() as u64));
        }
        assert_eq!(
            zstd_frame_len(&mut io::Cursor::new(b"BZh91AY&SY")).unwrap(),
            None
        );
    }

    /// WAL-like content: a page header, some records, mostly zeros.
    fn wal_page() -> Vec<u8> {
        let mut page = vec![0u8; 8192];
        let hdr = crate::common::page_header::build_long_header(16, 1, 0x200_0000, 42, 16 << 20);
        page[..hdr.len()].copy_from_slice(&hdr);
        for (i, b) in page[40..2000].iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        page
    }

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..2000u32 {
            v.extend_from_slice(format!("record {i} of some WAL-ish data\n").as_bytes());
        }
        v
    }

    fn zstd_bytes(data: &[u8], level: i32) -> Vec<u8> {
        let mut enc = zstd_encoder(Vec::new(), level).unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn gzip_bytes(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn bzip2_bytes(data: &[u8]) -> Vec<u8> {
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn zstd_round_trip() {
        let data = sample();
        for level in [1, 3, 19] {
            let z = zstd_bytes(&data, level);
            assert!(z.len() < data.len());
            assert_eq!(decode_all(Codec::Zstd, &z).unwrap(), data);
        }
        assert_eq!(decode_all(Codec::Zstd, &zstd_bytes(&[], 3)).unwrap(), b"");
    }

    #[test]
    fn zstd_encoder_writes_a_checksum() {
        // Frame header descriptor bit 2 is the content checksum flag.
        let z = zstd_bytes(b"abc", 3);
        assert_eq!(z[4] & 0x04, 0x04);
    }

    #[test]
    fn zstd_concatenated_frames_decode_fully() {
        let mut z = zstd_bytes(b"first ", 3);
        z.extend(zstd_bytes(b"second", 3));
        assert_eq!(decode_all(Codec::Zstd, &z).unwrap(), b"first second");
    }

    #[test]
    fn corrupted_zstd_fails() {
        let data = sample();
        let z = zstd_bytes(&data, 3);
        let mut bad = z.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        assert!(decode_all(Codec::Zstd, &bad).is_err());
    }

    #[test]
    fn checksum_catches_corruption_the_blocks_cannot() {
        // Incompressible data is stored in raw blocks: a flipped byte there
        // is only noticed by the content checksum.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let data: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let flip = |mut z: Vec<u8>| {
            let mid = z.len() / 2;
            z[mid] ^= 0x01;
            z
        };
        let without = flip(zstd::encode_all(&data[..], 3).unwrap());
        assert_ne!(decode_all(Codec::Zstd, &without).unwrap(), data);
        let with = flip(zstd_bytes(&data, 3));
        assert!(decode_all(Codec::Zstd, &with).is_err());
    }

    #[test]
    fn sniff_without_mime_database() {
        const CHILD: &str = "ARCHIVE_CORE_TEST_NO_MIME_DB";
        if std::env::var_os(CHILD).is_some() {
            for c in COMPRESSED {
                assert!(!db_knows(c), "{c}");
            }
            let data = sample();
            assert_eq!(mime_type(&gzip_bytes(&data)), "application/octet-stream");
            assert_eq!(sniff(&zstd_bytes(&data, 3)), Codec::Zstd);
            assert_eq!(sniff(&gzip_bytes(&data)), Codec::Gzip);
            assert_eq!(sniff(&bzip2_bytes(&data)), Codec::Bzip2);
            assert_eq!(sniff(Codec::Xz.probe()), Codec::Xz);
            assert_eq!(sniff(&wal_page()), Codec::Plain);
            assert_eq!(sniff(b"BZh is how this text starts"), Codec::Plain);
            return;
        }
        // The database is loaded once per process: check in a child process
        // pointed at an empty location.
        let module = module_path!().split_once("::").unwrap().1;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &format!("{module}::sniff_without_mime_database")])
            .env("TREE_MAGIC_DIR", "/nonexistent/mime-database")
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn truncated_streams_fail() {
        let data = sample();
        for (codec, bytes) in [
            (Codec::Zstd, zstd_bytes(&data, 3)),
            (Codec::Gzip, gzip_bytes(&data)),
            (Codec::Bzip2, bzip2_bytes(&data)),
        ] {
            let cut = &bytes[..bytes.len() - 5];
            assert!(decode_all(codec, cut).is_err(), "{codec} truncated decoded");
            let mut trailing = bytes.clone();
            trailing.extend_from_slice(b"garbage!");
            assert!(
                decode_all(codec, &trailing).is_err(),
                "{codec} with trailing garbage decoded"
            );
        }
    }

    #[test]
    fn sniff_compressed_outputs() {
        let data = sample();
        let z = zstd_bytes(&data, 3);
        let g = gzip_bytes(&data);
        let b = bzip2_bytes(&data);
        assert_eq!(sniff(&z), Codec::Zstd);
        assert_eq!(sniff(&g), Codec::Gzip);
        assert_eq!(sniff(&b), Codec::Bzip2);
        assert_eq!(sniff(Codec::Xz.probe()), Codec::Xz);
        // Only the head is needed.
        assert_eq!(sniff(&z[..16]), Codec::Zstd);
    }

    #[test]
    fn sniff_plain_inputs() {
        assert_eq!(sniff(&wal_page()), Codec::Plain);
        assert_eq!(sniff(&vec![0u8; SNIFF_LEN]), Codec::Plain);
        assert_eq!(sniff(&[]), Codec::Plain);
        assert_eq!(sniff(&sample()), Codec::Plain);
        assert_eq!(
            sniff(b"1\t0/3000000\tno recovery target specified\n"),
            Codec::Plain
        );
        assert_eq!(sniff(b"START WAL LOCATION: 0/2000028"), Codec::Plain);
        // Looser than a real signature: the database alone would say bzip2.
        assert_eq!(sniff(b"BZh is how this text starts"), Codec::Plain);
        assert_eq!(sniff(&[0x1F, 0x8B, 0x07, 0, 0]), Codec::Plain);
        assert_eq!(sniff(&[0x28, 0xB5, 0x2F]), Codec::Plain);
    }

    #[test]
    fn database_names_on_this_machine() {
        // Documents what shared-mime-info 2.2 (Debian) answers; if the
        // database is absent the signatures alone still decide (see
        // `decision_rule`).
        if !db_knows(Codec::Gzip) {
            eprintln!("shared-mime-info database not found; skipping");
            return;
        }
        assert_eq!(mime_type(&zstd_bytes(b"x", 3)), "application/zstd");
        assert_eq!(mime_type(&gzip_bytes(b"x")), "application/gzip");
        assert!(matches!(
            mime_type(&bzip2_bytes(b"x")),
            "application/x-bzip" | "application/x-bzip2"
        ));
        assert_eq!(mime_type(Codec::Xz.probe()), "application/x-xz");
        assert_eq!(mime_type(&wal_page()), "application/octet-stream");
        for c in COMPRESSED {
            assert!(db_knows(c), "{c}");
        }
    }

    #[test]
    fn decision_rule() {
        let yes = |_: Codec| true;
        let no = |_: Codec| false;
        // Database knows the codec: both must agree.
        assert_eq!(decide(Some(Codec::Zstd), yes, yes), Codec::Zstd);
        assert_eq!(decide(Some(Codec::Zstd), yes, no), Codec::Plain);
        // Database missing or without this type: the signature decides.
        assert_eq!(decide(Some(Codec::Bzip2), no, no), Codec::Bzip2);
        // No signature: never compressed, whatever the database says.
        assert_eq!(decide(None, yes, yes), Codec::Plain);
        assert_eq!(decide(None, no, no), Codec::Plain);
    }

    #[test]
    fn multi_stream_bzip2_decodes_fully() {
        // pbzip2 writes one complete bzip2 stream per block.
        let a = sample();
        let b: Vec<u8> = sample().into_iter().rev().collect();
        let mut cat = bzip2_bytes(&a);
        cat.extend(bzip2_bytes(&b));
        cat.extend(bzip2_bytes(b"tail"));
        assert_eq!(sniff(&cat), Codec::Bzip2);
        let mut expected = a.clone();
        expected.extend(&b);
        expected.extend(b"tail");
        assert_eq!(decode_all(Codec::Bzip2, &cat).unwrap(), expected);
    }

    #[test]
    fn multi_member_gzip_decodes_fully() {
        let mut cat = gzip_bytes(b"one ");
        cat.extend(gzip_bytes(b"two"));
        assert_eq!(sniff(&cat), Codec::Gzip);
        assert_eq!(decode_all(Codec::Gzip, &cat).unwrap(), b"one two");
    }

    #[test]
    fn plain_passes_through_and_xz_is_unsupported() {
        let page = wal_page();
        assert_eq!(decode_all(Codec::Plain, &page).unwrap(), page);
        let e = decode_all(Codec::Xz, Codec::Xz.probe()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("xz"), "{e}");
    }

    #[test]
    fn decoder_streams_from_a_reader() {
        let data = sample();
        let z = zstd_bytes(&data, 3);
        let mut r = decoder(Codec::Zstd, io::Cursor::new(z)).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn names_and_serde() {
        for c in [
            Codec::Plain,
            Codec::Zstd,
            Codec::Gzip,
            Codec::Bzip2,
            Codec::Xz,
        ] {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
            assert_eq!(serde_json::from_str::<Codec>(&json).unwrap(), c);
            assert_eq!(c.to_string(), c.name());
        }
    }
}
