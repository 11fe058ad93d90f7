//! bench-restore: the restore benchmark (issue 3, item 8). Not a test: it
//! asserts no timing; it prints figures next to the targets for a
//! 2-core machine.
//!
//! It archives N real 16 MiB pgbench segments to the lab's two sshd archive
//! servers through archive-cmd, then restores them in order, one
//! `restore-cmd` process at a time, exactly as PostgreSQL's startup process
//! calls it (as `postgres`, in the data directory, `%p =
//! pg_wal/RECOVERYXLOG`, the file renamed to `pg_wal/<name>` after each
//! call, as PostgreSQL keeps restored segments), in several scenarios:
//!
//! - `off`: `--set restore_prefetch=false`;
//! - `on-<size>`: prefetch with `restore_queue_max = <size>`, for each size
//!   in `BENCH_QUEUES`.
//!
//! For each it prints segments/s, MB/s (decoded WAL), the per-call latency
//! (median, 99th percentile), the same for the calls served from the
//! prefetch buffer, and the peak RSS of restore-cmd (each call, from
//! `wait4`) and of the prefetch worker (VmHWM sampled from /proc). Every
//! restored file is compared with the original afterwards (outside the
//! measured window).
//!
//! Run as root after `cargo build --release --workspace --bins` (or use
//! `scripts/bench-restore.sh`); the binaries next to this executable are
//! the ones measured. Environment:
//!
//! - `BENCH_SEGMENTS` (64): segments restored per scenario;
//! - `BENCH_SCALE` (20): `pgbench -i -s` of the corpus;
//! - `BENCH_QUEUES` (`256MiB,1GiB`): queue sizes of the prefetch scenarios;
//! - `BENCH_CORPUS_DIR`: keep the corpus there and reuse it on later runs
//!   (the same corpus as bench-archive's);
//! - `BENCH_RESTORE_CONFIG`: TOML lines (`;` separates lines) added to
//!   restore-cmd's config, e.g. `restore_parallel = 4`;
//! - `BENCH_SSH_CONFIG`: ssh_config options (`;` separates lines) added as a
//!   final `Host *` block to the lab's ssh client configs before anything
//!   connects, e.g. `Ciphers aes128-gcm@openssh.com` (a what-if knob: with
//!   OpenSSH's default chacha20-poly1305, ssh and sshd take about half a CPU
//!   at these rates);
//! - `BENCH_MEMORY` (`fresh,steady`): the memory regimes, each running
//!   every scenario: `fresh`, the machine as it is, pg_wal empty at the
//!   start (a standby's first minutes, or one with much free RAM);
//!   `steady`, pg_wal starts with as many older segments as the run
//!   restores and the bench removes one per call, so each restored
//!   segment's page cache reuses pages freed moments before: the best
//!   case, as on a standby whose RAM is full of cache the kernel reclaims
//!   in the background, or whose restartpoints remove segments as fast as
//!   it restores them (they remove them in batches, and memory freed more
//!   than ~2 s earlier costs as much as `fresh`); `full`, restore-cmd and its worker in a memory cgroup of
//!   `BENCH_MEMORY_LIMIT` (768MiB), as on a machine whose RAM is full of
//!   cache (pessimistic: the cgroup makes them reclaim pages themselves,
//!   where kswapd would do it in the background). On a VM that backs
//!   guest memory on first touch the regimes differ a lot: see the
//!   `page cache:` line and `e2e::memory`;
//! - `BENCH_TRACE=1`: also print every call's latency in order, marked
//!   `h` (from the prefetch buffer), `w` (waited for the worker's
//!   transfer) or `m` (fetched by the call itself): shows whether the
//!   worker keeps ahead or delivers in bursts;
//! - `BENCH_RESULTS_DIR`: where the results file goes (default
//!   `docs/benchmarks/`, `YYYY-MM-DD-restore.md`, a section appended per
//!   completed run: see `e2e::bench_results`); set but empty, none is
//!   written;
//! - `KEEP_LAB=1`: keep the lab dir.
//!
//! Exit status: 0 when every scenario ran (targets met or not), 1 when the
//! run itself broke (a call failed, a restored file differs).

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use e2e::bench::{pgbench_corpus, Corpus};
use e2e::bench_common::{
    add_ssh_options, env_lines, env_list, env_or, env_path, env_present, env_string,
    machine_speed_line, ms, open_lab, quantile,
};
use e2e::bench_results::{Results, Table};
use e2e::memory::MemoryCgroup;
use e2e::sampler::{cpu_count, cpu_ticks, stat_sum, vm_hwm_kib, CpuTimes, Sampler};
use e2e::{
    bin, bin_dir, prefetch_dir, prefetch_workers, write_postgres_file, Lab, LabOptions,
    RECOVERYXLOG,
};

