//! A hostile client: speaks `archive-remote-cmd serve`'s framed protocol
//! (a 4-byte big-endian length, then JSON) through real sshd and the real
//! forced-command key, but builds every frame by hand, so a test can send
//! what no well-behaved tool would: unchecked names, wrong sizes, bombs,
//! streams cut short.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{Key, Lab};

/// One ssh channel to an archive server, driven frame by frame.
pub struct RawChannel {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: mpsc::Receiver<Option<Vec<u8>>>,
}

/// How long a test waits for a reply before it counts as none.
pub const REPLY_WAIT: Duration = Duration::from_secs(20);

impl Lab {
    /// Opens a raw channel to server `n` with the primary's key, as
    /// archive-cmd would (the forced command decides what runs).
    pub fn raw_channel(&self, n: usize) -> RawChannel {
        let host = self.server(n).name().to_string();
        RawChannel::spawn(self.ssh(&host, "archive-remote-cmd serve"))
    }

    /// Opens a raw channel to server `n` with `key` (for [`Key::Peer`], the
    /// other server's key).
    pub fn raw_channel_with(&self, key: Key, n: usize) -> RawChannel {
        let config = match key {
            Key::Primary => self.primary_ssh_config(),
            Key::Standby => self.standby_ssh_config(),
            Key::Monitor => self.monitor_ssh_config(),
            Key::Peer => return self.raw_channel_as_peer(3 - n, n),
        };
        let host = self.server(n).name().to_string();
        let mut cmd = self.postgres_cmd("ssh");
        cmd.arg("-F")
            .arg(config)
            .arg(host)
            .arg("archive-remote-cmd serve");
        RawChannel::spawn(cmd)
    }

    /// Opens a raw channel to server `n` with the primary's key, asking
    /// for `remote_command` (the forced command runs whatever is asked).
    pub fn raw_channel_asking(&self, n: usize, remote_command: &str) -> RawChannel {
        let host = self.server(n).name().to_string();
        RawChannel::spawn(self.ssh(&host, remote_command))
    }

    /// Opens a raw channel to server `n` with server `from`'s own key and
    /// ssh config, as its peer (wal-sync, a forward) would.
    pub fn raw_channel_as_peer(&self, from: usize, n: usize) -> RawChannel {
        let host = self.server(n).name().to_string();
        let mut cmd = self.postgres_cmd("ssh");
        cmd.arg("-F")
            .arg(self.server(from).ssh_config_path())
            .arg(host)
            .arg("archive-remote-cmd serve");
        RawChannel::spawn(cmd)
    }
}

impl RawChannel {
    fn spawn(mut cmd: Command) -> RawChannel {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ssh");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, frames) = mpsc::channel();
        thread::spawn(move || read_frames(stdout, tx));
        RawChannel {
            child,
            stdin,
            frames,
        }
    }

    /// Sends one frame holding `msg`'s JSON.
    pub fn send(&mut self, msg: &str) {
        let mut buf = (msg.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(msg.as_bytes());
        self.send_bytes(&buf);
    }

    /// Sends raw bytes (file content, or a malformed frame). A channel the
    /// server already closed is not an error here: the reply tells.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(bytes).and_then(|()| stdin.flush());
        }
    }

    /// Sends the `Hello` every client starts with and returns the reply.
    pub fn hello(&mut self) -> String {
        self.send(r#"{"op":"hello","version":1}"#);
        self.reply().expect("a reply to hello")
    }

    /// The next reply frame's JSON, or `None` when the server closed the
    /// channel (or said nothing within [`REPLY_WAIT`]).
    pub fn reply(&mut self) -> Option<String> {
        match self.frames.recv_timeout(REPLY_WAIT) {
            Ok(Some(body)) => Some(String::from_utf8_lossy(&body).into_owned()),
            Ok(None) | Err(_) => None,
        }
    }

    /// Closes our side of the channel (the server sees end of input).
    pub fn close_input(&mut self) {
        drop(self.stdin.take());
    }

    /// Closes our side and waits (bounded) for ssh to exit.
    pub fn close(mut self) -> Option<ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + REPLY_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for RawChannel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads frames until the stream ends; `None` marks the end.
fn read_frames(mut out: ChildStdout, tx: mpsc::Sender<Option<Vec<u8>>>) {
    loop {
        let mut len = [0u8; 4];
        if out.read_exact(&mut len).is_err() {
            let _ = tx.send(None);
            return;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        if out.read_exact(&mut body).is_err() {
            let _ = tx.send(None);
            return;
        }
        if tx.send(Some(body)).is_err() {
            return;
        }
    }
}

/// True when `path` exists (a file, a directory, or a dangling link).
pub fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// A WAL segment of 16 MiB that passes every check a server makes: a
/// PostgreSQL 15 long page header for `name` and `sysid`, then zeros.
pub fn segment(name: &str, sysid: u64) -> Vec<u8> {
    use archive_core::common::page_header::build_long_header;
    use archive_core::common::wal::WalName;
    const SEG: u64 = 16 << 20;
    let n = WalName::parse(name).expect("a segment name");
    let mut v = vec![0u8; SEG as usize];
    v[..40].copy_from_slice(&build_long_header(
        15,
        1,
        n.start_lsn(SEG),
        sysid,
        SEG as u32,
    ));
    v
}

impl RawChannel {
    /// Sends a whole put of `content` as `name` into `dir` (server view)
    /// and returns the reply.
    pub fn put(&mut self, dir: &str, name: &str, content: &[u8]) -> Option<String> {
        self.put_with(dir, name, content, "")
    }

    /// A put whose request carries `extra` fields (`,"key":value…`).
    fn put_with(&mut self, dir: &str, name: &str, content: &[u8], extra: &str) -> Option<String> {
        self.send(&format!(
            r#"{{"op":"put","dir":"{dir}","name":"{name}","size":{},"mtime":0,"cluster":"main","forward_to":null{extra}}}"#,
            content.len()
        ));
        self.send_bytes(content);
        self.send(&format!(
            r#"{{"op":"end","checksum":"{}"}}"#,
            blake3::hash(content).to_hex()
        ));
        self.reply()
    }
}

/// The `kind` of an error reply (`refused`, `failed`, …), `None` for any
/// other reply.
pub fn error_kind(reply: &str) -> Option<String> {
    if !reply.contains(r#""reply":"error""#) {
        return None;
    }
    let at = reply.find(r#""kind":""#)? + r#""kind":""#.len();
    Some(reply[at..].split('"').next()?.to_string())
}

impl RawChannel {
    /// [`RawChannel::put`] declaring `raw_blake3` as the raw content's
    /// digest (what a compressing primary, a forward or wal-sync sends).
    pub fn put_declaring(
        &mut self,
        dir: &str,
        name: &str,
        content: &[u8],
        raw_blake3: &str,
    ) -> Option<String> {
        self.put_with(
            dir,
            name,
            content,
            &format!(r#","raw_blake3":"{raw_blake3}""#),
        )
    }
}

/// zstd of `raw` without a content checksum (one frame declaring its size),
/// as a compressing primary or a peer may send it: a flipped literal in it
/// still decodes.
pub fn zstd_unchecked(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd encoder");
    e.include_checksum(false).expect("no checksum");
    e.set_pledged_src_size(Some(raw.len() as u64))
        .expect("pledged size");
    e.write_all(raw).expect("compress");
    e.finish().expect("compress")
}
