//! The prefetch buffer of one standby: a directory of decoded, verified WAL
//! segments fetched ahead of PostgreSQL's requests, with what is needed to
//! check each one again before it is handed over.
//!
//! Where: `<data dir>/pg_wal/.restore-prefetch` by default (same file system
//! as pg_wal, so a buffered segment reaches %p by a rename; base backups
//! skip pg_wal's contents, and PostgreSQL ignores a hidden directory there);
//! with `restore_buffer_dir` set, `<that dir>/pgdata-<hash of the data
//! directory's path>`. Either way two standbys never share a buffer.
//!
//! Layout:
//!
//! ```text
//! <NAME>                 a decoded segment, verified when fetched, fsynced
//! <NAME>.meta            its record: size, content digest (xxh3), archive mtime, host, SRC-DIR,
//!                        the file's identity (inode, size, mtime, boot)
//! .<NAME>.tmp-<pid>-<n>  a segment being fetched (AtomicFile temp)
//! .<NAME>.claim-<pid>    a segment a restore-cmd call took and is checking
//! want                   what PostgreSQL asked for last (JSON): the worker's window
//! worker.lock            flock of the one worker of this buffer
//! worker.log             the worker's log
//! notice                 the last segment a delay message was logged for
//! ```
//!
//! The bound `restore_queue_max` covers the WAL bytes: complete segments,
//! claims and temps (each temp counted as a whole segment from the moment
//! its transfer starts).
//!
//! This file holds the directory: where it is, its files, claims, temps and
//! the worker's lock. The records are in `records`, the identity of a
//! buffered file in `identity`, the worker's planning in `plan`.

mod identity;
mod plan;
mod records;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::config::Config;
use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::common::lock;
use crate::common::wal::WalName;

/// Directory name of the default buffer, under `pg_wal`.
pub(crate) const DEFAULT_SUBDIR: &str = ".restore-prefetch";

const WANT: &str = "want";
const LOCK: &str = "worker.lock";
/// The worker's log file in the buffer directory.
pub(crate) const LOG: &str = "worker.log";
const NOTICE: &str = "notice";
const META_SUFFIX: &str = ".meta";
const TEMP_MARK: &str = ".tmp-";
const CLAIM_MARK: &str = ".claim-";

pub use self::identity::FileId;
pub(crate) use self::plan::{stale, Plan};
pub use self::records::Meta;
pub(crate) use self::records::{now_ms, Want};

/// A buffered segment found by [`Buffer::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Its name.
    pub name: WalName,
    /// Bytes on disk.
    pub size: u64,
}

/// What the buffer directory holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    /// Complete segments.
    pub entries: Vec<Entry>,
    /// Bytes of claimed segments (being handed over).
    pub claim_bytes: u64,
    /// Segments being handed over: present as far as the worker is
    /// concerned, so it never fetches one again meanwhile.
    pub claimed: Vec<WalName>,
    /// Temps and claims whose writer is gone.
    pub dead: Vec<PathBuf>,
}

/// The prefetch buffer of one data directory.
#[derive(Debug, Clone)]
pub struct Buffer {
    dir: PathBuf,
}

/// Directory name for a data directory under `restore_buffer_dir`: a hash
/// of this machine's name and the data directory's path, so standbys on
/// several machines with the same path never share a buffer when
/// `restore_buffer_dir` is on a shared (network) file system.
pub(crate) fn key_for(data_dir: &Path) -> String {
    let host = rustix::system::uname();
    key_for_host(host.nodename().to_bytes(), data_dir)
}

fn key_for_host(host: &[u8], data_dir: &Path) -> String {
    let canon = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let mut h = blake3::Hasher::new();
    h.update(host);
    h.update(b"\0");
    h.update(canon.as_os_str().as_encoded_bytes());
    format!("pgdata-{}", &h.finalize().to_hex()[..16])
}

/// True when `dir` looks like a PostgreSQL data directory.
pub(crate) fn is_data_dir(dir: &Path) -> bool {
    dir.join("PG_VERSION").is_file()
}

impl Buffer {
    /// The buffer of `data_dir`, `None` when there is nowhere sensible for
    /// one (no `restore_buffer_dir` and `data_dir` is not a data directory).
    pub(crate) fn for_data_dir(cfg: &Config, data_dir: &Path) -> Option<Buffer> {
        match &cfg.restore_buffer_dir {
            Some(root) => Some(Buffer::at(&root.join(key_for(data_dir)))),
            None if is_data_dir(data_dir) => {
                Some(Buffer::at(&data_dir.join("pg_wal").join(DEFAULT_SUBDIR)))
            }
            None => None,
        }
    }

