//! Base backups as stored on an archive server.
//!
//! Layout: `<backup_dir>/data.master.<N>/` with N = 0 the oldest. Each holds
//! pg_basebackup's tar output (`base.tar[.zst|.gz|.lz4]`, `backup_manifest`),
//! the extracted `backup_label`, and a `SUCCESS` marker written last, after
//! the backup verified: a directory without it is not a backup.
//!
//! ## Rotation ([`install`], [`repair`])
//!
//! A new backup is built and verified in `data.master.new.<pid>` (a name
//! [`list`] ignores) and gets its SUCCESS marker there. It then joins the
//! numbering by renames only, each followed by a directory fsync, in an order
//! such that at every instant — so also after a crash at any point — the
//! numbered backups are contiguous from `.0`, complete, and in chronological
//! order, and no complete backup has been deleted except the oldest one being
//! rotated out:
//!
//! - fewer than `keep` backups: the new one is renamed to the next number;
//! - otherwise the new one is swapped (`renameat2(RENAME_EXCHANGE)`) with the
//!   newest, which is swapped with the one below, and so on down to `.0`; the
//!   temp name then holds the oldest, whose SUCCESS is removed before the
//!   directory is. (`{0:A,1:B}+C` → `{0:A,1:C}+B` → `{0:B,1:C}+A` → drop A.)
//!
//! [`repair`] (run under the caller's lock before each rotation) puts a crash
//! right: a leftover temp dir without SUCCESS is removed; one with SUCCESS is
//! re-inserted at its chronological place (by the `finished=` time its SUCCESS
//! records), or removed when it is older than every numbered backup (it was
//! being rotated out); numbering gaps (someone deleted a directory) are
//! closed by renaming downwards; a numbered directory without SUCCESS is not
//! ours to delete: it is moved out of the numbering to
//! `data.master.incomplete.<N>.<time>` and reported.
//!
//! Callers serialize: base-backup holds its single-instance lock around
//! [`repair`] and [`install`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::common::wal::WalName;

/// Directory name prefix of a backup.
pub const PREFIX: &str = "data.master.";
/// Marker of a complete, verified backup.
pub const SUCCESS: &str = "SUCCESS";
/// The extracted label.
pub const LABEL: &str = "backup_label";
/// Name prefix of a backup being built (or rotated out): not a backup.
pub const TEMP_PREFIX: &str = "data.master.new.";
/// Name prefix a numbered directory without SUCCESS is moved to.
pub const INCOMPLETE_PREFIX: &str = "data.master.incomplete.";

/// What a backup_label says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// START WAL LOCATION's segment file.
    pub start_wal: String,
    /// START WAL LOCATION as an LSN.
    pub start_lsn: u64,
    /// START TIME as written.
    pub start_time: String,
    /// START TIMELINE.
    pub timeline: u32,
}

/// One backup directory.
#[derive(Debug, Clone)]
pub struct Backup {
    /// N of data.master.N.
    pub index: u32,
    /// Its path.
    pub path: PathBuf,
    /// SUCCESS marker present.
    pub complete: bool,
}

/// From when a backup can be restored: recovery from it must replay WAL up
/// to the end of the backup (STOP WAL LOCATION) before it reaches a
/// consistent state, and PostgreSQL refuses a recovery target before that
/// ("requested recovery stop point is before consistent recovery point").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consistency {
    /// A moment at or after the backup's end, Unix seconds (rounded up) on
    /// the archive server's clock: SUCCESS's `consistent_by=` (taken when
    /// pg_basebackup exited), else backup_manifest's mtime (pg_basebackup
    /// writes it last).
    pub by: Option<i64>,
    /// The backup's end LSN: SUCCESS's `stop_lsn=`, else read from
    /// backup_manifest ([`manifest_stop_lsn`]).
    pub stop_lsn: Option<u64>,
}

/// Name of pg_basebackup's manifest in a backup directory.
pub const MANIFEST: &str = "backup_manifest";

