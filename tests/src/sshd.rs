//! One archive server: a real `sshd` in its own mount and PID namespace, so
//! that everything it runs sees the server's own storage at the lab's archive
//! root, and so that it can be killed, frozen and restarted as a whole.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::proc::{
    command_line, descendants, file_tail, kill9, namespace_of, pid_alive, pids_in_pid_namespace,
    proc_stat, sh_quote, signal, wait_gone,
};

/// How long start/stop wait for the port to accept/refuse connections.
const PORT_TIMEOUT: Duration = Duration::from_secs(10);

/// One of the lab's two archive servers (`arch1`, `arch2`).
#[derive(Debug)]
pub struct ArchiveServer {
    pub(crate) n: usize,
    pub(crate) name: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
    pub(crate) archive_root: PathBuf,
    pub(crate) running: Mutex<Option<Running>>,
}

/// A started server: `unshare` (our child) and the sshd listener it forked,
/// which is PID 1 of the server's PID namespace.
#[derive(Debug)]
pub(crate) struct Running {
    unshare: Child,
    listener: i32,
    pid_ns: String,
}

impl ArchiveServer {
    pub(crate) fn new(n: usize, ip: Ipv4Addr, port: u16, lab_dir: &Path) -> Self {
        ArchiveServer {
            n,
            name: format!("arch{n}"),
            ip,
            port,
            dir: lab_dir.join(format!("s{n}")),
            archive_root: lab_dir.join("archive"),
            running: Mutex::new(None),
        }
    }

