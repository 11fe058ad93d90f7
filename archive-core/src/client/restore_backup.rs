//! Restoring a base backup from an archive server into a new data
//! directory, set up for point-in-time recovery (what `restore-backup`
//! does).
//!
//! The backup is chosen by the target (the newest complete backup whose
//! START is at or before it), streamed over the same protocol channel as
//! WAL and unpacked on the fly; the data directory then gets
//! `restore_command = restore-cmd` reading from both archive servers, the
//! recovery target, and `recovery.signal` (or `standby.signal`). Nothing is
//! started: the caller is told what to start.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::common::config::Config;
use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::net::ssh::{self, SshSettings};
use crate::net::wire::BackupEntry;

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Replay everything archived.
    Latest,
    /// recovery_target_time (as PostgreSQL parses it) and its UTC instant.
    Time(String, DateTime<Utc>),
    /// recovery_target_lsn.
    Lsn(u64),
    /// recovery_target_name (a restore point).
    Name(String),
}

impl Target {
    /// Parses `latest`, `time:<timestamp>`, `lsn:<X/Y>` or `name:<restore point>`.
    pub fn parse(s: &str) -> Result<Target> {
        let bad = |why: &str| {
            Err(Error::Usage(format!(
                "target {s:?}: {why}; use latest, time:'2026-11-25 10:00:00+00', lsn:0/3000000 or name:before_upgrade"
            )))
        };
        if s == "latest" {
            return Ok(Target::Latest);
        }
        let Some((kind, value)) = s.split_once(':') else {
            return bad("unknown form");
        };
        match kind {
            "time" => match parse_time(value) {
                Some(t) => Ok(Target::Time(value.to_string(), t)),
                None => bad("cannot read the time (give a zone, e.g. +00)"),
            },
            "lsn" => match crate::server::backups::parse_lsn(value) {
                Some(l) => Ok(Target::Lsn(l)),
                None => bad("cannot read the LSN"),
            },
            "name" if !value.is_empty() && !value.contains('\'') => Ok(Target::Name(value.into())),
            _ => bad("unknown form"),
        }
    }

    fn settings(&self) -> Vec<String> {
        match self {
            Target::Latest => vec![],
            Target::Time(text, _) => vec![format!("recovery_target_time = '{text}'")],
            Target::Lsn(l) => vec![format!(
                "recovery_target_lsn = '{}'",
                crate::common::page_header::format_lsn(*l)
            )],
            Target::Name(n) => vec![format!("recovery_target_name = '{n}'")],
        }
    }
}

/// Reads a timestamp with a zone ("2026-11-25 10:00:00+00", RFC 3339, or
/// as backup labels write it: "... UTC", "... +03"). A zone abbreviation
/// such as MSK is not read: they are ambiguous (IST, CST).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f %#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let utc = s.strip_suffix(" UTC").or_else(|| s.strip_suffix(" GMT"))?;
    NaiveDateTime::parse_from_str(utc, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

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

/// Choose the backup for `target` among `backups` (oldest first).
pub fn choose(
    backups: &[BackupEntry],
    target: &Target,
    wanted: Option<u32>,
) -> Result<BackupEntry> {
    let complete: Vec<&BackupEntry> = backups.iter().filter(|b| b.complete).collect();
    if let Some(n) = wanted {
        return complete
            .iter()
            .find(|b| b.index == n)
            .map(|b| (*b).clone())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "backup data.master.{n} does not exist or is not complete"
                ))
            });
    }
    if complete.is_empty() {
        return Err(Error::NotFound("no complete backup to restore".into()));
    }
    // Recovery from a backup must replay past the backup's end before it may
    // stop: a target inside the backup makes PostgreSQL give up ("requested
    // recovery stop point is before consistent recovery point"), so the
    // backup's end is compared, not its start. Servers of older versions
    // tell only the start.
    let fits = |b: &&&BackupEntry| match target {
        Target::Latest | Target::Name(_) => true,
        Target::Lsn(l) => b.stop_lsn.or(b.start_lsn).is_some_and(|s| s <= *l),
        Target::Time(_, t) => consistent_by(b).is_some_and(|c| c <= t.timestamp()),
    };
    complete
        .iter()
        .rev()
        .find(fits)
        .map(|b| (**b).clone())
        .ok_or_else(|| {
            let unknown: Vec<String> = complete
                .iter()
                .filter(|b| matches!(target, Target::Time(..)) && consistent_by(b).is_none())
                .map(|b| format!("data.master.{}", b.index))
                .collect();
            if unknown.is_empty() {
                Error::Refused(format!(
                    "the target is before the oldest backup ends: {}; nothing to restore from",
                    describe(complete[0])
                ))
            } else {
                Error::Refused(format!(
                    "when {} can be restored from is not known (its server runs an older version, \
                     and a START TIME zone given by abbreviation cannot be read); pick a backup \
                     with --backup N, or give an lsn: target",
                    unknown.join(", ")
                ))
            }
        })
}

