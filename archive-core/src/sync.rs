//! wal-sync: makes an archive server and its peer hold the same WAL.
//! (Implementation in progress; the signature is final.)

use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Result};

/// Options of a sync run.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Only report what would be copied.
    pub dry_run: bool,
}

/// What a sync run did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Files copied from here to the peer.
    pub to_peer: u64,
    /// Files copied from the peer to here.
    pub from_peer: u64,
    /// Bytes copied, both directions.
    pub bytes: u64,
    /// Same-named files whose contents differ (left alone on both sides).
    pub divergent: Vec<String>,
}

/// Syncs the local archive directory `wals_dir` with the same directory on
/// `peer`, both directions.
pub async fn wal_sync(
    _cfg: &Config,
    _wals_dir: &Path,
    _peer: &str,
    _opts: &SyncOptions,
) -> Result<SyncReport> {
    Err(Error::Usage("wal-sync is not implemented yet".into()))
}
