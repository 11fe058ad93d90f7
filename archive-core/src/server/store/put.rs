//! Receiving a put, from request to durable file: the request is checked
//! (name, cluster, directory, size), the content streamed into a
//! [`Receiver`], then committed under its name by a no-replace rename. A
//! name already stored is a duplicate (same raw content: success) or a
//! conflict (the stored copy untouched, the incoming one kept aside).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncRead;

use crate::common::durable::{self, Commit};
use crate::common::error::{Error, Result};
use crate::common::names::validate_cluster_name;
use crate::common::wal::{self, WalName};
use crate::net::wire::{self, PutRequest, StoreOutcome, CHUNK, MAX_FILE_SIZE};

use super::identity::check_identity;
use super::raw;
use super::receiver::{Received, Receiver};
use super::{Store, Stored, META_DIR};

/// [`Store::put_closed_by`]: receives `req.size` content bytes and the
/// closing frame `E` from `body` and stores them.
pub(super) async fn receive<E: wire::ClosingFrame, R: AsyncRead + Unpin>(
    store: &Store,
    req: &PutRequest,
    body: &mut R,
) -> Result<Stored> {
    let checked = check_request(store, req);
    if req.size > MAX_FILE_SIZE {
        // Too big to drain: the channel is given up.
        return Err(Error::Refused(format!(
            "{}: declared size {} is larger than any WAL file",
            req.name, req.size
        )));
    }
    let (dir, name) = match checked {
        Ok(v) => v,
        Err(e) => {
            drain::<E, R>(body, req.size, store.io_timeout).await?;
            return Err(e);
        }
    };
    // Nothing is created for a put that is refused: the directories made
    // for it go again (when still empty).
    let created = durable::create_dir_all_new(&dir)?;
    durable::remove_stale_temps(&dir, &req.name);
    let stored = receive_into::<E, R>(store, req, body, &dir, &name).await;
    if stored.is_err() {
        durable::remove_new_dirs(&created);
    }
    stored
}

/// The content of an accepted request into `dir`, checked and committed.
async fn receive_into<E: wire::ClosingFrame, R: AsyncRead + Unpin>(
    store: &Store,
    req: &PutRequest,
    body: &mut R,
    dir: &Path,
    name: &WalName,
) -> Result<Stored> {
    let dest = dir.join(&req.name);
    let max_raw = store.max_raw_size(name);
    let mut rx = Receiver::new(&dest, name, store.level, req.size, max_raw);
    let mut buf = vec![0u8; CHUNK];
    let mut remaining = req.size;
    while remaining > 0 {
        let n = wire::read_chunk(body, &mut buf, remaining, store.io_timeout).await?;
        rx.push(&buf[..n]);
        remaining -= n as u64;
    }
    let end: Option<E> = wire::read_frame(body, store.io_timeout).await?;
    let checksum = match end.and_then(E::into_checksum) {
        Some(checksum) => checksum,
        None => {
            return Err(Error::Protocol(
                "file content not followed by its checksum".into(),
            ))
        }
    };
    let received = rx.finish(&checksum)?;
    commit(req, dir, name, received, max_raw)
}

/// The resolved directory and parsed name of an acceptable put.
fn check_request(store: &Store, req: &PutRequest) -> Result<(PathBuf, WalName)> {
    wal::validate_file_name(&req.name)?;
    let name = WalName::parse(&req.name)?;
    validate_cluster_name(&req.cluster)?;
    let dir = store.archive_dir(&req.dir)?;
    if req.size == 0 {
        return Err(Error::Refused(format!("{}: the file is empty", req.name)));
    }
    // What is sent is never much larger than what it decodes to.
    let max = store.max_raw_size(&name).saturating_add(64 << 20);
    if req.size > max {
        return Err(Error::Refused(format!(
            "{}: declared size {} is larger than a file of this kind can be ({max} bytes)",
            req.name, req.size
        )));
    }
    Ok((dir, name))
}

/// Reads and discards `size` content bytes and the closing frame.
async fn drain<E: wire::ClosingFrame, R: AsyncRead + Unpin>(
    body: &mut R,
    size: u64,
    limit: Duration,
) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut remaining = size;
    while remaining > 0 {
        remaining -= wire::read_chunk(body, &mut buf, remaining, limit).await? as u64;
    }
    let _: Option<E> = wire::read_frame(body, limit).await?;
    Ok(())
}

