//! `archive-status` as a command: from its options to its output. Which
//! clusters to check (those given with `hosts`, or every enabled cluster
//! of the backup queue), the collection, the evaluation by thresholds, and
//! the output in the chosen format, on stdout or written atomically to a
//! file. The binary parses the arguments into [`CommandOptions`] and prints
//! [`CommandOutput::stdout`]: this crate never prints.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::config::{parse_byte_size, parse_duration, Config};
use crate::common::error::{Error, Result};
use crate::common::names::{self, parse_hosts};
use crate::common::{cli, durable, wal};
use crate::net::health;
use crate::net::ssh::SshSettings;

use super::queue::{self, QueueData};
use super::{
    evaluate, local, render, Collector, Limit, Options, QueueSource, Report, Target, Thresholds,
};

/// What `archive-status` was asked, as given on its command line.
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    /// `check` (a Nagios check) rather than `report`.
    pub check: bool,
    /// Config file (`--config`).
    pub config: Option<PathBuf>,
    /// Config overrides (`--set KEY=VALUE`).
    pub set: Vec<String>,
    /// The cluster's archive servers, as archive-cmd's first argument.
    pub hosts: Option<String>,
    /// The cluster's archive directory on the servers.
    pub wals_dir: Option<String>,
    /// The cluster's backup directory on the servers.
    pub backup_dir: Option<String>,
    /// Cluster name (with `hosts`), or the one cluster of the queue.
    pub cluster: Option<String>,
    /// The backup_queue database; `None`: queue_dsn from the config.
    pub queue_dsn: Option<String>,
    /// archive-cmd's state directory; `None`: state_dir from the config,
    /// when it exists.
    pub state_dir: Option<PathBuf>,
    /// How to print the report.
    pub format: Format,
    /// Write the output to this file atomically instead of stdout.
    pub output: Option<PathBuf>,
    /// Compare every same-named file by content.
    pub checksum: bool,
    /// Most same-named files compared by content per cluster.
    pub max_digests: usize,
    /// WAL segment size, as given ("16MB").
    pub segment_size: Option<String>,
    /// A running backup task older than this duration ("24h") is stuck.
    pub stuck_after: String,
    /// The thresholds of the findings.
    pub limits: LimitOptions,
}

/// How to print the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// Readable text, or for `check` the Nagios result.
    #[default]
    Text,
    /// The whole report as JSON.
    Json,
    /// Prometheus' text exposition format.
    Prometheus,
}

/// The thresholds as given on the command line (durations as text); see
/// [`Thresholds`] for what each means.
#[derive(Debug, Clone, Default)]
pub struct LimitOptions {
    pub newest_age_warn: String,
    pub newest_age_crit: String,
    pub backup_age_warn: f64,
    pub backup_age_crit: f64,
    pub periodicity_days: u32,
    pub gaps_warn: u64,
    pub gaps_crit: u64,
    pub divergent_crit: u64,
    pub one_sided_warn: u64,
    pub one_sided_crit: u64,
    pub dropped_crit: u64,
    pub failed_crit: u64,
    pub stuck_warn: u64,
    pub stuck_crit: u64,
    pub owed_warn: u64,
    pub owed_crit: u64,
    pub conflicts_warn: u64,
    pub unverified_warn: u64,
    pub host_failures_warn: u64,
    /// Empty: the default.
    pub verify_age_warn: String,
}

impl LimitOptions {
    /// The thresholds; a duration that does not parse is a usage error.
    pub fn thresholds(&self) -> Result<Thresholds> {
        let a = self;
        Ok(Thresholds {
            newest_age: Limit {
                warn: duration_option(&a.newest_age_warn, "--newest-age-warn")?,
                crit: duration_option(&a.newest_age_crit, "--newest-age-crit")?,
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
            verify_age: if a.verify_age_warn.is_empty() {
                Thresholds::default().verify_age
            } else {
                duration_option(&a.verify_age_warn, "--verify-age-warn")?
            },
            ..Thresholds::default()
        })
    }
}

/// What the command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// For stdout (empty when written to `output`).
    pub stdout: String,
    /// The exit code: the Nagios level for `check`; for `report` 1 when a
    /// server or the queue could not be read, else 0.
    pub exit_code: i32,
}

