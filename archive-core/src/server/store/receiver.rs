//! Receiving a put's content into a temp file: the codec is sniffed from
//! the first bytes; plain content has its WAL page header checked and is
//! compressed with zstd, compressed content is kept as received once proven
//! whole (a single-frame zstd segment by its frame and first block, other
//! codecs by one full decode). The transfer checksum and, for a WAL segment,
//! its size against its header are checked at the end.
//!
//! The result carries the raw content's blake3, the file's content proof
//! ([`super::digest`]): proven here when the content was compressed here or
//! decoded in full (then a digest the sender declared must match it), or
//! taken from the sender when the light check was enough (a reader proves
//! it: restore-cmd and wal-sync decode every byte). Compressed content
//! without a declared digest is decoded in full, so every file accepted has
//! a proof.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::common::codec::{self, Codec};
use crate::common::durable::AtomicFile;
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::common::page_header;
use crate::common::wal::WalName;

use super::raw;

/// Compressed bytes read to decode the first block: a zstd block holds at
/// most 128 KiB, so this always covers the first one.
const FIRST_LEN: usize = 256 * 1024;

/// For a zstd WAL segment in `file`: the raw size its frame header declares
/// and its first raw bytes (the WAL page header), without decompressing the
/// rest. `None` (decode it
/// all) for other codecs and files, a file that is not exactly one complete
/// frame, a frame that does not declare its size, a start that does not
/// decode, or a declared size other than the header's segment size.
fn light_zstd_check(codec: Codec, name: &WalName, file: &Path) -> Option<(u64, Vec<u8>)> {
    if codec != Codec::Zstd || !name.has_page_header() {
        return None;
    }
    let mut f = File::open(file).ok()?;
    let mut first = vec![0u8; FIRST_LEN];
    let n = codec::read_full(&mut f, &mut first).ok()?;
    first.truncate(n);
    // Structurally whole: the one frame ends exactly at the end of the file.
    let len = f.metadata().ok()?.len();
    if codec::zstd_frame_len(&mut f).ok()?? != len {
        return None;
    }
    let size = zstd::zstd_safe::get_frame_content_size(&first).ok()??;
    let mut dec = zstd::stream::read::Decoder::new(&first[..]).ok()?;
    let mut head = vec![0u8; page_header::LONG_HEADER_LEN.min(size as usize)];
    dec.read_exact(&mut head).ok()?;
    let hdr = page_header::validate_first_page(&head, name).ok()?;
    (u64::from(hdr.seg_size) == size).then_some((size, head))
}

/// Incoming content being written to a temp file.
pub(super) struct Receiver {
    name: WalName,
    level: i32,
    declared: u64,
    head: Vec<u8>,
    output: Option<Output>,
    payload_hash: blake3::Hasher,
    raw_size: u64,
    dest: PathBuf,
    /// Most raw bytes the content may decode to.
    max_raw: u64,
    error: Option<Error>,
    /// Header of plain content, checked before compressing it.
    header: Option<page_header::LongPageHeader>,
    /// The raw content's blake3 as the sender declared it.
    raw_declared: Option<blake3::Hash>,
    /// Prove the declared digest whatever the codec (a full decode instead
    /// of the light check): for copies wal-sync pulls.
    prove: bool,
}

/// Plain files up to this size are compressed in one call once received:
/// about 15% less CPU than compressing the stream as it comes (whose window
/// keeps moving, the costlier "extDict" path); bigger ones are compressed
/// as they stream in, in bounded memory.
const WHOLE_MAX: u64 = 64 << 20;

enum Output {
    Compress(zstd::stream::write::Encoder<'static, AtomicFile>),
    Whole(AtomicFile, Vec<u8>),
    AsIs(AtomicFile, Codec),
}

/// Content received in full and checked, in its temp file.
pub(super) struct Received {
    /// The temp file, to be committed under the final name.
    pub file: AtomicFile,
    /// Codec of the bytes in it.
    pub codec: Codec,
    /// Bytes in it.
    pub stored_size: u64,
    /// blake3 of the raw content: the file's content proof.
    pub raw_hash: blake3::Hash,
    /// Whether `raw_hash` was computed here from the content (else it is
    /// the sender's, taken after the light check).
    pub proven: bool,
    /// A WAL segment's system identifier (from its page header).
    pub system_identifier: Option<u64>,
}

impl Receiver {
    /// A receiver writing next to `dest`, for `declared` content bytes whose
    /// raw content the sender says has blake3 `raw_declared`; `prove` makes
    /// it check that digest even where the light check would do.
    pub(super) fn new(
        dest: &Path,
        name: &WalName,
        level: i32,
        declared: u64,
        max_raw: u64,
        raw_declared: Option<blake3::Hash>,
        prove: bool,
    ) -> Receiver {
        Receiver {
            name: name.clone(),
            level,
            declared,
            head: Vec::new(),
            output: None,
            payload_hash: blake3::Hasher::new(),
            raw_size: 0,
            dest: dest.to_path_buf(),
            max_raw,
            error: None,
            header: None,
            raw_declared,
            prove,
        }
    }

