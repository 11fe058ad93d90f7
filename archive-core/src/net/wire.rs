//! The wire protocol between the tools and `archive-remote-cmd serve`.
//!
//! The ssh command line is a constant; everything the user supplied travels
//! here, as data, so no remote shell ever interprets it. A message is a
//! frame: a 4-byte big-endian length and that many bytes of JSON. File
//! contents follow their request as raw bytes of the declared size, then a
//! [`Request::End`] frame carrying their checksum. One channel carries any
//! number of requests, so a backlog or a whole sync costs one remote exec.
//!
//! Every read and write is bounded by a stall timeout: a transfer that keeps
//! moving never times out, one that stops does, whatever its size.

use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::common::error::{Error, Result};

/// Version spoken by this build; bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest file a put or get carries: a 1 GiB segment (PostgreSQL's maximum) plus slack
/// for a compressed stream that grew.
pub const MAX_FILE_SIZE: u64 = (1 << 30) + (64 << 20);

/// Largest frame accepted: data travels outside frames, but a listing of a
/// big archive (100,000 files) is one frame.
pub const MAX_FRAME: u32 = 32 << 20;
/// Largest request a server reads: requests are small (a put's header, at
/// most [`MAX_NAMES`] names), unlike replies that list a whole directory;
/// a server never lets a client make it parse 32 MiB of JSON.
pub const MAX_REQUEST_FRAME: u32 = 1 << 20;
/// Most file names one request may carry (clients send 1000 at a time).
pub const MAX_NAMES: usize = 1000;
/// Size of the chunks file data is moved in.
pub const CHUNK: usize = 256 * 1024;

/// A request to an archive server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// First frame on a channel: checks both sides speak the same protocol.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// Store a file; `size` bytes of content and an [`Request::End`] follow.
    Put(PutRequest),
    /// Closes a file's content: the blake3 checksum of the bytes sent.
    End {
        /// Hex blake3 of the content bytes.
        checksum: String,
    },
    /// Sends a stored file as stored (compressed): a [`Reply::File`], its
    /// bytes, then a [`Reply::End`] with their checksum.
    Get {
        /// Archive directory.
        dir: String,
        /// File name.
        name: String,
    },
    /// Lists the WAL files (not temp or metadata files) of `dir`.
    List {
        /// Archive directory.
        dir: String,
    },
    /// Removes files from `dir` (retention). Only archive file names are
    /// accepted; missing ones are counted, not errors.
    Remove {
        /// Archive directory.
        dir: String,
        /// Names to remove.
        names: Vec<String>,
    },
    /// Takes an exclusive lock named `name` on `dir` for as long as this
    /// channel lives (one wal-sync or wal-cleanup at a time per directory).
    Lock {
        /// Archive directory.
        dir: String,
        /// Lock name, e.g. "wal-sync".
        name: String,
        /// Who asks (shown to the next one that finds the lock taken).
        holder: String,
    },
    /// Decodes stored files and returns their raw size and blake3 (to tell
    /// a differently compressed copy from different content).
    Digest {
        /// Archive directory.
        dir: String,
        /// Names.
        names: Vec<String>,
    },
    /// START WAL of the oldest complete backup in `backup_dir`.
    OldestBackup {
        /// Backup directory on the server.
        backup_dir: String,
    },
    /// The backups in `backup_dir`, with what their labels say.
    ListBackups {
        /// Backup directory on the server.
        backup_dir: String,
    },
    /// Sends one file of backup `index` (e.g. `base.tar.zst`) like
    /// [`Request::Get`].
    GetBackupFile {
        /// Backup directory on the server.
        backup_dir: String,
        /// N of data.master.N.
        index: u32,
        /// File name inside the backup.
        name: String,
    },
    /// pgarchive-check: can this key's directory `dir` be written, which
    /// system identifier is it bound to, does this server reach its `peer`,
    /// and does it hold `holds` (a WAL file name). Answered by
    /// [`Reply::SetupChecked`]; creates `dir` as a first put would.
    CheckSetup {
        /// Archive directory.
        dir: String,
        /// The other archive server's ssh alias, as the client forwards to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
        /// A WAL file name to look for in `dir`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holds: Option<String>,
    },
    /// Delivers the files this server owes `peer` for `dir`.
    DeliverOwed {
        /// Archive directory.
        dir: String,
        /// Peer host alias.
        peer: String,
    },
    /// What monitoring needs beyond a listing (`archive-status`): files
    /// owed per peer, conflicts parked per peer, rejected copies, the
    /// server's clock and, with `backup_dir`, when each backup finished.
    /// Answered by [`Reply::DirStatus`]; reads only.
    DirStatus {
        /// Archive directory.
        dir: String,
        /// Backup directory on the server, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backup_dir: Option<String>,
    },
}

