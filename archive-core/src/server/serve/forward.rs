//! Forwarding a stored put to the peer server: the [`Forwarder`] with its
//! one peer channel and the peer's health (failure flag and cooldown), and
//! the background task that forwards while the loop receives the next put.

use std::fs::File;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::common::config::Config;
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::net::health::{self, HealthBook};
use crate::net::ssh::{self, Channel, SshSettings};
use crate::net::wire::{ForwardOutcome, PutRequest};
use crate::server::owed::OwedList;
use crate::server::store;

use super::Server;

/// A put's forward to the peer. The owed marker's claim is held until the
/// job ends, so no owed delivery sends the same file at the same time.
pub(super) struct ForwardJob {
    /// Peer host alias.
    pub peer: String,
    /// Archive directory (resolved).
    pub dir: PathBuf,
    /// The put as the client sent it.
    pub req: PutRequest,
    /// The owed marker's lock ([`OwedList::add`]).
    pub _claim: File,
}

/// The background forwarder of a serve process.
pub(super) struct Background {
    /// Queue of the forwards to make.
    pub jobs: mpsc::UnboundedSender<ForwardJob>,
    /// The task working through it.
    pub task: tokio::task::JoinHandle<()>,
}

/// Forwarding to the peer server: its channel and its health.
pub(super) struct Forwarder {
    pub cfg: Config,
    pub ssh: SshSettings,
    /// The peers' failure flags and cooldowns.
    pub health: HealthBook,
    /// The open channel to the peer, if any.
    pub peer: Option<Channel>,
}

impl Forwarder {
    /// Forwards a put and, when the peer took it and `owed_now()` says so,
    /// what else is owed to it.
    pub(super) async fn forward_and_deliver(
        &mut self,
        job: &ForwardJob,
        owed_now: impl FnOnce() -> bool,
    ) -> ForwardOutcome {
        let outcome = self.forward(job).await;
        if outcome == ForwardOutcome::Forwarded && owed_now() {
            self.deliver_owed(&job.dir, &job.req.dir, &job.req.cluster, &job.peer)
                .await;
        }
        outcome
    }

    /// Sends the stored copy of `req.name` to `peer`.
    async fn forward(&mut self, job: &ForwardJob) -> ForwardOutcome {
        let (dir, req, peer) = (&job.dir, &job.req, job.peer.as_str());
        let st = self.health.state(peer);
        if st.in_cooldown(health::now()) {
            return ForwardOutcome::Owed {
                reason: format!(
                    "{peer} failed recently ({}); retried after {} s",
                    st.last_error,
                    st.cooldown_until - health::now()
                ),
            };
        }
        match self
            .send_stored(dir, &req.dir, &req.name, &req.cluster, peer)
            .await
        {
            Ok(()) => {
                OwedList::new(dir, peer).remove(&req.name);
                let _ = self.health.record_success(peer);
                ForwardOutcome::Forwarded
            }
            Err(e) => {
                let msg = e.to_string();
                if e.is_host_failure() {
                    let _ = self
                        .health
                        .record_failure(peer, 1, self.cfg.forward_cooldown, &msg);
                }
                log::warn(format!(
                    "{} stored here but not on {peer}; recorded as owed: {msg}",
                    req.name
                ));
                ForwardOutcome::Owed { reason: msg }
            }
        }
    }

    pub(super) async fn peer_channel(&mut self, peer: &str) -> Result<&mut Channel> {
        if self.peer.as_ref().is_some_and(|c| c.host() != peer) {
            self.peer = None;
        }
        if self.peer.is_none() {
            let session = ssh::session(&self.ssh, peer).await?;
            let ch = Channel::open(&self.ssh, session, peer).await?;
            // A peer alias that reaches this very server would answer
            // "already stored" to every forward: one copy, reported as two.
            if let (Some(own), Some(theirs)) = (&self.cfg.server_name, &ch.server_name) {
                if own == theirs {
                    return Err(Error::host(
                        peer,
                        format!(
                            "answers as this server itself ({own}): the ssh alias {peer} reaches this machine; point it at the peer archive server in the ssh config"
                        ),
                    ));
                }
            }
            self.peer = Some(ch);
        }
        Ok(self.peer.as_mut().expect("just opened"))
    }

    /// Sends a stored file as is (its codec is sniffed and kept by the peer),
    /// with the raw digest recorded when it was accepted: the peer records
    /// it too (and refuses the copy when it decodes it to anything else).
    pub(super) async fn send_stored(
        &mut self,
        dir: &Path,
        dir_arg: &str,
        name: &str,
        cluster: &str,
        peer: &str,
    ) -> Result<()> {
        let path = dir.join(name);
        let file = File::open(&path).map_err(|e| Error::io("cannot open", &path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("cannot stat", &path, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let recorded = store::recorded_digest(dir, name)?;
        let req = PutRequest {
            dir: dir_arg.to_string(),
            name: name.to_string(),
            size: meta.len(),
            mtime,
            cluster: cluster.to_string(),
            forward_to: None,
            from: self.cfg.server_name.clone(),
            forward_in_background: false,
            raw_blake3: recorded.map(|h| h.to_hex().to_string()),
        };
        let t = self.cfg.io_timeout();
        let ch = self.peer_channel(peer).await?;
        let res = ch.put(&req, std::io::BufReader::new(file), t).await;
        if res.as_ref().is_err_and(|e| e.is_host_failure()) {
            // The channel may be mid-message: never reuse it.
            self.peer = None;
        }
        res.map(drop)
    }
}

impl Server {
    /// Queues a forward for the background task (started on first use),
    /// which works while this loop receives the next put.
    pub(super) fn forward_in_background(&mut self, job: ForwardJob) {
        let bg = self.background.get_or_insert_with(|| {
            let (jobs, mut rx) = mpsc::unbounded_channel::<ForwardJob>();
            let fwd = self.fwd.clone();
            let task = tokio::spawn(async move {
                while let Some(job) = rx.recv().await {
                    // Owed files wait until the queue is empty: the puts
                    // being received come first.
                    let _ = fwd
                        .lock()
                        .await
                        .forward_and_deliver(&job, || rx.is_empty())
                        .await;
                }
            });
            Background { jobs, task }
        });
        let _ = bg.jobs.send(job);
    }
}