/// How much of a manifest's end is read for its WAL ranges: they follow the
/// file list, which runs to hundreds of MB for a large cluster.
const MANIFEST_TAIL: u64 = 1 << 20;

/// The backup's end LSN (its STOP WAL LOCATION): the highest End-LSN of the
/// WAL ranges that close manifest `path`; `Ok(None)` when it lists none.
pub fn manifest_stop_lsn(path: &Path) -> Result<Option<u64>> {
    use std::io::{Read, Seek};
    #[derive(serde::Deserialize)]
    struct WalRange {
        #[serde(rename = "End-LSN")]
        end_lsn: String,
    }
    let read = |e| Error::io("cannot read", path, e);
    let mut f = fs::File::open(path).map_err(read)?;
    let len = f.metadata().map_err(read)?.len();
    f.seek(io::SeekFrom::Start(len.saturating_sub(MANIFEST_TAIL)))
        .map_err(read)?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).map_err(read)?;
    let tail = String::from_utf8_lossy(&tail);
    let bad = |why: String| Error::Refused(format!("{}: {why}", path.display()));
    let Some(at) = tail.rfind("\"WAL-Ranges\"") else {
        return Ok(None);
    };
    let rest = &tail[at..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Err(bad("WAL-Ranges is not a list".into()));
    };
    let ranges: Vec<WalRange> = serde_json::from_str(rest.get(open..=close).unwrap_or(""))
        .map_err(|e| bad(format!("WAL-Ranges cannot be read: {e}")))?;
    ranges.iter().try_fold(None, |max: Option<u64>, r| {
        let l = parse_lsn(&r.end_lsn)
            .ok_or_else(|| bad(format!("malformed End-LSN {:?}", r.end_lsn)))?;
        Ok(max.max(Some(l)))
    })
}

impl Backup {
    /// What its SUCCESS marker and manifest tell of its end (see
    /// [`Consistency`]).
    pub fn consistency(&self) -> Consistency {
        let text = fs::read_to_string(self.path.join(SUCCESS)).unwrap_or_default();
        let by = success_time_micros(&text, "consistent_by")
            .or_else(|| mtime_micros(&self.path.join(MANIFEST)))
            .map(|us| us.div_euclid(1_000_000) + i64::from(us.rem_euclid(1_000_000) != 0));
        let stop_lsn = success_value(&text, "stop_lsn")
            .and_then(parse_lsn)
            .or_else(|| manifest_stop_lsn(&self.path.join(MANIFEST)).ok()?);
        Consistency { by, stop_lsn }
    }

    /// Reads and parses its backup_label.
    pub fn label(&self) -> Result<Label> {
        let p = self.path.join(LABEL);
        // Refused, not retried: a complete backup without a readable label
        // is a doubt no retry resolves.
        let text = fs::read_to_string(&p).map_err(|e| {
            Error::Refused(format!(
                "cannot read backup label {}: {e}; check the backup before removing any WAL",
                p.display()
            ))
        })?;
        parse_label(&text).map_err(|e| Error::Refused(format!("{}: {e}", p.display())))
    }
}

/// Parses a backup_label's text.
pub fn parse_label(text: &str) -> std::result::Result<Label, String> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .ok_or_else(|| format!("no {key} line"))
    };
    let start = field("START WAL LOCATION:")?;
    // "0/2000028 (file 000000010000000000000002)"
    let (lsn, file) = start
        .split_once(" (file ")
        .ok_or_else(|| format!("malformed START WAL LOCATION {start:?}"))?;
    let start_wal = file.trim_end_matches(')').to_string();
    WalName::parse(&start_wal).map_err(|e| e.to_string())?;
    let start_lsn = parse_lsn(lsn).ok_or_else(|| format!("malformed LSN {lsn:?}"))?;
    let timeline = field("START TIMELINE:")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| {
            WalName::parse(&start_wal)
                .map(|w| w.timeline())
                .unwrap_or(1)
        });
    Ok(Label {
        start_wal,
        start_lsn,
        start_time: field("START TIME:").unwrap_or_default(),
        timeline,
    })
}

