//! What a stored (usually compressed) file holds once decoded: its raw size,
//! the blake3 of its raw bytes, its codec and its first bytes. Digest
//! requests and the duplicate-or-conflict decision compare raw content, so a
//! copy compressed otherwise is still the same file.

use std::io::{BufReader, Read};
use std::path::Path;

use crate::common::codec::{self, Codec};
use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::common::page_header;
use crate::net::wire::CHUNK;

/// A stored file, decoded.
#[derive(Debug, Clone)]
pub(crate) struct RawContent {
    /// Decoded size in bytes.
    pub size: u64,
    /// blake3 of the decoded bytes.
    pub hash: blake3::Hash,
    /// Codec of the file on disk.
    pub codec: Codec,
    /// First decoded bytes, up to a WAL long page header (for header checks).
    pub head: Vec<u8>,
}

/// Decodes the file at `path` in full, up to `max` raw bytes. A file that
/// does not decode, or decodes to more, is [`Error::Refused`]; callers that
/// own the file turn that into their own error.
pub(crate) fn decode(path: &Path, max: u64) -> Result<RawContent> {
    let mut f = durable::open_no_follow(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut head = vec![0u8; codec::SNIFF_LEN];
    let n = codec::read_full(&mut f, &mut head).map_err(|e| Error::io("cannot read", path, e))?;
    head.truncate(n);
    let codec = codec::sniff(&head);
    let f = durable::open_no_follow(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut dec = codec::decoder_limited(codec, BufReader::with_capacity(CHUNK, f), max)
        .map_err(|e| Error::Refused(format!("{}: {e}", path.display())))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut first = Vec::new();
    let mut total = 0u64;
    loop {
        let n = dec.read(&mut buf).map_err(|e| {
            Error::Refused(format!(
                "{} does not decode as {}: {e}",
                path.display(),
                codec.name()
            ))
        })?;
        if n == 0 {
            break;
        }
        if first.len() < page_header::LONG_HEADER_LEN {
            first.extend_from_slice(&buf[..n.min(page_header::LONG_HEADER_LEN)]);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok(RawContent {
        size: total,
        hash: hasher.finalize(),
        codec,
        head: first,
    })
}
