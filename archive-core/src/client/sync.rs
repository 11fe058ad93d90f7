//! wal-sync: makes an archive server and its peer hold the same WAL, in both
//! directions, closing the gaps an outage left.
//!
//! Both sides are listed (the peer through archive-remote-cmd, never a
//! shell); each file missing on one side is copied from the other as stored
//! (no recompression), and becomes visible only after the receiving side
//! verified it like any put (size, checksum, decoding, WAL header, system
//! identifier). Same-named files are compared by stored size, and where the
//! sizes differ by their decompressed content: a real difference is
//! reported and left alone on both sides, never overwritten. Every copy is
//! proven against the raw content digest recorded when its file was first
//! accepted (see `server::store::digest`): ours is decoded and checked
//! before it is pushed, the peer's is decoded and checked as it is stored
//! here, and the digest travels with it, so a damaged or forged copy is
//! reported as failed and never spreads to the other server. Copies run
//! concurrently over one multiplexed ssh connection. A lock on each side
//! keeps a second run out.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::common::config::Config;
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::net::ssh::{self, Channel, SshSettings};
use crate::net::wire::{ListEntry, PutRequest, Reply};
use crate::server::store::{self, Store};

/// Options of a sync run.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Only report what would be copied.
    pub dry_run: bool,
    /// Also compare the content of same-named files of equal stored size
    /// (reads every file on both sides).
    pub checksum: bool,
}

/// What a sync run did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Files copied from here to the peer (or that would be, on a dry run).
    pub to_peer: u64,
    /// Files copied from the peer to here.
    pub from_peer: u64,
    /// Bytes copied, both directions.
    pub bytes: u64,
    /// Same-named files whose contents differ (left alone on both sides).
    pub divergent: Vec<String>,
    /// Files whose copy failed (reason included).
    pub failed: Vec<String>,
}

/// One copy to make.
#[derive(Debug, Clone)]
enum Job {
    Push(ListEntry),
    Pull(ListEntry),
}

/// Syncs the local archive directory `wals_dir` with the same directory on
/// `peer`, both directions.
pub async fn wal_sync(
    cfg: &Config,
    wals_dir: &Path,
    peer: &str,
    opts: &SyncOptions,
) -> Result<SyncReport> {
    let store = Store::from_config(cfg);
    let dir_arg = wals_dir.to_string_lossy().into_owned();
    let dir = store.archive_dir(&dir_arg)?;
    let me = cfg
        .server_name
        .clone()
        .unwrap_or_else(|| "this server".into());
    let holder = format!("wal-sync on {me} (pid {})", std::process::id());
    let _local_lock = store.lock(&dir_arg, "wal-sync", &holder)?;
    let ssh = SshSettings::from_config(cfg);
    let mut control = ssh::connect(&ssh, peer).await?;
    control.lock(&dir_arg, "wal-sync", &holder).await?;

    let local = store.list(&dir_arg)?;
    let remote = control.list(&dir_arg).await?;
    let (jobs, same_name) = plan(&local, &remote);
    let divergent = find_divergent(
        &store,
        &mut control,
        &dir_arg,
        &local,
        &remote,
        &same_name,
        opts,
    )
    .await?;
    let mut report = SyncReport {
        divergent,
        ..Default::default()
    };
    for d in &report.divergent {
        log::error(format!(
            "{d} differs between {me} and {peer} in {dir_arg}; left alone on both, investigate (the copies are not the same WAL)"
        ));
    }
    let pushes = jobs.iter().filter(|j| matches!(j, Job::Push(_))).count() as u64;
    let pulls = jobs.len() as u64 - pushes;
    let total_bytes: u64 = jobs
        .iter()
        .map(|j| match j {
            Job::Push(e) | Job::Pull(e) => e.size,
        })
        .sum();
    log::info(format!(
        "wal-sync {dir_arg}: {} here, {} on {peer}; {pushes} to copy to {peer}, {pulls} to copy from {peer} ({:.1} MB){}",
        local.len(),
        remote.len(),
        total_bytes as f64 / 1e6,
        if opts.dry_run { " (dry run)" } else { "" }
    ));
    if opts.dry_run {
        report.to_peer = pushes;
        report.from_peer = pulls;
        report.bytes = total_bytes;
        control.close().await;
        return Ok(report);
    }

    let started = Instant::now();
    let queue = Arc::new(Mutex::new(jobs.into_iter().collect::<VecDeque<_>>()));
    let progress = Arc::new(Mutex::new(Progress::default()));
    let meter = Arc::new(crate::common::progress::Progress::new(
        format!("wal-sync {dir_arg} with {peer}"),
        Some(total_bytes),
    ));
    let lanes = cfg.parallel.max(1);
    let session = ssh::session(&ssh, peer).await?;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..lanes {
        let worker = Worker {
            queue: queue.clone(),
            progress: progress.clone(),
            meter: meter.clone(),
            store: store.clone(),
            ssh: ssh.clone(),
            session: session.clone(),
            peer: peer.to_string(),
            dir_arg: dir_arg.clone(),
            dir: dir.clone(),
            me: cfg.server_name.clone(),
        };
        set.spawn(worker.run());
    }
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            log::error(format!("wal-sync worker failed: {e}"));
        }
    }
    // Waits for the peer's process to exit: it holds the peer's wal-sync
    // lock until then, and a run started right after this one (a dry run,
    // then the real one) found it still held.
    control.close().await;
    meter.finish();
    let p = progress.lock().expect("not poisoned");
    report.to_peer = p.to_peer;
    report.from_peer = p.from_peer;
    report.bytes = p.bytes;
    report.failed = p.failed.clone();
    report.divergent.extend(p.divergent.iter().cloned());
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    log::info(format!(
        "wal-sync {dir_arg}: copied {} to {peer} and {} from {peer}, {:.1} MB in {secs:.1} s ({:.1} files/s, {:.1} MB/s); {} divergent, {} failed",
        report.to_peer,
        report.from_peer,
        report.bytes as f64 / 1e6,
        (report.to_peer + report.from_peer) as f64 / secs,
        report.bytes as f64 / 1e6 / secs,
        report.divergent.len(),
        report.failed.len()
    ));
    Ok(report)
}

