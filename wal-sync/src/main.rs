//! wal-sync: run on an archive server (by base-backup, or by hand after an
//! outage) to make it and its peer hold the same WAL, both directions.

use std::path::PathBuf;
use std::process::ExitCode;

use archive_core::client::sync::{self, SyncOptions};
use archive_core::common::cli::{self, ConfigArgs};
use archive_core::common::error::{EXIT_CONFLICT, EXIT_RETRY};
use archive_core::common::log;
use archive_core::Error;
use clap::Parser;

const AFTER_HELP: &str = "\
Runs on an archive server, with that server's config (archive_roots,
ssh_config to reach the peer, server_name). Files are copied as stored (no
recompression); the receiving side verifies each copy (size, checksum,
decoding, WAL header, system identifier) before it becomes visible.
Same-named files with different content are reported and never overwritten.

Exit codes:
  0  both sides hold the same files
  1  some copies failed, or the peer could not be reached: run again
  2  bad usage or configuration
  3  refused (e.g. WALS-DIR not under archive_roots)
  4  divergent files found (same name, different content), or another
     wal-sync holds the lock";

/// Bidirectional WAL sync between this archive server and its peer.
#[derive(Parser, Debug)]
#[command(name = "wal-sync", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only report what would be copied.
    #[arg(long)]
    dry_run: bool,
    /// Also compare same-named files of equal size by content (reads all).
    #[arg(long)]
    checksum: bool,
    /// Archive directory of the cluster (the same path on both servers).
    wals_dir: PathBuf,
    /// The peer archive server (ssh alias).
    remote_archive: String,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    log::init("wal-sync", log::LogLevel::Info);
    cli::exit(run(&args), None)
}

fn run(args: &Args) -> Result<i32, Error> {
    let cfg = args.config.load()?;
    archive_core::common::names::validate_host_name(&args.remote_archive)?;
    // Copies decode and hash each file to verify it: use every core.
    let rt = cli::runtime_all_cores()?;
    let opts = SyncOptions {
        dry_run: args.dry_run,
        checksum: args.checksum,
    };
    let report = rt.block_on(sync::wal_sync(
        &cfg,
        &args.wals_dir,
        &args.remote_archive,
        &opts,
    ))?;
    Ok(if !report.divergent.is_empty() {
        EXIT_CONFLICT
    } else if !report.failed.is_empty() {
        EXIT_RETRY
    } else {
        0
    })
}
