//! archive-status: monitoring of the archive servers, the WAL chain, the
//! backups and the backup queue, as a report (text, JSON, Prometheus) or a
//! Nagios check.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use archive_core::common::config::{parse_byte_size, Config};
use archive_core::common::error::Failure as _;
use archive_core::common::names::{self, parse_hosts};
use archive_core::common::{durable, log};
use archive_core::net::health;
use archive_core::net::ssh::SshSettings;
use archive_core::status::{
    self, local, queue, render, Collector, Level, Limit, Options, QueueSource, Report, Target,
    Thresholds,
};
use archive_core::Error;
use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;

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
    /// Config file (default: $PGARCHIVE_CONFIG, else /etc/pgarchive.toml).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. --set connect_timeout=5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
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
    let args = Args::parse();
    log::init("archive-status", true);
    let check = args.command == Some(Cmd::Check);
    let code = match run(&args, check) {
        Ok(code) => code,
        Err(e) => {
            log::error(e.to_string());
            if check {
                println!("PGARCHIVE UNKNOWN - {e}");
                Level::Unknown.exit_code()
            } else {
                e.exit_code()
            }
        }
    };
    ExitCode::from(code as u8)
}

fn thresholds(a: &LimitArgs) -> Result<Thresholds, Error> {
    let dur = |s: &str, what: &str| {
        status::parse_duration(s).map_err(|e| Error::Usage(format!("{what}: {e}")))
    };
    Ok(Thresholds {
        newest_age: Limit {
            warn: dur(&a.newest_age_warn, "--newest-age-warn")?,
            crit: dur(&a.newest_age_crit, "--newest-age-crit")?,
        },
        backup_age_warn_factor: a.backup_age_warn,
        backup_age_crit_factor: a.backup_age_crit,
        periodicity_days: a.periodicity_days.max(1),
        gaps: Limit {
            warn: a.gaps_warn,
            crit: a.gaps_crit,
        },
        divergent: Limit {
            warn: 0,
            crit: a.divergent_crit,
        },
        unverified: Limit {
            warn: a.unverified_warn,
            crit: 0,
        },
        one_sided: Limit {
            warn: a.one_sided_warn,
            crit: a.one_sided_crit,
        },
        dropped: Limit {
            warn: 0,
            crit: a.dropped_crit,
        },
        failed_tasks: Limit {
            warn: 0,
            crit: a.failed_crit,
        },
        stuck_tasks: Limit {
            warn: a.stuck_warn,
            crit: a.stuck_crit,
        },
        owed: Limit {
            warn: a.owed_warn,
            crit: a.owed_crit,
        },
        conflicts: Limit {
            warn: a.conflicts_warn,
            crit: 0,
        },
        host_failures: Limit {
            warn: a.host_failures_warn,
            crit: 0,
        },
        ..Thresholds::default()
    })
}

