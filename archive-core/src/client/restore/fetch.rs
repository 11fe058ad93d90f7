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

use super::verify::{self, Check, Sink, Verified, VerifyError};
use crate::common::error::Error;
use crate::net::ssh::Channel;
use crate::net::wire::MAX_FILE_SIZE;
use crate::net::wire::{self, ErrorKind, Reply, Request, CHUNK};

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
/// `on_found` runs once the host answered that it has the file, before its
/// bytes arrive, with the file's archive mtime.
pub async fn fetch<W: Write + Send + 'static>(
    ch: &mut Channel,
    src_dir: &str,
    check: &Check,
    out: W,
    on_found: impl FnOnce(i64),
) -> std::result::Result<(W, Fetched), FetchError> {
    let name = check.name.as_str();
    ch.send(&Request::Get {
        dir: src_dir.to_string(),
        name: name.to_string(),
    })
    .await
    .map_err(FetchError::Host)?;
    let (size, mtime, raw_blake3) = match ch.reply().await {
        Ok(Reply::File {
            size,
            mtime,
            raw_blake3,
        }) => (size, mtime, raw_blake3),
        Ok(Reply::Error {
            kind: ErrorKind::NotFound,
            ..
        }) => return Err(FetchError::NotFound),
        Ok(Reply::Error {
            kind: kind @ (ErrorKind::Refused | ErrorKind::Conflict),
            message,
        }) => {
            return Err(FetchError::Refused(wire::reply_error(
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
    // The archive's record of the content: every decoded byte is proven
    // against it before the file is handed over.
    let proof = match raw_blake3.as_deref().map(blake3::Hash::from_hex) {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => {
            return Err(FetchError::Host(Error::host(
                ch.host(),
                format!("{name}: the announced content digest is not a blake3 digest"),
            )))
        }
    };
    on_found(mtime);

    // The decoder runs on its own thread, fed chunk by chunk. Reads from the
    // channel's 1 MiB pipe fill whole chunks: 4 queued (1 MiB) keep the
    // decoder busy; more is only memory (16 cost ~4 MiB per transfer).
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let (done_tx, done_rx) = oneshot::channel();
    let chk = Check {
        proof,
        ..check.clone()
    };
    let cannot_start =
        |e: io::Error| FetchError::Local(Error::Usage(format!("cannot start a thread: {e}")));
    let mut writer = ThreadWriter::new(out).map_err(cannot_start)?;
    std::thread::Builder::new()
        .name("restore-decode".into())
        .spawn(move || {
            let r = verify::decode_into(PipeReader::new(rx), &mut writer, &chk);
            let (out, written) = writer.finish();
            let _ = done_tx.send((out, merge_results(r, written)));
        })
        .map_err(cannot_start)?;

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

/// The decoder's verdict, corrected by the writer's: a file that decoded is
/// still not restored when writing it failed (also at the final flush), and
/// a write error is the writer's own, not the "writer stopped" the decoder
/// saw. A bad copy stays a bad copy: that is about the content.
fn merge_results(
    decoded: Result<Verified, VerifyError>,
    written: io::Result<()>,
) -> Result<Verified, VerifyError> {
    match (decoded, written) {
        (Ok(_) | Err(VerifyError::Write(_)), Err(e)) => Err(VerifyError::Write(e)),
        (decoded, _) => decoded,
    }
}

/// The decoder's output, written by a thread of its own so that decoding
/// the next chunk overlaps writing this one. Writing is not only a copy: a
/// restored segment is 16 MiB of new page cache, and on a VM that backs
/// guest memory on first touch that costs twice as much as decoding it.
/// A few chunk buffers go round between the two threads (no allocation per
/// chunk: fresh memory is what is slow), and the decoder writes straight
/// into them (as a [`Sink`]: one copy of the segment fewer).
/// Dropped without [`ThreadWriter::finish`] (the decoder panicked), it
/// still waits for its thread, so the output (a temp file that removes
/// itself) is not left behind by a process that exits meanwhile.
struct ThreadWriter<W> {
    /// Buffers to write, with the length of their content.
    full: Option<std::sync::mpsc::SyncSender<(Vec<u8>, usize)>>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<(W, io::Result<()>)>>,
    /// Always `WRITE_CHUNK` long (never zeroed again); `filled` bytes used.
    cur: Vec<u8>,
    filled: usize,
    buffers: usize,
}

const WRITE_CHUNK: usize = 256 * 1024;
const WRITE_BUFFERS: usize = 4;

impl<W: Write + Send + 'static> ThreadWriter<W> {
    fn new(mut out: W) -> io::Result<Self> {
        let (full, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(WRITE_BUFFERS);
        let (empty_tx, empty) = std::sync::mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("restore-write".into())
            .spawn(move || {
                for (buf, len) in full_rx {
                    if let Err(e) = out.write_all(&buf[..len]) {
                        return (out, Err(e));
                    }
                    let _ = empty_tx.send(buf);
                }
                let r = out.flush();
                (out, r)
            })?;
        Ok(ThreadWriter {
            full: Some(full),
            empty,
            thread: Some(thread),
            cur: vec![0u8; WRITE_CHUNK],
            filled: 0,
            buffers: 1,
        })
    }

    fn send_cur(&mut self) -> io::Result<()> {
        let next = match self.empty.try_recv() {
            Ok(b) => b,
            Err(_) if self.buffers < WRITE_BUFFERS => {
                self.buffers += 1;
                vec![0u8; WRITE_CHUNK]
            }
            Err(_) => self.empty.recv().map_err(|_| stopped())?,
        };
        let buf = std::mem::replace(&mut self.cur, next);
        let len = std::mem::take(&mut self.filled);
        match &self.full {
            Some(tx) => tx.send((buf, len)).map_err(|_| stopped()),
            None => Err(stopped()),
        }
    }

    /// Hands over what is left, waits for the writer: the output and how
    /// writing it went (flushed when it went well).
    fn finish(mut self) -> (W, io::Result<()>) {
        let sent = if self.filled == 0 {
            Ok(())
        } else {
            self.send_cur()
        };
        self.full = None;
        let thread = self.thread.take().expect("finish runs once");
        let (out, written) = match thread.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (out, written.and(sent))
    }
}

impl<W> Drop for ThreadWriter<W> {
    fn drop(&mut self) {
        self.full = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the writer thread stopped")
}

impl<W: Write + Send + 'static> Sink for ThreadWriter<W> {
    fn chunk(&mut self) -> &mut [u8] {
        // Never full here: a full buffer is sent at once (or sending it
        // failed, and the decoder stopped at that error).
        debug_assert!(self.filled < WRITE_CHUNK);
        &mut self.cur[self.filled..]
    }

    fn take(&mut self, n: usize) -> io::Result<()> {
        debug_assert!(n <= WRITE_CHUNK - self.filled);
        self.filled += n;
        if self.filled == WRITE_CHUNK {
            self.send_cur()?;
        }
        Ok(())
    }
}

/// Writing copies into the chunk buffers (tests, small outputs).
impl<W: Write + Send + 'static> Write for ThreadWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.chunk();
        let n = data.len().min(room.len());
        room[..n].copy_from_slice(&data[..n]);
        self.take(n)?;
        Ok(n)
    }

    /// Nothing to do: [`ThreadWriter::finish`] flushes.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::restore::verify::tests::{segment, zstd, SEG};
    use crate::common::wal::WalName;

    #[tokio::test]
    async fn pipe_reader_feeds_the_decoder_across_chunks() {
        let seg = segment("000000010000000000000007");
        let z = zstd(&seg);
        let (tx, rx) = mpsc::channel(4);
        let check = Check {
            name: WalName::parse("000000010000000000000007").unwrap(),
            sysid: None,
            hash: true,
            seg_size: None,
            proof: None,
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

    /// The decoder writes straight into the writer's buffers: the bytes
    /// that reach the output are exactly the segment, in order, with every
    /// buffer reused several times (4 MiB of distinct content, 16 chunks).
    #[test]
    fn decoding_into_the_thread_writer_restores_the_exact_bytes() {
        let size: u64 = 4 << 20;
        let name = WalName::parse("000000010000000000000007").unwrap();
        let mut seg: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let hdr = crate::common::page_header::build_long_header(
            15,
            1,
            name.start_lsn(size),
            1,
            size as u32,
        );
        seg[..hdr.len()].copy_from_slice(&hdr);
        let check = Check {
            name,
            sysid: None,
            hash: true,
            seg_size: Some(size),
            proof: None,
        };
        for stored in [zstd(&seg), seg.clone()] {
            let mut w = ThreadWriter::new(Vec::new()).unwrap();
            let r = verify::decode_into(&stored[..], &mut w, &check);
            let (out, written) = w.finish();
            let v = merge_results(r, written).unwrap();
            assert_eq!(v.size, size);
            assert!(out == seg, "bytes differ");
        }
    }

    /// What the content proof costs restore-cmd's decoding as it runs:
    /// a 16 MiB zstd segment decoded into a file through the writer thread,
    /// with and without the proof (run with `--release --ignored
    /// --nocapture`, `TIMING_DIR` to pick the file system; printed, not
    /// asserted). The decoder thread hashes; hashing on the writer thread
    /// instead measured slower (the writer is then the slower thread).
    #[test]
    #[ignore]
    fn timing_of_the_content_proof_into_a_file() {
        const BIG: u64 = 16 << 20;
        let name = WalName::parse("000000010000000000000007").unwrap();
        let seg = crate::server::store::testing::half_noise_segment(&name, 1);
        let z = zstd(&seg);
        let plain = Check {
            name,
            sysid: None,
            hash: false,
            seg_size: Some(BIG),
            proof: None,
        };
        let proven = Check {
            proof: Some(blake3::hash(&seg)),
            ..plain.clone()
        };
        let dir =
            tempfile::tempdir_in(std::env::var("TIMING_DIR").unwrap_or("/tmp".into())).unwrap();
        let time = |c: &Check| {
            let mut all = Vec::new();
            for i in 0..20 {
                let path = dir.path().join(format!("f{i}"));
                let t = std::time::Instant::now();
                let f = std::fs::File::create(&path).unwrap();
                let mut w = ThreadWriter::new(f).unwrap();
                let r = verify::decode_into(&z[..], &mut w, c);
                let (_f, written) = w.finish();
                merge_results(r, written).unwrap();
                all.push(t.elapsed());
                std::fs::remove_file(&path).unwrap();
            }
            all.sort();
            all[all.len() / 2]
        };
        for _ in 0..3 {
            let (a, b) = (time(&plain), time(&proven));
            println!(
                "16 MiB zstd segment into a file: median {:.2} ms, with the proof {:.2} ms ({:+.2} ms)",
                a.as_secs_f64() * 1e3,
                b.as_secs_f64() * 1e3,
                (b.as_secs_f64() - a.as_secs_f64()) * 1e3
            );
        }
    }

    #[test]
    fn thread_writer_keeps_order_across_uneven_writes() {
        let data: Vec<u8> = (0..3 * WRITE_CHUNK * WRITE_BUFFERS + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = ThreadWriter::new(Vec::new()).unwrap();
        let mut rest = &data[..];
        let mut step = 1;
        while !rest.is_empty() {
            let n = w.write(&rest[..step.min(rest.len())]).unwrap();
            rest = &rest[n..];
            step = step * 3 % 700_001 + 1;
        }
        let (out, r) = w.finish();
        r.unwrap();
        assert!(out == data);
    }

    /// Fails on the write after `ok` bytes, or at flush.
    struct Failing {
        ok: usize,
        flush_fails: bool,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.ok < buf.len() {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            self.ok -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            if self.flush_fails {
                return Err(io::Error::other("flush failed"));
            }
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_stops_the_decoder_and_is_reported_as_itself() {
        let mut w = ThreadWriter::new(Failing {
            ok: 0,
            flush_fails: false,
        })
        .unwrap();
        // More chunks than buffers go round: the producer must learn that
        // the writer stopped (no buffer ever comes back), not block.
        let stopped = w
            .write_all(&vec![7u8; 4 * WRITE_BUFFERS * WRITE_CHUNK])
            .unwrap_err();
        assert!(
            stopped.to_string().contains("writer thread stopped"),
            "{stopped}"
        );
        let (_, written) = w.finish();
        let merged = merge_results(Err(VerifyError::Write(stopped)), written);
        match merged {
            Err(VerifyError::Write(e)) => assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}"),
            other => panic!("expected the writer's own error, got {other:?}"),
        }
    }

    #[test]
    fn a_segment_that_decoded_is_not_restored_when_the_final_flush_fails() {
        let seg = segment("000000010000000000000007");
        let check = Check {
            name: WalName::parse("000000010000000000000007").unwrap(),
            sysid: None,
            hash: false,
            seg_size: None,
            proof: None,
        };
        let mut w = ThreadWriter::new(Failing {
            ok: usize::MAX,
            flush_fails: true,
        })
        .unwrap();
        let decoded = verify::decode_into(&zstd(&seg)[..], &mut w, &check);
        assert_eq!(decoded.as_ref().unwrap().size, SEG);
        let (_, written) = w.finish();
        assert!(matches!(
            merge_results(decoded, written),
            Err(VerifyError::Write(e)) if e.to_string().contains("flush failed")
        ));
    }

    #[test]
    fn a_bad_copy_stays_bad_whatever_the_writer_did() {
        let bad = || Err(VerifyError::Bad("truncated".into()));
        for written in [Ok(()), Err(io::Error::other("disk gone"))] {
            assert!(matches!(
                merge_results(bad(), written),
                Err(VerifyError::Bad(m)) if m == "truncated"
            ));
        }
    }

    /// Sets its flag when dropped; each write takes a while.
    struct SlowOut(std::sync::Arc<std::sync::atomic::AtomicBool>);

    impl Write for SlowOut {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_millis(50));
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for SlowOut {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn dropped_unfinished_it_waits_for_its_thread_to_release_the_output() {
        let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut w = ThreadWriter::new(SlowOut(released.clone())).unwrap();
        w.write_all(&vec![1u8; 2 * WRITE_CHUNK]).unwrap();
        // As when the decoder panics: no finish().
        drop(w);
        assert!(released.load(std::sync::atomic::Ordering::SeqCst));
    }
}
