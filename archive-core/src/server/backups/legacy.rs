//! Backups made by Archive 2.0's base-backup_2, which writes no SUCCESS
//! marker: recognised as complete by what their files say ([`recognise`]).
//!
//! Two layouts, both with a parseable `backup_label` and a whole
//! `global/pg_control` (8192 bytes) in the backup directory:
//!
//! - **tar** (`pg_basebackup -Ft`, its default): `base.tar` (or
//!   `base.tar.gz` with `-z`) with `backup_label` and `global/pg_control`
//!   extracted beside it after pg_basebackup succeeded (the server sends
//!   pg_control last, so extracting it read the archive to its end). Every
//!   uncompressed `*.tar` of the directory (`base.tar`, `pg_wal.tar`,
//!   tablespaces) must also end with tar's end-of-archive marker, two zero
//!   blocks, which pg_basebackup writes last: an interrupted copy lacks
//!   them.
//! - **plain** (a data directory, when tar was turned off): `PG_VERSION`
//!   and `base/` too. The server sends `global/pg_control` last of the main
//!   data directory, so a copy that has it got to the end.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::common::error::{Error, Result};

use super::marker::mtime_micros;
use super::{parse_label, LABEL};

/// Size of PostgreSQL's control file.
const PG_CONTROL_SIZE: u64 = 8192;
/// tar's end-of-archive: two zero blocks of 512 bytes.
const TAR_END: usize = 1024;

/// Which of Archive 2.0's layouts a backup has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legacy {
    /// `base.tar[.gz]` and the extracted `backup_label` and
    /// `global/pg_control`.
    Tar,
    /// A plain data directory.
    Plain,
}

/// The layout of `dir` when it is a complete Archive 2.0 backup, `None`
/// when it is not one (or not complete). I/O errors other than a missing
/// file are errors: a backup taken for incomplete would move wal-cleanup's
/// cut-off past WAL it needs.
pub fn recognise(dir: &Path) -> Result<Option<Legacy>> {
    let label = match fs::read_to_string(dir.join(LABEL)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read", dir.join(LABEL), e)),
    };
    if parse_label(&label).is_err() {
        return Ok(None);
    }
    let control = dir.join("global").join("pg_control");
    if metadata(&control)?.is_none_or(|m| !m.is_file() || m.len() != PG_CONTROL_SIZE) {
        return Ok(None);
    }
    if metadata(&dir.join("base.tar"))?.is_some() || metadata(&dir.join("base.tar.gz"))?.is_some() {
        let rd = fs::read_dir(dir).map_err(|e| Error::io("cannot list", dir, e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io("cannot list", dir, e))?;
            if e.file_name().to_string_lossy().ends_with(".tar") && !tar_is_whole(&e.path())? {
                return Ok(None);
            }
        }
        return Ok(Some(Legacy::Tar));
    }
    let plain = metadata(&dir.join("PG_VERSION"))?.is_some_and(|m| m.is_file())
        && metadata(&dir.join("base"))?.is_some_and(|m| m.is_dir());
    Ok(plain.then_some(Legacy::Plain))
}

/// The name under which a plain backup is served as one tar archive
/// (restore-backup unpacks every backup from its `base.tar*`).
pub const PLAIN_AS_TAR: &str = "base.tar";

/// Files of a backup directory that are ours, not the data directory's.
const NOT_DATA: &[&str] = &[super::SUCCESS, super::rotation::PINNED, super::MANIFEST];

/// Size of [`write_plain_tar`]'s output for the plain backup `dir`, from
/// metadata only (no file is read).
pub fn plain_tar_size(dir: &Path) -> Result<u64> {
    let mut count = Count(0);
    let content = build_tar(dir, &mut count, false)?;
    Ok(count.0 + content)
}

/// Writes the plain backup `dir` as an uncompressed tar archive of its data
/// directory (paths relative to it, symbolic links kept as links, the
/// files that are not the data directory's left out), exactly
/// [`plain_tar_size`] bytes while the backup does not change.
pub fn write_plain_tar(dir: &Path, w: impl Write) -> Result<()> {
    build_tar(dir, w, true).map(drop)
}

struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The one walk behind both: with `content`, file data is copied; without,
/// only headers are written, and the bytes the data (padded to 512) would
/// take are returned.
fn build_tar(dir: &Path, w: impl Write, content: bool) -> Result<u64> {
    let mut b = tar::Builder::new(w);
    let mut skipped = 0;
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&here)
            .map_err(|e| Error::io("cannot list", &here, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| Error::io("cannot list", &here, e))?;
        names.sort();
        // Depth first, in name order: subdirectories after this level.
        let mut subdirs = Vec::new();
        for name in names {
            if rel.as_os_str().is_empty() && NOT_DATA.iter().any(|n| name == *n) {
                continue;
            }
            let path = here.join(&name);
            let entry = rel.join(&name);
            let meta =
                fs::symlink_metadata(&path).map_err(|e| Error::io("cannot stat", &path, e))?;
            let mut h = tar::Header::new_gnu();
            h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            let added = if meta.is_dir() {
                h.set_size(0);
                subdirs.push(entry.clone());
                b.append_data(&mut h, &entry, io::empty())
            } else if meta.file_type().is_symlink() {
                h.set_size(0);
                let target =
                    fs::read_link(&path).map_err(|e| Error::io("cannot read", &path, e))?;
                b.append_link(&mut h, &entry, target)
            } else if meta.is_file() {
                if content {
                    let f =
                        fs::File::open(&path).map_err(|e| Error::io("cannot open", &path, e))?;
                    b.append_data(&mut h, &entry, f.take(meta.len()))
                } else {
                    skipped += meta.len().div_ceil(512) * 512;
                    b.append_data(&mut h, &entry, io::empty())
                }
            } else {
                continue;
            };
            added.map_err(|e| Error::io("cannot write the tar of", &path, e))?;
        }
        stack.extend(subdirs.into_iter().rev());
    }
    b.into_inner()
        .map_err(|e| Error::io("cannot finish the tar of", dir, e))?;
    Ok(skipped)
}

/// A moment at or after the backup's end, in microseconds: the newest
/// mtime of the directory and its files (what base-backup_2 extracted or
/// wrote after pg_basebackup exited).
pub(super) fn end_micros(dir: &Path) -> Option<i64> {
    let mut newest = mtime_micros(dir);
    for e in fs::read_dir(dir).ok()?.flatten() {
        newest = newest.max(mtime_micros(&e.path()));
    }
    newest.max(mtime_micros(&dir.join("global").join("pg_control")))
}

fn metadata(p: &Path) -> Result<Option<fs::Metadata>> {
    match fs::metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot stat", p, e)),
    }
}