    /// Takes the next content bytes. Errors are remembered, not returned, so
    /// the caller keeps draining the stream.
    pub(super) fn push(&mut self, data: &[u8]) {
        self.payload_hash.update(data);
        if self.error.is_some() {
            return;
        }
        if self.output.is_none() {
            // Decide the codec from the first SNIFF_LEN bytes (or all of a
            // smaller file).
            let want = codec::SNIFF_LEN.min(self.declared as usize);
            let take = (want - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            if self.head.len() < want {
                return;
            }
            let head = std::mem::take(&mut self.head);
            if let Err(e) = self.open_output(&head) {
                self.error = Some(e);
                return;
            }
            self.write(&head);
            self.write(&data[take..]);
        } else {
            self.write(data);
        }
    }

    fn open_output(&mut self, head: &[u8]) -> Result<()> {
        let codec = codec::sniff(head);
        let file = AtomicFile::create(&self.dest)?;
        self.output = Some(match codec {
            Codec::Plain => {
                if self.name.has_page_header() {
                    self.header = Some(page_header::validate_first_page(head, &self.name)?);
                }
                if self.declared <= WHOLE_MAX {
                    Output::Whole(file, Vec::with_capacity(self.declared as usize))
                } else {
                    let mut enc = codec::zstd_encoder(file, self.level)
                        .map_err(|e| Error::io("cannot start compressing", &self.dest, e))?;
                    let _ = enc.set_pledged_src_size(Some(self.declared));
                    Output::Compress(enc)
                }
            }
            Codec::Xz => {
                return Err(Error::Refused(format!(
                    "{}: xz-compressed files are not supported; send it uncompressed or as zstd/gzip/bzip2",
                    self.name
                )))
            }
            other => Output::AsIs(file, other),
        });
        Ok(())
    }

    fn write(&mut self, data: &[u8]) {
        if data.is_empty() || self.error.is_some() {
            return;
        }
        let res = match self.output.as_mut().expect("opened") {
            Output::Compress(enc) => {
                self.raw_size += data.len() as u64;
                enc.write_all(data)
            }
            Output::Whole(_, buf) => {
                self.raw_size += data.len() as u64;
                buf.extend_from_slice(data);
                Ok(())
            }
            Output::AsIs(f, _) => f.write_all(data),
        };
        if let Err(e) = res {
            self.error = Some(Error::io("cannot write", &self.dest, e));
        }
    }

    /// Checks the transfer `checksum` and what was received; the content
    /// is then ready to commit.
    pub(super) fn finish(mut self, checksum: &str) -> Result<Received> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let payload_hash = self.payload_hash.finalize();
        if payload_hash.to_hex().as_str() != checksum {
            // Damaged in transit, not bad input: a failure of this
            // connection, so the client counts it and can fail over.
            return Err(Error::Protocol(format!(
                "{}: checksum of the received bytes does not match the sender's; nothing stored, retry",
                self.name
            )));
        }
        if self.output.is_none() {
            // Never reached SNIFF_LEN: impossible for a non-empty declared
            // size, since push() completes the head at the declared size.
            return Err(Error::Protocol(format!(
                "{}: no content received",
                self.name
            )));
        }
        let (file, codec) = match self.output.take().expect("checked") {
            Output::Compress(enc) => {
                let f = enc
                    .finish()
                    .map_err(|e| Error::io("cannot finish compressing", &self.dest, e))?;
                (f, Codec::Zstd)
            }
            Output::Whole(mut f, raw) => {
                let z = codec::zstd_compress(&raw, self.level)
                    .map_err(|e| Error::io("cannot compress", &self.dest, e))?;
                f.write_all(&z)
                    .map_err(|e| Error::io("cannot write", &self.dest, e))?;
                (f, Codec::Zstd)
            }
            Output::AsIs(f, codec) => (f, codec),
        };
        let stored_size = file
            .temp_path()
            .metadata()
            .map_err(|e| Error::io("cannot stat", file.temp_path().to_path_buf(), e))?
            .len();
        let light = self
            .raw_declared
            .filter(|_| !self.prove)
            .and_then(|d| Some((d, light_zstd_check(codec, &self.name, file.temp_path())?)));
        let (raw_size, raw_hash, head, proven) = if codec == Codec::Zstd && self.raw_size > 0 {
            // Compressed here: the payload is the raw content.
            (self.raw_size, payload_hash, Vec::new(), true)
        } else if let Some((declared, (size, head))) = light {
            // zstd from a peer server or a compressing primary, with the
            // raw content's digest: the transfer checksum proves the bytes
            // are what the sender holds, the frame header gives the raw size
            // and the first block the WAL header. The full decode (the
            // costliest step of a forward) is left to readers, which decode
            // every byte anyway and prove it against the digest recorded
            // now; a duplicate put decodes in full in commit().
            (size, declared, head, false)
        } else {
            // Other codecs: decode once to prove it is whole and to learn
            // what it holds.
            let raw = raw::decode(file.temp_path(), self.max_raw).map_err(|e| {
                Error::Refused(format!(
                    "{}: received compressed data is damaged: {e}",
                    self.name
                ))
            })?;
            (raw.size, raw.hash, raw.head, true)
        };
        if let Some(declared) = self.raw_declared.filter(|d| proven && *d != raw_hash) {
            return Err(Error::Refused(format!(
                "{}: the content decodes to other bytes than the sender declared (blake3 {}, declared {}); nothing stored",
                self.name,
                raw_hash.to_hex(),
                declared.to_hex()
            )));
        }
        let system_identifier = if self.name.has_page_header() {
            let hdr = match self.header.take() {
                Some(h) => h,
                None => page_header::validate_first_page(&head, &self.name)?,
            };
            if raw_size != u64::from(hdr.seg_size) {
                return Err(Error::Refused(format!(
                    "{}: {} bytes, but its header says segments are {} bytes; a WAL segment is never partial",
                    self.name, raw_size, hdr.seg_size
                )));
            }
            let file = self.dest.display().to_string();
            if let Some(w) = hdr.unknown_magic_warning(&file) {
                log::warn(w);
            }
            Some(hdr.system_identifier)
        } else {
            None
        };
        Ok(Received {
            file,
            codec,
            stored_size,
            raw_hash,
            proven,
            system_identifier,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;
    use std::time::{Duration, SystemTime};

    use tokio::io::AsyncWriteExt;

    use super::super::testing::{
        put_bytes, req, segment, store, visible, zstd_one_frame, SEG, SYSID,
    };
    use crate::common::codec::{self, Codec};
    use crate::common::error::Error;
    use crate::net::wire::{self, Request, StoreOutcome};

    /// Bytes damaged on the way are the connection's failure (the client
    /// counts it and can fail over), not bad input.
    #[tokio::test]
    async fn a_transfer_checksum_mismatch_is_a_failure_not_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "000000010000000000000006";
        let seg = segment(name, SYSID, 3);
        let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
        let sent = seg.clone();
        let writer = tokio::spawn(async move {
            tx.write_all(&sent).await.unwrap();
            let wrong = blake3::hash(b"something else").to_hex().to_string();
            let end = Request::End { checksum: wrong };
            wire::write_frame(&mut tx, &end, Duration::from_secs(5))
                .await
                .unwrap();
        });
        let e = store(root.path())
            .put(&req(&dir, name, SEG), &mut rx)
            .await
            .unwrap_err();
        writer.await.unwrap();
        assert!(e.is_host_failure(), "{e:?}");
        assert!(visible(&dir).is_empty(), "nothing stored");
    }

    #[tokio::test]
    async fn plain_segment_is_compressed_and_decodes_to_the_same_bytes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "000000010000000000000003";
        let seg = segment(name, SYSID, 3);
        let s = put_bytes(&store(root.path()), &req(&dir, name, SEG), &seg)
            .await
            .unwrap();
        assert_eq!(s.outcome, StoreOutcome::Stored);
        assert_eq!(s.codec, Codec::Zstd);
        let on_disk = fs::read(dir.join(name)).unwrap();
        assert!(on_disk.len() < seg.len());
        assert_eq!(codec::decode_all(Codec::Zstd, &on_disk).unwrap(), seg);
        let mtime = fs::metadata(dir.join(name)).unwrap().modified().unwrap();
        assert_eq!(
            mtime,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }

    #[tokio::test]
    async fn compressed_input_is_stored_as_received() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "000000010000000000000004";
        let seg = segment(name, SYSID, 5);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&seg).unwrap();
        let gz = gz.finish().unwrap();
        let s = put_bytes(&store(root.path()), &req(&dir, name, gz.len() as u64), &gz)
            .await
            .unwrap();
        assert_eq!(s.codec, Codec::Gzip);
        assert_eq!(fs::read(dir.join(name)).unwrap(), gz);
    }