/// Checks the directory's cluster identity, then makes the received file
/// visible under its name, durably; an existing name is settled by
/// [`settle_existing`].
fn commit(
    req: &PutRequest,
    dir: &Path,
    name: &WalName,
    rx: Received,
    max_raw: u64,
) -> Result<Stored> {
    if let Some(sysid) = rx.system_identifier {
        check_identity(dir, sysid, &req.cluster)?;
    }
    let mut file = rx.file;
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(req.mtime.max(0) as u64);
    file.set_mtime(mtime)?;
    let dest = dir.join(name.as_str());
    match file.commit()? {
        Commit::Stored => Ok(Stored {
            outcome: StoreOutcome::Stored,
            codec: rx.codec,
            stored_size: rx.stored_size,
            path: dest,
        }),
        Commit::Exists(temp) => settle_existing(dir, name, dest, &temp, rx.raw_hash, max_raw),
    }
}

/// `dest` exists already: the incoming copy in `temp` (raw blake3
/// `raw_hash` when known) is a duplicate or a conflict.
fn settle_existing(
    dir: &Path,
    name: &WalName,
    dest: PathBuf,
    temp: &Path,
    raw_hash: Option<blake3::Hash>,
    max_raw: u64,
) -> Result<Stored> {
    // A stored copy that no longer decodes is this server's damage, not the
    // sender's: a failure (the client fails over, and the peer's copy stays
    // owed here), never "refused", which would stall archiving on retries.
    let existing = raw::decode(&dest, max_raw).map_err(|e| {
        let _ = fs::remove_file(temp);
        match e {
            Error::Refused(m) => Error::Io {
                action:
                    "the stored copy is damaged; move it away so that a good copy can be stored:",
                path: dest.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, m),
            },
            other => other,
        }
    })?;
    let incoming = match raw_hash {
        Some(h) => h,
        None => raw::decode(temp, max_raw)?.hash,
    };
    if existing.hash == incoming {
        let _ = fs::remove_file(temp);
        // "Already stored" is a promise of durability too: the copy found
        // may be one whose writer died (or whose directory fsync failed)
        // after its rename, or one a tool copied in without fsync.
        durable::sync_file(&dest)?;
        durable::sync_dir(dir)?;
        let stored_size = fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        Ok(Stored {
            outcome: StoreOutcome::AlreadyStored,
            codec: existing.codec,
            stored_size,
            path: dest,
        })
    } else {
        let aside = keep_aside(dir, name.as_str(), temp, &incoming)?;
        Err(Error::Conflict(format!(
            "{} already exists in {} with different content; the stored copy is untouched, the incoming copy is kept at {} for analysis",
            name,
            dir.display(),
            aside.display()
        )))
    }
}

/// Most copies kept in `.pgarchive/rejected/` of one directory: beyond,
/// conflicting copies are refused without being kept, so a client cannot
/// fill the disk with them.
const MAX_REJECTED: usize = 256;

