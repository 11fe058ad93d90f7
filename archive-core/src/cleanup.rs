//! wal-cleanup: removes WAL no kept backup needs, on both servers.
//! (Implementation in progress; the signature is final.)

use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Result};

/// Options of a cleanup run.
#[derive(Debug, Clone, Default)]
pub struct CleanupOptions {
    /// Only report what would be removed.
    pub dry_run: bool,
}

/// What a cleanup run did.
#[derive(Debug, Clone, Default)]
pub struct CleanupReport {
    /// Oldest segment kept (START WAL of the older of the two oldest backups).
    pub keep_from: Option<String>,
    /// Files removed here.
    pub removed_local: u64,
    /// Files removed on the peer.
    pub removed_peer: u64,
}

/// Removes from `wals_dir`, here and on `peer`, the segments older than the
/// oldest backup's START WAL on either server (backups in `backup_dir`, the
/// same path on both).
pub async fn wal_cleanup(
    _cfg: &Config,
    _backup_dir: &Path,
    _wals_dir: &Path,
    _peer: &str,
    _opts: &CleanupOptions,
) -> Result<CleanupReport> {
    Err(Error::Usage("wal-cleanup is not implemented yet".into()))
}
