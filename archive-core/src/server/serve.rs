//! `archive-remote-cmd serve`: the request loop on an archive server.
//!
//! It reads framed requests from stdin and answers on stdout (see
//! [`crate::net::wire`]). A put is stored ([`crate::server::store`]), acknowledged
//! as soon as it is durable here, then forwarded to the peer the client
//! named, with the peer's own failure flag and cooldown; what cannot be
//! forwarded is recorded as owed ([`crate::server::owed`]) and delivered as soon as
//! the peer accepts a forward again.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex};

use crate::common::config::Config;
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::net::health::{self, HealthBook};
use crate::net::ssh::{self, Channel, SshSettings};
use crate::net::wire::{self, ForwardOutcome, PutRequest, Reply, Request, StoreOutcome};
use crate::server::owed::{self, OwedList};
use crate::server::store::{self, Store, META_DIR};

/// Program name a forced command must have been asked for.
pub const PROGRAM: &str = "archive-remote-cmd";

/// In forced-command mode (`command="…"` in authorized_keys) sshd puts what
/// the client asked for in SSH_ORIGINAL_COMMAND. Only our own `serve`
/// request is accepted: the key then grants nothing else.
pub fn check_forced_command(original: Option<&str>) -> Result<()> {
    let Some(original) = original else {
        return Ok(());
    };
    let words: Vec<&str> = original.split_whitespace().collect();
    let program_ok = words
        .first()
        .map(|p| Path::new(p).file_name().is_some_and(|f| f == PROGRAM))
        .unwrap_or(false);
    if program_ok && words.last() == Some(&"serve") && words.len() <= 4 {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "this key may only run '{PROGRAM} serve', not {original:?}"
        )))
    }
}

/// Widens the pipes (or sockets) sshd connects to stdin and stdout
/// ([`ssh::widen_pipe`]).
pub fn widen_stdio() {
    ssh::widen_pipe(std::io::stdin().as_fd());
    ssh::widen_pipe(std::io::stdout().as_fd());
}

/// State of one serve process.
pub struct Server {
    cfg: Config,
    store: Store,
    /// Shared with the background forwarder: one peer channel, one at a time.
    fwd: Arc<Mutex<Forwarder>>,
    background: Option<Background>,
    /// Peers that proved to be up by sending us a copy, and the directories
    /// where we owe them files: delivered once the sender's channel closes
    /// (delivering earlier would stall the sender's next put).
    owed_to_senders: Vec<(PathBuf, String, String, String)>,
    /// Locks taken by this channel, released when it ends.
    locks: Vec<File>,
}

impl Server {
    /// A server with the given configuration.
    pub fn new(cfg: Config) -> Result<Server> {
        let store = Store::new(
            cfg.archive_roots.clone(),
            cfg.compress_level,
            cfg.io_timeout(),
        );
        let fwd = Forwarder {
            ssh: SshSettings::from_config(&cfg),
            health: HealthBook::open(&cfg.state_dir().join("health"))?,
            cfg: cfg.clone(),
            peer: None,
        };
        Ok(Server {
            store,
            cfg,
            fwd: Arc::new(Mutex::new(fwd)),
            background: None,
            owed_to_senders: Vec::new(),
            locks: Vec::new(),
        })
    }

