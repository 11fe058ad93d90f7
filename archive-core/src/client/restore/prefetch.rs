//! The prefetch worker (pgBackRest's asynchronous archive-get, per standby).
//!
//! A restore-cmd call for segment N, once it served N or a host answered
//! that it has N (when pg_control gives the segment size: the worker then
//! runs while the call downloads N), writes
//! the request to the buffer's `want` file and, when no worker holds the
//! buffer's lock, starts one: restore-cmd itself with the hidden
//! `--prefetch-worker DIR` flag, detached (own session, stdin and stdout on
//! /dev/null, stderr to `worker.log` in the buffer, no descriptor
//! inherited from PostgreSQL).
//!
//! The worker keeps the window N+1 … N+k buffered, k = queue size / segment
//! size: it fetches the lowest missing segments, `restore_parallel` at a
//! time over channels of the one ssh master per host, spread over the
//! healthy hosts (another host when one lacks a segment, fails, or has a
//! bad copy), decodes and verifies each as it streams in (a segment of
//! another size than the request's is a bad copy), records its content
//! digest next to it, and commits it durably. A segment that arrived frees
//! its transfer for the next one while it is fsynced, so the disk's wait
//! does not idle the CPUs. Each segment counts as a whole one from the
//! start of its transfer until it is committed, so the buffer never holds
//! more than the queue size. Segments
//! older than the request or beyond the window are removed; a change of
//! timeline, SRC-DIR or hosts empties the buffer. A segment the archive does
//! not have yet is asked for again every half second, and nothing beyond it
//! is fetched meanwhile.
//!
//! It leaves when nothing was requested for `restore_prefetch_idle`
//! seconds, or at once when the request is withdrawn (a history file was
//! restored), emptying the buffer first, so it never outlives its use.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::buffer::{self, Buffer, FileId, Meta, Plan, Want};
use super::fetch::{self, FetchError};
use super::verify::Check;
use super::{order_hosts, RestoreRequest, Settings};
use crate::common::config::Config;
use crate::common::durable::{self, AtomicFile};
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::common::wal::{self, WalKind, WalName};
use crate::net::health::HealthBook;
use crate::net::ssh::{self, Channel, SshSettings};

/// The hidden command-line flag that makes restore-cmd a worker.
pub const WORKER_FLAG: &str = "--prefetch-worker";

/// How often the worker looks at the request and the buffer.
const TICK: Duration = Duration::from_millis(20);
/// A segment the archive does not have yet is asked for again after this.
const RETRY_NOT_FOUND: Duration = Duration::from_millis(500);
/// After a failure (all hosts) or a bad copy everywhere.
const RETRY_FAILED: Duration = Duration::from_secs(2);
const RETRY_BAD: Duration = Duration::from_secs(10);
/// Niceness added to the worker (the calls it serves must not wait for it).
const WORKER_NICE: i32 = 5;
/// The worker's log is truncated beyond this size.
const LOG_MAX: u64 = 8 << 20;

/// Records the request for the prefetch worker and starts one if none
/// runs. A history file found means a timeline change may follow: the
/// queue is emptied instead. Problems here never fail the call.
pub(super) fn record_request(
    settings: &Settings,
    buffer: Option<&Buffer>,
    req: &RestoreRequest,
    name: &WalName,
    seg_size: u64,
    sysid: Option<u64>,
    include: bool,
) {
    let Some(b) = buffer else { return };
    match name.kind() {
        WalKind::History => {
            if b.dir().is_dir() {
                b.remove_want();
                b.clear();
            }
        }
        WalKind::Segment => {
            if wal::check_segment_size(seg_size).is_err() {
                return;
            }
            let want = Want {
                tli: name.timeline(),
                segno: name.segment_number(seg_size),
                include,
                seg_size,
                hosts: req.hosts.clone(),
                src_dir: req.src_dir.clone(),
                sysid,
                at_ms: buffer::now_ms(),
            };
            if want.window(settings.queue_max).is_none() {
                return;
            }
            if let Err(e) = b.ensure() {
                log::warn(format!("prefetch buffer unavailable: {e}"));
                return;
            }
            if let Some(old) = b.read_want() {
                if !old.same_stream(&want) {
                    // A timeline change (or another archive): nothing
                    // buffered is wanted any more.
                    b.clear();
                }
            }
            if let Err(e) = b.write_want(&want) {
                log::warn(format!("prefetch: {e}"));
                return;
            }
            if !b.worker_running() {
                if let Err(e) = spawn_worker(b, &req.worker_args) {
                    log::warn(format!("prefetch for {}: {e}", b.dir().display()));
                }
            }
        }
        WalKind::Backup | WalKind::Partial => {}
    }
}