/// Parses "X/Y" as PostgreSQL prints an LSN.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Backups in `backup_dir`, oldest (lowest N) first; a missing directory
/// has none.
pub fn list(backup_dir: &Path) -> Result<Vec<Backup>> {
    let rd = match fs::read_dir(backup_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot list backups in", backup_dir, e)),
    };
    // Errors are errors, never "no such backup": a backup taken for
    // incomplete would move wal-cleanup's cut-off past WAL it needs.
    let listing = |e| Error::io("cannot list backups in", backup_dir, e);
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(listing)?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix(PREFIX)
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = e.path();
        let is_dir = fs::metadata(&path)
            .map_err(|e| Error::io("cannot stat backup", &path, e))?
            .is_dir();
        if is_dir {
            let success = path.join(SUCCESS);
            let complete = success
                .try_exists()
                .map_err(|e| Error::io("cannot check", &success, e))?;
            out.push(Backup {
                index: n,
                complete,
                path,
            });
        }
    }
    out.sort_by_key(|b| b.index);
    Ok(out)
}

/// The label of the complete backup that starts earliest in the WAL (by
/// START LSN, whatever its number or timeline): no kept backup needs WAL
/// below it. Not simply `.0`: after a point-in-time recovery the new
/// timeline starts below where the old one was, so a newer backup can
/// start earlier than an older one. `None` when there is no complete
/// backup; an unreadable label of a complete backup is an error.
pub fn oldest_start_wal(backup_dir: &Path) -> Result<Option<Label>> {
    let mut earliest: Option<Label> = None;
    for b in list(backup_dir)?.into_iter().filter(|b| b.complete) {
        let l = b.label()?;
        if earliest.as_ref().is_none_or(|e| l.start_lsn < e.start_lsn) {
            earliest = Some(l);
        }
    }
    Ok(earliest)
}

/// The newest complete backup, `None` when there is none.
pub fn newest(backup_dir: &Path) -> Result<Option<Backup>> {
    Ok(list(backup_dir)?.into_iter().rev().find(|b| b.complete))
}

/// Path of backup number `n` in `backup_dir`.
pub fn slot(backup_dir: &Path, n: u32) -> PathBuf {
    backup_dir.join(format!("{PREFIX}{n}"))
}

/// Where the backup made by process `pid` is built:
/// `<backup_dir>/data.master.new.<pid>`.
pub fn temp_dir(backup_dir: &Path, pid: u32) -> PathBuf {
    backup_dir.join(format!("{TEMP_PREFIX}{pid}"))
}

/// Writes the SUCCESS marker of a verified backup durably: a first line
/// `finished=<UTC RFC 3339 time>` (the order [`repair`] restores), then
/// `key=value` lines from `fields`.
pub fn write_success(backup: &Path, fields: &[(&str, String)]) -> Result<()> {
    let mut text = format!(
        "finished={}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    for (k, v) in fields {
        text.push_str(&format!("{k}={}\n", v.replace(['\n', '\r'], " ")));
    }
    durable::write_replace(&backup.join(SUCCESS), text.as_bytes())
}

/// The value of a `key=value` line of a SUCCESS marker's text.
pub fn success_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// A SUCCESS time (RFC 3339), in microseconds since the epoch.
pub fn success_time_micros(text: &str, key: &str) -> Option<i64> {
    success_value(text, key)
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
        .map(|d| d.timestamp_micros())
}

/// Chronological key of a complete backup: SUCCESS's `finished=` time, else
/// SUCCESS's mtime (markers written by other tools), in microseconds.
fn finished_key(backup: &Path) -> i64 {
    let p = backup.join(SUCCESS);
    let from_text = fs::read_to_string(&p)
        .ok()
        .and_then(|t| success_time_micros(&t, "finished"));
    from_text.or_else(|| mtime_micros(&p)).unwrap_or(0)
}

