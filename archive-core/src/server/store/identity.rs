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
    // Two rounds at most: a concurrent first put may record it between our
    // read and our write, and then theirs is read back.
    for _ in 0..2 {
        if record_identity(dir, sysid, cluster)? {
            return Ok(());
        }
    }
    Err(Error::Refused(format!(
        "{}: the identity record keeps changing; check the directory",
        dir.join(META_DIR).join("system_identifier").display()
    )))
}

/// One round of [`check_identity`]: true once compared or recorded, false
/// when a concurrent writer recorded it first.
fn record_identity(dir: &Path, sysid: u64, cluster: &str) -> Result<bool> {
    let meta = dir.join(META_DIR);
    let path = meta.join("system_identifier");
    let bytes = match fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // A directory or an unreadable file in its place: the record
        // cannot be trusted, nor written; an operator must look.
        Err(e) => {
            return Err(Error::Io {
                action: "cannot read the archive's identity record (repair or remove it):",
                path,
                source: e,
            })
        }
    };
    if let Some(bytes) = bytes {
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
        return Ok(true);
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
        Commit::Stored => Ok(true),
        // A concurrent first put recorded it: compare against theirs.
        Commit::Exists(temp) => {
            let _ = fs::remove_file(temp);
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::testing::{put_bytes, req, segment, store, visible, SEG, SYSID};
    use crate::server::store::META_DIR;

    /// A directory where the record should be made every later put recurse
    /// until the stack overflowed, crashing the server for good.
    #[tokio::test]
    async fn an_identity_record_that_is_a_directory_fails_the_put_without_a_crash() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        fs::create_dir_all(dir.join(META_DIR).join("system_identifier")).unwrap();
        let st = store(root.path());
        let name = "000000010000000000000001";
        let e = put_bytes(&st, &req(&dir, name, SEG), &segment(name, SYSID, 1))
            .await
            .unwrap_err();
        assert!(e.is_host_failure(), "{e:?}");
        assert!(e.to_string().contains("identity record"), "{e}");
        assert!(visible(&dir).is_empty());
    }

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
