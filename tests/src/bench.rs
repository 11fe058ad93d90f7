//! Helpers for the archiving benchmark (`src/bin/bench-archive.rs`, whose
//! corpus bench-restore uses too): a corpus of real pgbench WAL, `bzip2 -1`
//! as a yardstick, a cgroup for the lab's own CPU time, and a `/proc`
//! sampler for the peak RSS of the suite's processes. Measurement only:
//! nothing here asserts a timing. What every bench shares is in
//! [`crate::bench_common`] and [`crate::sampler`].

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::sampler::{cpu_count, thread_cpu_ticks, vm_hwm_kib, Sampler, CLK_TCK};
use crate::{chown_postgres, list_files, mkdir_postgres, wait_archived, Lab, PgOptions};

/// Size of the corpus' WAL segments (PostgreSQL's default).
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// A pg_wal-like directory holding real WAL segments, `<root>/pg_wal`, with
/// an `archive_status/` subdirectory, all owned by postgres. Run
/// archive-cmd with cwd `<root>` and `%p = pg_wal/<name>`, as PostgreSQL does
/// from its data directory.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The directory standing in for the data directory.
    pub root: PathBuf,
    /// Segment names, oldest first.
    pub names: Vec<String>,
    /// `pgbench -i -s` scale used to make them.
    pub scale: u32,
    /// Seconds spent making it (0 when an existing corpus was reused).
    pub generated_secs: f64,
}

impl Corpus {
    /// Gives a stand-in data directory the corpus cluster's control file, as
    /// a standby of it has.
    pub fn copy_control_file(&self, data_dir: &Path) {
        crate::restore::install_pg_control(&self.root, data_dir);
    }

    /// `<root>/pg_wal`.
    pub fn pg_wal(&self) -> PathBuf {
        self.root.join("pg_wal")
    }
    /// `<root>/pg_wal/archive_status`.
    pub fn archive_status(&self) -> PathBuf {
        self.pg_wal().join("archive_status")
    }
    /// `<root>/pg_wal/<name>`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.pg_wal().join(name)
    }
    /// Raw bytes of the corpus.
    pub fn raw_bytes(&self) -> u64 {
        self.names
            .iter()
            .map(|n| std::fs::metadata(self.path(n)).map_or(0, |m| m.len()))
            .sum()
    }
}

const CORPUS_INFO: &str = "corpus.txt";
const CONTROL_FILE: &str = "global/pg_control";

fn is_segment_name(n: &str) -> bool {
    n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit())
}

