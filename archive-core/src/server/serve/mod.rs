//! `archive-remote-cmd serve`: the request loop on an archive server.
//!
//! It reads framed requests from stdin and answers on stdout (see
//! [`crate::net::wire`]). A put is stored ([`crate::server::store`]), acknowledged
//! as soon as it is durable here, then forwarded to the peer the client
//! named, with the peer's own failure flag and cooldown; what cannot be
//! forwarded is recorded as owed ([`crate::server::owed`]) and delivered as soon as
//! the peer accepts a forward again.
//!
//! Where each request is handled:
//!
//! - this file: the loop ([`Server::serve`]) and the one-reply requests;
//! - [`role`]: what the channel's key may ask ([`Access`]), checked before
//!   each request;
//! - [`put`]: a put, its owed marker and its forward;
//! - [`forward`]: the forward to the peer, now or in the background;
//! - [`deliver`]: delivering owed files, and the cron [`sweep`];
//! - [`get`]: a stored file or a backup file streamed back;
//! - [`backup_list`]: the backups of a backup directory.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;

use crate::common::config::Config;
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::net::health::HealthBook;
use crate::net::ssh::{self, SshSettings};
use crate::net::wire::{self, Reply, Request, MAX_REQUEST_FRAME};
use crate::server::store::Store;

mod backup_list;
mod deliver;
mod forward;
mod get;
mod put;
mod role;
mod setup_check;
#[cfg(test)]
mod tests;

pub use deliver::sweep;
pub use role::{Access, Role};

use deliver::OwedSender;
use forward::{Background, Forwarder};

/// Program name a forced command must have been asked for.
pub const PROGRAM: &str = "archive-remote-cmd";

/// In forced-command mode (`command="…"` in authorized_keys) sshd puts what
/// the client asked for in SSH_ORIGINAL_COMMAND. Only our own `serve`
/// request is accepted: the key then grants nothing else. What the key may
/// do once served comes from the forced command's own arguments
/// (`--role`, `--dir`: [`Access`]), never from what the client asked.
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
    /// What this channel's key may ask.
    access: Access,
    /// Shared with the background forwarder: one peer channel, one at a time.
    fwd: Arc<Mutex<Forwarder>>,
    background: Option<Background>,
    /// Peers that proved to be up by sending us a copy, and the directories
    /// where we owe them files: delivered once the sender's channel closes
    /// (delivering earlier would stall the sender's next put).
    owed_to_senders: Vec<OwedSender>,
    /// Locks taken by this channel, released when it ends or when their
    /// lease runs out.
    locks: Vec<File>,
    /// When the channel last asked for work (any request but `hello`).
    last_work: Instant,
}

impl Server {
    /// A server with the given configuration that answers every request
    /// ([`Access::internal`]): for the program's own use (the
    /// `deliver-owed` sweep) and tests. A client's channel is served by
    /// [`Server::with_access`].
    pub fn new(cfg: Config) -> Result<Server> {
        Server::with_access(cfg, Access::internal())
    }

