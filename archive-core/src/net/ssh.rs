//! ssh transport: one persistent multiplexed master connection per host,
//! shared by every process of this user, and protocol channels over it.
//!
//! A new ssh connection costs ~190 ms, a channel through an open master
//! ~6 ms: archive_command runs once per segment, so the master outlives the
//! process that opened it (`ControlPersist`), and ends by itself after
//! `control_persist` idle seconds. Channels go through the master with the
//! `openssh` crate's native mux client (no ssh process per channel). ssh
//! never reads the caller's stdin, runs in BatchMode, and every step is
//! bounded: connection by `connect_timeout`, transfers by `io_timeout`
//! without progress.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh::{Child, ChildStdin, ChildStdout, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::config::Config;
use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::common::lock;
use crate::common::names;
use crate::net::wire::{
    self, ForwardOutcome, PutRequest, Reply, Request, StoreOutcome, CHUNK, PROTOCOL_VERSION,
};

/// What the transport needs from the configuration.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// `ssh -F` file.
    pub ssh_config: Option<PathBuf>,
    /// Directory of control sockets.
    pub runtime_dir: PathBuf,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Stall timeout.
    pub io_timeout: Duration,
    /// Idle lifetime of a master.
    pub control_persist: Duration,
    /// Command run on the server.
    pub remote_command: String,
    /// `-o Ciphers=` value, if any.
    pub ciphers: String,
}

impl SshSettings {
    /// Settings from the suite's configuration.
    pub fn from_config(cfg: &Config) -> Self {
        SshSettings {
            ssh_config: cfg.ssh_config.clone(),
            runtime_dir: cfg.runtime_dir(),
            connect_timeout: cfg.connect_timeout(),
            io_timeout: cfg.io_timeout(),
            control_persist: Duration::from_secs(cfg.control_persist),
            remote_command: cfg.remote_command.clone(),
            ciphers: cfg.ssh_ciphers.clone(),
        }
    }

    /// The control socket for `host`: one per (host, ssh config), so two
    /// configurations naming the same alias never share a connection.
    pub fn control_path(&self, host: &str) -> PathBuf {
        let cfg = self
            .ssh_config
            .as_deref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tag = blake3::hash(cfg.as_bytes()).to_hex();
        self.runtime_dir.join(format!("{host}-{}", &tag[..8]))
    }
}

/// A file next to the control socket `ctl`: its name plus `.suffix`
/// (not `with_extension`, which would cut a host name at its last dot, so
/// that `a.example.net` and `a.example.org` shared one lock and log).
fn beside(ctl: &Path, suffix: &str) -> PathBuf {
    let mut name = ctl.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    ctl.with_file_name(name)
}

/// Bytes the kernel buffers in each pipe of a protocol channel, on both
/// ends (the unprivileged maximum of a pipe, fs.pipe-max-size).
const PIPE_SIZE: usize = 1 << 20;

/// Widens a pipe (or socket) that ssh reads or writes a protocol channel
/// through. With the default 64 KiB, ssh and sshd move data in 64 KiB steps
/// and compact their up to 2 MiB channel buffer at each one (a memmove):
/// that copying cost more CPU than the compression, and widening halved the
/// ssh master's CPU when sending segments. Best effort.
pub fn widen_pipe(fd: BorrowedFd<'_>) {
    if rustix::pipe::fcntl_setpipe_size(fd, PIPE_SIZE).is_err() {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(fd, PIPE_SIZE);
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(fd, PIPE_SIZE);
    }
}

/// Returns a session on `host`'s master connection, starting the master if
/// none is running. Concurrent callers wait for one connection attempt
/// instead of each opening their own.
pub async fn session(settings: &SshSettings, host: &str) -> Result<Arc<Session>> {
    // The name becomes a file name and an ssh argument: check it first.
    names::validate_host_name(host)?;
    durable::create_dir_all(&settings.runtime_dir)?;
    let ctl = settings.control_path(host);
    let existing = Session::resume_mux(ctl.clone().into_boxed_path(), None);
    if ctl.exists() && alive(&existing).await {
        return Ok(Arc::new(existing));
    }
    let lock_path = beside(&ctl, "lock");
    let lock = lock::open(&lock_path)?;
    let deadline =
        tokio::time::Instant::now() + settings.connect_timeout * 2 + Duration::from_secs(5);
    while !lock::try_exclusive(&lock) {
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::host(
                host,
                format!("another process holds {} for too long", lock_path.display()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await
    }
    // Someone else may have connected while we waited for the lock.
    if ctl.exists() && alive(&existing).await {
        return Ok(Arc::new(existing));
    }
    let _ = std::fs::remove_file(&ctl);
    launch_master(settings, host, &ctl).await?;
    let session = Session::resume_mux(ctl.into_boxed_path(), None);
    if !alive(&session).await {
        return Err(Error::host(host, "ssh master started but does not answer"));
    }
    Ok(Arc::new(session))
}

/// Opens a protocol channel to `host` (starting its master if needed).
pub async fn connect(settings: &SshSettings, host: &str) -> Result<Channel> {
    let s = session(settings, host).await?;
    Channel::open(settings, s, host).await
}

async fn alive(session: &Session) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), session.check()).await,
        Ok(Ok(()))
    )
}

