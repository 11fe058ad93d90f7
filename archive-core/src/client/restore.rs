//! restore-cmd: PostgreSQL's restore_command on standbys (what one call does
//! for one %f).
//!
//! - Sources, in order: the local manual directory (`restore_manual_dir`),
//!   the prefetch buffer, then the hosts in health order
//!   ([`order_hosts`]): a host in cooldown is tried last, and on a standby
//!   skipped when another host already answered (archive recovery asks it
//!   all the same); "not found" is an answer, not a failure; when every host is in cooldown the counters are reset rather
//!   than waiting for them.
//! - Every copy is decoded by sniffing and verified before it reaches %p
//!   ([`verify`]); a bad copy on one host means the other host's copy.
//! - %p is written as a temp file in its directory, fsynced, then renamed:
//!   nothing partial is ever at %p, also after SIGKILL.
//! - DELAY-SECONDS: a file archived less than that long ago is "not
//!   available" yet, with one log line per file, not one per retry.
//! - Prefetch ([`prefetch`]): serving segment N (or finding it on a host,
//!   before downloading it, when pg_control gives the segment size)
//!   records the request in the buffer and makes sure the buffer's worker
//!   runs; it fetches N+1, N+2, … in parallel, and later calls are served
//!   from the buffer after the buffered file is checked against its record
//!   (SRC-DIR; the file's identity, else every byte against its digest;
//!   page header, system identifier) (`check_buffered`).
//! - Exit codes ([`exit_code`]): 1 for "not available"; in archive recovery
//!   (recovery.signal without standby.signal), when a host failed and no
//!   host had the file, [`EXIT_STOP_RECOVERY`] (200): PostgreSQL treats a
//!   code above 125 as fatal and stops instead of ending recovery early and
//!   promoting with WAL missing.

pub mod buffer;
pub mod fetch;
pub mod prefetch;
pub mod verify;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use self::buffer::{Buffer, FileId, Meta, Want};
use self::fetch::FetchError;
use self::verify::{Check, VerifyError};
use crate::common::codec::Codec;
use crate::common::config::Config;
use crate::common::durable::{self, AtomicFile, Commit};
use crate::common::error::{Error, Result, EXIT_RETRY};
use crate::common::log;
use crate::common::names::validate_dir_arg;
use crate::common::page_header::LONG_HEADER_LEN;
use crate::common::wal::{WalKind, WalName};
use crate::net::health::{self, HealthBook, HostState};
use crate::net::ssh::{self, SshSettings};

/// Exit code that makes PostgreSQL stop archive recovery (any code above
/// 125 is fatal to the startup process). 200 is clear of the shell's 126
/// (cannot execute), 127 (not found) and 128+N (killed by signal N), so the
/// server log's "exited with exit code 200" can only mean this.
pub const EXIT_STOP_RECOVERY: i32 = 200;

/// How the data directory is recovering, from its signal files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// `standby.signal`: a standby retries "not available" forever.
    Standby,
    /// `recovery.signal` without `standby.signal`: targeted archive recovery
    /// (PITR), which ends at the first "not available".
    ArchiveRecovery,
    /// Neither (a manual call, or not a data directory).
    Unknown,
}

impl RecoveryMode {
    /// Reads the signal files of `data_dir`.
    pub fn detect(data_dir: &Path) -> RecoveryMode {
        if data_dir.join("standby.signal").exists() {
            RecoveryMode::Standby
        } else if data_dir.join("recovery.signal").exists() {
            RecoveryMode::ArchiveRecovery
        } else {
            RecoveryMode::Unknown
        }
    }
}

/// One restore_command invocation.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// Archive hosts in preference order.
    pub hosts: Vec<String>,
    /// SRC-DIR on the archive servers.
    pub src_dir: String,
    /// %f.
    pub name: String,
    /// %p (relative to the current directory, the data directory).
    pub dest: PathBuf,
    /// DELAY-SECONDS.
    pub delay: Option<u64>,
    /// The data directory (PostgreSQL runs restore_command in it).
    pub data_dir: PathBuf,
    /// How the data directory is recovering ([`RecoveryMode::detect`]).
    pub mode: RecoveryMode,
    /// Arguments that give a spawned prefetch worker the same configuration
    /// (`--config FILE`, `--set KEY=VALUE`).
    pub worker_args: Vec<OsString>,
}

/// Where a restored file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The manual directory.
    Manual(PathBuf),
    /// The prefetch buffer (fetched from `host`); `waited` when the call
    /// waited for the worker's transfer to finish.
    Buffer {
        /// Host the worker fetched it from.
        host: String,
        /// Time spent waiting for an in-flight transfer.
        waited: Option<Duration>,
    },
    /// Fetched by this call.
    Host(String),
}

/// A file now at %p.
#[derive(Debug, Clone)]
pub struct Restored {
    /// Where it came from.
    pub source: Source,
    /// Its size.
    pub size: u64,
    /// How it was stored.
    pub codec: Codec,
}

/// What one host said in a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// It does not have the file.
    NotFound,
    /// Its copy is bad.
    Bad(String),
    /// It failed (unreachable, timeout, refused request).
    Failed(String),
    /// Not tried: in cooldown after recent failures, and another host
    /// answered.
    Skipped(String),
}

impl Attempt {
    /// True when the host may have the file but did not deliver it.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Attempt::NotFound)
    }
}

