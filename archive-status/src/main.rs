//! archive-status: monitoring of the archive servers, the WAL chain, the
//! backups and the backup queue, as a report (text, JSON, Prometheus) or a
//! Nagios check.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use archive_core::common::cli::{self, ConfigArgs};
use archive_core::common::error::Failure;
use archive_core::common::log;
use archive_core::status::command::{self, CommandOptions, Format, LimitOptions};
use archive_core::status::Level;
use archive_core::Error;
use clap::{Parser, Subcommand};

const AFTER_HELP: &str = "\
What is checked, per archive server: the newest segment and its age (mtime);
the backups and the oldest one's START WAL; the WAL chain from there to the
newest segment, following timelines through the newest timeline's .history
file (a segment missing on every server is a GAP: a restore stops there);
files only this server holds (ONE-SIDED); files it owes its peer, owed files
parked as conflicting, incoming copies rejected as conflicting. Per cluster:
same-named files whose content differs (DIVERGENT; stored sizes compared,
then decoded checksums where they differ, or of all with --checksum). On
the primary (its state_dir): segments dropped by push_queue_max, and the
archive servers' failure counters and cooldowns. From the backup queue:
the last done backup per server against periodicity_days, failed (not
cleared) and stuck (running longer than --stuck-after) tasks.

One cluster:   archive-status --hosts 'arch1 arch2' --wals-dir /var/lib/pgarchive/main \\
                              --backup-dir /var/lib/pgarchive/backups/main [--cluster main]
All clusters:  archive-status --queue-dsn 'host=queue dbname=backup_queue'   (or queue_dsn
               in the config): every enabled cluster of backups.hosts, on its
               archiver1/archiver2 (reached as ssh aliases), wals_dir and directory.

Costs per server and cluster: one List, one ListBackups and one DirStatus
request (whatever the number of files), a Digest of the same-named files of
different stored size, and one Get of the newest timeline's history file.

Outputs: readable text (default); --json (the whole report, for scripts);
--prometheus (text exposition format for node_exporter's textfile collector,
e.g. --prometheus --output /var/lib/node_exporter/pgarchive.prom, written
atomically). Metrics (gauges; labels cluster, server):
  pgarchive_up  pgarchive_status (0..3 as below)  pgarchive_files  pgarchive_stored_bytes
  pgarchive_newest_segment_age_seconds  pgarchive_newest_segment_timestamp_seconds
  pgarchive_wal_chain_segments  pgarchive_wal_gaps  pgarchive_wal_chain_broken
  pgarchive_wal_missing_here_segments  pgarchive_one_sided_segments
  pgarchive_divergent_files{cluster}  pgarchive_unverified_files{cluster}
  pgarchive_owed_segments  pgarchive_parked_conflicts  pgarchive_rejected_copies
  pgarchive_backups  pgarchive_newest_backup_age_seconds  pgarchive_backup_age_seconds
  pgarchive_backup_periodicity_seconds  pgarchive_failed_tasks  pgarchive_stuck_tasks
  pgarchive_running_tasks  pgarchive_dropped_segments{cluster}
  pgarchive_dropped_segments_logged{cluster}  pgarchive_host_failures{server}
  pgarchive_host_in_cooldown{server}  pgarchive_queue_up  pgarchive_status_requests
  pgarchive_status_timestamp_seconds  pgarchive_status_duration_seconds

