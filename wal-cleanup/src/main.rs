//! wal-cleanup: run on an archive server (by base-backup, or by hand) to
//! remove, on both servers, the WAL no kept backup needs.

use std::path::PathBuf;
use std::process::ExitCode;

use archive_core::client::cleanup::{self, CleanupOptions};
use archive_core::common::cli::{self, ConfigArgs};
use archive_core::common::log;
use archive_core::Error;
use clap::Parser;

const AFTER_HELP: &str = "\
Reads the earliest START WAL of the complete backups (data.master.N with a
SUCCESS marker, or an Archive 2.0 backup; by LSN, not by N: after a
point-in-time recovery a newer backup can start below an older one) in
BACKUP-DIR here and on the peer, and removes on both servers only files
strictly older by log/segment number (any timeline); .history files stay.
A server without a backup yet does not hold the other back, but each
server's BACKUP-DIR must be provably the cluster's (its identity marker
pgarchive-backup-dir.json, written by base-backup, or a complete backup):
a missing, unmounted or empty unmarked directory stops it. It aborts
without deleting anything when a directory is not proven or is marked for
another database system, a label is missing or unreadable, the peer cannot
be read, or the needed segment is on neither server.

Exit codes:
  0  done (or nothing to do)
  1  the peer could not be reached (after one retry): nothing or only part removed, run again
  2  bad usage or configuration
  3  refused: a backup directory not proven (missing, unmounted, unmarked) or
     of another system, unreadable label, needed segment missing, or paths
     not under archive_roots
  4  another wal-cleanup holds the lock (its holder is named)";

/// Removes WAL older than the oldest backup on either archive server.
#[derive(Parser, Debug)]
#[command(name = "wal-cleanup", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only report what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Backup directory of the cluster (the same path on both servers).
    backup_dir: PathBuf,
    /// Archive directory of the cluster's WAL (the same path on both).
    wals_dir: PathBuf,
    /// The peer archive server (ssh alias).
    remote_archive: String,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    log::init("wal-cleanup", log::LogLevel::Info);
    cli::exit(run(&args).map(|()| 0), None)
}

fn run(args: &Args) -> Result<(), Error> {
    let cfg = args.config.load()?;
    archive_core::common::names::validate_host_name(&args.remote_archive)?;
    let rt = cli::runtime()?;
    let opts = CleanupOptions {
        dry_run: args.dry_run,
        unproven_keeps_all: false,
    };
    rt.block_on(cleanup::wal_cleanup(
        &cfg,
        &args.backup_dir,
        &args.wals_dir,
        &args.remote_archive,
        &opts,
    ))
    .map(drop)
}
