//! restore-cmd: PostgreSQL's restore_command. Fetches a WAL file from one of
//! the two archive servers (or the local prefetch buffer), verifies it, and
//! puts it at %p; exits 0 only when %p holds the exact original file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use archive_core::client::restore::{
    self, prefetch, NotRestored, RecoveryMode, RestoreRequest, Source, Unavailable,
    EXIT_STOP_RECOVERY,
};
use archive_core::common::cli::{self, ConfigArgs};
use archive_core::common::error::{Failure, EXIT_USAGE};
use archive_core::common::{log, names};
use archive_core::Error;
use clap::Parser;

const AFTER_HELP: &str = "\
postgresql.conf of a log-shipping standby (with standby.signal):
  restore_command = 'restore-cmd \"arch1 arch2\" /var/lib/pgarchive/main %f %p'
  delayed by an hour:
  restore_command = 'restore-cmd \"arch1 arch2\" /var/lib/pgarchive/main %f %p 3600'

Behaviour:
  Looks in restore_manual_dir (if set), then in the prefetch buffer, then on
  the hosts: healthy ones first; a host that failed retry_count times in a row
  is tried last for cooldown seconds (on a standby, skipped when another host
  answered); \"not found\" is not a failure; when every host is in cooldown
  the counters are reset. The copy is decompressed by sniffing its content
  (zstd, gzip, bzip2 including pbzip2's multi-stream files, plain) and
  verified (segments: WAL page header matching the name, system identifier of
  this data directory, exact segment size; history files: decode and not
  empty); a bad copy means the other host's copy. %p is written to a temp
  file next to it, fsynced and renamed: it is complete or absent, also if this
  process is killed.
  DELAY-SECONDS: only files archived at least that long ago are handed over
  (one log line per waiting file).
  Prefetch: a request for segment N starts a background worker (one per
  data directory; as soon as a host has N) that fetches N+1, N+2, ... in
  parallel into pg_wal/.restore-prefetch (or restore_buffer_dir), bounded by
  restore_queue_max; later calls take the file from there after checking it
  against the worker's record (the file unchanged since: same inode, size,
  mtime and boot, else its digest; header, system identifier). A restored
  history file or a segment of another timeline empties the buffer.
  The worker leaves after restore_prefetch_idle seconds without a request.

Configuration (flat TOML; then PGARCHIVE_<KEY> variables; then --set):
  file from --config, else $PGARCHIVE_CONFIG, else /etc/pgarchive.toml.
  Keys: ssh_config, runtime_dir, state_dir, remote_command, connect_timeout,
  io_timeout, control_persist, retry_count (6), cooldown (600), quiet,
  restore_manual_dir (unset), restore_prefetch (true),
  restore_queue_max (256MiB), restore_parallel (3), restore_prefetch_idle (60),
  restore_buffer_dir (unset: <data dir>/pg_wal/.restore-prefetch).

Exit codes:
  0    %p holds the file, verified
  1    not available (not archived yet, too recent for DELAY-SECONDS, or hosts
       failed while this is a standby): PostgreSQL retries, or ends recovery
  2    bad usage or configuration (standby)
  3    refused: invalid file name (standby)
  200  archive recovery (recovery.signal without standby.signal) and a host
       FAILED (unreachable, bad copy) while no host had the file, or a local
       error: answering 'not available' would end the point-in-time recovery
       early and promote with WAL possibly missing, so PostgreSQL is told to
       stop instead (any code above 125 is fatal to its startup process).
       Bring the host back, or name only the hosts you trust in
       restore_command, then start PostgreSQL again. A standby in the same
       situation gets 1 and simply retries.";

