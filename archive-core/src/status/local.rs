//! What monitoring reads from local files: on an archive server the owed,
//! parked and rejected files of an archive directory (answering
//! [`crate::protocol::Request::DirStatus`]); on the primary the push queue's
//! drop log and the host health records.

use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::backups;
use crate::error::{Error, Result};
use crate::health::{self, HealthBook};
use crate::protocol::{BackupFinished, DirStatus, PeerFiles, DIR_STATUS_NAMES};
use crate::store::META_DIR;

use super::{DroppedSegment, HostHealth, PrimaryReport};

/// Visible entry names of `dir`, sorted (a missing dir has none).
fn names_in(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot list", dir, e)),
    };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

/// Per-peer files under `<dir>/.pgarchive/<kind>/<peer>/`.
fn per_peer(dir: &Path, kind: &str) -> Result<Vec<PeerFiles>> {
    let base = dir.join(META_DIR).join(kind);
    let mut out = Vec::new();
    for peer in names_in(&base)? {
        let p = base.join(&peer);
        if !p.is_dir() {
            continue;
        }
        let names = names_in(&p)?;
        if names.is_empty() {
            continue;
        }
        out.push(PeerFiles {
            peer,
            count: names.len() as u64,
            names: names.into_iter().take(DIR_STATUS_NAMES).collect(),
        });
    }
    Ok(out)
}

/// Unix seconds of a file's mtime.
fn mtime(path: &Path) -> Option<i64> {
    let m = fs::metadata(path).ok()?.modified().ok()?;
    Some(m.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64)
}

/// When a complete backup finished: SUCCESS's `finished=` line, else the
/// marker's mtime.
pub fn backup_finished(backup: &Path) -> Option<i64> {
    let marker = backup.join(backups::SUCCESS);
    let text = fs::read_to_string(&marker).ok()?;
    backups::success_time_micros(&text, "finished")
        .map(|us| us.div_euclid(1_000_000))
        .or_else(|| mtime(&marker))
}

/// The answer to a `DirStatus` request for archive directory `dir` (and
/// backup directory `backup_dir`), both already resolved under the
/// server's archive roots. Reads only; a missing directory is empty.
pub fn dir_status(dir: &Path, backup_dir: Option<&Path>) -> Result<DirStatus> {
    let rejected = names_in(&dir.join(META_DIR).join("rejected"))?;
    let mut backups_out = Vec::new();
    if let Some(b) = backup_dir {
        for backup in backups::list(b)? {
            backups_out.push(BackupFinished {
                index: backup.index,
                finished: if backup.complete {
                    backup_finished(&backup.path)
                } else {
                    None
                },
            });
        }
    }
    Ok(DirStatus {
        now: health::now(),
        owed: per_peer(dir, "owed")?,
        conflicts: per_peer(dir, "conflicts")?,
        rejected: rejected.len() as u64,
        rejected_names: rejected.into_iter().take(DIR_STATUS_NAMES).collect(),
        backups: backups_out,
    })
}

/// Parses `<state_dir>/<cluster>/dropped.log` (`time\tname\tbacklog=…\tlimit=…`
/// per line). `None` when there is no such file.
pub fn read_dropped(
    state_dir: &Path,
    cluster: &str,
) -> Result<Option<(String, Vec<DroppedSegment>)>> {
    let path = state_dir.join(cluster).join("dropped.log");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read", &path, e)),
    };
    Ok(Some((path.display().to_string(), parse_dropped(&text))))
}

/// Parses the lines of a drop log; lines without a segment name are skipped.
pub fn parse_dropped(text: &str) -> Vec<DroppedSegment> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let time = f.next()?.trim().to_string();
            let name = f.next()?.trim().to_string();
            crate::wal::WalName::parse(&name).ok()?;
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
    use crate::owed::OwedList;

    #[test]
    fn dir_status_counts_owed_parked_and_rejected_files() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("main");
        fs::create_dir_all(&dir).unwrap();
        let st = dir_status(&dir, None).unwrap();
        assert!(st.owed.is_empty() && st.conflicts.is_empty() && st.rejected == 0);
        assert!(st.now > 0);

        OwedList::new(&dir, "arch2")
            .add("000000010000000000000002")
            .unwrap();
        OwedList::new(&dir, "arch2")
            .add("000000010000000000000001")
            .unwrap();
        let parked = dir.join(META_DIR).join("conflicts").join("arch2");
        fs::create_dir_all(&parked).unwrap();
        fs::write(parked.join("000000010000000000000003"), b"").unwrap();
        let rejected = dir.join(META_DIR).join("rejected");
        fs::create_dir_all(&rejected).unwrap();
        fs::write(
            rejected.join("000000010000000000000004.0123456789abcdef"),
            b"x",
        )
        .unwrap();

        let backups = d.path().join("backups");
        fs::create_dir_all(backups.join("data.master.0")).unwrap();
        backups::write_success(&backups.join("data.master.0"), &[]).unwrap();
        fs::create_dir_all(backups.join("data.master.1")).unwrap();

        let st = dir_status(&dir, Some(&backups)).unwrap();
        assert_eq!(
            st.owed,
            [PeerFiles {
                peer: "arch2".into(),
                count: 2,
                names: vec![
                    "000000010000000000000001".into(),
                    "000000010000000000000002".into()
                ]
            }]
        );
        assert_eq!(st.conflicts[0].count, 1);
        assert_eq!(st.rejected, 1);
        assert_eq!(st.backups.len(), 2);
        let finished = st.backups[0].finished.unwrap();
        assert!((finished - health::now()).abs() < 60);
        assert_eq!(st.backups[1].finished, None, "no SUCCESS: not finished");
    }

    #[tokio::test]
    async fn dir_status_travels_as_a_frame() {
        use crate::protocol::{read_frame, write_frame, Reply, Request};
        let t = std::time::Duration::from_secs(1);
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let req = Request::DirStatus {
            dir: "/a/main".into(),
            backup_dir: Some("/a/backups/main".into()),
        };
        write_frame(&mut a, &req, t).await.unwrap();
        assert_eq!(
            read_frame::<_, Request>(&mut b, t).await.unwrap(),
            Some(req)
        );
        let reply = Reply::DirStatus(DirStatus {
            now: 5,
            rejected: 1,
            rejected_names: vec!["x.0123".into()],
            ..Default::default()
        });
        write_frame(&mut a, &reply, t).await.unwrap();
        assert_eq!(
            read_frame::<_, Reply>(&mut b, t).await.unwrap(),
            Some(reply)
        );
    }

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