async fn launch_master(settings: &SshSettings, host: &str, ctl: &Path) -> Result<()> {
    let log = beside(ctl, "log");
    let _ = std::fs::remove_file(&log);
    let mut cmd = tokio::process::Command::new("ssh");
    if let Some(cfg) = &settings.ssh_config {
        cmd.arg("-F").arg(cfg);
    }
    let alive_interval = (settings.io_timeout.as_secs() / 3).max(1);
    if !settings.ciphers.is_empty() {
        cmd.arg("-o").arg(format!("Ciphers={}", settings.ciphers));
    }
    cmd.arg("-o")
        .arg("ControlMaster=yes")
        .arg("-o")
        .arg(format!("ControlPath={}", ctl.display()))
        .arg("-o")
        .arg(format!(
            "ControlPersist={}",
            settings.control_persist.as_secs().max(1)
        ))
        .arg("-o")
        .arg("BatchMode=yes")
        .arg("-o")
        .arg(format!(
            "ConnectTimeout={}",
            settings.connect_timeout.as_secs().max(1)
        ))
        .arg("-o")
        .arg(format!("ServerAliveInterval={alive_interval}"))
        .arg("-o")
        .arg("ServerAliveCountMax=3")
        .arg("-E")
        .arg(&log)
        .arg("-f")
        .arg("-N")
        .arg("--")
        .arg(host)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::host(host, format!("cannot run ssh: {e}")))?;
    let limit = settings.connect_timeout * 2 + Duration::from_secs(5);
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Error::host(host, format!("waiting for ssh: {e}"))),
        Err(_) => {
            let _ = child.kill().await;
            return Err(Error::host(
                host,
                format!("ssh did not connect within {} s", limit.as_secs()),
            ));
        }
    };
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let last = text.lines().last().unwrap_or("").trim();
        return Err(Error::host(
            host,
            format!("cannot connect over ssh ({status}): {last}"),
        ));
    }
    Ok(())
}

/// What a put achieved on the server it was sent to.
#[derive(Debug, Clone)]
pub struct PutReply {
    /// New or already stored.
    pub outcome: StoreOutcome,
    /// Codec on disk.
    pub codec: String,
    /// Bytes on disk.
    pub stored_size: u64,
    /// The forward's outcome, when one was asked for and reported in time.
    pub forward: Option<ForwardOutcome>,
    /// A forward reply was due and did not come in time: it is still on its
    /// way, so this channel cannot carry another request.
    pub forward_in_flight: bool,
    /// blake3 (hex) of the bytes sent, as the server verified them.
    pub checksum: String,
}

/// A protocol channel: one `archive-remote-cmd serve` process on a host.
pub struct Channel {
    host: String,
    child: Child<Arc<Session>>,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: Arc<Mutex<String>>,
    io_timeout: Duration,
    /// Server name announced in the handshake.
    pub server_name: Option<String>,
    /// The role the server gave this channel's key (handshake).
    pub role: Option<String>,
    /// Whether the server runs as the key's forced command (handshake).
    pub forced_command: Option<bool>,
}