check: one summary line first (with performance data), then one line per
finding. Default thresholds (a count option N means: at N or more; 0 turns
it off): newest segment older than 1h WARNING, 6h CRITICAL; last backup
older than 1.25 x periodicity WARNING, 2 x CRITICAL (periodicity_days from
the queue, else --periodicity-days); gaps >= 1 CRITICAL; a broken chain
(missing history file, backup off the newest timeline's history) CRITICAL;
divergent >= 1 CRITICAL; dropped >= 1 CRITICAL; failed tasks >= 1 CRITICAL;
one-sided >= 1 WARNING; stuck tasks >= 1 WARNING; owed >= 10 WARNING;
parked + rejected >= 1 WARNING; size-differing files not compared >= 1
WARNING; no complete backup WARNING; a host with failures or in cooldown on
the primary WARNING; a server or the queue that cannot be read UNKNOWN.
The overall level is the worst: CRITICAL > UNKNOWN > WARNING > OK.

Exit codes:
  check:   0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (a server or the queue
           could not be read, or bad usage: Nagios' plugin convention)
  report:  0 the report is complete (whatever it found); 1 a server or the
           queue could not be read (the report is printed anyway); 2 bad
           usage or configuration

Configuration: --config FILE, else $PGARCHIVE_CONFIG, else /etc/pgarchive.toml
(ssh_config, runtime_dir, connect_timeout, io_timeout, queue_dsn, state_dir).
Under a plugin timeout (NRPE: 10 s), bound a dead server's cost with e.g.
--set connect_timeout=3 --set io_timeout=5.";

/// Status of the archive servers, the WAL chain, backups and the queue.
#[derive(Parser, Debug)]
#[command(name = "archive-status", version, after_help = AFTER_HELP)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    config: ConfigArgs,
    /// The cluster's archive servers, as archive-cmd's first argument.
    #[arg(long, value_name = "'HOST1 HOST2'", global = true)]
    hosts: Option<String>,
    /// The cluster's archive directory on the servers (archive-cmd's DST-DIR).
    #[arg(long, value_name = "DIR", global = true)]
    wals_dir: Option<String>,
    /// The cluster's backup directory on the servers (data.master.N).
    #[arg(long, value_name = "DIR", global = true)]
    backup_dir: Option<String>,
    /// Cluster name (default with --hosts: the last part of --wals-dir;
    /// with the queue: only this cluster).
    #[arg(long, value_name = "NAME", global = true)]
    cluster: Option<String>,
    /// The backup_queue database (default: queue_dsn from the config).
    #[arg(long, value_name = "DSN", global = true)]
    queue_dsn: Option<String>,
    /// Where archive-cmd keeps its state on the primary (drop log, host
    /// health); default: state_dir from the config, when it exists.
    #[arg(long, value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long, global = true, conflicts_with = "prometheus")]
    json: bool,
    /// Print the report in Prometheus' text exposition format.
    #[arg(long, global = true)]
    prometheus: bool,
    /// Write the output to FILE atomically (temp file, fsync, rename)
    /// instead of stdout: for node_exporter's textfile collector.
    #[arg(long, value_name = "FILE", global = true)]
    output: Option<PathBuf>,
    /// Compare every same-named file by content (decodes all of them on
    /// every server), not only those whose stored sizes differ.
    #[arg(long, global = true)]
    checksum: bool,
    /// Most same-named files compared by content per cluster.
    #[arg(long, value_name = "N", default_value_t = 1000, global = true)]
    max_digests: usize,
    /// WAL segment size (default: from the backup labels, else the newest
    /// segment, else 16MiB).
    #[arg(long, value_name = "SIZE", global = true)]
    segment_size: Option<String>,
    /// A running backup task older than this is stuck.
    #[arg(long, value_name = "DURATION", default_value = "24h", global = true)]
    stuck_after: String,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(clap::Args, Debug)]
struct LimitArgs {
    /// Newest segment older than this: WARNING (0: off).
    #[arg(long, value_name = "DURATION", default_value = "1h", global = true)]
    newest_age_warn: String,
    /// Newest segment older than this: CRITICAL (0: off).
    #[arg(long, value_name = "DURATION", default_value = "6h", global = true)]
    newest_age_crit: String,
    /// Last backup older than FACTOR x periodicity: WARNING (0: off).
    #[arg(long, value_name = "FACTOR", default_value_t = 1.25, global = true)]
    backup_age_warn: f64,
    /// Last backup older than FACTOR x periodicity: CRITICAL (0: off).
    #[arg(long, value_name = "FACTOR", default_value_t = 2.0, global = true)]
    backup_age_crit: f64,
    /// Periodicity of backups per server when the queue does not say.
    #[arg(long, value_name = "DAYS", default_value_t = 4, global = true)]
    periodicity_days: u32,
    /// Segments missing on every server: WARNING at N.
    #[arg(long, value_name = "N", default_value_t = 0, global = true)]
    gaps_warn: u64,
    /// Segments missing on every server: CRITICAL at N.
    #[arg(long, value_name = "N", default_value_t = 1, global = true)]
    gaps_crit: u64,
    /// Divergent files: CRITICAL at N.
    #[arg(long, value_name = "N", default_value_t = 1, global = true)]
    divergent_crit: u64,
    /// Files only one server holds: WARNING at N.
    #[arg(long, value_name = "N", default_value_t = 1, global = true)]
    one_sided_warn: u64,
    /// Files only one server holds: CRITICAL at N.
    #[arg(long, value_name = "N", default_value_t = 0, global = true)]
    one_sided_crit: u64,
    /// Segments dropped by push_queue_max: CRITICAL at N.
    #[arg(long, value_name = "N", default_value_t = 1, global = true)]
    dropped_crit: u64,
    /// Failed backup tasks: CRITICAL at N.
    #[arg(long, value_name = "N", default_value_t = 1, global = true)]
    failed_crit: u64,
    /// Stuck backup tasks: WARNING at N.
    #[arg(long, value_name = "N", default_value_t = 1, global = true)]
    stuck_warn: u64,
    /// Stuck backup tasks: CRITICAL at N.
    #[arg(long, value_name = "N", default_value_t = 0, global = true)]
    stuck_crit: u64,
    /// Files a server owes its peer: WARNING at N.
    #[arg(long, value_name = "N", default_value_t = 10, global = true)]
    owed_warn: u64,
    /// Files a server owes its peer: CRITICAL at N.
    #[arg(long, value_name = "N", default_value_t = 0, global = true)]
    owed_crit: u64,
    /// Parked conflicts plus rejected copies on a server: WARNING at N.
    #[arg(long, value_name = "N", default_value_t = 1, global = true)]
    conflicts_warn: u64,
    /// Same-named files of different size not compared: WARNING at N.
    #[arg(long, value_name = "N", default_value_t = 1, global = true)]
    unverified_warn: u64,
    /// Consecutive failures of a host on the primary: WARNING at N.
    #[arg(long, value_name = "N", default_value_t = 1, global = true)]
    host_failures_warn: u64,
    /// A server's last `archive-remote-cmd verify` older than this: WARNING
    /// (0: off; a server that never ran one is not warned about).
    #[arg(long, value_name = "DURATION", default_value = "8d", global = true)]
    verify_age_warn: String,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    /// Print the report (default).
    #[command(after_help = AFTER_HELP)]
    Report,
    /// Nagios check: summary line, findings, exit 0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN.
    #[command(after_help = AFTER_HELP)]
    Check,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    log::init("archive-status", log::LogLevel::Warn);
    let check = args.command == Some(Cmd::Check);
    cli::exit(
        run(&args, check).map_err(|error| Failed { error, check }),
        None,
    )
}

/// A run that produced no report. As a Nagios check it still answers on
/// stdout, UNKNOWN.
struct Failed {
    error: Error,
    check: bool,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl Failure for Failed {
    fn exit_code(&self) -> i32 {
        if self.check {
            Level::Unknown.exit_code()
        } else {
            self.error.exit_code()
        }
    }

    fn report(&self, _context: Option<&str>) {
        log::error(self.error.to_string());
        if self.check {
            println!("PGARCHIVE UNKNOWN - {}", self.error);
        }
    }
}

/// Runs the command and prints its output (unless `--output`).
fn run(args: &Args, check: bool) -> Result<i32, Error> {
    let done = command::run(&options(args, check))?;
    print!("{}", done.stdout);
    Ok(done.exit_code)
}

fn options(args: &Args, check: bool) -> CommandOptions {
    let format = if args.json {
        Format::Json
    } else if args.prometheus {
        Format::Prometheus
    } else {
        Format::Text
    };
    let a = &args.limits;
    CommandOptions {
        check,
        config: args.config.config.clone(),
        set: args.config.set.clone(),
        hosts: args.hosts.clone(),
        wals_dir: args.wals_dir.clone(),
        backup_dir: args.backup_dir.clone(),
        cluster: args.cluster.clone(),
        queue_dsn: args.queue_dsn.clone(),
        state_dir: args.state_dir.clone(),
        format,
        output: args.output.clone(),
        checksum: args.checksum,
        max_digests: args.max_digests,
        segment_size: args.segment_size.clone(),
        stuck_after: args.stuck_after.clone(),
        limits: LimitOptions {
            newest_age_warn: a.newest_age_warn.clone(),
            newest_age_crit: a.newest_age_crit.clone(),
            backup_age_warn: a.backup_age_warn,
            backup_age_crit: a.backup_age_crit,
            periodicity_days: a.periodicity_days,
            gaps_warn: a.gaps_warn,
            gaps_crit: a.gaps_crit,
            divergent_crit: a.divergent_crit,
            one_sided_warn: a.one_sided_warn,
            one_sided_crit: a.one_sided_crit,
            dropped_crit: a.dropped_crit,
            failed_crit: a.failed_crit,
            stuck_warn: a.stuck_warn,
            stuck_crit: a.stuck_crit,
            owed_warn: a.owed_warn,
            verify_age_warn: a.verify_age_warn.clone(),
            owed_crit: a.owed_crit,
            conflicts_warn: a.conflicts_warn,
            unverified_warn: a.unverified_warn,
            host_failures_warn: a.host_failures_warn,
        },
    }
}
