//! The primary's side of archiving (what `archive-cmd` does for one %p).
//!
//! - Hosts are tried in the order [`HealthBook::order`] gives: a host in
//!   cooldown is tried last, not skipped, and a failed attempt falls through
//!   to the next host in the same call, so archiving never stalls while one
//!   server is up.
//! - The server that takes the file forwards it to the other host.
//! - Look-ahead: with a backlog of `.ready` files, one call sends the next
//!   ones too, over parallel channels of the same master connection, and
//!   leaves a durable per-segment record (name, size, blake3) of each stored
//!   file. The later call for such a segment re-hashes %p and returns at once
//!   when it matches: proof by content, not by a "last sent" name.
//! - Push queue max (opt-in): when no server takes WAL and the backlog is
//!   over the limit, the segment is acknowledged unstored, with a WARNING
//!   and a durable record of the drop for monitoring.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::common::codec;
use crate::common::config::Config;
use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::common::names::{validate_cluster_name, validate_dir_arg};
use crate::common::page_header;
use crate::common::wal::{self, WalName};
use crate::net::health::{self, HealthBook};
use crate::net::ssh::{self, Channel, PutReply, SshSettings};
use crate::net::wire::{ForwardOutcome, PutRequest, StoreOutcome};

/// One archive_command invocation's arguments.
#[derive(Debug, Clone)]
pub struct ArchiveRequest {
    /// Archive hosts, in preference order (one or two).
    pub hosts: Vec<String>,
    /// DST-DIR on the archive servers.
    pub dst_dir: String,
    /// %p: path of the file to archive.
    pub wal_path: PathBuf,
    /// %f: its name.
    pub name: String,
    /// CLUSTER-NAME.
    pub cluster: String,
}

/// Logs (into PostgreSQL's log: archive_command's stderr) the WARNING for
/// a segment whose page magic no known PostgreSQL version writes: a newer
/// version's WAL, which the servers store when the rest of its header is
/// consistent. A header that does not parse is the servers' to refuse.
fn warn_unknown_magic(path: &Path, name: &WalName) {
    if !name.has_page_header() {
        return;
    }
    let mut head = [0u8; page_header::LONG_HEADER_LEN];
    let read = File::open(path).and_then(|mut f| f.read_exact(&mut head));
    if let Ok(Some(w)) = read.map(|()| {
        page_header::validate_first_page(&head, name)
            .ok()
            .and_then(|h| h.unknown_magic_warning(&path.display().to_string()))
    }) {
        log::warn(w);
    }
}

/// How a call ended successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored on `host` (and the forward's outcome, if reported).
    Stored {
        /// Host that stored it.
        host: String,
        /// What happened to the second copy.
        forward: Option<ForwardOutcome>,
    },
    /// An earlier call's look-ahead stored exactly this content.
    AlreadyPushed {
        /// Host that stored it.
        host: String,
    },
    /// Not stored: acknowledged because of the push queue limit.
    Dropped,
}

/// Durable record of a file stored by look-ahead.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PushRecord {
    /// File size in bytes.
    pub size: u64,
    /// blake3 of the file's bytes (hex).
    pub blake3: String,
    /// Host that stored it.
    pub host: String,
    /// Unix time it was stored.
    pub stored_at: i64,
    /// DST-DIR it was stored in: a record proves nothing for another one.
    #[serde(default)]
    pub dst_dir: String,
}

impl ArchiveRequest {
    /// Checks every argument before anything is sent.
    pub fn validate(&self) -> Result<WalName> {
        wal::validate_file_name(&self.name)?;
        let name = WalName::parse(&self.name)?;
        validate_dir_arg(&self.dst_dir)?;
        validate_cluster_name(&self.cluster)?;
        let meta = fs::metadata(&self.wal_path)
            .map_err(|e| Error::io("cannot read %p", &self.wal_path, e))?;
        if !meta.is_file() {
            return Err(Error::Refused(format!(
                "{} is not a file",
                self.wal_path.display()
            )));
        }
        if meta.len() == 0 {
            return Err(Error::Refused(format!(
                "{} is empty",
                self.wal_path.display()
            )));
        }
        Ok(name)
    }
}

