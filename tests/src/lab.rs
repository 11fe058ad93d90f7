//! The lab: a temp dir with two sshd archive servers (`arch1`, `arch2`), the
//! keys and configs of the primary and both servers, and PostgreSQL clusters.
//!
//! Each client key has its own role in the servers' authorized_keys
//! ([`Key`]): the primary's key (`archive-cmd`) is `--role primary`, the
//! standby key (restore-cmd, restore-backup: [`Lab::standby_config`]) is
//! `--role standby`, the monitor key (archive-status:
//! [`Lab::monitor_config`]) is `--role monitor`, and each server's key is
//! `--role peer` on the other.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::pg::{stop_data_dir, ClusterRegistry, PgCluster, PgOptions};
use crate::proc::{
    all_pids, bin_dir, ensure_reaper, free_port, kill9, mkdir_postgres, pid_alive, postgres_cmd,
    reap_orphans, run_ok, run_with_timeout, set_mode, sh_quote, wait_gone, write_postgres_file,
};
use crate::sshd::ArchiveServer;

/// `backup_compress` for base-backup in a lab whose client programs are
/// PostgreSQL 18's PyPI build: it has gzip only (no zstd, no lz4).
fn lab_backup_compress() -> &'static str {
    if crate::pg_client_dir() != Path::new("/usr/lib/postgresql/15/bin") {
        "backup_compress = \"client-gzip:1\"\n"
    } else {
        ""
    }
}

/// The name of the base archive base-backup writes in this lab (see
/// [`lab_backup_compress`]).
pub fn lab_base_tar() -> &'static str {
    if lab_backup_compress().is_empty() {
        "base.tar.zst"
    } else {
        "base.tar.gz"
    }
}

/// The `backup_compress` method the lab's tests use by default: zstd, or
/// gzip where the client programs have nothing else (see
/// [`lab_backup_compress`]).
pub fn lab_compress() -> &'static str {
    if lab_backup_compress().is_empty() {
        "zstd"
    } else {
        "gzip"
    }
}

/// Every `backup_compress` method the lab's pg_basebackup can write, with
/// its base archive's name.
pub fn lab_formats() -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("gzip", "base.tar.gz"), ("none", "base.tar")];
    if lab_backup_compress().is_empty() {
        v.splice(0..0, [("lz4", "base.tar.lz4"), ("zstd", "base.tar.zst")]);
    }
    v
}

/// Options for [`Lab::with`].
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// authorized_keys lines carry `command="<archive-remote-cmd> serve",restrict`
    /// (default true). With false they are plain `restrict` keys and any
    /// command can be run over ssh.
    pub forced_command: bool,
    /// Appended verbatim to `<lab>/primary/archive.toml`.
    pub extra_client_config: String,
    /// Appended verbatim to each `<lab>/sN/remote.toml`.
    pub extra_server_config: String,
    /// `log_level` of the client configs (archive-cmd, restore-cmd, ...):
    /// "info" by default, so tests read what each call did; `None` leaves
    /// each program's own default (warn for archive-cmd and restore-cmd).
    pub client_log_level: Option<&'static str>,
}

/// The client keys the servers know, each with its own forced command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `<lab>/primary/id_ed25519`: archive-cmd.
    Primary,
    /// `<lab>/primary/standby_ed25519`: restore-cmd and restore-backup.
    Standby,
    /// `<lab>/primary/monitor_ed25519`: archive-status.
    Monitor,
    /// `<lab>/sN/id_ed25519`: the other server (forwards, wal-sync, wal-cleanup).
    Peer,
}

impl Key {
    const ALL: [Key; 4] = [Key::Primary, Key::Standby, Key::Monitor, Key::Peer];

    fn index(self) -> usize {
        self as usize
    }
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            forced_command: true,
            extra_client_config: String::new(),
            extra_server_config: String::new(),
            client_log_level: Some("info"),
        }
    }
}

impl LabOptions {
    /// Short cooldowns, so that failover can be watched in a test:
    /// archive-cmd retries 3 times and rests a failing host 6 s; the
    /// servers rest a failing peer 2 s.
    pub fn short_cooldowns() -> LabOptions {
        LabOptions {
            extra_client_config: "retry_count = 3\ncooldown = 6\n".into(),
            extra_server_config: "forward_cooldown = 2\n".into(),
            ..Default::default()
        }
    }
}