    /// Host alias: `arch1` or `arch2`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// 1 or 2.
    pub fn number(&self) -> usize {
        self.n
    }
    /// Loopback address sshd listens on (127.0.0.2 / 127.0.0.3).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// sshd's TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `ip:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }
    /// `<lab>/sN`: this server's files (keys, configs, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `<lab>/sN/storage`: this server's storage as seen from the test (host
    /// namespace). Processes run by this server's sshd see it at the lab's
    /// archive root.
    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }
    /// Host-side path of `<archive root>/rel` on this server.
    pub fn stored(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.storage().join(rel)
    }
    /// `<lab>/sN/remote.toml`: archive-remote-cmd's config on this server
    /// (sshd passes it as `PGARCHIVE_CONFIG`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("remote.toml")
    }
    /// `<lab>/sN/sshd.log` (sshd `-E`, LogLevel VERBOSE).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }
    /// `<lab>/sN/sshd_config`.
    pub fn sshd_config_path(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }
    /// `<lab>/sN/ssh_config`: the ssh client config this server uses to reach its peer.
    pub fn ssh_config_path(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }
    /// `<lab>/sN/id_ed25519`: the key this server logs in to its peer with.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    /// `<lab>/sN/ssh_host_ed25519_key`.
    pub fn host_key_path(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key")
    }
    /// `<lab>/sN/authorized_keys`.
    pub fn authorized_keys_path(&self) -> PathBuf {
        self.dir.join("authorized_keys")
    }
    /// `<lab>/sN/run`: runtime dir (control sockets) of the remote side.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// `<lab>/sN/state`: state dir (health, owed list) of the remote side.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }
    /// Where sshd's own stdout/stderr (and a failed bind mount's message) go.
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.join("sshd.out")
    }

    /// True while this server's sshd is running (frozen counts as running).
    pub fn is_running(&self) -> bool {
        self.lock().as_ref().is_some_and(|r| pid_alive(r.listener))
    }

    /// PID of the sshd listener (in the host's PID namespace), if running.
    pub fn listener_pid(&self) -> Option<i32> {
        self.lock().as_ref().map(|r| r.listener)
    }

    /// Every living process of this server: the listener, per-connection sshd
    /// processes, the commands they run and anything those left behind
    /// (daemonized ssh masters included) — its PID namespace, plus the ppid
    /// descendants of the listener.
    pub fn processes(&self) -> Vec<i32> {
        match self.lock().as_ref() {
            Some(r) => members(r),
            None => Vec::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sshd_config text.
    pub(crate) fn sshd_config_text(&self, authorized_keys: &Path) -> String {
        format!(
            "# written by the e2e lab for {name}\n\
             ListenAddress {ip}:{port}\n\
             AddressFamily inet\n\
             HostKey {hostkey}\n\
             PidFile none\n\
             UsePAM yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             AuthenticationMethods publickey\n\
             AuthorizedKeysFile {authorized_keys}\n\
             StrictModes no\n\
             PermitRootLogin no\n\
             AllowUsers postgres\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             X11Forwarding no\n\
             LogLevel VERBOSE\n\
             LoginGraceTime 30\n\
             MaxSessions 64\n\
             MaxStartups 64\n\
             ClientAliveInterval 5\n\
             ClientAliveCountMax 3\n\
             SetEnv PGARCHIVE_CONFIG={config}\n",
            name = self.name,
            ip = self.ip,
            port = self.port,
            hostkey = self.host_key_path().display(),
            authorized_keys = authorized_keys.display(),
            config = self.config_path().display(),
        )
    }

    /// Starts sshd: `unshare` a PID + mount namespace, bind-mount
    /// `<lab>/sN/storage` on the archive root inside it, exec `sshd -D`.
    /// Waits until the port answers with an SSH banner; panics if it does not.
    pub(crate) fn start(&self) {
        if let Err(e) = self.try_start() {
            panic!("{}", e.message);
        }
    }

    /// [`Self::start`], reporting failure (and whether the port was taken).
    pub(crate) fn try_start(&self) -> Result<(), StartError> {
        let mut guard = self.lock();
        if let Some(r) = guard.as_ref() {
            if pid_alive(r.listener) {
                panic!("{} is already running", self.name);
            }
        }
        if let Some(mut old) = guard.take() {
            let _ = old.unshare.kill();
            let _ = old.unshare.wait();
        }
        let log_len_before = std::fs::metadata(self.log_path()).map_or(0, |m| m.len());
        let script = format!(
            "mount --bind {storage} {root} && exec /usr/sbin/sshd -D -e -f {cfg} -E {log}",
            storage = sh_quote(&self.storage().to_string_lossy()),
            root = sh_quote(&self.archive_root.to_string_lossy()),
            cfg = sh_quote(&self.sshd_config_path().to_string_lossy()),
            log = sh_quote(&self.log_path().to_string_lossy()),
        );
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("open sshd.out");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--fork",
            "--pid",
            "--mount-proc",
            "--mount",
            "--propagation",
            "private",
            "--kill-child",
            "sh",
            "-c",
            &script,
        ])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup sshd.out"))
        .stderr(out);
        let mut unshare = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", command_line(&cmd)));
        let unshare_pid = unshare.id() as i32;

        // The forked child is PID 1 of the new PID namespace and becomes sshd.
        let deadline = Instant::now() + PORT_TIMEOUT;
        let listener = loop {
            if let Some(pid) = child_in_new_pid_ns(unshare_pid) {
                break pid;
            }
            let status = match unshare.try_wait() {
                Ok(Some(status)) => Some(status),
                _ if Instant::now() >= deadline => {
                    let _ = unshare.kill();
                    let _ = unshare.wait();
                    None
                }
                _ => {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            return Err(StartError {
                port_in_use: false,
                message: format!(
                    "{}: {}\n{}",
                    self.name,
                    match status {
                        Some(st) => format!("unshare exited ({st}) before starting sshd"),
                        None => "no sshd process appeared".to_string(),
                    },
                    self.diagnostics()
                ),
            });
        };
        let pid_ns = namespace_of(listener, "pid").unwrap_or_default();
        *guard = Some(Running {
            unshare,
            listener,
            pid_ns,
        });
        drop(guard);

        let deadline = Instant::now() + PORT_TIMEOUT;
        loop {
            if self.banner_ok() {
                return Ok(());
            }
            let exited = {
                let mut g = self.lock();
                let r = g.as_mut().expect("just started");
                matches!(r.unshare.try_wait(), Ok(Some(_)))
            };
            if exited || Instant::now() >= deadline {
                if let Some(r) = self.lock().take() {
                    let _ = kill_all(r);
                }
                let new_log = std::fs::read(self.log_path())
                    .map(|b| {
                        let from = (log_len_before as usize).min(b.len());
                        String::from_utf8_lossy(&b[from..]).into_owned()
                    })
                    .unwrap_or_default();
                return Err(StartError {
                    port_in_use: new_log.contains("Address already in use"),
                    message: format!(
                        "{}: sshd did not come up on {} ({})\n{}",
                        self.name,
                        self.addr(),
                        if exited { "it exited" } else { "timeout" },
                        self.diagnostics()
                    ),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connects and reads the SSH identification line.
    fn banner_ok(&self) -> bool {
        let Ok(stream) = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("SSH-")
    }

    /// True when a TCP connect to the port is refused right now.
    pub fn port_refuses(&self) -> bool {
        match TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1)) {
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        }
    }

    /// SIGKILLs the listener and every process of this server, then waits until
    /// the port refuses connections. Panics if that does not happen.
    pub(crate) fn stop(&self) {
        if let Err(e) = self.stop_quiet() {
            panic!("{}: {e}\n{}", self.name, self.diagnostics());
        }
    }

    /// [`Self::stop`] without panicking (for Drop).
    pub(crate) fn stop_quiet(&self) -> Result<(), String> {
        let Some(r) = self.lock().take() else {
            return Ok(());
        };
        kill_all(r)?;
        let deadline = Instant::now() + PORT_TIMEOUT;
        while !self.port_refuses() {
            if Instant::now() >= deadline {
                return Err(format!("port {} still accepts connections", self.addr()));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGSTOPs every process of the server (the listener first, then until no
    /// running process is left): connections to it hang.
    pub(crate) fn freeze(&self) {
        let g = self.lock();
        let r = g
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        signal(r.listener, Signal::STOP);
        for _ in 0..50 {
            let mut all_stopped = true;
            for p in members(r) {
                match proc_stat(p).map(|s| s.state) {
                    Some('T') | Some('t') | Some('Z') | Some('X') | None => {}
                    Some(_) => {
                        all_stopped = false;
                        signal(p, Signal::STOP);
                    }
                }
            }
            if all_stopped {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("{}: could not stop all its processes", self.name);
    }

    /// SIGCONTs every process of the server.
    pub(crate) fn thaw(&self) {
        let g = self.lock();
        let r = g
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        for p in members(r) {
            signal(p, Signal::CONT);
        }
    }

    /// sshd's log and stderr, for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- {} ---\n{}\n--- {} ---\n{}",
            self.stderr_path().display(),
            file_tail(self.stderr_path(), 4000),
            self.log_path().display(),
            file_tail(self.log_path(), 8000)
        )
    }
}

/// Why [`ArchiveServer::try_start`] failed.
#[derive(Debug)]
pub(crate) struct StartError {
    /// sshd could not bind its port (someone else took it).
    pub port_in_use: bool,
    pub message: String,
}

/// SIGKILLs every process of a started server and waits for them and for
/// `unshare` to be gone.
fn kill_all(mut r: Running) -> Result<(), String> {
    let mut victims = members(&r);
    // The listener last: it is PID 1 of the namespace, and its death makes
    // the kernel kill (and reap) whatever is left in there anyway.
    victims.retain(|&p| p != r.listener);
    for &p in &victims {
        kill9(p);
    }
    kill9(r.listener);
    victims.push(r.listener);
    let gone = wait_gone(&victims, PORT_TIMEOUT);
    // unshare exits once its child is gone; --kill-child covers the rest.
    let deadline = Instant::now() + PORT_TIMEOUT;
    let mut exited = false;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = r.unshare.try_wait() {
            exited = true;
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    if !exited {
        let _ = r.unshare.kill();
        let _ = r.unshare.wait();
    }
    if gone {
        Ok(())
    } else {
        Err(format!("processes survived SIGKILL: {victims:?}"))
    }
}

fn members(r: &Running) -> Vec<i32> {
    let mut pids = if r.pid_ns.is_empty() {
        Vec::new()
    } else {
        pids_in_pid_namespace(&r.pid_ns)
    };
    if pid_alive(r.listener) && !pids.contains(&r.listener) {
        pids.push(r.listener);
    }
    for p in descendants(r.listener) {
        if !pids.contains(&p) {
            pids.push(p);
        }
    }
    pids
}

/// The child of `parent` that lives in a PID namespace other than the parent's.
fn child_in_new_pid_ns(parent: i32) -> Option<i32> {
    let parent_ns = namespace_of(parent, "pid")?;
    crate::proc::all_pids().into_iter().find(|&p| {
        proc_stat(p).is_some_and(|s| s.ppid == parent)
            && namespace_of(p, "pid").is_some_and(|ns| ns != parent_ns)
    })
}