/// The last part of a directory path ("/var/lib/pgarchive/main" → "main").
fn dir_name(dir: &str) -> String {
    Path::new(dir.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cluster".into())
}

fn run(args: &Args, check: bool) -> Result<i32, Error> {
    let started = Instant::now();
    let cfg = Config::load(args.config.as_deref(), &args.set)?;
    let limits = thresholds(&args.limits)?;
    let stuck_after = Duration::from_secs(
        status::parse_duration(&args.stuck_after)
            .map_err(|e| Error::Usage(format!("--stuck-after: {e}")))?,
    );
    let segment_size = args
        .segment_size
        .as_deref()
        .map(|s| {
            let n = parse_byte_size(s).map_err(|e| Error::Usage(format!("--segment-size: {e}")))?;
            archive_core::common::wal::check_segment_size(n)
                .map_err(|e| Error::Usage(format!("--segment-size: {e}")))?;
            Ok::<u64, Error>(n)
        })
        .transpose()?;
    let dsn = args.queue_dsn.clone().or(cfg.queue_dsn.clone());

    // Which clusters.
    let mut report = Report {
        program: format!("archive-status {}", env!("CARGO_PKG_VERSION")),
        generated_at: health::now(),
        ..Default::default()
    };
    let queue_data = match &dsn {
        Some(dsn) => match queue::read(dsn, cfg.connect_timeout()) {
            Ok(q) => {
                report.queue = Some(QueueSource::default());
                Some(q)
            }
            Err(e) => {
                let message = format!(
                    "{e}; check queue_dsn / --queue-dsn and that the database accepts this user"
                );
                if args.hosts.is_none() {
                    return Err(Error::host("backup_queue", message));
                }
                report.queue = Some(QueueSource {
                    error: Some(message),
                });
                None
            }
        },
        None => None,
    };
    let mut targets = Vec::new();
    if let Some(hosts) = &args.hosts {
        let hosts = parse_hosts(hosts)?;
        let wals_dir = args.wals_dir.clone().ok_or_else(|| {
            Error::Usage("--hosts needs --wals-dir (the cluster's archive directory)".into())
        })?;
        let cluster = args.cluster.clone().unwrap_or_else(|| dir_name(&wals_dir));
        let mut t = Target {
            cluster: cluster.clone(),
            hosts: hosts.clone(),
            wals_dir,
            backup_dir: args.backup_dir.clone(),
            ..Default::default()
        };
        if let Some(q) = &queue_data {
            t.queue = Some(q.host(&cluster).map(|h| h.info.clone()).unwrap_or_default());
            if q.host(&cluster).is_some() {
                t.queue_servers = hosts
                    .iter()
                    .map(|h| (h.clone(), q.server(&cluster, h, stuck_after)))
                    .collect();
            }
        }
        targets.push(t);
    } else if let Some(q) = &queue_data {
        if args.wals_dir.is_some() || args.backup_dir.is_some() {
            return Err(Error::Usage(
                "--wals-dir and --backup-dir go with --hosts; without --hosts every cluster comes from the queue".into(),
            ));
        }
        for h in &q.hosts {
            if args.cluster.as_ref().is_some_and(|c| *c != h.cluster) {
                continue;
            }
            if !h.info.enabled && args.cluster.is_none() {
                continue;
            }
            let hosts: Vec<String> = h.archivers.to_vec();
            for a in &hosts {
                names::validate_host_name(a)?;
            }
            targets.push(Target {
                cluster: h.cluster.clone(),
                queue_servers: hosts
                    .iter()
                    .map(|a| (a.clone(), q.server(&h.cluster, a, stuck_after)))
                    .collect(),
                hosts,
                wals_dir: h.wals_dir.clone(),
                backup_dir: Some(h.directory.clone()),
                queue: Some(h.info.clone()),
            });
        }
        if let Some(c) = &args.cluster {
            if targets.is_empty() {
                return Err(Error::NotFound(format!(
                    "cluster {c} is not in backups.hosts of the queue database"
                )));
            }
        }
    } else {
        return Err(Error::Usage(
            "nothing to check: give --hosts 'HOST1 HOST2' --wals-dir DIR [--backup-dir DIR] for one cluster, or --queue-dsn DSN (queue_dsn in the config) for every cluster of the backup queue".into(),
        ));
    }

    // The primary's state, when there is one here.
    let state_dir = match &args.state_dir {
        Some(d) => {
            if !d.is_dir() {
                return Err(Error::Usage(format!(
                    "--state-dir {}: no such directory",
                    d.display()
                )));
            }
            Some(d.clone())
        }
        None => Some(cfg.state_dir()).filter(|d| d.is_dir()),
    };
    report.primary = state_dir.as_deref().and_then(local::read_health);

    let opts = Options {
        checksum: args.checksum,
        max_digests: args.max_digests,
        segment_size,
        state_dir,
    };
    let rt = archive_core::common::cli::runtime()?;
    let mut collector = Collector::new(SshSettings::from_config(&cfg), opts);
    rt.block_on(async {
        for t in &targets {
            let c = collector.cluster(t, health::now()).await;
            report.clusters.push(c);
        }
        collector.close().await;
    });
    report.duration_secs = started.elapsed().as_secs_f64();
    status::evaluate(&mut report, &limits);

    let text = if args.json {
        render::json(&report)
    } else if args.prometheus {
        render::prometheus(&report)
    } else if check {
        render::nagios(&report)
    } else {
        render::text(&report)
    };
    match &args.output {
        Some(path) => write_output(path, text.as_bytes())?,
        None => print!("{text}"),
    }
    if check {
        return Ok(report.status.exit_code());
    }
    let unreadable = report.queue.as_ref().is_some_and(|q| q.error.is_some())
        || report
            .clusters
            .iter()
            .flat_map(|c| c.servers.iter())
            .any(|s| s.error.is_some());
    Ok(if unreadable { 1 } else { 0 })
}

/// Writes `path` atomically (temp file in the same directory, fsync,
/// rename, directory fsync), mode 0644 so that node_exporter, running as
/// another user, can read it. The temp name starts with a dot and does not
/// end in `.prom`, so the textfile collector never reads a partial file.
fn write_output(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("--output {}: not a file name", path.display())))?
        .to_string_lossy()
        .into_owned();
    let temp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temp)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::io("cannot write", path, e));
    }
    durable::sync_parent(path)
}
