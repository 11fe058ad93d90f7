//! base-backup: the cron job of each archive server. Takes this server's
//! next task from the backup_queue, backs the cluster up with pg_basebackup
//! (tar format, WAL from the archive), verifies it against its manifest,
//! rotates `<directory>/data.master.<N>` (oldest .0), runs wal-cleanup and
//! wal-sync with the peer, and marks the task done.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use archive_core::client::base_backup::{self as job, verify};
use archive_core::common::cli::{self, ConfigArgs};
use archive_core::common::log;
use archive_core::Error;
use clap::Parser;

const AFTER_HELP: &str = "\
cron on each archive server (as the archive's owner, e.g. postgres):
  */10 * * * *  base-backup >> /var/log/pgarchive/base-backup.log 2>&1

Each run: takes a lock (one run per server), asks backups.next_task(server_name);
with a task: pg_basebackup --format=tar --wal-method=none from the task's
host:port into <directory>/data.master.new.<pid>, reading the archives back as
they are written and checking them against backup_manifest (size, CRC32C,
nothing missing or extra, the manifest's checksum), extracts backup_label,
writes SUCCESS, rotates so that keep_backups_cnt backups remain, and those
the cluster's keep_days window needs, and pinned ones (a PINNED file in the
backup; oldest is data.master.0; crash-safe renames), runs wal-cleanup and wal-sync with the
task's other archive server, then backups.stop(task). Any failure leaves the
task unfinished: the next next_task on this server marks it failed, and this
server makes no more backups of that cluster until it is cleared
(select backups.clear(<task id>);).

Configuration (flat TOML; then PGARCHIVE_<KEY> variables; then --set):
  file from --config, else $PGARCHIVE_CONFIG, else /etc/pgarchive.toml.
  Needed: server_name, queue_dsn, archive_roots (directory and wals_dir of
  every task must be under one), state_dir (the lock), ssh_config (the peer).
  Backup keys: backup_compress (client-zstd:1), backup_checkpoint (spread),
  backup_max_rate (none), backup_verify (manifest | pg_verifybackup),
  backup_progress_interval (0: off), backup_wal_maintenance (true), pg_bin_dir.

base-backup --verify DIR checks a stored backup the same way (no queue, no lock).

Exit codes:
  0  backup made and task stopped, or no backup due on this server
  1  the backup failed and may succeed later (pg_basebackup, the queue, the
     peer or the disk failed); the task stays unfinished
  2  bad usage or configuration (no server_name or queue_dsn, bad key)
  3  refused: the backup did not verify, or the task is invalid (directory
     outside archive_roots, bad cluster name, keep_backups_cnt < 1)
  4  another base-backup is running on this server (the message names it);
     nothing was done";

/// Scheduled base backups on an archive server (cron job).
#[derive(Parser, Debug)]
#[command(name = "base-backup", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Do not back up: verify the stored backup in DIR (a data.master.<N>
    /// directory) against its manifest, print its label, exit 0 or 3.
    #[arg(long, value_name = "DIR")]
    verify: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    log::init("base-backup", log::LogLevel::Info);
    match &args.verify {
        Some(dir) => cli::exit(verify_stored(dir), None),
        None => cli::exit(backup_next(&args), None),
    }
}

/// `--verify DIR`: checks a stored backup against its manifest.
fn verify_stored(dir: &Path) -> Result<i32, Error> {
    let v = verify::scan_dir(dir).and_then(|s| verify::check_against_manifest(dir, s))?;
    log::info(format!(
        "{}: verified: {} files, {} bytes of data; backup_label: {}",
        dir.display(),
        v.files,
        v.data_bytes,
        v.label.trim()
    ));
    Ok(0)
}

/// The cron run: the next task of this server, if any.
fn backup_next(args: &Args) -> Result<i32, job::Failed> {
    let cfg = args.config.load().map_err(|error| job::Failed {
        context: String::new(),
        error,
    })?;
    job::run(&cfg).map(|_| 0)
}
