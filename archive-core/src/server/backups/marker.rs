//! The `SUCCESS` marker of a complete backup (written last, with
//! `key=value` lines) and what it and the manifest tell of the backup's end
//! ([`Consistency`]).

use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use crate::common::durable;
use crate::common::error::{Error, Result};

use super::label::parse_lsn;
use super::{Backup, MANIFEST, SUCCESS};

/// From when a backup can be restored: recovery from it must replay WAL up
/// to the end of the backup (STOP WAL LOCATION) before it reaches a
/// consistent state, and PostgreSQL refuses a recovery target before that
/// ("requested recovery stop point is before consistent recovery point").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consistency {
    /// A moment at or after the backup's end, Unix seconds (rounded up) on
    /// the archive server's clock: SUCCESS's `consistent_by=` (taken when
    /// pg_basebackup exited), else backup_manifest's mtime (pg_basebackup
    /// writes it last), else, for Archive 2.0's backups, the newest mtime
    /// of the directory and its files.
    pub by: Option<i64>,
    /// The backup's end LSN: SUCCESS's `stop_lsn=`, else read from
    /// backup_manifest ([`manifest_stop_lsn`]).
    pub stop_lsn: Option<u64>,
}

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
            .or_else(|| {
                self.legacy
                    .and_then(|_| super::legacy::end_micros(&self.path))
            })
            .map(|us| us.div_euclid(1_000_000) + i64::from(us.rem_euclid(1_000_000) != 0));
        let stop_lsn = success_value(&text, "stop_lsn")
            .and_then(parse_lsn)
            .or_else(|| manifest_stop_lsn(&self.path.join(MANIFEST)).ok()?);
        Consistency { by, stop_lsn }
    }
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

/// A file's mtime in microseconds since the epoch, rounded up.
pub(super) fn mtime_micros(path: &Path) -> Option<i64> {
    let m = fs::metadata(path).ok()?.modified().ok()?;
    let d = m.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_nanos().div_ceil(1000)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_comes_from_success_else_from_the_manifest_mtime() {
        let d = tempfile::tempdir().unwrap();
        let b = Backup {
            index: 0,
            path: d.path().to_path_buf(),
            complete: true,
            legacy: None,
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
}