/// Unix seconds at or after which `b` can be restored: when the server
/// recorded it, else its START TIME (older servers), if readable.
fn consistent_by(b: &BackupEntry) -> Option<i64> {
    b.consistent_by.or_else(|| {
        b.start_time
            .as_deref()
            .and_then(parse_time)
            .map(|t| t.timestamp())
    })
}

/// "data.master.N (START WAL …, started …, consistent by … UTC at LSN …)",
/// for messages.
pub fn describe(b: &BackupEntry) -> String {
    let mut s = format!(
        "data.master.{} (START WAL {}, started {}",
        b.index,
        b.start_wal.as_deref().unwrap_or("?"),
        b.start_time.as_deref().unwrap_or("?")
    );
    if let Some(t) = b.consistent_by.and_then(|c| DateTime::from_timestamp(c, 0)) {
        s.push_str(&format!(
            ", consistent by {}",
            t.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    if let Some(l) = b.stop_lsn {
        s.push_str(&format!(
            " at {}",
            crate::common::page_header::format_lsn(l)
        ));
    }
    s.push(')');
    s
}

/// Restores: returns the backup used.
pub async fn restore(cfg: &Config, req: &PitrRequest) -> Result<BackupEntry> {
    check_empty(&req.data_dir)?;
    let ssh = SshSettings::from_config(cfg);
    let mut ch = ssh::connect(&ssh, &req.from).await?;
    let backups = ch.list_backups(&req.backup_dir).await?;
    let chosen = choose(&backups, &req.target, req.backup)?;
    let archives: Vec<String> = chosen
        .files
        .iter()
        .map(|f| f.name.clone())
        // pg_wal.tar (pg_basebackup -Ft's default, in Archive 2.0's backups)
        // holds WAL the archive has too: recovery reads it from there.
        .filter(|n| n.contains(".tar") && !n.starts_with("pg_wal.tar"))
        .collect();
    if archives.iter().any(|n| !n.starts_with("base.tar")) {
        return Err(Error::Refused(format!(
            "backup data.master.{} has tablespaces ({}); restoring tablespaces is not supported yet: unpack them by hand",
            chosen.index,
            archives.join(", ")
        )));
    }
    let base = archives
        .first()
        .ok_or_else(|| {
            Error::Refused(format!(
                "backup data.master.{} has no base.tar",
                chosen.index
            ))
        })?
        .clone();
    durable::create_dir_all(&req.data_dir)?;
    // Stream: channel → pipe → decoder → tar, so nothing is stored twice.
    let (reader, mut writer) =
        std::io::pipe().map_err(|e| Error::io("cannot make a pipe for", &req.data_dir, e))?;
    let data_dir = req.data_dir.clone();
    let name = base.clone();
    let unpack = std::thread::spawn(move || unpack(reader, &name, &data_dir));
    let got = ch
        .get_backup_file(&req.backup_dir, chosen.index, &base, &mut writer)
        .await;
    drop(writer);
    let unpacked = unpack
        .join()
        .map_err(|_| Error::Protocol("unpacking thread panicked".into()))?;
    got?;
    unpacked?;
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

fn unpack(reader: impl Read, name: &str, dir: &Path) -> Result<()> {
    let decoded: Box<dyn Read> = if name.ends_with(".zst") {
        Box::new(
            zstd::stream::read::Decoder::new(reader)
                .map_err(|e| Error::io("cannot decode", name, e))?,
        )
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if name.ends_with(".tar") {
        Box::new(reader)
    } else {
        return Err(Error::Refused(format!(
            "{name}: unsupported compression; use zstd, gzip or none for backups"
        )));
    };
    let mut archive = tar::Archive::new(decoded);
    archive.set_preserve_permissions(true);
    archive
        .unpack(dir)
        .map_err(|e| Error::io("cannot unpack the backup into", dir, e))?;
    Ok(())
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
        "recovery_target_timeline = 'latest'".to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup entry as an older server sends it: no end recorded.
    fn b(index: u32, complete: bool, lsn: u64, time: &str) -> BackupEntry {
        BackupEntry {
            index,
            complete,
            start_wal: Some(format!("0000000100000000000000{:02X}", lsn >> 24)),
            start_lsn: Some(lsn),
            start_time: Some(time.into()),
            consistent_by: None,
            stop_lsn: None,
            files: vec![],
        }
    }

    fn ended(mut e: BackupEntry, at: &str, stop_lsn: u64) -> BackupEntry {
        e.consistent_by = Some(parse_time(at).unwrap().timestamp());
        e.stop_lsn = Some(stop_lsn);
        e
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("latest").unwrap(), Target::Latest);
        assert_eq!(
            Target::parse("lsn:0/3000000").unwrap(),
            Target::Lsn(0x3000000)
        );
        assert!(matches!(
            Target::parse("time:2026-11-25 10:00:00+00").unwrap(),
            Target::Time(..)
        ));
        assert!(matches!(
            Target::parse("time:2026-11-25T10:00:00Z").unwrap(),
            Target::Time(..)
        ));
        assert!(Target::parse("time:yesterday").is_err());
        assert!(Target::parse("name:a'b").is_err());
        assert!(Target::parse("sometime").is_err());
    }

    #[test]
    fn without_a_recorded_end_the_newest_backup_starting_before_the_target_is_chosen() {
        let list = [
            b(0, true, 0x2000028, "2026-11-25 01:00:00 UTC"),
            b(1, false, 0x5000028, "2026-11-25 02:00:00 UTC"),
            b(2, true, 0x8000028, "2026-11-25 03:00:00 UTC"),
        ];
        let t = Target::parse("time:2026-11-25 02:30:00+00").unwrap();
        assert_eq!(
            choose(&list, &t, None).unwrap().index,
            0,
            "incomplete skipped"
        );
        let t = Target::parse("time:2026-11-25 03:30:00+00").unwrap();
        assert_eq!(choose(&list, &t, None).unwrap().index, 2);
        assert_eq!(choose(&list, &Target::Latest, None).unwrap().index, 2);
        assert_eq!(
            choose(&list, &Target::Lsn(0x7000000), None).unwrap().index,
            0
        );
        let early = Target::parse("time:2026-11-25 00:30:00+00").unwrap();
        let e = choose(&list, &early, None).unwrap_err();
        assert!(
            e.to_string().contains("before the oldest backup ends"),
            "{e}"
        );
        assert!(
            choose(&list, &Target::Latest, Some(1)).is_err(),
            "incomplete"
        );
    }

    #[test]
    fn a_target_inside_a_backup_takes_the_one_before() {
        // Labels in a zone given by abbreviation only: the recorded end
        // decides, the START TIME is not needed.
        let list = [
            ended(
                b(0, true, 0x2000028, "2026-11-25 04:00:00 MSK"),
                "2026-11-25 01:10:00+00",
                0x2000100,
            ),
            ended(
                b(1, true, 0x5000028, "2026-11-25 06:00:00 MSK"),
                "2026-11-25 03:10:00+00",
                0x6000100,
            ),
        ];
        let t = |s: &str| Target::parse(&format!("time:{s}")).unwrap();
        let pick = |target: &Target| choose(&list, target, None).map(|b| b.index);
        // Started (03:00 UTC) but not yet ended (03:10 UTC).
        assert_eq!(pick(&t("2026-11-25 03:05:00+00")).unwrap(), 0);
        assert_eq!(pick(&t("2026-11-25 03:10:00+00")).unwrap(), 1);
        assert_eq!(pick(&t("2026-11-25 06:30:00+03")).unwrap(), 1);
        assert_eq!(pick(&Target::Lsn(0x5800000)).unwrap(), 0);
        assert_eq!(pick(&Target::Lsn(0x6000100)).unwrap(), 1);
        // From an older server, with an unreadable START TIME zone: said so.
        let old = [b(0, true, 0x2000028, "2026-11-25 04:00:00 MSK")];
        let e = choose(&old, &t("2026-11-25 06:00:00+00"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("when data.master.0 can be restored from is not known"),
            "{e}"
        );
        let e = pick(&t("2026-11-25 01:05:00+00")).unwrap_err().to_string();
        assert!(
            e.contains("before the oldest backup ends")
                && e.contains("consistent by 2026-11-25 01:10:00 UTC at 0/2000100"),
            "{e}"
        );
    }

    #[test]
    fn label_times_with_numeric_zones_parse_abbreviations_do_not() {
        let at = |s: &str| parse_time(s).map(|t| t.timestamp());
        assert_eq!(at("1970-01-01 01:00:00 UTC"), Some(3600));
        assert_eq!(at("1970-01-01 03:00:00 +03"), Some(0));
        assert_eq!(at("1970-01-01 00:00:00 -0130"), Some(5400));
        assert_eq!(at("1970-01-01 05:30:00+05:30"), Some(0));
        assert_eq!(at("2026-03-01 03:00:00 MSK"), None);
        assert_eq!(at("garbage"), None);
    }
}
