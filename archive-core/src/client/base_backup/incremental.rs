//! Whether the next backup is incremental, and against which parent
//! (PostgreSQL 17 and later; see `server::backups::chain`).
//!
//! A task with `incrementals_per_full` > 0 gets an incremental backup
//! against the newest backup on this server when: that backup is complete,
//! ours (not Archive 2.0's), its chain is whole and shorter than
//! `incrementals_per_full` incrementals, its manifest's own checksum holds;
//! the server is 17 or later with `summarize_wal = on`, and pg_basebackup is
//! 17 or later. Otherwise the backup is full, and the reason is logged.

use std::fs;
use std::path::{Path, PathBuf};

use crate::client::base_backup::pg_basebackup::{self as pgbb, Source};
use crate::client::base_backup::verify::check_manifest_checksum;
use crate::common::config::Config;
use crate::common::log;
use crate::common::page_header::format_lsn;
use crate::server::backups::{self, chain, MANIFEST};
use crate::{Error, Result};

/// The first PostgreSQL major version with incremental backups.
pub const FIRST_MAJOR: u32 = 17;

/// The backup an incremental is taken against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// Its directory name (data.master.N).
    pub name: String,
    /// Its backup_manifest (pg_basebackup's `--incremental`).
    pub manifest: PathBuf,
    /// Its manifest checksum (its identity in the incremental's SUCCESS).
    pub manifest_checksum: String,
    /// Its START LSN.
    pub start_lsn: u64,
    /// Incrementals in its chain (0: it is a full backup).
    pub depth: usize,
}

impl Parent {
    /// The SUCCESS lines naming it.
    pub fn success_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("kind", chain::INCREMENTAL.to_string()),
            ("parent", self.name.clone()),
            ("parent_manifest_checksum", self.manifest_checksum.clone()),
            ("parent_start_lsn", format_lsn(self.start_lsn)),
        ]
    }
}

