//! Crash-safe files: a file becomes visible under its final name only when
//! its bytes and its directory entry are on disk.
//!
//! The sequence is always: write a temp file in the same directory, fsync
//! it, rename it (never over an existing file), fsync the directory. A crash
//! at any point leaves either nothing or the whole file under the final name;
//! leftovers are temp files whose names start with a dot, which nothing else
//! reads and [`remove_stale_temps`] clears.
//!
//! WAL is the whole database, so files are 0600 and directories 0700.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::common::error::{Error, Result};

/// Mode of every file the suite writes.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the suite creates.
pub const DIR_MODE: u32 = 0o700;

const TEMP_MARK: &str = ".tmp-";

/// A file being written under a temp name next to its final name.
///
/// Dropping it without [`AtomicFile::commit`] removes the temp file, so an
/// error path never leaves anything visible.
pub struct AtomicFile {
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
}

/// What [`AtomicFile::commit`] found at the final name.
#[derive(Debug, PartialEq, Eq)]
pub enum Commit {
    /// The file is now stored under its final name.
    Stored,
    /// Another file already had the final name; ours was left at
    /// the returned temp path for the caller to compare and clean up.
    Exists(PathBuf),
}

impl AtomicFile {
    /// Starts writing `dest`; the temp file is `.<name>.tmp-<pid>-<nanos>` in
    /// the same directory (rename is only atomic within a file system).
    pub fn create(dest: &Path) -> Result<Self> {
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{} has no file name", dest.display())))?
            .to_string_lossy()
            .into_owned();
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let temp = dest.with_file_name(format!(".{name}{TEMP_MARK}{}-{nanos}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temp)
            .map_err(|e| Error::io("cannot create", &temp, e))?;
        Ok(AtomicFile {
            file: Some(file),
            temp,
            dest: dest.to_path_buf(),
        })
    }

    /// The temp path being written.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// The open temp file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is open until commit")
    }

    /// Sets the modification time the committed file will carry (the
    /// source's, so age-based tools see when PostgreSQL wrote it).
    pub fn set_mtime(&mut self, mtime: SystemTime) -> Result<()> {
        let temp = self.temp.clone();
        self.file()
            .set_modified(mtime)
            .map_err(|e| Error::io("cannot set mtime of", temp, e))
    }

    /// fsyncs the data, renames to the final name unless something is there
    /// already, then fsyncs the directory.
    pub fn commit(mut self) -> Result<Commit> {
        let file = self.file.take().expect("commit once");
        file.sync_all()
            .map_err(|e| Error::io("cannot fsync", &self.temp, e))?;
        drop(file);
        match rename_noreplace(&self.temp, &self.dest) {
            Ok(()) => {
                sync_parent(&self.dest)?;
                // Committed: nothing to clean up on drop.
                self.temp = PathBuf::new();
                Ok(Commit::Stored)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let temp = std::mem::take(&mut self.temp);
                Ok(Commit::Exists(temp))
            }
            Err(e) => Err(Error::io("cannot rename into", &self.dest, e)),
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Renames without ever replacing an existing file (RENAME_NOREPLACE), so
/// two writers of the same name cannot overwrite each other.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            // File systems without RENAME_NOREPLACE: link() also refuses to
            // replace, then drop the temp name.
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

/// fsyncs the directory holding `path`, making a create/rename/unlink in it
/// durable.
pub fn sync_parent(path: &Path) -> Result<()> {
    // A bare name's parent is "", which cannot be opened: it is ".".
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

/// fsyncs a directory.
pub fn sync_dir(dir: &Path) -> Result<()> {
    sync_path(dir, "cannot fsync directory")
}

/// fsyncs an existing file (one this process did not write, e.g. a copy
/// found already stored).
pub fn sync_file(path: &Path) -> Result<()> {
    sync_path(path, "cannot fsync")
}

fn sync_path(path: &Path, action: &'static str) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(action, path, e))
}

/// Creates `dir` and missing parents with mode 0700, fsyncing each parent
/// whose entry was created.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => sync_parent(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io("cannot create directory", dir, e)),
    }
}

/// The names in `dir` that are neither temp files nor metadata (both start
/// with '.'), sorted; a missing or unreadable directory has none.
pub fn visible_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Opens `path` for reading without following a symbolic link in its last
/// component (the directories above are checked by whoever resolved them):
/// a link planted in an archive directory cannot lead a reader elsewhere.
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// [`create_dir_all`] that returns the directories it created, outermost
/// first, so a caller whose work then fails can take them back
/// ([`remove_new_dirs`]).
pub fn create_dir_all_new(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| !p.is_dir()) {
        missing.push(p.to_path_buf());
        d = p.parent();
    }
    missing.reverse();
    create_dir_all(dir)?;
    Ok(missing)
}

/// Removes directories [`create_dir_all_new`] made, innermost first, as
/// long as they are empty (another writer's files keep theirs).
pub fn remove_new_dirs(created: &[PathBuf]) {
    for d in created.iter().rev() {
        if fs::remove_dir(d).is_err() {
            return;
        }
    }
}

/// Writes a small file atomically, replacing any previous version (used for
/// state such as counters, where the newest value wins).
pub fn write_replace(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)
        .map_err(|e| Error::io("cannot write", f.temp_path().to_path_buf(), e))?;
    let file = f.file.take().expect("open");
    file.sync_all()
        .map_err(|e| Error::io("cannot fsync", &f.temp, e))?;
    drop(file);
    fs::rename(&f.temp, dest).map_err(|e| Error::io("cannot rename into", dest, e))?;
    f.temp = PathBuf::new();
    sync_parent(dest)
}

/// True for the temp files this module creates (and any hidden file): such
/// names are never archive content.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
}

/// Removes temp files left for `name` in `dir` by writers that no longer
/// run, so a crash mid-write never blocks that name.
pub fn remove_stale_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}{TEMP_MARK}");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|pid| !process_alive(pid)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn process_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn commit_makes_file_visible_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("000000010000000000000001");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"wal").unwrap();
        assert!(!dest.exists(), "nothing visible before commit");
        assert_eq!(f.commit().unwrap(), Commit::Stored);
        assert_eq!(fs::read(&dest).unwrap(), b"wal");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp left");
    }

    /// restore-cmd run by hand with a bare %p (`out.seg`) used to rename
    /// the file into place, then fail on fsyncing directory "" and exit
    /// non-zero with the file there.
    #[test]
    fn a_bare_name_syncs_the_current_directory() {
        sync_parent(Path::new("000000010000000000000001")).unwrap();
        sync_parent(Path::new("./x")).unwrap();
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x");
        fs::write(&dest, b"first").unwrap();
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"second").unwrap();
        let Commit::Exists(temp) = f.commit().unwrap() else {
            panic!("must not replace");
        };
        assert_eq!(fs::read(&dest).unwrap(), b"first");
        assert_eq!(fs::read(&temp).unwrap(), b"second");
    }

    #[test]
    fn stale_temps_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0x7fffffff never exists.
        let stale = dir.path().join(".x.tmp-2147483647-1");
        let live = dir.path().join(format!(".x.tmp-{}-1", std::process::id()));
        fs::write(&stale, b"").unwrap();
        fs::write(&live, b"").unwrap();
        remove_stale_temps(dir.path(), "x");
        assert!(!stale.exists());
        assert!(live.exists());
    }

    #[test]
    fn mtime_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x");
        let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"a").unwrap();
        f.set_mtime(when).unwrap();
        f.commit().unwrap();
        assert_eq!(fs::metadata(&dest).unwrap().modified().unwrap(), when);
    }
}
