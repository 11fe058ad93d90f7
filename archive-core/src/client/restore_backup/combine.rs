//! Restoring an incremental backup (PostgreSQL 17 and later): its chain,
//! from its full backup up to it, is fetched and unpacked into a scratch
//! directory next to the data directory, one subdirectory per backup with
//! its `backup_manifest`; `pg_combinebackup` of the cluster's major version
//! (its `PG_VERSION`) writes the data directory from them; the scratch
//! directory is removed, whatever happened.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::config::Config;
use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::common::pg_programs;
use crate::common::progress::Progress;
use crate::net::ssh::Channel;
use crate::net::wire::BackupEntry;

use super::{archives_of, unpack};

/// The chain restoring `chosen` among `backups`: its full backup first,
/// `chosen` last; refused when a link is missing or incomplete.
pub fn chain_of(backups: &[BackupEntry], chosen: &BackupEntry) -> Result<Vec<BackupEntry>> {
    let mut out = vec![chosen.clone()];
    let mut at = chosen;
    while at.incremental {
        let Some(p) = at.parent else {
            return Err(Error::Refused(format!(
                "backup data.master.{} is incremental and the backup it was taken against is \
                 gone: it cannot be restored; choose another backup (--backup N)",
                at.index
            )));
        };
        at = backups
            .iter()
            .find(|b| b.index == p && b.complete && b.index < at.index)
            .ok_or_else(|| {
                Error::Refused(format!(
                    "backup data.master.{} is incremental; its parent data.master.{p} is not a \
                     complete backup: it cannot be restored; choose another backup (--backup N)",
                    at.index
                ))
            })?;
        out.push(at.clone());
    }
    out.reverse();
    Ok(out)
}

/// Backups `choose` may pick: everything but incrementals whose chain is
/// broken (marked incomplete, so they are never chosen).
pub fn restorable(backups: &[BackupEntry]) -> Vec<BackupEntry> {
    backups
        .iter()
        .map(|b| {
            let mut b = b.clone();
            b.complete = b.complete && chain_of(backups, &b).is_ok();
            b
        })
        .collect()
}

