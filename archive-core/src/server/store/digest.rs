//! The content proof of a stored file: the blake3 of its raw (decoded)
//! content, recorded when the file is first accepted, in
//! `<dir>/.pgarchive/digest/<name>` (64 hex digits and a newline), a place
//! no listing shows.
//!
//! The record travels with every copy (a forward and a wal-sync copy carry
//! it in their put, a get announces it in its reply), and readers (restore-cmd,
//! wal-sync) check what they decode against it: a copy damaged or forged
//! after it was accepted (one that still decodes, e.g. a zstd stream without
//! a content checksum with a flipped literal) is refused, and the other
//! server's copy is used. A file without a record (stored before records
//! existed, or put in place by hand) is read as before, unproven.
//!
//! Order: the record of a new file is written durably (temp, fsync,
//! rename, directory fsync) *before* the file's own no-replace rename, so a
//! crash never leaves a visible file without its record; it may leave a
//! record without a file, which the next put of that name replaces. A
//! record is only ever written while its name has no file (or with the
//! file's proven content, for one stored without a record), under a lock
//! per name (one of [`STRIPES`] lock files, so concurrent puts of other
//! names do not wait), so two puts of the same name with different content
//! cannot leave the record of the one that lost.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::common::lock;

use super::META_DIR;

/// Lock files the names of a directory are spread over.
const STRIPES: u8 = 16;

/// `<dir>/.pgarchive/digest`.
fn records_dir(dir: &Path) -> PathBuf {
    dir.join(META_DIR).join("digest")
}

/// The record of `name` in `dir`.
pub(crate) fn record_path(dir: &Path, name: &str) -> PathBuf {
    records_dir(dir).join(name)
}

/// The recorded raw blake3 of `name` in `dir`; `None` without a record. A
/// record that is not a digest is an error: the file cannot be proven, and
/// is not served as if it had never had one.
pub(crate) fn read(dir: &Path, name: &str) -> Result<Option<blake3::Hash>> {
    let path = record_path(dir, name);
    let text = match durable::open_no_follow(&path) {
        Ok(mut f) => {
            let mut s = String::new();
            // A record is 65 bytes: never read more than a little over.
            std::io::Read::read_to_string(&mut std::io::Read::take(&mut f, 256), &mut s)
                .map_err(|e| Error::io("cannot read the digest record", &path, e))?;
            s
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot open the digest record", &path, e)),
    };
    blake3::Hash::from_hex(text.trim()).map(Some).map_err(|_| {
        Error::Io {
            action: "the digest record is damaged; restore it from the other server's record, or remove it (the file is then served unproven):",
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a blake3 digest"),
        }
    })
}

/// Parses a digest sent over the wire.
pub(crate) fn parse(hex: &str, name: &str) -> Result<blake3::Hash> {
    blake3::Hash::from_hex(hex).map_err(|_| {
        Error::Refused(format!(
            "{name}: the raw content digest sent ({hex:?}) is not a blake3 digest"
        ))
    })
}

/// The lock that serializes record writes (and removals) of `name` in `dir`.
pub(crate) struct NameLock {
    _file: File,
}

/// Takes the lock of `name` in `dir`, waiting for it; creates the records
/// directory.
pub(crate) fn lock_name(dir: &Path, name: &str) -> Result<NameLock> {
    let records = records_dir(dir);
    durable::create_dir_all(&records)?;
    let stripe = blake3::hash(name.as_bytes()).as_bytes()[0] % STRIPES;
    let path = records.join(format!(".lock-{stripe}"));
    let file = lock::open(&path)?;
    lock::exclusive(&file, &path)?;
    Ok(NameLock { _file: file })
}

/// Writes the record of `name` durably (held: its [`NameLock`]).
pub(crate) fn write(_held: &NameLock, dir: &Path, name: &str, hash: &blake3::Hash) -> Result<()> {
    durable::write_replace(
        &record_path(dir, name),
        format!("{}\n", hash.to_hex()).as_bytes(),
    )
}

/// Removes the record of `name` (held: its [`NameLock`]); a missing one is fine.
pub(crate) fn remove(_held: &NameLock, dir: &Path, name: &str) -> Result<()> {
    let path = record_path(dir, name);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove the digest record", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_missing_one_is_none() {
        let d = tempfile::tempdir().unwrap();
        let name = "000000010000000000000001";
        assert!(read(d.path(), name).unwrap().is_none());
        let h = blake3::hash(b"wal");
        let held = lock_name(d.path(), name).unwrap();
        write(&held, d.path(), name, &h).unwrap();
        assert_eq!(read(d.path(), name).unwrap(), Some(h));
        remove(&held, d.path(), name).unwrap();
        remove(&held, d.path(), name).unwrap();
        assert!(read(d.path(), name).unwrap().is_none());
    }

    #[test]
    fn a_damaged_record_is_an_error_not_an_absent_one() {
        let d = tempfile::tempdir().unwrap();
        let name = "000000010000000000000001";
        let held = lock_name(d.path(), name).unwrap();
        write(&held, d.path(), name, &blake3::hash(b"x")).unwrap();
        fs::write(record_path(d.path(), name), b"not hex\n").unwrap();
        let e = read(d.path(), name).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
        assert!(parse("zz", name).is_err());
    }
}
