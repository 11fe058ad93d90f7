//! The memory state a restore benchmark runs in, which on a virtual machine
//! can matter more than the code measured.
//!
//! Every restored segment is 16 MiB of new page cache. On bare metal that
//! costs a memcpy. On a VM whose hypervisor backs guest memory on first
//! touch and takes free pages back (virtio-balloon free page reporting, ~2 s
//! after they are freed), writing into memory the guest has not touched
//! lately costs about ten times as much: each 4 KiB page traps to the host.
//! A standby that has run for a while has its RAM full of page cache, and
//! new cache pages are recycled from old ones, already backed; a freshly
//! booted VM with most of its RAM free pays the trap on every page.
//!
//! [`page_cache_line`] measures both costs on this machine;
//! [`MemoryCgroup`] recreates the "RAM full of cache" state for a set of
//! processes, by limiting their memory so that the kernel recycles their
//! page cache instead of taking fresh pages.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// How long freed guest memory stays backed before the hypervisor may take
/// it back (the kernel reports free pages 2 s after they are freed), plus a
/// margin.
pub const SETTLE: Duration = Duration::from_secs(3);

const FILE_BYTES: usize = 16 << 20;
const FILES: usize = 8;

/// Median time to write one 16 MiB file (kept, as restored segments are)
/// into memory freed more than [`SETTLE`] ago, and into memory freed just
/// before; `dir` is where the files go (removed afterwards).
pub fn page_cache_costs(dir: &Path) -> std::io::Result<(Duration, Duration)> {
    let data: Vec<u8> = (0..FILE_BYTES).map(|i| (i * 7 + i / 4093) as u8).collect();
    let paths: Vec<PathBuf> = (0..FILES)
        .map(|i| dir.join(format!("page-cache-probe-{i}")))
        .collect();
    let write_all = |paths: &[PathBuf]| -> std::io::Result<Duration> {
        let mut times = Vec::new();
        for p in paths {
            let t = Instant::now();
            let mut f = File::create(p)?;
            for chunk in data.chunks(256 << 10) {
                f.write_all(chunk)?;
            }
            drop(f);
            times.push(t.elapsed());
        }
        Ok(crate::bench_common::quantile(&times, 0.5))
    };
    let remove_all = |paths: &[PathBuf]| {
        for p in paths {
            let _ = fs::remove_file(p);
        }
    };
    thread::sleep(SETTLE);
    let fresh = write_all(&paths);
    remove_all(&paths);
    let recycled = fresh.and_then(|fresh| Ok((fresh, write_all(&paths)?)));
    remove_all(&paths);
    recycled
}

/// One line on what a restored segment's page cache costs here (see the
/// module's documentation), and the share of the machine that takes at
/// `target_per_sec` segments/s in fresh memory.
pub fn page_cache_line(dir: &Path, target_per_sec: f64) -> String {
    match page_cache_costs(dir) {
        Ok((fresh, recycled)) => format!(
            "page cache: writing a 16 MiB file takes {:.1} ms into memory unused for {} s, {:.1} ms into memory just freed; at {target_per_sec:.0} segments/s the first takes {:.0}% of this machine's {} cores{}",
            fresh.as_secs_f64() * 1000.0,
            SETTLE.as_secs(),
            recycled.as_secs_f64() * 1000.0,
            fresh.as_secs_f64() * target_per_sec * 100.0 / crate::sampler::cpu_count() as f64,
            crate::sampler::cpu_count(),
            if fresh > recycled * 3 {
                " (the VM backs guest memory on first touch and takes freed memory back: every restored segment pays this unless the page cache recycles)"
            } else {
                ""
            }
        ),
        Err(e) => format!("page cache: cannot measure in {}: {e}", dir.display()),
    }
}

/// A memory cgroup with a limit, for processes started with
/// [`MemoryCgroup::join_on_exec`]: when their page cache reaches the limit
/// the kernel reclaims their oldest (clean) pages and reuses them, as on a
/// host whose RAM is full of cache. cgroup v1 `memory` when mounted, else
/// cgroup v2 with the `memory` controller. Removed on drop.
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
    procs: File,
    v1: bool,
}

