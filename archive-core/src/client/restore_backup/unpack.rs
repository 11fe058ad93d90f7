//! Streaming one tar archive of a backup from the archive server into a
//! directory: channel → pipe → decoder → tar, so nothing is stored twice
//! and the transfer, the decompression and the writing overlap.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::path::Path;
use std::rc::Rc;

use crate::client::base_backup::verify::{decoder, TarCompression};
use crate::common::error::{Error, Result};
use crate::common::progress::{Counting, Progress};
use crate::net::ssh::Channel;

/// Pipe capacity asked for: fewer wake-ups between the two sides than
/// the default 64 KiB (best effort: the system may cap it).
const PIPE_SIZE: usize = 1 << 20;

/// Fetches archive `name` (compressed as `codec`) of backup `index` and
/// unpacks it into `dir`.
pub async fn fetch_and_unpack(
    ch: &mut Channel,
    backup_dir: &str,
    index: u32,
    name: &str,
    codec: TarCompression,
    dir: &Path,
    progress: &Progress,
) -> Result<()> {
    let (reader, writer) = io::pipe().map_err(|e| Error::io("cannot make a pipe for", dir, e))?;
    let _ = rustix::pipe::fcntl_setpipe_size(&writer, PIPE_SIZE);
    let (n, d) = (name.to_string(), dir.to_path_buf());
    let unpacker = std::thread::Builder::new()
        .name("unpack".into())
        .spawn(move || unpack(reader, &n, codec, &d))
        .map_err(|e| Error::io("cannot start a thread to unpack into", dir, e))?;
    let mut sink = Sink {
        inner: Counting::new(writer, progress),
        failed: false,
    };
    let got = ch.get_backup_file(backup_dir, index, name, &mut sink).await;
    let sink_failed = sink.failed;
    // Closing the pipe tells the unpacker the stream has ended.
    drop(sink);
    let unpacked = unpacker
        .join()
        .map_err(|_| Error::Protocol(format!("the thread unpacking {name} panicked")))?;
    first_cause(got.map(|_| ()), unpacked, sink_failed)
}

/// The error to report when either side failed. When the unpacker stopped
/// (bad data, a full disk), the transfer's next write fails with a broken
/// pipe: then the unpacker's error is the cause. When the transfer broke
/// off, the unpacker's "unexpected end" is the consequence.
fn first_cause(got: Result<()>, unpacked: Result<()>, sink_failed: bool) -> Result<()> {
    match (got, unpacked) {
        (Err(_), Err(u)) if sink_failed => Err(u),
        (Err(g), _) => Err(g),
        (Ok(()), u) => u,
    }
}

/// The pipe's write end, remembering whether a write failed (the reader
/// is gone).
struct Sink<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Unpacks a tar stream compressed as `codec` into `dir`.
pub(super) fn unpack(
    reader: impl Read,
    name: &str,
    codec: TarCompression,
    dir: &Path,
) -> Result<()> {
    let damaged = |what: &str, e: &io::Error| {
        Error::Refused(format!(
            "{name}: {what} ({}); the stored backup is damaged or not what its name says: \
             restore another backup (--backup N) and check this one with base-backup --verify",
            chain(e)
        ))
    };
    let failed = Rc::new(Cell::new(false));
    let decoded = decoder(codec, io::BufReader::with_capacity(1 << 20, reader))
        .map_err(|e| damaged("cannot decompress", &e))?;
    let mut archive = tar::Archive::new(Watched {
        inner: decoded,
        failed: failed.clone(),
    });
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(false);
    archive.unpack(dir).map_err(|e| {
        // A failed read is damaged data; otherwise an error of the
        // system (a full disk, permissions) is the local side's.
        if !failed.get() && os_error_in(&e) {
            Error::Refused(format!(
                "cannot unpack {name} into {}: {}; free space or fix the directory's                  permissions, empty it, and restore again",
                dir.display(),
                chain(&e)
            ))
        } else {
            damaged("cannot read the archive", &e)
        }
    })?;
    // Read to the very end, so that the decoder checks the whole stream
    // (zstd and lz4 frame checksums, gzip's CRC) and the pipe drains.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| damaged("damaged after the last member", &e))?;
    Ok(())
}

/// A reader remembering whether a read failed.
struct Watched<R> {
    inner: R,
    failed: Rc<Cell<bool>>,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed.set(true))
    }
}

/// The error and its causes ("failed to unpack `x`: No space left on
/// device"): the tar crate's messages leave the cause out.
fn chain(e: &io::Error) -> String {
    let mut s = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.get_ref().and_then(|i| i.source());
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

/// True when an operating system error is among `e`'s causes.
fn os_error_in(e: &io::Error) -> bool {
    if e.raw_os_error().is_some() {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.get_ref().and_then(|i| i.source());
    while let Some(c) = cur {
        if c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.raw_os_error().is_some())
        {
            return true;
        }
        cur = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn every_codec_base_backup_writes_unpacks() {
        let plain = tar_of(&[("PG_VERSION", b"15\n"), ("base/1/1259", &[7u8; 9000])]);
        let lz4 = {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&plain[..], 1).unwrap();
        for (codec, bytes) in [
            (TarCompression::None, plain.clone()),
            (TarCompression::Lz4, lz4),
            (TarCompression::Gzip, gz),
            (TarCompression::Zstd, zst),
        ] {
            let dir = tempfile::tempdir().unwrap();
            unpack(&bytes[..], "base.tar", codec, dir.path()).unwrap();
            assert_eq!(
                std::fs::read(dir.path().join("base/1/1259")).unwrap(),
                vec![7u8; 9000],
                "{codec:?}"
            );
        }
    }

    #[test]
    fn damaged_data_is_named_as_such() {
        let plain = tar_of(&[("big", &vec![1u8; 300_000])]);
        let mut zst = zstd::encode_all(&plain[..], 1).unwrap();
        let mid = zst.len() / 2;
        zst[mid] ^= 0x55;
        let dir = tempfile::tempdir().unwrap();
        let e = unpack(&zst[..], "base.tar.zst", TarCompression::Zstd, dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("base.tar.zst: "), "{e}");
        assert!(e.contains("damaged"), "{e}");
    }

    #[test]
    fn the_unpackers_error_wins_when_it_broke_the_pipe() {
        let broken = || {
            Err(Error::Usage(
                "cannot write base.tar.lz4 locally: Broken pipe".into(),
            ))
        };
        let bad_data = || Err(Error::Refused("base.tar.lz4: cannot decompress".into()));
        let e = first_cause(broken(), bad_data(), true).unwrap_err();
        assert!(e.to_string().contains("cannot decompress"), "{e}");
        // The connection broke: the unpacker's unexpected end is the consequence.
        let lost = || Err(Error::host("arch1", "connection closed"));
        let e = first_cause(lost(), bad_data(), false).unwrap_err();
        assert!(e.to_string().contains("connection closed"), "{e}");
        assert!(first_cause(Ok(()), bad_data(), false).is_err());
        assert!(first_cause(Ok(()), Ok(()), false).is_ok());
    }
}