/// The parent of an incremental backup in `dir`, or why the next backup
/// is full (`Err(reason)`), from what is on disk only.
pub fn parent_on_disk(dir: &Path, per_full: u32) -> std::result::Result<Parent, String> {
    let numbered = backups::list(dir).map_err(|e| e.to_string())?;
    let Some(i) = numbered.iter().rposition(|b| b.complete) else {
        return Err(format!("no complete backup in {} yet", dir.display()));
    };
    let newest = &numbered[i];
    let name = format!("{}{}", backups::PREFIX, newest.index);
    if newest.legacy.is_some() {
        return Err(format!("{name} was made by Archive 2.0 (no manifest)"));
    }
    let links = chain::resolve(&numbered);
    let Some(c) = chain::chain(&links, i) else {
        return Err(format!(
            "{name} is an incremental whose parent is gone: a new chain starts"
        ));
    };
    let depth = c.len() - 1;
    if depth >= per_full as usize {
        return Err(format!(
            "{name} ends a chain of {depth} incremental(s) (incrementals_per_full {per_full}): a full backup is due"
        ));
    }
    let manifest = newest.path.join(MANIFEST);
    let text =
        fs::read(&manifest).map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    check_manifest_checksum(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let manifest_checksum = chain::manifest_checksum(&manifest).map_err(|e| e.to_string())?;
    let label = newest.label().map_err(|e| e.to_string())?;
    Ok(Parent {
        name,
        manifest,
        manifest_checksum,
        start_lsn: label.start_lsn,
        depth,
    })
}

/// The parent for the next backup of `src` into `dir`, or `None` (full
/// backup, the reason logged) ; `program_major` is pg_basebackup's.
pub fn plan(
    cfg: &Config,
    src: &Source,
    dir: &Path,
    per_full: i32,
    program_major: u32,
) -> Option<Parent> {
    let per_full = u32::try_from(per_full).ok().filter(|n| *n > 0)?;
    let why = (|| {
        let parent = parent_on_disk(dir, per_full)?;
        let server = pgbb::server_major(cfg, src).map_err(|e| e.to_string())?;
        if server < FIRST_MAJOR {
            return Err(format!(
                "the server is PostgreSQL {server}; incremental backups need {FIRST_MAJOR} or later"
            ));
        }
        if program_major < FIRST_MAJOR {
            return Err(format!(
                "pg_basebackup is PostgreSQL {program_major}'s; incremental backups need {FIRST_MAJOR} or later"
            ));
        }
        if !pgbb::summarize_wal(cfg, src).map_err(|e| e.to_string())? {
            return Err(format!(
                "summarize_wal is off on {}:{} (incremental backups need it: alter system set summarize_wal = on; select pg_reload_conf())",
                src.host, src.port
            ));
        }
        Ok(parent)
    })();
    match why {
        Ok(p) => {
            log::info(format!(
                "incremental backup against {} (incremental {} of {per_full} after a full one)",
                p.name,
                p.depth + 1
            ));
            Some(p)
        }
        Err(reason) => {
            log::info(format!("full backup: {reason}"));
            None
        }
    }
}

/// The chain check of an incremental just taken: its backup_label's
/// `INCREMENTAL FROM LSN` is its parent's START LSN (the manifest it was
/// taken against is the one stored beside its parent).
pub fn check_label(label: &str, parent: &Parent, backup: &Path) -> Result<()> {
    let from = label
        .lines()
        .find_map(|l| l.strip_prefix("INCREMENTAL FROM LSN:"))
        .and_then(backups::parse_lsn);
    match from {
        Some(lsn) if lsn == parent.start_lsn => Ok(()),
        other => Err(Error::Refused(format!(
            "backup in {} is not an incremental of {}: its backup_label says INCREMENTAL FROM LSN {}, {} started at {}",
            backup.display(),
            parent.name,
            other.map_or_else(|| "(none)".to_string(), format_lsn),
            parent.name,
            format_lsn(parent.start_lsn)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incremental_must_come_from_its_parent() {
        let p = Parent {
            name: "data.master.0".into(),
            manifest: PathBuf::from("/b/data.master.0/backup_manifest"),
            manifest_checksum: "ab".into(),
            start_lsn: 0x2000028,
            depth: 0,
        };
        let label = "START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\n\
                     INCREMENTAL FROM LSN: 0/2000028\nINCREMENTAL FROM TLI: 1\n";
        check_label(label, &p, Path::new("/b/t")).unwrap();
        let e = check_label(
            &label.replace("0/2000028", "0/3000028"),
            &p,
            Path::new("/b/t"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("INCREMENTAL FROM LSN 0/3000028, data.master.0 started at 0/2000028"),
            "{e}"
        );
        assert!(check_label("START WAL LOCATION: x\n", &p, Path::new("/b/t")).is_err());
        let fields = p.success_fields();
        assert!(fields.contains(&("parent_start_lsn", "0/2000028".to_string())));
    }

    #[test]
    fn the_first_backup_a_long_chain_a_broken_one_and_a_damaged_manifest_are_full() {
        use crate::server::backups::chain::tests::make_backup;
        use crate::server::backups::slot;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        assert!(parent_on_disk(dir, 3)
            .unwrap_err()
            .contains("no complete backup"));
        make_backup(&slot(dir, 0), "a1", None);
        make_backup(&slot(dir, 1), "b1", Some("a1"));
        make_backup(&slot(dir, 2), "b2", Some("b1"));
        let e = parent_on_disk(dir, 2).unwrap_err();
        assert!(
            e.contains("data.master.2 ends a chain of 2 incremental(s) (incrementals_per_full 2)"),
            "{e}"
        );
        // Room for a third: the parent's manifest must hold (these are
        // made up).
        let e = parent_on_disk(dir, 3).unwrap_err();
        assert!(
            e.contains("backup_manifest") && e.contains("checksum"),
            "{e}"
        );
        make_backup(&slot(dir, 3), "c1", Some("ff"));
        let e = parent_on_disk(dir, 3).unwrap_err();
        assert!(
            e.contains("data.master.3 is an incremental whose parent is gone"),
            "{e}"
        );
    }
}