impl Channel {
    /// Starts the remote command on `session` and exchanges `Hello`.
    pub async fn open(
        settings: &SshSettings,
        session: Arc<Session>,
        host: &str,
    ) -> Result<Channel> {
        let mut child = session
            .arc_raw_command(&settings.remote_command)
            .stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped())
            .spawn()
            .await
            .map_err(|e| Error::host(host, format!("cannot start remote command: {e}")))?;
        let stdin = child.stdin().take().expect("piped");
        let stdout = child.stdout().take().expect("piped");
        // The ssh master reads and writes these pipes itself (the mux
        // passes them over).
        widen_pipe(stdin.as_fd());
        widen_pipe(stdout.as_fd());
        let mut err_pipe = child.stderr().take().expect("piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        // Collects the remote's stderr, so a failure can say what it said.
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().expect("not poisoned");
                if s.len() < 8192 {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let mut ch = Channel {
            host: host.to_string(),
            child,
            stdin,
            stdout,
            stderr,
            io_timeout: settings.io_timeout,
            server_name: None,
            role: None,
            forced_command: None,
        };
        ch.send(&Request::Hello {
            version: PROTOCOL_VERSION,
        })
        .await?;
        match ch.reply().await? {
            Reply::Hello {
                version,
                server,
                role,
                forced_command,
            } if version == PROTOCOL_VERSION => {
                ch.server_name = server;
                ch.role = role;
                ch.forced_command = forced_command;
                Ok(ch)
            }
            Reply::Hello { version, .. } => Err(Error::host(
                host,
                format!(
                    "archive-remote-cmd speaks protocol {version}, this build {PROTOCOL_VERSION}: install the same version on both sides"
                ),
            )),
            other => Err(ch.unexpected(other)),
        }
    }

    /// The host this channel talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends one request frame.
    pub async fn send(&mut self, req: &Request) -> Result<()> {
        wire::write_frame(&mut self.stdin, req, self.io_timeout)
            .await
            .map_err(|e| self.failure(e))
    }

    /// Sends raw content bytes.
    pub async fn send_data(&mut self, data: &[u8]) -> Result<()> {
        let limit = self.io_timeout;
        wire::stall(limit, "sending file data", self.stdin.write_all(data))
            .await
            .map_err(|e| self.failure(e))
    }

    /// Reads the next reply, waiting at most `io_timeout` for it.
    pub async fn reply(&mut self) -> Result<Reply> {
        self.reply_within(self.io_timeout).await
    }

    /// Reads the next reply, waiting at most `limit`.
    pub async fn reply_within(&mut self, limit: Duration) -> Result<Reply> {
        match wire::read_frame(&mut self.stdout, limit).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(self.failure(Error::Protocol("connection closed".into()))),
            Err(e) => Err(self.failure(e)),
        }
    }

    /// Reads up to `buf.len()` content bytes (for downloads).
    pub async fn read_data(&mut self, buf: &mut [u8], remaining: u64) -> Result<usize> {
        let limit = self.io_timeout;
        wire::read_chunk(&mut self.stdout, buf, remaining, limit)
            .await
            .map_err(|e| self.failure(e))
    }

    /// Turns a reply we did not expect into an error.
    pub fn unexpected(&self, reply: Reply) -> Error {
        match reply {
            Reply::Error { kind, message } => wire::reply_error(&self.host, kind, message),
            other => Error::host(&self.host, format!("unexpected reply {other:?}")),
        }
    }

    /// Adds the host and what the remote printed to a transport error.
    fn failure(&self, e: Error) -> Error {
        let said = self
            .stderr
            .lock()
            .expect("not poisoned")
            .trim()
            .replace('\n', " | ");
        let said = if said.is_empty() {
            String::new()
        } else {
            format!("; remote said: {said}")
        };
        match e {
            Error::Refused(m) => Error::Refused(format!("{m} (to {})", self.host)),
            other => Error::host(&self.host, format!("{other}{said}")),
        }
    }

