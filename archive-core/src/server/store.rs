//! The archive server's storage: where a received file is checked and how it
//! is written.
//!
//! A put is accepted only when the name is a PostgreSQL archive file name,
//! the directory lies under a configured archive root, the received size
//! and checksum match what was declared, and, for WAL segments, the page
//! header matches the name and the system identifier matches the one
//! recorded for the directory (WAL of another database is refused).
//! Content is sniffed: already compressed data is stored as received (a
//! single-frame zstd segment checked by its frame structure and first block,
//! other codecs decoded once to verify them), anything else is compressed
//! with zstd. The
//! file becomes visible only complete and durable ([`crate::common::durable`]).
//! An existing name is never overwritten: same content is success, other
//! content is a conflict and the incoming copy is kept aside for analysis.
//!
//! Per-directory metadata lives in `<dir>/.pgarchive/`, a name no WAL file
//! can have.

use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::common::codec::{self, Codec};
use crate::common::durable::{self, AtomicFile, Commit};
use crate::common::error::{Error, Result};
use crate::common::names::{validate_cluster_name, validate_dir_arg};
use crate::common::page_header;
use crate::common::wal::{self, WalName};
use crate::net::wire::{self, PutRequest, Request, StoreOutcome, CHUNK, MAX_FILE_SIZE};

/// Name of the per-directory metadata directory.
pub const META_DIR: &str = ".pgarchive";

/// The identity recorded for an archive directory by its first segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// PostgreSQL's database system identifier.
    pub system_identifier: u64,
    /// The cluster name the first put named.
    pub cluster: String,
}

/// Result of a successful put.
#[derive(Debug, Clone)]
pub struct Stored {
    /// New or already there.
    pub outcome: StoreOutcome,
    /// Codec of the bytes on disk.
    pub codec: Codec,
    /// Bytes on disk.
    pub stored_size: u64,
    /// Final path.
    pub path: PathBuf,
}

/// Storage under the configured archive roots.
#[derive(Debug, Clone)]
pub struct Store {
    roots: Vec<PathBuf>,
    level: i32,
    io_timeout: Duration,
}

impl Store {
    /// A store writing under `roots`, compressing at zstd `level`.
    pub fn new(roots: Vec<PathBuf>, level: i32, io_timeout: Duration) -> Store {
        Store {
            roots,
            level,
            io_timeout,
        }
    }

    /// Resolves a DST-DIR argument to a directory under an archive root.
    pub fn archive_dir(&self, dir: &str) -> Result<PathBuf> {
        validate_dir_arg(dir)?;
        let path: PathBuf = Path::new(dir)
            .components()
            .filter(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            .collect();
        if self.roots.iter().any(|root| path.starts_with(root)) {
            Ok(path)
        } else {
            let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
            Err(Error::Refused(format!(
                "archive directory {dir} is not under an archive root of this server ({}); fix DST-DIR or archive_roots",
                roots.join(", ")
            )))
        }
    }

    /// Resolves a backup directory argument: same rules as archive
    /// directories (backups live under the archive roots too).
    pub fn backup_dir(&self, dir: &str) -> Result<PathBuf> {
        self.archive_dir(dir)
    }

    /// Raw size and blake3 of stored files (`None` when missing).
    pub fn digests(&self, dir: &str, names: &[String]) -> Result<Vec<Option<wire::RawDigest>>> {
        let path = self.archive_dir(dir)?;
        names
            .iter()
            .map(|n| {
                wal::validate_file_name(n)?;
                let p = path.join(n);
                if !p.exists() {
                    return Ok(None);
                }
                let (raw_size, hash, _, _) = raw_digest(&p)?;
                Ok(Some(wire::RawDigest {
                    raw_size,
                    blake3: hash.to_hex().to_string(),
                }))
            })
            .collect()
    }

    /// Opens a stored file for sending: (file, size, mtime).
    pub fn open(&self, dir: &str, name: &str) -> Result<(File, u64, i64)> {
        wal::validate_file_name(name)?;
        let path = self.archive_dir(dir)?.join(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("{name} is not in {dir}")))
            }
            Err(e) => return Err(Error::io("cannot open", &path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("cannot stat", &path, e))?;
        Ok((file, meta.len(), unix_mtime(&meta)))
    }

