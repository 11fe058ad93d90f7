//! Delivering owed files to the peer: after a forward the peer accepted,
//! when a peer proved to be up by sending this server a copy, on a
//! `DeliverOwed` request, and from the cron sweep ([`sweep`]). An owed file
//! the peer holds with other content is parked where monitoring sees it.

use std::path::{Path, PathBuf};

use crate::common::config::Config;
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::net::wire::PutRequest;
use crate::server::owed::{self, OwedList};
use crate::server::store::{self, META_DIR};

use super::forward::Forwarder;
use super::Server;

/// A peer that proved to be up by sending this server a copy, and an
/// archive directory where this server owes it files.
pub(super) struct OwedSender {
    /// Archive directory (resolved).
    dir: PathBuf,
    /// The directory as the sender named it.
    dir_arg: String,
    /// Cluster name of the sender's put.
    cluster: String,
    /// The sender's host alias.
    peer: String,
}

impl Server {
    /// Remembers `sender` for delivery when the channel closes, if this
    /// server owes it files of `dir`.
    pub(super) fn note_sender(&mut self, dir: &Path, req: &PutRequest, sender: &str) {
        let known = self
            .owed_to_senders
            .iter()
            .any(|s| s.dir == dir && s.peer == sender);
        if !known && !OwedList::new(dir, sender).is_empty() {
            self.owed_to_senders.push(OwedSender {
                dir: dir.to_path_buf(),
                dir_arg: req.dir.clone(),
                cluster: req.cluster.clone(),
                peer: sender.to_string(),
            });
        }
    }

    /// Hands the senders noted during this channel what they are owed.
    pub(super) async fn deliver_to_senders(&mut self) {
        let mut fwd = self.fwd.lock().await;
        for s in std::mem::take(&mut self.owed_to_senders) {
            let _ = fwd.health.record_success(&s.peer);
            fwd.deliver_owed(&s.dir, &s.dir_arg, &s.cluster, &s.peer)
                .await;
        }
    }
}

impl Forwarder {
    /// Delivers what this server owes `peer` for `dir`, oldest first, at
    /// most `owed_batch` files. Returns (delivered, still owed).
    pub(super) async fn deliver_owed(
        &mut self,
        dir: &Path,
        dir_arg: &str,
        cluster: &str,
        peer: &str,
    ) -> (u64, u64) {
        let list = OwedList::new(dir, peer);
        let names = list.names();
        let recorded = store::recorded_identity(dir).map(|i| i.cluster);
        let cluster = recorded.as_deref().unwrap_or(cluster);
        let mut delivered = 0u64;
        for name in names.iter().take(self.cfg.owed_batch) {
            // Skip what another process is forwarding right now.
            let Some(_claim) = list.claim(name) else {
                continue;
            };
            if !dir.join(name).exists() {
                // Removed by retention since: nothing left to owe.
                list.remove(name);
                continue;
            }
            match self.send_stored(dir, dir_arg, name, cluster, peer).await {
                Ok(()) => {
                    list.remove(name);
                    delivered += 1;
                }
                Err(Error::Conflict(m)) => {
                    log::error(format!("owed {name} conflicts on {peer}: {m}"));
                    park_conflict(dir, peer, name);
                    list.remove(name);
                }
                Err(e) => {
                    log::warn(format!("delivering owed {name} to {peer} failed: {e}"));
                    break;
                }
            }
        }
        if delivered > 0 {
            log::info(format!(
                "delivered {delivered} owed file(s) of {} to {peer}",
                dir.display()
            ));
        }
        (delivered, list.len() as u64)
    }
}

/// Keeps a record of an owed file the peer holds with other content, where
/// monitoring sees it, instead of retrying it forever.
fn park_conflict(dir: &Path, peer: &str, name: &str) {
    let d = dir.join(META_DIR).join("conflicts").join(peer);
    let _ = crate::common::durable::create_dir_all(&d);
    let _ = std::fs::write(d.join(name), b"");
}

/// Delivers everything owed under the configured archive roots (the cron
/// sweep `archive-remote-cmd deliver-owed`), logging the counts; files still
/// owed at the end make it fail (retry later).
pub async fn sweep(cfg: Config) -> Result<()> {
    let roots = cfg.archive_roots.clone();
    let server = Server::new(cfg)?;
    let mut fwd = server.fwd.lock().await;
    let (mut delivered, mut remaining) = (0, 0);
    for owed in owed::all_owed(&roots) {
        let dir_arg = owed.dir.to_string_lossy().into_owned();
        let (d, r) = fwd
            .deliver_owed(&owed.dir, &dir_arg, "unknown", &owed.peer)
            .await;
        delivered += d;
        remaining += r;
    }
    log::info(format!(
        "delivered {delivered} owed file(s), {remaining} still owed"
    ));
    if remaining > 0 {
        return Err(Error::host(
            "peer",
            format!("{remaining} file(s) still owed"),
        ));
    }
    Ok(())
}
