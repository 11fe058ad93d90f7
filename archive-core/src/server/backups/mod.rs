//! Base backups as stored on an archive server.
//!
//! Layout: `<backup_dir>/data.master.<N>/` with N = 0 the oldest. Each holds
//! pg_basebackup's tar output (`base.tar[.zst|.gz|.lz4]`, `backup_manifest`),
//! the extracted `backup_label`, and a `SUCCESS` marker written last, after
//! the backup verified: a directory without it is not a backup, unless it
//! is a complete backup of Archive 2.0's ([`legacy`]).
//!
//! Where the rest lives: [`label`] (the backup_label), [`marker`] (the
//! SUCCESS marker and the backup's end), [`rotation`] (installing a new
//! backup and repairing after a crash, crash-safe at every step),
//! [`identity`] (the directory's identity marker), [`legacy`] (Archive
//! 2.0's backups), [`chain`] (incremental backups and their parents).

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::error::{Error, Result};

pub mod chain;
mod identity;
mod label;
mod legacy;
mod marker;
mod rotation;

pub use chain::{Link, ParentRef, INCREMENTAL};
pub use identity::{dir_identity, mark, read_marker, DirMarker, DIR_MARKER};
pub use label::{parse_label, parse_lsn, Label};
pub use legacy::{
    plain_tar_size, recognise as legacy_layout, write_plain_tar, Legacy, PLAIN_AS_TAR,
};
pub use marker::{
    manifest_stop_lsn, success_time_micros, success_value, write_success, Consistency,
};
pub use rotation::{
    install, remove_backup_dir, repair, Installed, RepairReport, Retention, PINNED,
};

/// Directory name prefix of a backup.
pub const PREFIX: &str = "data.master.";
/// Marker of a complete, verified backup.
pub const SUCCESS: &str = "SUCCESS";
/// The extracted label.
pub const LABEL: &str = "backup_label";
/// Name prefix of a backup being built (or rotated out): not a backup.
pub const TEMP_PREFIX: &str = "data.master.new.";
/// Name prefix a numbered directory without SUCCESS is moved to.
pub const INCOMPLETE_PREFIX: &str = "data.master.incomplete.";

/// Name of pg_basebackup's manifest in a backup directory.
pub const MANIFEST: &str = "backup_manifest";

/// One backup directory.
#[derive(Debug, Clone)]
pub struct Backup {
    /// N of data.master.N.
    pub index: u32,
    /// Its path.
    pub path: PathBuf,
    /// SUCCESS marker present, or a complete Archive 2.0 backup.
    pub complete: bool,
    /// Made by Archive 2.0 (no SUCCESS marker): its layout.
    pub legacy: Option<Legacy>,
}

impl Backup {
    /// Reads and parses its backup_label.
    pub fn label(&self) -> Result<Label> {
        let p = self.path.join(LABEL);
        // Refused, not retried: a complete backup without a readable label
        // is a doubt no retry resolves.
        let text = fs::read_to_string(&p).map_err(|e| {
            Error::Refused(format!(
                "cannot read backup label {}: {e}; check the backup before removing any WAL",
                p.display()
            ))
        })?;
        parse_label(&text).map_err(|e| Error::Refused(format!("{}: {e}", p.display())))
    }
}

/// Backups in `backup_dir`, oldest (lowest N) first; a missing directory
/// has none.
pub fn list(backup_dir: &Path) -> Result<Vec<Backup>> {
    let rd = match fs::read_dir(backup_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot list backups in", backup_dir, e)),
    };
    // Errors are errors, never "no such backup": a backup taken for
    // incomplete would move wal-cleanup's cut-off past WAL it needs.
    let listing = |e| Error::io("cannot list backups in", backup_dir, e);
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(listing)?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix(PREFIX)
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = e.path();
        let is_dir = fs::metadata(&path)
            .map_err(|e| Error::io("cannot stat backup", &path, e))?
            .is_dir();
        if is_dir {
            let success = path.join(SUCCESS);
            let ours = success
                .try_exists()
                .map_err(|e| Error::io("cannot check", &success, e))?;
            let legacy = if ours {
                None
            } else {
                legacy::recognise(&path)?
            };
            out.push(Backup {
                index: n,
                complete: ours || legacy.is_some(),
                legacy,
                path,
            });
        }
    }
    out.sort_by_key(|b| b.index);
    Ok(out)
}