/// The paths of one cluster's state on the primary.
struct State {
    pushed: PathBuf,
    dropped_log: PathBuf,
    health: HealthBook,
}

impl State {
    fn open(cfg: &Config, cluster: &str) -> Result<State> {
        let base = cfg.state_dir();
        let pushed = base.join(cluster).join("pushed");
        durable::create_dir_all(&pushed)?;
        Ok(State {
            pushed,
            dropped_log: base.join(cluster).join("dropped.log"),
            health: HealthBook::open(&base.join("health"))?,
        })
    }
}

/// File to send in this call.
#[derive(Debug, Clone)]
struct Item {
    name: String,
    path: PathBuf,
}

/// Archives one file (plus look-ahead), as archive_command.
pub async fn archive(cfg: &Config, req: &ArchiveRequest) -> Result<PushOutcome> {
    let name = req.validate()?;
    warn_unknown_magic(&req.wal_path, &name);
    let state = State::open(cfg, &req.cluster)?;
    if let Some(host) = check_record(&state, &req.name, &req.wal_path, &req.dst_dir)? {
        return Ok(PushOutcome::AlreadyPushed { host });
    }
    let mut items = vec![Item {
        name: req.name.clone(),
        path: req.wal_path.clone(),
    }];
    items.extend(lookahead(cfg, &state, req));

    let order: Vec<String> = state
        .health
        .order(&req.hosts)
        .into_iter()
        .map(str::to_string)
        .collect();
    let ssh = SshSettings::from_config(cfg);
    let mut last_err = None;
    for host in &order {
        let peer = req.hosts.iter().find(|h| *h != host).cloned();
        let results = send_batch(cfg, &ssh, host, peer.as_deref(), req, &items).await;
        for (item, res) in items.iter().zip(&results).skip(1) {
            if let Ok((reply, hash, size)) = res {
                write_record(&state, &item.name, host, &req.dst_dir, hash, *size, reply);
            }
        }
        match results.into_iter().next().expect("main item") {
            Ok((reply, _, _)) => {
                state.health.record_success(host)?;
                let extra = items.len() - 1;
                let verb = match reply.outcome {
                    StoreOutcome::Stored => "archived",
                    StoreOutcome::AlreadyStored => "already archived (same content)",
                };
                log::info(format!(
                    "{verb} {} to {host}:{} ({}, {} bytes stored{}{})",
                    req.name,
                    req.dst_dir,
                    reply.codec,
                    reply.stored_size,
                    describe_forward(&reply.forward, peer.as_deref()),
                    if extra > 0 {
                        format!("; look-ahead sent {extra} more")
                    } else {
                        String::new()
                    }
                ));
                return Ok(PushOutcome::Stored {
                    host: host.clone(),
                    forward: reply.forward,
                });
            }
            // On this side an I/O error is local (%p unreadable, a full
            // runtime directory): says nothing of the host, and must never
            // let push_queue_max drop the segment. PostgreSQL retries.
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) if e.is_host_failure() => {
                let st = state.health.record_failure(
                    host,
                    cfg.retry_count,
                    cfg.cooldown,
                    &e.to_string(),
                )?;
                let cooling = if st.in_cooldown(health::now()) {
                    format!(
                        "; {host} is tried last for {} s after {} consecutive failures",
                        st.cooldown_until - health::now(),
                        st.failures
                    )
                } else {
                    String::new()
                };
                log::warn(format!(
                    "archiving {} to {host} failed: {e}{cooling}",
                    req.name
                ));
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    let err = last_err.expect("at least one host");
    if let Some(limit) = cfg.push_queue_max {
        let backlog = ready_backlog(&req.wal_path);
        if backlog > limit.0 {
            record_drop(&state, &req.name, backlog, limit.0)?;
            return Ok(PushOutcome::Dropped);
        }
    }
    Err(Error::host(
        &req.hosts.join(" "),
        format!(
            "{} was not archived: no archive server took it ({err}); PostgreSQL keeps the file and retries",
            req.name
        ),
    ))
}

fn describe_forward(f: &Option<ForwardOutcome>, peer: Option<&str>) -> String {
    match (f, peer) {
        (_, None) => String::new(),
        (Some(ForwardOutcome::Forwarded), Some(p)) => format!(", forwarded to {p}"),
        (Some(ForwardOutcome::Owed { reason }), Some(p)) => {
            format!(", owed to {p}: {reason}")
        }
        (None, Some(p)) => format!(", forwarded to {p} in the background"),
    }
}

/// Returns the host named by a record matching the file's current content,
/// consuming the record.
fn check_record(state: &State, name: &str, path: &Path, dst_dir: &str) -> Result<Option<String>> {
    let rec_path = state.pushed.join(name);
    let Ok(bytes) = fs::read(&rec_path) else {
        return Ok(None);
    };
    let _ = fs::remove_file(&rec_path);
    let Ok(rec) = serde_json::from_slice::<PushRecord>(&bytes) else {
        return Ok(None);
    };
    if rec.dst_dir != dst_dir {
        return Ok(None);
    }
    let (hash, size) = hash_file(path)?;
    if size == rec.size && hash == rec.blake3 {
        log::info(format!(
            "{name} was already archived to {} by look-ahead",
            rec.host
        ));
        Ok(Some(rec.host))
    } else {
        log::warn(format!(
            "{name}: look-ahead record does not match the file's content; sending it again"
        ));
        Ok(None)
    }
}

fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((h.finalize().to_hex().to_string(), total))
}

fn write_record(
    state: &State,
    name: &str,
    host: &str,
    dst_dir: &str,
    hash: &str,
    size: u64,
    _r: &PutReply,
) {
    let rec = PushRecord {
        size,
        blake3: hash.to_string(),
        host: host.to_string(),
        stored_at: health::now(),
        dst_dir: dst_dir.to_string(),
    };
    let bytes = serde_json::to_vec(&rec).expect("serializable");
    if let Err(e) = durable::write_replace(&state.pushed.join(name), &bytes) {
        // Only costs a redundant send later.
        log::warn(format!("cannot record look-ahead of {name}: {e}"));
    }
}

/// `.ready` files of pg_wal/archive_status, in the order PostgreSQL
/// archives them (history files first, then oldest first).
fn ready_files(wal_path: &Path) -> Vec<String> {
    let status = wal_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("archive_status");
    let Ok(rd) = fs::read_dir(status) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".ready").map(str::to_string)
        })
        .filter(|n| wal::validate_file_name(n).is_ok())
        .collect();
    names.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
    names
}