const SEGMENT: f64 = (16u64 << 20) as f64;

// Targets of issue 3, item 8 (this 2-core machine).
const TARGET_OFF: f64 = 15.0;
const TARGET_ON: f64 = 40.0;
const TARGET_HIT_P99_MS: f64 = 20.0;
const TARGET_RSS_MIB: f64 = 64.0;

/// One restore-cmd call.
struct Call {
    latency: Duration,
    maxrss_kib: u64,
    /// user + system CPU of the process.
    cpu: Duration,
    /// Served from the prefetch buffer without waiting for a transfer.
    hit: bool,
    /// Served from the buffer after waiting for the worker's transfer.
    waited: bool,
}

struct Scenario {
    tag: String,
    extra: String,
}

/// The memory state restore-cmd and its worker run in (see e2e::memory).
enum Memory {
    /// As the machine is: most RAM free, every new page cache page fresh.
    Fresh,
    /// The best case of a standby that has been replaying for a while:
    /// pg_wal starts with as many older segments as the run restores, and
    /// one is removed per call (an archive-only standby's restartpoints
    /// unlink replayed segments, in batches; they are not recycled).
    /// Restored segments' page cache then comes from pages freed moments
    /// ago.
    Steady,
    /// Limited to this many bytes by a memory cgroup, so that their page
    /// cache recycles pages, as on a standby whose RAM is full of cache.
    Full(u64),
}

impl Memory {
    fn short(&self) -> &'static str {
        match self {
            Memory::Fresh => "fresh memory",
            Memory::Steady => "steady pg_wal",
            Memory::Full(_) => "memory full",
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Memory::Fresh => f.write_str("fresh memory (page cache grows into RAM unused until now)"),
            Memory::Steady => f.write_str(
                "steady pg_wal (one older segment removed per call: page cache recycles at once, the best case)",
            ),
            Memory::Full(limit) => write!(
                f,
                "memory full (restore-cmd and its worker limited to {} MiB: their page cache recycles, as on a standby whose RAM is full of cache)",
                limit >> 20
            ),
        }
    }
}

/// `BENCH_MEMORY` (`fresh,steady`) and `BENCH_MEMORY_LIMIT` (`768MiB`).
fn memory_regimes() -> Result<Vec<Memory>, String> {
    let limit = env_string("BENCH_MEMORY_LIMIT", "768MiB");
    let limit = archive_core::common::config::parse_byte_size(&limit)
        .map_err(|e| format!("BENCH_MEMORY_LIMIT: {e}"))?;
    env_list("BENCH_MEMORY", "fresh,steady")
        .iter()
        .map(|m| match m.as_str() {
            "fresh" => Ok(Memory::Fresh),
            "steady" => Ok(Memory::Steady),
            "full" => Ok(Memory::Full(limit)),
            other => Err(format!(
                "BENCH_MEMORY: {other:?} is not \"fresh\", \"steady\" or \"full\""
            )),
        })
        .collect()
}

