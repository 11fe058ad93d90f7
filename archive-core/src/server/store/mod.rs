//! The archive server's storage: the [`Store`] under the configured
//! archive roots and what it does with a directory argument and the files
//! in it (list, open, digest, remove, lock, put).
//!
//! A put is accepted only when the name is a PostgreSQL archive file name,
//! the directory lies under a configured archive root, the received size
//! and checksum match what was declared, and, for WAL segments, the page
//! header matches the name and the system identifier matches the one
//! recorded for the directory. The file becomes visible only complete and
//! durable ([`crate::common::durable`]); an existing name is never
//! overwritten. Where each step lives:
//!
//! - [`put`]: the put from request to durable file, duplicates and conflicts;
//! - [`receiver`]: content into a temp file, codec sniffing, compression,
//!   page-header and size checks;
//! - [`identity`]: the system identifier recorded per directory;
//! - [`raw`]: decoding a stored file to compare raw content;
//! - [`digest`]: the content proof recorded beside each file.
//!
//! Per-directory metadata lives in `<dir>/.pgarchive/`, a name no WAL file
//! can have.

use std::fs::{self, File};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncRead;

use crate::common::codec::Codec;
use crate::common::config::Config;
use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::common::names::validate_dir_arg;
use crate::common::wal::{self, WalName};
use crate::net::wire::{self, PutRequest, Request, StoreOutcome};

mod digest;
mod identity;
mod put;
mod raw;
mod receiver;
#[cfg(test)]
pub(crate) mod testing;

pub use identity::{recorded_identity, ClusterIdentity};

/// The raw blake3 recorded for `name` in the resolved archive directory
/// `dir` when it was accepted; `None` for a file stored before records.
pub(crate) fn recorded_digest(dir: &Path, name: &str) -> Result<Option<blake3::Hash>> {
    digest::read(dir, name)
}

/// Name of the per-directory metadata directory.
pub(crate) const META_DIR: &str = ".pgarchive";

/// Result of a successful put.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// New or already there.
    pub outcome: StoreOutcome,
    /// Codec of the bytes on disk.
    pub codec: Codec,
    /// Bytes on disk.
    pub stored_size: u64,
    /// Final path.
    pub path: PathBuf,
}

/// Storage under the configured archive roots.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    roots: Vec<PathBuf>,
    level: i32,
    io_timeout: Duration,
    /// Raw size limit of files that are not segments.
    other_max: u64,
}

impl Store {
    /// A store writing under `roots`, compressing at zstd `level`.
    pub fn new(roots: Vec<PathBuf>, level: i32, io_timeout: Duration) -> Store {
        Store {
            roots,
            level,
            io_timeout,
            other_max: Config::default().max_other_file_size.0,
        }
    }

    /// The store a configuration describes.
    pub fn from_config(cfg: &Config) -> Store {
        Store {
            other_max: cfg.max_other_file_size.0,
            ..Store::new(
                cfg.archive_roots.clone(),
                cfg.compress_level,
                cfg.io_timeout(),
            )
        }
    }

    /// The most raw bytes a file named `name` may decode to.
    pub(crate) fn max_raw_size(&self, name: &WalName) -> u64 {
        name.max_raw_size(self.other_max)
    }