fn lookahead(cfg: &Config, state: &State, req: &ArchiveRequest) -> Vec<Item> {
    let ready = ready_files(&req.wal_path);
    if ready.len() <= cfg.lookahead_threshold {
        return Vec::new();
    }
    prune_records(&state.pushed);
    let dir = req.wal_path.parent().unwrap_or(Path::new("."));
    ready
        .into_iter()
        .filter(|n| *n != req.name && !state.pushed.join(n).exists())
        .filter(|n| WalName::parse(n).is_ok())
        .take(cfg.lookahead_max.saturating_sub(1))
        .map(|n| Item {
            path: dir.join(&n),
            name: n,
        })
        .collect()
}

/// Removes records nobody consumed within a day (the segment was archived
/// some other way, or the cluster was rebuilt).
fn prune_records(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let day = Duration::from_secs(86_400);
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age > day);
        if old {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Bytes waiting to be archived: sizes of all `.ready` files.
fn ready_backlog(wal_path: &Path) -> u64 {
    let dir = wal_path.parent().unwrap_or(Path::new("."));
    ready_files(wal_path)
        .iter()
        .filter_map(|n| fs::metadata(dir.join(n)).ok())
        .map(|m| m.len())
        .sum()
}

fn record_drop(state: &State, name: &str, backlog: u64, limit: u64) -> Result<()> {
    let line = format!(
        "{}\t{name}\tbacklog={backlog}\tlimit={limit}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(durable::FILE_MODE)
        .open(&state.dropped_log)
        .map_err(|e| Error::io("cannot open", &state.dropped_log, e))?;
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("cannot record the drop in", &state.dropped_log, e))?;
    log::warn(format!(
        "DROPPED {name}: no archive server accepts WAL and the backlog ({backlog} bytes) exceeds push_queue_max ({limit} bytes); it is acknowledged WITHOUT being archived, point-in-time recovery cannot cross it; take a new base backup once archiving works (recorded in {})",
        state.dropped_log.display()
    ));
    Ok(())
}

type ItemResult = Result<(PutReply, String, u64)>;

/// Sends `items` to `host` over up to `parallel` channels. The first item
/// goes first on the first channel. Returns one result per item, in order.
async fn send_batch(
    cfg: &Config,
    ssh: &SshSettings,
    host: &str,
    peer: Option<&str>,
    req: &ArchiveRequest,
    items: &[Item],
) -> Vec<ItemResult> {
    let session = match ssh::session(ssh, host).await {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            return items
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    if i == 0 {
                        Err(clone_err(&e))
                    } else {
                        Err(Error::host(host, msg.clone()))
                    }
                })
                .collect();
        }
    };
    let lanes = cfg.parallel.min(items.len()).max(1);
    let mut set = tokio::task::JoinSet::new();
    for lane in 0..lanes {
        let mine: Vec<(usize, Item)> = items
            .iter()
            .cloned()
            .enumerate()
            .filter(|(i, _)| i % lanes == lane)
            .collect();
        let ctx = Lane {
            ssh: ssh.clone(),
            session: session.clone(),
            host: host.to_string(),
            peer: peer.map(str::to_string),
            dst_dir: req.dst_dir.clone(),
            cluster: req.cluster.clone(),
            compress: cfg.compress_on_primary.then_some(cfg.compress_level),
            forward_wait: cfg.io_timeout() + cfg.connect_timeout() * 2,
            forward_in_background: !cfg.wait_for_forward,
        };
        set.spawn(async move { ctx.run(mine).await });
    }
    let mut results: Vec<Option<ItemResult>> = (0..items.len()).map(|_| None).collect();
    while let Some(done) = set.join_next().await {
        match done {
            Ok(lane_results) => {
                for (i, r) in lane_results {
                    results[i] = Some(r);
                }
            }
            Err(e) => log::error(format!("look-ahead task failed: {e}")),
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::host(host, "send task failed"))))
        .collect()
}

