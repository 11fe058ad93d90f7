//! The second source of a restore: the prefetch buffer. A segment the
//! worker fetched (or is fetching: the call waits for that transfer) is
//! checked against its record, claimed, checked again as a file
//! ([`check_buffered`]: its identity, else every byte against its digest;
//! page header, system identifier), then renamed to %p (copied and checked
//! on the way across file systems).

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::buffer::{Buffer, FileId, Meta};
use super::verify::{self, Check, VerifyError};
use super::{commit_replace, Restored, Source};
use crate::common::codec::Codec;
use crate::common::durable::AtomicFile;
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::common::page_header::LONG_HEADER_LEN;

/// What the buffer had for a call.
pub(super) enum FromBuffer {
    /// Now at %p.
    Served(Restored),
    /// Buffered, but archived less than DELAY-SECONDS ago (kept for later).
    TooYoung { mtime: i64, seg_size: u64 },
    /// Not buffered, or not usable: the hosts are next.
    Miss,
}

/// Serves a segment from the buffer: waits for an in-flight transfer of it,
/// checks its record (SRC-DIR, delay), claims it, checks the file
/// ([`check_buffered`]), then renames it to %p (or copies it, across file
/// systems).
pub(super) fn from_buffer(
    b: &Buffer,
    check: &Check,
    dest: &Path,
    src_dir: &str,
    not_after: Option<i64>,
    io_timeout: Duration,
    after_claim: &dyn Fn(u64),
) -> Result<FromBuffer> {
    let n = check.name.as_str();
    let mut waited = None;
    if !b.data_path(n).exists() {
        let Some(temp) = b.inflight_temp(n) else {
            return Ok(FromBuffer::Miss);
        };
        waited = wait_inflight(b, n, &temp, io_timeout.min(Duration::from_secs(10)));
        if waited.is_none() {
            return Ok(FromBuffer::Miss);
        }
    }
    let Some(meta) = b.read_meta(n) else {
        return Ok(FromBuffer::Miss);
    };
    if meta.src_dir != src_dir {
        b.remove_entry(n);
        return Ok(FromBuffer::Miss);
    }
    if not_after.is_some_and(|t| meta.mtime > t) {
        return Ok(FromBuffer::TooYoung {
            mtime: meta.mtime,
            seg_size: meta.size,
        });
    }
    let Some(claim) = b.claim(n) else {
        return Ok(FromBuffer::Miss);
    };
    after_claim(meta.size);
    let fail = |why: String| {
        log::warn(format!(
            "buffered {n} failed its check ({why}); fetching it from the archive"
        ));
        let _ = fs::remove_file(&claim);
        b.remove_entry(n);
        Ok(FromBuffer::Miss)
    };
    let file = match File::open(&claim) {
        Ok(f) => f,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(why) = check_buffered(file, check, &meta) {
        return fail(why);
    }
    // Hand over. The bytes are on disk already (the worker fsynced them
    // before they became visible in the buffer), so this is a rename. The
    // directory is not fsynced here: PostgreSQL renames the restored file to
    // its own name durably right away (durable_rename of RECOVERYXLOG, which
    // fsyncs pg_wal), and a crash before that only makes it ask again. It
    // would cost a journal commit (up to ~10 ms while the worker writes) on
    // the fast path.
    match fs::rename(&claim, dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            // The copy reads every byte anyway: they are checked against
            // the record on the way, whatever the identity said.
            match copy_checked(&claim, dest, check, &meta) {
                Ok(Ok(())) => {
                    let _ = fs::remove_file(&claim);
                }
                Ok(Err(why)) => return fail(why),
                Err(e) => {
                    let _ = fs::remove_file(&claim);
                    return Err(e);
                }
            }
        }
        Err(e) => {
            let _ = fs::remove_file(&claim);
            return Err(Error::io("cannot rename into", dest, e));
        }
    }
    b.remove_entry(n);
    Ok(FromBuffer::Served(Restored {
        source: Source::Buffer {
            host: meta.host,
            waited,
        },
        size: meta.size,
        codec: meta.codec,
    }))
}