/// What to copy each way, and the names both sides have.
fn plan(local: &[ListEntry], remote: &[ListEntry]) -> (Vec<Job>, Vec<String>) {
    let l: BTreeMap<&str, &ListEntry> = local.iter().map(|e| (e.name.as_str(), e)).collect();
    let r: BTreeMap<&str, &ListEntry> = remote.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut jobs = Vec::new();
    let mut both = Vec::new();
    for (name, e) in &l {
        if r.contains_key(name) {
            both.push(name.to_string());
        } else {
            jobs.push(Job::Push((*e).clone()));
        }
    }
    for (name, e) in &r {
        if !l.contains_key(name) {
            jobs.push(Job::Pull((*e).clone()));
        }
    }
    (jobs, both)
}

/// Same-named files whose decompressed contents differ. Only files of
/// different stored size are decoded, unless `opts.checksum`.
async fn find_divergent(
    store: &Store,
    control: &mut Channel,
    dir_arg: &str,
    local: &[ListEntry],
    remote: &[ListEntry],
    both: &[String],
    opts: &SyncOptions,
) -> Result<Vec<String>> {
    let size = |list: &[ListEntry], n: &str| list.iter().find(|e| e.name == n).map(|e| e.size);
    let suspects: Vec<String> = both
        .iter()
        .filter(|n| opts.checksum || size(local, n) != size(remote, n))
        .cloned()
        .collect();
    let mut divergent = Vec::new();
    for chunk in suspects.chunks(256) {
        let mine = store.digests(dir_arg, chunk)?;
        let theirs = control.digests(dir_arg, chunk).await?;
        for ((name, a), b) in chunk.iter().zip(mine).zip(theirs) {
            if a != b {
                divergent.push(name.clone());
            }
        }
    }
    Ok(divergent)
}

#[derive(Default)]
struct Progress {
    to_peer: u64,
    from_peer: u64,
    bytes: u64,
    failed: Vec<String>,
    divergent: Vec<String>,
}

struct Worker {
    queue: Arc<Mutex<VecDeque<Job>>>,
    progress: Arc<Mutex<Progress>>,
    /// Bytes done (copied or given up), shown as a bar or logged.
    meter: Arc<crate::common::progress::Progress>,
    store: Store,
    ssh: SshSettings,
    session: Arc<openssh::Session>,
    peer: String,
    dir_arg: String,
    /// The local archive directory (resolved).
    dir: PathBuf,
    me: Option<String>,
}

