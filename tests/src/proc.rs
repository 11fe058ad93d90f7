//! Processes: running commands as `postgres`, locating the binaries under test,
//! polling helpers, and the `/proc` walking the lab uses to stop what it started.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions};

/// Debian's PostgreSQL 15, the machine's own.
const DEBIAN_PG15: &str = "/usr/lib/postgresql/15/bin";

/// The PostgreSQL major version the lab runs: `E2E_PG_VERSION`, else 15.
pub fn pg_version() -> u32 {
    match std::env::var("E2E_PG_VERSION") {
        Ok(v) if !v.is_empty() => v.parse().unwrap_or_else(|_| {
            panic!("E2E_PG_VERSION={v:?}: expected a major version such as 17")
        }),
        _ => 15,
    }
}

/// Where scripts/install-pg.sh puts other versions: `PGARCHIVE_PG_CACHE`,
/// else /var/cache/pgarchive-pg.
fn pg_cache() -> PathBuf {
    std::env::var_os("PGARCHIVE_PG_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/pgarchive-pg"))
}

fn installed_bin(version: u32) -> PathBuf {
    if version == 15 && Path::new(DEBIAN_PG15).join("postgres").is_file() {
        return PathBuf::from(DEBIAN_PG15);
    }
    let dir = pg_cache().join(version.to_string()).join("bin");
    if !dir.join("postgres").is_file() {
        panic!(
            "PostgreSQL {version} is not installed in {}: run scripts/install-pg.sh {version}",
            dir.display()
        );
    }
    dir
}

/// The directory of the lab's server programs (initdb, pg_ctl, postgres).
pub fn pg_server_dir() -> PathBuf {
    installed_bin(pg_version())
}

/// The directory of the lab's client programs (psql, pg_basebackup, ...):
/// the version's own when it has them, else PostgreSQL 18's, which serve
/// every older server (the npm builds of 13 to 17 have no client programs).
pub fn pg_client_dir() -> PathBuf {
    let own = pg_server_dir();
    if own.join("psql").is_file() {
        own
    } else {
        installed_bin(18)
    }
}

/// The `postgres` account, looked up once in the password database.
#[derive(Debug, Clone)]
pub struct PostgresUser {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// The `postgres` account (uid, gid, home) from `getpwnam("postgres")`.
pub fn postgres_user() -> &'static PostgresUser {
    static USER: OnceLock<PostgresUser> = OnceLock::new();
    USER.get_or_init(|| lookup_user("postgres").expect("the `postgres` account must exist"))
}

#[allow(unsafe_code)]
fn lookup_user(name: &str) -> Option<PostgresUser> {
    let cname = CString::new(name).ok()?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live, correctly sized local; getpwnam_r
    // writes the strings into `buf`, which outlives the reads below.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_dir points to a NUL-terminated string inside `buf`.
    let home = unsafe { std::ffi::CStr::from_ptr(pwd.pw_dir) };
    Some(PostgresUser {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        home: PathBuf::from(home.to_string_lossy().into_owned()),
    })
}

/// A command that runs as the `postgres` account: its uid and gid (supplementary
/// groups dropped), a clean environment with `HOME`, `USER`, `LOGNAME` and a
/// `PATH` that starts with the lab's PostgreSQL client and server
/// directories, cwd = postgres' home.
/// [`crate::Lab::postgres_cmd`] does the same with the lab dir as cwd.
pub fn postgres_cmd(program: impl AsRef<OsStr>) -> Command {
    let user = postgres_user();
    let mut cmd = Command::new(program);
    cmd.uid(user.uid)
        .gid(user.gid)
        .env_clear()
        .env("HOME", &user.home)
        .env("USER", "postgres")
        .env("LOGNAME", "postgres")
        .env("PATH", pg_path())
        .env("LANG", "C.UTF-8")
        .current_dir(&user.home);
    for var in ["RUST_BACKTRACE", "RUST_LOG", "TZ"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd
}

/// The command line (sh-quoted) and cwd of `cmd`, for messages.
pub fn command_line(cmd: &Command) -> String {
    let mut s = sh_quote(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&sh_quote(&arg.to_string_lossy()));
    }
    if let Some(dir) = cmd.get_current_dir() {
        s.push_str(&format!("   (in {})", dir.display()));
    }
    s
}