/// Reuses the corpus in `root` when it was made with `scale` and holds at
/// least `count` full segments; otherwise makes one: a fresh 16 MiB-segment
/// cluster with `archive_command = 'cp %p <root>/pg_wal/%f'`, `pgbench -i -s
/// scale`, a checkpoint, then `pgbench -c 2 -j 2 -T 5` rounds until `count`
/// segments past the initialisation are complete (`synchronous_commit = off`
/// only makes that faster: the WAL records are the same). The corpus is the first
/// `count` segments written after the checkpoint; the initialisation's WAL
/// and the last segment (cut short by `pg_switch_wal()`, zero padded) are
/// left out, so every segment is filled with real WAL.
pub fn pgbench_corpus(lab: &Lab, root: &Path, count: usize, scale: u32) -> Corpus {
    if let Some(c) = existing_corpus(root, count, scale) {
        return c;
    }
    let started = Instant::now();
    let pg_wal = root.join("pg_wal");
    if pg_wal.exists() {
        for f in list_files(&pg_wal) {
            let _ = std::fs::remove_file(pg_wal.join(f));
        }
        let _ = std::fs::remove_dir_all(pg_wal.join("archive_status"));
    }
    mkdir_postgres(root, 0o755);
    mkdir_postgres(&pg_wal, 0o755);
    mkdir_postgres(pg_wal.join("archive_status"), 0o755);

    let pg = lab.init_cluster(
        "bench-src",
        PgOptions {
            conf: format!(
                "archive_mode = on\narchive_command = 'cp %p {}/%f'\nsynchronous_commit = off\n",
                pg_wal.display()
            ),
            ..Default::default()
        },
    );
    pg.start();
    let s = scale.to_string();
    pg.pgbench(&["-i", "-s", &s, "-q"]);
    pg.psql("checkpoint");
    let start_lsn = pg.psql("select pg_current_wal_lsn()");
    let init_last = pg.psql(&format!("select pg_walfile_name('{start_lsn}')"));
    // One segment for the tail of the initialisation, `count` full ones,
    // and the one that the switch cuts short.
    let need = (count as u64 + 2) * SEGMENT_BYTES;
    while pg.psql(&format!(
        "select pg_wal_lsn_diff(pg_current_wal_lsn(), '{start_lsn}') >= {need}"
    )) != "t"
    {
        pg.pgbench(&["-c", "2", "-j", "2", "-T", "5", "-n"]);
    }
    let cut_short = pg.switch_wal();
    wait_archived(&pg, &cut_short, Duration::from_secs(600));
    pg.stop();
    // The cluster's control file, for stand-in data directories of a
    // standby of it (system identifier, segment size).
    crate::restore::install_pg_control(pg.data_dir(), root);
    drop(pg);

    let names: Vec<String> = list_files(&pg_wal)
        .into_iter()
        .filter(|n| is_segment_name(n) && *n > init_last && *n < cut_short)
        .take(count)
        .collect();
    assert_eq!(
        names.len(),
        count,
        "pgbench produced only {} full segments between {init_last} and {cut_short}",
        names.len()
    );
    for f in list_files(&pg_wal) {
        if !names.contains(&f) {
            let _ = std::fs::remove_file(pg_wal.join(f));
        }
    }
    for n in &names {
        let len = std::fs::metadata(pg_wal.join(n)).map_or(0, |m| m.len());
        assert_eq!(len, SEGMENT_BYTES, "{n} is {len} bytes, not 16 MiB");
        chown_postgres(pg_wal.join(n));
    }
    let mut info = format!("scale={scale}\n");
    for n in &names {
        writeln!(info, "{n}").unwrap();
    }
    std::fs::write(root.join(CORPUS_INFO), info).expect("write corpus.txt");
    Corpus {
        root: root.to_path_buf(),
        names,
        scale,
        generated_secs: started.elapsed().as_secs_f64(),
    }
}

fn existing_corpus(root: &Path, count: usize, scale: u32) -> Option<Corpus> {
    let text = std::fs::read_to_string(root.join(CORPUS_INFO)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != format!("scale={scale}") {
        return None;
    }
    let names: Vec<String> = lines.take(count).map(str::to_string).collect();
    let ok = names.len() == count
        && root.join(CONTROL_FILE).is_file()
        && names.iter().all(|n| {
            std::fs::metadata(root.join("pg_wal").join(n))
                .is_ok_and(|m| m.is_file() && m.len() == SEGMENT_BYTES)
        });
    ok.then(|| Corpus {
        root: root.to_path_buf(),
        names,
        scale,
        generated_secs: 0.0,
    })
}

/// Sizes of `bzip2 -1 -c` of each segment, two at a time, remembered in
/// `<root>/bzip2-1.sizes` for reruns on the same corpus.
pub fn bzip2_sizes(corpus: &Corpus) -> Vec<u64> {
    let cache = corpus.root.join("bzip2-1.sizes");
    let cached: Vec<(String, u64)> = std::fs::read_to_string(&cache)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (n, s) = l.split_once(' ')?;
            Some((n.to_string(), s.parse().ok()?))
        })
        .collect();
    let lookup = |n: &str| cached.iter().find(|(c, _)| c == n).map(|(_, s)| *s);
    if corpus.names.iter().all(|n| lookup(n).is_some()) {
        return corpus.names.iter().map(|n| lookup(n).unwrap()).collect();
    }
    let todo: Arc<Mutex<Vec<(usize, PathBuf)>>> = Arc::new(Mutex::new(
        corpus
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (i, corpus.path(n)))
            .collect(),
    ));
    let sizes = Arc::new(Mutex::new(vec![0u64; corpus.names.len()]));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let todo = todo.clone();
            let sizes = sizes.clone();
            thread::spawn(move || loop {
                let Some((i, path)) = todo.lock().unwrap().pop() else {
                    return;
                };
                let size = bzip2_size(&path);
                sizes.lock().unwrap()[i] = size;
            })
        })
        .collect();
    for w in workers {
        w.join().expect("bzip2 worker");
    }
    let sizes = sizes.lock().unwrap().clone();
    let mut text = String::new();
    for (n, s) in corpus.names.iter().zip(&sizes) {
        writeln!(text, "{n} {s}").unwrap();
    }
    let _ = std::fs::write(cache, text);
    sizes
}

