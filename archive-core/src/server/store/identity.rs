//! The cluster identity of an archive directory: the system identifier (and
//! cluster name) its first WAL segment recorded in
//! `<dir>/.pgarchive/system_identifier`; WAL of another database is refused.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::common::durable::{self, AtomicFile, Commit};
use crate::common::error::{Error, Result};

use super::META_DIR;

/// The identity recorded for an archive directory by its first segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// PostgreSQL's database system identifier.
    pub system_identifier: u64,
    /// The cluster name the first put named.
    pub cluster: String,
}

/// The identity recorded for an archive directory, if any.
pub fn recorded_identity(dir: &Path) -> Option<ClusterIdentity> {
    let bytes = fs::read(dir.join(META_DIR).join("system_identifier")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Compares (or records) the system identifier of an archive directory.
pub(super) fn check_identity(dir: &Path, sysid: u64, cluster: &str) -> Result<()> {
    let meta = dir.join(META_DIR);
    let path = meta.join("system_identifier");
    if let Ok(bytes) = fs::read(&path) {
        let known: ClusterIdentity = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Refused(format!(
                "{} is unreadable ({e}); repair or remove it",
                path.display()
            ))
        })?;
        if known.system_identifier != sysid {
            return Err(Error::Refused(format!(
                "WAL of another database: system identifier {sysid} (cluster {cluster}), but {} holds cluster {} with system identifier {}; check DST-DIR and CLUSTER-NAME",
                dir.display(),
                known.cluster,
                known.system_identifier
            )));
        }
        return Ok(());
    }
    durable::create_dir_all(&meta)?;
    let id = ClusterIdentity {
        system_identifier: sysid,
        cluster: cluster.to_string(),
    };
    let mut f = AtomicFile::create(&path)?;
    f.write_all(&serde_json::to_vec(&id).expect("serializable"))
        .map_err(|e| Error::io("cannot write", &path, e))?;
    match f.commit()? {
        Commit::Stored => Ok(()),
        // A concurrent first put recorded it: compare against theirs.
        Commit::Exists(temp) => {
            let _ = fs::remove_file(temp);
            check_identity(dir, sysid, cluster)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{put_bytes, req, segment, store, visible, SEG, SYSID};

    #[tokio::test]
    async fn wal_of_another_cluster_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let st = store(root.path());
        let a = "000000010000000000000001";
        let b = "000000010000000000000002";
        put_bytes(&st, &req(&dir, a, SEG), &segment(a, SYSID, 1))
            .await
            .unwrap();
        let e = put_bytes(&st, &req(&dir, b, SEG), &segment(b, SYSID + 1, 1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("another database"), "{e}");
        assert_eq!(visible(&dir), [a]);
    }
}