/// Runs `archive-status`: collects, evaluates and renders the report.
pub fn run(opts: &CommandOptions) -> Result<CommandOutput> {
    let started = Instant::now();
    let cfg = Config::load(opts.config.as_deref(), &opts.set)?;
    let limits = opts.limits.thresholds()?;
    let stuck_after = Duration::from_secs(duration_option(&opts.stuck_after, "--stuck-after")?);
    let segment_size = opts
        .segment_size
        .as_deref()
        .map(segment_size_option)
        .transpose()?;
    let dsn = opts.queue_dsn.clone().or(cfg.queue_dsn.clone());

    let mut report = Report {
        program: format!("archive-status {}", env!("CARGO_PKG_VERSION")),
        generated_at: health::now(),
        ..Default::default()
    };
    let queue_data = read_queue(dsn.as_deref(), &cfg, opts.hosts.is_some(), &mut report)?;
    let targets = targets(opts, queue_data.as_ref(), stuck_after)?;
    let state_dir = state_dir(opts, &cfg)?;
    report.primary = state_dir.as_deref().and_then(local::read_health);

    let collect = Options {
        checksum: opts.checksum,
        max_digests: opts.max_digests,
        segment_size,
        state_dir,
    };
    collect_clusters(&cfg, collect, &targets, &mut report)?;
    report.duration_secs = started.elapsed().as_secs_f64();
    evaluate(&mut report, &limits);
    output(opts, &report)
}

fn duration_option(s: &str, what: &str) -> Result<u64> {
    parse_duration(s).map_err(|e| Error::Usage(format!("{what}: {e}")))
}

fn segment_size_option(s: &str) -> Result<u64> {
    let n = parse_byte_size(s).map_err(|e| Error::Usage(format!("--segment-size: {e}")))?;
    wal::check_segment_size(n).map_err(|e| Error::Usage(format!("--segment-size: {e}")))?;
    Ok(n)
}

/// Reads the backup queue at `dsn`, when there is one. Unreadable, it is
/// an error when it was to name the clusters (no `--hosts`), else a
/// finding (`report.queue.error`).
fn read_queue(
    dsn: Option<&str>,
    cfg: &Config,
    hosts_given: bool,
    report: &mut Report,
) -> Result<Option<QueueData>> {
    let Some(dsn) = dsn else {
        return Ok(None);
    };
    match queue::read(dsn, cfg.connect_timeout()) {
        Ok(q) => {
            report.queue = Some(QueueSource::default());
            Ok(Some(q))
        }
        Err(e) => {
            let message = format!(
                "{e}; check queue_dsn / --queue-dsn and that the database accepts this user"
            );
            if !hosts_given {
                return Err(Error::host("backup_queue", message));
            }
            report.queue = Some(QueueSource {
                error: Some(message),
            });
            Ok(None)
        }
    }
}

/// The clusters to check: the one given with `--hosts`, else those of the
/// queue.
fn targets(
    opts: &CommandOptions,
    queue: Option<&QueueData>,
    stuck_after: Duration,
) -> Result<Vec<Target>> {
    if let Some(hosts) = &opts.hosts {
        return Ok(vec![given_target(opts, hosts, queue, stuck_after)?]);
    }
    match queue {
        Some(q) => queue_targets(opts, q, stuck_after),
        None => Err(Error::Usage(
            "nothing to check: give --hosts 'HOST1 HOST2' --wals-dir DIR [--backup-dir DIR] for one cluster, or --queue-dsn DSN (queue_dsn in the config) for every cluster of the backup queue".into(),
        )),
    }
}

/// The cluster given with `--hosts` and `--wals-dir`, with its queue row
/// and tasks when the queue knows it.
fn given_target(
    opts: &CommandOptions,
    hosts: &str,
    queue: Option<&QueueData>,
    stuck_after: Duration,
) -> Result<Target> {
    let hosts = parse_hosts(hosts)?;
    let wals_dir = opts.wals_dir.clone().ok_or_else(|| {
        Error::Usage("--hosts needs --wals-dir (the cluster's archive directory)".into())
    })?;
    let cluster = opts.cluster.clone().unwrap_or_else(|| dir_name(&wals_dir));
    let mut t = Target {
        cluster: cluster.clone(),
        hosts: hosts.clone(),
        wals_dir,
        backup_dir: opts.backup_dir.clone(),
        ..Default::default()
    };
    if let Some(q) = queue {
        t.queue = Some(q.host(&cluster).map(|h| h.info.clone()).unwrap_or_default());
        if q.host(&cluster).is_some() {
            t.queue_servers = hosts
                .iter()
                .map(|h| (h.clone(), q.server(&cluster, h, stuck_after)))
                .collect();
        }
    }
    Ok(t)
}