/// A file to store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PutRequest {
    /// Archive directory on the server (DST-DIR).
    pub dir: String,
    /// File name (%f).
    pub name: String,
    /// Bytes of content that follow.
    pub size: u64,
    /// Source modification time, Unix seconds.
    pub mtime: i64,
    /// Cluster name, recorded with the directory's system identifier.
    pub cluster: String,
    /// Peer the server forwards to after storing (its own failure flag and
    /// cooldown apply); `None` for a forwarded copy.
    pub forward_to: Option<String>,
    /// On a forwarded copy: the sending server's name. Proof that it is up,
    /// so the receiver hands it what it owes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Forward after answering `Stored`, without a `Forward` reply: the
    /// client goes on while the server makes the second copy (the owed
    /// marker is durable before `Stored`, so nothing is forgotten).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_in_background: bool,
    /// Hex blake3 of the raw (decoded) content, when the sender knows it: a
    /// compressing primary (it hashed %p while compressing it), a forward
    /// and a wal-sync copy (the digest recorded when the file was first
    /// accepted). The server refuses content it decodes to anything else,
    /// and records it beside the file (see `server::store::digest`).
    /// Absent from older clients, and from a primary that sends %p as is
    /// (then the transfer checksum is the raw content's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_blake3: Option<String>,
}

/// One file of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListEntry {
    /// File name.
    pub name: String,
    /// Bytes on disk (as stored, usually compressed).
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
}

/// What a server knows of a backup directory's identity, so wal-cleanup
/// can tell a server without backups from a missing or unmounted directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupDirIdentity {
    /// It carries the identity marker, or holds a complete backup.
    pub proven: bool,
    /// The database system identifier its marker records.
    pub system_identifier: Option<u64>,
}

/// One backup of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupEntry {
    /// N of data.master.N.
    pub index: u32,
    /// SUCCESS marker present (verified, complete).
    pub complete: bool,
    /// START WAL segment, when the label is readable.
    pub start_wal: Option<String>,
    /// START WAL LOCATION as an LSN.
    pub start_lsn: Option<u64>,
    /// START TIME as written in the label.
    pub start_time: Option<String>,
    /// A moment at or after the backup's end, Unix seconds, server clock
    /// (the server maps it from its backups module); absent from older servers.
    pub consistent_by: Option<i64>,
    /// The backup's end LSN, when recorded.
    pub stop_lsn: Option<u64>,
    /// Files of the backup directory with their sizes.
    pub files: Vec<ListEntry>,
    /// An incremental backup (PostgreSQL 17 and later): restoring it needs
    /// its chain (absent, false, from older servers and for full backups).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
    /// An incremental's parent (N of data.master.N, found by its identity);
    /// `None` for a full backup, or an incremental whose parent is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
}

/// Files of an archive directory recorded toward one peer (owed to it,
/// or parked as conflicting with its copy).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerFiles {
    /// Peer host alias.
    pub peer: String,
    /// How many files.
    pub count: u64,
    /// The first names, oldest WAL first (at most [`DIR_STATUS_NAMES`]).
    pub names: Vec<String>,
}

/// When a backup of a [`Request::DirStatus`] finished.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupFinished {
    /// N of data.master.N.
    pub index: u32,
    /// Unix time from its SUCCESS marker (`finished=`, else the marker's
    /// mtime); `None` without a marker.
    pub finished: Option<i64>,
}

