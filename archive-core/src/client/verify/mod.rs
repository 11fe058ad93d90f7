//! `archive-remote-cmd verify`: proves, on a schedule, that what an archive
//! server stores can be restored.
//!
//! Every WAL file of an archive directory is decoded in full with the
//! checks a restore makes ([`crate::client::restore::verify`]: codec,
//! first page header against the name, the directory's system identifier,
//! the size the header declares, and the raw blake3 recorded when the file
//! was accepted) and the header of every page; the segments of each timeline must follow each other without
//! a hole, and each complete backup's START WAL must be there. Every
//! complete backup (`data.master.N` with SUCCESS) is read to the end of
//! its tar archives and compared with its backup_manifest
//! ([`crate::client::base_backup::verify`]: size and CRC32C of each file,
//! manifest versions 1 and 2), and its system identifier with the
//! directory's.
//!
//! With `--peer`, the peer's copies are fetched over the peer key's channel
//! (`get`, `list_backups`, `get_backup_file`, requests that key already
//! has) and checked here the same way, as a restore would receive them;
//! the peer runs nothing new and no new request exists. The cost is the
//! network transfer of the peer's archive, bounded by `--max-rate` like
//! the local reads. Where each server can run its own verify from cron,
//! that is cheaper and `--peer` is not needed.
//!
//! It runs at nice 19, SCHED_BATCH and the idle I/O class, reads at most
//! `--max-rate` bytes a second, decodes in bounded memory (one buffer per
//! file), and writes nothing but its report and its record
//! (`<dir>/.pgarchive/verify.json`, shown by archive-status). Damage is a
//! result (exit [`EXIT_DAMAGED`]), not a failure: the check went on past
//! it. A check that could not run to its end fails (exit 1 or 2).
//!
//! Files: [`checks`] (what is wrong with one file, a backup, a listing),
//! [`pages`] (every page header of a segment), [`local`] (this server's
//! disk), [`peer`] (the peer's copies over ssh), [`rate`] (the I/O rate
//! bound).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::common::config::Config;
use crate::common::durable;
use crate::common::error::{Error, Result, EXIT_DAMAGED, EXIT_OK, EXIT_RETRY};
use crate::common::{lock, log, process};
use crate::net::health;
use crate::net::wire::{VerifyCounts, VerifySummary, DIR_STATUS_NAMES};
use crate::server::report::write_verify_summary;
use crate::server::store::{Store, META_DIR};

mod checks;
mod local;
mod pages;
mod peer;
mod rate;

pub use rate::Throttle;

/// Most damaged items a report lists per server (the count is complete).
pub const MAX_LISTED: usize = 10_000;

/// What to verify.
#[derive(Debug, Clone)]
pub struct Options {
    /// The archive directory (DST-DIR), under `archive_roots`.
    pub dir: String,
    /// The cluster's backup directory, if it has backups here.
    pub backup_dir: Option<String>,
    /// Also fetch and check the peer's copies (its ssh alias).
    pub peer: Option<String>,
    /// Write the full report here as JSON.
    pub json: Option<PathBuf>,
    /// Stored bytes read per second, at most (`None`: no bound).
    pub max_rate: Option<u64>,
}

/// One damaged or missing item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Damage {
    /// The file or directory (on the peer: `host:path`).
    pub path: String,
    /// What is wrong with it, and what to do.
    pub problem: String,
}

/// What a verify found on one server.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerCheck {
    /// The server (`server_name` or `local` for this one, the alias for the peer).
    pub host: String,
    /// WAL files decoded.
    pub wal_files: u64,
    /// Complete backups checked.
    pub backups: u64,
    /// Stored bytes read.
    pub bytes: u64,
    /// Damaged or missing items found (complete count).
    pub damaged_total: u64,
    /// The items, at most [`MAX_LISTED`].
    pub damaged: Vec<Damage>,
    /// Why the check stopped before its end, if it did.
    pub error: Option<String>,
}

impl ServerCheck {
    fn new(host: &str) -> ServerCheck {
        ServerCheck {
            host: host.to_string(),
            ..Default::default()
        }
    }

    /// Records a damaged item.
    fn damage(&mut self, path: impl Into<String>, problem: impl Into<String>) {
        let d = Damage {
            path: path.into(),
            problem: problem.into(),
        };
        log::warn(format!("{}: {}", d.path, d.problem));
        self.damaged_total += 1;
        if self.damaged.len() < MAX_LISTED {
            self.damaged.push(d);
        }
    }

    fn counts(&self) -> VerifyCounts {
        VerifyCounts {
            host: self.host.clone(),
            wal_files: self.wal_files,
            backups: self.backups,
            bytes: self.bytes,
            damaged: self.damaged_total,
            damaged_names: self
                .damaged
                .iter()
                .take(DIR_STATUS_NAMES)
                .map(|d| format!("{}: {}", d.path, d.problem))
                .collect(),
            error: self.error.clone(),
        }
    }
}

/// The JSON report of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyReport {
    /// Unix time it started.
    pub started: i64,
    /// Unix time it ended.
    pub finished: i64,
    /// The archive directory.
    pub dir: String,
    /// The backup directory, if given.
    pub backup_dir: Option<String>,
    /// This server first, then the peer.
    pub servers: Vec<ServerCheck>,
}

impl VerifyReport {
    /// Parses a report written with `--json`.
    pub fn from_json(text: &str) -> Result<VerifyReport> {
        serde_json::from_str(text)
            .map_err(|e| Error::Usage(format!("not a verify JSON report: {e}")))
    }