/// A lab in `/tmp/lab-XXXXXX`. Everything it starts is stopped on Drop (also
/// when the test panics) and the dir is removed, unless `KEEP_LAB=1`.
#[derive(Debug)]
pub struct Lab {
    dir: PathBuf,
    servers: Vec<ArchiveServer>,
    forced_command: bool,
    /// `log_level = ...` line of the client configs, or "".
    client_log_line: String,
    client_extra: Mutex<String>,
    server_extra: Mutex<String>,
    /// The forced command's arguments after `serve`, per [`Key`].
    forced_args: Mutex<[String; 4]>,
    clusters: ClusterRegistry,
}

const SERVER_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];

impl Lab {
    /// The `log_level = ...` line every client config of this lab carries
    /// (see [`LabOptions::client_log_level`]), or "".
    pub fn client_log_line(&self) -> &str {
        &self.client_log_line
    }

    /// A lab with default options (forced commands on).
    pub fn new() -> Lab {
        Lab::with(LabOptions::default())
    }

    /// A lab with both servers started.
    pub fn with(opts: LabOptions) -> Lab {
        ensure_reaper();
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("lab-")
            .rand_bytes(6)
            .tempdir_in("/tmp")
            .expect("create lab dir in /tmp")
            .keep();
        set_mode(&dir, 0o755);
        let servers = SERVER_IPS
            .iter()
            .enumerate()
            .map(|(i, &ip)| ArchiveServer::new(i + 1, ip, free_port(ip), &dir))
            .collect();
        let root = sh_quote(&dir.join("archive").to_string_lossy());
        let forced_args = Mutex::new([
            format!("--role primary --dir {root}"),
            "--role standby".to_string(),
            "--role monitor".to_string(),
            "--role peer".to_string(),
        ]);
        // From here on a panic drops the Lab, which cleans up.
        let mut lab = Lab {
            forced_args,
            dir,
            servers,
            forced_command: opts.forced_command,
            client_log_line: opts
                .client_log_level
                .map(|l| format!("log_level = \"{l}\"\n"))
                .unwrap_or_default(),
            client_extra: Mutex::new(opts.extra_client_config),
            server_extra: Mutex::new(opts.extra_server_config),
            clusters: Arc::new(Mutex::new(Vec::new())),
        };
        lab.setup();
        lab
    }

    fn setup(&mut self) {
        // Layout.
        let primary = self.primary_dir();
        mkdir_postgres(&primary, 0o755);
        mkdir_postgres(primary.join("run"), 0o700);
        mkdir_postgres(primary.join("state"), 0o700);
        for s in &self.servers {
            mkdir_postgres(s.dir(), 0o755);
            mkdir_postgres(s.storage(), 0o700);
            mkdir_postgres(s.runtime_dir(), 0o700);
            mkdir_postgres(s.state_dir(), 0o700);
        }
        // The mount point: read-only for everyone in the host namespace, so a
        // write that misses the servers' namespaces fails loudly.
        std::fs::create_dir(self.archive_root()).expect("mkdir archive root");
        set_mode(self.archive_root(), 0o555);
        mkdir_postgres(self.dir.join("pg"), 0o755);
        mkdir_postgres(self.dir.join("pg/sock"), 0o755);

        // Keys.
        keygen(&primary.join("id_ed25519"), "lab-primary", true);
        keygen(&self.standby_key(), "lab-standby", true);
        keygen(&self.monitor_key(), "lab-monitor", true);
        for s in &self.servers {
            keygen(&s.key_path(), &format!("lab-{}", s.name()), true);
            keygen(&s.host_key_path(), &format!("lab-{}-host", s.name()), false);
        }

        self.write_ssh_files();
        self.write_client_config();
        self.write_server_configs();

        // Start; a port someone else took meanwhile gets replaced.
        for i in 0..self.servers.len() {
            let mut attempt = 0;
            loop {
                match self.servers[i].try_start() {
                    Ok(()) => break,
                    Err(e) if e.port_in_use && attempt < 3 => {
                        attempt += 1;
                        eprintln!(
                            "lab: port {} was taken, picking another",
                            self.servers[i].addr()
                        );
                        let ip = self.servers[i].ip();
                        self.servers[i].port = free_port(ip);
                        self.write_ssh_files();
                    }
                    Err(e) => panic!("{}", e.message),
                }
            }
        }
        if !self.forced_command {
            for s in &self.servers {
                run_ok(&mut self.ssh(s.name(), "true"));
            }
        }
    }