/// Answer to [`Request::DirStatus`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DirStatus {
    /// The server's clock, Unix seconds (to spot clock skew).
    pub now: i64,
    /// Files owed per peer (`.pgarchive/owed/<peer>/`).
    pub owed: Vec<PeerFiles>,
    /// Owed files the peer holds with other content, parked
    /// (`.pgarchive/conflicts/<peer>/`).
    pub conflicts: Vec<PeerFiles>,
    /// Number of incoming copies refused as conflicting and kept aside
    /// (`.pgarchive/rejected/`).
    pub rejected: u64,
    /// The first of their names (`<name>.<hash>`), at most [`DIR_STATUS_NAMES`].
    pub rejected_names: Vec<String>,
    /// Backups of `backup_dir`, oldest first.
    pub backups: Vec<BackupFinished>,
    /// The last `archive-remote-cmd verify` of the directory; absent when
    /// none ran (and from older servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Box<VerifySummary>>,
}

/// What one `archive-remote-cmd verify` run found, kept in the archive
/// directory (`.pgarchive/verify.json`) and shown by archive-status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifySummary {
    /// Unix time the run started (server clock).
    pub started: i64,
    /// Unix time it ended.
    pub finished: i64,
    /// The server that ran it (`server_name`), if configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// This server's copies.
    pub local: VerifyCounts,
    /// The peer's copies, fetched and checked here, when `--peer` was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<VerifyCounts>,
}

/// What a verify checked on one server and what it found wrong.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyCounts {
    /// The server whose copies these are (host alias or `server_name`).
    pub host: String,
    /// WAL files decoded (segments, history, backup history, partial).
    pub wal_files: u64,
    /// Complete backups checked against their manifest.
    pub backups: u64,
    /// Stored bytes read.
    pub bytes: u64,
    /// Damaged or missing items (a run of missing segments counts once).
    pub damaged: u64,
    /// The first of them, `name: what is wrong` (at most [`DIR_STATUS_NAMES`]).
    pub damaged_names: Vec<String>,
    /// Why the check could not run (to its end), if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl VerifyCounts {
    /// Nothing damaged and the check ran to its end.
    pub fn clean(&self) -> bool {
        self.damaged == 0 && self.error.is_none()
    }
}

/// Most names a [`DirStatus`] lists per kind (counts are complete).
pub const DIR_STATUS_NAMES: usize = 100;

/// Raw (decompressed) identity of a stored file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RawDigest {
    /// Decompressed size.
    pub raw_size: u64,
    /// Hex blake3 of the decompressed bytes.
    pub blake3: String,
}

/// The fields of [`Reply::SetupChecked`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupChecked {
    /// Why the directory cannot be written, if it cannot.
    pub dir_error: Option<String>,
    /// The system identifier the directory is bound to, if any yet.
    pub recorded_system_identifier: Option<u64>,
    /// Why the peer could not be reached, if asked and it could not.
    pub peer_error: Option<String>,
    /// Whether the directory holds the file asked for, if asked.
    pub holds: Option<bool>,
}

/// How a put ended on the server that received it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreOutcome {
    /// Newly stored, durably.
    Stored,
    /// The same content was already stored under this name.
    AlreadyStored,
}

/// What happened to the copy for the peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ForwardOutcome {
    /// The peer holds it now.
    Forwarded,
    /// Not delivered; recorded as owed, delivered when the peer answers.
    Owed {
        /// Why.
        reason: String,
    },
}

/// Error classes a server reports; they map onto exit codes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Invalid input; retrying will not help.
    Refused,
    /// A different file has this name.
    Conflict,
    /// Not stored.
    NotFound,
    /// Bad server configuration.
    Usage,
    /// Anything else (I/O, peer): retry.
    Failed,
}

