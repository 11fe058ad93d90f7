//! archive-cmd: PostgreSQL's archive_command. Stores each WAL file on two
//! archive servers (the first takes it and forwards it to the second) and
//! exits 0 only once the file is durable on at least one of them.

use std::path::PathBuf;
use std::process::ExitCode;

use archive_core::client::archive::{self, ArchiveRequest, PushOutcome};
use archive_core::common::cli::{self, ConfigArgs};
use archive_core::common::{log, names};
use archive_core::Error;
use clap::Parser;

const AFTER_HELP: &str = "\
postgresql.conf:
  archive_mode = on
  archive_command = 'archive-cmd \"arch1 arch2\" /var/lib/pgarchive/main %p %f main'

Behaviour:
  The file goes to HOST1, which stores it, answers, and forwards it to HOST2
  in the background from a durable owed record (wait_for_forward = true makes
  the call wait for HOST2's copy too). If HOST1
  fails, the same call sends it to HOST2 (which owes HOST1 a copy and delivers
  it when HOST1 is back). After retry_count consecutive failures HOST1 is tried
  last for cooldown seconds. With a backlog of .ready files one call sends the
  next ones in parallel; later calls for them return at once.

Configuration (flat TOML; then PGARCHIVE_<KEY> variables; then --set):
  file from --config, else $PGARCHIVE_CONFIG, else /etc/pgarchive.toml.
  Keys: ssh_config, runtime_dir, state_dir, remote_command, ssh_ciphers, connect_timeout,
  io_timeout, control_persist, retry_count (6), cooldown (600),
  lookahead_threshold, lookahead_max, parallel, push_queue_max (off),
  compress_on_primary (false), compress_level, wait_for_forward (false), quiet.

Exit codes (all below 126, which PostgreSQL would treat as fatal):
  0  stored durably on at least one archive server (or dropped by push_queue_max)
  1  not archived, PostgreSQL keeps the file and retries (servers unreachable,
     or a local error such as an unreadable %p: never dropped for that)
  2  bad usage or configuration
  3  refused: invalid input (file name, directory, empty file, WAL of another cluster)
  4  conflict: a different file with this name is already archived";

/// PostgreSQL archive_command storing WAL on two archive servers over ssh.
#[derive(Parser, Debug)]
#[command(name = "archive-cmd", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Archive hosts in one argument: 'HOST1 HOST2' (or a single host).
    hosts: String,
    /// Archive directory on the servers (DST-DIR).
    dst_dir: String,
    /// %p: path of the file to archive.
    wal_path: PathBuf,
    /// %f: file name.
    wal_name: String,
    /// Unique name of this cluster.
    cluster: String,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    log::init("archive-cmd", log::LogLevel::Warn);
    cli::exit(run(&args).map(|_| 0), Some(&args.wal_name))
}

fn run(args: &Args) -> Result<PushOutcome, Error> {
    let cfg = args.config.load()?;
    let req = ArchiveRequest {
        hosts: names::parse_hosts(&args.hosts)?,
        dst_dir: args.dst_dir.clone(),
        wal_path: args.wal_path.clone(),
        name: args.wal_name.clone(),
        cluster: args.cluster.clone(),
    };
    cli::runtime()?.block_on(archive::archive(&cfg, &req))
}
