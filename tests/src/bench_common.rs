//! What every benchmark binary (`src/bin/bench-*.rs`) does the same way:
//! knobs from the environment (recorded for the results file, see
//! [`crate::bench_results`]), the preamble (root, which binaries, the lab,
//! the tmpfs warning, the machine's speed), ssh what-if options, closing
//! ssh masters between runs, and small figures helpers. The `/proc`
//! measurements are in [`crate::sampler`].

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::str::FromStr;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::bench_results::{Results, RESULTS_DIR_VAR};
use crate::{bin_dir, write_postgres_file, Lab, LabOptions};

/// The knobs read so far, in order, with the values used.
static KNOBS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn record(key: &str, value: impl Into<String>) {
    let mut k = KNOBS.lock().unwrap_or_else(|e| e.into_inner());
    let value = value.into();
    match k.iter_mut().find(|(n, _)| n == key) {
        Some(e) => e.1 = value,
        None => k.push((key.to_string(), value)),
    }
}

/// The knobs this run used: each one read through this module with its
/// value (the default when unset), then any other `BENCH_*` or `KEEP_LAB`
/// variable set in the environment.
pub fn knobs() -> Vec<(String, String)> {
    let mut k = KNOBS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut other: Vec<(String, String)> = std::env::vars()
        .filter(|(n, _)| (n.starts_with("BENCH_") || n == "KEEP_LAB") && n != RESULTS_DIR_VAR)
        .filter(|(n, _)| !k.iter().any(|(r, _)| r == n))
        .collect();
    other.sort();
    k.extend(other);
    k
}

/// `key` parsed, or `default` when unset or blank; an error naming the
/// variable when it does not parse.
pub fn env_or<T: FromStr + Display>(key: &str, default: T) -> Result<T, String> {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => {
            record(key, v.trim());
            v.trim()
                .parse()
                .map_err(|_| format!("{key}={v:?} is not a valid value"))
        }
        _ => {
            record(key, default.to_string());
            Ok(default)
        }
    }
}

/// `key` as it is, or `default` when unset (set but empty stays empty).
pub fn env_string(key: &str, default: &str) -> String {
    let v = std::env::var(key).unwrap_or_else(|_| default.to_string());
    record(key, v.as_str());
    v
}

/// `key` (or `default` when unset or blank) split at commas, items
/// trimmed, empty ones left out.
pub fn env_list(key: &str, default: &str) -> Vec<String> {
    let v = std::env::var(key)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string());
    record(key, v.trim());
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `key`'s lines (`;` separates them), trimmed, each ending in a newline;
/// empty when unset.
pub fn env_lines(key: &str) -> String {
    let v = std::env::var(key).unwrap_or_default();
    if !v.trim().is_empty() {
        record(key, v.trim());
    }
    v.split(';')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `key` as a path; `None` when unset or empty.
pub fn env_path(key: &str) -> Option<PathBuf> {
    let v = std::env::var_os(key).filter(|v| !v.is_empty())?;
    record(key, v.to_string_lossy());
    Some(PathBuf::from(v))
}

/// Whether `key` is set at all (to anything).
pub fn env_present(key: &str) -> bool {
    let v = std::env::var_os(key);
    if let Some(v) = &v {
        record(key, v.to_string_lossy());
    }
    v.is_some()
}

/// An error unless this process runs as root; `who` says what the lab
/// runs as postgres.
pub fn require_root(who: &str) -> Result<(), String> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err(format!(
            "run as root (the lab starts sshd and runs {who} as postgres)"
        ))
    }
}

/// `<bench>: binaries DIR (release build)`, or a warning that they are not
/// a release build.
pub fn binaries_line(bench: &str) -> String {
    let bins = bin_dir();
    let profile = if bins.ends_with("release") {
        "release build"
    } else {
        "NOT a release build: figures are not representative"
    };
    format!("{bench}: binaries {} ({profile})", bins.display())
}

/// The exit status of a bench whose run returned `result`: 0, or 1 after
/// `<bench>: FAILED: <error>` on stderr.
pub fn exit_code(bench: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{bench}: FAILED: {e}");
            ExitCode::from(1)
        }
    }
}

/// Starts the lab with `options` and says when its directory is on a
/// tmpfs (see [`tmpfs_warning`]).
pub fn open_lab(out: &mut Results, options: LabOptions) -> Lab {
    let lab = Lab::with(options);
    if let Some(w) = tmpfs_warning(lab.dir()) {
        out.say(w);
    }
    lab
}