    /// Everything that names the servers' ports: known_hosts, the ssh client
    /// configs, authorized_keys and sshd configs (checked with `sshd -t`).
    fn write_ssh_files(&self) {
        // known_hosts.
        let mut known = String::new();
        for s in &self.servers {
            let pubkey = read_pub(&s.host_key_path());
            writeln!(
                known,
                "[{}]:{} {}",
                s.ip(),
                s.port(),
                key_without_comment(&pubkey)
            )
            .unwrap();
        }
        write_postgres_file(self.known_hosts(), known, 0o644);

        // ssh client configs, authorized_keys, sshd configs.
        for (config, key) in [
            (self.primary_ssh_config(), self.primary_key()),
            (self.standby_ssh_config(), self.standby_key()),
            (self.monitor_ssh_config(), self.monitor_key()),
        ] {
            write_postgres_file(config, self.ssh_client_config(&key), 0o644);
        }
        self.write_authorized_keys();
        for s in &self.servers {
            write_postgres_file(
                s.ssh_config_path(),
                self.ssh_client_config(&s.key_path()),
                0o644,
            );
            std::fs::write(
                s.sshd_config_path(),
                s.sshd_config_text(&s.authorized_keys_path()),
            )
            .expect("write sshd_config");
            let check = run_with_timeout(
                Command::new("/usr/sbin/sshd")
                    .arg("-t")
                    .arg("-f")
                    .arg(s.sshd_config_path()),
                Duration::from_secs(10),
            );
            match check {
                Some(o) if o.status.success() => {}
                other => panic!(
                    "sshd -t rejects {}: {:?}",
                    s.sshd_config_path().display(),
                    other.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                ),
            }
        }
    }

    /// Each server's authorized_keys: one line per [`Key`], with its
    /// forced command and role (or plain `restrict` keys without forced
    /// commands).
    fn write_authorized_keys(&self) {
        let remote = self.remote_command();
        let args = self
            .forced_args
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for s in &self.servers {
            let mut keys = String::new();
            for key in Key::ALL {
                let k = read_pub(&match key {
                    Key::Primary => self.primary_key(),
                    Key::Standby => self.standby_key(),
                    Key::Monitor => self.monitor_key(),
                    Key::Peer => self.peer_of(s.number()).key_path(),
                });
                let args = &args[key.index()];
                if self.forced_command {
                    let command = format!("{remote} {args}");
                    let command = command.trim_end().replace('"', "\\\"");
                    writeln!(keys, "command=\"{command}\",restrict {}", k.trim()).unwrap();
                } else {
                    writeln!(keys, "restrict {}", k.trim()).unwrap();
                }
            }
            write_postgres_file(s.authorized_keys_path(), keys, 0o600);
        }
    }

    /// Sets what follows `serve` in `key`'s forced command on both servers
    /// (e.g. `--role primary --dir /…/archive/main`; empty: no role) and
    /// rewrites their authorized_keys (sshd reads them at each login).
    pub fn set_forced_args(&self, key: Key, args: &str) {
        self.forced_args.lock().unwrap_or_else(|e| e.into_inner())[key.index()] = args.to_string();
        self.write_authorized_keys();
    }

    /// What follows `serve` in `key`'s forced command.
    pub fn forced_args(&self, key: Key) -> String {
        self.forced_args.lock().unwrap_or_else(|e| e.into_inner())[key.index()].clone()
    }

    fn peer_of(&self, n: usize) -> &ArchiveServer {
        self.server(if n == 1 { 2 } else { 1 })
    }

    /// The remote command every client runs (and the forced command):
    /// `<bin dir>/archive-remote-cmd serve`.
    pub fn remote_command(&self) -> String {
        format!(
            "{} serve",
            sh_quote(&bin_dir().join("archive-remote-cmd").to_string_lossy())
        )
    }

    fn ssh_client_config(&self, identity: &Path) -> String {
        let mut text = String::from("# written by the e2e lab; use with ssh -F\n");
        for s in &self.servers {
            writeln!(
                text,
                "Host {name}\n  HostName {ip}\n  Port {port}\n  User postgres\n  IdentityFile {key}\n  \
                 IdentitiesOnly yes\n  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n  \
                 StrictHostKeyChecking yes\n  UpdateHostKeys no\n  BatchMode yes\n  ConnectTimeout 10\n  \
                 LogLevel ERROR",
                name = s.name(),
                ip = s.ip(),
                port = s.port(),
                key = identity.display(),
                known = self.known_hosts().display(),
            )
            .unwrap();
        }
        text
    }

