//! Answers about the backups of a backup directory: the START WAL of the
//! oldest complete one (`Request::OldestBackup`, wal-cleanup's cut-off) and
//! the listing with what their labels and markers say
//! (`Request::ListBackups`, with each incremental's parent; an Archive 2.0 plain backup lists a `base.tar`
//! that `get.rs` makes from its directory).

use crate::common::error::{Error, Result};
use crate::net::wire;
use crate::server::backups;

use super::Server;

impl Server {
    /// START WAL of the oldest complete backup in `backup_dir`, and whether
    /// the directory is provably the backup directory.
    pub(super) fn oldest_backup(
        &self,
        backup_dir: &str,
    ) -> Result<(Option<String>, wire::BackupDirIdentity)> {
        let dir = self.store.backup_dir(backup_dir)?;
        let start_wal = backups::oldest_start_wal(&dir)?.map(|l| l.start_wal);
        Ok((start_wal, backups::dir_identity(&dir)?))
    }

    /// The backups in `backup_dir`, oldest first, with their files.
    pub(super) fn list_backups(&self, backup_dir: &str) -> Result<Vec<wire::BackupEntry>> {
        let dir = self.store.backup_dir(backup_dir)?;
        let mut out = Vec::new();
        let numbered = backups::list(&dir)?;
        let links = backups::chain::resolve(&numbered);
        let indexes: Vec<u32> = numbered.iter().map(|b| b.index).collect();
        for (b, link) in numbered.into_iter().zip(links) {
            let label = b.label().ok();
            let mut files: Vec<wire::ListEntry> = std::fs::read_dir(&b.path)
                .map_err(|e| Error::io("cannot list", &b.path, e))?
                .flatten()
                .filter_map(|e| {
                    let meta = e.metadata().ok()?;
                    meta.is_file().then(|| wire::ListEntry {
                        name: e.file_name().to_string_lossy().into_owned(),
                        size: meta.len(),
                        mtime: 0,
                    })
                })
                .collect();
            // Archive 2.0's plain backups are served as one tar archive.
            if b.legacy == Some(backups::Legacy::Plain) {
                files.push(wire::ListEntry {
                    name: backups::PLAIN_AS_TAR.into(),
                    size: backups::plain_tar_size(&b.path)?,
                    mtime: 0,
                });
            }
            files.sort_by(|a, b| a.name.cmp(&b.name));
            let end = b.consistency();
            out.push(wire::BackupEntry {
                index: b.index,
                complete: b.complete,
                start_wal: label.as_ref().map(|l| l.start_wal.clone()),
                start_lsn: label.as_ref().map(|l| l.start_lsn),
                start_time: label.as_ref().map(|l| l.start_time.clone()),
                consistent_by: end.by,
                stop_lsn: end.stop_lsn,
                incremental: link != backups::Link::Full,
                parent: match link {
                    backups::Link::Parent(i) => Some(indexes[i]),
                    _ => None,
                },
                files,
            });
        }
        Ok(out)
    }
}