    /// The exit code: damage anywhere wins (it needs a DBA), then a check
    /// that could not run to its end, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.servers.iter().any(|s| s.damaged_total > 0) {
            EXIT_DAMAGED
        } else if self.servers.iter().any(|s| s.error.is_some()) {
            EXIT_RETRY
        } else {
            EXIT_OK
        }
    }

    /// The summary printed on stdout: one line per server, then the first
    /// damaged items.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for s in &self.servers {
            let state = if s.damaged_total > 0 {
                format!("DAMAGED ({} item(s))", s.damaged_total)
            } else if s.error.is_some() {
                "INCOMPLETE".to_string()
            } else {
                "clean".to_string()
            };
            out.push_str(&format!(
                "verify {} on {}: {state}: {} WAL file(s), {} backup(s), {} bytes read in {} s\n",
                self.dir,
                s.host,
                s.wal_files,
                s.backups,
                s.bytes,
                self.finished - self.started
            ));
            for d in s.damaged.iter().take(20) {
                out.push_str(&format!("  {}: {}\n", d.path, d.problem));
            }
            if s.damaged_total > 20 {
                out.push_str(&format!(
                    "  ... and {} more (see the JSON report)\n",
                    s.damaged_total - 20
                ));
            }
            if let Some(e) = &s.error {
                out.push_str(&format!("  could not check everything: {e}\n"));
            }
        }
        out
    }

    fn record(&self, server: Option<String>) -> VerifySummary {
        VerifySummary {
            started: self.started,
            finished: self.finished,
            server,
            local: self
                .servers
                .first()
                .map(ServerCheck::counts)
                .unwrap_or_default(),
            peer: self.servers.get(1).map(ServerCheck::counts),
        }
    }
}

/// Lowers this process to the background: idle I/O, SCHED_BATCH, nice 19
/// (the nice value last: a process seen at 19 has the other two).
fn background_priority() {
    process::idle_io();
    process::batch_scheduling();
    process::lower_priority(19);
}

/// Runs a verify (see the module docs), records its summary in the
/// archive directory and writes the JSON report; returns the report.
/// Errors are what kept it from running at all (bad directory, unreadable
/// listing, the record or report not written).
pub async fn run(cfg: &Config, opts: &Options) -> Result<VerifyReport> {
    background_priority();
    let store = Store::from_config(cfg);
    // A directory outside archive_roots is a wrong command line here.
    let usage = |e: Error| Error::Usage(e.to_string());
    let dir = store.archive_dir(&opts.dir).map_err(usage)?;
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "{}: no such archive directory on this server; check --dir",
            dir.display()
        )));
    }
    let backup_dir = opts
        .backup_dir
        .as_deref()
        .map(|b| store.backup_dir(b).map_err(usage))
        .transpose()?;
    // One verify per directory at a time (a cron run that overlaps the last).
    let meta = dir.join(META_DIR);
    durable::create_dir_all(&meta)?;
    let _lock = lock::try_lock(
        &meta.join("verify.lock"),
        &format!("archive-remote-cmd verify (pid {})", std::process::id()),
    )?;
    let throttle = Throttle::new(opts.max_rate);
    let t0 = Instant::now();
    let mut report = VerifyReport {
        started: health::now(),
        dir: opts.dir.clone(),
        backup_dir: opts.backup_dir.clone(),
        ..Default::default()
    };
    let me = cfg.server_name.clone().unwrap_or_else(|| "local".into());
    log::info(format!(
        "verify {}: checking this server's copies",
        dir.display()
    ));
    let local = local::verify(
        &store,
        &opts.dir,
        &dir,
        backup_dir.as_deref(),
        &me,
        &throttle,
    )?;
    report.servers.push(local);
    if let Some(peer) = &opts.peer {
        log::info(format!(
            "verify {}: checking {peer}'s copies",
            dir.display()
        ));
        report
            .servers
            .push(peer::verify(cfg, &dir, opts, peer, &throttle).await);
    }
    report.finished = report.started + t0.elapsed().as_secs() as i64;
    write_verify_summary(&dir, &report.record(cfg.server_name.clone()))?;
    if let Some(path) = &opts.json {
        write_json(path, &report)?;
    }
    Ok(report)
}

fn write_json(path: &Path, report: &VerifyReport) -> Result<()> {
    let json = serde_json::to_string_pretty(report).expect("plain data serializes");
    durable::write_replace(path, format!("{json}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_outranks_a_check_that_could_not_run() {
        let mut r = VerifyReport {
            servers: vec![ServerCheck::new("arch1"), ServerCheck::new("arch2")],
            ..Default::default()
        };
        assert_eq!(r.exit_code(), EXIT_OK);
        r.servers[1].error = Some("arch2 unreachable".into());
        assert_eq!(r.exit_code(), EXIT_RETRY);
        r.servers[0].damage("/a/main/000000010000000000000002", "bad");
        assert_eq!(r.exit_code(), EXIT_DAMAGED);
        let s = r.summary();
        assert!(s.contains("on arch1: DAMAGED (1 item(s))"), "{s}");
        assert!(s.contains("/a/main/000000010000000000000002: bad"), "{s}");
        assert!(s.contains("on arch2: INCOMPLETE"), "{s}");
        // The record keeps the counts and the first names.
        let rec = r.record(Some("arch1".into()));
        assert_eq!(rec.local.damaged, 1);
        assert!(!rec.local.clean() && !rec.peer.unwrap().clean());
    }
}