/// A file's mtime in microseconds since the epoch, rounded up.
fn mtime_micros(path: &Path) -> Option<i64> {
    let m = fs::metadata(path).ok()?.modified().ok()?;
    let d = m.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_nanos().div_ceil(1000)).ok()
}

/// Swaps two directory entries atomically (RENAME_EXCHANGE). A file system
/// without it (NFS) is refused: three renames would leave a window, and a
/// crash in it, where a kept backup is out of the numbering and repair
/// takes it for the one being rotated out.
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => {}
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            return Err(Error::Usage(format!(
                "cannot rotate backups in {}: its file system cannot swap directories atomically (RENAME_EXCHANGE); keep backups on a local file system (ext4, xfs, btrfs)",
                a.parent().unwrap_or(a).display()
            )))
        }
        Err(e) => {
            return Err(Error::io(
                "cannot exchange",
                a,
                io::Error::from_raw_os_error(e.raw_os_error()),
            ))
        }
    }
    durable::sync_parent(a)
}

fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    durable::rename_noreplace(from, to).map_err(|e| Error::io("cannot rename", from, e))?;
    durable::sync_parent(to)
}

/// Removes a backup directory that is no longer wanted: SUCCESS first (and
/// fsynced), so a crash halfway never leaves a partial directory that looks
/// complete.
pub fn remove_backup_dir(dir: &Path) -> Result<()> {
    match fs::remove_file(dir.join(SUCCESS)) {
        Ok(()) => durable::sync_dir(dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot remove", dir.join(SUCCESS), e)),
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot remove", dir, e)),
    }
    durable::sync_parent(dir)
}

/// What [`repair`] changed (all empty when the directory was consistent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Leftover temp dirs removed (incomplete, or rotated-out oldest).
    pub removed: Vec<PathBuf>,
    /// Complete leftovers put back into the numbering, as (from, to).
    pub reinserted: Vec<(PathBuf, PathBuf)>,
    /// Numbered backups renumbered to close a gap, as (from, to).
    pub renumbered: Vec<(PathBuf, PathBuf)>,
    /// Numbered dirs without SUCCESS moved out of the numbering, as (from, to).
    pub set_aside: Vec<(PathBuf, PathBuf)>,
}

impl RepairReport {
    /// True when nothing had to be done.
    pub fn is_clean(&self) -> bool {
        *self == RepairReport::default()
    }
}

/// Brings `backup_dir` back to the invariant after a crash (see the module
/// docs). The caller holds the lock that serializes base-backup runs; a
/// missing directory is consistent.
pub fn repair(backup_dir: &Path) -> Result<RepairReport> {
    repair_except(backup_dir, None)
}