/// Checks a claimed buffer file against its record. The worker verified
/// the bytes before recording them; what is left to rule out is a file
/// changed since. When its identity (inode, size, mtime, this boot) is the
/// recorded one, no write through the file system has touched it since
/// (short of one within the same timestamp tick, or a deliberate reset of
/// its mtime), and reading the first page header is enough (a wrong
/// segment there means a wrong record); otherwise (another identity, a
/// leftover from before a reboot, a record of an older version) every byte
/// is read and hashed again. The fast path spares PostgreSQL's critical
/// path a 16 MiB read and hash.
fn check_buffered(mut file: File, check: &Check, meta: &Meta) -> std::result::Result<(), String> {
    let unchanged = meta.file.is_some() && meta.file == FileId::of(&file);
    if unchanged && check.name.has_page_header() {
        let mut first = [0u8; LONG_HEADER_LEN];
        io::Read::read_exact(&mut file, &mut first).map_err(|e| e.to_string())?;
        let seg_size = verify::check_first_page(&first, check).map_err(|e| e.to_string())?;
        if seg_size != meta.size {
            return Err(format!(
                "{} bytes recorded, {seg_size}-byte segments in its page header",
                meta.size
            ));
        }
        return Ok(());
    }
    hash_buffered(file, &mut io::sink(), check, meta).map_err(|e| e.to_string())
}

/// Reads every byte of a buffered file into `out` and compares them with
/// the record (a mismatch is [`VerifyError::Bad`]).
fn hash_buffered<W: io::Write>(
    file: File,
    out: &mut W,
    check: &Check,
    meta: &Meta,
) -> std::result::Result<(), VerifyError> {
    let chk = Check {
        hash: true,
        ..check.clone()
    };
    let v = verify::decode_verify(file, out, &chk)?;
    if v.codec != Codec::Plain {
        return Err(VerifyError::Bad(format!("stored {}", v.codec)));
    }
    if v.size != meta.size || v.digest.as_deref() != Some(meta.digest.as_str()) {
        return Err(VerifyError::Bad("content differs from its record".into()));
    }
    Ok(())
}

/// Copies a buffered file to `dest` on another file system, checking every
/// byte against the record on the way; `Ok(Err(why))` when they differ
/// (nothing is left at `dest` then).
fn copy_checked(
    src: &Path,
    dest: &Path,
    check: &Check,
    meta: &Meta,
) -> Result<std::result::Result<(), String>> {
    let input = File::open(src).map_err(|e| Error::io("cannot open", src, e))?;
    let mut out = AtomicFile::create(dest)?;
    match hash_buffered(input, &mut out, check, meta) {
        Ok(()) => commit_replace(out, dest).map(Ok),
        Err(VerifyError::Bad(why)) => Ok(Err(why)),
        Err(VerifyError::Write(e)) => Err(Error::io("cannot copy into", dest, e)),
    }
}