    /// The primary's config, and the standby's and the monitor's: the same
    /// but for the ssh config (their own keys); they share the control
    /// socket directory (sockets are per ssh config) and the state dir (the
    /// monitor reads the primary's drops and host health).
    fn write_client_config(&self) {
        for (path, ssh_config) in [
            (self.primary_config(), self.primary_ssh_config()),
            (self.standby_config(), self.standby_ssh_config()),
            (self.monitor_config(), self.monitor_ssh_config()),
        ] {
            self.write_client_config_file(&path, &ssh_config);
        }
    }

    fn write_client_config_file(&self, path: &Path, ssh_config: &Path) {
        let p = self.primary_dir();
        let text = format!(
            "# archive-cmd / restore-cmd config written by the e2e lab\n\
             ssh_config = {}\n\
             runtime_dir = {}\n\
             state_dir = {}\n\
             remote_command = {}\n\
             connect_timeout = 5\n\
             io_timeout = 20\n\
             {}{}",
            toml_str(&ssh_config.to_string_lossy()),
            toml_str(&p.join("run").to_string_lossy()),
            toml_str(&p.join("state").to_string_lossy()),
            toml_str(&self.remote_command()),
            self.client_log_line,
            with_newline(&self.client_extra.lock().unwrap_or_else(|e| e.into_inner())),
        );
        write_postgres_file(path, text, 0o600);
    }

    fn write_server_configs(&self) {
        // base-backup finds the lab's pg_basebackup on the servers' PATH
        // (crate::pg_path) beside Debian's 15 in the default pg_search_path.
        let extra = self
            .server_extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Without forced commands a client runs `serve` with no role.
        let legacy = if self.forced_command {
            ""
        } else {
            "allow_keys_without_role = true\n"
        };
        for s in &self.servers {
            let text = format!(
                "# archive-remote-cmd config of {name} written by the e2e lab\n\
                 ssh_config = {ssh}\n\
                 runtime_dir = {run}\n\
                 state_dir = {state}\n\
                 remote_command = {remote}\n\
                 archive_roots = [{root}]\n\
                 server_name = {name_q}\n\
                 connect_timeout = 5\n\
                 io_timeout = 20\n\
                 {compress}{legacy}{extra}",
                name = s.name(),
                ssh = toml_str(&s.ssh_config_path().to_string_lossy()),
                run = toml_str(&s.runtime_dir().to_string_lossy()),
                state = toml_str(&s.state_dir().to_string_lossy()),
                remote = toml_str(&self.remote_command()),
                root = toml_str(&self.archive_root().to_string_lossy()),
                name_q = toml_str(s.name()),
                compress = lab_backup_compress(),
                extra = with_newline(&extra),
            );
            write_postgres_file(s.config_path(), text, 0o600);
        }
    }

    /// Replaces the extra text at the end of `<lab>/primary/archive.toml`.
    pub fn set_client_config_extra(&self, extra: &str) {
        *self.client_extra.lock().unwrap_or_else(|e| e.into_inner()) = extra.to_string();
        self.write_client_config();
    }

    /// Replaces the extra text at the end of both servers' remote.toml.
    pub fn set_server_config_extra(&self, extra: &str) {
        *self.server_extra.lock().unwrap_or_else(|e| e.into_inner()) = extra.to_string();
        self.write_server_configs();
    }

