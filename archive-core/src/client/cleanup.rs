//! wal-cleanup: removes WAL that no kept backup needs, on both servers.
//!
//! Every server's WAL must serve every backup on either server (restore
//! reads from both), so the cut-off is the earliest START WAL of the
//! complete backups that exist on either server. A server with no backup
//! yet does not hold the other back (backups alternate, and a server whose
//! task failed would otherwise let WAL grow without bound), as long as its
//! backup directory is provably the right one: it carries the identity
//! marker or holds a complete backup (`server::backups::dir_identity`). A
//! missing, unmounted or replaced directory is not "no backups": cleanup
//! stops there. Files strictly older by log/segment number are removed,
//! across timelines, the way pg_archivecleanup compares (the timeline is
//! ignored); `.history` files always stay.
//!
//! It decides before it deletes: it reports the plan (count, first and last
//! name), takes a lock on each side, and aborts without deleting anything
//! when a backup directory is not proven or is marked for another database
//! system, a label is missing or unreadable, the peer cannot be read, or the
//! cut-off segment itself is on neither server (the backups would be
//! unusable: something is badly wrong, a human must look).

use std::path::Path;
use std::time::Duration;

use crate::common::config::Config;
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::common::wal::{WalKind, WalName};
use crate::net::ssh::{self, SshSettings};
use crate::net::wire::{BackupDirIdentity, ListEntry};
use crate::server::backups;
use crate::server::store::Store;

/// Options of a cleanup run.
#[derive(Debug, Clone, Default)]
pub struct CleanupOptions {
    /// Only report what would be removed.
    pub dry_run: bool,
    /// An unproven backup directory keeps everything (a warning) instead
    /// of failing: base-backup's choice, whose first backup of a cluster
    /// comes before the peer ever used its directory.
    pub unproven_keeps_all: bool,
}

/// What a cleanup run did.
#[derive(Debug, Clone, Default)]
pub struct CleanupReport {
    /// Oldest segment kept (the earliest START WAL of the complete backups
    /// on both servers).
    pub keep_from: Option<String>,
    /// Files removed here (or that would be, on a dry run).
    pub removed_local: u64,
    /// Files removed on the peer (or that would be).
    pub removed_peer: u64,
}

/// Removes from `wals_dir`, here and on `peer`, the segments older than the
/// oldest backup's START WAL on either server (backups in `backup_dir`, the
/// same path on both).
pub async fn wal_cleanup(
    cfg: &Config,
    backup_dir: &Path,
    wals_dir: &Path,
    peer: &str,
    opts: &CleanupOptions,
) -> Result<CleanupReport> {
    let store = Store::from_config(cfg);
    let dir_arg = wals_dir.to_string_lossy().into_owned();
    let backup_arg = backup_dir.to_string_lossy().into_owned();
    store.archive_dir(&dir_arg)?;
    let local_backups = store.backup_dir(&backup_arg)?;
    let me = cfg
        .server_name
        .clone()
        .unwrap_or_else(|| "this server".into());
    let holder = format!("wal-cleanup on {me} (pid {})", std::process::id());
    let _local_lock = store.lock(&dir_arg, "wal-cleanup", &holder)?;
    let ssh = SshSettings::from_config(cfg);
    let mut ch = with_retry(peer, || async {
        let mut ch = ssh::connect(&ssh, peer).await?;
        ch.lock(&dir_arg, "wal-cleanup", &holder).await?;
        Ok(ch)
    })
    .await?;

    let mine = backups::oldest_start_wal(&local_backups)?.map(|l| l.start_wal);
    let my_identity = backups::dir_identity(&local_backups)?;
    let (theirs, their_identity) = ch.oldest_backup(&backup_arg).await?;
    let wal_system = crate::server::store::recorded_identity(&store.archive_dir(&dir_arg)?)
        .map(|i| i.system_identifier);
    for (who, identity) in [(me.as_str(), &my_identity), (peer, &their_identity)] {
        if let Err(e) = check_identity(who, identity, wal_system, &backup_arg, &dir_arg) {
            if !opts.unproven_keeps_all {
                return Err(e);
            }
            log::warn(format!("{e}; keeping everything"));
            return Ok(CleanupReport::default());
        }
    }
    let keep_from = match (&mine, &theirs) {
        (Some(m), Some(t)) => older(m, t)?,
        (Some(one), None) | (None, Some(one)) => one.clone(),
        (None, None) => {
            log::info(format!(
                "wal-cleanup {dir_arg}: no complete backup in {backup_arg} on {me} or {peer} yet; keeping everything"
            ));
            return Ok(CleanupReport::default());
        }
    };
    let show = |s: &Option<String>| s.clone().unwrap_or_else(|| "(no backup yet)".into());
    let (mine, theirs) = (show(&mine), show(&theirs));
    let local = store.list(&dir_arg)?;
    let remote = ch.list(&dir_arg).await?;
    let has = |list: &[ListEntry]| list.iter().any(|e| e.name == keep_from);
    if !has(&local) && !has(&remote) {
        return Err(Error::Refused(format!(
            "wal-cleanup {dir_arg}: the oldest backup needs {keep_from}, which is on neither {me} nor {peer}; nothing removed: the backups cannot be restored, check the archive"
        )));
    }
    let cut = WalName::parse(&keep_from)?;
    let doomed_local = older_than(&local, &cut);
    let doomed_remote = older_than(&remote, &cut);
    log::info(format!(
        "wal-cleanup {dir_arg}: oldest backup here starts at {mine}, on {peer} at {theirs}; keeping from {keep_from}; {} here{}, {} on {peer}{}{}",
        doomed_local.len(),
        span(&doomed_local),
        doomed_remote.len(),
        span(&doomed_remote),
        if opts.dry_run { " would be removed (dry run)" } else { " to remove" }
    ));
    let mut report = CleanupReport {
        keep_from: Some(keep_from),
        removed_local: doomed_local.len() as u64,
        removed_peer: doomed_remote.len() as u64,
    };
    if opts.dry_run {
        return Ok(report);
    }
    let mut removed_peer = 0;
    for chunk in doomed_remote.chunks(1000) {
        let (removed, _) = match ch.remove(&dir_arg, chunk).await {
            Ok(r) => r,
            Err(e) if e.is_host_failure() => {
                log::warn(format!("removing on {peer} failed ({e}); retrying once"));
                ch = ssh::connect(&ssh, peer).await?;
                ch.lock(&dir_arg, "wal-cleanup", &holder).await?;
                ch.remove(&dir_arg, chunk).await?
            }
            Err(e) => return Err(e),
        };
        removed_peer += removed;
    }
    let (removed_local, _) = store.remove(&dir_arg, &doomed_local)?;
    report.removed_local = removed_local;
    report.removed_peer = removed_peer;
    log::info(format!(
        "wal-cleanup {dir_arg}: removed {removed_local} here and {removed_peer} on {peer}"
    ));
    ch.close().await;
    Ok(report)
}

