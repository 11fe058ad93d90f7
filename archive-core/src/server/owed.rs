//! Segments a server holds but its peer does not yet: the durable "owed"
//! list that closes the single-copy window as soon as the peer answers,
//! instead of at the next backup's wal-sync.
//!
//! One empty marker file per owed file, in
//! `<archive dir>/.pgarchive/owed/<peer>/<name>`. A marker is created
//! (durably) before a forward is attempted and removed after the peer
//! confirms, so a crash in between errs toward one extra, idempotent
//! delivery, never toward a forgotten one.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::common::lock;
use crate::server::store::META_DIR;

/// The owed list of one archive directory toward one peer.
#[derive(Debug, Clone)]
pub struct OwedList {
    dir: PathBuf,
}

impl OwedList {
    /// The list for `archive_dir` toward `peer`.
    pub fn new(archive_dir: &Path, peer: &str) -> OwedList {
        OwedList {
            dir: archive_dir.join(META_DIR).join("owed").join(peer),
        }
    }

    /// Records `name` as owed, durably, and claims it: the returned lock
    /// keeps other processes' deliveries off it while this one forwards it.
    pub fn add(&self, name: &str) -> Result<File> {
        durable::create_dir_all(&self.dir)?;
        let path = self.dir.join(name);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(durable::FILE_MODE)
            .open(&path)
            .map_err(|e| Error::io("cannot record owed file", &path, e))?;
        durable::sync_dir(&self.dir)?;
        // Best effort: without the lock the worst case is a redundant copy.
        let _ = lock::try_exclusive(&f);
        Ok(f)
    }

    /// Claims an owed file for delivery; `None` when another process is
    /// forwarding or delivering it right now (or it is gone).
    pub fn claim(&self, name: &str) -> Option<File> {
        let f = OpenOptions::new()
            .write(true)
            .open(self.dir.join(name))
            .ok()?;
        lock::try_exclusive(&f).then_some(f)
    }

    /// Marks `name` delivered. Not fsynced: a marker that reappears after a
    /// crash only causes a redundant delivery.
    pub fn remove(&self, name: &str) {
        let _ = fs::remove_file(self.dir.join(name));
    }

    /// Owed names, oldest WAL first.
    pub fn names(&self) -> Vec<String> {
        durable::visible_names(&self.dir)
    }

    /// Number of owed files.
    pub fn len(&self) -> usize {
        self.names().len()
    }

    /// True when nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Files one archive directory owes one peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwedCount {
    /// The archive directory.
    pub dir: PathBuf,
    /// The peer server they are owed to.
    pub peer: String,
    /// How many.
    pub count: usize,
}

/// Every archive directory and peer with owed files under `roots`, for
/// monitoring and sweeps. Archive directories are found by their metadata
/// directory at any depth below each root that an archive directory may
/// have (symlinks are not followed).
pub fn all_owed(roots: &[PathBuf]) -> Vec<OwedCount> {
    let mut out = Vec::new();
    for root in roots {
        walk(root, 0, &mut out);
    }
    out.sort();
    out
}

/// Deeper than any sensible layout; only a guard against pathological trees.
const MAX_DEPTH: usize = 32;

fn walk(dir: &Path, depth: usize, out: &mut Vec<OwedCount>) {
    if depth > MAX_DEPTH {
        return;
    }
    let owed = dir.join(META_DIR).join("owed");
    if let Ok(rd) = fs::read_dir(&owed) {
        for peer in rd.flatten() {
            let peer = peer.file_name().to_string_lossy().into_owned();
            let count = OwedList::new(dir, &peer).len();
            if count > 0 {
                out.push(OwedCount {
                    dir: dir.to_path_buf(),
                    peer,
                    count,
                });
            }
        }
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&e.path(), depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_remove() {
        let d = tempfile::tempdir().unwrap();
        let list = OwedList::new(d.path(), "arch2");
        assert!(list.is_empty());
        drop(list.add("000000010000000000000002").unwrap());
        drop(list.add("000000010000000000000001").unwrap());
        let held = list.add("000000010000000000000001").unwrap();
        assert!(
            list.claim("000000010000000000000001").is_none(),
            "claimed while held"
        );
        drop(held);
        assert!(list.claim("000000010000000000000001").is_some());
        assert_eq!(
            list.names(),
            ["000000010000000000000001", "000000010000000000000002"]
        );
        assert_eq!(
            all_owed(&[d.path().to_path_buf()]),
            [OwedCount {
                dir: d.path().to_path_buf(),
                peer: "arch2".into(),
                count: 2
            }]
        );
        list.remove("000000010000000000000001");
        assert_eq!(list.names(), ["000000010000000000000002"]);
    }

    /// DST-DIR may be any depth below a root; owed records 5 levels down
    /// used to be invisible to the sweep and to monitoring.
    #[test]
    fn owed_records_are_found_deep_below_a_root() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c/d/e/f/main");
        fs::create_dir_all(&deep).unwrap();
        drop(
            OwedList::new(&deep, "arch2")
                .add("000000010000000000000001")
                .unwrap(),
        );
        assert_eq!(
            all_owed(&[d.path().to_path_buf()]),
            [OwedCount {
                dir: deep,
                peer: "arch2".into(),
                count: 1
            }]
        );
    }
}