struct Report {
    tag: String,
    elapsed: Duration,
    calls: Vec<Call>,
    worker_hwm_kib: u64,
    /// CPU-seconds of the prefetch worker(s).
    worker_cpu: f64,
    /// CPU-seconds the whole machine was busy during the scenario.
    machine_busy: f64,
    /// CPU-seconds of the lab's ssh masters (they carry every transfer).
    masters_cpu: f64,
    /// CPU-seconds of the lab's archive servers (sshd and the
    /// archive-remote-cmd they run): on this machine only in the lab.
    servers_cpu: f64,
}

/// The knobs (see the module documentation).
struct Settings {
    segments: usize,
    scale: u32,
    queues: String,
    regimes: Vec<Memory>,
    extra_cfg: String,
    ssh_options: String,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        Ok(Settings {
            segments: env_or("BENCH_SEGMENTS", 64)?,
            scale: env_or("BENCH_SCALE", 20)?,
            queues: env_string("BENCH_QUEUES", "256MiB,1GiB"),
            regimes: memory_regimes()?,
            extra_cfg: env_lines("BENCH_RESTORE_CONFIG"),
            ssh_options: env_lines("BENCH_SSH_CONFIG"),
        })
    }
}

impl Report {
    /// Latencies of the calls `which` picks, in call order.
    fn latencies(&self, which: impl Fn(&Call) -> bool) -> Vec<Duration> {
        self.calls
            .iter()
            .filter(|c| which(c))
            .map(|c| c.latency)
            .collect()
    }
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench-restore: {e}");
            return ExitCode::from(2);
        }
    };
    let Settings {
        segments,
        scale,
        queues,
        regimes,
        extra_cfg,
        ssh_options,
    } = settings;
    let mut out = Results::new("restore");
    out.say(format!(
        "bench-restore: {segments} segments of 16 MiB (pgbench -s {scale}), binaries in {}",
        bin_dir().display()
    ));
    let lab = open_lab(&mut out, LabOptions::default());
    if !ssh_options.trim().is_empty() {
        if let Err(e) = add_ssh_options(&lab, &ssh_options) {
            eprintln!("bench-restore: {e}");
            return ExitCode::from(1);
        }
        out.say(format!(
            "ssh options added: {}",
            ssh_options.trim().replace('\n', "; ")
        ));
    }
    let corpus_root = env_path("BENCH_CORPUS_DIR").unwrap_or_else(|| lab.dir().join("corpus"));
    let t = Instant::now();
    let corpus = pgbench_corpus(&lab, &corpus_root, segments, scale);
    let mut distinct = corpus.names.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), corpus.names.len(), "corpus names repeat");
    out.say(format!(
        "corpus: {} segments in {} ({:.0} s)",
        corpus.names.len(),
        corpus.root.display(),
        t.elapsed().as_secs_f64()
    ));
    if let Some(mid) = corpus.names.get(corpus.names.len() / 2) {
        out.say_machine(machine_speed_line(&corpus.path(mid)));
    }
    out.say(e2e::bench::corpus_decode_line(&corpus, 40.0));
    let dst = lab.dst("bench");
    if let Err(e) = archive(&mut out, &lab, &dst, &corpus) {
        eprintln!("bench-restore: {e}");
        return ExitCode::from(1);
    }

    out.say(e2e::memory::page_cache_line(lab.dir(), TARGET_ON));

    let mut scenarios = vec![Scenario {
        tag: "off".into(),
        extra: "restore_prefetch = false\n".into(),
    }];
    for q in queues.split(',').map(str::trim).filter(|q| !q.is_empty()) {
        scenarios.push(Scenario {
            tag: format!("on-{q}"),
            extra: format!("restore_queue_max = \"{q}\"\n"),
        });
    }
    // The ssh masters are up before the first measured call (they persist
    // between calls, as on a standby).
    warm_up(&lab, &dst, &corpus, &extra_cfg);

    let mut reports = Vec::new();
    for regime in &regimes {
        let cgroup = match regime {
            Memory::Fresh | Memory::Steady => None,
            Memory::Full(limit) => match MemoryCgroup::create("bench-restore", *limit) {
                Ok(cg) => Some(cg),
                Err(e) => {
                    out.say("");
                    out.say(format!("memory regime {regime}: skipped: {e}"));
                    continue;
                }
            },
        };
        for s in &scenarios {
            // Memory the previous scenario freed goes back to the
            // hypervisor first: every scenario starts in the same state,
            // not helped by the one before.
            thread::sleep(e2e::memory::SETTLE);
            match run_scenario(&lab, &dst, &corpus, s, &extra_cfg, regime, cgroup.as_ref()) {
                Ok(r) => {
                    print_report(&mut out, &r, regime);
                    reports.push((regime, r));
                }
                Err(e) => {
                    eprintln!("bench-restore: scenario {} ({regime}): {e}", s.tag);
                    return ExitCode::from(1);
                }
            }
        }
    }
    out.say("");
    out.say("summary (targets on this 2-core machine):");
    let mut table = Table::new(&[
        "scenario",
        "memory",
        "seg/s",
        "MB/s of WAL",
        "all calls p50 ms",
        "all calls p99 ms",
        "buffer hit p99 ms",
        "peak RSS MiB",
    ]);
    for (regime, r) in &reports {
        let rate = r.calls.len() as f64 / r.elapsed.as_secs_f64();
        let target = if r.tag == "off" {
            TARGET_OFF
        } else {
            TARGET_ON
        };
        let hits = r.latencies(|c| c.hit);
        let rss = r
            .calls
            .iter()
            .map(|c| c.maxrss_kib)
            .max()
            .unwrap_or(0)
            .max(r.worker_hwm_kib) as f64
            / 1024.0;
        let mut line = format!(
            "  {:<12} {:<13} {:6.1} seg/s (target >= {target}: {})",
            r.tag,
            regime.short(),
            rate,
            verdict(rate >= target)
        );
        if !hits.is_empty() {
            let p99 = ms(quantile(&hits, 0.99));
            line += &format!(
                "; buffer hit p99 {p99:.1} ms (target <= {TARGET_HIT_P99_MS}: {})",
                verdict(p99 <= TARGET_HIT_P99_MS)
            );
        }
        line += &format!(
            "; peak RSS {rss:.1} MiB (target <= {TARGET_RSS_MIB}: {})",
            verdict(rss <= TARGET_RSS_MIB)
        );
        out.say(&line);
        let all = r.latencies(|_| true);
        table.row(vec![
            r.tag.clone(),
            regime.short().into(),
            format!("{rate:.1}"),
            format!("{:.0}", rate * SEGMENT / 1e6),
            format!("{:.1}", ms(quantile(&all, 0.5))),
            format!("{:.1}", ms(quantile(&all, 0.99))),
            if hits.is_empty() {
                "-".into()
            } else {
                format!("{:.1}", ms(quantile(&hits, 0.99)))
            },
            format!("{rss:.1}"),
        ]);
    }
    out.table(
        &format!("{} segments of 16 MiB per scenario", corpus.names.len()),
        table,
    );
    out.write();
    ExitCode::SUCCESS
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// Archives the corpus through archive-cmd, one call per segment, and
/// waits for both servers to hold every segment.
fn archive(out: &mut Results, lab: &Lab, dst: &str, corpus: &Corpus) -> Result<(), String> {
    let t = Instant::now();
    for n in &corpus.names {
        let mut cmd = lab.postgres_cmd(bin("archive-cmd"));
        cmd.arg("--config")
            .arg(lab.primary_config())
            .arg(lab.hosts())
            .arg(dst)
            .arg(format!("pg_wal/{n}"))
            .arg(n)
            .arg("bench")
            .current_dir(&corpus.root);
        let out = cmd.output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "archive-cmd {n}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while !corpus
        .names
        .iter()
        .all(|n| lab.stored_path(1, dst, n).exists() && lab.stored_path(2, dst, n).exists())
    {
        if Instant::now() > deadline {
            return Err("arch2 did not receive every segment".into());
        }
        thread::sleep(Duration::from_millis(100));
    }
    let stored: u64 = corpus
        .names
        .iter()
        .filter_map(|n| fs::metadata(lab.stored_path(1, dst, n)).ok())
        .map(|m| m.len())
        .sum();
    out.say(format!(
        "archived to arch1 and arch2 in {:.1} s; stored {:.1} MiB per server for {:.0} MiB of WAL ({:.2}x)",
        t.elapsed().as_secs_f64(),
        stored as f64 / SEGMENT * 16.0,
        corpus.names.len() as f64 * 16.0,
        corpus.names.len() as f64 * SEGMENT / stored.max(1) as f64
    ));
    Ok(())
}

/// One call per host (each alone in HOSTS), so both ssh masters run before
/// the first measured call; a standby's masters persist between calls too.
fn warm_up(lab: &Lab, dst: &str, corpus: &Corpus, extra: &str) {
    let dd = lab.fake_data_dir("warm-up", true);
    let cfg = lab.restore_config("warm-up", &format!("restore_prefetch = false\n{extra}"));
    for host in ["arch1", "arch2"] {
        let _ = lab
            .postgres_cmd(bin("restore-cmd"))
            .arg("--config")
            .arg(&cfg)
            .arg(host)
            .arg(dst)
            .arg(&corpus.names[0])
            .arg(RECOVERYXLOG)
            .current_dir(&dd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_file(dd.join(RECOVERYXLOG));
    }
}

fn run_scenario(
    lab: &Lab,
    dst: &str,
    corpus: &Corpus,
    s: &Scenario,
    extra: &str,
    regime: &Memory,
    cgroup: Option<&MemoryCgroup>,
) -> Result<Report, String> {
    let dd = lab.fake_data_dir(&format!("sb-{}", s.tag), true);
    corpus.copy_control_file(&dd);
    // Older segments a restartpoint will remove, one per call (contents
    // do not matter; they are never compared).
    let mut older = Vec::new();
    if matches!(regime, Memory::Steady) {
        for (i, n) in corpus.names.iter().enumerate() {
            let p = dd.join("pg_wal").join(format!("older-{i:04}"));
            fs::copy(corpus.path(n), &p).map_err(|e| format!("{}: {e}", p.display()))?;
            older.push(p);
        }
        older.reverse();
        // Their writeback is the bench's, not restore-cmd's: done before
        // the clock starts, not during the calls.
        for p in &older {
            File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(|e| format!("cannot fsync {}: {e}", p.display()))?;
        }
    }
    let cfg = lab.restore_config(&format!("sb-{}", s.tag), &format!("{}{extra}", s.extra));
    let buffer = prefetch_dir(&dd);
    let errlog = lab.dir().join(format!("sb-{}.stderr", s.tag));
    // (peak RSS, CPU ticks) of the prefetch worker(s).
    let sampler = {
        let buffer = buffer.clone();
        Sampler::start("bench-worker", move |stop| {
            let mut hwm = 0;
            // CPU ticks last seen per worker pid.
            let mut ticks: std::collections::HashMap<i32, u64> = Default::default();
            // Finding the worker walks all of /proc: not at every sample, or
            // the sampler itself takes a good part of a CPU.
            let mut pids = Vec::new();
            let mut round = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let every = if pids.is_empty() { 10 } else { 100 };
                if round.is_multiple_of(every) {
                    pids = prefetch_workers(&buffer);
                }
                round += 1;
                for &p in &pids {
                    if let Some(k) = vm_hwm_kib(p) {
                        hwm = hwm.max(k);
                    }
                    if let Some(t) = cpu_ticks(p) {
                        ticks.insert(p, t);
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
            (hwm, ticks.values().sum::<u64>())
        })
    };
    let cpu0 = CpuTimes::now();
    let masters0 = masters_ticks(lab);
    let servers0 = servers_ticks(lab);
    let mut calls = Vec::new();
    let start = Instant::now();
    for n in &corpus.names {
        let f = File::create(&errlog).map_err(|e| e.to_string())?;
        let mut cmd = lab.restore_cmd(&cfg, dst, &dd, n);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(f));
        if let Some(cg) = cgroup {
            cg.join_on_exec(&mut cmd);
        }
        let t = Instant::now();
        let (code, maxrss_kib, cpu) = spawn_wait4(&mut cmd)?;
        let latency = t.elapsed();
        let said = fs::read_to_string(&errlog).unwrap_or_default();
        if code != 0 {
            return Err(format!("restore-cmd {n} exited {code}: {said}"));
        }
        // PostgreSQL keeps a restored segment under its own name.
        let kept = dd.join("pg_wal").join(n);
        fs::rename(dd.join(RECOVERYXLOG), &kept).map_err(|e| {
            format!("restore-cmd {n} exited 0 but {RECOVERYXLOG}: {e}; it said: {said}")
        })?;
        if let Some(p) = older.pop() {
            fs::remove_file(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let from_buffer = said.contains("from the prefetch buffer");
        let waited = said.contains("waited");
        calls.push(Call {
            latency,
            maxrss_kib,
            cpu,
            hit: from_buffer && !waited,
            waited: from_buffer && waited,
        });
    }
    let elapsed = start.elapsed();
    let machine_busy = CpuTimes::now().busy_secs_since(&cpu0);
    let masters_cpu = masters_ticks(lab).saturating_sub(masters0) as f64 / 100.0;
    let servers_cpu = servers_ticks(lab).saturating_sub(servers0) as f64 / 100.0;
    // Let the worker be seen once more, then stop it (it would leave by
    // itself after restore_prefetch_idle).
    thread::sleep(Duration::from_millis(50));
    let (worker_hwm_kib, worker_ticks) = sampler.finish();
    for p in prefetch_workers(&buffer) {
        e2e::kill_tree(p, Duration::from_secs(5));
    }
    // Every restored file is the original (outside the measured window).
    for n in &corpus.names {
        let got = dd.join("pg_wal").join(n);
        let restored = blake3_file(&got).map_err(|e| {
            let here: Vec<String> = e2e::list_files(dd.join("pg_wal"));
            format!("{e} (pg_wal holds {} files: {here:?})", here.len())
        })?;
        if restored != blake3_file(&corpus.path(n))? {
            return Err(format!("{} differs from the original", got.display()));
        }
    }
    for n in &corpus.names {
        let _ = fs::remove_file(dd.join("pg_wal").join(n));
    }
    let _ = fs::remove_dir_all(&buffer);
    write_postgres_file(dd.join("done"), "", 0o600);
    Ok(Report {
        tag: s.tag.clone(),
        elapsed,
        calls,
        worker_hwm_kib,
        worker_cpu: worker_ticks as f64 / 100.0,
        machine_busy,
        masters_cpu,
        servers_cpu,
    })
}

/// CPU ticks used so far by the lab's archive servers: every process of
/// theirs, with the children they reaped (each `archive-remote-cmd get`).
fn servers_ticks(lab: &Lab) -> u64 {
    lab.servers()
        .iter()
        .flat_map(|s| s.processes())
        .filter_map(|p| stat_sum(&format!("/proc/{p}/stat"), 14..=17))
        .sum()
}

/// CPU ticks used so far by the lab's ssh masters (started by the warm-up,
/// persisting through the scenarios as on a standby).
fn masters_ticks(lab: &Lab) -> u64 {
    let dir = lab.dir().to_string_lossy().into_owned();
    e2e::lab_processes_matching("ControlMaster=yes")
        .into_iter()
        .filter(|&p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(dir.as_str()))
        })
        .filter_map(cpu_ticks)
        .sum()
}

fn print_report(out: &mut Results, r: &Report, regime: &Memory) {
    let n = r.calls.len();
    let secs = r.elapsed.as_secs_f64();
    let all = r.latencies(|_| true);
    let hits = r.latencies(|c| c.hit);
    let waited = r.latencies(|c| c.waited);
    let misses = r.latencies(|c| !c.hit && !c.waited);
    let rss = r.calls.iter().map(|c| c.maxrss_kib).max().unwrap_or(0) as f64 / 1024.0;
    out.say("");
    out.say(format!("scenario {}, {regime}:", r.tag));
    if env_present("BENCH_TRACE") {
        let trace: Vec<String> = r
            .calls
            .iter()
            .map(|c| {
                let how = if c.hit {
                    "h"
                } else if c.waited {
                    "w"
                } else {
                    "m"
                };
                format!("{:.0}{how}", ms(c.latency))
            })
            .collect();
        out.say(format!("  calls in order, ms: {}", trace.join(" ")));
    }
    out.say(format!(
        "  {n} segments in {secs:.2} s: {:.1} segments/s, {:.0} MB/s of WAL",
        n as f64 / secs,
        n as f64 * SEGMENT / secs / 1e6
    ));
    let mut line = |what: &str, v: &[Duration]| {
        if !v.is_empty() {
            out.say(format!(
                "  {what:<28} {:>3} calls: median {:6.1} ms, p99 {:6.1} ms, max {:6.1} ms",
                v.len(),
                ms(quantile(v, 0.5)),
                ms(quantile(v, 0.99)),
                ms(quantile(v, 1.0))
            ));
        }
    };
    line("all calls", &all);
    line("from the buffer", &hits);
    line("buffer, waited for transfer", &waited);
    line("from the hosts", &misses);
    out.say(format!(
        "  peak RSS: restore-cmd {rss:.1} MiB, prefetch worker {:.1} MiB",
        r.worker_hwm_kib as f64 / 1024.0
    ));
    let calls_cpu: f64 = r.calls.iter().map(|c| c.cpu.as_secs_f64()).sum();
    let ours = calls_cpu + r.worker_cpu;
    out.say(format!(
        "  CPU: restore-cmd calls {calls_cpu:.2} s ({:.1} ms per call), prefetch worker {:.2} s, \
         ssh masters {:.2} s, the lab's archive servers {:.2} s (sshd, archive-remote-cmd: \
         elsewhere in production); whole machine busy {:.2} of {:.2} CPU-s available",
        calls_cpu * 1000.0 / n as f64,
        r.worker_cpu,
        r.masters_cpu,
        r.servers_cpu,
        r.machine_busy,
        secs * cpu_count() as f64
    ));
    // The kernel (writeback, the bench itself) also works for us; more
    // than that (roughly) means other programs competed for the CPUs.
    let ours = ours + r.masters_cpu + r.servers_cpu;
    if r.machine_busy > 1.5 * ours + 0.5 * secs {
        out.say("  WARNING: other processes kept the CPUs busy during this scenario: the figures are pessimistic");
    }
}

fn blake3_file(p: &Path) -> Result<blake3::Hash, String> {
    let mut h = blake3::Hasher::new();
    let mut f = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    std::io::copy(&mut f, &mut h).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(h.finalize())
}

/// Runs `cmd` and waits for it with wait4: (exit code, peak RSS in KiB).
#[allow(unsafe_code)]
fn spawn_wait4(cmd: &mut Command) -> Result<(i32, u64, Duration), String> {
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run restore-cmd: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: zeroed rusage is a valid value of a plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, not waited for elsewhere (the
        // `Child` handle is dropped without waiting); both pointers point
        // to live locals of the right types.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {err}"));
        }
    }
    drop(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok((
        code,
        usage.ru_maxrss as u64,
        tv(usage.ru_utime) + tv(usage.ru_stime),
    ))
}
