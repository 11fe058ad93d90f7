//! Chains of incremental backups (PostgreSQL 17 and later).
//!
//! An incremental backup (`pg_basebackup --incremental`) holds only what
//! changed since its parent, the backup whose `backup_manifest` it was
//! taken against; restoring it needs every backup of its chain, from a
//! full one up to it. Its SUCCESS marker names the parent twice: by
//! directory (`parent=data.master.N`, as it was when the incremental was
//! made) and by identity (`parent_manifest_checksum=`, the parent's
//! manifest checksum, and `parent_start_lsn=`). Rotation renumbers
//! directories, so the parent is found by its manifest checksum
//! ([`resolve`]); an incremental whose parent is gone is broken: not a
//! restorable point.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::common::error::{Error, Result};

use super::marker::success_value;
use super::{Backup, MANIFEST, SUCCESS};

/// `kind=` value of an incremental backup's SUCCESS (a full backup's
/// SUCCESS has no `kind=` line).
pub const INCREMENTAL: &str = "incremental";

/// What an incremental's SUCCESS says of its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    /// The parent's directory name when the incremental was made.
    pub name: String,
    /// The parent's manifest checksum (its identity).
    pub manifest_checksum: String,
    /// The parent's START LSN, as PostgreSQL prints it.
    pub start_lsn: Option<String>,
}

/// How much of a manifest's end is read for its checksum (the last line).
const CHECKSUM_TAIL: u64 = 4096;

/// The `Manifest-Checksum` a backup_manifest ends with (lower case hex).
pub fn manifest_checksum(path: &Path) -> Result<String> {
    let read = |e| Error::io("cannot read", path, e);
    let mut f = fs::File::open(path).map_err(read)?;
    let len = f.metadata().map_err(read)?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(CHECKSUM_TAIL)))
        .map_err(read)?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).map_err(read)?;
    let tail = String::from_utf8_lossy(&tail);
    let key = "\"Manifest-Checksum\": \"";
    tail.rfind(key)
        .map(|at| &tail[at + key.len()..])
        .and_then(|rest| rest.split_once('"'))
        .map(|(sum, _)| sum.to_ascii_lowercase())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            Error::Refused(format!(
                "{}: no Manifest-Checksum at its end: not a complete backup manifest",
                path.display()
            ))
        })
}

impl Backup {
    /// The parent an incremental backup's SUCCESS names; `None` for a full
    /// backup (or one whose SUCCESS cannot be read).
    pub fn parent_ref(&self) -> Option<ParentRef> {
        let text = fs::read_to_string(self.path.join(SUCCESS)).ok()?;
        if success_value(&text, "kind") != Some(INCREMENTAL) {
            return None;
        }
        Some(ParentRef {
            name: success_value(&text, "parent").unwrap_or("?").to_string(),
            manifest_checksum: success_value(&text, "parent_manifest_checksum")
                .unwrap_or_default()
                .to_ascii_lowercase(),
            start_lsn: success_value(&text, "parent_start_lsn").map(str::to_string),
        })
    }

    /// True when its SUCCESS marks it incremental.
    pub fn is_incremental(&self) -> bool {
        self.parent_ref().is_some()
    }
}

/// Where each backup of `numbered` stands in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// A full backup (or an incomplete directory).
    Full,
    /// An incremental whose parent is `numbered[i]`.
    Parent(usize),
    /// An incremental whose parent is not among them: not restorable.
    Broken,
}

/// The chain links of `numbered` (a [`super::list`]): each incremental's
/// parent found by its manifest checksum among the complete backups made
/// before it (lower numbers).
pub fn resolve(numbered: &[Backup]) -> Vec<Link> {
    let sums: Vec<Option<String>> = numbered
        .iter()
        .map(|b| {
            b.complete
                .then(|| manifest_checksum(&b.path.join(MANIFEST)).ok())
                .flatten()
        })
        .collect();
    numbered
        .iter()
        .enumerate()
        .map(|(i, b)| match b.parent_ref() {
            None => Link::Full,
            Some(p) => sums[..i]
                .iter()
                .rposition(|s| s.as_deref() == Some(p.manifest_checksum.as_str()))
                .map_or(Link::Broken, Link::Parent),
        })
        .collect()
}

/// The chain restoring `numbered[i]`: indexes into `numbered` from its full
/// backup up to `i`; `None` when it is broken.
pub fn chain(links: &[Link], i: usize) -> Option<Vec<usize>> {
    let mut out = vec![i];
    let mut at = i;
    // Parents are always lower: the walk ends.
    loop {
        match links.get(at)? {
            Link::Full => break,
            Link::Broken => return None,
            Link::Parent(p) => {
                out.push(*p);
                at = *p;
            }
        }
    }
    out.reverse();
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{list, slot, write_success};
    use super::*;

    /// A complete backup at `path` whose manifest checksum is `sum`, an
    /// incremental of the backup with checksum `parent` when given.
    pub(crate) fn make_backup(path: &Path, sum: &str, parent: Option<&str>) {
        fs::create_dir_all(path).unwrap();
        fs::write(
            path.join(MANIFEST),
            format!("{{ \"Files\": [],\n\"Manifest-Checksum\": \"{sum}\"}}\n"),
        )
        .unwrap();
        let mut fields = vec![("task", sum.to_string())];
        if let Some(p) = parent {
            fields.push(("kind", INCREMENTAL.to_string()));
            fields.push(("parent", "data.master.9".to_string()));
            fields.push(("parent_manifest_checksum", p.to_string()));
        }
        write_success(path, &fields).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }

    #[test]
    fn parents_are_found_by_identity_not_by_number() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        make_backup(&slot(dir, 0), "aa", None);
        make_backup(&slot(dir, 1), "bb", Some("aa"));
        make_backup(&slot(dir, 2), "cc", Some("bb"));
        make_backup(&slot(dir, 3), "dd", Some("ff"));
        make_backup(&slot(dir, 4), "ee", None);
        let numbered = list(dir).unwrap();
        let links = resolve(&numbered);
        assert_eq!(
            links,
            vec![
                Link::Full,
                Link::Parent(0),
                Link::Parent(1),
                Link::Broken,
                Link::Full
            ]
        );
        assert_eq!(chain(&links, 2), Some(vec![0, 1, 2]));
        assert_eq!(chain(&links, 3), None);
        assert_eq!(chain(&links, 4), Some(vec![4]));
        assert!(numbered[1].is_incremental() && !numbered[0].is_incremental());
        assert_eq!(
            manifest_checksum(&slot(dir, 2).join(MANIFEST)).unwrap(),
            "cc"
        );
        fs::write(slot(dir, 4).join(MANIFEST), "{ \"Files\": [").unwrap();
        assert!(manifest_checksum(&slot(dir, 4).join(MANIFEST)).is_err());
    }
}