/// Where the chain is unpacked: `.<data-dir name>.chain.<pid>` beside the
/// data directory (same file system, so the space is where the data goes).
fn scratch_for(data_dir: &Path) -> Result<PathBuf> {
    let name = data_dir
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a directory name", data_dir.display())))?;
    let parent = data_dir.parent().unwrap_or(Path::new("."));
    Ok(parent.join(format!(
        ".{}.chain.{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// pg_combinebackup of the major version of the backup unpacked in `dir`
/// (data.master.`index`): it reads only its own version's pg_control.
fn combine_program(cfg: &Config, dir: &Path, index: u32) -> Result<pg_programs::Found> {
    let version = dir.join("PG_VERSION");
    let major: u32 = fs::read_to_string(&version)
        .map_err(|e| Error::io("cannot read", &version, e))?
        .trim()
        .parse()
        .map_err(|_| {
            Error::Refused(format!(
                "{}: not a PostgreSQL major version (backup data.master.{index})",
                version.display()
            ))
        })?;
    let found = pg_programs::find(cfg, "pg_combinebackup", Some(major))?;
    if found.major != major {
        return Err(Error::Usage(format!(
            "backup data.master.{index} is of PostgreSQL {major}: combining its chain needs \
             PostgreSQL {major}'s pg_combinebackup, but the one found is {}'s ({}); install \
             PostgreSQL {major}'s client programs (postgresql-client-{major}) or set pg_bin_dir",
            found.major,
            found.path.display()
        )));
    }
    Ok(found)
}

/// Fetches `chain` from backup directory `backup_dir` on `ch`'s server and
/// writes the combined data directory `data_dir` (empty).
pub async fn restore_chain(
    cfg: &Config,
    ch: &mut Channel,
    backup_dir: &str,
    from: &str,
    chain: &[BackupEntry],
    data_dir: &Path,
) -> Result<()> {
    let scratch = scratch_for(data_dir)?;
    if scratch.exists() {
        return Err(Error::Refused(format!(
            "{} exists: remove it (a scratch directory of an earlier restore)",
            scratch.display()
        )));
    }
    let result: Result<()> = async {
        let mut all = Vec::new();
        for b in chain {
            let archives = archives_of(b)?;
            if archives.len() > 1 {
                return Err(Error::Usage(format!(
                    "backup data.master.{} has tablespaces: restore-backup does not combine \
                     incremental backups with tablespaces yet; restore its chain by hand with \
                     pg_combinebackup",
                    b.index
                )));
            }
            all.push(archives.into_iter().next().expect("base.tar"));
        }
        let last = chain.last().expect("a chain");
        let progress = Progress::new(
            format!(
                "restoring data.master.{} from {from} (a chain of {} backups)",
                last.index,
                chain.len()
            ),
            Some(all.iter().map(|a| a.size).sum()),
        );
        let mut dirs = Vec::new();
        let mut program = None;
        for (b, base) in chain.iter().zip(&all) {
            let dir = scratch.join(format!("data.master.{}", b.index));
            durable::create_dir_all(&dir)?;
            unpack::fetch_and_unpack(
                ch, backup_dir, b.index, &base.name, base.codec, &dir, &progress,
            )
            .await?;
            let mpath = dir.join("backup_manifest");
            let mut f =
                fs::File::create(&mpath).map_err(|e| Error::io("cannot create", &mpath, e))?;
            ch.get_backup_file(backup_dir, b.index, "backup_manifest", &mut f)
                .await?;
            if program.is_none() {
                // Known from the full backup: refused before the rest is fetched.
                program = Some(combine_program(cfg, &dir, b.index)?);
            }
            dirs.push(dir);
        }
        progress.finish();
        let program = program.expect("a chain has a full backup");
        let out = Command::new(&program.path)
            .arg("--output")
            .arg(data_dir)
            .args(&dirs)
            .output()
            .map_err(|e| Error::io("cannot run", &program.path, e))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = err.lines().take(10).collect();
            return Err(Error::Refused(format!(
                "{} ({}) could not combine backups {} into {}: {}; empty {} before trying again",
                program.path.display(),
                out.status,
                chain
                    .iter()
                    .map(|b| format!("data.master.{}", b.index))
                    .collect::<Vec<_>>()
                    .join(", "),
                data_dir.display(),
                lines.join("; "),
                data_dir.display()
            )));
        }
        Ok(())
    }
    .await;
    let _ = fs::remove_dir_all(&scratch);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: u32, incremental: bool, parent: Option<u32>) -> BackupEntry {
        BackupEntry {
            index,
            complete: true,
            start_wal: None,
            start_lsn: None,
            start_time: None,
            consistent_by: None,
            stop_lsn: None,
            files: vec![],
            incremental,
            parent,
        }
    }

    #[test]
    fn a_chain_runs_from_its_full_backup_and_a_broken_one_is_never_chosen() {
        let all = vec![
            e(0, false, None),
            e(1, true, Some(0)),
            e(2, true, Some(1)),
            e(3, true, None),
            e(4, false, None),
        ];
        let idx = |v: Vec<BackupEntry>| v.iter().map(|b| b.index).collect::<Vec<_>>();
        assert_eq!(idx(chain_of(&all, &all[2]).unwrap()), [0, 1, 2]);
        assert_eq!(idx(chain_of(&all, &all[4]).unwrap()), [4]);
        let err = chain_of(&all, &all[3]).unwrap_err().to_string();
        assert!(err.contains("data.master.3 is incremental"), "{err}");
        let ok: Vec<bool> = restorable(&all).iter().map(|b| b.complete).collect();
        assert_eq!(ok, [true, true, true, false, true]);
        assert_eq!(
            scratch_for(Path::new("/srv/restore/main")).unwrap(),
            PathBuf::from(format!("/srv/restore/.main.chain.{}", std::process::id()))
        );
    }
}