    /// Serves requests until the client closes the stream, then finishes
    /// the forwards still running and hands the senders what they are owed.
    pub async fn serve<R, W>(&mut self, input: R, output: W) -> Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let res = self.serve_requests(input, output).await;
        if let Some(bg) = self.background.take() {
            drop(bg.jobs);
            let _ = bg.task.await;
        }
        if res.is_ok() {
            self.deliver_to_senders().await;
        }
        res
    }

    async fn serve_requests<R, W>(&mut self, mut input: R, mut output: W) -> Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let t = self.cfg.io_timeout();
        // A client may keep a channel open between requests; give up on an
        // idle one after a while so no process lingers forever.
        let idle = t.max(Duration::from_secs(600));
        loop {
            let req: Request = match wire::read_frame(&mut input, idle).await? {
                Some(r) => r,
                None => return Ok(()),
            };
            match req {
                Request::Hello { .. } => {
                    let reply = Reply::Hello {
                        version: wire::PROTOCOL_VERSION,
                        server: self.cfg.server_name.clone(),
                    };
                    wire::write_frame(&mut output, &reply, t).await?;
                }
                Request::Put(req) => {
                    let res = self.store.put(&req, &mut input).await;
                    let stored = match res {
                        Ok(s) => s,
                        Err(e) => {
                            log::error(format!("put {} into {}: {e}", req.name, req.dir));
                            wire::write_frame(&mut output, &Reply::from_error(&e), t).await?;
                            if matches!(e, Error::Protocol(_)) {
                                return Err(e);
                            }
                            continue;
                        }
                    };
                    // The owed marker is durable before the client hears
                    // "stored", so no crash can forget the peer's copy.
                    let peer = req.forward_to.as_deref().filter(|p| self.forwards_to(p));
                    let dir = stored.path.parent().expect("file in a dir").to_path_buf();
                    if let Some(sender) = req.from.as_deref().filter(|p| self.forwards_to(p)) {
                        self.note_sender(&dir, &req, sender);
                    }
                    // Held until the forward ends, so concurrent puts'
                    // owed deliveries do not send this file a second time.
                    let mut claim = None;
                    if let Some(peer) = peer {
                        match OwedList::new(&dir, peer).add(&req.name) {
                            Ok(f) => claim = Some(f),
                            Err(e) => {
                                wire::write_frame(&mut output, &Reply::from_error(&e), t).await?;
                                continue;
                            }
                        }
                    }
                    let reply = Reply::Stored {
                        outcome: stored.outcome,
                        codec: stored.codec.name().to_string(),
                        stored_size: stored.stored_size,
                    };
                    wire::write_frame(&mut output, &reply, t).await?;
                    log::info(format!(
                        "stored {} in {} ({}, {} bytes{})",
                        req.name,
                        dir.display(),
                        stored.codec.name(),
                        stored.stored_size,
                        if stored.outcome == StoreOutcome::AlreadyStored {
                            ", already there"
                        } else {
                            ""
                        }
                    ));
                    let (Some(peer), Some(claim)) = (peer, claim) else {
                        if let Some(p) = req
                            .forward_to
                            .as_ref()
                            .filter(|_| !req.forward_in_background)
                        {
                            let reply = Reply::Forward(ForwardOutcome::Owed {
                                reason: format!("{p} is this server; not forwarded"),
                            });
                            wire::write_frame(&mut output, &reply, t).await?;
                        }
                        continue;
                    };
                    let job = ForwardJob {
                        peer: peer.to_string(),
                        dir,
                        req,
                        _claim: claim,
                    };
                    if job.req.forward_in_background {
                        self.forward_in_background(job);
                        continue;
                    }
                    let outcome = self
                        .fwd
                        .lock()
                        .await
                        .forward_and_deliver(&job, || true)
                        .await;
                    // The client may have left already: that is fine.
                    let _ = wire::write_frame(&mut output, &Reply::Forward(outcome), t).await;
                }
                Request::DeliverOwed { dir, peer } => {
                    let reply = match self.store.archive_dir(&dir) {
                        Ok(path) => {
                            let (delivered, remaining) = self
                                .fwd
                                .lock()
                                .await
                                .deliver_owed(&path, &dir, "unknown", &peer)
                                .await;
                            Reply::Delivered {
                                delivered,
                                remaining,
                            }
                        }
                        Err(e) => Reply::from_error(&e),
                    };
                    wire::write_frame(&mut output, &reply, t).await?;
                }
                Request::Get { dir, name } => {
                    self.send_file(&mut output, &dir, &name).await?;
                }
                Request::List { dir } => {
                    let reply = match self.store.list(&dir) {
                        Ok(files) => Reply::Listing { files },
                        Err(e) => Reply::from_error(&e),
                    };
                    wire::write_frame(&mut output, &reply, t).await?;
                }
                Request::Remove { dir, names } => {
                    let reply = match self.store.remove(&dir, &names) {
                        Ok((removed, missing)) => Reply::Removed { removed, missing },
                        Err(e) => Reply::from_error(&e),
                    };
                    wire::write_frame(&mut output, &reply, t).await?;
                }
                Request::Lock { dir, name, holder } => {
                    let reply = match self.store.lock(&dir, &name, &holder) {
                        Ok(lock) => {
                            self.locks.push(lock);
                            Reply::Locked
                        }
                        Err(e) => Reply::from_error(&e),
                    };
                    wire::write_frame(&mut output, &reply, t).await?;
                }
                Request::Digest { dir, names } => {
                    let reply = match self.store.digests(&dir, &names) {
                        Ok(files) => Reply::Digests { files },
                        Err(e) => Reply::from_error(&e),
                    };
                    wire::write_frame(&mut output, &reply, t).await?;
                }
                Request::OldestBackup { backup_dir } => {
                    let reply = match self.oldest_backup(&backup_dir) {
                        Ok(start_wal) => Reply::OldestBackup { start_wal },
                        Err(e) => Reply::from_error(&e),
                    };
                    wire::write_frame(&mut output, &reply, t).await?;
                }
                Request::ListBackups { backup_dir } => {
                    let reply = match self.list_backups(&backup_dir) {
                        Ok(backups) => Reply::Backups { backups },
                        Err(e) => Reply::from_error(&e),
                    };
                    wire::write_frame(&mut output, &reply, t).await?;
                }
                Request::GetBackupFile {
                    backup_dir,
                    index,
                    name,
                } => {
                    self.send_backup_file(&mut output, &backup_dir, index, &name)
                        .await?;
                }
                Request::DirStatus { dir, backup_dir } => {
                    let reply = match self.dir_status(&dir, backup_dir.as_deref()) {
                        Ok(st) => Reply::DirStatus(st),
                        Err(e) => Reply::from_error(&e),
                    };
                    wire::write_frame(&mut output, &reply, t).await?;
                }
                Request::End { .. } => {
                    return Err(Error::Protocol("checksum without a file".into()));
                }
            }
        }
    }

    fn dir_status(&self, dir: &str, backup_dir: Option<&str>) -> Result<wire::DirStatus> {
        let path = self.store.archive_dir(dir)?;
        let backups = backup_dir.map(|b| self.store.backup_dir(b)).transpose()?;
        crate::server::report::dir_status(&path, backups.as_deref())
    }

    fn oldest_backup(&self, backup_dir: &str) -> Result<Option<String>> {
        let dir = self.store.backup_dir(backup_dir)?;
        Ok(crate::server::backups::oldest_start_wal(&dir)?.map(|l| l.start_wal))
    }

    fn list_backups(&self, backup_dir: &str) -> Result<Vec<wire::BackupEntry>> {
        let dir = self.store.backup_dir(backup_dir)?;
        let mut out = Vec::new();
        for b in crate::server::backups::list(&dir)? {
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
                files,
            });
        }
        Ok(out)
    }

    async fn send_backup_file<W: AsyncWrite + Unpin>(
        &mut self,
        output: &mut W,
        backup_dir: &str,
        index: u32,
        name: &str,
    ) -> Result<()> {
        let t = self.cfg.io_timeout();
        let simple = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        let opened = if !simple {
            Err(Error::Refused(format!(
                "{name:?} is not a backup file name"
            )))
        } else {
            self.store.backup_dir(backup_dir).and_then(|dir| {
                let path = crate::server::backups::slot(&dir, index).join(name);
                let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        Error::NotFound(format!("{} does not exist", path.display()))
                    }
                    _ => Error::io("cannot open", &path, e),
                })?;
                let len = file
                    .metadata()
                    .map_err(|e| Error::io("cannot stat", &path, e))?
                    .len();
                Ok((file, len, 0))
            })
        };
        self.stream(output, name, opened, t).await
    }

    /// Streams a stored file: header reply, bytes, checksum reply.
    async fn send_file<W: AsyncWrite + Unpin>(
        &mut self,
        output: &mut W,
        dir: &str,
        name: &str,
    ) -> Result<()> {
        let t = self.cfg.io_timeout();
        let opened = self.store.open(dir, name);
        self.stream(output, name, opened, t).await
    }

    async fn stream<W: AsyncWrite + Unpin>(
        &mut self,
        output: &mut W,
        name: &str,
        opened: Result<(File, u64, i64)>,
        t: Duration,
    ) -> Result<()> {
        let (mut file, size, mtime) = match opened {
            Ok(v) => v,
            Err(e) => return wire::write_frame(output, &Reply::from_error(&e), t).await,
        };
        wire::write_frame(output, &Reply::File { size, mtime }, t).await?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; wire::CHUNK];
        let mut remaining = size;
        while remaining > 0 {
            let want = buf.len().min(remaining as usize);
            let n = std::io::Read::read(&mut file, &mut buf[..want])
                .map_err(|e| Error::io("cannot read", name, e))?;
            if n == 0 {
                // Shrank under us: the client sees a short stream and fails.
                return Err(Error::Protocol(format!("{name} shrank while being sent")));
            }
            hasher.update(&buf[..n]);
            wire::stall(t, "sending file data", output.write_all(&buf[..n])).await?;
            remaining -= n as u64;
        }
        let end = Reply::End {
            checksum: hasher.finalize().to_hex().to_string(),
        };
        wire::write_frame(output, &end, t).await
    }

    fn note_sender(&mut self, dir: &Path, req: &PutRequest, sender: &str) {
        let known = self
            .owed_to_senders
            .iter()
            .any(|(d, _, _, p)| d == dir && p == sender);
        if !known && !OwedList::new(dir, sender).is_empty() {
            self.owed_to_senders.push((
                dir.to_path_buf(),
                req.dir.clone(),
                req.cluster.clone(),
                sender.to_string(),
            ));
        }
    }

    async fn deliver_to_senders(&mut self) {
        let mut fwd = self.fwd.lock().await;
        for (dir, dir_arg, cluster, peer) in std::mem::take(&mut self.owed_to_senders) {
            let _ = fwd.health.record_success(&peer);
            fwd.deliver_owed(&dir, &dir_arg, &cluster, &peer).await;
        }
    }

    fn forwards_to(&self, peer: &str) -> bool {
        crate::common::names::validate_host_name(peer).is_ok()
            && self.cfg.server_name.as_deref() != Some(peer)
    }

    /// Queues a forward for the background task (started on first use),
    /// which works while this loop receives the next put.
    fn forward_in_background(&mut self, job: ForwardJob) {
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

/// A put's forward to the peer. The owed marker's claim is held until the
/// job ends, so no owed delivery sends the same file at the same time.
struct ForwardJob {
    peer: String,
    /// Archive directory (resolved).
    dir: PathBuf,
    req: PutRequest,
    _claim: File,
}

/// The background forwarder of a serve process.
struct Background {
    jobs: mpsc::UnboundedSender<ForwardJob>,
    task: tokio::task::JoinHandle<()>,
}

/// Forwarding to the peer server: its channel and its health.
struct Forwarder {
    cfg: Config,
    ssh: SshSettings,
    health: HealthBook,
    peer: Option<Channel>,
}

impl Forwarder {
    /// Forwards a put and, when the peer took it and `owed_now()` says so,
    /// what else is owed to it.
    async fn forward_and_deliver(
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

    async fn peer_channel(&mut self, peer: &str) -> Result<&mut Channel> {
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

    /// Sends a stored file as is (its codec is sniffed and kept by the peer).
    async fn send_stored(
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
        let req = PutRequest {
            dir: dir_arg.to_string(),
            name: name.to_string(),
            size: meta.len(),
            mtime,
            cluster: cluster.to_string(),
            forward_to: None,
            from: self.cfg.server_name.clone(),
            forward_in_background: false,
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

    /// Delivers what this server owes `peer` for `dir`, oldest first, at
    /// most `owed_batch` files. Returns (delivered, still owed).
    async fn deliver_owed(
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
/// sweep). Returns (delivered, still owed).
pub async fn sweep(cfg: Config) -> Result<(u64, u64)> {
    let roots = cfg.archive_roots.clone();
    let server = Server::new(cfg)?;
    let mut fwd = server.fwd.lock().await;
    let (mut delivered, mut remaining) = (0, 0);
    for (dir, peer, _) in owed::all_owed(&roots) {
        let dir_arg = dir.to_string_lossy().into_owned();
        let (d, r) = fwd.deliver_owed(&dir, &dir_arg, "unknown", &peer).await;
        delivered += d;
        remaining += r;
    }
    Ok((delivered, remaining))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_command_accepts_only_serve() {
        assert!(check_forced_command(None).is_ok());
        assert!(check_forced_command(Some("archive-remote-cmd serve")).is_ok());
        assert!(check_forced_command(Some("/usr/local/bin/archive-remote-cmd serve")).is_ok());
        for bad in [
            "rm -rf /",
            "sh -c 'archive-remote-cmd serve'",
            "archive-remote-cmd serve; rm x",
            "cat /etc/passwd",
            "",
        ] {
            assert!(check_forced_command(Some(bad)).is_err(), "{bad}");
        }
    }
}