/// Starts a detached worker for buffer `b`, passing `args` (the caller's
/// `--config`/`--set`) so that it reads the same configuration. Does not
/// wait for it.
pub fn spawn_worker(b: &Buffer, args: &[OsString]) -> Result<()> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Usage(format!("cannot find restore-cmd's own path: {e}")))?;
    let log_path = b.log_path();
    if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > LOG_MAX) {
        let _ = std::fs::remove_file(&log_path);
    }
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(durable::FILE_MODE)
        .open(&log_path)
        .map_err(|e| Error::io("cannot open", &log_path, e))?;
    close_inherited_on_exec();
    Command::new(exe)
        .args(args)
        .arg(WORKER_FLAG)
        .arg(b.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        // In the caller's directory (PostgreSQL runs restore_command in the
        // data directory): a relative --config, buffer or state directory
        // then means for the worker what it meant for the caller.
        .spawn()
        .map_err(|e| Error::Usage(format!("cannot start the prefetch worker: {e}")))?;
    // Not waited for: it outlives this call, and init (or the nearest
    // subreaper) reaps it.
    Ok(())
}

/// Marks every descriptor above stderr close-on-exec, so the detached
/// worker does not keep open what PostgreSQL's startup process handed
/// down to restore_command (WAL and relation files, pipes).
#[allow(unsafe_code)]
fn close_inherited_on_exec() {
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: `fd` was listed as open in this process a moment ago; the
        // borrow lives only for this fcntl. If it was closed meanwhile the
        // call fails with EBADF; if the number was reused, the new
        // descriptor becomes close-on-exec, which is harmless here (this
        // process opens its own files close-on-exec anyway, and gives its
        // children their stdio by dup2).
        let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if let Ok(flags) = rustix::io::fcntl_getfd(bfd) {
            let _ = rustix::io::fcntl_setfd(bfd, flags | rustix::io::FdFlags::CLOEXEC);
        }
    }
}

/// Shared by the worker's transfers.
struct Ctx {
    cfg: Config,
    ssh: SshSettings,
    health: HealthBook,
    buffer: Buffer,
    /// Idle channels per host.
    pool: Mutex<HashMap<String, Vec<Channel>>>,
}

impl Ctx {
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
enum Outcome {
    Stored,
    NotFound,
    Bad,
    Failed,
}

/// SCHED_BATCH for this thread and those it starts: the scheduler takes
/// them for CPU-bound work and lets a waking task (a restore-cmd call
/// PostgreSQL waits for) preempt them sooner. Needs no privilege.
#[allow(unsafe_code)]
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread with a valid parameter.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
}

