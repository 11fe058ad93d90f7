//! Fetching one file from an archive host: the stored (usually compressed)
//! bytes stream in over a protocol channel while another thread decodes and
//! verifies them into the destination (see [`super::verify`]), so transfer
//! and decompression overlap and nothing larger than a chunk is held in
//! memory, whatever the segment size.
//!
//! The channel stays usable after "not found", a too-young file and a bad
//! copy (the rest of the bytes is read and dropped); only a transfer error
//! leaves it mid-message, and the caller must not reuse it then.

use std::io::{self, Read, Write};

use tokio::sync::{mpsc, oneshot};

use super::verify::{self, Check, Verified, VerifyError};
use crate::error::Error;
use crate::protocol::{self, ErrorKind, Reply, Request, CHUNK};
use crate::store::MAX_FILE_SIZE;
use crate::transport::Channel;

/// A file that arrived, decoded and passed the checks.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// What the decoder found.
    pub verified: Verified,
    /// The archive's mtime (when it was archived), Unix seconds.
    pub mtime: i64,
    /// Bytes as stored on the host.
    pub stored_size: u64,
}

/// Why a fetch did not produce the file.
#[derive(Debug)]
pub enum FetchError {
    /// The host answered that it does not have it.
    NotFound,
    /// The host's copy does not decode or is not the file its name says.
    Bad(String),
    /// The host refused the request (e.g. SRC-DIR outside its archive
    /// roots): a configuration problem, not the host's health.
    Refused(Error),
    /// The host could not be reached or the transfer failed; the channel
    /// must not be reused.
    Host(Error),
    /// Writing the file locally failed.
    Local(Error),
}

impl FetchError {
    /// Whether the channel can carry another request.
    pub fn channel_usable(&self) -> bool {
        !matches!(self, FetchError::Host(_))
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::NotFound => f.write_str("not found"),
            FetchError::Bad(m) => write!(f, "bad copy: {m}"),
            FetchError::Refused(e) | FetchError::Host(e) | FetchError::Local(e) => e.fmt(f),
        }
    }
}

/// Fetches `check.name` from `src_dir` over `ch`, decoding it into `out`.
/// On success `out` comes back holding the verified bytes (a temp file the
/// caller commits, or drops when the file is too young for the delay).
pub async fn fetch<W: Write + Send + 'static>(
    ch: &mut Channel,
    src_dir: &str,
    check: &Check,
    out: W,
) -> std::result::Result<(W, Fetched), FetchError> {
    let name = check.name.as_str();
    ch.send(&Request::Get {
        dir: src_dir.to_string(),
        name: name.to_string(),
    })
    .await
    .map_err(FetchError::Host)?;
    let (size, mtime) = match ch.reply().await {
        Ok(Reply::File { size, mtime }) => (size, mtime),
        Ok(Reply::Error {
            kind: ErrorKind::NotFound,
            ..
        }) => return Err(FetchError::NotFound),
        Ok(Reply::Error {
            kind: kind @ (ErrorKind::Refused | ErrorKind::Conflict),
            message,
        }) => {
            return Err(FetchError::Refused(protocol::reply_error(
                ch.host(),
                kind,
                message,
            )))
        }
        Ok(other) => return Err(FetchError::Host(ch.unexpected(other))),
        Err(e) => return Err(FetchError::Host(e)),
    };
    if size > MAX_FILE_SIZE {
        return Err(FetchError::Host(Error::host(
            ch.host(),
            format!("{name} is {size} bytes, larger than any WAL file"),
        )));
    }

    // The decoder runs on its own thread, fed chunk by chunk. Reads from the
    // channel's 1 MiB pipe fill whole chunks: 4 queued (1 MiB) keep the
    // decoder busy; more is only memory (16 cost ~4 MiB per transfer).
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let (done_tx, done_rx) = oneshot::channel();
    let chk = check.clone();
    std::thread::Builder::new()
        .name("restore-decode".into())
        .spawn(move || {
            let mut out = out;
            let r = verify::decode_verify(PipeReader::new(rx), &mut out, &chk)
                .and_then(|v| out.flush().map(|()| v).map_err(VerifyError::Write));
            let _ = done_tx.send((out, r));
        })
        .map_err(|e| FetchError::Local(Error::Usage(format!("cannot start a thread: {e}"))))?;

    let mut tx = Some(tx);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut remaining = size;
    let mut failure = None;
    while remaining > 0 {
        match ch.read_data(&mut buf, remaining).await {
            Ok(n) => {
                hasher.update(&buf[..n]);
                remaining -= n as u64;
                if let Some(t) = &tx {
                    // The decoder stops early on a bad copy: then the rest
                    // is only read, to keep the channel usable.
                    if t.send(buf[..n].to_vec()).await.is_err() {
                        tx = None;
                    }
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if failure.is_none() {
        failure = match ch.reply().await {
            Ok(Reply::End { checksum }) if checksum == hasher.finalize().to_hex().as_str() => None,
            Ok(Reply::End { .. }) => Some(Error::host(
                ch.host(),
                format!("{name}: checksum mismatch in transfer"),
            )),
            Ok(other) => Some(ch.unexpected(other)),
            Err(e) => Some(e),
        };
    }
    drop(tx);
    let decoded = done_rx.await;
    if let Some(e) = failure {
        return Err(FetchError::Host(e));
    }
    match decoded {
        Ok((out, Ok(verified))) => Ok((
            out,
            Fetched {
                verified,
                mtime,
                stored_size: size,
            },
        )),
        Ok((_, Err(VerifyError::Bad(m)))) => Err(FetchError::Bad(m)),
        Ok((_, Err(VerifyError::Write(e)))) => Err(FetchError::Local(Error::io(
            "cannot write the restored copy of",
            name,
            e,
        ))),
        Err(_) => Err(FetchError::Local(Error::Usage(format!(
            "{name}: the decoder thread failed"
        )))),
    }
}

/// The decoder thread's input: chunks from the transfer, in order; end of
/// stream when the sender is dropped.
struct PipeReader {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl PipeReader {
    fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        PipeReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                Some(v) => {
                    self.cur = v;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::verify::tests::{segment, zstd, SEG};
    use crate::wal::WalName;

    #[tokio::test]
    async fn pipe_reader_feeds_the_decoder_across_chunks() {
        let seg = segment("000000010000000000000007");
        let z = zstd(&seg);
        let (tx, rx) = mpsc::channel(4);
        let check = Check {
            name: WalName::parse("000000010000000000000007").unwrap(),
            sysid: None,
            hash: true,
        };
        let t = std::thread::spawn(move || {
            let mut out = Vec::new();
            let r = verify::decode_verify(PipeReader::new(rx), &mut out, &check);
            (out, r)
        });
        for c in z.chunks(1000) {
            tx.send(c.to_vec()).await.unwrap();
        }
        drop(tx);
        let (out, r) = t.join().unwrap();
        assert_eq!(r.unwrap().size, SEG);
        assert!(out == seg);
    }
}