/// Moves a conflicting incoming copy to `.pgarchive/rejected/`. One copy
/// per distinct content: PostgreSQL retries a failing segment forever, and
/// each retry must not add another copy until the disk is full.
fn keep_aside(dir: &Path, name: &str, temp: &Path, raw_hash: &blake3::Hash) -> Result<PathBuf> {
    let rejected = dir.join(META_DIR).join("rejected");
    durable::create_dir_all(&rejected)?;
    let aside = rejected.join(format!("{name}.{}", &raw_hash.to_hex()[..16]));
    if aside.exists() {
        let _ = fs::remove_file(temp);
        return Ok(aside);
    }
    let kept = fs::read_dir(&rejected).map(|rd| rd.count()).unwrap_or(0);
    if kept >= MAX_REJECTED {
        let _ = fs::remove_file(temp);
        return Err(Error::Conflict(format!(
            "{name} already exists in {} with different content; the stored copy is untouched; the incoming copy is not kept: {} holds {MAX_REJECTED} rejected copies already, look at them",
            dir.display(),
            rejected.display()
        )));
    }
    fs::rename(temp, &aside).map_err(|e| Error::io("cannot keep aside", &aside, e))?;
    durable::sync_dir(&rejected)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::super::testing::{put_bytes, req, segment, store, visible, SEG, SYSID};
    use crate::common::codec::{self, Codec};
    use crate::common::error::Error;
    use crate::net::wire::{PutRequest, StoreOutcome};
    use crate::server::store::META_DIR;

    /// A stored copy that no longer decodes (bit rot) used to make every
    /// later put of that name "refused" (exit 3, no failover): archiving
    /// stalled on that server while the other was fine.
    #[tokio::test]
    async fn a_damaged_stored_copy_is_a_failure_of_this_server_not_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let st = store(root.path());
        let name = "000000010000000000000005";
        let seg = segment(name, SYSID, 3);
        put_bytes(&st, &req(&dir, name, SEG), &seg).await.unwrap();
        let mut damaged = fs::read(dir.join(name)).unwrap();
        let mid = damaged.len() / 2;
        damaged.truncate(mid);
        fs::write(dir.join(name), &damaged).unwrap();
        let e = put_bytes(&st, &req(&dir, name, SEG), &seg)
            .await
            .unwrap_err();
        assert!(e.is_host_failure(), "{e:?}");
        assert!(e.to_string().contains("damaged"), "{e}");
        assert_eq!(fs::read(dir.join(name)).unwrap(), damaged, "left as found");
        let left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".pgarchive")
            .collect();
        assert_eq!(left, [name], "no temp left");
    }

    #[tokio::test]
    async fn duplicate_same_content_succeeds_different_content_conflicts() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "000000010000000000000005";
        let st = store(root.path());
        let seg = segment(name, SYSID, 7);
        put_bytes(&st, &req(&dir, name, SEG), &seg).await.unwrap();
        let before = fs::read(dir.join(name)).unwrap();
        let again = put_bytes(&st, &req(&dir, name, SEG), &seg).await.unwrap();
        assert_eq!(again.outcome, StoreOutcome::AlreadyStored);
        let other = segment(name, SYSID, 9);
        let e = put_bytes(&st, &req(&dir, name, SEG), &other)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        assert_eq!(
            fs::read(dir.join(name)).unwrap(),
            before,
            "stored copy untouched"
        );
        let rejected = dir.join(META_DIR).join("rejected");
        let e2 = put_bytes(&st, &req(&dir, name, SEG), &other)
            .await
            .unwrap_err();
        assert!(matches!(e2, Error::Conflict(_)), "{e2}");
        let kept: Vec<_> = fs::read_dir(rejected).unwrap().flatten().collect();
        assert_eq!(
            kept.len(),
            1,
            "one incoming copy kept aside, retries add none"
        );
        let kept = fs::read(kept[0].path()).unwrap();
        assert_eq!(codec::decode_all(Codec::Zstd, &kept).unwrap(), other);
        assert_eq!(visible(&dir), [name]);
    }

    /// A refused put used to create its directory first, so a client could
    /// litter the roots with directories (one named like a future segment
    /// would take that segment's place).
    #[tokio::test]
    async fn a_refused_put_leaves_no_directory_behind() {
        let root = tempfile::tempdir().unwrap();
        let st = store(root.path());
        let name = "000000010000000000000006";
        let wrong = segment("000000010000000000000007", SYSID, 2);
        let dir = root.path().join("new").join("deeper");
        let e = put_bytes(&st, &req(&dir, name, SEG), &wrong)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e}");
        assert!(!root.path().join("new").exists(), "directories were left");
        // An accepted put creates them.
        put_bytes(&st, &req(&dir, name, SEG), &segment(name, SYSID, 2))
            .await
            .unwrap();
        assert_eq!(visible(&dir), [name]);
    }

    #[tokio::test]
    async fn a_link_below_the_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        let st = store(root.path());
        let name = "000000010000000000000006";
        let e = put_bytes(
            &st,
            &req(&root.path().join("evil").join("main"), name, SEG),
            &segment(name, SYSID, 2),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn bad_input_is_refused_and_nothing_is_visible() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let st = store(root.path());
        let name = "000000010000000000000006";
        let seg = segment(name, SYSID, 2);
        // Header page address belongs to another segment.
        let wrong = segment("000000010000000000000007", SYSID, 2);
        let cases: Vec<(PutRequest, Vec<u8>)> = vec![
            (req(&dir, name, SEG), wrong),
            (req(&dir, name, SEG / 2), seg[..(SEG / 2) as usize].to_vec()),
            (req(&dir, "../x", 3), b"abc".to_vec()),
            (req(&dir, &"0".repeat(65), 3), b"abc".to_vec()),
            (req(&dir, "00000001;rm", 3), b"abc".to_vec()),
            (req(Path::new("/elsewhere/main"), name, SEG), seg.clone()),
            (req(&dir.join("a$b"), name, SEG), seg.clone()),
            (req(&dir.join(".."), name, SEG), seg.clone()),
            (req(&dir.join(".pgarchive"), name, SEG), seg.clone()),
            (
                req(&dir.join("000000010000000000000042"), name, SEG),
                seg.clone(),
            ),
            (req(&dir, "00000002.history", 0), Vec::new()),
        ];
        for (r, content) in cases {
            let e = put_bytes(&st, &r, &content).await.unwrap_err();
            assert!(matches!(e, Error::Refused(_)), "{} {}: {e}", r.dir, r.name);
        }
        let mut bad_cluster = req(&dir, name, SEG);
        bad_cluster.cluster = "a b".into();
        assert!(put_bytes(&st, &bad_cluster, &seg).await.is_err());
        assert!(visible(&dir).is_empty());
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            leftovers.iter().all(|n| n == META_DIR),
            "no temp files: {leftovers:?}"
        );
    }
}