impl Worker {
    async fn run(self) {
        let mut channel: Option<Channel> = None;
        loop {
            let Some(job) = self.queue.lock().expect("not poisoned").pop_front() else {
                break;
            };
            if channel.is_none() {
                match Channel::open(&self.ssh, self.session.clone(), &self.peer).await {
                    Ok(c) => channel = Some(c),
                    Err(e) => {
                        self.record_failure(&job, &e);
                        continue;
                    }
                }
            }
            let ch = channel.as_mut().expect("open");
            let res = match &job {
                Job::Push(e) => self.push(ch, e).await,
                Job::Pull(e) => self.pull(ch, e).await,
            };
            match res {
                Ok(()) => self.record_success(&job),
                Err(Error::Conflict(_)) => {
                    let (Job::Push(e) | Job::Pull(e)) = &job;
                    self.meter.inc(e.size);
                    let name = job_name(&job);
                    log::error(format!(
                        "{name} appeared on both sides with different content during the sync; left alone"
                    ));
                    self.progress
                        .lock()
                        .expect("not poisoned")
                        .divergent
                        .push(name);
                }
                Err(e) => {
                    if e.is_host_failure() {
                        channel = None;
                    }
                    self.record_failure(&job, &e);
                }
            }
        }
        if let Some(c) = channel {
            c.close().await;
        }
    }

    fn record_success(&self, job: &Job) {
        let mut p = self.progress.lock().expect("not poisoned");
        let (Job::Push(e) | Job::Pull(e)) = job;
        match job {
            Job::Push(_) => p.to_peer += 1,
            Job::Pull(_) => p.from_peer += 1,
        }
        p.bytes += e.size;
        self.meter.inc(e.size);
    }

    fn record_failure(&self, job: &Job, e: &Error) {
        let (Job::Push(entry) | Job::Pull(entry)) = job;
        self.meter.inc(entry.size);
        let name = job_name(job);
        log::error(format!("copying {name} failed: {e}"));
        self.progress
            .lock()
            .expect("not poisoned")
            .failed
            .push(format!("{name}: {e}"));
    }

    /// Sends our stored copy, proven against its record first (a full
    /// decode: the peer only light-checks a zstd copy that comes with its
    /// digest); the peer verifies it like any put and records the digest.
    async fn push(&self, ch: &mut Channel, e: &ListEntry) -> Result<()> {
        let (file, size, mtime, _) = self.store.open(&self.dir_arg, &e.name)?;
        let proven = {
            let (store, dir, name) = (self.store.clone(), self.dir_arg.clone(), e.name.clone());
            tokio::task::spawn_blocking(move || store.proven_digest(&dir, &name))
                .await
                .map_err(|e| Error::Usage(format!("the decoding task failed: {e}")))??
        };
        let req = PutRequest {
            dir: self.dir_arg.clone(),
            name: e.name.clone(),
            size,
            mtime,
            cluster: self.cluster(),
            forward_to: None,
            from: self.me.clone(),
            forward_in_background: false,
            raw_blake3: Some(proven.to_hex().to_string()),
        };
        let reply = ch
            .put(&req, std::io::BufReader::new(file), self.ssh.io_timeout)
            .await?;
        let _ = reply;
        Ok(())
    }

    /// Fetches the peer's stored copy and stores it here as it streams in,
    /// through the same checks as a put, decoded in full and proven against
    /// the digest the peer recorded (a copy that is not is refused).
    async fn pull(&self, ch: &mut Channel, e: &ListEntry) -> Result<()> {
        let cluster = self.cluster();
        let (size, mtime, raw_blake3) = ch.start_get(&self.dir_arg, &e.name).await?;
        let req = PutRequest {
            dir: self.dir_arg.clone(),
            name: e.name.clone(),
            size,
            mtime,
            cluster,
            forward_to: None,
            from: None,
            forward_in_background: false,
            raw_blake3,
        };
        // Checked like any put while it streams in; the server's checksum
        // frame closes it.
        let stored = self
            .store
            .put_closed_by::<Reply, _>(&req, ch.body(), true)
            .await;
        stored.map(drop).map_err(|e| ch.body_error(e))
    }

    fn cluster(&self) -> String {
        store::recorded_identity(&self.dir)
            .map(|i| i.cluster)
            .unwrap_or_else(|| "unknown".into())
    }
}

fn job_name(job: &Job) -> String {
    match job {
        Job::Push(e) | Job::Pull(e) => e.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, size: u64) -> ListEntry {
        ListEntry {
            name: name.into(),
            size,
            mtime: 0,
        }
    }

    #[test]
    fn plan_copies_what_each_side_lacks() {
        let local = [
            e("000000010000000000000001", 10),
            e("000000010000000000000002", 10),
        ];
        let remote = [
            e("000000010000000000000002", 11),
            e("000000010000000000000003", 10),
        ];
        let (jobs, both) = plan(&local, &remote);
        let names: Vec<String> = jobs
            .iter()
            .map(|j| match j {
                Job::Push(e) => format!("push {}", e.name),
                Job::Pull(e) => format!("pull {}", e.name),
            })
            .collect();
        assert_eq!(
            names,
            [
                "push 000000010000000000000001",
                "pull 000000010000000000000003"
            ]
        );
        assert_eq!(both, ["000000010000000000000002"]);
    }
}