fn clone_err(e: &Error) -> Error {
    match e {
        Error::Usage(m) => Error::Usage(m.clone()),
        Error::Refused(m) => Error::Refused(m.clone()),
        Error::Conflict(m) => Error::Conflict(m.clone()),
        Error::NotFound(m) => Error::NotFound(m.clone()),
        Error::Host { host, message } => Error::host(host, message.clone()),
        other => Error::Protocol(other.to_string()),
    }
}

/// One channel's share of a batch.
struct Lane {
    ssh: SshSettings,
    session: Arc<openssh::Session>,
    host: String,
    peer: Option<String>,
    dst_dir: String,
    cluster: String,
    compress: Option<i32>,
    forward_wait: Duration,
    forward_in_background: bool,
}

impl Lane {
    async fn run(self, items: Vec<(usize, Item)>) -> Vec<(usize, ItemResult)> {
        let mut out = Vec::new();
        let mut channel: Option<Channel> = None;
        for (i, item) in items {
            if channel.is_none() {
                match Channel::open(&self.ssh, self.session.clone(), &self.host).await {
                    Ok(c) => channel = Some(c),
                    Err(e) => {
                        out.push((i, Err(e)));
                        continue;
                    }
                }
            }
            let ch = channel.as_mut().expect("open");
            let res = self.send_one(ch, &item).await;
            // Only a server's answer leaves the channel in step; any other
            // error may have come mid-send (the file shrank or could not
            // be read), and the server would take the next request for
            // file data.
            let broken = match &res {
                Ok((r, _, _)) => r.forward_in_flight,
                Err(e) => !matches!(
                    e,
                    Error::Refused(_) | Error::Conflict(_) | Error::NotFound(_)
                ),
            };
            if broken {
                if let Some(c) = channel.take() {
                    c.leave().await;
                }
            }
            out.push((i, res));
        }
        if let Some(c) = channel {
            c.leave().await;
        }
        out
    }