fn repair_except(backup_dir: &Path, skip: Option<&Path>) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    let rd = match fs::read_dir(backup_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(Error::io("cannot list backups in", backup_dir, e)),
    };
    let mut leftovers = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) && e.path().is_dir() && Some(e.path().as_path()) != skip {
            leftovers.push(e.path());
        }
    }
    // Numbered dirs without SUCCESS leave the numbering.
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    for b in list(backup_dir)?.into_iter().filter(|b| !b.complete) {
        let to = backup_dir.join(format!("{INCOMPLETE_PREFIX}{}.{stamp}", b.index));
        rename_durable(&b.path, &to)?;
        report.set_aside.push((b.path, to));
    }
    // Close gaps, lowest first, so the order is kept.
    for (pos, b) in list(backup_dir)?.into_iter().enumerate() {
        if b.index != pos as u32 {
            let to = slot(backup_dir, pos as u32);
            rename_durable(&b.path, &to)?;
            report.renumbered.push((b.path, to));
        }
    }
    // Leftovers: incomplete ones go, complete ones go back in order (or go
    // when older than everything: they were being rotated out).
    let (mut complete, incomplete): (Vec<PathBuf>, Vec<PathBuf>) = leftovers
        .into_iter()
        .partition(|p| p.join(SUCCESS).is_file());
    for p in incomplete {
        remove_backup_dir(&p)?;
        report.removed.push(p);
    }
    complete.sort_by_key(|p| finished_key(p));
    for x in complete {
        let numbered = list(backup_dir)?;
        let key = finished_key(&x);
        let pos = numbered
            .iter()
            .position(|b| finished_key(&b.path) > key)
            .unwrap_or(numbered.len());
        if pos == 0 && !numbered.is_empty() {
            remove_backup_dir(&x)?;
            report.removed.push(x);
            continue;
        }
        // Swap it upwards through the newer ones, then append the newest.
        for b in &numbered[pos..] {
            exchange(&x, &b.path)?;
        }
        let to = slot(backup_dir, numbered.len() as u32);
        rename_durable(&x, &to)?;
        report.reinserted.push((x, to));
    }
    Ok(report)
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Where the new backup is now (`data.master.<keep-1>` once full).
    pub path: PathBuf,
    /// Backups rotated out (their former paths).
    pub dropped: Vec<PathBuf>,
}