    /// `/tmp/lab-XXXXXX`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `<lab>/archive`: the archive root clients name as DST-DIR / SRC-DIR.
    /// Each server sees its own storage there; in the test's namespace it is an
    /// empty read-only dir (inspect `lab.server(n).storage()` instead).
    pub fn archive_root(&self) -> PathBuf {
        self.dir.join("archive")
    }
    /// Archive server 1 (`arch1`) or 2 (`arch2`).
    pub fn server(&self, n: usize) -> &ArchiveServer {
        assert!(n == 1 || n == 2, "servers are 1 and 2, not {n}");
        &self.servers[n - 1]
    }
    /// Both servers.
    pub fn servers(&self) -> &[ArchiveServer] {
        &self.servers
    }
    /// `"arch1 arch2"`: the HOSTS argument of archive-cmd / restore-cmd.
    pub fn hosts(&self) -> String {
        "arch1 arch2".to_string()
    }
    /// Whether authorized_keys force `archive-remote-cmd serve`.
    pub fn forced_command(&self) -> bool {
        self.forced_command
    }
    /// `<lab>/primary`.
    pub fn primary_dir(&self) -> PathBuf {
        self.dir.join("primary")
    }
    /// `<lab>/primary/archive.toml`.
    pub fn primary_config(&self) -> PathBuf {
        self.primary_dir().join("archive.toml")
    }
    /// `<lab>/primary/ssh_config`.
    pub fn primary_ssh_config(&self) -> PathBuf {
        self.primary_dir().join("ssh_config")
    }
    /// `<lab>/primary/id_ed25519`.
    pub fn primary_key(&self) -> PathBuf {
        self.primary_dir().join("id_ed25519")
    }
    /// `<lab>/primary/standby_ed25519`: the standby key (`--role standby`).
    pub fn standby_key(&self) -> PathBuf {
        self.primary_dir().join("standby_ed25519")
    }
    /// `<lab>/primary/standby_ssh_config`: ssh with the standby key.
    pub fn standby_ssh_config(&self) -> PathBuf {
        self.primary_dir().join("standby_ssh_config")
    }
    /// `<lab>/primary/standby.toml`: the primary's config with the standby
    /// key (restore-cmd, restore-backup).
    pub fn standby_config(&self) -> PathBuf {
        self.primary_dir().join("standby.toml")
    }
    /// `<lab>/primary/monitor_ed25519`: the monitor key (`--role monitor`).
    pub fn monitor_key(&self) -> PathBuf {
        self.primary_dir().join("monitor_ed25519")
    }
    /// `<lab>/primary/monitor_ssh_config`: ssh with the monitor key.
    pub fn monitor_ssh_config(&self) -> PathBuf {
        self.primary_dir().join("monitor_ssh_config")
    }
    /// `<lab>/primary/monitor.toml`: the primary's config with the monitor
    /// key (archive-status).
    pub fn monitor_config(&self) -> PathBuf {
        self.primary_dir().join("monitor.toml")
    }
    /// `<lab>/primary/run`.
    pub fn primary_runtime_dir(&self) -> PathBuf {
        self.primary_dir().join("run")
    }
    /// `<lab>/primary/state`.
    pub fn primary_state_dir(&self) -> PathBuf {
        self.primary_dir().join("state")
    }
    /// `<lab>/known_hosts`.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// [`postgres_cmd`] with the lab dir as cwd.
    pub fn postgres_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = postgres_cmd(program);
        cmd.current_dir(&self.dir);
        cmd
    }

    /// `ssh -F <lab>/primary/ssh_config HOST REMOTE_COMMAND` as postgres
    /// (with forced commands the remote command is replaced by the server).
    pub fn ssh(&self, host: &str, remote_command: &str) -> Command {
        let mut cmd = self.postgres_cmd("ssh");
        cmd.arg("-F")
            .arg(self.primary_ssh_config())
            .arg(host)
            .arg(remote_command);
        cmd
    }

    /// Stops server `n`: SIGKILL its sshd listener and every process below it
    /// (per-connection sshd processes, the commands they run, their daemons);
    /// returns once its port refuses connections.
    pub fn stop_server(&self, n: usize) {
        self.server(n).stop();
    }

    /// Starts server `n` again (same keys, port and storage); returns once it
    /// answers on its port.
    pub fn start_server(&self, n: usize) {
        self.server(n).start();
    }

    /// SIGSTOPs server `n` and all its processes: a black hole whose
    /// connections (new and existing) hang.
    pub fn freeze_server(&self, n: usize) {
        self.server(n).freeze();
    }

    /// SIGCONTs server `n` and all its processes.
    pub fn thaw_server(&self, n: usize) {
        self.server(n).thaw();
    }

    /// initdb a new cluster `<lab>/pg/<name>` of the lab's PostgreSQL
    /// version ([`crate::pg_version`]; not started).
    pub fn init_cluster(&self, name: &str, opts: PgOptions) -> PgCluster {
        PgCluster::init(&self.dir, self.clusters.clone(), name, &opts)
    }

    /// A cluster whose data directory `fill` creates (it must not exist
    /// yet when `fill` runs), then configured for the lab like any other.
    pub fn adopt_cluster(&self, name: &str, fill: impl FnOnce(&std::path::Path)) -> PgCluster {
        PgCluster::adopt(&self.dir, self.clusters.clone(), name, fill)
    }

    /// `pg_basebackup -X none` of `primary` into a new cluster `name` with its
    /// own port (not started; WAL must come from the archive).
    pub fn base_backup(&self, primary: &PgCluster, name: &str) -> PgCluster {
        PgCluster::base_backup(&self.dir, self.clusters.clone(), primary, name)
    }

    /// Living processes (other than this one) whose command line or cwd names
    /// the lab dir.
    pub fn lab_processes(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let needle = self.dir.to_string_lossy().into_owned();
        all_pids()
            .into_iter()
            .filter(|&p| p != me && pid_alive(p))
            .filter(|&p| {
                let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let cwd = std::fs::read_link(format!("/proc/{p}/cwd")).unwrap_or_default();
                mentions(&String::from_utf8_lossy(&cmdline), &needle) || cwd.starts_with(&self.dir)
            })
            .collect()
    }

    fn teardown(&mut self) {
        // PostgreSQL first, so archivers stop calling into the servers.
        let clusters = self
            .clusters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for data_dir in clusters {
            stop_data_dir(&data_dir);
        }
        for s in &self.servers {
            if let Err(e) = s.stop_quiet() {
                eprintln!("lab teardown: {}: {e}", s.name());
            }
        }
        // ssh ControlMasters (the primary's, and any the tests made).
        for sock in find_sockets(&self.dir) {
            if sock.starts_with(self.dir.join("pg")) {
                continue;
            }
            let _ = run_with_timeout(
                self.postgres_cmd("ssh")
                    .args(["-F", "none", "-O", "exit", "-S"])
                    .arg(&sock)
                    .arg("x"),
                Duration::from_secs(5),
            );
        }
        // Whatever is left.
        for _ in 0..50 {
            let left = self.lab_processes();
            if left.is_empty() {
                break;
            }
            for &p in &left {
                kill9(p);
            }
            wait_gone(&left, Duration::from_secs(2));
        }
        let left = self.lab_processes();
        if !left.is_empty() {
            eprintln!("lab teardown: processes survived: {left:?}");
        }
        for _ in 0..10 {
            if reap_orphans() == 0 {
                break;
            }
        }
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
        if std::env::var("KEEP_LAB").is_ok_and(|v| v == "1") {
            eprintln!("KEEP_LAB=1: lab kept at {}", self.dir.display());
            return;
        }
        let mut last = None;
        for _ in 0..5 {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "lab teardown: cannot remove {}: {:?}",
            self.dir.display(),
            last
        );
    }
}