/// A server's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Request::Hello`].
    Hello {
        /// Server's protocol version.
        version: u32,
        /// Server's configured name, if any.
        server: Option<String>,
        /// The role the channel's key was given (`--role`), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// Whether sshd ran the server as the key's forced command (it then
        /// sets SSH_ORIGINAL_COMMAND); `None` when not run by sshd.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        forced_command: Option<bool>,
    },
    /// Answer to [`Request::CheckSetup`].
    SetupChecked {
        /// Why `dir` cannot be written, if it cannot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir_error: Option<String>,
        /// The system identifier `dir` is bound to, if any yet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recorded_system_identifier: Option<u64>,
        /// Why the peer could not be reached, if asked and it could not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer_error: Option<String>,
        /// Whether `dir` holds the file asked for, if asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holds: Option<bool>,
    },
    /// The file is durably stored (file and directory fsynced).
    Stored {
        /// New or already there.
        outcome: StoreOutcome,
        /// Codec of the stored bytes ("zstd", "plain", ...).
        codec: String,
        /// Bytes on disk.
        stored_size: u64,
    },
    /// Sent after [`Reply::Stored`] when the put asked for forwarding.
    Forward(ForwardOutcome),
    /// Answer to [`Request::Get`]: `size` bytes follow, then [`Reply::End`].
    File {
        /// Bytes that follow (as stored).
        size: u64,
        /// Modification time, Unix seconds (when it was archived).
        mtime: i64,
        /// Hex blake3 of the raw content, recorded when the file was first
        /// accepted: the reader proves what it decodes against it. `None`
        /// for a file stored before records existed (or by hand), and from
        /// older servers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_blake3: Option<String>,
    },
    /// Closes a file's bytes: hex blake3 of what was sent.
    End {
        /// Checksum.
        checksum: String,
    },
    /// Answer to [`Request::List`].
    Listing {
        /// Files, sorted by name.
        files: Vec<ListEntry>,
    },
    /// Answer to [`Request::Remove`].
    Removed {
        /// Files removed.
        removed: u64,
        /// Files that were already gone.
        missing: u64,
    },
    /// Answer to [`Request::Digest`].
    Digests {
        /// One per name, in order; `None` for a missing file.
        files: Vec<Option<RawDigest>>,
    },
    /// Answer to [`Request::OldestBackup`].
    OldestBackup {
        /// START WAL segment of the oldest complete backup; `None`: no backup.
        start_wal: Option<String>,
        /// Whether the directory is provably the backup directory (absent
        /// from older servers: then unproven).
        #[serde(default)]
        identity: BackupDirIdentity,
    },
    /// Answer to [`Request::ListBackups`].
    Backups {
        /// Oldest first.
        backups: Vec<BackupEntry>,
    },
    /// Answer to [`Request::Lock`]: held until the channel closes.
    Locked,
    /// Answer to [`Request::DirStatus`].
    DirStatus(DirStatus),
    /// Owed files delivered.
    Delivered {
        /// Files now on the peer.
        delivered: u64,
        /// Files still owed.
        remaining: u64,
    },
    /// The request failed.
    Error {
        /// Class.
        kind: ErrorKind,
        /// One line naming file, host and what to do.
        message: String,
    },
}

impl Reply {
    /// Builds the error reply for a library error.
    pub fn from_error(e: &Error) -> Reply {
        let kind = match e {
            Error::Refused(_) => ErrorKind::Refused,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Usage(_) => ErrorKind::Usage,
            _ => ErrorKind::Failed,
        };
        Reply::Error {
            kind,
            message: e.to_string(),
        }
    }
}

/// Turns an error reply from `host` back into a library error.
pub fn reply_error(host: &str, kind: ErrorKind, message: String) -> Error {
    let message = format!("{message} (on {host})");
    match kind {
        ErrorKind::Refused => Error::Refused(message),
        ErrorKind::Conflict => Error::Conflict(message),
        ErrorKind::NotFound => Error::NotFound(message),
        ErrorKind::Usage => Error::host(host, message),
        ErrorKind::Failed => Error::host(host, message),
    }
}

/// Runs `fut` unless it makes no progress for `limit`.
pub async fn stall<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Protocol(format!("{what}: {e}"))),
        Err(_) => Err(Error::Protocol(format!(
            "{what}: no progress for {} s (stalled)",
            limit.as_secs()
        ))),
    }
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
    limit: Duration,
) -> Result<()> {
    let body = serde_json::to_vec(msg).expect("protocol messages serialize");
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    stall(limit, "sending a message", async {
        w.write_all(&buf).await?;
        w.flush().await
    })
    .await
}

/// The frame that follows a file's content and carries its checksum: a
/// [`Request::End`] from a client, a [`Reply::End`] from a server.
pub trait ClosingFrame: DeserializeOwned {
    /// The checksum, when this is the closing frame.
    fn into_checksum(self) -> Option<String>;
}