/// Why nothing was put at %p.
#[derive(Debug)]
pub enum Unavailable {
    /// Every host answered that it does not have the file.
    NotFound,
    /// Archived less than DELAY-SECONDS ago.
    TooYoung {
        /// When it was archived (Unix seconds).
        archived: i64,
        /// When it can be handed over.
        ready_at: i64,
    },
    /// No host delivered a good copy and at least one failed or had a bad
    /// copy: (host, what happened) for each.
    Failed(Vec<(String, Attempt)>),
    /// A local problem (configuration, arguments, disk).
    Local(Error),
}

impl From<Error> for Unavailable {
    fn from(e: Error) -> Self {
        Unavailable::Local(e)
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NotFound => f.write_str("not in the archive"),
            Unavailable::TooYoung { archived, ready_at } => write!(
                f,
                "archived {} s ago, handed over in {} s (DELAY-SECONDS)",
                health::now() - archived,
                ready_at - health::now()
            ),
            Unavailable::Failed(attempts) => {
                let parts: Vec<String> = attempts
                    .iter()
                    .map(|(h, a)| match a {
                        Attempt::NotFound => format!("{h}: not found"),
                        Attempt::Bad(m) => format!("{h}: bad copy ({m})"),
                        Attempt::Failed(m) => format!("{h}: failed ({m})"),
                        Attempt::Skipped(m) => format!("{h}: skipped ({m})"),
                    })
                    .collect();
                write!(f, "no good copy: {}", parts.join("; "))
            }
            Unavailable::Local(e) => e.fmt(f),
        }
    }
}

/// The exit code for an unavailable file: 1 (PostgreSQL retries, or ends
/// recovery when it is archive recovery) unless answering "not available"
/// could end a point-in-time recovery early: archive recovery, and some host
/// failed (or had a bad copy, or a local error stopped the call). Then
/// [`EXIT_STOP_RECOVERY`]: PostgreSQL stops rather than promote.
pub fn exit_code(mode: RecoveryMode, u: &Unavailable) -> i32 {
    let stop = mode == RecoveryMode::ArchiveRecovery;
    match u {
        Unavailable::NotFound | Unavailable::TooYoung { .. } => EXIT_RETRY,
        Unavailable::Failed(_) if stop => EXIT_STOP_RECOVERY,
        Unavailable::Failed(_) => EXIT_RETRY,
        Unavailable::Local(_) if stop => EXIT_STOP_RECOVERY,
        Unavailable::Local(e) => crate::common::error::Failure::exit_code(e),
    }
}

/// The restore settings of a configuration, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Prefetch on.
    pub prefetch: bool,
    /// Bound of the buffer in bytes.
    pub queue_max: u64,
    /// Parallel transfers of the worker.
    pub parallel: usize,
    /// Idle time after which the worker leaves.
    pub idle: Duration,
}

impl Settings {
    /// Reads and checks the `restore_*` keys.
    pub fn from_config(cfg: &Config) -> Result<Settings> {
        if cfg.restore_parallel == 0 || cfg.restore_parallel > 32 {
            return Err(Error::Usage(
                "restore_parallel must be between 1 and 32".into(),
            ));
        }
        if cfg.restore_prefetch_idle == 0 {
            return Err(Error::Usage(
                "restore_prefetch_idle must be at least 1 second".into(),
            ));
        }
        Ok(Settings {
            prefetch: cfg.restore_prefetch,
            queue_max: cfg.restore_queue_max.0,
            parallel: cfg.restore_parallel,
            idle: Duration::from_secs(cfg.restore_prefetch_idle),
        })
    }
}

/// Orders hosts for an attempt: healthy ones first (configured order), then
/// those in cooldown, each with its state. When every host is in cooldown,
/// their counters are reset and all are healthy again: the alternative is
/// waiting for a cooldown to end while PostgreSQL asks again and again.
pub fn order_hosts(health: &HealthBook, hosts: &[String]) -> Vec<(String, Option<HostState>)> {
    let now = health::now();
    let states: Vec<(String, HostState)> =
        hosts.iter().map(|h| (h.clone(), health.state(h))).collect();
    if !states.is_empty() && states.iter().all(|(_, s)| s.in_cooldown(now)) {
        log::warn(format!(
            "every archive host is in cooldown ({}): counters reset, trying them all",
            hosts.join(", ")
        ));
        for h in hosts {
            let _ = health.record_success(h);
        }
        return hosts.iter().map(|h| (h.clone(), None)).collect();
    }
    let (healthy, cooling): (Vec<_>, Vec<_>) =
        states.into_iter().partition(|(_, s)| !s.in_cooldown(now));
    healthy
        .into_iter()
        .map(|(h, _)| (h, None))
        .chain(cooling.into_iter().map(|(h, s)| (h, Some(s))))
        .collect()
}

