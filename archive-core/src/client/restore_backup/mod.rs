//! Restoring a base backup from an archive server into a new data
//! directory, set up for point-in-time recovery (what `restore-backup`
//! does).
//!
//! The backup is chosen by the target and timeline ([`target`]), its
//! archives streamed over the same protocol channel as WAL and unpacked on
//! the fly ([`unpack`]): base.tar into the data directory, each
//! tablespace's archive into its location ([`tablespace`]). The data
//! directory then gets `restore_command = restore-cmd` reading from both
//! archive servers, the recovery target, and `recovery.signal` (or
//! `standby.signal`). Nothing is started: the caller is told what to start.
//! An incremental backup is restored with its chain and `pg_combinebackup`
//! ([`combine`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::client::base_backup::verify::{archive_of, TarCompression};
use crate::common::codec;
use crate::common::config::Config;
use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::common::progress::Progress;
use crate::common::{log, pg_programs};
use crate::net::ssh::{self, Channel, SshSettings};
use crate::net::wire::BackupEntry;

pub mod combine;
pub mod tablespace;
pub mod target;
pub mod unpack;

pub use target::{choose, describe, parse_time, History, Target, Timeline};

/// What to restore and how.
#[derive(Debug, Clone)]
pub struct PitrRequest {
    /// Archive server to take the backup from.
    pub from: String,
    /// Backup directory on it.
    pub backup_dir: String,
    /// WAL archive directory (DST-DIR) on both servers.
    pub wals_dir: String,
    /// Hosts for restore_command, in order.
    pub hosts: Vec<String>,
    /// Recovery target.
    pub target: Target,
    /// recovery_target_timeline.
    pub timeline: Timeline,
    /// `--tablespace-map OLD=NEW` pairs.
    pub tablespace_map: Vec<(PathBuf, PathBuf)>,
    /// A specific backup (N of data.master.N) instead of choosing.
    pub backup: Option<u32>,
    /// standby.signal instead of recovery.signal.
    pub standby: bool,
    /// Empty or missing directory to restore into.
    pub data_dir: PathBuf,
    /// restore_command's program and options, e.g. "/usr/local/bin/restore-cmd --config X".
    pub restore_cmd: String,
    /// recovery_target_action.
    pub action: String,
    /// Leave the backup's archive settings alone (default: archive_mode = off,
    /// so a test restore never writes into the production archive).
    pub keep_archiving: bool,
    /// Extra postgresql.auto.conf lines (e.g. port = 5433).
    pub extra_conf: Vec<String>,
}

/// One tar archive of a backup.
#[derive(Debug, Clone)]
struct Archive {
    name: String,
    codec: TarCompression,
    /// The tablespace's oid; `None` for base.tar.
    oid: Option<u32>,
    size: u64,
}