/// Runs `cmd` to completion (stdin empty), capturing stdout and stderr.
/// Panics only if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", command_line(cmd)))
}

/// Runs `cmd` with `input` on its stdin, capturing stdout and stderr.
pub fn run_with_input(cmd: &mut Command, input: impl AsRef<[u8]>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", command_line(cmd)));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.as_ref().to_vec();
    let writer = thread::spawn(move || {
        // A child that exits without reading all of stdin is not our error.
        let _ = stdin.write_all(&input);
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {}: {e}", command_line(cmd)));
    let _ = writer.join();
    out
}

/// Runs `cmd`; returns `None` (after SIGKILLing it) if it is not done within
/// `timeout`. For steps that must not hang the test.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", command_line(cmd)));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                // A daemonized grandchild may keep the pipes open: don't wait on it.
                let stdout = join_within(out_t, Duration::from_secs(2));
                let stderr = join_within(err_t, Duration::from_secs(2));
                return Some(Output {
                    status,
                    stdout,
                    stderr,
                });
            }
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn join_within(handle: thread::JoinHandle<Vec<u8>>, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    while !handle.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    if handle.is_finished() {
        handle.join().unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// What a finished command wrote to stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a finished command wrote to stdout, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Formats an [`Output`] with the command line, for panic messages.
pub fn describe_output(cmd: &Command, out: &Output) -> String {
    format!(
        "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        command_line(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` and returns its stdout; panics with the command line, status,
/// stdout and stderr unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    if !out.status.success() {
        panic!("command failed\n{}", describe_output(cmd, &out));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The directory holding the workspace's built binaries: `E2E_BIN_DIR` if set,
/// else derived from this test executable (`target/<profile>/deps/x` →
/// `target/<profile>`). When `postgres` cannot reach it (a clone under
/// root's mode-700 home), the binaries are linked into a directory it can
/// reach ([`reachable_bin_dir`]): PostgreSQL runs archive-cmd as postgres.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let built = if let Some(dir) = std::env::var_os("E2E_BIN_DIR") {
            PathBuf::from(dir)
        } else {
            let exe = std::env::current_exe().expect("current_exe");
            let mut dir = exe.parent().expect("exe has a parent").to_path_buf();
            if dir.file_name() == Some(OsStr::new("deps")) {
                dir.pop();
            }
            dir
        };
        reachable_bin_dir(built)
    })
    .clone()
}

/// True when every directory from `/` down to `dir` lets others through
/// (what `postgres` needs to run a program in it, owning none of them).
fn others_can_enter(dir: &Path) -> bool {
    dir.ancestors().all(|d| {
        std::fs::metadata(d)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// `built` itself when others can enter it; else a directory in /tmp
/// (`pgarchive-bin-<pid>`) holding hard links (copies across file systems)
/// to its programs. Directories left by earlier processes that have ended
/// are removed first.
fn reachable_bin_dir(built: PathBuf) -> PathBuf {
    let built = built.canonicalize().unwrap_or(built);
    if others_can_enter(&built) {
        return built;
    }
    let tmp = std::env::temp_dir();
    if let Ok(rd) = std::fs::read_dir(&tmp) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix("pgarchive-bin-")
                .and_then(|p| p.parse::<i32>().ok())
            {
                if !pid_alive(pid) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let staged = tmp.join(format!("pgarchive-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir(&staged).expect("create the staged binaries dir");
    set_mode(&staged, 0o755);
    for e in std::fs::read_dir(&built)
        .expect("read the binaries dir")
        .flatten()
    {
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        let to = staged.join(e.file_name());
        if std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to).expect("copy a binary where postgres can run it");
        }
    }
    eprintln!(
        "e2e: postgres cannot enter {}: running its binaries from {}",
        built.display(),
        staged.display()
    );
    staged
}

/// Path of the workspace binary `name` (archive-cmd, archive-remote-cmd,
/// restore-cmd, …); panics if it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!(
            "binary {name} not found at {}: build them first: cargo build --workspace --bins",
            path.display()
        );
    }
    path
}

/// `PATH` for commands of the lab: its PostgreSQL client programs, then
/// its server programs, then the system's.
pub fn pg_path() -> String {
    format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        pg_client_dir().display(),
        pg_server_dir().display()
    )
}

/// Path of a PostgreSQL program (`pg_ctl`, `psql`, …) of the lab's
/// version: the server's directory when it has it, else the client
/// programs' (see [`pg_client_dir`]).
pub fn pg_bin(name: &str) -> PathBuf {
    let server = pg_server_dir().join(name);
    if server.is_file() {
        server
    } else {
        pg_client_dir().join(name)
    }
}

/// Polls `f` (every 50 ms) until it returns true; panics naming `what` after
/// `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sorted names of the regular files directly in `dir` (no recursion, no
/// symlinks); empty if `dir` does not exist.
pub fn list_files(dir: impl AsRef<Path>) -> Vec<String> {
    let dir = dir.as_ref();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("read_dir {}: {e}", dir.display()),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_type()
                .ok()?
                .is_file()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names
}

/// Every entry below `dir` (not `dir` itself), at any depth; directories
/// that cannot be read are passed over.
pub fn walk(dir: &Path) -> Vec<std::fs::DirEntry> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
            out.push(e);
        }
    }
    out
}

