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
//!
//! This file holds the call side ([`spawn_worker`], recording the request)
//! and the worker's loop ([`run_worker`]); one transfer is in `transfer`,
//! the process-level work (session, priority) in [`crate::common::process`].

mod transfer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use self::transfer::{transfer, Ctx, Outcome};
use super::buffer::{self, Buffer, Plan, Scan, Want};
use super::{RestoreRequest, Settings};
use crate::common::config::Config;
use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::common::process;
use crate::common::wal::{self, WalKind, WalName};
use crate::net::health::HealthBook;
use crate::net::ssh::SshSettings;

/// The hidden command-line flag that makes restore-cmd a worker.
pub(crate) const WORKER_FLAG: &str = "--prefetch-worker";

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
pub(crate) fn spawn_worker(b: &Buffer, args: &[OsString]) -> Result<()> {
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
    let mut worker = Command::new(exe);
    // In the caller's directory (PostgreSQL runs restore_command in the data
    // directory): a relative --config, buffer or state directory then means
    // for the worker what it meant for the caller.
    worker.args(args).arg(WORKER_FLAG).arg(b.dir());
    // Its stdio detached, no descriptor of PostgreSQL's inherited; the
    // worker leaves PostgreSQL's session itself (`run_worker`).
    process::spawn_detached(worker, log_file)
        .map_err(|e| Error::Usage(format!("cannot start the prefetch worker: {e}")))
}

/// Runs the worker of buffer `dir` until it is idle (see the module docs).
pub async fn run_worker(cfg: &Config, dir: &Path) -> Result<()> {
    // Detached from PostgreSQL's session: its shutdown signals are not ours.
    process::detach_session();
    // Background work: a restore-cmd call (and PostgreSQL's replay) goes
    // first when they compete for a CPU. Threads started from here on
    // (transfers, decoders) inherit both.
    process::lower_priority(WORKER_NICE);
    process::batch_scheduling();
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
    let mut sweep: Option<JoinHandle<()>> = None;
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
            t.wait_running(&mut done_rx).await;
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
        sweep_dead(&scan, &mut sweep);
        let held = keep_window(&b, &want, &scan, settings.queue_max);
        let plan = Plan {
            want: &want,
            present: &held.present,
            bytes_used: held.bytes_used,
            inflight: &t.inflight,
            committing: &t.committing,
            waiting: &t.waiting,
            now: Instant::now(),
            queue_max: settings.queue_max,
            parallel: settings.parallel,
        };
        for segno in plan.next() {
            t.inflight.insert(segno);
            start_transfer(&ctx, &want, segno, t.generation, &done_tx);
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

/// Removes the dead temps of a scan, off this thread (one sweep at a
/// time). They include the requests finished calls replaced and left for
/// the worker to free (see `buffer::write_small`): freeing blocks may wait
/// for a discard, so not on the thread that drives the transfers.
fn sweep_dead(scan: &Scan, sweep: &mut Option<JoinHandle<()>>) {
    if !scan.dead.is_empty() && sweep.as_ref().is_none_or(|h| h.is_finished()) {
        let dead = scan.dead.clone();
        *sweep = Some(tokio::task::spawn_blocking(move || {
            for d in dead {
                let _ = std::fs::remove_file(d);
            }
        }));
    }
}

/// What the buffer holds of the window, once the segments outside it are
/// removed.
struct Held {
    /// Segment numbers buffered or being handed over.
    present: BTreeSet<u64>,
    /// Bytes of those segments and of claims.
    bytes_used: u64,
}

/// Removes the buffered segments `want` no longer asks for
/// ([`buffer::stale`]) and tells what is left.
fn keep_window(b: &Buffer, want: &Want, scan: &Scan, queue_max: u64) -> Held {
    let stale = buffer::stale(Some(want), queue_max, &scan.entries);
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
    Held {
        present,
        bytes_used,
    }
}

/// Starts the transfer of `segno` as a task reporting to the worker's loop.
fn start_transfer(
    ctx: &Arc<Ctx>,
    want: &Want,
    segno: u64,
    generation: u64,
    done_tx: &UnboundedSender<Event>,
) {
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

    /// Waits until no transfer runs or commits.
    async fn wait_running(&mut self, done_rx: &mut UnboundedReceiver<Event>) {
        while !self.inflight.is_empty() || !self.committing.is_empty() {
            let Some(ev) = done_rx.recv().await else {
                break;
            };
            self.event(ev);
        }
    }

    /// Takes in what a transfer reported.
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