    /// Sends a file as a put: the request, `req.size` bytes from `source`,
    /// the checksum; then reads the server's verdict and, when the put asks
    /// for forwarding, the forward's outcome (waiting at most
    /// `forward_wait`; a missing forward reply is reported as `None` and
    /// leaves the channel unusable).
    pub async fn put(
        &mut self,
        req: &PutRequest,
        mut source: impl std::io::Read,
        forward_wait: Duration,
    ) -> Result<PutReply> {
        self.send(&Request::Put(req.clone())).await?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; CHUNK];
        let mut remaining = req.size;
        while remaining > 0 {
            let want = buf.len().min(remaining as usize);
            let n = source
                .read(&mut buf[..want])
                .map_err(|e| Error::Usage(format!("cannot read {}: {e}", req.name)))?;
            if n == 0 {
                return Err(Error::Usage(format!(
                    "{} shrank while being sent ({remaining} bytes missing)",
                    req.name
                )));
            }
            hasher.update(&buf[..n]);
            self.send_data(&buf[..n]).await?;
            remaining -= n as u64;
        }
        let checksum = hasher.finalize().to_hex().to_string();
        self.send(&Request::End {
            checksum: checksum.clone(),
        })
        .await?;
        let (outcome, codec, stored_size) = match self.reply().await? {
            Reply::Stored {
                outcome,
                codec,
                stored_size,
            } => (outcome, codec, stored_size),
            other => return Err(self.unexpected(other)),
        };
        let forward_due = req.forward_to.is_some() && !req.forward_in_background;
        let forward = if forward_due {
            match self.reply_within(forward_wait).await {
                Ok(Reply::Forward(f)) => Some(f),
                Ok(other) => return Err(self.unexpected(other)),
                Err(_) => None,
            }
        } else {
            None
        };
        Ok(PutReply {
            outcome,
            codec,
            stored_size,
            forward_in_flight: forward_due && forward.is_none(),
            forward,
            checksum,
        })
    }

    /// Downloads a stored file (as stored, usually compressed) into `sink`,
    /// verifying the sender's checksum. Returns (size, mtime). A missing
    /// file is [`Error::NotFound`].
    pub async fn get(
        &mut self,
        dir: &str,
        name: &str,
        sink: &mut impl std::io::Write,
    ) -> Result<(u64, i64)> {
        self.send(&Request::Get {
            dir: dir.to_string(),
            name: name.to_string(),
        })
        .await?;
        self.receive_file(name, sink).await
    }

    /// Asks for a stored file and reads the reply announcing it: its size,
    /// mtime and the raw digest recorded when it was archived (hex, if the
    /// server has one). The bytes and the closing [`Reply::End`] follow on
    /// [`Channel::body`], for a reader that checks them itself (wal-sync
    /// stores a pulled copy as it streams in, proven against that digest).
    pub async fn start_get(&mut self, dir: &str, name: &str) -> Result<(u64, i64, Option<String>)> {
        self.send(&Request::Get {
            dir: dir.to_string(),
            name: name.to_string(),
        })
        .await?;
        match self.reply().await? {
            Reply::File {
                size,
                mtime,
                raw_blake3,
            } => Ok((size, mtime, raw_blake3)),
            other => Err(self.unexpected(other)),
        }
    }

    /// The incoming byte stream, after [`Channel::start_get`].
    pub fn body(&mut self) -> &mut ChildStdout {
        &mut self.stdout
    }

    /// A protocol error met while reading [`Channel::body`], with the host
    /// and what the remote printed; other errors unchanged.
    pub fn body_error(&self, e: Error) -> Error {
        match e {
            Error::Protocol(_) => self.failure(e),
            other => other,
        }
    }

    /// Reads a [`Reply::File`], its bytes into `sink`, and the checksum.
    async fn receive_file(
        &mut self,
        name: &str,
        sink: &mut impl std::io::Write,
    ) -> Result<(u64, i64)> {
        let (size, mtime) = match self.reply().await? {
            Reply::File { size, mtime, .. } => (size, mtime),
            other => return Err(self.unexpected(other)),
        };
        self.receive_body(name, size, sink).await?;
        Ok((size, mtime))
    }

    /// Reads the `size` bytes announced by a [`Reply::File`] (after
    /// [`Channel::start_get`]) into `sink`, and the closing checksum.
    pub async fn receive_body(
        &mut self,
        name: &str,
        size: u64,
        sink: &mut impl std::io::Write,
    ) -> Result<()> {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; CHUNK];
        let mut remaining = size;
        while remaining > 0 {
            let n = self.read_data(&mut buf, remaining).await?;
            hasher.update(&buf[..n]);
            sink.write_all(&buf[..n])
                .map_err(|e| Error::Usage(format!("cannot write {name} locally: {e}")))?;
            remaining -= n as u64;
        }
        match self.reply().await? {
            Reply::End { checksum } if checksum == hasher.finalize().to_hex().as_str() => Ok(()),
            Reply::End { .. } => Err(Error::host(
                &self.host,
                format!("{name}: checksum mismatch in transfer"),
            )),
            other => Err(self.unexpected(other)),
        }
    }

    /// Lists the backups in the server's `backup_dir`.
    pub async fn list_backups(&mut self, backup_dir: &str) -> Result<Vec<wire::BackupEntry>> {
        self.send(&Request::ListBackups {
            backup_dir: backup_dir.to_string(),
        })
        .await?;
        match self.reply().await? {
            Reply::Backups { backups } => Ok(backups),
            other => Err(self.unexpected(other)),
        }
    }

    /// Downloads file `name` of backup `index` into `sink`, verified.
    pub async fn get_backup_file(
        &mut self,
        backup_dir: &str,
        index: u32,
        name: &str,
        sink: &mut impl std::io::Write,
    ) -> Result<u64> {
        self.send(&Request::GetBackupFile {
            backup_dir: backup_dir.to_string(),
            index,
            name: name.to_string(),
        })
        .await?;
        self.receive_file(name, sink).await.map(|(size, _)| size)
    }

    /// pgarchive-check's questions about `dir` (see [`Request::CheckSetup`]).
    pub async fn check_setup(
        &mut self,
        dir: &str,
        peer: Option<&str>,
        holds: Option<&str>,
    ) -> Result<wire::SetupChecked> {
        self.send(&Request::CheckSetup {
            dir: dir.to_string(),
            peer: peer.map(str::to_string),
            holds: holds.map(str::to_string),
        })
        .await?;
        match self.reply().await? {
            Reply::SetupChecked {
                dir_error,
                recorded_system_identifier,
                peer_error,
                holds,
            } => Ok(wire::SetupChecked {
                dir_error,
                recorded_system_identifier,
                peer_error,
                holds,
            }),
            other => Err(self.unexpected(other)),
        }
    }

    /// Lists the archive files of `dir`.
    pub async fn list(&mut self, dir: &str) -> Result<Vec<wire::ListEntry>> {
        self.send(&Request::List {
            dir: dir.to_string(),
        })
        .await?;
        match self.reply().await? {
            Reply::Listing { files } => Ok(files),
            other => Err(self.unexpected(other)),
        }
    }

    /// Removes files from `dir`: (removed, already missing).
    pub async fn remove(&mut self, dir: &str, names: &[String]) -> Result<(u64, u64)> {
        self.send(&Request::Remove {
            dir: dir.to_string(),
            names: names.to_vec(),
        })
        .await?;
        match self.reply().await? {
            Reply::Removed { removed, missing } => Ok((removed, missing)),
            other => Err(self.unexpected(other)),
        }
    }

    /// Raw sizes and checksums of stored files (`None` for missing ones).
    pub async fn digests(
        &mut self,
        dir: &str,
        names: &[String],
    ) -> Result<Vec<Option<wire::RawDigest>>> {
        self.send(&Request::Digest {
            dir: dir.to_string(),
            names: names.to_vec(),
        })
        .await?;
        match self.reply().await? {
            Reply::Digests { files } if files.len() == names.len() => Ok(files),
            other => Err(self.unexpected(other)),
        }
    }

    /// START WAL of the oldest complete backup in the server's `backup_dir`,
    /// and what the server knows of that directory's identity.
    pub async fn oldest_backup(
        &mut self,
        backup_dir: &str,
    ) -> Result<(Option<String>, wire::BackupDirIdentity)> {
        self.send(&Request::OldestBackup {
            backup_dir: backup_dir.to_string(),
        })
        .await?;
        match self.reply().await? {
            Reply::OldestBackup {
                start_wal,
                identity,
            } => Ok((start_wal, identity)),
            other => Err(self.unexpected(other)),
        }
    }

    /// Owed, parked and rejected files of `dir`, the server's clock and
    /// when the backups of `backup_dir` finished (for monitoring).
    pub async fn dir_status(
        &mut self,
        dir: &str,
        backup_dir: Option<&str>,
    ) -> Result<wire::DirStatus> {
        self.send(&Request::DirStatus {
            dir: dir.to_string(),
            backup_dir: backup_dir.map(str::to_string),
        })
        .await?;
        match self.reply().await? {
            Reply::DirStatus(st) => Ok(st),
            other => Err(self.unexpected(other)),
        }
    }

    /// Takes the lock `name` on `dir` for as long as this channel lives.
    pub async fn lock(&mut self, dir: &str, name: &str, holder: &str) -> Result<()> {
        self.send(&Request::Lock {
            dir: dir.to_string(),
            name: name.to_string(),
            holder: holder.to_string(),
        })
        .await?;
        match self.reply().await? {
            Reply::Locked => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Ends the channel without waiting for the remote process, which may
    /// still be delivering owed files to its peer.
    pub async fn leave(self) {
        let Channel { child, stdin, .. } = self;
        drop(stdin);
        let _ = child.disconnect().await;
    }

    /// Ends the channel and waits (bounded) for the remote to exit.
    pub async fn close(self) {
        let Channel { child, stdin, .. } = self;
        drop(stdin);
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_differing_after_their_last_dot_get_their_own_lock_and_log() {
        let ctl = |h: &str| PathBuf::from("/run/pgarchive").join(format!("{h}-0123abcd"));
        let (net, org) = (ctl("a.example.net"), ctl("a.example.org"));
        assert_ne!(beside(&net, "lock"), beside(&org, "lock"));
        assert_eq!(
            beside(&net, "log"),
            PathBuf::from("/run/pgarchive/a.example.net-0123abcd.log")
        );
    }
}