fn bzip2_size(path: &Path) -> u64 {
    let mut child = Command::new("bzip2")
        .args(["-1", "-c"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run bzip2 (scripts/install-deps.sh installs it)");
    let mut out = child.stdout.take().expect("piped");
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) => panic!("reading bzip2 output of {}: {e}", path.display()),
        }
    }
    let status = child.wait().expect("wait for bzip2");
    assert!(status.success(), "bzip2 -1 {} failed", path.display());
    total
}

/// A cgroup holding this process and everything it starts from now on
/// (children inherit it, daemons included), to measure the lab's own CPU
/// time apart from whatever else runs on the machine. cgroup v1 `cpuacct`
/// when mounted, else cgroup v2 `cpu.stat`. On drop this process moves
/// back to the parent group and the group is removed (once empty).
#[derive(Debug)]
pub struct CpuCgroup {
    dir: PathBuf,
    parent: PathBuf,
    v1: bool,
}

impl CpuCgroup {
    /// Creates `bench-archive-<pid>` and moves this process into it; `None`
    /// when no usable hierarchy is writable.
    pub fn enter() -> Option<CpuCgroup> {
        let name = format!("bench-archive-{}", std::process::id());
        let candidates = [
            ("/sys/fs/cgroup/cpuacct", true),
            ("/sys/fs/cgroup/unified", false),
            ("/sys/fs/cgroup", false),
        ];
        for (root, v1) in candidates {
            let root = Path::new(root);
            let marker = if v1 {
                "cpuacct.usage"
            } else {
                "cgroup.controllers"
            };
            if !root.join(marker).exists() {
                continue;
            }
            let dir = root.join(&name);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            let cg = CpuCgroup {
                dir,
                parent: root.to_path_buf(),
                v1,
            };
            let joined =
                std::fs::write(cg.dir.join("cgroup.procs"), std::process::id().to_string()).is_ok();
            if joined && cg.usage_secs().is_some() {
                return Some(cg);
            }
            drop(cg);
        }
        None
    }

    /// CPU-seconds used so far by the processes that were or are in it.
    pub fn usage_secs(&self) -> Option<f64> {
        if self.v1 {
            let ns: u64 = std::fs::read_to_string(self.dir.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some(ns as f64 / 1e9)
        } else {
            let text = std::fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
            let us: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse()
                .ok()?;
            Some(us as f64 / 1e6)
        }
    }

    /// The group's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.parent.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "bench: cannot remove cgroup {} (processes left in it?)",
            self.dir.display()
        );
    }
}

/// The process name (`/proc/PID/comm`, at most 15 bytes).
pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// `archive-cmd`'s comm.
pub const COMM_ARCHIVE_CMD: &str = "archive-cmd";
/// `archive-remote-cmd`'s comm (truncated to 15 bytes by the kernel).
pub const COMM_REMOTE: &str = "archive-remote-";

/// True when `pid` descends from this process (through the ppid links the
/// host's `/proc` shows, across the servers' PID namespaces). Other labs
/// running on the same machine at the same time are not ours.
pub fn is_ours(pid: i32) -> bool {
    let me = std::process::id() as i32;
    let mut p = pid;
    for _ in 0..64 {
        match crate::proc::proc_stat(p) {
            Some(st) if st.ppid == me => return true,
            Some(st) if st.ppid > 1 => p = st.ppid,
            _ => return false,
        }
    }
    false
}

/// Living PIDs of this process' tree whose comm is `name`.
pub fn pids_named(name: &str) -> Vec<i32> {
    crate::proc::all_pids()
        .into_iter()
        .filter(|&p| comm(p).as_deref() == Some(name) && crate::pid_alive(p) && is_ours(p))
        .collect()
}