/// The archives of `b`, base.tar first. A file that looks like an archive
/// but is not one base-backup writes is refused, so nothing is left out.
fn archives_of(b: &BackupEntry) -> Result<Vec<Archive>> {
    let mut out = Vec::new();
    // pg_wal.tar (pg_basebackup -Ft's default, in Archive 2.0's backups)
    // holds WAL the archive has too: recovery reads it from there.
    let archives = b
        .files
        .iter()
        .filter(|f| f.name.contains(".tar") && !f.name.starts_with("pg_wal.tar"));
    for f in archives {
        let a = archive_of(Path::new(""), &f.name).ok_or_else(|| {
            Error::Refused(format!(
                "backup data.master.{}: {} is not an archive this program knows \
                 (base.tar or <oid>.tar, plain or .gz, .lz4, .zst): unpack it by hand",
                b.index, f.name
            ))
        })?;
        let oid = a
            .prefix
            .strip_prefix("pg_tblspc/")
            .and_then(|o| o.trim_end_matches('/').parse::<u32>().ok());
        out.push(Archive {
            name: f.name.clone(),
            codec: a.codec,
            oid,
            size: f.size,
        });
    }
    out.sort_by_key(|a| (a.oid.is_some(), a.oid));
    if out.first().is_none_or(|a| a.oid.is_some()) || out.get(1).is_some_and(|a| a.oid.is_none()) {
        return Err(Error::Refused(format!(
            "backup data.master.{} does not have exactly one base.tar (files: {})",
            b.index,
            b.files
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(out)
}

/// How to start the restored cluster in `data_dir`: pg_ctl of its own major
/// version (`PG_VERSION`) when one is installed (`pg_bin_dir`, else
/// `pg_search_path` and PATH); else a WARNING naming the version to install,
/// and plain `pg_ctl`.
pub fn start_command(cfg: &Config, data_dir: &Path) -> String {
    let generic = format!("pg_ctl -D {} start", data_dir.display());
    let version = fs::read_to_string(data_dir.join("PG_VERSION"))
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    let Some(major) = version else {
        log::warn(format!(
            "{}: no readable PG_VERSION; start the cluster with the pg_ctl of its version",
            data_dir.join("PG_VERSION").display()
        ));
        return generic;
    };
    match pg_programs::find_server(cfg, "pg_ctl", major) {
        Ok(f) => format!("{} -D {} start", f.path.display(), data_dir.display()),
        Err(e) => {
            log::warn(format!("the restored cluster is PostgreSQL {major}: {e}"));
            generic
        }
    }
}

/// Restores: returns the backup used.
pub async fn restore(cfg: &Config, req: &PitrRequest) -> Result<BackupEntry> {
    check_empty(&req.data_dir)?;
    for (_, new) in &req.tablespace_map {
        check_empty(new)?;
    }
    let ssh = SshSettings::from_config(cfg);
    let mut ch = ssh::connect(&ssh, &req.from).await?;
    let backups = ch.list_backups(&req.backup_dir).await?;
    let history = match req.timeline {
        Timeline::Id(n) => Some(history(&mut ch, &req.wals_dir, n).await?.ok_or_else(|| {
            Error::Refused(format!(
                "--target-timeline {n}: {n:08X}.history is not in {}: that timeline does not \
                 exist in this archive",
                req.wals_dir
            ))
        })?),
        Timeline::Latest => newest_history(&mut ch, &req.wals_dir).await?,
        Timeline::Current => None,
    };
    // A chosen incremental whose chain is broken is refused by name.
    if let Some(b) = backups
        .iter()
        .find(|b| Some(b.index) == req.backup && b.complete)
    {
        combine::chain_of(&backups, b)?;
    }
    let chosen = choose(
        &combine::restorable(&backups),
        &req.target,
        req.backup,
        history.as_ref(),
    )?;
    if chosen.incremental {
        if !req.tablespace_map.is_empty() {
            return Err(Error::Usage(format!(
                "--tablespace-map: backup data.master.{} is incremental; restore-backup does not                  combine incremental backups with tablespaces yet",
                chosen.index
            )));
        }
        let chain = combine::chain_of(&backups, &chosen)?;
        combine::restore_chain(
            cfg,
            &mut ch,
            &req.backup_dir,
            &req.from,
            &chain,
            &req.data_dir,
        )
        .await?;
        ch.close().await;
        write_recovery_conf(req, &chosen)?;
        return Ok(chosen);
    }
    let archives = archives_of(&chosen)?;
    if archives.len() == 1 && !req.tablespace_map.is_empty() {
        return Err(Error::Usage(format!(
            "--tablespace-map: backup data.master.{} has no tablespaces",
            chosen.index
        )));
    }
    durable::create_dir_all(&req.data_dir)?;
    let progress = Progress::new(
        format!("restoring data.master.{} from {}", chosen.index, req.from),
        Some(archives.iter().map(|a| a.size).sum()),
    );
    let (base, spaces) = archives.split_first().expect("base.tar first");
    let (bdir, index) = (req.backup_dir.as_str(), chosen.index);
    unpack::fetch_and_unpack(
        &mut ch,
        bdir,
        index,
        &base.name,
        base.codec,
        &req.data_dir,
        &progress,
    )
    .await?;
    if !spaces.is_empty() {
        let at = tablespace_locations(req, &chosen, spaces)?;
        for a in spaces {
            let dir = at[&a.oid.expect("a tablespace")].clone();
            check_empty(&dir)?;
            durable::create_dir_all(&dir)?;
            unpack::fetch_and_unpack(&mut ch, bdir, index, &a.name, a.codec, &dir, &progress)
                .await?;
        }
        tablespace::link(&req.data_dir, &at)?;
    }
    progress.finish();
    if chosen.files.iter().any(|f| f.name == "backup_manifest") {
        let mut f = fs::File::create(req.data_dir.join("backup_manifest"))
            .map_err(|e| Error::io("cannot create", req.data_dir.join("backup_manifest"), e))?;
        ch.get_backup_file(&req.backup_dir, chosen.index, "backup_manifest", &mut f)
            .await?;
    }
    ch.close().await;
    write_recovery_conf(req, &chosen)?;
    Ok(chosen)
}

/// Where each tablespace of the backup goes: tablespace_map (unpacked with
/// base.tar) and the `--tablespace-map` remappings; every archive must have
/// a location and every location an archive.
fn tablespace_locations(
    req: &PitrRequest,
    chosen: &BackupEntry,
    spaces: &[Archive],
) -> Result<BTreeMap<u32, PathBuf>> {
    let at = tablespace::locations(&tablespace::read_map(&req.data_dir)?, &req.tablespace_map)?;
    let oids: Vec<u32> = spaces.iter().filter_map(|a| a.oid).collect();
    if at.keys().copied().collect::<Vec<_>>() != oids {
        return Err(Error::Refused(format!(
            "backup data.master.{}: its tablespace archives ({}) and the tablespace_map in its \
             base.tar ({}) do not match; {} is left half restored: empty it",
            chosen.index,
            spaces
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            at.keys().map(u32::to_string).collect::<Vec<_>>().join(", "),
            req.data_dir.display()
        )));
    }
    Ok(at)
}

/// Largest timeline history file read.
const MAX_HISTORY: usize = 1 << 20;

/// Timelines probed at most when looking for the newest one.
const MAX_TIMELINES: u32 = 10_000;

/// The history of the newest timeline in the archive, the one PostgreSQL
/// follows with recovery_target_timeline = 'latest' (found the way it
/// does: `0000000N.history` for N = 2, 3, … until one is missing); `None`
/// when there is only timeline 1.
async fn newest_history(ch: &mut Channel, wals_dir: &str) -> Result<Option<History>> {
    let mut newest = None;
    for tli in 2..MAX_TIMELINES {
        match history(ch, wals_dir, tli).await? {
            Some(h) => newest = Some(h),
            None => break,
        }
    }
    Ok(newest)
}

/// The history of timeline `tli` from the WAL archive (timeline 1 has an
/// empty one); `None` when its history file is not there.
async fn history(ch: &mut Channel, wals_dir: &str, tli: u32) -> Result<Option<History>> {
    if tli == 1 {
        return Ok(Some(History {
            timeline: 1,
            ancestors: vec![],
        }));
    }
    let name = format!("{tli:08X}.history");
    let mut stored = Capped(Vec::new());
    match ch.get(wals_dir, &name, &mut stored).await {
        Err(Error::NotFound(_)) => return Ok(None),
        other => other?,
    };
    let raw = codec::decode_all(codec::sniff(&stored.0), &stored.0)
        .map_err(|e| Error::Refused(format!("{wals_dir}/{name}: cannot decompress: {e}")))?;
    History::parse(tli, &String::from_utf8_lossy(&raw))
        .map(Some)
        .map_err(|why| Error::Refused(format!("{wals_dir}/{name}: {why}")))
}

/// A buffer refusing more than [`MAX_HISTORY`] bytes.
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_HISTORY {
            return Err(std::io::Error::other(
                "larger than a timeline history file can be",
            ));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn check_empty(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::Refused(format!(
                    "{} is not empty; restore into an empty or new directory",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot read", dir, e)),
    }
}

fn write_recovery_conf(req: &PitrRequest, chosen: &BackupEntry) -> Result<()> {
    let hosts = req.hosts.join(" ");
    let mut lines = vec![
        String::new(),
        format!(
            "# restore-backup {}: data.master.{} from {}:{} (START WAL {})",
            Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
            chosen.index,
            req.from,
            req.backup_dir,
            chosen.start_wal.as_deref().unwrap_or("?")
        ),
        format!(
            "restore_command = '{} \"{hosts}\" {} %f %p'",
            req.restore_cmd, req.wals_dir
        ),
        req.timeline.setting(),
    ];
    if !req.standby {
        lines.extend(req.target.settings());
        if req.target != Target::Latest {
            lines.push(format!("recovery_target_action = '{}'", req.action));
        }
    }
    if !req.keep_archiving {
        lines.push("archive_mode = 'off'".into());
    }
    lines.extend(req.extra_conf.iter().cloned());
    let auto = req.data_dir.join("postgresql.auto.conf");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto)
        .map_err(|e| Error::io("cannot open", &auto, e))?;
    f.write_all((lines.join("\n") + "\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("cannot write", &auto, e))?;
    let signal = if req.standby {
        "standby.signal"
    } else {
        "recovery.signal"
    };
    let p = req.data_dir.join(signal);
    fs::write(&p, b"").map_err(|e| Error::io("cannot create", &p, e))?;
    // PostgreSQL refuses a data directory others can read.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&req.data_dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("cannot set mode of", &req.data_dir, e))?;
    durable::sync_dir(&req.data_dir)
}