/// The tar file ends with its end-of-archive marker.
fn tar_is_whole(p: &Path) -> Result<bool> {
    let read = |e| Error::io("cannot read", p, e);
    let mut f = fs::File::open(p).map_err(read)?;
    let len = f.metadata().map_err(read)?.len();
    if len < TAR_END as u64 || len % 512 != 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(len - TAR_END as u64))
        .map_err(read)?;
    let mut end = [0u8; TAR_END];
    f.read_exact(&mut end).map_err(read)?;
    Ok(end.iter().all(|b| *b == 0))
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::label::tests::LABEL_TEXT;
    use super::*;

    /// An Archive 2.0 backup in `dir`: `tar` or plain layout.
    pub(crate) fn make_legacy(dir: &Path, tar: bool) {
        fs::create_dir_all(dir.join("global")).unwrap();
        fs::write(dir.join(LABEL), LABEL_TEXT).unwrap();
        fs::write(dir.join("global/pg_control"), vec![1u8; 8192]).unwrap();
        if tar {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_cksum();
            b.append_data(&mut h, "PG_VERSION", &b"15\n"[..]).unwrap();
            fs::write(dir.join("base.tar"), b.into_inner().unwrap()).unwrap();
        } else {
            fs::create_dir(dir.join("base")).unwrap();
            fs::write(dir.join("PG_VERSION"), b"15\n").unwrap();
        }
    }

    #[test]
    fn complete_archive2_backups_are_recognised_by_their_files() {
        for tar in [true, false] {
            let d = tempfile::tempdir().unwrap();
            let dir = d.path();
            assert_eq!(recognise(dir).unwrap(), None, "empty");
            make_legacy(dir, tar);
            let want = if tar { Legacy::Tar } else { Legacy::Plain };
            assert_eq!(recognise(dir).unwrap(), Some(want));
            assert!(end_micros(dir).is_some());
            // A truncated control file: not complete.
            fs::write(dir.join("global/pg_control"), vec![1u8; 100]).unwrap();
            assert_eq!(recognise(dir).unwrap(), None);
            fs::write(dir.join("global/pg_control"), vec![1u8; 8192]).unwrap();
            // An unreadable label: not a backup.
            fs::write(dir.join(LABEL), "LABEL: x\n").unwrap();
            assert_eq!(recognise(dir).unwrap(), None);
            fs::write(dir.join(LABEL), LABEL_TEXT).unwrap();
            assert_eq!(recognise(dir).unwrap(), Some(want));
        }
        // A tar cut short (no end-of-archive blocks), in base.tar or in
        // another archive of the backup.
        let d = tempfile::tempdir().unwrap();
        make_legacy(d.path(), true);
        let whole = fs::read(d.path().join("base.tar")).unwrap();
        fs::write(d.path().join("pg_wal.tar"), &whole[..512]).unwrap();
        assert_eq!(recognise(d.path()).unwrap(), None);
        fs::write(d.path().join("pg_wal.tar"), &whole).unwrap();
        assert_eq!(recognise(d.path()).unwrap(), Some(Legacy::Tar));
        fs::write(d.path().join("base.tar"), &whole[..whole.len() - 512]).unwrap();
        assert_eq!(recognise(d.path()).unwrap(), None);
        // pg_basebackup -Ft -z: base.tar.gz.
        fs::remove_file(d.path().join("base.tar")).unwrap();
        fs::write(d.path().join("base.tar.gz"), b"gzip").unwrap();
        assert_eq!(recognise(d.path()).unwrap(), Some(Legacy::Tar));
    }

    #[test]
    fn a_plain_backup_is_served_as_a_tar_of_its_data_directory() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        make_legacy(dir, false);
        fs::create_dir_all(dir.join("base/1")).unwrap();
        fs::write(dir.join("base/1/1259"), vec![7u8; 9000]).unwrap();
        let long = "x".repeat(120);
        fs::write(dir.join("base").join(&long), b"long name").unwrap();
        std::os::unix::fs::symlink("/srv/tblspc", dir.join("ts")).unwrap();
        for ours in [super::super::SUCCESS, super::super::rotation::PINNED] {
            fs::write(dir.join(ours), b"not data").unwrap();
        }
        let mut out = Vec::new();
        write_plain_tar(dir, &mut out).unwrap();
        assert_eq!(out.len() as u64, plain_tar_size(dir).unwrap());
        let to = tempfile::tempdir().unwrap();
        tar::Archive::new(&out[..]).unpack(to.path()).unwrap();
        let got = to.path();
        assert_eq!(fs::read(got.join("base/1/1259")).unwrap(), vec![7u8; 9000]);
        assert_eq!(
            fs::read(got.join("base").join(&long)).unwrap(),
            b"long name"
        );
        assert_eq!(fs::read(got.join("global/pg_control")).unwrap().len(), 8192);
        assert_eq!(
            fs::read_link(got.join("ts")).unwrap(),
            Path::new("/srv/tblspc")
        );
        assert!(got.join(LABEL).is_file());
        assert!(!got.join(super::super::SUCCESS).exists());
        assert!(!got.join(super::super::rotation::PINNED).exists());
    }
}