    /// Resolves a DST-DIR argument to a directory under an archive root.
    pub fn archive_dir(&self, dir: &str) -> Result<PathBuf> {
        validate_dir_arg(dir)?;
        let path: PathBuf = Path::new(dir)
            .components()
            .filter(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            .collect();
        if let Some(root) = self.roots.iter().find(|root| path.starts_with(root)) {
            check_below_root(root, &path)?;
            Ok(path)
        } else {
            let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
            Err(Error::Refused(format!(
                "archive directory {dir} is not under an archive root of this server ({}); fix DST-DIR or archive_roots",
                roots.join(", ")
            )))
        }
    }

    /// Resolves a backup directory argument: same rules as archive
    /// directories (backups live under the archive roots too).
    pub fn backup_dir(&self, dir: &str) -> Result<PathBuf> {
        self.archive_dir(dir)
    }

    /// Raw size and blake3 of stored files (`None` when missing).
    pub fn digests(&self, dir: &str, names: &[String]) -> Result<Vec<Option<wire::RawDigest>>> {
        check_name_count(names)?;
        let path = self.archive_dir(dir)?;
        names
            .iter()
            .map(|n| {
                wal::validate_file_name(n)?;
                let name = WalName::parse(n)?;
                let p = path.join(n);
                if !p.exists() {
                    return Ok(None);
                }
                let raw = raw::decode(&p, self.max_raw_size(&name))?;
                Ok(Some(wire::RawDigest {
                    raw_size: raw.size,
                    blake3: raw.hash.to_hex().to_string(),
                }))
            })
            .collect()
    }

    /// Opens a stored file for sending: (file, size, mtime, the raw blake3
    /// recorded when it was accepted, if any).
    pub fn open(&self, dir: &str, name: &str) -> Result<(File, u64, i64, Option<blake3::Hash>)> {
        wal::validate_file_name(name)?;
        let dir_path = self.archive_dir(dir)?;
        let path = dir_path.join(name);
        let file = match durable::open_no_follow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("{name} is not in {dir}")))
            }
            Err(e) => return Err(Error::io("cannot open", &path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("cannot stat", &path, e))?;
        let recorded = digest::read(&dir_path, name)?;
        Ok((file, meta.len(), unix_mtime(&meta), recorded))
    }

    /// The raw blake3 of stored `name`, proven: the file is decoded in full
    /// and must match the digest recorded when it was accepted (a copy that
    /// does not is [`Error::Refused`]: damaged or forged, never to be copied
    /// elsewhere). A file without a record (stored before records existed)
    /// gets the digest it decodes to.
    pub fn proven_digest(&self, dir: &str, name: &str) -> Result<blake3::Hash> {
        wal::validate_file_name(name)?;
        let wal_name = WalName::parse(name)?;
        let dir_path = self.archive_dir(dir)?;
        let raw = raw::decode(&dir_path.join(name), self.max_raw_size(&wal_name))?;
        match digest::read(&dir_path, name)? {
            Some(r) if r != raw.hash => Err(Error::Refused(format!(
                "{name} in {dir} decodes to blake3 {}, not to the {} recorded when it was accepted: the copy is damaged or forged; not copied, replace it by the other server's copy",
                raw.hash.to_hex(),
                r.to_hex()
            ))),
            _ => Ok(raw.hash),
        }
    }

    /// The archive files of `dir` (a missing directory is empty), by name.
    pub fn list(&self, dir: &str) -> Result<Vec<wire::ListEntry>> {
        let path = self.archive_dir(dir)?;
        let rd = match fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot list", &path, e)),
        };
        let mut files = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("cannot list", &path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if durable::is_temp_name(&name) || WalName::parse(&name).is_err() {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(|e| Error::io("cannot stat", entry.path(), e))?;
            if meta.is_file() {
                files.push(wire::ListEntry {
                    name,
                    size: meta.len(),
                    mtime: unix_mtime(&meta),
                });
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Removes archive files from `dir` and fsyncs it: (removed, missing).
    pub fn remove(&self, dir: &str, names: &[String]) -> Result<(u64, u64)> {
        check_name_count(names)?;
        let path = self.archive_dir(dir)?;
        for n in names {
            wal::validate_file_name(n)?;
            WalName::parse(n)?;
        }
        let (mut removed, mut missing) = (0, 0);
        let records = path.join(META_DIR).join("digest").is_dir();
        for n in names {
            // The record goes with its file, under the name's lock, so a put
            // of the name meanwhile keeps its own.
            let held = if records {
                Some(digest::lock_name(&path, n)?)
            } else {
                None
            };
            match fs::remove_file(path.join(n)) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing += 1,
                Err(e) => return Err(Error::io("cannot remove", path.join(n), e)),
            }
            if let Some(held) = &held {
                digest::remove(held, &path, n)?;
            }
        }
        if removed > 0 {
            durable::sync_dir(&path)?;
        }
        Ok((removed, missing))
    }

    /// Takes the exclusive lock `name` of `dir` without waiting; the lock
    /// is held while the returned file stays open.
    pub fn lock(&self, dir: &str, name: &str, holder: &str) -> Result<File> {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::Refused(format!(
                "lock name {name:?} is not acceptable"
            )));
        }
        let meta = self.archive_dir(dir)?.join(META_DIR);
        durable::create_dir_all(&meta)?;
        crate::common::lock::try_lock(&meta.join(format!("{name}.lock")), holder)
    }

    /// Receives `req.size` content bytes and the closing checksum from `body`
    /// and stores them. On a refusal the rest of the content is still read,
    /// so the channel stays usable and the sender gets the reason.
    pub async fn put<R: AsyncRead + Unpin>(
        &self,
        req: &PutRequest,
        body: &mut R,
    ) -> Result<Stored> {
        self.put_closed_by::<Request, R>(req, body, false).await
    }

    /// [`Store::put`] for content closed by frame `E`: a client's upload
    /// ([`Request`]) or a server's download ([`wire::Reply`]), so a copy
    /// fetched from the peer is stored as it streams in. With `prove`, the
    /// raw digest the request declares is checked by a full decode whatever
    /// the codec (wal-sync: a copy whose content is not its record's is
    /// never copied).
    pub async fn put_closed_by<E: wire::ClosingFrame, R: AsyncRead + Unpin>(
        &self,
        req: &PutRequest,
        body: &mut R,
        prove: bool,
    ) -> Result<Stored> {
        put::receive::<E, R>(self, req, body, prove).await
    }
}

/// Checks the components of `path` below `root`: no hidden name (the
/// archive's own `.pgarchive`, temp files), no WAL file name (such a
/// directory would take that file's place in its parent), and no symbolic
/// link or other non-directory (nothing a request names may lead out of the
/// archive roots). Components that do not exist yet are fine.
fn check_below_root(root: &Path, path: &Path) -> Result<()> {
    let below = path.strip_prefix(root).unwrap_or(Path::new(""));
    for comp in below.components() {
        let comp = comp.as_os_str().to_string_lossy();
        if comp.starts_with('.') || WalName::parse(&comp).is_ok() {
            return Err(Error::Refused(format!(
                "archive directory {} is not acceptable: {comp:?} below the archive root {} is hidden or named like a WAL file",
                path.display(),
                root.display()
            )));
        }
    }
    let mut p = root.to_path_buf();
    for comp in below.components() {
        p.push(comp);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::Refused(format!(
                    "{} is a symbolic link: archive directories may not lead out of the archive root {}; replace the link by a directory (or name its target in archive_roots)",
                    p.display(),
                    root.display()
                )))
            }
            Ok(m) if !m.is_dir() => {
                return Err(Error::Refused(format!(
                    "{} is not a directory",
                    p.display()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("cannot check", &p, e)),
        }
    }
    Ok(())
}

/// A request names at most [`wire::MAX_NAMES`] files: its cost is bounded.
fn check_name_count(names: &[String]) -> Result<()> {
    if names.len() > wire::MAX_NAMES {
        return Err(Error::Refused(format!(
            "{} names in one request; send at most {}",
            names.len(),
            wire::MAX_NAMES
        )));
    }
    Ok(())
}

fn unix_mtime(meta: &fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