/// Appends `options` (ssh_config lines) as a final `Host *` block to every
/// ssh client config of the lab: the primary's and both servers' (ssh
/// takes the first value it finds, so this only sets options the per-host
/// blocks leave unset). A what-if knob: call it before anything connects.
pub fn add_ssh_options(lab: &Lab, options: &str) -> Result<(), String> {
    let mut block = String::from("Host *\n");
    for l in options.lines().filter(|l| !l.trim().is_empty()) {
        block.push_str(&format!("  {}\n", l.trim()));
    }
    let files = std::iter::once(lab.primary_ssh_config())
        .chain(lab.servers().iter().map(|s| s.ssh_config_path()));
    for f in files {
        let mut text =
            std::fs::read_to_string(&f).map_err(|e| format!("read {}: {e}", f.display()))?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&block);
        write_postgres_file(&f, text, 0o644);
    }
    Ok(())
}

/// Unix sockets directly in `dir` (ssh control sockets).
pub fn sockets_in(dir: &Path) -> usize {
    use std::os::unix::fs::FileTypeExt;
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
            .count()
    })
}

/// Asks every ssh master whose control socket is in `dir` to exit (`ssh
/// -F none -O exit -S SOCKET HOST`, each made by `ssh()`: where and as whom
/// it runs), then waits up to 5 s for the sockets to go, so the next run
/// connects afresh.
pub fn close_ssh_masters(dir: &Path, host: &str, ssh: impl Fn() -> Command) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_socket()) {
            let mut cmd = ssh();
            cmd.args(["-F", "none", "-O", "exit", "-S"])
                .arg(e.path())
                .arg(host);
            let _ = crate::run_with_timeout(&mut cmd, Duration::from_secs(10));
        }
    }
    // The master exits right after answering.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && sockets_in(dir) > 0 {
        thread::sleep(Duration::from_millis(20));
    }
}

/// Milliseconds of `d`.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sum of the sizes of all regular files below `dir` (0 if missing).
pub fn dir_bytes(dir: &Path) -> u64 {
    crate::proc::walk(dir)
        .iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

/// The `q` quantile (0..=1) of `values` (nearest rank); 0 when empty.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut v = values.to_vec();
    v.sort();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// A warning when `dir` is on a tmpfs (a /tmp may be one): there fsync
/// costs nothing and files are RAM, so figures measured there do not
/// describe archive servers and standbys writing to disks.
pub fn tmpfs_warning(dir: &Path) -> Option<String> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs(2) on a NUL-terminated path, into a struct of plain
    // integers for which all zeroes is a valid value.
    #[allow(unsafe_code)]
    let f_type = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(path.as_ptr(), &mut st) != 0 {
            return None;
        }
        st.f_type
    };
    (f_type as i64 == TMPFS_MAGIC).then(|| {
        format!(
            "WARNING: {} is on a tmpfs: fsync is free and files live in RAM, so these figures flatter whatever writes to disk",
            dir.display()
        )
    })
}

/// zstd decompression speed of the machine the issues' targets were set on
/// (about 1.7 GiB/s per core, quoted in the restore issue).
pub const REFERENCE_ZSTD_DECODE_MBS: f64 = 1.7 * 1024.0 * 1024.0 * 1024.0 / 1e6;

/// One line on this machine's speed, for comparing figures across runs and
/// machines: zstd level 1 compression and decompression of `sample` (best of
/// three, one core), and the ratio to the reference machine's decompression.
pub fn machine_speed_line(sample: &Path) -> String {
    let Ok(raw) = std::fs::read(sample) else {
        return format!("machine speed: cannot read {}", sample.display());
    };
    let mb = raw.len() as f64 / 1e6;
    let best = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let mut z = Vec::new();
    let c = best(&mut || z = zstd::bulk::compress(&raw, 1).expect("compress"));
    let d = best(&mut || {
        zstd::bulk::decompress(&z, raw.len()).expect("decompress");
    });
    format!(
        "machine speed: zstd -1 compresses {:.0} MB/s, decompresses {:.0} MB/s on one core; the issues' targets were set where it decompresses about {:.0} MB/s, so this machine runs at {:.2}x that speed",
        mb / c,
        mb / d,
        REFERENCE_ZSTD_DECODE_MBS,
        mb / d / REFERENCE_ZSTD_DECODE_MBS
    )
}

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Runs `cmd`; its wall time in seconds, or what it said when it failed.
pub fn timed(cmd: &mut Command, what: &str) -> Result<f64, String> {
    let t = std::time::Instant::now();
    let out = crate::run(cmd);
    let secs = t.elapsed().as_secs_f64();
    if out.status.success() {
        Ok(secs)
    } else {
        Err(format!(
            "{what} failed\n{}",
            crate::describe_output(cmd, &out)
        ))
    }
}