/// Makes the complete backup at `new` (a dir in `backup_dir`, normally
/// [`temp_dir`], with its SUCCESS marker) the newest numbered backup, keeping
/// `keep` backups with the oldest as `.0`. Crash-safe: see the module docs.
/// Runs [`repair`] first (leaving `new` alone).
pub fn install(backup_dir: &Path, new: &Path, keep: u32) -> Result<Installed> {
    if keep == 0 {
        return Err(Error::Usage("keep_backups_cnt must be at least 1".into()));
    }
    if new.parent() != Some(backup_dir) || !new.join(SUCCESS).is_file() {
        return Err(Error::Usage(format!(
            "{} is not a complete backup in {}",
            new.display(),
            backup_dir.display()
        )));
    }
    let name = new.file_name().map(|n| n.to_string_lossy().into_owned());
    if name
        .as_deref()
        .and_then(|n| n.strip_prefix(PREFIX))
        .is_some_and(|n| n.parse::<u32>().is_ok())
    {
        return Err(Error::Usage(format!(
            "{} is already numbered",
            new.display()
        )));
    }
    repair_except(backup_dir, Some(new))?;

    let mut dropped = Vec::new();
    let mut numbered = list(backup_dir)?;
    let aside = backup_dir.join(format!("{TEMP_PREFIX}{}.drop", std::process::id()));
    // More than keep-1 old ones: drop the oldest until keep remain, each time
    // moving the newest aside and swapping it down to .0.
    while numbered.len() > keep as usize {
        let (top, rest) = numbered.split_last().expect("not empty");
        rename_durable(&top.path, &aside)?;
        for b in rest.iter().rev() {
            exchange(&aside, &b.path)?;
        }
        remove_backup_dir(&aside)?;
        dropped.push(slot(backup_dir, 0));
        numbered = list(backup_dir)?;
    }
    if numbered.len() < keep as usize {
        let to = slot(backup_dir, numbered.len() as u32);
        rename_durable(new, &to)?;
        return Ok(Installed { path: to, dropped });
    }
    // Full: the new one goes in at the top and the oldest comes out at .0.
    for b in numbered.iter().rev() {
        exchange(new, &b.path)?;
    }
    remove_backup_dir(new)?;
    dropped.push(slot(backup_dir, 0));
    Ok(Installed {
        path: slot(backup_dir, keep - 1),
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL_TEXT: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2026-11-25 01:02:03 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n";

    #[test]
    fn label_is_parsed() {
        let l = parse_label(LABEL_TEXT).unwrap();
        assert_eq!(l.start_wal, "000000010000000000000002");
        assert_eq!(l.start_lsn, 0x2000028);
        assert_eq!(l.timeline, 1);
        assert_eq!(l.start_time, "2026-11-25 01:02:03 UTC");
        assert!(parse_label("LABEL: x\n").is_err());
    }

    #[test]
    fn the_end_comes_from_success_else_from_the_manifest_mtime() {
        let d = tempfile::tempdir().unwrap();
        let b = Backup {
            index: 0,
            path: d.path().to_path_buf(),
            complete: true,
        };
        assert_eq!(b.consistency(), Consistency::default());
        let manifest = d.path().join(MANIFEST);
        // Written at 1_700_000_000.25.
        let write_manifest = |text: &str| {
            fs::write(&manifest, text).unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_250);
            fs::File::options()
                .write(true)
                .open(&manifest)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        write_manifest("{}");
        assert_eq!(manifest_stop_lsn(&manifest).unwrap(), None);
        fs::write(d.path().join(SUCCESS), "finished=2026-11-25T01:00:00Z\n").unwrap();
        assert_eq!(
            b.consistency(),
            Consistency {
                by: Some(1_700_000_001),
                stop_lsn: None
            },
            "rounded up"
        );
        // A manifest as after a timeline switch during the backup (the file
        // list elided), written by a version that kept no stop_lsn=.
        let text = r#"{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [ { "Path": "odd \"WAL-Ranges\" [name]", "Size": 1 } ],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/5000028", "End-LSN": "0/6000000" },
{ "Timeline": 2, "Start-LSN": "0/6000000", "End-LSN": "0/6000100" }
],
"Manifest-Checksum": "00"}
"#;
        write_manifest(text);
        assert_eq!(
            b.consistency(),
            Consistency {
                by: Some(1_700_000_001),
                stop_lsn: Some(0x6000100)
            }
        );
        fs::write(
            &manifest,
            r#"{ "WAL-Ranges": [ { "End-LSN": "6000100" } ] }"#,
        )
        .unwrap();
        assert!(manifest_stop_lsn(&manifest).is_err(), "malformed");
        write_success(
            d.path(),
            &[
                ("consistent_by", "1970-01-01T00:01:40.000001Z".into()),
                ("stop_lsn", "1/2000100".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            b.consistency(),
            Consistency {
                by: Some(101),
                stop_lsn: Some(0x1_0200_0100)
            }
        );
    }

    #[test]
    fn oldest_complete_backup_counts() {
        let d = tempfile::tempdir().unwrap();
        for (n, done) in [(0, false), (1, true), (2, true)] {
            let p = d.path().join(format!("{PREFIX}{n}"));
            fs::create_dir(&p).unwrap();
            fs::write(
                p.join(LABEL),
                LABEL_TEXT.replace("0002)", &format!("000{n})")),
            )
            .unwrap();
            if done {
                fs::write(p.join(SUCCESS), b"").unwrap();
            }
        }
        let l = oldest_start_wal(d.path()).unwrap().unwrap();
        assert_eq!(l.start_wal, "000000010000000000000001");
        assert!(oldest_start_wal(&d.path().join("none")).unwrap().is_none());
    }

    /// A backup that cannot be looked at (here a dangling symlink; in life
    /// a directory the archive user may not search) used to count as "not a
    /// backup", moving wal-cleanup's cut-off past the WAL it needs.
    #[test]
    fn a_backup_that_cannot_be_checked_is_an_error_not_skipped() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(d.path().join("gone"), d.path().join(format!("{PREFIX}0")))
            .unwrap();
        let p = d.path().join(format!("{PREFIX}1"));
        fs::create_dir(&p).unwrap();
        fs::write(p.join(LABEL), LABEL_TEXT).unwrap();
        fs::write(p.join(SUCCESS), b"").unwrap();
        assert!(list(d.path()).is_err());
        assert!(oldest_start_wal(d.path()).is_err());
    }

    /// keep = 2 after a point-in-time recovery: `.0` started on timeline 1
    /// at 0/50000000, `.1` on timeline 2 (which forked at 0/30000000) at
    /// 0/35000000. The cut-off used to come from `.0`, so wal-cleanup
    /// deleted timeline 2's segments 0x35-0x4F that `.1` needs.
    #[test]
    fn the_cut_off_is_the_earliest_start_not_the_lowest_number() {
        let d = tempfile::tempdir().unwrap();
        for (n, tli, lsn) in [(0, 1, 0x50u32), (1, 2, 0x35)] {
            let p = d.path().join(format!("{PREFIX}{n}"));
            fs::create_dir(&p).unwrap();
            let label = format!(
                "START WAL LOCATION: 0/{lsn:X}000028 (file {tli:08X}00000000000000{lsn:02X})\n\
                 CHECKPOINT LOCATION: 0/{lsn:X}000060\nBACKUP METHOD: streamed\n\
                 BACKUP FROM: primary\nSTART TIME: 2026-11-25 01:02:03 UTC\n\
                 LABEL: pg_basebackup base backup\nSTART TIMELINE: {tli}\n"
            );
            fs::write(p.join(LABEL), label).unwrap();
            fs::write(p.join(SUCCESS), b"").unwrap();
        }
        let l = oldest_start_wal(d.path()).unwrap().unwrap();
        assert_eq!(l.start_wal, "000000020000000000000035");
    }

    /// A complete backup named `id` at `path` (its id in a file, for checks).
    fn make(path: &Path, id: &str) {
        fs::create_dir_all(path).unwrap();
        fs::write(path.join("id"), id).unwrap();
        write_success(path, &[("task", id.to_string())]).unwrap();
        // Distinct finished= times.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }

    /// Ids of the numbered backups, in index order, with their indexes.
    fn ids(dir: &Path) -> Vec<(u32, String)> {
        list(dir)
            .unwrap()
            .into_iter()
            .map(|b| (b.index, fs::read_to_string(b.path.join("id")).unwrap()))
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn ordered(v: &[(u32, &str)]) -> Vec<(u32, String)> {
        v.iter().map(|(n, s)| (*n, s.to_string())).collect()
    }

    #[test]
    fn install_fills_then_rotates_keeping_the_oldest_at_0() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        for (i, id) in ["A", "B", "C", "D"].iter().enumerate() {
            let t = temp_dir(dir, 100 + i as u32);
            make(&t, id);
            let got = install(dir, &t, 2).unwrap();
            assert!(!t.exists());
            assert_eq!(got.path, slot(dir, (i as u32).min(1)));
            assert_eq!(got.dropped.len(), usize::from(i >= 2));
        }
        assert_eq!(ids(dir), ordered(&[(0, "C"), (1, "D")]));
        assert_eq!(names(dir), vec!["data.master.0", "data.master.1"]);
        for b in list(dir).unwrap() {
            assert!(b.complete);
        }
    }

    #[test]
    fn install_with_keep_lowered_drops_the_oldest_ones() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        for (i, id) in ["A", "B", "C", "D"].iter().enumerate() {
            make(&slot(dir, i as u32), id);
        }
        let t = temp_dir(dir, 7);
        make(&t, "E");
        let got = install(dir, &t, 2).unwrap();
        assert_eq!(got.dropped.len(), 3);
        assert_eq!(ids(dir), ordered(&[(0, "D"), (1, "E")]));
        assert_eq!(names(dir), vec!["data.master.0", "data.master.1"]);

        let t = temp_dir(dir, 8);
        make(&t, "F");
        install(dir, &t, 1).unwrap();
        assert_eq!(ids(dir), ordered(&[(0, "F")]));
    }

    #[test]
    fn install_refuses_an_incomplete_backup() {
        let d = tempfile::tempdir().unwrap();
        let t = temp_dir(d.path(), 1);
        fs::create_dir(&t).unwrap();
        assert!(install(d.path(), &t, 2).is_err());
        make(&t, "A");
        assert!(install(d.path(), &t, 0).is_err());
    }

    #[test]
    fn repair_removes_unfinished_leftovers_and_keeps_backups() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        make(&slot(dir, 0), "A");
        let partial = temp_dir(dir, 55);
        fs::create_dir(&partial).unwrap();
        fs::write(partial.join("base.tar"), b"half").unwrap();
        let r = repair(dir).unwrap();
        assert_eq!(r.removed, vec![partial.clone()]);
        assert!(!partial.exists());
        assert_eq!(ids(dir), ordered(&[(0, "A")]));
        assert!(repair(dir).unwrap().is_clean());
    }

    #[test]
    fn every_crash_point_of_a_rotation_repairs_to_an_ordered_set() {
        // The states a crash can leave during `install` of D with keep 3 over
        // A,B,C, as (numbered, temp), and what repair must make of them.
        let cases: &[(&[&str], Option<&str>, &[&str])] = &[
            // New backup complete, not yet swapped in.
            (&["A", "B", "C"], Some("D"), &["A", "B", "C", "D"]),
            // After the first swap: C is out of the numbering.
            (&["A", "B", "D"], Some("C"), &["A", "B", "C", "D"]),
            // After the second.
            (&["A", "C", "D"], Some("B"), &["A", "B", "C", "D"]),
            // After the last: the temp holds the oldest, being rotated out.
            (&["B", "C", "D"], Some("A"), &["B", "C", "D"]),
            // Done.
            (&["B", "C", "D"], None, &["B", "C", "D"]),
        ];
        for (numbered, temp, want) in cases {
            let d = tempfile::tempdir().unwrap();
            let dir = d.path();
            // Create them in chronological order (A oldest).
            let mut all: Vec<&str> = numbered.to_vec();
            all.extend(temp.iter());
            all.sort();
            for id in all {
                if Some(id) == *temp {
                    make(&temp_dir(dir, 9), id);
                } else {
                    let n = numbered.iter().position(|x| *x == id).unwrap();
                    make(&slot(dir, n as u32), id);
                }
            }
            repair(dir).unwrap();
            let got: Vec<String> = ids(dir).into_iter().map(|(_, s)| s).collect();
            assert_eq!(&got, want, "from {numbered:?} + {temp:?}");
            assert_eq!(
                ids(dir).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                (0..want.len() as u32).collect::<Vec<_>>()
            );
            assert!(!names(dir).iter().any(|n| n.starts_with(TEMP_PREFIX)));
        }
    }

    #[test]
    fn repair_closes_gaps_and_sets_aside_foreign_incomplete_dirs() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        make(&slot(dir, 1), "A");
        fs::create_dir(slot(dir, 2)).unwrap(); // no SUCCESS: not a backup
        make(&slot(dir, 4), "B");
        let r = repair(dir).unwrap();
        assert_eq!(ids(dir), ordered(&[(0, "A"), (1, "B")]));
        assert_eq!(r.set_aside.len(), 1);
        assert!(r.set_aside[0]
            .1
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(INCOMPLETE_PREFIX));
        assert!(r.set_aside[0].1.is_dir(), "never deleted");
        assert_eq!(r.renumbered.len(), 2);
    }

    #[test]
    fn removing_a_backup_drops_its_marker_first() {
        let d = tempfile::tempdir().unwrap();
        let p = temp_dir(d.path(), 3);
        make(&p, "A");
        remove_backup_dir(&p).unwrap();
        assert!(!p.exists());
        remove_backup_dir(&p).unwrap();
    }

    #[test]
    fn exchange_swaps_directories() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        make(&a, "A");
        make(&b, "B");
        exchange(&a, &b).unwrap();
        assert_eq!(fs::read_to_string(a.join("id")).unwrap(), "B");
        assert_eq!(fs::read_to_string(b.join("id")).unwrap(), "A");
    }
}
