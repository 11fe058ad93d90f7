//! Base backups as stored on an archive server.
//!
//! Layout: `<backup_dir>/data.master.<N>/` with N = 0 the oldest. Each holds
//! pg_basebackup's tar output (`base.tar[.zst|.gz]`, `backup_manifest`), the
//! extracted `backup_label`, and a `SUCCESS` marker written last, after the
//! backup verified: a directory without it is not a backup.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::wal::WalName;

/// Directory name prefix of a backup.
pub const PREFIX: &str = "data.master.";
/// Marker of a complete, verified backup.
pub const SUCCESS: &str = "SUCCESS";
/// The extracted label.
pub const LABEL: &str = "backup_label";

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

impl Backup {
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
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix(PREFIX)
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if e.path().is_dir() {
            out.push(Backup {
                index: n,
                complete: e.path().join(SUCCESS).exists(),
                path: e.path(),
            });
        }
    }
    out.sort_by_key(|b| b.index);
    Ok(out)
}

/// START WAL of the oldest complete backup, `None` when there is none.
pub fn oldest_start_wal(backup_dir: &Path) -> Result<Option<Label>> {
    match list(backup_dir)?.into_iter().find(|b| b.complete) {
        Some(b) => b.label().map(Some),
        None => Ok(None),
    }
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
}