/// `ssh-keygen -t ed25519 -N ""`; client keys are handed to postgres (0600).
fn keygen(path: &Path, comment: &str, for_postgres: bool) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    );
    if for_postgres {
        write_postgres_file(path, std::fs::read(path).expect("read key"), 0o600);
        let pubp = path.with_extension("pub");
        write_postgres_file(&pubp, std::fs::read(&pubp).expect("read pub"), 0o644);
    } else {
        set_mode(path, 0o600);
    }
}

fn read_pub(key: &Path) -> String {
    let p = key.with_extension("pub");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn key_without_comment(pubkey: &str) -> String {
    pubkey
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => write!(out, "\\u{:04X}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn with_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// True when `haystack` contains `dir` as a whole path (followed by `/`, NUL,
/// whitespace, a quote or the end), so `/tmp/lab-abc` does not match `/tmp/lab-abcd`.
fn mentions(haystack: &str, dir: &str) -> bool {
    haystack.match_indices(dir).any(|(i, _)| {
        !matches!(
            haystack[i + dir.len()..].chars().next(),
            Some(c) if c.is_alphanumeric() || c == '-' || c == '_' || c == '.'
        )
    })
}

/// Unix sockets anywhere under `dir`.
fn find_sockets(dir: &Path) -> Vec<PathBuf> {
    crate::proc::walk(dir)
        .into_iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_needs_a_path_boundary() {
        assert!(mentions(
            "ssh -S /tmp/lab-abc/primary/run/m",
            "/tmp/lab-abc"
        ));
        assert!(mentions("x\0/tmp/lab-abc\0", "/tmp/lab-abc"));
        assert!(mentions("/tmp/lab-abc", "/tmp/lab-abc"));
        assert!(!mentions("/tmp/lab-abcd/x", "/tmp/lab-abc"));
    }

    #[test]
    fn lab_and_clusters_can_be_shared_across_threads() {
        fn check<T: Send + Sync>() {}
        check::<Lab>();
        check::<PgCluster>();
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
