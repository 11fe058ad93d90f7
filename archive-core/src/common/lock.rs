//! File locks. Every lock of the suite is an exclusive `flock`, which the
//! kernel drops when its holder dies, so a crash never leaves a stale lock.
//! [`open`] and [`try_exclusive`] are the pieces every site uses;
//! [`try_lock`] is the single-instance lock of base-backup, wal-sync and
//! wal-cleanup, whose file also names its holder so the next caller can say
//! who is in the way.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::common::durable;
use crate::common::error::{Error, Result};

/// Opens (creating, mode 0600) a lock file, keeping its content.
pub fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(durable::FILE_MODE)
        .open(path)
        .map_err(|e| Error::io("cannot open lock", path, e))
}

/// Takes an exclusive lock on `f` if it is free; false when another open
/// file description holds it.
pub fn try_exclusive(f: &File) -> bool {
    rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Takes an exclusive lock on `f`, waiting for it.
pub fn exclusive(f: &File, path: &Path) -> Result<()> {
    rustix::fs::flock(f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io("cannot lock", path, e.into()))
}

/// Takes the lock at `path` without waiting. `holder` describes the caller
/// (program, host, pid) for the message another caller gets.
pub fn try_lock(path: &Path, holder: &str) -> Result<File> {
    let mut f = open(path)?;
    if !try_exclusive(&f) {
        let mut who = String::new();
        let _ = f.read_to_string(&mut who);
        return Err(Error::Conflict(format!(
            "{} is held by {}; another run is in progress, try again when it ends",
            path.display(),
            if who.trim().is_empty() {
                "another process"
            } else {
                who.trim()
            }
        )));
    }
    let stamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC");
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = write!(f, "{holder} since {stamp}");
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_is_refused_with_the_holder_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("wal-sync.lock");
        let held = try_lock(&p, "wal-sync on arch1 pid 42").unwrap();
        let e = try_lock(&p, "other").unwrap_err().to_string();
        assert!(e.contains("wal-sync on arch1 pid 42"), "{e}");
        drop(held);
        assert!(
            try_lock(&p, "other").is_ok(),
            "released when the holder ends"
        );
    }
}