/// Every enabled cluster of the queue, or only `--cluster` (enabled or not).
fn queue_targets(
    opts: &CommandOptions,
    q: &QueueData,
    stuck_after: Duration,
) -> Result<Vec<Target>> {
    if opts.wals_dir.is_some() || opts.backup_dir.is_some() {
        return Err(Error::Usage(
            "--wals-dir and --backup-dir go with --hosts; without --hosts every cluster comes from the queue".into(),
        ));
    }
    let mut targets = Vec::new();
    for h in &q.hosts {
        if opts.cluster.as_ref().is_some_and(|c| *c != h.cluster) {
            continue;
        }
        if !h.info.enabled && opts.cluster.is_none() {
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
    if let Some(c) = &opts.cluster {
        if targets.is_empty() {
            return Err(Error::NotFound(format!(
                "cluster {c} is not in backups.hosts of the queue database"
            )));
        }
    }
    Ok(targets)
}

/// The last part of a directory path ("/var/lib/pgarchive/main" → "main").
fn dir_name(dir: &str) -> String {
    Path::new(dir.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cluster".into())
}

/// The primary's state directory, when there is one here: `--state-dir`
/// (which must exist), else the config's when it exists.
fn state_dir(opts: &CommandOptions, cfg: &Config) -> Result<Option<PathBuf>> {
    match &opts.state_dir {
        Some(d) => {
            if !d.is_dir() {
                return Err(Error::Usage(format!(
                    "--state-dir {}: no such directory",
                    d.display()
                )));
            }
            Ok(Some(d.clone()))
        }
        None => Ok(Some(cfg.state_dir()).filter(|d| d.is_dir())),
    }
}

/// Collects every target into `report.clusters`, one after the other.
fn collect_clusters(
    cfg: &Config,
    opts: Options,
    targets: &[Target],
    report: &mut Report,
) -> Result<()> {
    let rt = cli::runtime()?;
    let mut collector = Collector::new(SshSettings::from_config(cfg), opts);
    rt.block_on(async {
        for t in targets {
            let c = collector.cluster(t, health::now()).await;
            report.clusters.push(c);
        }
        collector.close().await;
    });
    Ok(())
}

/// Renders the report in the chosen format, writes it to `--output` if
/// given, and sets the exit code.
fn output(opts: &CommandOptions, report: &Report) -> Result<CommandOutput> {
    let text = match opts.format {
        Format::Json => render::json(report),
        Format::Prometheus => render::prometheus(report),
        Format::Text if opts.check => render::nagios(report),
        Format::Text => render::text(report),
    };
    let stdout = match &opts.output {
        Some(path) => {
            write_output(path, text.as_bytes())?;
            String::new()
        }
        None => text,
    };
    if opts.check {
        return Ok(CommandOutput {
            stdout,
            exit_code: report.status.exit_code(),
        });
    }
    let unreadable = report.queue.as_ref().is_some_and(|q| q.error.is_some())
        || report
            .clusters
            .iter()
            .flat_map(|c| c.servers.iter())
            .any(|s| s.error.is_some());
    Ok(CommandOutput {
        stdout,
        exit_code: if unreadable { 1 } else { 0 },
    })
}

/// Writes `path` atomically (temp file in the same directory, fsync,
/// rename, directory fsync), mode 0644 so that node_exporter, running as
/// another user, can read it. The temp name starts with a dot and does not
/// end in `.prom`, so the textfile collector never reads a partial file.
fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_named_after_its_directory() {
        assert_eq!(dir_name("/var/lib/pgarchive/main/"), "main");
        assert_eq!(dir_name("/"), "cluster");
    }

    #[test]
    fn the_output_file_is_replaced_whole_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgarchive.prom");
        write_output(&path, b"old\n").unwrap();
        write_output(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }
}