    /// The buffer in `dir`.
    pub fn at(dir: &Path) -> Buffer {
        Buffer {
            dir: dir.to_path_buf(),
        }
    }

    /// Its directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (0700) if missing.
    pub(crate) fn ensure(&self) -> Result<()> {
        durable::create_dir_all(&self.dir)
    }

    /// Path of buffered segment `name`.
    pub(crate) fn data_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{META_SUFFIX}"))
    }

    /// The record of buffered segment `name`.
    pub fn read_meta(&self, name: &str) -> Option<Meta> {
        let bytes = fs::read(self.meta_path(name)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the record of `name` (before the segment itself appears).
    pub(crate) fn write_meta(&self, name: &str, meta: &Meta) -> Result<()> {
        write_small(
            &self.meta_path(name),
            &serde_json::to_vec(meta).expect("json"),
        )
    }

    /// The last request, if any.
    pub(crate) fn read_want(&self) -> Option<Want> {
        let bytes = fs::read(self.dir.join(WANT)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records a request for the worker.
    pub(crate) fn write_want(&self, want: &Want) -> Result<()> {
        write_small(
            &self.dir.join(WANT),
            &serde_json::to_vec(want).expect("json"),
        )
    }

    /// Tells the worker to stop (nothing is wanted).
    pub(crate) fn remove_want(&self) {
        let _ = fs::remove_file(self.dir.join(WANT));
    }

    /// The segment a delay message was last logged for.
    pub(crate) fn read_notice(&self) -> String {
        fs::read_to_string(self.dir.join(NOTICE)).unwrap_or_default()
    }

    /// Remembers that a delay message was logged for `name`.
    pub(crate) fn write_notice(&self, name: &str) {
        let _ = write_small(&self.dir.join(NOTICE), name.as_bytes());
    }

    /// Complete segments, claims and dead temps.
    pub(crate) fn scan(&self) -> Scan {
        let mut scan = Scan::default();
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return scan;
        };
        for e in rd.flatten() {
            let file_name = e.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if let Some(rest) = name.strip_prefix('.') {
                let pid = temp_pid(rest);
                if let Some(pid) = pid {
                    let alive = process_alive(pid);
                    if !alive {
                        scan.dead.push(e.path());
                    } else if let Some((seg, _)) = rest.split_once(CLAIM_MARK) {
                        scan.claim_bytes += e.metadata().map_or(0, |m| m.len());
                        if let Ok(w) = WalName::parse(seg) {
                            scan.claimed.push(w);
                        }
                    }
                }
                continue;
            }
            if let Ok(w) = WalName::parse(name) {
                let size = e.metadata().map_or(0, |m| m.len());
                scan.entries.push(Entry { name: w, size });
            }
        }
        scan.entries.sort_by(|a, b| a.name.cmp(&b.name));
        scan
    }

    /// Bytes of WAL in the buffer: complete segments, claims and temps (what
    /// `restore_queue_max` bounds). Also for tests and monitoring.
    pub fn wal_bytes(&self) -> u64 {
        wal_bytes(&self.dir)
    }

    /// Removes buffered segment `name` and its record.
    pub(crate) fn remove_entry(&self, name: &str) {
        let _ = fs::remove_file(self.data_path(name));
        let _ = fs::remove_file(self.meta_path(name));
    }

    /// Removes every buffered segment and record, and dead temps (a
    /// timeline change, an idle worker leaving). Live temps are left to their
    /// writers.
    pub(crate) fn clear(&self) {
        let scan = self.scan();
        for e in &scan.entries {
            self.remove_entry(e.name.as_str());
        }
        for d in &scan.dead {
            let _ = fs::remove_file(d);
        }
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(seg) = n.strip_suffix(META_SUFFIX) {
                    // The worker writes a record just before renaming its
                    // segment in: a record whose segment is still a live
                    // temp stays, or that segment would land without one,
                    // count as buffered and never be served.
                    if !self.data_path(seg).exists() && self.inflight_temp(seg).is_none() {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
    }

    /// A temp of `name` whose writer (the worker) is alive: a transfer in
    /// progress.
    pub(crate) fn inflight_temp(&self, name: &str) -> Option<PathBuf> {
        let prefix = format!(".{name}{TEMP_MARK}");
        let rd = fs::read_dir(&self.dir).ok()?;
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .find(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                temp_pid(&n[1..]).is_some_and(process_alive)
            })
            .map(|e| e.path())
    }

    /// Takes buffered segment `name` out of the worker's reach by renaming it
    /// to a claim name; `None` when it is not buffered.
    pub(crate) fn claim(&self, name: &str) -> Option<PathBuf> {
        let claim = self
            .dir
            .join(format!(".{name}{CLAIM_MARK}{}", std::process::id()));
        match fs::rename(self.data_path(name), &claim) {
            Ok(()) => Some(claim),
            Err(_) => None,
        }
    }

    /// True while a worker holds this buffer's lock.
    pub(crate) fn worker_running(&self) -> bool {
        let Ok(f) = lock::open(&self.dir.join(LOCK)) else {
            return false;
        };
        !lock::try_exclusive(&f)
    }

    /// Takes the worker lock, trying for up to `wait`; `None` when another
    /// worker holds it. The lock file names the holder's pid.
    pub(crate) fn lock_worker(&self, wait: Duration) -> Result<Option<File>> {
        let path = self.dir.join(LOCK);
        let mut f = lock::open(&path)?;
        let deadline = Instant::now() + wait;
        while !lock::try_exclusive(&f) {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = write!(f, "restore-cmd prefetch worker pid {}", std::process::id());
        Ok(Some(f))
    }

    /// Path of the worker's log.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join(LOG)
    }
}

/// Bytes of WAL (complete segments, claims, temps) in buffer directory `dir`.
pub fn wal_bytes(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let base = match n.strip_prefix('.') {
                Some(rest) => [TEMP_MARK, CLAIM_MARK]
                    .iter()
                    .find_map(|m| rest.find(m).map(|i| rest[..i].to_string()))
                    .unwrap_or_default(),
                None => n,
            };
            WalName::parse(&base).is_ok()
        })
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// The pid in a temp or claim name (without its leading dot):
/// `<name>.tmp-<pid>-<nanos>` or `<name>.claim-<pid>`.
fn temp_pid(rest: &str) -> Option<i32> {
    let tail = if let Some(i) = rest.find(TEMP_MARK) {
        &rest[i + TEMP_MARK.len()..]
    } else if let Some(i) = rest.find(CLAIM_MARK) {
        &rest[i + CLAIM_MARK.len()..]
    } else {
        return None;
    };
    tail.split('-').next()?.parse().ok()
}

fn process_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Replaces a small control file atomically (temp + rename). Not fsynced:
/// these files only steer a worker that a crash ends anyway, and every
/// buffered segment is checked against its record before use.
fn write_small(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}{TEMP_MARK}{}-0", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(durable::FILE_MODE)
        .open(&tmp)
        .map_err(|e| Error::io("cannot create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("cannot write", &tmp, e))?;
    drop(f);
    // The file this replaces stays linked under a temp name of this process,
    // so the rename drops a name, not the inode: freeing its blocks can cost
    // a synchronous discard (ext4 without a journal, mounted with `discard`:
    // up to 8 ms on the test VM), which belongs to the worker's removal of
    // dead temps, not to a restore-cmd call PostgreSQL waits for.
    let _ = fs::hard_link(path, retired_name(path));
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("cannot rename into", path, e)
    })
}

/// A temp name of this process for a file taken out of use: a dead temp
/// once the process exits, removed by the worker's next scan.
fn retired_name(path: &Path) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!(".{name}{TEMP_MARK}{}-r{seq}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::codec::Codec;

    pub(super) const MIB: u64 = 1 << 20;

    pub(super) fn want(segno: u64, include: bool) -> Want {
        Want {
            tli: 1,
            segno,
            include,
            seg_size: MIB,
            hosts: vec!["arch1".into(), "arch2".into()],
            src_dir: "/a".into(),
            sysid: Some(1),
            at_ms: 0,
        }
    }

    #[test]
    fn buffer_files_claims_and_bytes() {
        let d = tempfile::tempdir().unwrap();
        let b = Buffer::at(&d.path().join("buf"));
        b.ensure().unwrap();
        let n = "000000010000000000000003";
        fs::write(b.data_path(n), vec![1u8; 100]).unwrap();
        let meta = Meta {
            size: 100,
            digest: "x".into(),
            mtime: 5,
            host: "arch1".into(),
            codec: Codec::Zstd,
            src_dir: "/a".into(),
            file: Some(FileId {
                ino: 7,
                size: 100,
                mtime_sec: 1_700_000_000,
                mtime_nsec: 123_456_789,
                boot: "b".into(),
            }),
        };
        b.write_meta(n, &meta).unwrap();
        b.write_want(&want(2, false)).unwrap();
        // A dead writer's temp and a live one.
        fs::write(b.dir().join(format!(".{n}.tmp-2147483647-1")), [0u8; 7]).unwrap();
        let live = b.dir().join(format!(
            ".000000010000000000000004.tmp-{}-1",
            std::process::id()
        ));
        fs::write(&live, [0u8; 9]).unwrap();
        assert_eq!(b.wal_bytes(), 116);
        assert_eq!(b.read_meta(n).as_ref(), Some(&meta));
        assert_eq!(b.read_want(), Some(want(2, false)));
        assert_eq!(
            b.inflight_temp("000000010000000000000004").as_deref(),
            Some(live.as_path())
        );
        assert!(
            b.inflight_temp(n).is_none(),
            "a dead writer's temp is not in flight"
        );
        let s = b.scan();
        assert_eq!(s.entries.len(), 1);
        assert_eq!(s.dead.len(), 1);

        let claim = b.claim(n).unwrap();
        assert!(!b.data_path(n).exists());
        assert!(b.claim(n).is_none(), "claimed once");
        assert_eq!(b.scan().claim_bytes, 100);
        // Still present for the worker while it is handed over.
        assert_eq!(b.scan().claimed, [WalName::parse(n).unwrap()]);
        fs::remove_file(claim).unwrap();

        fs::write(b.data_path(n), vec![1u8; 100]).unwrap();
        b.clear();
        assert!(b.scan().entries.is_empty());
        assert!(b.read_meta(n).is_none());
        assert!(live.exists(), "a live writer's temp stays");
        assert_eq!(b.scan().dead.len(), 0);

        // A record written for a segment still being committed stays; one
        // whose segment is gone does not.
        let committing = "000000010000000000000004";
        b.write_meta(committing, &meta).unwrap();
        b.write_meta("000000010000000000000005", &meta).unwrap();
        b.clear();
        assert!(b.read_meta(committing).is_some(), "its temp is live");
        assert!(b.read_meta("000000010000000000000005").is_none());
    }

    #[test]
    fn buffer_keys_differ_by_data_directory_and_by_machine() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let key = |host: &str, p: &Path| key_for_host(host.as_bytes(), p);
        assert_eq!(key("s1", &a), key("s1", &a));
        assert_ne!(key("s1", &a), key("s1", &b));
        assert_ne!(key("s1", &a), key("s2", &a), "same path on two machines");
        assert!(key_for(&a).starts_with("pgdata-"));
    }

    #[test]
    fn one_worker_lock_per_buffer() {
        let d = tempfile::tempdir().unwrap();
        let b = Buffer::at(d.path());
        assert!(!b.worker_running());
        let held = b.lock_worker(Duration::ZERO).unwrap().unwrap();
        assert!(b.worker_running());
        assert!(b.lock_worker(Duration::from_millis(50)).unwrap().is_none());
        drop(held);
        assert!(!b.worker_running());
    }

    #[test]
    fn buffers_are_per_data_directory() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("PG_VERSION"), "15\n").unwrap();
        fs::write(b.join("PG_VERSION"), "15\n").unwrap();
        let mut cfg = Config::default();
        let ba = Buffer::for_data_dir(&cfg, &a).unwrap();
        assert_eq!(ba.dir(), a.join("pg_wal").join(DEFAULT_SUBDIR));
        cfg.restore_buffer_dir = Some(d.path().join("spool"));
        let ba = Buffer::for_data_dir(&cfg, &a).unwrap();
        let bb = Buffer::for_data_dir(&cfg, &b).unwrap();
        assert_ne!(ba.dir(), bb.dir());
        assert!(ba.dir().starts_with(d.path().join("spool")));
        cfg.restore_buffer_dir = None;
        assert!(
            Buffer::for_data_dir(&cfg, d.path()).is_none(),
            "not a data dir"
        );
    }
}