/// Runs the worker of buffer `dir` until it is idle (see the module docs).
pub async fn run_worker(cfg: &Config, dir: &Path) -> Result<()> {
    // Detached from PostgreSQL's session: its shutdown signals are not ours.
    let _ = rustix::process::setsid();
    // Background work: a restore-cmd call (and PostgreSQL's replay) goes
    // first when they compete for a CPU. Threads started from here on
    // (transfers, decoders) inherit it.
    let niceness = rustix::process::nice(WORKER_NICE).unwrap_or(WORKER_NICE);
    // With autogroup scheduling (Linux's default when the kernel has it),
    // the nice value above only ranks threads inside their session's
    // group, and setsid just made a group of our own: the group's nice is
    // what ranks the worker against PostgreSQL's session, so it gets the
    // same value. Lowering a priority needs no privilege; without autogroup
    // the file is absent or ignored.
    let _ = std::fs::write("/proc/self/autogroup", niceness.to_string());
    batch_scheduling();
    let settings = Settings::from_config(cfg)?;
    let b = Buffer::at(dir);
    if !dir.is_dir() {
        return Ok(());
    }
    let Some(lock) = b.lock_worker(Duration::from_secs(2))? else {
        return Ok(());
    };
    let mut lock = Some(lock);
    log::info(format!(
        "prefetch worker started for {} (queue {} MiB, {} transfers)",
        dir.display(),
        settings.queue_max >> 20,
        settings.parallel
    ));
    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        ssh: SshSettings::from_config(cfg),
        health: HealthBook::open(&cfg.state_dir().join("health"))?,
        buffer: b.clone(),
        pool: Mutex::new(HashMap::new()),
    });
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let mut t = Transfers::default();
    let mut current: Option<Want> = None;
    let mut ticks = 0u64;
    let mut sweep: Option<tokio::task::JoinHandle<()>> = None;
    let idle_ms = settings.idle.as_millis() as i64;
    let why = loop {
        while let Ok(ev) = done_rx.try_recv() {
            t.event(ev);
        }
        ticks += 1;
        if ticks.is_multiple_of(1000) {
            truncate_log(&b);
        }
        if !dir.is_dir() {
            break "its directory is gone".to_string();
        }
        let want = b.read_want();
        let fresh = |w: &Option<Want>| {
            w.as_ref()
                .is_some_and(|w| buffer::now_ms() - w.at_ms <= idle_ms)
        };
        if !fresh(&want) {
            // Idle or withdrawn: empty the buffer and leave, unless a
            // request arrived while the lock was being released (the caller
            // saw the lock held and started no worker). Running transfers
            // finish first (each within the io timeout), or one could land
            // a segment after the buffer was emptied, with nobody left to
            // remove it.
            while !t.inflight.is_empty() || !t.committing.is_empty() {
                let Some(ev) = done_rx.recv().await else {
                    break;
                };
                t.event(ev);
            }
            b.clear();
            drop(lock.take());
            if fresh(&b.read_want()) {
                if let Some(l) = b.lock_worker(Duration::ZERO)? {
                    lock = Some(l);
                    continue;
                }
            }
            break match want {
                Some(_) => format!("no request for {} s", settings.idle.as_secs()),
                // A history file was restored: a timeline change is coming.
                None => "the request was withdrawn".to_string(),
            };
        }
        let want = want.expect("fresh");
        if current.as_ref().is_some_and(|c| !c.same_stream(&want)) {
            b.clear();
            t.new_stream();
        }
        if current.as_ref() != Some(&want) {
            // Forget retry times outside the new window.
            if let Some((first, last)) = want.window(settings.queue_max) {
                t.waiting.retain(|s, _| (first..=last).contains(s));
            }
            current = Some(want.clone());
        }
        let scan = b.scan();
        // Dead temps include the requests finished calls replaced and left
        // for us to free (see `buffer::write_small`): freeing blocks may wait
        // for a discard, so not on this thread, which drives the transfers.
        if !scan.dead.is_empty() && sweep.as_ref().is_none_or(|h| h.is_finished()) {
            let dead = scan.dead.clone();
            sweep = Some(tokio::task::spawn_blocking(move || {
                for d in dead {
                    let _ = std::fs::remove_file(d);
                }
            }));
        }
        let stale = buffer::stale(Some(&want), settings.queue_max, &scan.entries);
        for e in &stale {
            b.remove_entry(e.name.as_str());
        }
        let kept: Vec<_> = scan
            .entries
            .iter()
            .filter(|e| !stale.iter().any(|s| s.name == e.name))
            .collect();
        let present: BTreeSet<u64> = kept
            .iter()
            .map(|e| &e.name)
            .chain(&scan.claimed)
            .map(|n| n.segment_number(want.seg_size))
            .collect();
        let bytes_used = kept.iter().map(|e| e.size).sum::<u64>() + scan.claim_bytes;
        let plan = Plan {
            want: &want,
            present: &present,
            bytes_used,
            inflight: &t.inflight,
            committing: &t.committing,
            waiting: &t.waiting,
            now: Instant::now(),
            queue_max: settings.queue_max,
            parallel: settings.parallel,
        };
        for segno in plan.next() {
            t.inflight.insert(segno);
            let generation = t.generation;
            let ctx = ctx.clone();
            let want = want.clone();
            let tx = done_tx.clone();
            tokio::spawn(async move {
                let received = || {
                    let _ = tx.send(Event::Received(segno));
                };
                let outcome = transfer(&ctx, &want, segno, received).await;
                let _ = tx.send(Event::Done(Done {
                    generation,
                    segno,
                    outcome,
                }));
            });
        }
        tokio::select! {
            Some(ev) = done_rx.recv() => {
                t.event(ev);
            }
            _ = tokio::time::sleep(TICK) => {}
        }
    };
    b.clear();
    log::info(format!(
        "prefetch worker for {} leaves: {why} ({} segments prefetched)",
        dir.display(),
        t.stored
    ));
    Ok(())
}