/// Refuses a backup directory that is not provably the cluster's (missing,
/// unmounted, replaced: its backups would be ignored), or whose marker
/// names another database system than the WAL's.
fn check_identity(
    who: &str,
    identity: &BackupDirIdentity,
    wal_system: Option<u64>,
    backup_dir: &str,
    wals_dir: &str,
) -> Result<()> {
    if !identity.proven {
        return Err(Error::Refused(format!(
            "wal-cleanup {wals_dir}: the backup directory {backup_dir} on {who} has no identity marker ({}) and no complete backup: it may be missing, unmounted or the wrong path, and the backups it should hold would lose their WAL; nothing removed. Mount or fix it; a server that never backed this cluster up gets the marker from its first base-backup run",
            backups::DIR_MARKER
        )));
    }
    match (identity.system_identifier, wal_system) {
        (Some(b), Some(w)) if b != w => Err(Error::Refused(format!(
            "wal-cleanup {wals_dir}: the backup directory {backup_dir} on {who} is marked for database system {b}, but the WAL in {wals_dir} is of system {w}; nothing removed: check that both paths belong to the same cluster"
        ))),
        _ => Ok(()),
    }
}

/// Runs a remote step, once more after a timeout or connection failure.
async fn with_retry<T, F, Fut>(peer: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match f().await {
        Err(e) if e.is_host_failure() => {
            log::warn(format!("{peer}: {e}; retrying once"));
            tokio::time::sleep(Duration::from_secs(1)).await;
            f().await
        }
        other => other,
    }
}

/// The older of two segment names by position (timeline ignored, as
/// pg_archivecleanup compares).
fn older(a: &str, b: &str) -> Result<String> {
    let (wa, wb) = (WalName::parse(a)?, WalName::parse(b)?);
    Ok(if position(&wa) <= position(&wb) { a } else { b }.to_string())
}

fn position(w: &WalName) -> (u32, u32) {
    (w.log(), w.seg())
}

/// Files strictly older than `cut` by log/segment, never history files.
fn older_than(list: &[ListEntry], cut: &WalName) -> Vec<String> {
    list.iter()
        .filter_map(|e| WalName::parse(&e.name).ok())
        .filter(|w| w.kind() != WalKind::History && position(w) < position(cut))
        .map(|w| w.as_str().to_string())
        .collect()
}

fn span(names: &[String]) -> String {
    match (names.first(), names.last()) {
        (Some(a), Some(b)) => format!(" ({a} .. {b})"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str) -> ListEntry {
        ListEntry {
            name: name.into(),
            size: 1,
            mtime: 0,
        }
    }

    #[test]
    fn cut_ignores_timeline_and_keeps_history() {
        let list = [
            e("000000010000000000000001"),
            e("000000010000000000000002.00000028.backup"),
            e("000000010000000000000003"),
            e("00000002.history"),
            e("000000020000000000000002.partial"),
            e("000000020000000000000003"),
            e("000000020000000000000004"),
        ];
        let cut = WalName::parse("000000020000000000000003").unwrap();
        assert_eq!(
            older_than(&list, &cut),
            [
                "000000010000000000000001",
                "000000010000000000000002.00000028.backup",
                "000000020000000000000002.partial"
            ]
        );
    }

    #[test]
    fn older_of_two_start_wals() {
        assert_eq!(
            older("000000020000000000000005", "000000010000000000000007").unwrap(),
            "000000020000000000000005"
        );
        assert_eq!(
            older("00000001000000010000000A", "000000010000000000000FFF").unwrap(),
            "000000010000000000000FFF"
        );
    }
}