/// Waits for the worker's transfer of `name` to complete while its temp
/// keeps growing; returns how long it waited, `None` when the transfer
/// ended without the segment or stalled for `stall`.
fn wait_inflight(b: &Buffer, name: &str, temp: &Path, stall: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut last_size = None;
    let mut last_change = Instant::now();
    loop {
        if b.data_path(name).exists() {
            return Some(start.elapsed());
        }
        match fs::metadata(temp) {
            Ok(m) => {
                if last_size != Some(m.len()) {
                    last_size = Some(m.len());
                    last_change = Instant::now();
                } else if last_change.elapsed() > stall {
                    return None;
                }
            }
            // Renamed into place (checked next round) or given up.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(2));
                return b.data_path(name).exists().then(|| start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::path::Path;
    use std::time::Duration;

    use super::super::buffer::{Buffer, FileId, Meta};
    use super::super::tests::{buffer_segment, data_dir, no_worker_cfg, request};
    use super::super::{restore, Source, Unavailable};
    use super::verify;
    use crate::common::config::Config;
    use crate::net::health;

    #[tokio::test]
    async fn served_from_the_buffer_after_checking_it() {
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let r = restore(&cfg, &request(d.path(), name, None)).await.unwrap();
        assert!(matches!(r.source, Source::Buffer { ref host, .. } if host == "arch2"));
        assert_eq!(fs::read(d.path().join("pg_wal/RECOVERYXLOG")).unwrap(), seg);
        assert!(!b.data_path(name).exists(), "moved, not copied");
        assert!(b.read_meta(name).is_none());
    }

    #[tokio::test]
    async fn a_tampered_buffered_segment_is_never_handed_over() {
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let mut bad = seg.clone();
        bad[500_000] ^= 1;
        fs::write(b.data_path(name), &bad).unwrap();
        let e = restore(&cfg, &request(d.path(), name, None))
            .await
            .unwrap_err();
        assert!(matches!(e, Unavailable::Failed(_)), "{e}");
        assert!(!d.path().join("pg_wal/RECOVERYXLOG").exists());
        assert!(!b.data_path(name).exists(), "dropped from the buffer");
        // Another segment's bytes under this name (record matching them).
        let other = verify::tests::segment("000000010000000000000006");
        buffer_segment(&cfg, d.path(), name, &other, 0);
        assert!(restore(&cfg, &request(d.path(), name, None)).await.is_err());
        assert!(!d.path().join("pg_wal/RECOVERYXLOG").exists());
    }

    #[tokio::test]
    async fn a_record_of_an_older_version_is_not_trusted() {
        // Records used to carry a blake3 of the bytes: such a leftover reads
        // (serde alias) but never matches, so the segment is dropped, not
        // served or left to block the buffer.
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let old = format!(
            r#"{{"size":{},"blake3":"{}","mtime":0,"host":"arch2","codec":"zstd","src_dir":"/archive/main"}}"#,
            seg.len(),
            blake3::hash(&seg).to_hex()
        );
        fs::write(b.dir().join(format!("{name}.meta")), old).unwrap();
        assert!(b.read_meta(name).is_some(), "the old record parses");
        refused_and_dropped(&cfg, d.path(), &b, name).await;
    }

    /// A call for buffered `name` fails, with nothing at %p, and the
    /// buffered file is gone.
    async fn refused_and_dropped(cfg: &Config, d: &Path, b: &Buffer, name: &str) {
        assert!(restore(cfg, &request(d, name, None)).await.is_err());
        assert!(!d.join("pg_wal/RECOVERYXLOG").exists());
        assert!(!b.data_path(name).exists(), "dropped from the buffer");
    }

    /// Records the identity of `name`'s buffered file as the worker does,
    /// then lets the test `edit` the record.
    fn record_identity(b: &Buffer, name: &str, edit: impl FnOnce(&mut Meta)) -> Meta {
        let mut meta = b.read_meta(name).unwrap();
        meta.file = FileId::of(&File::open(b.data_path(name)).unwrap());
        assert!(meta.file.is_some(), "no boot id on this machine");
        edit(&mut meta);
        b.write_meta(name, &meta).unwrap();
        meta
    }

    /// Flips one byte of `path` in place, then sets its mtime to `mtime`.
    fn flip_byte(path: &Path, mtime: std::time::SystemTime) {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut byte = [0u8];
        f.seek(SeekFrom::Start(500_000)).unwrap();
        f.read_exact(&mut byte).unwrap();
        f.seek(SeekFrom::Start(500_000)).unwrap();
        f.write_all(&[byte[0] ^ 1]).unwrap();
        f.set_modified(mtime).unwrap();
    }

    /// The mtime a record holds, as a time to set.
    fn recorded_mtime(meta: &Meta) -> std::time::SystemTime {
        let id = meta.file.as_ref().unwrap();
        std::time::UNIX_EPOCH + Duration::new(id.mtime_sec as u64, id.mtime_nsec as u32)
    }

    #[tokio::test]
    async fn an_unchanged_buffered_file_is_not_read_again() {
        // The record's digest is wrong on purpose: a file whose identity is
        // the recorded one is served on that and its page header, without
        // reading its 16 MiB again on PostgreSQL's critical path.
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        record_identity(&b, name, |m| m.digest = "0".repeat(32));
        restore(&cfg, &request(d.path(), name, None)).await.unwrap();
        assert_eq!(fs::read(d.path().join("pg_wal/RECOVERYXLOG")).unwrap(), seg);
    }

    #[tokio::test]
    async fn an_unchanged_file_holding_another_segment_is_refused() {
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let other = verify::tests::segment("000000010000000000000006");
        let b = buffer_segment(&cfg, d.path(), name, &other, 0);
        record_identity(&b, name, |_| {});
        refused_and_dropped(&cfg, d.path(), &b, name).await;
    }

    #[tokio::test]
    async fn a_buffered_file_changed_after_its_record_is_hashed_again() {
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let path = |b: &Buffer| b.data_path(name);
        // Written to later (a write moves the mtime: here set explicitly,
        // as file systems with coarse timestamps may keep it within a tick).
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let meta = record_identity(&b, name, |_| {});
        flip_byte(&path(&b), recorded_mtime(&meta) + Duration::from_secs(1));
        refused_and_dropped(&cfg, d.path(), &b, name).await;
        // Replaced by a changed copy whose mtime was set back: another inode.
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let meta = record_identity(&b, name, |_| {});
        let copy = b.dir().join("copy");
        fs::copy(path(&b), &copy).unwrap();
        flip_byte(&copy, recorded_mtime(&meta));
        fs::rename(&copy, path(&b)).unwrap();
        refused_and_dropped(&cfg, d.path(), &b, name).await;
        // Truncated, mtime set back: its page header still declares the
        // recorded size, only the file's size tells.
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let meta = record_identity(&b, name, |_| {});
        let f = fs::OpenOptions::new().write(true).open(path(&b)).unwrap();
        f.set_len(seg.len() as u64 - 8192).unwrap();
        f.set_modified(recorded_mtime(&meta)).unwrap();
        refused_and_dropped(&cfg, d.path(), &b, name).await;
    }

    #[tokio::test]
    async fn a_leftover_from_before_a_reboot_is_hashed_again() {
        // Its bytes went through the disk, which keeps no checksums: a
        // flipped bit there leaves the identity as it was.
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let meta = record_identity(&b, name, |m| {
            m.file.as_mut().unwrap().boot = "an earlier boot".into()
        });
        flip_byte(&b.data_path(name), recorded_mtime(&meta));
        let mut now = FileId::of(&File::open(b.data_path(name)).unwrap()).unwrap();
        now.boot = "an earlier boot".into();
        assert_eq!(meta.file.as_ref(), Some(&now), "identity kept");
        refused_and_dropped(&cfg, d.path(), &b, name).await;
    }

    #[tokio::test]
    async fn a_buffer_on_another_file_system_is_copied_and_checked_on_the_way() {
        // /dev/shm (tmpfs) is another file system than the data directory's
        // (the temp dir's): a hit copies instead of renaming, and the copy
        // reads every byte, so they are checked whatever the identity says.
        let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs)");
        let d = data_dir();
        let mut cfg = no_worker_cfg(d.path());
        cfg.restore_buffer_dir = Some(shm.path().to_path_buf());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        assert!(b.dir().starts_with(shm.path()));
        {
            use std::os::unix::fs::MetadataExt;
            let dev = |p: &Path| fs::metadata(p).unwrap().dev();
            assert_ne!(dev(b.dir()), dev(d.path()), "not another file system");
        }
        record_identity(&b, name, |_| {});
        restore(&cfg, &request(d.path(), name, None)).await.unwrap();
        assert_eq!(fs::read(d.path().join("pg_wal/RECOVERYXLOG")).unwrap(), seg);
        assert!(!b.data_path(name).exists(), "taken from the buffer");
        // (The records this test rewrote stay as temps of this process.)
        let left: Vec<String> = fs::read_dir(b.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            left.iter().all(|n| !n.contains(".claim-")),
            "a claim left: {left:?}"
        );
        // A change the identity cannot see is caught by the copy.
        fs::remove_file(d.path().join("pg_wal/RECOVERYXLOG")).unwrap();
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let meta = record_identity(&b, name, |_| {});
        flip_byte(&b.data_path(name), recorded_mtime(&meta));
        refused_and_dropped(&cfg, d.path(), &b, name).await;
    }

    #[tokio::test]
    async fn a_buffered_segment_waits_for_its_delay() {
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, health::now() - 10);
        let e = restore(&cfg, &request(d.path(), name, Some(3600)))
            .await
            .unwrap_err();
        assert!(matches!(e, Unavailable::TooYoung { .. }), "{e}");
        assert!(b.data_path(name).exists(), "kept for later");
        assert_eq!(b.read_notice(), name, "logged once");
        let r = restore(&cfg, &request(d.path(), name, Some(5)))
            .await
            .unwrap();
        assert_eq!(r.size, seg.len() as u64);
    }
}