/// Restores one file, as restore_command (see the module docs).
pub async fn restore(cfg: &Config, req: &RestoreRequest) -> Result<Restored, Unavailable> {
    let settings = Settings::from_config(cfg)?;
    let name = WalName::parse(&req.name).map_err(Error::from)?;
    validate_dir_arg(&req.src_dir)?;
    let dest = req.dest.clone();
    let dest_dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if let Some(f) = dest.file_name().and_then(|f| f.to_str()) {
        durable::remove_stale_temps(&dest_dir, f);
    }
    let control = verify::read_control_file(&req.data_dir);
    let sysid = control.map(|c| c.sysid);
    let check = Check {
        name: name.clone(),
        sysid,
        hash: false,
        seg_size: None,
    };
    let not_after = req.delay.map(|d| health::now() - d as i64);
    let buffer = Buffer::for_data_dir(cfg, &req.data_dir).filter(|_| settings.prefetch);

    // 1. The manual directory.
    if let Some(dir) = &cfg.restore_manual_dir {
        if let Some(r) = from_manual(dir, &check, &dest)? {
            after_served(&settings, buffer.as_ref(), req, &name, r.size, sysid, false);
            return Ok(r);
        }
    }

    // 2. The prefetch buffer (segments only).
    if let Some(b) = buffer.as_ref().filter(|_| name.kind() == WalKind::Segment) {
        // The request moves on once the segment is claimed: earlier, the
        // worker would drop the segment as no longer wanted before the
        // claim (a needless download from the hosts). A claimed segment
        // counts as present for the worker, so it is not fetched again.
        let after_claim =
            |seg_size: u64| after_served(&settings, Some(b), req, &name, seg_size, sysid, false);
        match from_buffer(
            b,
            &check,
            &dest,
            &req.src_dir,
            not_after,
            cfg.io_timeout(),
            &after_claim,
        )? {
            FromBuffer::Served(r) => return Ok(r),
            FromBuffer::TooYoung { mtime, seg_size } => {
                after_served(&settings, Some(b), req, &name, seg_size, sysid, true);
                return Err(too_young(b.dir(), &name, mtime, req.delay));
            }
            FromBuffer::Miss => {}
        }
    }

    // 3. The hosts. Once one has the segment, the worker starts on the
    // following ones while this call downloads it: the first calls of a
    // standby (or the first after the worker left) no longer each fetch a
    // segment by themselves while the worker gets going. That needs the
    // segment size before the bytes arrive: pg_control's. Without it (no
    // data directory, an unreadable control file, or a size this name
    // cannot have) the worker starts after the download, as it must not
    // size its queue by a guess. It also starts when the copy then turns
    // out bad (the next segments are wanted all the same).
    let seg_size = control
        .and_then(|c| c.seg_size)
        .filter(|s| name.check_segment_size(*s).is_ok());
    let started = std::cell::Cell::new(false);
    let start_prefetch = |mtime: i64| {
        let Some(b) = buffer.as_ref().filter(|_| name.kind() == WalKind::Segment) else {
            return;
        };
        let Some(seg_size) = seg_size else { return };
        if started.replace(true) {
            return;
        }
        let too_young = not_after.is_some_and(|t| mtime > t);
        after_served(&settings, Some(b), req, &name, seg_size, sysid, too_young);
    };
    match from_hosts(cfg, req, &check, &dest, not_after, &start_prefetch).await {
        Ok((host, fetched)) => {
            let seg = fetched.verified.seg_size.unwrap_or(fetched.verified.size);
            after_served(&settings, buffer.as_ref(), req, &name, seg, sysid, false);
            Ok(Restored {
                source: Source::Host(host),
                size: fetched.verified.size,
                codec: fetched.verified.codec,
            })
        }
        Err(HostsError::TooYoung { mtime, seg_size }) => {
            let notice_dir = match &buffer {
                Some(b) => {
                    // The worker fetches it (and what follows) while it
                    // matures, so later calls need no download.
                    if let Some(seg) = seg_size {
                        after_served(&settings, Some(b), req, &name, seg, sysid, true);
                    }
                    b.dir().to_path_buf()
                }
                None => cfg.state_dir().join("restore"),
            };
            Err(too_young(&notice_dir, &name, mtime, req.delay))
        }
        Err(HostsError::Unavailable(u)) => Err(u),
    }
}

/// The delay answer, logged once per file (PostgreSQL asks every few
/// seconds; the log gets one line, not one per retry).
fn too_young(notice_dir: &Path, name: &WalName, mtime: i64, delay: Option<u64>) -> Unavailable {
    let delay = delay.unwrap_or(0) as i64;
    let ready_at = mtime + delay;
    let notice = Buffer::at(notice_dir);
    if notice.read_notice() != name.as_str() {
        let _ = notice.ensure();
        notice.write_notice(name.as_str());
        log::info(format!(
            "{name} was archived {} s ago; DELAY-SECONDS is {delay}: handed over in {} s (no more messages until then)",
            health::now() - mtime,
            (ready_at - health::now()).max(0)
        ));
    }
    Unavailable::TooYoung {
        archived: mtime,
        ready_at,
    }
}

/// Records the request for the prefetch worker and starts one if none
/// runs. A history file found means a timeline change may follow: the
/// queue is emptied instead. Problems here never fail the call.
fn after_served(
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
            if crate::common::wal::check_segment_size(seg_size).is_err() {
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
                if let Err(e) = prefetch::spawn_worker(b, &req.worker_args) {
                    log::warn(format!("prefetch for {}: {e}", b.dir().display()));
                }
            }
        }
        WalKind::Backup | WalKind::Partial => {}
    }
}

/// Writes a committed temp over `dest` (PostgreSQL removed any previous %p;
/// a leftover from an earlier call is replaced).
fn commit_replace(file: AtomicFile, dest: &Path) -> Result<()> {
    match file.commit()? {
        Commit::Stored => Ok(()),
        Commit::Exists(temp) => {
            let r = fs::rename(&temp, dest).map_err(|e| Error::io("cannot rename into", dest, e));
            if r.is_err() {
                let _ = fs::remove_file(&temp);
            }
            r?;
            durable::sync_parent(dest)
        }
    }
}

fn from_manual(dir: &Path, check: &Check, dest: &Path) -> Result<Option<Restored>> {
    let path = dir.join(check.name.as_str());
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot open", &path, e)),
    };
    let mut out = AtomicFile::create(dest)?;
    match verify::decode_verify(
        io::BufReader::with_capacity(verify::BUF_SIZE, file),
        &mut out,
        check,
    ) {
        Ok(v) => {
            commit_replace(out, dest)?;
            Ok(Some(Restored {
                source: Source::Manual(dir.to_path_buf()),
                size: v.size,
                codec: v.codec,
            }))
        }
        Err(VerifyError::Bad(m)) => {
            log::warn(format!(
                "{} in the manual directory is not usable ({m}); trying the archive",
                path.display()
            ));
            Ok(None)
        }
        Err(VerifyError::Write(e)) => Err(Error::io("cannot write", dest, e)),
    }
}