/// A started cluster `bench` filled by `pgbench -i -s scale` and
/// checkpointed (long checkpoint intervals, so none runs during a
/// measurement); returns it and the size of its databases in bytes.
pub fn pgbench_cluster(
    lab: &Lab,
    who: &str,
    scale: u32,
) -> Result<(crate::PgCluster, u64), String> {
    let pg = lab.init_cluster(
        "bench",
        crate::PgOptions {
            conf: "checkpoint_timeout = '30min'\nmax_wal_size = '4GB'\n".into(),
            ..Default::default()
        },
    );
    pg.start();
    let t = Instant::now();
    pg.pgbench(&["-i", "-s", &scale.to_string(), "-q"]);
    pg.psql("checkpoint");
    let db_bytes: u64 = pg
        .psql("select sum(pg_database_size(oid)) from pg_database")
        .trim()
        .parse()
        .map_err(|e| format!("database size: {e}"))?;
    eprintln!(
        "{who}: cluster ready (pgbench scale {scale}, {:.1} MiB) in {:.0}s",
        db_bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    Ok((pg, db_bytes))
}

/// Points the servers' base-backup at queue `q` (fast checkpoints, no WAL
/// maintenance, quiet) and adds cluster `bench` for `pg` to it, keeping one
/// backup per server.
pub fn bench_backup_queue(lab: &Lab, q: &crate::QueueDb, pg: &crate::PgCluster) {
    lab.set_server_config_extra(&format!(
        "queue_dsn = \"{}\"\nbackup_checkpoint = \"fast\"\nbackup_wal_maintenance = false\nquiet = true\n",
        q.dsn()
    ));
    let mut row = lab.host_row("bench", pg, "bench");
    row.keep_backups_cnt = 1;
    q.add(&row);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_is_told_apart_as_the_kernel_lists_mounts() {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        // A later mount on the same point hides the earlier one.
        let mut top = std::collections::BTreeMap::new();
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            top.insert(f[1], f[2]);
        }
        let mut seen = 0;
        for (dir, fstype) in top {
            // Mount points with spaces are escaped in /proc/mounts.
            let known = matches!(fstype, "tmpfs" | "proc" | "ext4" | "xfs" | "btrfs");
            if !known || dir.contains('\\') || !Path::new(dir).is_dir() {
                continue;
            }
            let warned = tmpfs_warning(Path::new(dir)).is_some();
            assert_eq!(warned, fstype == "tmpfs", "{dir} is {fstype}");
            seen += 1;
        }
        assert!(seen > 0, "no mount to check in /proc/mounts");
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(5));
        assert_eq!(quantile(&v, 0.9), Duration::from_millis(9));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(10));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn dir_bytes_adds_up_the_files_at_every_depth() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        std::fs::write(tmp.path().join("x"), [0u8; 3]).unwrap();
        std::fs::write(tmp.path().join("a/b/y"), [0u8; 5]).unwrap();
        assert_eq!(dir_bytes(tmp.path()), 8);
        assert_eq!(dir_bytes(&tmp.path().join("missing")), 0);
    }

    #[test]
    fn knobs_are_read_with_their_defaults_and_recorded() {
        // Names no other test reads or sets.
        assert_eq!(env_or("BENCH_TEST_KNOB_UNSET", 7u32), Ok(7));
        assert_eq!(
            env_list("BENCH_TEST_LIST_UNSET", "a, b,,c"),
            vec!["a", "b", "c"]
        );
        assert_eq!(env_lines("BENCH_TEST_LINES_UNSET"), "");
        assert_eq!(env_path("BENCH_TEST_PATH_UNSET"), None);
        let k = knobs();
        assert!(k.contains(&("BENCH_TEST_KNOB_UNSET".into(), "7".into())));
        assert!(k.contains(&("BENCH_TEST_LIST_UNSET".into(), "a, b,,c".into())));
        assert!(!k.iter().any(|(n, _)| n == "BENCH_TEST_LINES_UNSET"));
    }
}