    /// The archive files of `dir` (a missing directory is empty), by name.
    pub fn list(&self, dir: &str) -> Result<Vec<wire::ListEntry>> {
        let path = self.archive_dir(dir)?;
        let rd = match fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot list", &path, e)),
        };
        let mut files = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("cannot list", &path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if durable::is_temp_name(&name) || WalName::parse(&name).is_err() {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(|e| Error::io("cannot stat", entry.path(), e))?;
            if meta.is_file() {
                files.push(wire::ListEntry {
                    name,
                    size: meta.len(),
                    mtime: unix_mtime(&meta),
                });
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Removes archive files from `dir` and fsyncs it: (removed, missing).
    pub fn remove(&self, dir: &str, names: &[String]) -> Result<(u64, u64)> {
        let path = self.archive_dir(dir)?;
        for n in names {
            wal::validate_file_name(n)?;
            WalName::parse(n)?;
        }
        let (mut removed, mut missing) = (0, 0);
        for n in names {
            match fs::remove_file(path.join(n)) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing += 1,
                Err(e) => return Err(Error::io("cannot remove", path.join(n), e)),
            }
        }
        if removed > 0 {
            durable::sync_dir(&path)?;
        }
        Ok((removed, missing))
    }

    /// Takes the exclusive lock `name` of `dir` without waiting; the lock
    /// is held while the returned file stays open.
    pub fn lock(&self, dir: &str, name: &str, holder: &str) -> Result<File> {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::Refused(format!(
                "lock name {name:?} is not acceptable"
            )));
        }
        let meta = self.archive_dir(dir)?.join(META_DIR);
        durable::create_dir_all(&meta)?;
        crate::common::lock::try_lock(&meta.join(format!("{name}.lock")), holder)
    }

    /// Receives `req.size` content bytes and the closing checksum from `body`
    /// and stores them. On a refusal the rest of the content is still read,
    /// so the channel stays usable and the sender gets the reason.
    pub async fn put<R: AsyncRead + Unpin>(
        &self,
        req: &PutRequest,
        body: &mut R,
    ) -> Result<Stored> {
        self.put_closed_by::<Request, R>(req, body).await
    }