enum FromBuffer {
    Served(Restored),
    TooYoung { mtime: i64, seg_size: u64 },
    Miss,
}

/// Serves a segment from the buffer: waits for an in-flight transfer of it,
/// checks its record (SRC-DIR, delay), claims it, checks the file
/// ([`check_buffered`]), then renames it to %p (or copies it, across file
/// systems).
fn from_buffer(
    b: &Buffer,
    check: &Check,
    dest: &Path,
    src_dir: &str,
    not_after: Option<i64>,
    io_timeout: Duration,
    after_claim: &dyn Fn(u64),
) -> Result<FromBuffer> {
    let n = check.name.as_str();
    let mut waited = None;
    if !b.data_path(n).exists() {
        let Some(temp) = b.inflight_temp(n) else {
            return Ok(FromBuffer::Miss);
        };
        waited = wait_inflight(b, n, &temp, io_timeout.min(Duration::from_secs(10)));
        if waited.is_none() {
            return Ok(FromBuffer::Miss);
        }
    }
    let Some(meta) = b.read_meta(n) else {
        return Ok(FromBuffer::Miss);
    };
    if meta.src_dir != src_dir {
        b.remove_entry(n);
        return Ok(FromBuffer::Miss);
    }
    if not_after.is_some_and(|t| meta.mtime > t) {
        return Ok(FromBuffer::TooYoung {
            mtime: meta.mtime,
            seg_size: meta.size,
        });
    }
    let Some(claim) = b.claim(n) else {
        return Ok(FromBuffer::Miss);
    };
    after_claim(meta.size);
    let fail = |why: String| {
        log::warn(format!(
            "buffered {n} failed its check ({why}); fetching it from the archive"
        ));
        let _ = fs::remove_file(&claim);
        b.remove_entry(n);
        Ok(FromBuffer::Miss)
    };
    let file = match File::open(&claim) {
        Ok(f) => f,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(why) = check_buffered(file, check, &meta) {
        return fail(why);
    }
    // Hand over. The bytes are on disk already (the worker fsynced them
    // before they became visible in the buffer), so this is a rename. The
    // directory is not fsynced here: PostgreSQL renames the restored file to
    // its own name durably right away (durable_rename of RECOVERYXLOG, which
    // fsyncs pg_wal), and a crash before that only makes it ask again. It
    // would cost a journal commit (up to ~10 ms while the worker writes) on
    // the fast path.
    match fs::rename(&claim, dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            // The copy reads every byte anyway: they are checked against
            // the record on the way, whatever the identity said.
            match copy_checked(&claim, dest, check, &meta) {
                Ok(Ok(())) => {
                    let _ = fs::remove_file(&claim);
                }
                Ok(Err(why)) => return fail(why),
                Err(e) => {
                    let _ = fs::remove_file(&claim);
                    return Err(e);
                }
            }
        }
        Err(e) => {
            let _ = fs::remove_file(&claim);
            return Err(Error::io("cannot rename into", dest, e));
        }
    }
    b.remove_entry(n);
    Ok(FromBuffer::Served(Restored {
        source: Source::Buffer {
            host: meta.host,
            waited,
        },
        size: meta.size,
        codec: meta.codec,
    }))
}

/// Checks a claimed buffer file against its record. The worker verified
/// the bytes before recording them; what is left to rule out is a file
/// changed since. When its identity (inode, size, mtime, this boot) is the
/// recorded one, no write through the file system has touched it since
/// (short of one within the same timestamp tick, or a deliberate reset of
/// its mtime), and reading the first page header is enough (a wrong
/// segment there means a wrong record); otherwise (another identity, a
/// leftover from before a reboot, a record of an older version) every byte
/// is read and hashed again. The fast path spares PostgreSQL's critical
/// path a 16 MiB read and hash.
fn check_buffered(mut file: File, check: &Check, meta: &Meta) -> std::result::Result<(), String> {
    let unchanged = meta.file.is_some() && meta.file == FileId::of(&file);
    if unchanged && check.name.has_page_header() {
        let mut first = [0u8; LONG_HEADER_LEN];
        io::Read::read_exact(&mut file, &mut first).map_err(|e| e.to_string())?;
        let seg_size = verify::check_first_page(&first, check).map_err(|e| e.to_string())?;
        if seg_size != meta.size {
            return Err(format!(
                "{} bytes recorded, {seg_size}-byte segments in its page header",
                meta.size
            ));
        }
        return Ok(());
    }
    hash_buffered(file, &mut io::sink(), check, meta).map_err(|e| e.to_string())
}

/// Reads every byte of a buffered file into `out` and compares them with
/// the record (a mismatch is [`VerifyError::Bad`]).
fn hash_buffered<W: io::Write>(
    file: File,
    out: &mut W,
    check: &Check,
    meta: &Meta,
) -> std::result::Result<(), VerifyError> {
    let chk = Check {
        hash: true,
        ..check.clone()
    };
    let v = verify::decode_verify(file, out, &chk)?;
    if v.codec != Codec::Plain {
        return Err(VerifyError::Bad(format!("stored {}", v.codec)));
    }
    if v.size != meta.size || v.digest.as_deref() != Some(meta.digest.as_str()) {
        return Err(VerifyError::Bad("content differs from its record".into()));
    }
    Ok(())
}

