//! The identity of a buffered file ([`FileId`]): what lets a restore-cmd
//! call trust a file the worker verified without reading it again.

use std::fs::{self, File};

use serde::{Deserialize, Serialize};

/// Identifies a buffered file as the worker wrote and verified it, so a
/// call can tell it was not changed through the file system since, without
/// reading it: a write moves its mtime (unless within the same timestamp
/// tick, or set back on purpose), a replacement is another inode, a
/// truncation another size. It says nothing of the disk under a file
/// written before the machine last booted (the page cache was lost): the
/// boot's id tells such leftovers apart, and their bytes are hashed again.
/// Nor does it count where every byte is read anyway (a copy to another
/// file system checks them against the digest on the way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    /// `/proc/sys/kernel/random/boot_id` when it was written.
    pub boot: String,
}

impl FileId {
    /// The identity of `file` now; `None` when the boot id is unknown (no
    /// /proc): then every hit hashes the file.
    pub fn of(file: &File) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok()?;
        Some(FileId {
            ino: m.ino(),
            size: m.len(),
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            boot: boot_id()?,
        })
    }
}

fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}