    #[tokio::test]
    async fn zstd_from_a_peer_is_checked_by_its_frame_and_header() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let st = store(root.path());
        let name = "000000010000000000000006";
        let seg = segment(name, SYSID, 3);
        let z = zstd_one_frame(&seg);
        let s = put_bytes(&st, &req(&dir, name, z.len() as u64), &z)
            .await
            .unwrap();
        assert_eq!(s.codec, Codec::Zstd);
        assert_eq!(fs::read(dir.join(name)).unwrap(), z);

        // The header is still checked: a segment under another name is refused.
        let wrong = "000000010000000000000007";
        let e = put_bytes(&st, &req(&dir, wrong, z.len() as u64), &z)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e}");
        assert!(!dir.join(wrong).exists());

        // A duplicate compares raw content: the same segment compressed
        // otherwise is the same; other content is a conflict.
        let mut z9 = codec::zstd_encoder(Vec::new(), 9).unwrap();
        z9.write_all(&seg).unwrap();
        let z9 = z9.finish().unwrap();
        let again = put_bytes(&st, &req(&dir, name, z9.len() as u64), &z9)
            .await
            .unwrap();
        assert_eq!(again.outcome, StoreOutcome::AlreadyStored);
        let other = zstd_one_frame(&segment(name, SYSID, 4));
        let e = put_bytes(&st, &req(&dir, name, other.len() as u64), &other)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        assert_eq!(fs::read(dir.join(name)).unwrap(), z);
    }

    #[tokio::test]
    async fn zstd_in_several_frames_is_decoded_in_full() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "000000010000000000000008";
        let seg = segment(name, SYSID, 6);
        let half = seg.len() / 2;
        let mut z = zstd_one_frame(&seg[..half]);
        z.extend(zstd_one_frame(&seg[half..]));
        put_bytes(&store(root.path()), &req(&dir, name, z.len() as u64), &z)
            .await
            .unwrap();
        assert_eq!(
            codec::decode_all(Codec::Zstd, &fs::read(dir.join(name)).unwrap()).unwrap(),
            seg
        );

        // Cut short, though its start (and WAL header) decodes: refused.
        let name2 = "000000010000000000000009";
        let z2 = zstd_one_frame(&segment(name2, SYSID, 6));
        let cut = &z2[..z2.len() - 100];
        let e = put_bytes(
            &store(root.path()),
            &req(&dir, name2, cut.len() as u64),
            cut,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e}");
        assert!(!dir.join(name2).exists());
    }

    #[tokio::test]
    async fn checksum_mismatch_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "00000002.history";
        let text = b"1\t0/3000000\tno recovery target specified\n";
        let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            tx.write_all(text).await.unwrap();
            let end = Request::End {
                checksum: "00".into(),
            };
            wire::write_frame(&mut tx, &end, Duration::from_secs(5))
                .await
                .unwrap();
        });
        let r = req(&dir, name, text.len() as u64);
        let e = store(root.path()).put(&r, &mut rx).await.unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        assert!(visible(&dir).is_empty());
    }

    #[tokio::test]
    async fn history_file_is_stored() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "00000002.history";
        let text = b"1\t0/3000000\tno recovery target specified\n";
        let s = put_bytes(
            &store(root.path()),
            &req(&dir, name, text.len() as u64),
            text,
        )
        .await
        .unwrap();
        let stored = fs::read(dir.join(name)).unwrap();
        assert_eq!(codec::decode_all(s.codec, &stored).unwrap(), text);
    }
}