impl MemoryCgroup {
    /// Creates `<name>-<pid>` limited to `limit` bytes; `Err` says why not.
    pub fn create(name: &str, limit: u64) -> Result<MemoryCgroup, String> {
        let name = format!("{name}-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes");
        let (root, v1) = if v1.exists() {
            (PathBuf::from("/sys/fs/cgroup/memory"), true)
        } else {
            let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                .into_iter()
                .map(PathBuf::from)
                .find(|r| {
                    fs::read_to_string(r.join("cgroup.controllers"))
                        .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
                })
                .ok_or("no cgroup hierarchy with the memory controller is mounted")?;
            // Child groups get the controller only when the parent hands it on.
            let _ = fs::write(root.join("cgroup.subtree_control"), "+memory");
            (root, false)
        };
        let dir = root.join(name);
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let limit_file = dir.join(if v1 {
            "memory.limit_in_bytes"
        } else {
            "memory.max"
        });
        let opened = fs::write(&limit_file, limit.to_string())
            .map_err(|e| format!("cannot write {}: {e}", limit_file.display()))
            .and_then(|()| {
                OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))
                    .map_err(|e| format!("cannot open {}/cgroup.procs: {e}", dir.display()))
            });
        match opened {
            Ok(procs) => Ok(MemoryCgroup { dir, procs, v1 }),
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// Makes `cmd`'s process (and so everything it starts) a member of the
    /// group from before it runs.
    #[allow(unsafe_code)]
    pub fn join_on_exec(&self, cmd: &mut Command) {
        let fd = self.procs.as_raw_fd();
        // SAFETY: the closure only calls write(2), async-signal-safe, on a
        // descriptor that stays open as long as `self`, which outlives the
        // spawn of `cmd`; writing "0" moves the writing process.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }

    /// The most memory its processes used at once, when the kernel says.
    pub fn peak_bytes(&self) -> Option<u64> {
        let file = if self.v1 {
            "memory.max_usage_in_bytes"
        } else {
            "memory.peak"
        };
        self.read_number(file)
    }

    /// How many times the group's usage hit its limit (each time the
    /// kernel reclaimed its pages instead of growing it), when the kernel
    /// says.
    pub fn limit_hits(&self) -> Option<u64> {
        if self.v1 {
            self.read_number("memory.failcnt")
        } else {
            let events = fs::read_to_string(self.dir.join("memory.events")).ok()?;
            events
                .lines()
                .find_map(|l| l.strip_prefix("max "))?
                .trim()
                .parse()
                .ok()
        }
    }

    /// A group file that holds one number.
    fn read_number(&self, file: &str) -> Option<u64> {
        fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// What the kernel counted against the group (limit hits, OOM kills),
    /// for messages.
    pub fn events(&self) -> String {
        let files: &[&str] = if self.v1 {
            &["memory.failcnt", "memory.oom_control"]
        } else {
            &["memory.events"]
        };
        files
            .iter()
            .map(|f| match fs::read_to_string(self.dir.join(f)) {
                Ok(text) => format!(
                    "{f}: {}",
                    text.split_whitespace().collect::<Vec<_>>().join(" ")
                ),
                Err(e) => format!("{f}: {e}"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Members that just exited may take a moment to leave.
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_writes_more_than_the_limit_and_stays_under_it() {
        if !nix_root() {
            eprintln!("skipped: creating a cgroup needs root");
            return;
        }
        let limit = 32u64 << 20;
        let cg = MemoryCgroup::create("e2e-memory-test", limit).unwrap();
        // Beside the build, on disk: a tmpfs (a /tmp or TMPDIR that may be
        // one) holds pages the group cannot reclaim, and dd is OOM-killed.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let out = dir.path().join("big");
        let mut cmd = Command::new("dd");
        // oflag=dsync: each block is on disk before the next is written.
        // Without it a cgroup v1 group on a slow disk fills with dirty
        // pages its reclaim cannot free, and the kernel OOM-kills dd (seen
        // in CI on a fresh VM); restore-cmd fsyncs every segment it writes.
        cmd.arg("if=/dev/zero")
            .arg(format!("of={}", out.display()))
            .args(["bs=1M", "count=128", "oflag=dsync", "status=none"]);
        cg.join_on_exec(&mut cmd);
        let status = cmd.status().unwrap();
        assert!(
            status.success(),
            "dd in the group: {status}; the group's events: {}",
            cg.events()
        );
        assert_eq!(fs::metadata(&out).unwrap().len(), 128 << 20);
        // dd's page cache was charged to the group (it was a member), and
        // reclaimed at the limit rather than grown past it.
        let peak = cg.peak_bytes().unwrap();
        assert!(
            peak > limit / 2 && peak <= limit,
            "peak {peak} bytes, limit {limit}: the writer was not held to the group"
        );
        let hits = cg.limit_hits().unwrap();
        assert!(
            hits > 0,
            "the group never reached its limit: {}",
            cg.events()
        );
    }

    fn nix_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        #[allow(unsafe_code)]
        unsafe {
            libc::geteuid() == 0
        }
    }
}
