//! Helpers for the store's tests (and the serve loop's): fabricated WAL
//! segments, put requests, and a put driven over an in-memory stream.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::common::codec;
use crate::common::error::Result;
use crate::common::page_header::build_long_header;
use crate::common::wal::WalName;
use crate::net::wire::{self, PutRequest, Request};

use super::{Store, Stored};

/// Segment size of the fabricated segments (1 MiB).
pub(crate) const SEG: u64 = 1 << 20;
/// System identifier of the fabricated cluster.
pub(crate) const SYSID: u64 = 7_000_000_000_000_000_001;

/// A fabricated 16 MiB segment for timing tests: a valid long header, then
/// half text-like noise, half zeros (compresses about 3 to 4:1).
pub(crate) fn half_noise_segment(name: &WalName, sysid: u64) -> Vec<u8> {
    const BIG: u64 = 16 << 20;
    let mut seg = vec![0u8; BIG as usize];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, b) in seg.iter_mut().enumerate() {
        if (i / 4096) % 2 == 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = b'a' + (x % 16) as u8;
        }
    }
    let hdr = build_long_header(15, 1, name.start_lsn(BIG), sysid, BIG as u32);
    seg[..hdr.len()].copy_from_slice(&hdr);
    seg
}

/// A fabricated 1 MiB segment: a valid long header, then WAL-like bytes.
pub(crate) fn segment(name: &str, sysid: u64, fill: u8) -> Vec<u8> {
    let n = WalName::parse(name).unwrap();
    let mut v = vec![0u8; SEG as usize];
    for (i, b) in v.iter_mut().enumerate() {
        *b = ((i / 97) as u8).wrapping_mul(fill) ^ (i as u8 & 0x0f);
    }
    v[..40].copy_from_slice(&build_long_header(
        15,
        1,
        n.start_lsn(SEG),
        sysid,
        SEG as u32,
    ));
    v
}

/// A put of `name` into `dir` (cluster "main", a fixed mtime).
pub(crate) fn req(dir: &Path, name: &str, size: u64) -> PutRequest {
    PutRequest {
        dir: dir.to_string_lossy().into_owned(),
        name: name.into(),
        size,
        mtime: 1_700_000_000,
        cluster: "main".into(),
        forward_to: None,
        from: None,
        forward_in_background: false,
        raw_blake3: None,
    }
}

/// Puts `content` with its correct closing checksum.
pub(crate) async fn put_bytes(store: &Store, r: &PutRequest, content: &[u8]) -> Result<Stored> {
    let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
    let content = content.to_vec();
    let writer = tokio::spawn(async move {
        tx.write_all(&content).await.unwrap();
        let sum = blake3::hash(&content).to_hex().to_string();
        wire::write_frame(
            &mut tx,
            &Request::End { checksum: sum },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    });
    let res = store.put(r, &mut rx).await;
    writer.await.unwrap();
    res
}

/// A store whose only archive root is `root`.
pub(crate) fn store(root: &Path) -> Store {
    Store::new(vec![root.to_path_buf()], 1, Duration::from_secs(5))
}

/// Names in `dir` that are neither temp nor metadata files.
pub(crate) fn visible(dir: &Path) -> Vec<String> {
    crate::common::durable::visible_names(dir)
}

/// zstd as a peer server or a compressing primary sends it: one frame
/// declaring its size.
pub(crate) fn zstd_one_frame(raw: &[u8]) -> Vec<u8> {
    let mut enc = codec::zstd_encoder(Vec::new(), 1).unwrap();
    enc.set_pledged_src_size(Some(raw.len() as u64)).unwrap();
    enc.write_all(raw).unwrap();
    enc.finish().unwrap()
}