impl ClosingFrame for Request {
    fn into_checksum(self) -> Option<String> {
        match self {
            Request::End { checksum } => Some(checksum),
            _ => None,
        }
    }
}

impl ClosingFrame for Reply {
    fn into_checksum(self) -> Option<String> {
        match self {
            Reply::End { checksum } => Some(checksum),
            _ => None,
        }
    }
}

/// Reads one frame; `Ok(None)` on a clean end of stream before any byte.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    limit: Duration,
) -> Result<Option<T>> {
    read_frame_upto(r, limit, MAX_FRAME).await
}

/// [`read_frame`] for frames of at most `max_len` bytes (a server reading
/// requests: [`MAX_REQUEST_FRAME`]).
pub async fn read_frame_upto<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    limit: Duration,
    max_len: u32,
) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    let n = stall(limit, "waiting for a message", read_full(r, &mut len)).await?;
    if n == 0 {
        return Ok(None);
    }
    if n < 4 {
        return Err(Error::Protocol("stream ended inside a message".into()));
    }
    let len = u32::from_be_bytes(len);
    if len > max_len {
        return Err(Error::Protocol(format!(
            "message of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len as usize];
    stall(limit, "reading a message", r.read_exact(&mut body)).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| Error::Protocol(format!("malformed message: {e}")))
}

/// Reads until `buf` is full or the stream ends; returns bytes read.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let m = r.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    Ok(n)
}

/// Reads the next chunk of a file's content: at most `remaining` bytes, at
/// least one; a stream that ends early is an error naming the shortfall.
pub async fn read_chunk<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    remaining: u64,
    limit: Duration,
) -> Result<usize> {
    let want = buf.len().min(remaining as usize);
    let n = stall(limit, "receiving file data", r.read(&mut buf[..want])).await?;
    if n == 0 {
        // The connection broke, the content may be fine: a failure to retry
        // (or fail over), never "refused".
        return Err(Error::Protocol(format!(
            "stream ended with {remaining} bytes of the declared size missing"
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let req = Request::Put(PutRequest {
            dir: "/archive/main".into(),
            name: "000000010000000000000001".into(),
            size: 3,
            mtime: 1,
            cluster: "main".into(),
            forward_to: Some("arch2".into()),
            from: None,
            forward_in_background: false,
            raw_blake3: Some(blake3::hash(b"abc").to_hex().to_string()),
        });
        let t = Duration::from_secs(1);
        write_frame(&mut a, &req, t).await.unwrap();
        let got: Request = read_frame(&mut b, t).await.unwrap().unwrap();
        assert_eq!(got, req);
        drop(a);
        let end: Option<Request> = read_frame(&mut b, t).await.unwrap();
        assert!(end.is_none());
    }

    /// Messages of older peers, without the content digest, still parse.
    #[test]
    fn the_content_digest_is_optional_on_the_wire() {
        let put = r#"{"op":"put","dir":"/a/main","name":"000000010000000000000001","size":3,"mtime":1,"cluster":"main","forward_to":null}"#;
        let Request::Put(p) = serde_json::from_str(put).unwrap() else {
            panic!("not a put")
        };
        assert_eq!(p.raw_blake3, None);
        let file = r#"{"reply":"file","size":3,"mtime":1}"#;
        let Reply::File { raw_blake3, .. } = serde_json::from_str(file).unwrap() else {
            panic!("not a file")
        };
        assert_eq!(raw_blake3, None);
        // And none is sent when there is none.
        let none = Reply::File {
            size: 3,
            mtime: 1,
            raw_blake3: None,
        };
        assert!(!serde_json::to_string(&none).unwrap().contains("raw_blake3"));
    }

    #[tokio::test]
    async fn stalled_reader_times_out() {
        let (_a, mut b) = tokio::io::duplex(1024);
        let e = read_frame::<_, Request>(&mut b, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("stalled"), "{e}");
    }

    #[tokio::test]
    async fn oversized_frame_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&(MAX_FRAME + 1).to_be_bytes()).await.unwrap();
        let e = read_frame::<_, Request>(&mut b, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }
}
