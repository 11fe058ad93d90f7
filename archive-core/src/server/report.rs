//! What an archive server says about its own directories: the owed,
//! parked and rejected files of an archive directory, when each backup
//! finished and what the last verify found (the answer to
//! [`crate::net::wire::Request::DirStatus`]).

use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::common::config::Config;
use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::net::health::{self, HealthBook};
use crate::net::wire::{BackupFinished, DirStatus, PeerFiles, VerifySummary, DIR_STATUS_NAMES};
use crate::server::backups;
use crate::server::owed;
use crate::server::store::META_DIR;

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
                finished: match (backup.complete, backup.legacy) {
                    (true, None) => backup_finished(&backup.path),
                    (true, Some(_)) => backup.consistency().by,
                    (false, _) => None,
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
        verify: read_verify_summary(dir).map(Box::new),
    })
}

/// `<dir>/.pgarchive/verify.json`: the last verify's [`VerifySummary`].
const VERIFY_RECORD: &str = "verify.json";

/// Most bytes of a verify record read: it lists at most
/// [`DIR_STATUS_NAMES`] names per server, far below this.
const VERIFY_RECORD_MAX: u64 = 256 << 10;

/// Records what a verify of archive directory `dir` found, durably
/// (replacing the previous record).
pub fn write_verify_summary(dir: &Path, summary: &VerifySummary) -> Result<()> {
    let meta = dir.join(META_DIR);
    durable::create_dir_all(&meta)?;
    let json = serde_json::to_vec_pretty(summary).expect("plain data serializes");
    durable::write_replace(&meta.join(VERIFY_RECORD), &json)
}

/// The last verify's record of `dir`; `None` when none ran, or when the
/// record cannot be read (monitoring then says "never", and the next run
/// rewrites it).
pub fn read_verify_summary(dir: &Path) -> Option<VerifySummary> {
    let path = dir.join(META_DIR).join(VERIFY_RECORD);
    let f = durable::open_no_follow(&path).ok()?;
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, VERIFY_RECORD_MAX), &mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

/// What `archive-remote-cmd status` prints: owed files per archive
/// directory and peer, and this server's health record of its peers.
#[derive(Debug, serde::Serialize)]
pub struct ServerStatus {
    /// Directories owing files to a peer.
    pub owed: Vec<OwedStatus>,
    /// Failure counters of the peers this server forwards to.
    pub peers: Vec<PeerStatus>,
}

/// One archive directory's owed files to one peer.
#[derive(Debug, serde::Serialize)]
pub struct OwedStatus {
    /// The archive directory.
    pub dir: String,
    /// The peer.
    pub peer: String,
    /// How many files.
    pub owed: usize,
}

/// A peer's failure counter as this server sees it.
#[derive(Debug, serde::Serialize)]
pub struct PeerStatus {
    /// The peer's host alias.
    pub host: String,
    /// Consecutive failures.
    pub failures: u32,
    /// Unix seconds until which it is in cooldown (0: none).
    pub cooldown_until: i64,
}

/// Reads the owed lists under `cfg.archive_roots` and the peers' health.
pub fn server_status(cfg: &Config) -> Result<ServerStatus> {
    let owed = owed::all_owed(&cfg.archive_roots)
        .into_iter()
        .map(|o| OwedStatus {
            dir: o.dir.display().to_string(),
            peer: o.peer,
            owed: o.count,
        })
        .collect();
    let peers = HealthBook::open(&cfg.state_dir().join("health"))?
        .all()
        .into_iter()
        .map(|(host, st)| PeerStatus {
            host,
            failures: st.failures,
            cooldown_until: st.cooldown_until,
        })
        .collect();
    Ok(ServerStatus { owed, peers })
}

impl ServerStatus {
    /// One line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::owed::OwedList;

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
        assert_eq!(st.verify, None, "never verified");
    }

    #[test]
    fn the_last_verify_travels_in_dir_status() {
        use crate::net::wire::VerifyCounts;
        let d = tempfile::tempdir().unwrap();
        let summary = VerifySummary {
            started: 10,
            finished: 20,
            server: Some("arch1".into()),
            local: VerifyCounts {
                host: "arch1".into(),
                wal_files: 3,
                damaged: 1,
                damaged_names: vec!["000000010000000000000002: bad".into()],
                ..Default::default()
            },
            peer: None,
        };
        write_verify_summary(d.path(), &summary).unwrap();
        assert_eq!(
            dir_status(d.path(), None).unwrap().verify.as_deref(),
            Some(&summary)
        );
        // An older server's reply, without the field, still parses.
        let old: DirStatus = serde_json::from_str(
            r#"{"now":5,"owed":[],"conflicts":[],"rejected":0,"rejected_names":[],"backups":[]}"#,
        )
        .unwrap();
        assert_eq!(old.verify, None);
        // A damaged record reads as none, never as an error of the listing.
        fs::write(d.path().join(META_DIR).join(VERIFY_RECORD), b"{").unwrap();
        assert_eq!(dir_status(d.path(), None).unwrap().verify, None);
    }

    #[tokio::test]
    async fn dir_status_travels_as_a_frame() {
        use crate::net::wire::{read_frame, write_frame, Reply, Request};
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
}