    /// [`Store::put`] for content closed by frame `E`: a client's upload
    /// ([`Request`]) or a server's download ([`wire::Reply`]), so a copy
    /// fetched from the peer is stored as it streams in.
    pub async fn put_closed_by<E: wire::ClosingFrame, R: AsyncRead + Unpin>(
        &self,
        req: &PutRequest,
        body: &mut R,
    ) -> Result<Stored> {
        let checked = self.check_request(req);
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
                drain::<E, R>(body, req.size, self.io_timeout).await?;
                return Err(e);
            }
        };
        let dest = dir.join(&req.name);
        let mut rx = Receiver::new(&dest, &name, self.level, req.size);
        let mut buf = vec![0u8; CHUNK];
        let mut remaining = req.size;
        while remaining > 0 {
            let n = wire::read_chunk(body, &mut buf, remaining, self.io_timeout).await?;
            rx.push(&buf[..n]);
            remaining -= n as u64;
        }
        let end: Option<E> = wire::read_frame(body, self.io_timeout).await?;
        let checksum = match end.and_then(E::into_checksum) {
            Some(checksum) => checksum,
            None => {
                return Err(Error::Protocol(
                    "file content not followed by its checksum".into(),
                ))
            }
        };
        let received = rx.finish(&checksum)?;
        self.commit(req, &dir, &name, received)
    }

    fn check_request(&self, req: &PutRequest) -> Result<(PathBuf, WalName)> {
        wal::validate_file_name(&req.name)?;
        let name = WalName::parse(&req.name)?;
        validate_cluster_name(&req.cluster)?;
        let dir = self.archive_dir(&req.dir)?;
        if req.size == 0 {
            return Err(Error::Refused(format!("{}: the file is empty", req.name)));
        }
        durable::create_dir_all(&dir)?;
        durable::remove_stale_temps(&dir, &req.name);
        Ok((dir, name))
    }

    fn commit(&self, req: &PutRequest, dir: &Path, name: &WalName, rx: Received) -> Result<Stored> {
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
            Commit::Exists(temp) => {
                // A stored copy that no longer decodes is this server's
                // damage, not the sender's: a failure (the client fails
                // over, and the peer's copy stays owed here), never
                // "refused", which would stall archiving on retries.
                let existing = raw_digest(&dest).map_err(|e| {
                    let _ = fs::remove_file(&temp);
                    match e {
                        Error::Refused(m) => Error::Io {
                            action: "the stored copy is damaged; move it away so that a good copy can be stored:",
                            path: dest.clone(),
                            source: std::io::Error::new(std::io::ErrorKind::InvalidData, m),
                        },
                        other => other,
                    }
                })?;
                let incoming = match rx.raw_hash {
                    Some(h) => h,
                    None => raw_digest(&temp)?.1,
                };
                if existing.1 == incoming {
                    let _ = fs::remove_file(&temp);
                    // "Already stored" is a promise of durability too: the
                    // copy found may be one whose writer died (or whose
                    // directory fsync failed) after its rename, or one a
                    // tool copied in without fsync.
                    durable::sync_file(&dest)?;
                    durable::sync_dir(dir)?;
                    let stored_size = fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
                    Ok(Stored {
                        outcome: StoreOutcome::AlreadyStored,
                        codec: existing.2,
                        stored_size,
                        path: dest,
                    })
                } else {
                    let aside = keep_aside(dir, name.as_str(), &temp, &incoming)?;
                    Err(Error::Conflict(format!(
                        "{} already exists in {} with different content; the stored copy is untouched, the incoming copy is kept at {} for analysis",
                        name,
                        dir.display(),
                        aside.display()
                    )))
                }
            }
        }
    }
}