/// Names in `dir` of the temp files a writer leaves while it works
/// (`<name>.tmp-<suffix>`); panics when `dir` cannot be read.
pub fn temp_files(dir: impl AsRef<Path>) -> Vec<String> {
    let dir = dir.as_ref();
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// Quotes `s` for a POSIX shell (unchanged when it is made of safe characters).
pub fn sh_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `chown postgres:postgres path`.
pub fn chown_postgres(path: impl AsRef<Path>) {
    let u = postgres_user();
    let path = path.as_ref();
    chown(path, Some(u.uid), Some(u.gid))
        .unwrap_or_else(|e| panic!("chown postgres {}: {e}", path.display()));
}

/// Creates `path` (and parents) owned by postgres with `mode`.
pub fn mkdir_postgres(path: impl AsRef<Path>, mode: u32) {
    let path = path.as_ref();
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    chown_postgres(path);
    set_mode(path, mode);
}

/// `chmod mode path`.
pub fn set_mode(path: impl AsRef<Path>, mode: u32) {
    let path = path.as_ref();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Writes `contents` to `path`, owned by postgres with `mode`.
pub fn write_postgres_file(path: impl AsRef<Path>, contents: impl AsRef<[u8]>, mode: u32) {
    let path = path.as_ref();
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chown_postgres(path);
    set_mode(path, mode);
}

/// A TCP port on `ip` that nothing listens on right now and that no other lab
/// in this process has been given.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    static TAKEN: Mutex<Option<HashSet<(IpAddr, u16)>>> = Mutex::new(None);
    loop {
        let listener = TcpListener::bind((ip, 0))
            .unwrap_or_else(|e| panic!("cannot bind a free port on {ip}: {e}"));
        let port = listener.local_addr().expect("local_addr").port();
        let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
        if taken
            .get_or_insert_with(HashSet::new)
            .insert((ip.into(), port))
        {
            return port;
        }
    }
}

// ---------------------------------------------------------------------------
// /proc walking and signals
// ---------------------------------------------------------------------------

/// What the lab needs from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub sid: i32,
}

/// Parses `/proc/PID/stat`; `None` if the process is gone.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp session ..." — comm may contain anything, so
    // split after its last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let _pgrp: i32 = fields.next()?.parse().ok()?;
    let sid = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        sid,
    })
}