/// What a transfer tells the worker's loop.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// Its segment arrived and verified; it is being made durable, and its
    /// transfer slot is free for the next segment.
    Received(u64),
    /// It ended.
    Done(Done),
}

/// The end of one transfer.
#[derive(Debug, Clone, Copy)]
struct Done {
    /// The stream generation it was started in.
    generation: u64,
    segno: u64,
    outcome: Outcome,
}

/// The worker's transfers: which run, which wait for a retry, of which
/// stream generation.
#[derive(Debug, Default)]
struct Transfers {
    /// Segment numbers being fetched.
    inflight: BTreeSet<u64>,
    /// Segment numbers received, being fsynced and renamed into place.
    committing: BTreeSet<u64>,
    /// Segment numbers not to retry before the given instant.
    waiting: BTreeMap<u64, Instant>,
    /// Bumped at each change of stream (timeline, SRC-DIR, hosts): a
    /// transfer of the old stream that ends "not found" must not delay the
    /// same segment number of the new one.
    generation: u64,
    /// Segments stored so far (for the log).
    stored: u64,
}

impl Transfers {
    /// A new stream: retry times and older transfers' outcomes no longer
    /// apply.
    fn new_stream(&mut self) {
        self.waiting.clear();
        self.generation += 1;
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Received(segno) => {
                if self.inflight.remove(&segno) {
                    self.committing.insert(segno);
                }
            }
            Event::Done(done) => self.done(done),
        }
    }

    /// A transfer ended.
    fn done(&mut self, done: Done) {
        let Done {
            generation,
            segno,
            outcome,
        } = done;
        self.inflight.remove(&segno);
        self.committing.remove(&segno);
        if generation != self.generation {
            // Of a stream no longer wanted: says nothing about this one.
            return;
        }
        let retry = match outcome {
            Outcome::Stored => {
                self.stored += 1;
                self.waiting.remove(&segno);
                return;
            }
            Outcome::NotFound => RETRY_NOT_FOUND,
            Outcome::Bad => RETRY_BAD,
            Outcome::Failed => RETRY_FAILED,
        };
        self.waiting.insert(segno, Instant::now() + retry);
    }
}

fn truncate_log(b: &Buffer) {
    if std::fs::metadata(b.log_path()).is_ok_and(|m| m.len() > LOG_MAX) {
        let _ = rustix::fs::ftruncate(std::io::stderr(), 0);
        log::info("log truncated");
    }
}