    async fn send_one(&self, ch: &mut Channel, item: &Item) -> ItemResult {
        let file = File::open(&item.path).map_err(|e| Error::io("cannot open", &item.path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("cannot stat", &item.path, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let (content, raw_hash, raw_size) = match self.compress {
            Some(level) => {
                let path = item.path.clone();
                let done = tokio::task::spawn_blocking(move || compress_file(&path, level))
                    .await
                    .map_err(|e| Error::Protocol(format!("compression task failed: {e}")))??;
                (Content::Memory(done.0), done.1, done.2)
            }
            None => (Content::File(file), String::new(), meta.len()),
        };
        let req = PutRequest {
            dir: self.dst_dir.clone(),
            name: item.name.clone(),
            size: content.len(meta.len()),
            mtime,
            cluster: self.cluster.clone(),
            forward_to: self.peer.clone(),
            from: None,
            forward_in_background: self.forward_in_background,
            // The content proof the servers record: compressed here, the
            // raw content's digest (hashed while compressing, %p is read
            // once); sent as is, the transfer checksum is that digest.
            raw_blake3: matches!(content, Content::Memory(_)).then(|| raw_hash.clone()),
        };
        match content {
            Content::Memory(bytes) => {
                let reply = ch.put(&req, &bytes[..], self.forward_wait).await?;
                Ok((reply, raw_hash, raw_size))
            }
            Content::File(f) => {
                // Sent as is: the transfer checksum is the raw content's.
                let reply = ch
                    .put(
                        &req,
                        BufReader::with_capacity(256 * 1024, f),
                        self.forward_wait,
                    )
                    .await?;
                let hash = reply.checksum.clone();
                Ok((reply, hash, raw_size))
            }
        }
    }
}

enum Content {
    File(File),
    Memory(Vec<u8>),
}

impl Content {
    fn len(&self, file_len: u64) -> u64 {
        match self {
            Content::File(_) => file_len,
            Content::Memory(b) => b.len() as u64,
        }
    }
}

/// zstd-compresses a file in memory (compress_on_primary); returns the
/// compressed bytes and the raw content's blake3 and size.
fn compress_file(path: &Path, level: i32) -> Result<(Vec<u8>, String, u64)> {
    let f = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?
        .len();
    let mut reader = HashingReader::new(BufReader::with_capacity(256 * 1024, f));
    let mut enc = codec::zstd_encoder(Vec::new(), level)
        .map_err(|e| Error::io("cannot compress", path, e))?;
    // The declared size lets the server check the segment without decoding
    // it all (a file that changes size fails the encoder: never sent).
    enc.set_pledged_src_size(Some(len))
        .map_err(|e| Error::io("cannot compress", path, e))?;
    std::io::copy(&mut reader, &mut enc).map_err(|e| Error::io("cannot compress", path, e))?;
    let out = enc
        .finish()
        .map_err(|e| Error::io("cannot compress", path, e))?;
    Ok((out, reader.hex(), reader.total))
}

/// Hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    total: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: blake3::Hasher::new(),
            total: 0,
        }
    }
    fn hex(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.total += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_order_puts_history_first() {
        let d = tempfile::tempdir().unwrap();
        let status = d.path().join("archive_status");
        fs::create_dir(&status).unwrap();
        for n in [
            "000000020000000000000003",
            "00000002.history",
            "000000010000000000000002",
        ] {
            fs::write(status.join(format!("{n}.ready")), b"").unwrap();
        }
        fs::write(status.join("000000010000000000000001.done"), b"").unwrap();
        let got = ready_files(&d.path().join("000000010000000000000002"));
        assert_eq!(
            got,
            [
                "00000002.history",
                "000000010000000000000002",
                "000000020000000000000003"
            ]
        );
    }
}