/// PostgreSQL restore_command fetching WAL from two archive servers over ssh.
#[derive(Parser, Debug)]
#[command(name = "restore-cmd", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Internal: run as the prefetch worker of this buffer directory.
    #[arg(long = "prefetch-worker", value_name = "DIR", hide = true)]
    prefetch_worker: Option<PathBuf>,
    /// Archive hosts in one argument: 'HOST1 HOST2' (or a single host).
    #[arg(required_unless_present = "prefetch_worker")]
    hosts: Option<String>,
    /// Archive directory on the servers (SRC-DIR).
    #[arg(required_unless_present = "prefetch_worker")]
    src_dir: Option<String>,
    /// %f: the file PostgreSQL wants.
    #[arg(required_unless_present = "prefetch_worker")]
    wal_name: Option<String>,
    /// %p: where to put it (relative to the data directory).
    #[arg(required_unless_present = "prefetch_worker")]
    wal_path: Option<PathBuf>,
    /// Hand over only files archived at least this many seconds ago.
    #[arg(value_name = "DELAY-SECONDS")]
    delay: Option<u64>,
}

fn main() -> ExitCode {
    // PostgreSQL runs restore_command in the data directory.
    let data_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mode = RecoveryMode::detect(&data_dir);
    let args = match cli::try_parse::<Args>() {
        Ok(a) => a,
        Err(error) => return cli::exit(Err(BadArguments { error, mode }), None),
    };
    if let Some(dir) = &args.prefetch_worker {
        log::init("restore-cmd prefetch", log::LogLevel::Warn);
        return cli::exit(worker(&args, dir).map(|()| 0), Some("prefetch worker"));
    }
    log::init("restore-cmd", log::LogLevel::Warn);
    let name = args.wal_name.clone().unwrap_or_default();
    cli::exit(run(&args, data_dir, mode), Some(&name))
}

/// Arguments clap refused (or `--help`/`--version`, which clap reports the
/// same way). In archive recovery a bad restore_command must stop
/// PostgreSQL, not look like "not available".
struct BadArguments {
    error: clap::Error,
    mode: RecoveryMode,
}

impl fmt::Display for BadArguments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl Failure for BadArguments {
    fn exit_code(&self) -> i32 {
        if !self.error.use_stderr() {
            0 // --help, --version
        } else if self.mode == RecoveryMode::ArchiveRecovery {
            EXIT_STOP_RECOVERY
        } else {
            EXIT_USAGE
        }
    }

    fn report(&self, _context: Option<&str>) {
        let _ = self.error.print();
    }
}

fn worker(args: &Args, dir: &Path) -> Result<(), Error> {
    let cfg = args.config.load()?;
    cli::runtime()?.block_on(prefetch::run_worker(&cfg, dir))
}

fn run(args: &Args, data_dir: PathBuf, mode: RecoveryMode) -> Result<i32, NotRestored> {
    let started = Instant::now();
    let name = args.wal_name.clone().unwrap_or_default();
    let restored = (|| -> Result<restore::Restored, Unavailable> {
        let cfg = args.config.load()?;
        let req = RestoreRequest {
            hosts: names::parse_hosts(args.hosts.as_deref().unwrap_or_default())?,
            src_dir: args.src_dir.clone().unwrap_or_default(),
            name: name.clone(),
            dest: args.wal_path.clone().unwrap_or_default(),
            delay: args.delay.filter(|d| *d > 0),
            data_dir,
            mode,
            worker_args: args.config.to_command_line(),
        };
        cli::runtime()?.block_on(restore::restore(&cfg, &req))
    })()
    .map_err(|why| NotRestored { why, mode })?;
    let ms = started.elapsed().as_millis();
    let from = match &restored.source {
        Source::Manual(d) => format!("the manual directory {}", d.display()),
        Source::Buffer { host, waited: None } => {
            format!("the prefetch buffer (fetched from {host})")
        }
        Source::Buffer {
            host,
            waited: Some(w),
        } => format!(
            "the prefetch buffer (fetched from {host}, waited {} ms for the transfer)",
            w.as_millis()
        ),
        Source::Host(h) => h.clone(),
    };
    log::info(format!(
        "restored {name} from {from} ({}, {} bytes, {ms} ms)",
        restored.codec, restored.size
    ));
    Ok(0)
}