/// Waits until no process of this tree named `name` is alive; false after
/// `timeout`.
pub fn wait_no_process(name: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids_named(name).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// What [`sample_peaks`] saw.
#[derive(Debug, Clone, Default)]
pub struct Peaks {
    /// Largest VmHWM of any archive-cmd process, KiB.
    pub archive_cmd_kib: u64,
    /// Largest VmHWM of any archive-remote-cmd process, KiB.
    pub remote_kib: u64,
    /// Distinct archive-cmd processes seen.
    pub archive_cmd_procs: usize,
    /// Distinct archive-remote-cmd processes seen.
    pub remote_procs: usize,
    /// Most archive-remote-cmd processes alive at one sample.
    pub remote_concurrent: usize,
    /// CPU-seconds the sampler thread itself used (to subtract).
    pub own_cpu_secs: f64,
    /// Samples taken.
    pub samples: u64,
}

/// Polls `/proc` every `interval` from a background thread, keeping the
/// largest VmHWM (peak resident set) of the archive-cmd and
/// archive-remote-cmd processes of this process' tree. VmHWM is the
/// process' own high-water mark, so a sample at any moment of its life sees
/// its peak so far; only growth in its last `interval` before exiting can be
/// missed. [`Sampler::finish`] takes one last sample and returns the peaks.
pub fn sample_peaks(interval: Duration) -> Sampler<Peaks> {
    Sampler::start("bench-sampler", move |stop| sample_loop(stop, interval))
}

fn sample_loop(stop: &AtomicBool, interval: Duration) -> Peaks {
    let cpu0 = thread_cpu_ticks();
    let mut peaks = Peaks::default();
    let mut seen_cmd = HashSet::new();
    let mut seen_remote = HashSet::new();
    loop {
        let last = stop.load(Ordering::SeqCst);
        let mut alive_remote = 0;
        for pid in crate::proc::all_pids() {
            let Some(c) = comm(pid) else { continue };
            let is_cmd = c == COMM_ARCHIVE_CMD;
            let is_remote = c == COMM_REMOTE;
            if (!is_cmd && !is_remote) || !is_ours(pid) {
                continue;
            }
            let Some(hwm) = vm_hwm_kib(pid) else { continue };
            if is_cmd {
                peaks.archive_cmd_kib = peaks.archive_cmd_kib.max(hwm);
                seen_cmd.insert(pid);
            } else {
                peaks.remote_kib = peaks.remote_kib.max(hwm);
                seen_remote.insert(pid);
                alive_remote += 1;
            }
        }
        peaks.remote_concurrent = peaks.remote_concurrent.max(alive_remote);
        peaks.samples += 1;
        if last {
            break;
        }
        thread::sleep(interval);
    }
    peaks.archive_cmd_procs = seen_cmd.len();
    peaks.remote_procs = seen_remote.len();
    peaks.own_cpu_secs = thread_cpu_ticks().saturating_sub(cpu0) as f64 / CLK_TCK;
    peaks
}

/// One line on what decoding the corpus costs, the largest fixed cost of a
/// restore and so a bound on the segments/s any restore-cmd reaches here:
/// each segment compressed as the archive servers store it (zstd at their
/// default level, with checksum) and decompressed once, on one core.
pub fn corpus_decode_line(corpus: &Corpus, target_per_sec: f64) -> String {
    let level = archive_core::common::config::Config::default().compress_level;
    let (mut secs, mut bytes) = (0.0, 0usize);
    for name in &corpus.names {
        let path = corpus.path(name);
        let Ok(raw) = std::fs::read(&path) else {
            return format!("corpus decoding: cannot read {}", path.display());
        };
        let z = archive_core::common::codec::zstd_compress(&raw, level).expect("compress");
        let t = Instant::now();
        let out = zstd::bulk::decompress(&z, raw.len()).expect("decompress");
        secs += t.elapsed().as_secs_f64();
        assert!(out == raw, "{name} decodes to its bytes");
        bytes += raw.len();
    }
    let per_ms = secs * 1000.0 / corpus.names.len().max(1) as f64;
    format!(
        "corpus decoding: {per_ms:.1} ms per segment ({:.0} MB/s) on one core, zstd level {level} as stored; at {target_per_sec:.0} segments/s decoding alone takes {:.0}% of this machine's {} cores",
        bytes as f64 / secs.max(1e-9) / 1e6,
        per_ms * target_per_sec / 10.0 / cpu_count() as f64,
        cpu_count()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert!(is_segment_name("000000010000000000000001"));
        assert!(!is_segment_name("00000001.history"));
        assert!(!is_segment_name("000000010000000000000001.partial"));
    }
}