/// All PIDs currently in `/proc`.
pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// True when `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// The command name of process `pid` (`/proc/<pid>/comm`); empty when it
/// is gone.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// SIGKILLs the descendant of `root` whose command name is `name` (panics
/// when there is none).
pub fn kill_descendant_named(root: i32, name: &str) {
    let pid = descendants(root)
        .into_iter()
        .find(|&p| comm(p) == name)
        .unwrap_or_else(|| panic!("no {name} process under {root}"));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("a pid"),
        rustix::process::Signal::KILL,
    )
    .unwrap_or_else(|e| panic!("kill {name} ({pid}): {e}"));
}

/// All living descendants of `pid` (not `pid` itself), found through the ppid
/// links in `/proc`, parents before children.
pub fn descendants(pid: i32) -> Vec<i32> {
    let stats: Vec<ProcStat> = all_pids().into_iter().filter_map(proc_stat).collect();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for s in stats.iter().filter(|s| s.ppid == p) {
            if s.state != 'Z' && !out.contains(&s.pid) {
                out.push(s.pid);
                frontier.push(s.pid);
            }
        }
    }
    out
}

/// The target of `/proc/PID/ns/<kind>` (e.g. `pid:[4026532]`).
pub fn namespace_of(pid: i32, kind: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Living processes whose PID namespace is `ns` (as returned by [`namespace_of`]).
pub fn pids_in_pid_namespace(ns: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| namespace_of(p, "pid").as_deref() == Some(ns) && pid_alive(p))
        .collect()
}

/// Sends `sig` to `pid`, ignoring errors (the process may be gone).
pub fn signal(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// SIGKILL.
pub fn kill9(pid: i32) {
    signal(pid, Signal::KILL);
}

/// SIGKILLs `pid` and all its descendants (collected first, so orphans are
/// still found), then waits up to `timeout` for them to be gone.
pub fn kill_tree(pid: i32, timeout: Duration) -> bool {
    let mut victims = descendants(pid);
    victims.insert(0, pid);
    for &p in &victims {
        kill9(p);
    }
    wait_gone(&victims, timeout)
}

/// Waits until none of `pids` is alive (zombies count as gone).
pub fn wait_gone(pids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        reap_orphans();
        if pids.iter().all(|&p| !pid_alive(p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Makes this test process the reaper of orphans started below it (daemonized
/// ssh ControlMasters, postmasters started by pg_ctl, …) and starts a thread
/// that reaps them; without it they would turn into zombies under a PID 1 that
/// does not reap (common in containers). Idempotent.
pub fn ensure_reaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            eprintln!("lab: cannot become a child subreaper ({e}); orphans may linger as zombies");
            return;
        }
        thread::Builder::new()
            .name("lab-reaper".into())
            .spawn(|| loop {
                reap_orphans();
                thread::sleep(Duration::from_millis(200));
            })
            .expect("spawn reaper thread");
    });
}

/// Reaps zombie children of this process that are adopted orphans. They are
/// told apart from children spawned through `std::process::Command` (which
/// their `Child` handle must reap) by their session: every daemon we adopt
/// (ssh -f / ControlPersist, postmaster, sshd) has called setsid().
pub fn reap_orphans() -> usize {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    // Read from /proc, not getsid(2): when the session leader lives outside
    // our PID namespace (CI containers) the kernel reports session 0, which
    // rustix's Pid cannot hold (it panics).
    let Some(my_sid) = proc_stat(me).map(|st| st.sid) else {
        return 0;
    };
    let mut reaped = 0;
    for pid in all_pids() {
        let Some(st) = proc_stat(pid) else { continue };
        if st.ppid == me && st.state == 'Z' && st.sid != my_sid {
            if let Some(p) = Pid::from_raw(pid) {
                if let Ok(Some(_)) = rustix::process::waitpid(Some(p), WaitOptions::NOHANG) {
                    reaped += 1;
                }
            }
        }
    }
    reaped
}

/// Reads a file's tail (last `max` bytes) for diagnostics; empty if unreadable.
pub fn file_tail(path: impl AsRef<Path>, max: usize) -> String {
    let Ok(bytes) = std::fs::read(path.as_ref()) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Living processes (other than this one) whose command line contains `needle`.
pub fn lab_processes_matching(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&p| p != me && pid_alive(p))
        .filter(|&p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(needle)
        })
        .collect()
}
