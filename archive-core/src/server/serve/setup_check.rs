//! `check_setup`: what pgarchive-check asks a server about the primary's
//! directory and the peer.

use std::time::Duration;

use crate::common::wal::WalName;
use crate::net::wire::Reply;
use crate::server::store::recorded_identity;

use super::Server;

impl Server {
    /// Answers [`crate::net::wire::Request::CheckSetup`]: the directory is
    /// created (as the first put would) and a hidden probe file written and
    /// removed in it; the peer is reached over this server's own ssh, as a
    /// forward would.
    pub(super) async fn check_setup(
        &mut self,
        dir: &str,
        peer: Option<&str>,
        holds: Option<&str>,
    ) -> Reply {
        let path = match self.store.archive_dir(dir) {
            Ok(p) => p,
            Err(e) => return Reply::from_error(&e),
        };
        let dir_error = probe_writable(&path).err();
        let recorded_system_identifier = recorded_identity(&path).map(|i| i.system_identifier);
        let peer_error = match peer {
            None => None,
            Some(p) if !self.forwards_to(p) => Some(format!(
                "{p} is not a host this server forwards to (it is this server, or not a host name)"
            )),
            Some(p) => {
                let limit = Duration::from_secs(self.cfg.connect_timeout.saturating_mul(2).max(5));
                let mut fwd = self.fwd.lock().await;
                match tokio::time::timeout(limit, fwd.peer_channel(p)).await {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!("no answer from {p} within {} s", limit.as_secs())),
                }
            }
        };
        let holds = holds.map(|name| {
            WalName::parse(name).is_ok()
                && path
                    .join(name)
                    .symlink_metadata()
                    .is_ok_and(|m| m.is_file())
        });
        Reply::SetupChecked {
            dir_error,
            recorded_system_identifier,
            peer_error,
            holds,
        }
    }
}

/// Creates `dir` if needed, then writes, syncs and removes a hidden file in
/// it: what a put needs of it.
fn probe_writable(dir: &std::path::Path) -> std::result::Result<(), String> {
    crate::common::durable::create_dir_all(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".pgarchive-check.{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|f| f.sync_all());
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}
