//! One transfer of the prefetch worker: fetching a segment from the first
//! host with a good copy (spread over the healthy hosts), recording it next
//! to it in the buffer, and committing it durably.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use crate::client::restore::buffer::{Buffer, FileId, Meta, Want};
use crate::client::restore::fetch::{self, FetchError};
use crate::client::restore::order_hosts;
use crate::client::restore::verify::Check;
use crate::common::config::Config;
use crate::common::durable::{self, AtomicFile};
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::net::health::HealthBook;
use crate::net::ssh::{self, Channel, SshSettings};

/// Shared by the worker's transfers.
pub(super) struct Ctx {
    pub(super) cfg: Config,
    pub(super) ssh: SshSettings,
    pub(super) health: HealthBook,
    pub(super) buffer: Buffer,
    /// Idle channels per host.
    pub(super) pool: Mutex<HashMap<String, Vec<Channel>>>,
}

impl Ctx {
    /// An idle channel to `host`, or a new one over its ssh master.
    async fn channel(&self, host: &str) -> Result<Channel> {
        let idle = self
            .pool
            .lock()
            .expect("not poisoned")
            .get_mut(host)
            .and_then(Vec::pop);
        match idle {
            Some(c) => Ok(c),
            None => {
                let session = ssh::session(&self.ssh, host).await?;
                Channel::open(&self.ssh, session, host).await
            }
        }
    }

    /// Keeps a channel still usable for the next transfer.
    fn give_back(&self, ch: Channel) {
        self.pool
            .lock()
            .expect("not poisoned")
            .entry(ch.host().to_string())
            .or_default()
            .push(ch);
    }
}

/// How one transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Committed in the buffer.
    Stored,
    /// No host has it (yet).
    NotFound,
    /// A host had a bad copy and none a good one.
    Bad,
    /// Hosts failed, or a local error.
    Failed,
}

/// Fetches segment `segno` into the buffer from the first host that has a
/// good copy; calls `received` once the copy arrived and verified, before
/// making it durable.
pub(super) async fn transfer(
    ctx: &Ctx,
    want: &Want,
    segno: u64,
    received: impl FnOnce(),
) -> Outcome {
    let name = want.name(segno);
    let n = name.as_str().to_string();
    let check = Check {
        name,
        sysid: want.sysid,
        hash: true,
        // The queue counts every segment as this size: a larger one must
        // not slip in (it would overrun restore_queue_max).
        seg_size: Some(want.seg_size),
        proof: None,
    };
    let dest = ctx.buffer.data_path(&n);
    let mut outcome = Outcome::NotFound;
    let mut answered = false;
    // Spread over the healthy hosts: each ssh connection carries half the
    // transfers (one connection's ciphers run on one core at each end).
    let mut order = order_hosts(&ctx.health, &want.hosts);
    let healthy = order.iter().take_while(|(_, c)| c.is_none()).count();
    if healthy > 1 {
        order[..healthy].rotate_left((segno % healthy as u64) as usize);
    }
    for (host, cooling) in order {
        if cooling.is_some() && answered {
            continue;
        }
        let mut ch = match ctx.channel(&host).await {
            Ok(c) => c,
            Err(e) => {
                failed(ctx, &host, &n, &e);
                outcome = Outcome::Failed;
                continue;
            }
        };
        // The temp exists from the start of the transfer: a restore-cmd call
        // for this segment sees it in flight and waits for it. Not before
        // the channel is up: a call would wait on an empty temp while ssh
        // tries a dead host, then try that host itself.
        let out = match AtomicFile::create(&dest) {
            Ok(f) => f,
            Err(e) => {
                log::error(format!("prefetch of {n}: {e}"));
                ctx.give_back(ch);
                return Outcome::Failed;
            }
        };
        let res = fetch::fetch(&mut ch, &want.src_dir, &check, out, |_| {}).await;
        if res
            .as_ref()
            .map_or_else(FetchError::channel_usable, |_| true)
        {
            ctx.give_back(ch);
        }
        match res {
            Ok((mut out, fetched)) => {
                // The fsync below waits for the disk, with little for the
                // CPUs to do: the next transfer runs meanwhile.
                received();
                let _ = ctx.health.record_success(&host);
                // Every byte is written (the writer thread is done): the
                // identity a call checks instead of hashing them again.
                let id = FileId::of(out.file());
                let Some(meta) = meta_for(&fetched, &host, &want.src_dir, id) else {
                    return Outcome::Failed;
                };
                if let Err(e) = ctx.buffer.write_meta(&n, &meta) {
                    log::error(format!("prefetch of {n}: {e}"));
                    return Outcome::Failed;
                }
                // fsync off the runtime thread: the other transfers keep
                // streaming meanwhile.
                let target = dest.clone();
                let committed = tokio::task::spawn_blocking(move || commit(out, &target))
                    .await
                    .unwrap_or_else(|e| Err(Error::Usage(format!("commit task failed: {e}"))));
                return match committed {
                    Ok(()) => {
                        log::info(format!(
                            "prefetched {n} from {host} ({}, {} bytes stored)",
                            fetched.verified.codec, fetched.stored_size
                        ));
                        Outcome::Stored
                    }
                    Err(e) => {
                        log::error(format!("prefetch of {n}: {e}"));
                        Outcome::Failed
                    }
                };
            }
            Err(FetchError::NotFound) => {
                let _ = ctx.health.record_success(&host);
                answered = true;
            }
            Err(FetchError::Bad(m)) => {
                log::error(format!("the copy of {n} on {host} is bad: {m}"));
                answered = true;
                outcome = Outcome::Bad;
            }
            Err(FetchError::Host(e)) => {
                failed(ctx, &host, &n, &e);
                outcome = Outcome::Failed;
            }
            Err(e @ (FetchError::Refused(_) | FetchError::Local(_))) => {
                log::error(format!("prefetch of {n} from {host}: {e}"));
                outcome = Outcome::Failed;
            }
        }
    }
    outcome
}

/// Makes a fetched segment visible in the buffer as `dest`: its bytes are
/// fsynced (a restore-cmd call hands them over by a rename, so %p is durable
/// once that rename is), then the temp is renamed into place. The buffer
/// directory itself is not fsynced: an entry lost in a crash is only
/// fetched again.
fn commit(mut out: AtomicFile, dest: &Path) -> Result<()> {
    let temp = out.temp_path().to_path_buf();
    out.file()
        .sync_all()
        .map_err(|e| Error::io("cannot fsync", &temp, e))?;
    match durable::rename_noreplace(&temp, dest) {
        // The AtomicFile's drop finds nothing left to remove.
        Ok(()) => Ok(()),
        // Already there (cannot happen with one worker): keep that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("cannot rename into", dest, e)),
    }
}

/// Records a host's failure in the health book and logs it.
fn failed(ctx: &Ctx, host: &str, name: &str, e: &Error) {
    let msg = e.to_string();
    let _ = ctx
        .health
        .record_failure(host, ctx.cfg.retry_count, ctx.cfg.cooldown, &msg);
    log::warn(format!("prefetch of {name} from {host} failed: {msg}"));
}

/// The buffer record of a fetched segment (`None` without a digest).
fn meta_for(
    fetched: &fetch::Fetched,
    host: &str,
    src_dir: &str,
    file: Option<FileId>,
) -> Option<Meta> {
    Some(Meta {
        size: fetched.verified.size,
        digest: fetched.verified.digest.clone()?,
        mtime: fetched.mtime,
        host: host.to_string(),
        codec: fetched.verified.codec,
        src_dir: src_dir.to_string(),
        file,
    })
}
