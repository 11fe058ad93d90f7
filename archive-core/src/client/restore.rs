//! restore-cmd: PostgreSQL's restore_command (what one call does for one
//! %f). This file holds the entry point [`restore`], the request and its
//! outcomes; each source and concern has its own file under `restore/`:
//!
//! - Sources, in order: the local manual directory (`from_manual`), the
//!   prefetch buffer (`from_buffer`), then the hosts in health order
//!   (`from_hosts`, `order_hosts`): a host in cooldown is tried last, and
//!   on a standby skipped when another host already answered (archive
//!   recovery asks it all the same); "not found" is an answer, not a
//!   failure; when every host is in cooldown the counters are reset rather
//!   than waiting for them.
//! - Every copy is decoded by sniffing and verified before it reaches %p
//!   ([`verify`]; [`fetch`] streams it from a host); a bad copy on one host
//!   means the other host's copy.
//! - %p is written as a temp file in its directory, fsynced, then renamed:
//!   nothing partial is ever at %p, also after SIGKILL.
//! - DELAY-SECONDS: a file archived less than that long ago is "not
//!   available" yet, with one log line per file, not one per retry.
//! - Prefetch ([`prefetch`], [`buffer`]): serving segment N (or finding it
//!   on a host, before downloading it, when pg_control gives the segment
//!   size) records the request in the buffer and makes sure the buffer's
//!   worker runs; it fetches N+1, N+2, … in parallel, and later calls are
//!   served from the buffer after the buffered file is checked against its
//!   record (SRC-DIR; the file's identity, else every byte against its
//!   digest; page header, system identifier).
//! - Exit codes ([`exit_code`], in `recovery_mode`): 1 for "not
//!   available"; in archive recovery (recovery.signal without
//!   standby.signal), when a host failed and no host had the file,
//!   [`EXIT_STOP_RECOVERY`] (200): PostgreSQL treats a code above 125 as
//!   fatal and stops instead of ending recovery early and promoting with
//!   WAL missing.

pub mod buffer;
pub(crate) mod fetch;
mod from_buffer;
mod from_hosts;
mod from_manual;
pub mod prefetch;
mod recovery_mode;
pub mod verify;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use self::buffer::Buffer;
use self::from_buffer::{from_buffer, FromBuffer};
use self::from_hosts::{from_hosts, HostsError};
use self::from_manual::from_manual;
use self::verify::Check;
use crate::common::codec::Codec;
use crate::common::config::Config;
use crate::common::durable::{self, AtomicFile, Commit};
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::common::names::validate_dir_arg;
use crate::common::wal::{WalKind, WalName};
use crate::net::health;

pub(crate) use self::from_hosts::order_hosts;
pub use self::recovery_mode::{exit_code, NotRestored, RecoveryMode, EXIT_STOP_RECOVERY};

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

/// The restore settings of a configuration, checked.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
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
    pub(crate) fn from_config(cfg: &Config) -> Result<Settings> {
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
        proof: None,
    };
    let not_after = req.delay.map(|d| health::now() - d as i64);
    let buffer = Buffer::for_data_dir(cfg, &req.data_dir).filter(|_| settings.prefetch);

    // 1. The manual directory.
    if let Some(dir) = &cfg.restore_manual_dir {
        if let Some(r) = from_manual(dir, &check, &dest)? {
            prefetch::record_request(&settings, buffer.as_ref(), req, &name, r.size, sysid, false);
            return Ok(r);
        }
    }

    // 2. The prefetch buffer (segments only).
    if let Some(b) = buffer.as_ref().filter(|_| name.kind() == WalKind::Segment) {
        // The request moves on once the segment is claimed: earlier, the
        // worker would drop the segment as no longer wanted before the
        // claim (a needless download from the hosts). A claimed segment
        // counts as present for the worker, so it is not fetched again.
        let after_claim = |seg_size: u64| {
            prefetch::record_request(&settings, Some(b), req, &name, seg_size, sysid, false)
        };
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
                prefetch::record_request(&settings, Some(b), req, &name, seg_size, sysid, true);
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
        prefetch::record_request(&settings, Some(b), req, &name, seg_size, sysid, too_young);
    };
    match from_hosts(cfg, req, &check, &dest, not_after, &start_prefetch).await {
        Ok((host, fetched)) => {
            let seg = fetched.verified.seg_size.unwrap_or(fetched.verified.size);
            prefetch::record_request(&settings, buffer.as_ref(), req, &name, seg, sysid, false);
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
                        prefetch::record_request(&settings, Some(b), req, &name, seg, sysid, true);
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::buffer::{Buffer, Meta};
    use super::*;

    /// A directory that looks like a data directory (PG_VERSION, pg_wal).
    pub(super) fn data_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("PG_VERSION"), "15\n").unwrap();
        fs::create_dir(d.path().join("pg_wal")).unwrap();
        d
    }

    pub(super) fn request(d: &Path, name: &str, delay: Option<u64>) -> RestoreRequest {
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
    pub(super) fn buffer_segment(
        cfg: &Config,
        d: &Path,
        name: &str,
        bytes: &[u8],
        mtime: i64,
    ) -> Buffer {
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

    /// A configuration that starts no worker and reaches no host.
    pub(super) fn no_worker_cfg(d: &Path) -> Config {
        Config {
            // Nothing to reach: a miss would try "nohost" and fail.
            connect_timeout: 1,
            state_dir: Some(d.join("state")),
            runtime_dir: Some(d.join("run")),
            restore_queue_max: crate::common::config::ByteSize(0),
            ..Config::default()
        }
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
