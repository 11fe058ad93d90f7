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

use super::digest;
use super::identity::check_identity;
use super::raw;
use super::receiver::{Received, Receiver};
use super::{Store, Stored, META_DIR};

/// [`Store::put_closed_by`]: receives `req.size` content bytes and the
/// closing frame `E` from `body` and stores them; `prove`: check the raw
/// digest the request declares by a full decode whatever the codec.
pub(super) async fn receive<E: wire::ClosingFrame, R: AsyncRead + Unpin>(
    store: &Store,
    req: &PutRequest,
    body: &mut R,
    prove: bool,
) -> Result<Stored> {
    let checked = check_request(store, req);
    if req.size > MAX_FILE_SIZE {
        // Too big to drain: the channel is given up.
        return Err(Error::Refused(format!(
            "{}: declared size {} is larger than any WAL file",
            req.name, req.size
        )));
    }
    let (dir, name, raw_declared) = match checked {
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
    let stored = receive_into::<E, R>(store, req, body, &dir, &name, raw_declared, prove).await;
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
    raw_declared: Option<blake3::Hash>,
    prove: bool,
) -> Result<Stored> {
    let dest = dir.join(&req.name);
    let max_raw = store.max_raw_size(name);
    let mut rx = Receiver::new(
        &dest,
        name,
        store.level,
        req.size,
        max_raw,
        raw_declared,
        prove,
    );
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

/// The resolved directory, parsed name and declared raw digest of an
/// acceptable put.
fn check_request(
    store: &Store,
    req: &PutRequest,
) -> Result<(PathBuf, WalName, Option<blake3::Hash>)> {
    wal::validate_file_name(&req.name)?;
    let name = WalName::parse(&req.name)?;
    let raw_declared = req
        .raw_blake3
        .as_deref()
        .map(|h| digest::parse(h, &req.name))
        .transpose()?;
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
    Ok((dir, name, raw_declared))
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
/// visible under its name, durably, its content proof recorded first (see
/// [`digest`]: the record is durable before the file's no-replace rename,
/// so no crash leaves a visible file without its record); an existing name
/// is settled by [`settle_existing`].
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
    // The content is made durable before the name's lock is taken: only
    // the record and the rename wait for another put of the same stripe.
    let temp = file.temp_path().to_path_buf();
    file.file()
        .sync_all()
        .map_err(|e| Error::io("cannot fsync", &temp, e))?;
    let held = digest::lock_name(dir, name.as_str())?;
    let dest = dir.join(name.as_str());
    let new_name = fs::symlink_metadata(&dest).is_err();
    if new_name {
        digest::write(&held, dir, name.as_str(), &rx.raw_hash)?;
    }
    match file.commit()? {
        Commit::Stored => {
            if !new_name {
                // Removed behind the store's back since the look: the
                // record follows the rename this once.
                digest::write(&held, dir, name.as_str(), &rx.raw_hash)?;
            }
            Ok(Stored {
                outcome: StoreOutcome::Stored,
                codec: rx.codec,
                stored_size: rx.stored_size,
                path: dest,
            })
        }
        Commit::Exists(temp) => {
            if new_name {
                // Put in place behind the store's back since the look: the
                // record just written is not that file's.
                digest::remove(&held, dir, name.as_str())?;
            }
            let incoming = Incoming {
                temp: &temp,
                raw_hash: rx.raw_hash,
                proven: rx.proven,
            };
            settle_existing(&held, dir, name, dest, incoming, max_raw)
        }
    }
}

/// A received copy whose name was taken.
struct Incoming<'a> {
    /// Where it is.
    temp: &'a Path,
    /// Its raw blake3: computed here, or as declared by the sender.
    raw_hash: blake3::Hash,
    /// Whether `raw_hash` was computed here.
    proven: bool,
}

/// `dest` exists already: the incoming copy is a duplicate or a conflict.
/// The stored copy must match its record, if it has one; one that has none
/// (stored before records existed) gets it when the incoming copy is the
/// same content.
fn settle_existing(
    held: &digest::NameLock,
    dir: &Path,
    name: &WalName,
    dest: PathBuf,
    incoming: Incoming<'_>,
    max_raw: u64,
) -> Result<Stored> {
    let temp = incoming.temp;
    let drop_temp = |e: Error| {
        let _ = fs::remove_file(temp);
        e
    };
    // A stored copy that no longer decodes is this server's damage, not the
    // sender's: a failure (the client fails over, and the peer's copy stays
    // owed here), never "refused", which would stall archiving on retries.
    let damaged = |why: String| Error::Io {
        action: "the stored copy is damaged; move it away so that a good copy can be stored:",
        path: dest.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
    };
    let existing = raw::decode(&dest, max_raw).map_err(|e| {
        drop_temp(match e {
            Error::Refused(m) => damaged(m),
            other => other,
        })
    })?;
    let recorded = digest::read(dir, name.as_str()).map_err(drop_temp)?;
    if let Some(r) = recorded.filter(|r| *r != existing.hash) {
        return Err(drop_temp(damaged(format!(
            "it decodes to blake3 {}, not to the {} recorded when it was accepted",
            existing.hash.to_hex(),
            r.to_hex()
        ))));
    }
    let incoming_hash = if incoming.proven {
        incoming.raw_hash
    } else {
        let h = raw::decode(temp, max_raw).map_err(drop_temp)?.hash;
        if h != incoming.raw_hash {
            return Err(drop_temp(Error::Refused(format!(
                "{name}: the content decodes to other bytes than the sender declared (blake3 {}, declared {}); nothing stored",
                h.to_hex(),
                incoming.raw_hash.to_hex()
            ))));
        }
        h
    };
    if existing.hash == incoming_hash {
        let _ = fs::remove_file(temp);
        if recorded.is_none() {
            // Proven just now by decoding it.
            digest::write(held, dir, name.as_str(), &existing.hash)?;
        }
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
        let aside = keep_aside(dir, name.as_str(), temp, &incoming_hash)?;
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

    use super::super::digest;
    use super::super::testing::{
        put_bytes, req, segment, store, visible, zstd_one_frame, SEG, SYSID,
    };
    use crate::common::codec::{self, Codec};
    use crate::common::error::Error;
    use crate::net::wire::{PutRequest, StoreOutcome};
    use crate::server::store::META_DIR;

    /// zstd without a content checksum, as a peer or a compressing primary
    /// may send it: a flipped literal still decodes.
    fn zstd_unchecked(raw: &[u8]) -> Vec<u8> {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        e.include_checksum(false).unwrap();
        e.set_pledged_src_size(Some(raw.len() as u64)).unwrap();
        std::io::Write::write_all(&mut e, raw).unwrap();
        e.finish().unwrap()
    }

    fn hex(raw: &[u8]) -> String {
        blake3::hash(raw).to_hex().to_string()
    }

    /// Every accepted file gets its content proof: content compressed here
    /// and compressed content without a declared digest (decoded in full)
    /// are proven here; zstd with a declared digest is recorded as declared
    /// (the light check), for readers to prove.
    #[tokio::test]
    async fn every_accepted_file_has_its_raw_digest_recorded() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let st = store(root.path());
        let plain = "000000010000000000000001";
        let seg = segment(plain, SYSID, 1);
        put_bytes(&st, &req(&dir, plain, SEG), &seg).await.unwrap();
        assert_eq!(digest::read(&dir, plain).unwrap(), Some(blake3::hash(&seg)));

        let undeclared = "000000010000000000000002";
        let seg2 = segment(undeclared, SYSID, 2);
        let z2 = zstd_unchecked(&seg2);
        put_bytes(&st, &req(&dir, undeclared, z2.len() as u64), &z2)
            .await
            .unwrap();
        assert_eq!(
            digest::read(&dir, undeclared).unwrap(),
            Some(blake3::hash(&seg2))
        );

        let declared = "000000010000000000000003";
        let seg3 = segment(declared, SYSID, 3);
        let z3 = zstd_one_frame(&seg3);
        let mut r = req(&dir, declared, z3.len() as u64);
        r.raw_blake3 = Some(hex(&seg3));
        put_bytes(&st, &r, &z3).await.unwrap();
        assert_eq!(
            digest::read(&dir, declared).unwrap(),
            Some(blake3::hash(&seg3))
        );
        assert_eq!(visible(&dir), [plain, undeclared, declared]);
        // A get announces it.
        let (_, _, _, announced) = st.open(&dir.to_string_lossy(), declared).unwrap();
        assert_eq!(announced, Some(blake3::hash(&seg3)));

        // Retention takes the record with the file.
        st.remove(&dir.to_string_lossy(), &[plain.to_string()])
            .unwrap();
        assert!(digest::read(&dir, plain).unwrap().is_none());
    }

    /// Content that the server decodes (plain, or any compressed copy when
    /// proving is asked for) must be what the sender declared: else it is
    /// refused and nothing is stored, not even a record.
    #[tokio::test]
    async fn content_other_than_the_declared_digest_is_refused_and_nothing_stored() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let st = store(root.path());
        let name = "000000010000000000000004";
        let seg = segment(name, SYSID, 4);
        let mut forged = seg.clone();
        forged[300_000] ^= 0x20;
        let mut r = req(&dir, name, SEG);
        r.raw_blake3 = Some(hex(&seg));
        let e = put_bytes(&st, &r, &forged).await.unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e}");
        assert!(e.to_string().contains("declared"), "{e}");
        assert!(!dir.exists(), "nothing created");

        // zstd, proven (wal-sync's pulls): decoded and refused likewise.
        let z = zstd_unchecked(&forged);
        let mut r = req(&dir, name, z.len() as u64);
        r.raw_blake3 = Some(hex(&seg));
        let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
        let sent = z.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&sent).await.unwrap();
            let end = crate::net::wire::Request::End {
                checksum: hex(&sent),
            };
            crate::net::wire::write_frame(&mut tx, &end, std::time::Duration::from_secs(5))
                .await
                .unwrap();
        });
        let e = st
            .put_closed_by::<crate::net::wire::Request, _>(&r, &mut rx, true)
            .await
            .unwrap_err();
        writer.await.unwrap();
        assert!(matches!(e, Error::Refused(_)), "{e}");
        assert!(!dir.exists(), "nothing created");

        // A digest that is not one is refused too.
        let mut r = req(&dir, name, SEG);
        r.raw_blake3 = Some("not hex".into());
        let e = put_bytes(&st, &r, &seg).await.unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e}");
    }

    /// A stored copy that still decodes but is not the content recorded
    /// for it (a flipped literal in zstd without a checksum) is this
    /// server's damage: a later put of the name is a failure naming it,
    /// and wal-sync's proof refuses it.
    #[tokio::test]
    async fn a_stored_copy_that_is_not_its_record_is_damaged() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let st = store(root.path());
        let name = "000000010000000000000005";
        let seg = segment(name, SYSID, 5);
        put_bytes(&st, &req(&dir, name, SEG), &seg).await.unwrap();
        let dir_arg = dir.to_string_lossy().into_owned();
        assert_eq!(
            st.proven_digest(&dir_arg, name).unwrap(),
            blake3::hash(&seg)
        );
        let mut forged = seg.clone();
        forged[300_000] ^= 0x20;
        fs::write(dir.join(name), zstd_unchecked(&forged)).unwrap();
        let e = put_bytes(&st, &req(&dir, name, SEG), &seg)
            .await
            .unwrap_err();
        assert!(e.is_host_failure(), "{e:?}");
        assert!(e.to_string().contains("recorded"), "{e}");
        let e = st.proven_digest(&dir_arg, name).unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e}");
        assert_eq!(visible(&dir), [name]);
    }

    /// A file stored before records existed is served unproven; a put of
    /// the same content proves it and records it.
    #[tokio::test]
    async fn a_file_without_a_record_gets_one_from_a_duplicate_put() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let st = store(root.path());
        let name = "000000010000000000000006";
        let seg = segment(name, SYSID, 6);
        put_bytes(&st, &req(&dir, name, SEG), &seg).await.unwrap();
        fs::remove_file(digest::record_path(&dir, name)).unwrap();
        let dir_arg = dir.to_string_lossy().into_owned();
        assert_eq!(st.open(&dir_arg, name).unwrap().3, None);
        assert_eq!(
            st.proven_digest(&dir_arg, name).unwrap(),
            blake3::hash(&seg)
        );
        let again = put_bytes(&st, &req(&dir, name, SEG), &seg).await.unwrap();
        assert_eq!(again.outcome, StoreOutcome::AlreadyStored);
        assert_eq!(digest::read(&dir, name).unwrap(), Some(blake3::hash(&seg)));
    }

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