/// Fetches segment `segno` into the buffer from the first host that has a
/// good copy; calls `received` once the copy arrived and verified, before
/// making it durable.
async fn transfer(ctx: &Ctx, want: &Want, segno: u64, received: impl FnOnce()) -> Outcome {
    let name = want.name(segno);
    let n = name.as_str().to_string();
    let check = Check {
        name,
        sysid: want.sysid,
        hash: true,
        // The queue counts every segment as this size: a larger one must
        // not slip in (it would overrun restore_queue_max).
        seg_size: Some(want.seg_size),
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::super::tests::{buffer_segment, data_dir, no_worker_cfg, request};
    use super::super::{restore, verify};
    use super::*;

    fn done(generation: u64, segno: u64, outcome: Outcome) -> Done {
        Done {
            generation,
            segno,
            outcome,
        }
    }

    /// After a timeline change, a transfer of the old timeline that ends
    /// "not found" (or bad) used to hold back the same segment number of
    /// the new timeline for the retry delay (10 s for a bad copy).
    #[test]
    fn an_old_streams_transfer_does_not_delay_the_new_stream() {
        let mut t = Transfers {
            inflight: BTreeSet::from([7, 8]),
            ..Default::default()
        };
        t.new_stream();
        t.done(done(0, 7, Outcome::Bad));
        assert!(!t.inflight.contains(&7), "its slot is free");
        assert!(
            t.waiting.is_empty(),
            "segment 7 of the new stream is not held back"
        );
        t.done(done(1, 8, Outcome::NotFound));
        assert!(t.waiting.contains_key(&8), "this stream's not-found waits");
        assert!(t.inflight.is_empty());
        t.done(done(0, 9, Outcome::Stored));
        assert_eq!(t.stored, 0, "an old stream's segment is not counted");
    }

    #[test]
    fn a_received_segment_frees_its_transfer_and_stays_pending_until_done() {
        let mut t = Transfers {
            inflight: BTreeSet::from([7, 8]),
            ..Default::default()
        };
        t.event(Event::Received(7));
        assert_eq!(t.inflight, BTreeSet::from([8]), "7's slot is free");
        assert_eq!(t.committing, BTreeSet::from([7]), "7 is not fetched again");
        t.event(Event::Done(done(0, 7, Outcome::Failed)));
        assert!(t.committing.is_empty());
        assert!(
            t.waiting.contains_key(&7),
            "a failed commit is retried later"
        );
        t.event(Event::Received(8));
        t.event(Event::Done(done(0, 8, Outcome::Stored)));
        assert!(t.inflight.is_empty() && t.committing.is_empty());
        assert_eq!(t.stored, 1);
    }

    #[tokio::test]
    async fn a_call_leaves_the_request_it_replaces_for_the_worker_to_free() {
        // Freeing blocks can cost a synchronous discard on some file systems
        // (and `want`, replaced by a rename, always has its block: ext4
        // allocates at once a file renamed over another): the request a
        // call replaces stays linked under a temp name of the call, which
        // the worker removes as a dead temp once the call has exited.
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let old_want = Want {
            tli: 1,
            segno: 4,
            include: false,
            seg_size: seg.len() as u64,
            hosts: vec!["nohost".into()],
            src_dir: "/archive/main".into(),
            sysid: None,
            at_ms: 0,
        };
        b.write_want(&old_want).unwrap();
        let ino = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(p).unwrap().ino()
        };
        let before = ino(&b.dir().join("want"));
        // Prefetch on, with this test holding the worker's lock: the call
        // records its request but starts no worker.
        let cfg = Config {
            restore_queue_max: crate::common::config::ByteSize(64 << 20),
            ..cfg
        };
        let _lock = b.lock_worker(Duration::ZERO).unwrap().unwrap();
        restore(&cfg, &request(d.path(), name, None)).await.unwrap();
        assert_eq!(b.read_want().unwrap().segno, 5, "the request moved on");
        let own = format!(".want.tmp-{}-", std::process::id());
        let kept: Vec<PathBuf> = fs::read_dir(b.dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(&own))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(ino(&kept[0]), before, "the replaced request");
        // Once this process is gone it is a dead temp: what the worker's
        // scan removes.
        assert!(b.scan().dead.is_empty(), "alive while we run");
    }
}