/// The label of the complete backup that starts earliest in the WAL (by
/// START LSN, whatever its number or timeline): no kept backup needs WAL
/// below it. Not simply `.0`: after a point-in-time recovery the new
/// timeline starts below where the old one was, so a newer backup can
/// start earlier than an older one. `None` when there is no complete
/// backup; an unreadable label of a complete backup is an error.
pub fn oldest_start_wal(backup_dir: &Path) -> Result<Option<Label>> {
    let mut earliest: Option<Label> = None;
    for b in list(backup_dir)?.into_iter().filter(|b| b.complete) {
        let l = b.label()?;
        if earliest.as_ref().is_none_or(|e| l.start_lsn < e.start_lsn) {
            earliest = Some(l);
        }
    }
    Ok(earliest)
}

/// The newest complete backup, `None` when there is none.
pub fn newest(backup_dir: &Path) -> Result<Option<Backup>> {
    Ok(list(backup_dir)?.into_iter().rev().find(|b| b.complete))
}

/// Path of backup number `n` in `backup_dir`.
pub fn slot(backup_dir: &Path, n: u32) -> PathBuf {
    backup_dir.join(format!("{PREFIX}{n}"))
}

/// Where the backup made by process `pid` is built:
/// `<backup_dir>/data.master.new.<pid>`.
pub fn temp_dir(backup_dir: &Path, pid: u32) -> PathBuf {
    backup_dir.join(format!("{TEMP_PREFIX}{pid}"))
}

#[cfg(test)]
mod tests {
    use super::label::tests::LABEL_TEXT;
    use super::*;

    #[test]
    fn oldest_complete_backup_counts() {
        let d = tempfile::tempdir().unwrap();
        for (n, done) in [(0, false), (1, true), (2, true)] {
            let p = d.path().join(format!("{PREFIX}{n}"));
            fs::create_dir(&p).unwrap();
            fs::write(
                p.join(LABEL),
                LABEL_TEXT.replace("0002)", &format!("000{n})")),
            )
            .unwrap();
            if done {
                fs::write(p.join(SUCCESS), b"").unwrap();
            }
        }
        let l = oldest_start_wal(d.path()).unwrap().unwrap();
        assert_eq!(l.start_wal, "000000010000000000000001");
        assert!(oldest_start_wal(&d.path().join("none")).unwrap().is_none());
    }

    /// A backup that cannot be looked at (here a dangling symlink; in life
    /// a directory the archive user may not search) used to count as "not a
    /// backup", moving wal-cleanup's cut-off past the WAL it needs.
    #[test]
    fn a_backup_that_cannot_be_checked_is_an_error_not_skipped() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(d.path().join("gone"), d.path().join(format!("{PREFIX}0")))
            .unwrap();
        let p = d.path().join(format!("{PREFIX}1"));
        fs::create_dir(&p).unwrap();
        fs::write(p.join(LABEL), LABEL_TEXT).unwrap();
        fs::write(p.join(SUCCESS), b"").unwrap();
        assert!(list(d.path()).is_err());
        assert!(oldest_start_wal(d.path()).is_err());
    }

    /// keep = 2 after a point-in-time recovery: `.0` started on timeline 1
    /// at 0/50000000, `.1` on timeline 2 (which forked at 0/30000000) at
    /// 0/35000000. The cut-off used to come from `.0`, so wal-cleanup
    /// deleted timeline 2's segments 0x35-0x4F that `.1` needs.
    #[test]
    fn the_cut_off_is_the_earliest_start_not_the_lowest_number() {
        let d = tempfile::tempdir().unwrap();
        for (n, tli, lsn) in [(0, 1, 0x50u32), (1, 2, 0x35)] {
            let p = d.path().join(format!("{PREFIX}{n}"));
            fs::create_dir(&p).unwrap();
            let label = format!(
                "START WAL LOCATION: 0/{lsn:X}000028 (file {tli:08X}00000000000000{lsn:02X})\n\
                 CHECKPOINT LOCATION: 0/{lsn:X}000060\nBACKUP METHOD: streamed\n\
                 BACKUP FROM: primary\nSTART TIME: 2026-11-25 01:02:03 UTC\n\
                 LABEL: pg_basebackup base backup\nSTART TIMELINE: {tli}\n"
            );
            fs::write(p.join(LABEL), label).unwrap();
            fs::write(p.join(SUCCESS), b"").unwrap();
        }
        let l = oldest_start_wal(d.path()).unwrap().unwrap();
        assert_eq!(l.start_wal, "000000020000000000000035");
    }
}
