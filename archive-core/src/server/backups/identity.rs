//! The identity marker of a backup directory ([`DIR_MARKER`]): proof that a
//! directory is the cluster's backup directory, so that wal-cleanup can
//! tell "this server has no backup yet" from "this directory is missing,
//! unmounted or the wrong one" (whose backups it must not ignore).
//!
//! base-backup writes it when it first uses the directory (before
//! pg_basebackup runs, so a failed first backup still marks it), bound to
//! the cluster's database system identifier as soon as one is known. A
//! directory holding complete backups proves itself without a marker
//! (installations that predate markers, Archive 2.0's directories); the
//! next base-backup run there writes the marker.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::net::wire::BackupDirIdentity;

use super::list;

/// File name of the marker in a backup directory (not a backup name, so
/// listing and rotation never see it).
pub const DIR_MARKER: &str = "pgarchive-backup-dir.json";

/// What the marker records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirMarker {
    /// The cluster (backup_queue's cluster_name).
    pub cluster: String,
    /// Its database system identifier, once known.
    #[serde(default)]
    pub system_identifier: Option<u64>,
    /// When the directory was first marked (RFC 3339, UTC).
    #[serde(default)]
    pub created: String,
}

/// The marker of `dir`; `None` when it has none. An unreadable or malformed
/// marker is an error: a doubt about the directory's identity stops
/// cleanup.
pub fn read_marker(dir: &Path) -> Result<Option<DirMarker>> {
    let p = dir.join(DIR_MARKER);
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read backup directory marker", &p, e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::Refused(format!(
            "{}: malformed backup directory marker ({e}); check the directory, then remove the file and let base-backup write it again",
            p.display()
        ))
    })
}

/// Marks `dir` as `cluster`'s backup directory (the directory must exist),
/// recording `system_identifier` when given and not yet recorded. Refuses a
/// directory marked for another cluster or database system. Returns the
/// marker as it now is.
pub fn mark(dir: &Path, cluster: &str, system_identifier: Option<u64>) -> Result<DirMarker> {
    let old = read_marker(dir)?;
    let p = dir.join(DIR_MARKER);
    if let Some(m) = &old {
        if m.cluster != cluster {
            return Err(Error::Refused(format!(
                "{} marks this backup directory as cluster {}'s, not {cluster}'s: the queue's directory for {cluster} is wrong, or two clusters share it",
                p.display(),
                m.cluster
            )));
        }
        match (m.system_identifier, system_identifier) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::Refused(format!(
                    "{} binds this backup directory to database system {a}, but this backup is of system {b}: the cluster was re-created or the directory is another cluster's; move the old backups away and remove the marker to start afresh",
                    p.display()
                )))
            }
            (Some(_), _) | (None, None) => return Ok(m.clone()),
            (None, Some(_)) => {}
        }
    }
    let m = DirMarker {
        cluster: cluster.to_string(),
        system_identifier,
        created: old.map(|m| m.created).unwrap_or_else(|| {
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }),
    };
    let json = serde_json::to_vec_pretty(&m)
        .map_err(|e| Error::Refused(format!("cannot encode {}: {e}", p.display())))?;
    durable::write_replace(&p, &json)?;
    Ok(m)
}

/// Whether `dir` is provably a backup directory (marked, or holding a
/// complete backup), and the system identifier its marker records.
pub fn dir_identity(dir: &Path) -> Result<BackupDirIdentity> {
    let marker = read_marker(dir)?;
    let proven = marker.is_some() || list(dir)?.iter().any(|b| b.complete);
    Ok(BackupDirIdentity {
        proven,
        system_identifier: marker.and_then(|m| m.system_identifier),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{label::tests::LABEL_TEXT, LABEL, PREFIX, SUCCESS};
    use super::*;

    #[test]
    fn a_directory_is_proven_by_its_marker_or_by_a_complete_backup() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("unmounted");
        assert!(!dir_identity(&missing).unwrap().proven);
        assert!(!dir_identity(d.path()).unwrap().proven, "empty, unmarked");

        let b = d.path().join(format!("{PREFIX}0"));
        fs::create_dir(&b).unwrap();
        fs::write(b.join(LABEL), LABEL_TEXT).unwrap();
        assert!(!dir_identity(d.path()).unwrap().proven, "incomplete only");
        fs::write(b.join(SUCCESS), b"").unwrap();
        assert!(dir_identity(d.path()).unwrap().proven, "a complete backup");
        fs::remove_dir_all(&b).unwrap();

        let m = mark(d.path(), "main", None).unwrap();
        assert_eq!(m.system_identifier, None);
        let id = dir_identity(d.path()).unwrap();
        assert!(id.proven);
        assert_eq!(id.system_identifier, None);
        // Bound to the system once known; the creation time stays.
        let m2 = mark(d.path(), "main", Some(7)).unwrap();
        assert_eq!(m2.system_identifier, Some(7));
        assert_eq!(m2.created, m.created);
        assert_eq!(dir_identity(d.path()).unwrap().system_identifier, Some(7));
        assert_eq!(mark(d.path(), "main", None).unwrap(), m2);
        // Another system or cluster is refused, the marker unchanged.
        assert!(matches!(
            mark(d.path(), "main", Some(8)),
            Err(Error::Refused(_))
        ));
        assert!(matches!(
            mark(d.path(), "other", Some(7)),
            Err(Error::Refused(_))
        ));
        assert_eq!(read_marker(d.path()).unwrap(), Some(m2));
        fs::write(d.path().join(DIR_MARKER), b"{").unwrap();
        assert!(dir_identity(d.path()).is_err(), "a doubt is an error");
    }
}
