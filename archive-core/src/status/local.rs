//! What monitoring reads from local files on the primary: the push queue's
//! drop log and the host health records. (What an archive server says about
//! its own directories is `crate::server::report`.)

use std::fs;
use std::path::Path;

use crate::common::error::{Error, Result};
use crate::net::health::{self, HealthBook};

use super::{DroppedSegment, HostHealth, PrimaryReport};

/// A drop log as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropLog {
    /// The file read.
    pub path: String,
    /// Its entries.
    pub segments: Vec<DroppedSegment>,
}

/// Parses `<state_dir>/<cluster>/dropped.log` (`time\tname\tbacklog=…\tlimit=…`
/// per line). `None` when there is no such file.
pub fn read_dropped(state_dir: &Path, cluster: &str) -> Result<Option<DropLog>> {
    let path = state_dir.join(cluster).join("dropped.log");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read", &path, e)),
    };
    Ok(Some(DropLog {
        path: path.display().to_string(),
        segments: parse_dropped(&text),
    }))
}

/// Parses the lines of a drop log; lines without a segment name are skipped.
pub fn parse_dropped(text: &str) -> Vec<DroppedSegment> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let time = f.next()?.trim().to_string();
            let name = f.next()?.trim().to_string();
            crate::common::wal::WalName::parse(&name).ok()?;
            let mut seg = DroppedSegment {
                time,
                name,
                ..Default::default()
            };
            for field in f {
                if let Some(v) = field.strip_prefix("backlog=") {
                    seg.backlog = v.trim().to_string();
                } else if let Some(v) = field.strip_prefix("limit=") {
                    seg.limit = v.trim().to_string();
                }
            }
            Some(seg)
        })
        .collect()
}

/// The host health records under `<state_dir>/health`, without creating
/// anything. `None` when there are none.
pub fn read_health(state_dir: &Path) -> Option<PrimaryReport> {
    let dir = state_dir.join("health");
    if !dir.is_dir() {
        return None;
    }
    let book = HealthBook::open(&dir).ok()?;
    let now = health::now();
    let hosts = book
        .all()
        .into_iter()
        .map(|(host, st)| HostHealth {
            in_cooldown: st.in_cooldown(now),
            host,
            failures: st.failures,
            cooldown_until: st.cooldown_until,
            last_failure: st.last_failure,
            last_error: st.last_error,
        })
        .collect();
    Some(PrimaryReport {
        state_dir: state_dir.display().to_string(),
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_log_lines_parse() {
        let text =
            "2026-03-01T10:00:00Z\t000000010000000000000007\tbacklog=3145728\tlimit=2097152\n\
                    garbage\n\n";
        let d = parse_dropped(text);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].name, "000000010000000000000007");
        assert_eq!(d[0].backlog, "3145728");
        assert_eq!(d[0].limit, "2097152");
        let t = tempfile::tempdir().unwrap();
        assert_eq!(read_dropped(t.path(), "main").unwrap(), None);
    }

    #[test]
    fn health_is_read_without_creating_anything() {
        let t = tempfile::tempdir().unwrap();
        assert!(read_health(t.path()).is_none());
        assert!(!t.path().join("health").exists());
        let book = HealthBook::open(&t.path().join("health")).unwrap();
        book.record_failure("arch1", 1, 600, "refused").unwrap();
        let r = read_health(t.path()).unwrap();
        assert_eq!(r.hosts.len(), 1);
        assert!(r.hosts[0].in_cooldown);
        assert_eq!(r.hosts[0].failures, 1);
        assert_eq!(r.hosts[0].last_error, "refused");
    }
}