    /// A server answering what `access` allows.
    pub fn with_access(cfg: Config, access: Access) -> Result<Server> {
        let store = Store::from_config(&cfg);
        let fwd = Forwarder {
            ssh: SshSettings::from_config(&cfg),
            health: HealthBook::open(&cfg.state_dir().join("health"))?,
            cfg: cfg.clone(),
            peer: None,
        };
        Ok(Server {
            store,
            access,
            cfg,
            fwd: Arc::new(Mutex::new(fwd)),
            background: None,
            owed_to_senders: Vec::new(),
            locks: Vec::new(),
            last_work: Instant::now(),
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

    /// The request loop: reads framed requests from `input` until it ends
    /// and answers each on `output`. File content follows its request on
    /// `input` (a put) or its reply on `output` (a get).
    async fn serve_requests<R, W>(&mut self, mut input: R, mut output: W) -> Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let t = self.cfg.io_timeout();
        // A client may keep a channel open between requests; give up on an
        // idle one after a while so no process lingers forever.
        let idle = t.max(Duration::from_secs(600));
        self.access.warn_at_start();
        loop {
            let req: Request =
                match wire::read_frame_upto(&mut input, idle, MAX_REQUEST_FRAME).await? {
                    Some(r) => r,
                    None => return Ok(()),
                };
            // A request the key may not make ends the channel: a refused
            // put's content is never read.
            if let Err(e) = self.access.check(&req) {
                wire::write_frame(&mut output, &Reply::from_error(&e), t).await?;
                return Err(e);
            }
            self.renew_or_expire_locks(&req);
            let reply = match req {
                // Requests whose answers stream file content.
                Request::Put(req) => {
                    self.put(req, &mut input, &mut output).await?;
                    continue;
                }
                Request::Get { dir, name } => {
                    self.send_file(&mut output, &dir, &name).await?;
                    continue;
                }
                Request::GetBackupFile {
                    backup_dir,
                    index,
                    name,
                } => {
                    self.send_backup_file(&mut output, &backup_dir, index, &name)
                        .await?;
                    continue;
                }
                Request::End { .. } => {
                    return Err(Error::Protocol("checksum without a file".into()));
                }
                // Requests answered by one reply.
                Request::Hello { .. } => Reply::Hello {
                    version: wire::PROTOCOL_VERSION,
                    server: self.cfg.server_name.clone(),
                    role: self.access.role_names(),
                    forced_command: std::env::var_os("SSH_CONNECTION")
                        .map(|_| std::env::var_os("SSH_ORIGINAL_COMMAND").is_some()),
                },
                Request::CheckSetup { dir, peer, holds } => {
                    self.check_setup(&dir, peer.as_deref(), holds.as_deref())
                        .await
                }
                Request::DeliverOwed { dir, peer } => self.deliver_owed(&dir, &peer).await,
                Request::List { dir } => {
                    answer(self.store.list(&dir), |files| Reply::Listing { files })
                }
                Request::Remove { dir, names } => {
                    answer(self.store.remove(&dir, &names), |(removed, missing)| {
                        Reply::Removed { removed, missing }
                    })
                }
                Request::Lock { dir, name, holder } => {
                    let locked = self.store.lock(&dir, &name, &holder);
                    answer(locked, |lock| {
                        self.locks.push(lock);
                        Reply::Locked
                    })
                }
                Request::Digest { dir, names } => {
                    answer(self.store.digests(&dir, &names), |files| Reply::Digests {
                        files,
                    })
                }
                Request::OldestBackup { backup_dir } => {
                    answer(self.oldest_backup(&backup_dir), |(start_wal, identity)| {
                        Reply::OldestBackup {
                            start_wal,
                            identity,
                        }
                    })
                }
                Request::ListBackups { backup_dir } => {
                    answer(self.list_backups(&backup_dir), |backups| Reply::Backups {
                        backups,
                    })
                }
                Request::DirStatus { dir, backup_dir } => answer(
                    self.dir_status(&dir, backup_dir.as_deref()),
                    Reply::DirStatus,
                ),
            };
            wire::write_frame(&mut output, &reply, t).await?;
        }
    }

    /// A request other than `hello` renews the lease of the channel's
    /// locks; a channel that only says hello loses them once
    /// `lock_lease` has passed.
    fn renew_or_expire_locks(&mut self, req: &Request) {
        let lease = Duration::from_secs(self.cfg.lock_lease);
        if !self.locks.is_empty() && self.last_work.elapsed() > lease {
            log::warn(format!(
                "released {} lock(s) of a channel that asked for no work in {} s (lock_lease)",
                self.locks.len(),
                self.cfg.lock_lease
            ));
            self.locks.clear();
        }
        if !matches!(req, Request::Hello { .. }) {
            self.last_work = Instant::now();
        }
    }

    /// `Request::DeliverOwed`: delivers what this server owes `peer` for
    /// `dir` now.
    async fn deliver_owed(&mut self, dir: &str, peer: &str) -> Reply {
        // The peer's name becomes a path (its owed list) and an ssh alias:
        // only a host this server forwards to passes.
        if !self.forwards_to(peer) {
            return Reply::from_error(&Error::Refused(format!(
                "{peer:?} is not a peer this server delivers to"
            )));
        }
        match self.store.archive_dir(dir) {
            Ok(path) => {
                let (delivered, remaining) = self
                    .fwd
                    .lock()
                    .await
                    .deliver_owed(&path, dir, "unknown", peer)
                    .await;
                Reply::Delivered {
                    delivered,
                    remaining,
                }
            }
            Err(e) => Reply::from_error(&e),
        }
    }

    fn dir_status(&self, dir: &str, backup_dir: Option<&str>) -> Result<wire::DirStatus> {
        let path = self.store.archive_dir(dir)?;
        let backups = backup_dir.map(|b| self.store.backup_dir(b)).transpose()?;
        crate::server::report::dir_status(&path, backups.as_deref())
    }

    /// Whether `peer` is a host this server forwards to: a valid host name
    /// other than this server's own.
    fn forwards_to(&self, peer: &str) -> bool {
        crate::common::names::validate_host_name(peer).is_ok()
            && self.cfg.server_name.as_deref() != Some(peer)
    }
}

/// The reply to a request answered by one frame: `ok` of its result, or the
/// error.
fn answer<T>(res: Result<T>, ok: impl FnOnce(T) -> Reply) -> Reply {
    match res {
        Ok(v) => ok(v),
        Err(e) => Reply::from_error(&e),
    }
}