/// Copies a buffered file to `dest` on another file system, checking every
/// byte against the record on the way; `Ok(Err(why))` when they differ
/// (nothing is left at `dest` then).
fn copy_checked(
    src: &Path,
    dest: &Path,
    check: &Check,
    meta: &Meta,
) -> Result<std::result::Result<(), String>> {
    let input = File::open(src).map_err(|e| Error::io("cannot open", src, e))?;
    let mut out = AtomicFile::create(dest)?;
    match hash_buffered(input, &mut out, check, meta) {
        Ok(()) => commit_replace(out, dest).map(Ok),
        Err(VerifyError::Bad(why)) => Ok(Err(why)),
        Err(VerifyError::Write(e)) => Err(Error::io("cannot copy into", dest, e)),
    }
}

/// Waits for the worker's transfer of `name` to complete while its temp
/// keeps growing; returns how long it waited, `None` when the transfer
/// ended without the segment or stalled for `stall`.
fn wait_inflight(b: &Buffer, name: &str, temp: &Path, stall: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut last_size = None;
    let mut last_change = Instant::now();
    loop {
        if b.data_path(name).exists() {
            return Some(start.elapsed());
        }
        match fs::metadata(temp) {
            Ok(m) => {
                if last_size != Some(m.len()) {
                    last_size = Some(m.len());
                    last_change = Instant::now();
                } else if last_change.elapsed() > stall {
                    return None;
                }
            }
            // Renamed into place (checked next round) or given up.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(2));
                return b.data_path(name).exists().then(|| start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

enum HostsError {
    TooYoung { mtime: i64, seg_size: Option<u64> },
    Unavailable(Unavailable),
}

impl From<Error> for HostsError {
    fn from(e: Error) -> Self {
        HostsError::Unavailable(Unavailable::Local(e))
    }
}

/// Tries the hosts in health order until one delivers a good copy.
async fn from_hosts(
    cfg: &Config,
    req: &RestoreRequest,
    check: &Check,
    dest: &Path,
    not_after: Option<i64>,
    on_found: &dyn Fn(i64),
) -> std::result::Result<(String, fetch::Fetched), HostsError> {
    let health = HealthBook::open(&cfg.state_dir().join("health"))?;
    let ssh = SshSettings::from_config(cfg);
    let name = check.name.as_str();
    let mut attempts: Vec<(String, Attempt)> = Vec::new();
    for (host, cooling) in order_hosts(&health, &req.hosts) {
        // In archive recovery a "not available" ends recovery (and a
        // promotion may follow with data missing): a host in cooldown is
        // still asked, only later. A standby just asks again later.
        let may_skip = req.mode != RecoveryMode::ArchiveRecovery;
        if let Some(st) = cooling.as_ref().filter(|_| may_skip) {
            let answered = attempts
                .iter()
                .any(|(_, a)| matches!(a, Attempt::NotFound | Attempt::Bad(_)));
            // A standby retries anyway: a host in cooldown is not worth its
            // timeout once another answered. Archive recovery asks it all
            // the same: it may be back, and only its answer can tell "end
            // of the archive" from "stop, WAL may be missing".
            if answered && req.mode != RecoveryMode::ArchiveRecovery {
                attempts.push((
                    host,
                    Attempt::Skipped(format!(
                        "in cooldown for {} s after {} failures: {}",
                        st.cooldown_until - health::now(),
                        st.failures,
                        st.last_error
                    )),
                ));
                continue;
            }
        }
        let mut ch = match ssh::connect(&ssh, &host).await {
            Ok(c) => c,
            Err(e) => {
                host_failed(cfg, &health, &host, name, &e);
                attempts.push((host, Attempt::Failed(e.to_string())));
                continue;
            }
        };
        let out = AtomicFile::create(dest)?;
        let res = fetch::fetch(&mut ch, &req.src_dir, check, out, on_found).await;
        let usable = res
            .as_ref()
            .map_or_else(FetchError::channel_usable, |_| true);
        match res {
            Ok((out, fetched)) => {
                let _ = health.record_success(&host);
                ch.leave().await;
                if not_after.is_some_and(|t| fetched.mtime > t) {
                    // Verified, but not to be handed over yet (the temp goes).
                    drop(out);
                    return Err(HostsError::TooYoung {
                        mtime: fetched.mtime,
                        seg_size: fetched.verified.seg_size,
                    });
                }
                commit_replace(out, dest)?;
                return Ok((host, fetched));
            }
            Err(FetchError::NotFound) => {
                let _ = health.record_success(&host);
                attempts.push((host, Attempt::NotFound));
            }
            Err(FetchError::Bad(m)) => {
                let _ = health.record_success(&host);
                log::error(format!(
                    "the copy of {name} on {host} is bad: {m}; trying the other host"
                ));
                attempts.push((host, Attempt::Bad(m)));
            }
            Err(FetchError::Refused(e)) => {
                log::error(format!("{name}: {host} refused the request: {e}"));
                attempts.push((host, Attempt::Failed(e.to_string())));
            }
            Err(FetchError::Host(e)) => {
                host_failed(cfg, &health, &host, name, &e);
                attempts.push((host, Attempt::Failed(e.to_string())));
            }
            Err(FetchError::Local(e)) => {
                ch.leave().await;
                return Err(e.into());
            }
        }
        if usable {
            ch.leave().await;
        }
    }
    if attempts.iter().all(|(_, a)| !a.is_failure()) {
        Err(HostsError::Unavailable(Unavailable::NotFound))
    } else {
        Err(HostsError::Unavailable(Unavailable::Failed(attempts)))
    }
}

fn host_failed(cfg: &Config, health: &HealthBook, host: &str, name: &str, e: &Error) {
    let msg = e.to_string();
    let cooling = match health.record_failure(host, cfg.retry_count, cfg.cooldown, &msg) {
        Ok(st) if st.in_cooldown(health::now()) => format!(
            "; {host} is tried last for {} s after {} consecutive failures",
            st.cooldown_until - health::now(),
            st.failures
        ),
        _ => String::new(),
    };
    log::warn(format!(
        "fetching {name} from {host} failed: {msg}{cooling}"
    ));
}

/// Writes the buffer record of a fetched segment (used by the worker).
pub(crate) fn meta_for(
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
    use super::*;

    #[test]
    fn exit_codes_by_mode() {
        use RecoveryMode::*;
        let failed = || {
            Unavailable::Failed(vec![
                ("arch1".into(), Attempt::Failed("connection refused".into())),
                ("arch2".into(), Attempt::NotFound),
            ])
        };
        let young = Unavailable::TooYoung {
            archived: 0,
            ready_at: 1,
        };
        // Plain "not available" is 1 everywhere.
        for m in [Standby, ArchiveRecovery, Unknown] {
            assert_eq!(exit_code(m, &Unavailable::NotFound), 1);
            assert_eq!(exit_code(m, &young), 1);
        }
        // A failed host: a standby retries, archive recovery stops.
        assert_eq!(exit_code(Standby, &failed()), 1);
        assert_eq!(exit_code(Unknown, &failed()), 1);
        assert_eq!(exit_code(ArchiveRecovery, &failed()), EXIT_STOP_RECOVERY);
        let bad = Unavailable::Failed(vec![
            ("arch1".into(), Attempt::Bad("x".into())),
            ("arch2".into(), Attempt::Bad("y".into())),
        ]);
        assert_eq!(exit_code(ArchiveRecovery, &bad), EXIT_STOP_RECOVERY);
        assert_eq!(exit_code(Standby, &bad), 1);
        let usage = || Unavailable::Local(Error::Usage("bad".into()));
        assert_eq!(exit_code(Standby, &usage()), 2);
        assert_eq!(exit_code(ArchiveRecovery, &usage()), EXIT_STOP_RECOVERY);
        // Above 125 (fatal for PostgreSQL) and clear of shell conventions.
        const { assert!(EXIT_STOP_RECOVERY > 125 && EXIT_STOP_RECOVERY > 128 + 64) };
        // The message names both hosts.
        let text = bad.to_string();
        assert!(text.contains("arch1") && text.contains("arch2"), "{text}");
    }

    #[test]
    fn recovery_mode_from_signal_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(RecoveryMode::detect(d.path()), RecoveryMode::Unknown);
        fs::write(d.path().join("recovery.signal"), "").unwrap();
        assert_eq!(
            RecoveryMode::detect(d.path()),
            RecoveryMode::ArchiveRecovery
        );
        fs::write(d.path().join("standby.signal"), "").unwrap();
        assert_eq!(RecoveryMode::detect(d.path()), RecoveryMode::Standby);
    }

    #[test]
    fn host_order_puts_cooling_hosts_last_and_resets_when_all_cool() {
        let d = tempfile::tempdir().unwrap();
        let book = HealthBook::open(d.path()).unwrap();
        let hosts: Vec<String> = vec!["arch1".into(), "arch2".into()];
        let names = |v: Vec<(String, Option<HostState>)>| {
            v.into_iter()
                .map(|(h, s)| (h, s.is_some()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(order_hosts(&book, &hosts)),
            [("arch1".into(), false), ("arch2".into(), false)]
        );
        book.record_failure("arch1", 1, 600, "down").unwrap();
        assert_eq!(
            names(order_hosts(&book, &hosts)),
            [("arch2".into(), false), ("arch1".into(), true)]
        );
        book.record_failure("arch2", 1, 600, "down").unwrap();
        // Both cooling: counters reset, configured order, nobody skipped.
        assert_eq!(
            names(order_hosts(&book, &hosts)),
            [("arch1".into(), false), ("arch2".into(), false)]
        );
        assert_eq!(book.state("arch1"), HostState::default());
        assert_eq!(book.state("arch2"), HostState::default());
    }

    fn data_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("PG_VERSION"), "15\n").unwrap();
        fs::create_dir(d.path().join("pg_wal")).unwrap();
        d
    }

    fn request(d: &Path, name: &str, delay: Option<u64>) -> RestoreRequest {
        RestoreRequest {
            hosts: vec!["nohost".into()],
            src_dir: "/archive/main".into(),
            name: name.into(),
            dest: d.join("pg_wal/RECOVERYXLOG"),
            delay,
            data_dir: d.to_path_buf(),
            mode: RecoveryMode::Standby,
            worker_args: Vec::new(),
        }
    }

    /// Puts `bytes` in the buffer of `d` as a worker would.
    fn buffer_segment(cfg: &Config, d: &Path, name: &str, bytes: &[u8], mtime: i64) -> Buffer {
        let b = Buffer::for_data_dir(cfg, d).unwrap();
        b.ensure().unwrap();
        b.write_meta(
            name,
            &Meta {
                size: bytes.len() as u64,
                digest: verify::content_digest(bytes),
                mtime,
                host: "arch2".into(),
                codec: Codec::Zstd,
                src_dir: "/archive/main".into(),
                file: None,
            },
        )
        .unwrap();
        fs::write(b.data_path(name), bytes).unwrap();
        b
    }

    fn no_worker_cfg(d: &Path) -> Config {
        Config {
            // Nothing to reach: a miss would try "nohost" and fail.
            connect_timeout: 1,
            state_dir: Some(d.join("state")),
            runtime_dir: Some(d.join("run")),
            restore_queue_max: crate::common::config::ByteSize(0),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn served_from_the_buffer_after_checking_it() {
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let r = restore(&cfg, &request(d.path(), name, None)).await.unwrap();
        assert!(matches!(r.source, Source::Buffer { ref host, .. } if host == "arch2"));
        assert_eq!(fs::read(d.path().join("pg_wal/RECOVERYXLOG")).unwrap(), seg);
        assert!(!b.data_path(name).exists(), "moved, not copied");
        assert!(b.read_meta(name).is_none());
    }

    #[tokio::test]
    async fn a_tampered_buffered_segment_is_never_handed_over() {
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let mut bad = seg.clone();
        bad[500_000] ^= 1;
        fs::write(b.data_path(name), &bad).unwrap();
        let e = restore(&cfg, &request(d.path(), name, None))
            .await
            .unwrap_err();
        assert!(matches!(e, Unavailable::Failed(_)), "{e}");
        assert!(!d.path().join("pg_wal/RECOVERYXLOG").exists());
        assert!(!b.data_path(name).exists(), "dropped from the buffer");
        // Another segment's bytes under this name (record matching them).
        let other = verify::tests::segment("000000010000000000000006");
        buffer_segment(&cfg, d.path(), name, &other, 0);
        assert!(restore(&cfg, &request(d.path(), name, None)).await.is_err());
        assert!(!d.path().join("pg_wal/RECOVERYXLOG").exists());
    }

    #[tokio::test]
    async fn a_record_of_an_older_version_is_not_trusted() {
        // Records used to carry a blake3 of the bytes: such a leftover reads
        // (serde alias) but never matches, so the segment is dropped, not
        // served or left to block the buffer.
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let old = format!(
            r#"{{"size":{},"blake3":"{}","mtime":0,"host":"arch2","codec":"zstd","src_dir":"/archive/main"}}"#,
            seg.len(),
            blake3::hash(&seg).to_hex()
        );
        fs::write(b.dir().join(format!("{name}.meta")), old).unwrap();
        assert!(b.read_meta(name).is_some(), "the old record parses");
        refused_and_dropped(&cfg, d.path(), &b, name).await;
    }

    /// A call for buffered `name` fails, with nothing at %p, and the
    /// buffered file is gone.
    async fn refused_and_dropped(cfg: &Config, d: &Path, b: &Buffer, name: &str) {
        assert!(restore(cfg, &request(d, name, None)).await.is_err());
        assert!(!d.join("pg_wal/RECOVERYXLOG").exists());
        assert!(!b.data_path(name).exists(), "dropped from the buffer");
    }

    /// Records the identity of `name`'s buffered file as the worker does,
    /// then lets the test `edit` the record.
    fn record_identity(b: &Buffer, name: &str, edit: impl FnOnce(&mut Meta)) -> Meta {
        let mut meta = b.read_meta(name).unwrap();
        meta.file = FileId::of(&File::open(b.data_path(name)).unwrap());
        assert!(meta.file.is_some(), "no boot id on this machine");
        edit(&mut meta);
        b.write_meta(name, &meta).unwrap();
        meta
    }

    /// Flips one byte of `path` in place, then sets its mtime to `mtime`.
    fn flip_byte(path: &Path, mtime: std::time::SystemTime) {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut byte = [0u8];
        f.seek(SeekFrom::Start(500_000)).unwrap();
        f.read_exact(&mut byte).unwrap();
        f.seek(SeekFrom::Start(500_000)).unwrap();
        f.write_all(&[byte[0] ^ 1]).unwrap();
        f.set_modified(mtime).unwrap();
    }

    /// The mtime a record holds, as a time to set.
    fn recorded_mtime(meta: &Meta) -> std::time::SystemTime {
        let id = meta.file.as_ref().unwrap();
        std::time::UNIX_EPOCH + Duration::new(id.mtime_sec as u64, id.mtime_nsec as u32)
    }

    #[tokio::test]
    async fn an_unchanged_buffered_file_is_not_read_again() {
        // The record's digest is wrong on purpose: a file whose identity is
        // the recorded one is served on that and its page header, without
        // reading its 16 MiB again on PostgreSQL's critical path.
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        record_identity(&b, name, |m| m.digest = "0".repeat(32));
        restore(&cfg, &request(d.path(), name, None)).await.unwrap();
        assert_eq!(fs::read(d.path().join("pg_wal/RECOVERYXLOG")).unwrap(), seg);
    }

    #[tokio::test]
    async fn an_unchanged_file_holding_another_segment_is_refused() {
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let other = verify::tests::segment("000000010000000000000006");
        let b = buffer_segment(&cfg, d.path(), name, &other, 0);
        record_identity(&b, name, |_| {});
        refused_and_dropped(&cfg, d.path(), &b, name).await;
    }

    #[tokio::test]
    async fn a_buffered_file_changed_after_its_record_is_hashed_again() {
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let path = |b: &Buffer| b.data_path(name);
        // Written to later (a write moves the mtime: here set explicitly,
        // as file systems with coarse timestamps may keep it within a tick).
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let meta = record_identity(&b, name, |_| {});
        flip_byte(&path(&b), recorded_mtime(&meta) + Duration::from_secs(1));
        refused_and_dropped(&cfg, d.path(), &b, name).await;
        // Replaced by a changed copy whose mtime was set back: another inode.
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let meta = record_identity(&b, name, |_| {});
        let copy = b.dir().join("copy");
        fs::copy(path(&b), &copy).unwrap();
        flip_byte(&copy, recorded_mtime(&meta));
        fs::rename(&copy, path(&b)).unwrap();
        refused_and_dropped(&cfg, d.path(), &b, name).await;
        // Truncated, mtime set back: its page header still declares the
        // recorded size, only the file's size tells.
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let meta = record_identity(&b, name, |_| {});
        let f = fs::OpenOptions::new().write(true).open(path(&b)).unwrap();
        f.set_len(seg.len() as u64 - 8192).unwrap();
        f.set_modified(recorded_mtime(&meta)).unwrap();
        refused_and_dropped(&cfg, d.path(), &b, name).await;
    }

    #[tokio::test]
    async fn a_leftover_from_before_a_reboot_is_hashed_again() {
        // Its bytes went through the disk, which keeps no checksums: a
        // flipped bit there leaves the identity as it was.
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let meta = record_identity(&b, name, |m| {
            m.file.as_mut().unwrap().boot = "an earlier boot".into()
        });
        flip_byte(&b.data_path(name), recorded_mtime(&meta));
        let mut now = FileId::of(&File::open(b.data_path(name)).unwrap()).unwrap();
        now.boot = "an earlier boot".into();
        assert_eq!(meta.file.as_ref(), Some(&now), "identity kept");
        refused_and_dropped(&cfg, d.path(), &b, name).await;
    }

    #[tokio::test]
    async fn a_buffer_on_another_file_system_is_copied_and_checked_on_the_way() {
        // /dev/shm (tmpfs) is another file system than the data directory's
        // (the temp dir's): a hit copies instead of renaming, and the copy
        // reads every byte, so they are checked whatever the identity says.
        let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs)");
        let d = data_dir();
        let mut cfg = no_worker_cfg(d.path());
        cfg.restore_buffer_dir = Some(shm.path().to_path_buf());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        assert!(b.dir().starts_with(shm.path()));
        {
            use std::os::unix::fs::MetadataExt;
            let dev = |p: &Path| fs::metadata(p).unwrap().dev();
            assert_ne!(dev(b.dir()), dev(d.path()), "not another file system");
        }
        record_identity(&b, name, |_| {});
        restore(&cfg, &request(d.path(), name, None)).await.unwrap();
        assert_eq!(fs::read(d.path().join("pg_wal/RECOVERYXLOG")).unwrap(), seg);
        assert!(!b.data_path(name).exists(), "taken from the buffer");
        // (The records this test rewrote stay as temps of this process.)
        let left: Vec<String> = fs::read_dir(b.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            left.iter().all(|n| !n.contains(".claim-")),
            "a claim left: {left:?}"
        );
        // A change the identity cannot see is caught by the copy.
        fs::remove_file(d.path().join("pg_wal/RECOVERYXLOG")).unwrap();
        let b = buffer_segment(&cfg, d.path(), name, &seg, 0);
        let meta = record_identity(&b, name, |_| {});
        flip_byte(&b.data_path(name), recorded_mtime(&meta));
        refused_and_dropped(&cfg, d.path(), &b, name).await;
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

    #[tokio::test]
    async fn a_buffered_segment_waits_for_its_delay() {
        let d = data_dir();
        let cfg = no_worker_cfg(d.path());
        let name = "000000010000000000000005";
        let seg = verify::tests::segment(name);
        let b = buffer_segment(&cfg, d.path(), name, &seg, health::now() - 10);
        let e = restore(&cfg, &request(d.path(), name, Some(3600)))
            .await
            .unwrap_err();
        assert!(matches!(e, Unavailable::TooYoung { .. }), "{e}");
        assert!(b.data_path(name).exists(), "kept for later");
        assert_eq!(b.read_notice(), name, "logged once");
        let r = restore(&cfg, &request(d.path(), name, Some(5)))
            .await
            .unwrap();
        assert_eq!(r.size, seg.len() as u64);
    }

    #[tokio::test]
    async fn manual_directory_comes_first_and_bad_files_there_are_skipped() {
        let d = data_dir();
        let manual = tempfile::tempdir().unwrap();
        let mut cfg = no_worker_cfg(d.path());
        cfg.restore_manual_dir = Some(manual.path().to_path_buf());
        let name = "000000010000000000000009";
        let seg = verify::tests::segment(name);
        fs::write(manual.path().join(name), verify::tests::zstd(&seg)).unwrap();
        let r = restore(&cfg, &request(d.path(), name, None)).await.unwrap();
        assert!(matches!(r.source, Source::Manual(_)));
        assert_eq!(r.codec, Codec::Zstd);
        assert_eq!(fs::read(d.path().join("pg_wal/RECOVERYXLOG")).unwrap(), seg);
        // A wrong file there is not used (and the unreachable host fails).
        fs::write(manual.path().join(name), &seg[..1000]).unwrap();
        fs::remove_file(d.path().join("pg_wal/RECOVERYXLOG")).unwrap();
        assert!(restore(&cfg, &request(d.path(), name, None)).await.is_err());
        assert!(!d.path().join("pg_wal/RECOVERYXLOG").exists());
    }

    #[test]
    fn restore_settings_are_checked() {
        let cfg = Config {
            restore_parallel: 0,
            ..Config::default()
        };
        assert!(Settings::from_config(&cfg).is_err());
        let s = Settings::from_config(&Config::default()).unwrap();
        assert_eq!(s.queue_max, 256 << 20);
        assert!(s.prefetch);
    }
}