fn unix_mtime(meta: &fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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

/// The identity recorded for an archive directory, if any.
pub fn recorded_identity(dir: &Path) -> Option<ClusterIdentity> {
    let bytes = fs::read(dir.join(META_DIR).join("system_identifier")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Compares (or records) the system identifier of an archive directory.
fn check_identity(dir: &Path, sysid: u64, cluster: &str) -> Result<()> {
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
    fs::rename(temp, &aside).map_err(|e| Error::io("cannot keep aside", &aside, e))?;
    durable::sync_dir(&rejected)?;
    Ok(aside)
}

/// Decodes a stored file: its raw size, blake3 of the raw bytes, its codec
/// and its first raw bytes (for header checks).
pub fn raw_digest(path: &Path) -> Result<(u64, blake3::Hash, Codec, Vec<u8>)> {
    let mut f = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut head = vec![0u8; codec::SNIFF_LEN];
    let n = codec::read_full(&mut f, &mut head).map_err(|e| Error::io("cannot read", path, e))?;
    head.truncate(n);
    let codec = codec::sniff(&head);
    let f = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut dec = codec::decoder(codec, BufReader::with_capacity(CHUNK, f))
        .map_err(|e| Error::Refused(format!("{}: {e}", path.display())))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut first = Vec::new();
    let mut total = 0u64;
    loop {
        let n = dec.read(&mut buf).map_err(|e| {
            Error::Refused(format!(
                "{} does not decode as {}: {e}",
                path.display(),
                codec.name()
            ))
        })?;
        if n == 0 {
            break;
        }
        if first.len() < page_header::LONG_HEADER_LEN {
            first.extend_from_slice(&buf[..n.min(page_header::LONG_HEADER_LEN)]);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hasher.finalize(), codec, first))
}

/// Compressed bytes read to decode the first block: a zstd block holds at
/// most 128 KiB, so this always covers the first one.
const FIRST_LEN: usize = 256 * 1024;

/// For a zstd WAL segment in `file`: the raw size its frame header declares
/// and its first raw bytes (the WAL page header), without decompressing the
/// rest. `None` (decode it
/// all) for other codecs and files, a file that is not exactly one complete
/// frame, a frame that does not declare its size, a start that does not
/// decode, or a declared size other than the header's segment size.
fn light_zstd_check(codec: Codec, name: &WalName, file: &Path) -> Option<(u64, Vec<u8>)> {
    if codec != Codec::Zstd || !name.has_page_header() {
        return None;
    }
    let mut f = File::open(file).ok()?;
    let mut first = vec![0u8; FIRST_LEN];
    let n = codec::read_full(&mut f, &mut first).ok()?;
    first.truncate(n);
    // Structurally whole: the one frame ends exactly at the end of the file.
    let len = f.metadata().ok()?.len();
    if codec::zstd_frame_len(&mut f).ok()?? != len {
        return None;
    }
    let size = zstd::zstd_safe::get_frame_content_size(&first).ok()??;
    let mut dec = zstd::stream::read::Decoder::new(&first[..]).ok()?;
    let mut head = vec![0u8; page_header::LONG_HEADER_LEN.min(size as usize)];
    dec.read_exact(&mut head).ok()?;
    let hdr = page_header::validate_first_page(&head, name).ok()?;
    (u64::from(hdr.seg_size) == size).then_some((size, head))
}

/// Incoming content being written to a temp file.
struct Receiver {
    name: WalName,
    level: i32,
    declared: u64,
    head: Vec<u8>,
    sink: Option<Sink>,
    payload_hash: blake3::Hasher,
    raw_size: u64,
    dest: PathBuf,
    error: Option<Error>,
    /// Header of plain content, checked before compressing it.
    header: Option<page_header::LongPageHeader>,
}

/// Plain files up to this size are compressed in one call once received:
/// about 15% less CPU than compressing the stream as it comes (whose window
/// keeps moving, the costlier "extDict" path); bigger ones are compressed
/// as they stream in, in bounded memory.
const WHOLE_MAX: u64 = 64 << 20;

enum Sink {
    Compress(zstd::stream::write::Encoder<'static, AtomicFile>),
    Whole(AtomicFile, Vec<u8>),
    AsIs(AtomicFile, Codec),
}

struct Received {
    file: AtomicFile,
    codec: Codec,
    stored_size: u64,
    /// blake3 of the raw content, when known without a full decode.
    raw_hash: Option<blake3::Hash>,
    system_identifier: Option<u64>,
}

impl Receiver {
    fn new(dest: &Path, name: &WalName, level: i32, declared: u64) -> Receiver {
        Receiver {
            name: name.clone(),
            level,
            declared,
            head: Vec::new(),
            sink: None,
            payload_hash: blake3::Hasher::new(),
            raw_size: 0,
            dest: dest.to_path_buf(),
            error: None,
            header: None,
        }
    }

    /// Takes the next content bytes. Errors are remembered, not returned, so
    /// the caller keeps draining the stream.
    fn push(&mut self, data: &[u8]) {
        self.payload_hash.update(data);
        if self.error.is_some() {
            return;
        }
        if self.sink.is_none() {
            // Decide the codec from the first SNIFF_LEN bytes (or all of a
            // smaller file).
            let want = codec::SNIFF_LEN.min(self.declared as usize);
            let take = (want - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            if self.head.len() < want {
                return;
            }
            let head = std::mem::take(&mut self.head);
            if let Err(e) = self.open_sink(&head) {
                self.error = Some(e);
                return;
            }
            self.write(&head);
            self.write(&data[take..]);
        } else {
            self.write(data);
        }
    }

    fn open_sink(&mut self, head: &[u8]) -> Result<()> {
        let codec = codec::sniff(head);
        let file = AtomicFile::create(&self.dest)?;
        self.sink = Some(match codec {
            Codec::Plain => {
                if self.name.has_page_header() {
                    self.header = Some(page_header::validate_first_page(head, &self.name)?);
                }
                if self.declared <= WHOLE_MAX {
                    Sink::Whole(file, Vec::with_capacity(self.declared as usize))
                } else {
                    let mut enc = codec::zstd_encoder(file, self.level)
                        .map_err(|e| Error::io("cannot start compressing", &self.dest, e))?;
                    let _ = enc.set_pledged_src_size(Some(self.declared));
                    Sink::Compress(enc)
                }
            }
            Codec::Xz => {
                return Err(Error::Refused(format!(
                    "{}: xz-compressed files are not supported; send it uncompressed or as zstd/gzip/bzip2",
                    self.name
                )))
            }
            other => Sink::AsIs(file, other),
        });
        Ok(())
    }

    fn write(&mut self, data: &[u8]) {
        if data.is_empty() || self.error.is_some() {
            return;
        }
        let res = match self.sink.as_mut().expect("opened") {
            Sink::Compress(enc) => {
                self.raw_size += data.len() as u64;
                enc.write_all(data)
            }
            Sink::Whole(_, buf) => {
                self.raw_size += data.len() as u64;
                buf.extend_from_slice(data);
                Ok(())
            }
            Sink::AsIs(f, _) => f.write_all(data),
        };
        if let Err(e) = res {
            self.error = Some(Error::io("cannot write", &self.dest, e));
        }
    }

    fn finish(mut self, checksum: &str) -> Result<Received> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let payload_hash = self.payload_hash.finalize();
        if payload_hash.to_hex().as_str() != checksum {
            // Damaged in transit, not bad input: a failure of this
            // connection, so the client counts it and can fail over.
            return Err(Error::Protocol(format!(
                "{}: checksum of the received bytes does not match the sender's; nothing stored, retry",
                self.name
            )));
        }
        if self.sink.is_none() {
            // Never reached SNIFF_LEN: impossible for a non-empty declared
            // size, since push() completes the head at the declared size.
            return Err(Error::Protocol(format!(
                "{}: no content received",
                self.name
            )));
        }
        let (file, codec) = match self.sink.take().expect("checked") {
            Sink::Compress(enc) => {
                let f = enc
                    .finish()
                    .map_err(|e| Error::io("cannot finish compressing", &self.dest, e))?;
                (f, Codec::Zstd)
            }
            Sink::Whole(mut f, raw) => {
                let z = codec::zstd_compress(&raw, self.level)
                    .map_err(|e| Error::io("cannot compress", &self.dest, e))?;
                f.write_all(&z)
                    .map_err(|e| Error::io("cannot write", &self.dest, e))?;
                (f, Codec::Zstd)
            }
            Sink::AsIs(f, codec) => (f, codec),
        };
        let stored_size = file
            .temp_path()
            .metadata()
            .map_err(|e| Error::io("cannot stat", file.temp_path().to_path_buf(), e))?
            .len();
        let (raw_size, raw_hash, head) = if codec == Codec::Zstd && self.raw_size > 0 {
            // Compressed here: the payload is the raw content.
            (self.raw_size, Some(payload_hash), Vec::new())
        } else if let Some((size, head)) = light_zstd_check(codec, &self.name, file.temp_path()) {
            // zstd from a peer server or a compressing primary: the transfer
            // checksum proves the bytes are what the sender holds, the frame
            // header gives the raw size and the first block the WAL header.
            // The full decode (the costliest step of a forward) is left to
            // readers, which verify every byte anyway; a duplicate put
            // decodes in full in commit().
            (size, None, head)
        } else {
            // Other codecs: decode once to prove it is whole and to learn
            // what it holds.
            let (size, hash, _, head) = raw_digest(file.temp_path()).map_err(|e| {
                Error::Refused(format!(
                    "{}: received compressed data is damaged: {e}",
                    self.name
                ))
            })?;
            (size, Some(hash), head)
        };
        let system_identifier = if self.name.has_page_header() {
            let hdr = match self.header.take() {
                Some(h) => h,
                None => page_header::validate_first_page(&head, &self.name)?,
            };
            if raw_size != u64::from(hdr.seg_size) {
                return Err(Error::Refused(format!(
                    "{}: {} bytes, but its header says segments are {} bytes; a WAL segment is never partial",
                    self.name, raw_size, hdr.seg_size
                )));
            }
            Some(hdr.system_identifier)
        } else {
            None
        };
        Ok(Received {
            file,
            codec,
            stored_size,
            raw_hash,
            system_identifier,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::page_header::build_long_header;
    use tokio::io::AsyncWriteExt;

    const SEG: u64 = 1 << 20;
    const SYSID: u64 = 7_000_000_000_000_000_001;

    /// A fabricated 1 MiB segment: a valid long header, then WAL-like bytes.
    fn segment(name: &str, sysid: u64, fill: u8) -> Vec<u8> {
        let n = WalName::parse(name).unwrap();
        let mut v = vec![0u8; SEG as usize];
        for (i, b) in v.iter_mut().enumerate() {
            *b = ((i / 97) as u8).wrapping_mul(fill) ^ (i as u8 & 0x0f);
        }
        v[..40].copy_from_slice(&build_long_header(
            15,
            1,
            n.start_lsn(SEG),
            sysid,
            SEG as u32,
        ));
        v
    }

    fn req(dir: &Path, name: &str, size: u64) -> PutRequest {
        PutRequest {
            dir: dir.to_string_lossy().into_owned(),
            name: name.into(),
            size,
            mtime: 1_700_000_000,
            cluster: "main".into(),
            forward_to: None,
            from: None,
            forward_in_background: false,
        }
    }

    async fn put_bytes(store: &Store, r: &PutRequest, content: &[u8]) -> Result<Stored> {
        let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
        let content = content.to_vec();
        let writer = tokio::spawn(async move {
            tx.write_all(&content).await.unwrap();
            let sum = blake3::hash(&content).to_hex().to_string();
            wire::write_frame(
                &mut tx,
                &Request::End { checksum: sum },
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        });
        let res = store.put(r, &mut rx).await;
        writer.await.unwrap();
        res
    }

    fn store(root: &Path) -> Store {
        Store::new(vec![root.to_path_buf()], 1, Duration::from_secs(5))
    }

    fn visible(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
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

    /// Bytes damaged on the way are the connection's failure (the client
    /// counts it and can fail over), not bad input.
    #[tokio::test]
    async fn a_transfer_checksum_mismatch_is_a_failure_not_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "000000010000000000000006";
        let seg = segment(name, SYSID, 3);
        let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
        let sent = seg.clone();
        let writer = tokio::spawn(async move {
            tx.write_all(&sent).await.unwrap();
            let wrong = blake3::hash(b"something else").to_hex().to_string();
            let end = Request::End { checksum: wrong };
            wire::write_frame(&mut tx, &end, Duration::from_secs(5))
                .await
                .unwrap();
        });
        let e = store(root.path())
            .put(&req(&dir, name, SEG), &mut rx)
            .await
            .unwrap_err();
        writer.await.unwrap();
        assert!(e.is_host_failure(), "{e:?}");
        assert!(visible(&dir).is_empty(), "nothing stored");
    }

    #[tokio::test]
    async fn plain_segment_is_compressed_and_decodes_to_the_same_bytes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "000000010000000000000003";
        let seg = segment(name, SYSID, 3);
        let s = put_bytes(&store(root.path()), &req(&dir, name, SEG), &seg)
            .await
            .unwrap();
        assert_eq!(s.outcome, StoreOutcome::Stored);
        assert_eq!(s.codec, Codec::Zstd);
        let on_disk = fs::read(dir.join(name)).unwrap();
        assert!(on_disk.len() < seg.len());
        assert_eq!(codec::decode_all(Codec::Zstd, &on_disk).unwrap(), seg);
        let mtime = fs::metadata(dir.join(name)).unwrap().modified().unwrap();
        assert_eq!(
            mtime,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }

    #[tokio::test]
    async fn compressed_input_is_stored_as_received() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "000000010000000000000004";
        let seg = segment(name, SYSID, 5);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&seg).unwrap();
        let gz = gz.finish().unwrap();
        let s = put_bytes(&store(root.path()), &req(&dir, name, gz.len() as u64), &gz)
            .await
            .unwrap();
        assert_eq!(s.codec, Codec::Gzip);
        assert_eq!(fs::read(dir.join(name)).unwrap(), gz);
    }

    /// zstd as a peer server or a compressing primary sends it: one frame
    /// declaring its size.
    fn zstd_one_frame(raw: &[u8]) -> Vec<u8> {
        let mut enc = codec::zstd_encoder(Vec::new(), 1).unwrap();
        enc.set_pledged_src_size(Some(raw.len() as u64)).unwrap();
        enc.write_all(raw).unwrap();
        enc.finish().unwrap()
    }

    #[tokio::test]
    async fn zstd_from_a_peer_is_checked_by_its_frame_and_header() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let st = store(root.path());
        let name = "000000010000000000000006";
        let seg = segment(name, SYSID, 3);
        let z = zstd_one_frame(&seg);
        let s = put_bytes(&st, &req(&dir, name, z.len() as u64), &z)
            .await
            .unwrap();
        assert_eq!(s.codec, Codec::Zstd);
        assert_eq!(fs::read(dir.join(name)).unwrap(), z);

        // The header is still checked: a segment under another name is refused.
        let wrong = "000000010000000000000007";
        let e = put_bytes(&st, &req(&dir, wrong, z.len() as u64), &z)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e}");
        assert!(!dir.join(wrong).exists());

        // A duplicate compares raw content: the same segment compressed
        // otherwise is the same; other content is a conflict.
        let mut z9 = codec::zstd_encoder(Vec::new(), 9).unwrap();
        z9.write_all(&seg).unwrap();
        let z9 = z9.finish().unwrap();
        let again = put_bytes(&st, &req(&dir, name, z9.len() as u64), &z9)
            .await
            .unwrap();
        assert_eq!(again.outcome, StoreOutcome::AlreadyStored);
        let other = zstd_one_frame(&segment(name, SYSID, 4));
        let e = put_bytes(&st, &req(&dir, name, other.len() as u64), &other)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        assert_eq!(fs::read(dir.join(name)).unwrap(), z);
    }

    #[tokio::test]
    async fn zstd_in_several_frames_is_decoded_in_full() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "000000010000000000000008";
        let seg = segment(name, SYSID, 6);
        let half = seg.len() / 2;
        let mut z = zstd_one_frame(&seg[..half]);
        z.extend(zstd_one_frame(&seg[half..]));
        put_bytes(&store(root.path()), &req(&dir, name, z.len() as u64), &z)
            .await
            .unwrap();
        assert_eq!(
            codec::decode_all(Codec::Zstd, &fs::read(dir.join(name)).unwrap()).unwrap(),
            seg
        );

        // Cut short, though its start (and WAL header) decodes: refused.
        let name2 = "000000010000000000000009";
        let z2 = zstd_one_frame(&segment(name2, SYSID, 6));
        let cut = &z2[..z2.len() - 100];
        let e = put_bytes(
            &store(root.path()),
            &req(&dir, name2, cut.len() as u64),
            cut,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e}");
        assert!(!dir.join(name2).exists());
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

    #[tokio::test]
    async fn checksum_mismatch_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "00000002.history";
        let text = b"1\t0/3000000\tno recovery target specified\n";
        let (mut tx, mut rx) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            tx.write_all(text).await.unwrap();
            let end = Request::End {
                checksum: "00".into(),
            };
            wire::write_frame(&mut tx, &end, Duration::from_secs(5))
                .await
                .unwrap();
        });
        let r = req(&dir, name, text.len() as u64);
        let e = store(root.path()).put(&r, &mut rx).await.unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        assert!(visible(&dir).is_empty());
    }

    #[tokio::test]
    async fn history_file_is_stored() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let name = "00000002.history";
        let text = b"1\t0/3000000\tno recovery target specified\n";
        let s = put_bytes(
            &store(root.path()),
            &req(&dir, name, text.len() as u64),
            text,
        )
        .await
        .unwrap();
        let stored = fs::read(dir.join(name)).unwrap();
        assert_eq!(codec::decode_all(s.codec, &stored).unwrap(), text);
    }
}
