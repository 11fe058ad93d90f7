//! bench-archive: the archiving benchmark (issue 2, item 7). Not a test:
//! it asserts no timing; it prints figures and compares them with the
//! issue's targets for a 2-core machine, informationally.
//!
//! It archives N real 16 MiB pgbench segments through archive-cmd exactly
//! as PostgreSQL does (one archive-cmd process per segment, run as
//! `postgres` from the "data directory" with `%p = pg_wal/<name>`, `.ready`
//! files present in `pg_wal/archive_status`, `.ready` renamed to `.done`
//! after each success) onto the lab's two sshd archive servers
//! (arch1 stores and forwards to arch2), in three scenarios, each into a
//! fresh DST-DIR from the same corpus:
//!
//! - `serial`: one `.ready` at a time (the archiver keeping up);
//! - `backlog`: all N `.ready` up front (look-ahead kicks in), zstd on arch1;
//! - `backlog-primary-zstd`: the same with `--set compress_on_primary=true`.
//!
//! Run as root after `cargo build --release --workspace --bins` (or use
//! `scripts/bench-archive.sh`); the binaries used are the ones next to this
//! executable. Environment:
//!
//! - `BENCH_SEGMENTS` (64): corpus size, segments;
//! - `BENCH_SCALE` (20): `pgbench -i -s`;
//! - `BENCH_SCENARIOS` (`serial,backlog,backlog-primary-zstd`);
//! - `BENCH_CORPUS_DIR`: keep the corpus (and its bzip2 sizes) there and
//!   reuse it on later runs (default: made afresh inside the lab);
//! - `BENCH_CLIENT_CONFIG`, `BENCH_SERVER_CONFIG`: TOML lines (`;` separates
//!   lines) appended to the primary's archive.toml / both servers'
//!   remote.toml, e.g. `parallel = 2; lookahead_max = 16` or
//!   `compress_level = 3`;
//! - `BENCH_SSH_CONFIG`: ssh_config options (`;` separates lines) added as
//!   a final `Host *` block to the ssh client configs of the primary and of
//!   both servers, e.g. `Ciphers aes128-gcm@openssh.com` (a what-if knob;
//!   the masters are started after it is written);
//! - `BENCH_HOLD` (0): seconds to keep the lab running after the
//!   scenarios, for probing it by hand;
//! - `BENCH_VERIFY` (1): after each scenario, check that both servers hold
//!   every segment decompressing to the original bytes (outside the
//!   measured window);
//! - `BENCH_REFERENCE` (1): also run the issue's yardstick, the shell
//!   pipeline of this design (see `e2e::reference`), serial and with
//!   `BENCH_REFERENCE_PARALLEL` (4) at once, before and after the
//!   scenarios, and print the targets scaled by how fast this machine runs
//!   it. It needs keys that are not forced commands, so with it the lab's
//!   keys are plain `restrict` keys (archive-cmd runs the same remote
//!   command either way); `BENCH_REFERENCE=0` keeps forced commands;
//! - `BENCH_RESULTS_DIR`: where the results file goes (default
//!   `docs/benchmarks/`, `YYYY-MM-DD-archive.md`, a section appended per
//!   completed run: see `e2e::bench_results`); set but empty, none is
//!   written;
//! - `KEEP_LAB=1`: keep the lab dir.
//!
//! Exit status: 0 when every scenario ran (targets missed or not), 1 when
//! the run itself broke (archive-cmd kept failing, a copy is missing or
//! differs), 101 on a lab panic.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};
use std::thread;
use std::time::{Duration, Instant};

use e2e::bench::{
    bzip2_sizes, pgbench_corpus, sample_peaks, wait_no_process, Corpus, CpuCgroup, Peaks,
    COMM_REMOTE,
};
use e2e::bench_common::{
    add_ssh_options, binaries_line, dir_bytes, env_lines, env_list, env_or, env_path, exit_code,
    machine_speed_line, ms, open_lab, quantile, require_root,
};
use e2e::bench_results::{Results, Table};
use e2e::reference::{Pipeline, ISSUE_BACKLOG, ISSUE_CPU_PER_GIB, ISSUE_SERIAL};
use e2e::sampler::{cpu_count, CpuTimes};
use e2e::{bin, list_files, mkdir_postgres, write_postgres_file, Lab, LabOptions};

/// CLUSTER-NAME argument of every call.
const CLUSTER: &str = "bench";
/// /proc sampling period for peak RSS.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
const TIME_BIN: &str = "/usr/bin/time";

const MB: f64 = 1e6;
const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;

// Targets of issue 2, item 7 (this 2-core machine).
const TARGET_SERIAL: f64 = 10.0;
const TARGET_BACKLOG: f64 = 20.0;
const TARGET_BACKLOG_PRIMARY: f64 = 27.0;
const TARGET_VS_BZIP2: f64 = 1.15;
const TARGET_RSS_CMD_MIB: f64 = 32.0;
const TARGET_RSS_REMOTE_MIB: f64 = 64.0;
const TARGET_CPU_PER_GIB: f64 = 6.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Serial,
    Backlog,
    BacklogPrimaryZstd,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Serial, Kind::Backlog, Kind::BacklogPrimaryZstd];

    fn name(self) -> &'static str {
        match self {
            Kind::Serial => "serial",
            Kind::Backlog => "backlog",
            Kind::BacklogPrimaryZstd => "backlog-primary-zstd",
        }
    }
    fn dst_name(self) -> String {
        format!("bench-{}", self.name())
    }
    fn backlog(self) -> bool {
        self != Kind::Serial
    }
    fn sets(self) -> Vec<String> {
        match self {
            Kind::BacklogPrimaryZstd => vec!["compress_on_primary=true".into()],
            _ => Vec::new(),
        }
    }
    fn target_rate(self) -> f64 {
        match self {
            Kind::Serial => TARGET_SERIAL,
            Kind::Backlog => TARGET_BACKLOG,
            Kind::BacklogPrimaryZstd => TARGET_BACKLOG_PRIMARY,
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Kind::Serial => "one .ready at a time",
            Kind::Backlog => "all .ready up front, zstd on arch1",
            Kind::BacklogPrimaryZstd => {
                "all .ready up front, --set compress_on_primary=true (zstd on the primary)"
            }
        }
    }
}

struct Settings {
    segments: usize,
    scale: u32,
    scenarios: Vec<Kind>,
    corpus_dir: Option<PathBuf>,
    client_config: String,
    server_config: String,
    ssh_config: String,
    hold_secs: u64,
    verify: bool,
    reference: bool,
    reference_parallel: usize,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let segments: usize = env_or("BENCH_SEGMENTS", 64)?;
        if segments == 0 {
            return Err("BENCH_SEGMENTS must be at least 1".into());
        }
        let all = Kind::ALL.map(Kind::name).join(",");
        let scenarios = env_list("BENCH_SCENARIOS", &all)
            .iter()
            .map(|s| {
                Kind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
                    format!("BENCH_SCENARIOS: unknown scenario {s:?} (serial, backlog, backlog-primary-zstd)")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            segments,
            scale: env_or("BENCH_SCALE", 20)?,
            scenarios,
            corpus_dir: env_path("BENCH_CORPUS_DIR"),
            client_config: env_lines("BENCH_CLIENT_CONFIG"),
            server_config: env_lines("BENCH_SERVER_CONFIG"),
            ssh_config: env_lines("BENCH_SSH_CONFIG"),
            hold_secs: env_or("BENCH_HOLD", 0)?,
            verify: env_or("BENCH_VERIFY", 1u8)? != 0,
            reference: env_or("BENCH_REFERENCE", 1u8)? != 0,
            reference_parallel: env_or("BENCH_REFERENCE_PARALLEL", 4usize)?.max(1),
        })
    }
}

/// One scenario's figures.
struct Figures {
    kind: Kind,
    segments: usize,
    raw_bytes: u64,
    /// Until both servers hold every segment (forwards run on after the
    /// last archive-cmd returned).
    elapsed: Duration,
    /// Until the last archive-cmd returned.
    calls_elapsed: Duration,
    cpu_busy_secs: f64,
    /// CPU of the lab's processes (its cgroup), when measurable.
    lab_cpu_secs: Option<f64>,
    cpu_window: Duration,
    cpu_fraction: f64,
    stored: [u64; 2],
    rss_cmd_kib: u64,
    rss_remote_kib: u64,
    latencies: Vec<Duration>,
    lookahead_hits: usize,
    retries: usize,
    peaks: Peaks,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.segments as f64 / self.elapsed.as_secs_f64()
    }
    fn mb_per_s(&self) -> f64 {
        self.raw_bytes as f64 / MB / self.elapsed.as_secs_f64()
    }
    /// Whole-machine CPU-seconds per GiB of raw WAL.
    fn machine_cpu_per_gib(&self) -> f64 {
        self.cpu_busy_secs / (self.raw_bytes as f64 / GIB)
    }
    /// The lab's CPU-seconds per GiB when its cgroup could be measured,
    /// else the whole machine's.
    fn cpu_per_gib(&self) -> f64 {
        self.lab_cpu_secs.unwrap_or(self.cpu_busy_secs) / (self.raw_bytes as f64 / GIB)
    }
    /// CPU-seconds spent outside the lab during the scenario.
    fn outside_cpu_secs(&self) -> Option<f64> {
        self.lab_cpu_secs.map(|l| (self.cpu_busy_secs - l).max(0.0))
    }
    fn vs_bzip2(&self, bzip2: u64) -> f64 {
        self.stored[0].max(self.stored[1]) as f64 / bzip2 as f64
    }
}

fn main() -> ExitCode {
    exit_code("bench-archive", run())
}

fn run() -> Result<(), String> {
    require_root("PostgreSQL")?;
    let settings = Settings::from_env()?;
    let mut out = Results::new("archive");
    // Before the lab starts anything, so that every process of the lab
    // (servers, masters, PostgreSQL) is in it; dropped after the lab.
    let cgroup = CpuCgroup::enter();
    let archive_cmd = bin("archive-cmd");
    bin("archive-remote-cmd");
    out.say(binaries_line("bench-archive"));
    let time_bin = Path::new(TIME_BIN).is_file();

    let lab = open_lab(
        &mut out,
        LabOptions {
            extra_client_config: settings.client_config.clone(),
            extra_server_config: settings.server_config.clone(),
            forced_command: !settings.reference,
            ..Default::default()
        },
    );
    if !settings.ssh_config.is_empty() {
        add_ssh_options(&lab, &settings.ssh_config)?;
    }
    out.say(format!(
        "bench-archive: lab {}; {} CPUs; archive-cmd {}; config extra: client {:?}, servers {:?}, ssh {:?}",
        lab.dir().display(),
        cpu_count(),
        archive_cmd.display(),
        settings.client_config.trim_end().replace('\n', "; "),
        settings.server_config.trim_end().replace('\n', "; "),
        settings.ssh_config.trim_end().replace('\n', "; "),
    ));
    match &cgroup {
        Some(cg) => out.say(format!(
            "bench-archive: lab CPU measured in cgroup {} (whole-machine CPU from /proc/stat printed too)",
            cg.path().display()
        )),
        None => out.say("bench-archive: no writable cgroup: CPU is whole-machine only (other load counts too)"),
    }
    if !time_bin {
        out.say(format!(
            "bench-archive: {TIME_BIN} missing (apt-get install time): archive-cmd peak RSS from /proc sampling only"
        ));
    }

    // The corpus.
    let corpus_root = settings
        .corpus_dir
        .clone()
        .unwrap_or_else(|| lab.dir().join("bench-corpus"));
    let corpus = pgbench_corpus(&lab, &corpus_root, settings.segments, settings.scale);
    let raw = corpus.raw_bytes();
    let bz: u64 = bzip2_sizes(&corpus).iter().sum();
    out.say(format!(
        "corpus: {} segments of 16 MiB = {:.1} MB raw WAL from pgbench -i -s {} then pgbench -c 2 -j 2 rounds ({}..{}); bzip2 -1 total {:.1} MB ({:.2}x); {}",
        corpus.names.len(),
        raw as f64 / MB,
        corpus.scale,
        corpus.names.first().map_or("", String::as_str),
        corpus.names.last().map_or("", String::as_str),
        bz as f64 / MB,
        raw as f64 / bz as f64,
        if corpus.generated_secs > 0.0 {
            format!("made in {:.0} s in {}", corpus.generated_secs, corpus.root.display())
        } else {
            format!("reused from {}", corpus.root.display())
        }
    ));

    if let Some(first) = corpus.names.get(corpus.names.len() / 2) {
        out.say_machine(machine_speed_line(&corpus.path(first)));
    }

    let rss_dir = lab.dir().join("bench-rss");
    mkdir_postgres(&rss_dir, 0o755);
    let time_file = time_bin.then(|| rss_dir.join("maxrss"));

    // What else keeps the machine busy.
    let c0 = CpuTimes::now();
    thread::sleep(Duration::from_secs(2));
    let background = CpuTimes::now().busy_fraction_since(&c0);
    out.say(format!(
        "background: {:.1}% of all CPUs busy during 2 s before the runs{}",
        background * 100.0,
        if background > 0.05 {
            " (WARNING: other load distorts the figures)"
        } else {
            ""
        }
    ));

    // Warm-up: the ssh masters (primary -> arch1, arch1 -> arch2) are
    // persistent in production; start them outside the measurements.
    let t = Instant::now();
    reset_status(&corpus);
    archive_segments(
        &lab,
        &corpus,
        &corpus.names[..1],
        &lab.dst("bench-warmup"),
        &[],
        false,
        time_file.as_deref(),
    )?;
    wait_no_process(COMM_REMOTE, Duration::from_secs(60));
    out.say(format!(
        "warm-up: 1 segment into bench-warmup in {:.2} s (starts the persistent ssh masters)",
        t.elapsed().as_secs_f64()
    ));

    let pipeline = if settings.reference {
        match e2e::reference::unavailable(&lab) {
            Some(why) => {
                out.say(format!("reference: skipped: {why}"));
                None
            }
            None => Some(Pipeline::install(&lab)),
        }
    } else {
        None
    };
    let segments: Vec<PathBuf> = corpus.names.iter().map(|n| corpus.path(n)).collect();
    let measure_reference = |out: &mut Results, when: &str| -> Result<Option<Reference>, String> {
        let Some(p) = &pipeline else {
            return Ok(None);
        };
        // Starts both masters outside the measurement.
        p.store(&lab, &segments[0])?;
        let r = Reference::measure(
            &lab,
            p,
            &segments,
            raw,
            settings.reference_parallel,
            cgroup.as_ref(),
        )?;
        out.say(r.line(when, settings.reference_parallel));
        Ok(Some(r))
    };
    let ref_before = measure_reference(&mut out, "before")?;

    let mut all = Vec::new();
    for &kind in &settings.scenarios {
        let f = run_scenario(
            &mut out,
            &lab,
            &corpus,
            kind,
            time_file.as_deref(),
            settings.verify,
            cgroup.as_ref(),
        )?;
        out.say(summary_line(&f, bz));
        out.say(detail_line(&f));
        all.push(f);
    }

    out.say("targets (informational; this 2-core machine shares its cores between primary and both servers):");
    let mut met = 0;
    let mut total = 0;
    for f in &all {
        let (line, m, t) = targets_line(f, bz);
        out.say(&line);
        met += m;
        total += t;
    }
    out.say(format!("result: {met} of {total} targets met"));
    let ref_after = measure_reference(&mut out, "after")?;
    if let Some(r) = ref_before.zip(ref_after).map(|(a, b)| a.mean(&b)) {
        out.say(format!(
            "this machine runs the reference pipeline at {:.2}x the issue's serial rate, {:.2}x its backlog rate and {:.2}x its CPU per GiB (mean of before and after); the targets scaled by that:",
            r.serial.rate / ISSUE_SERIAL,
            r.backlog.rate / ISSUE_BACKLOG,
            r.backlog.cpu_per_gib / ISSUE_CPU_PER_GIB,
        ));
        let mut met = 0;
        let mut total = 0;
        for f in &all {
            let (line, m, t) = scaled_targets_line(f, &r);
            out.say(&line);
            met += m;
            total += t;
        }
        out.say(format!(
            "result, scaled to this machine: {met} of {total} targets met"
        ));
    }
    out.table("Figures", figures_table(&all, bz));
    out.write();
    if settings.hold_secs > 0 {
        out.say(format!(
            "bench-archive: BENCH_HOLD: lab {} kept running for {} s",
            lab.dir().display(),
            settings.hold_secs
        ));
        thread::sleep(Duration::from_secs(settings.hold_secs));
    }
    Ok(())
}

/// Empties archive_status.
fn reset_status(corpus: &Corpus) {
    let status = corpus.archive_status();
    for f in list_files(&status) {
        let _ = std::fs::remove_file(status.join(f));
    }
}

/// Removes the primary's look-ahead records; returns how many were left.
fn clear_pushed(lab: &Lab) -> usize {
    let pushed = lab.primary_state_dir().join(CLUSTER).join("pushed");
    let left = list_files(&pushed);
    for f in &left {
        let _ = std::fs::remove_file(pushed.join(f));
    }
    left.len()
}

/// archive-cmd as PostgreSQL's archiver runs it, optionally under
/// `/usr/bin/time -f %M`.
fn archive_call(
    lab: &Lab,
    corpus: &Corpus,
    dst: &str,
    name: &str,
    sets: &[String],
    time_file: Option<&Path>,
) -> (Output, Option<u64>) {
    let mut cmd: Command = match time_file {
        Some(tf) => {
            let mut c = lab.postgres_cmd(TIME_BIN);
            c.args(["-f", "%M", "-o"]).arg(tf).arg(bin("archive-cmd"));
            c
        }
        None => lab.postgres_cmd(bin("archive-cmd")),
    };
    cmd.arg("--config").arg(lab.primary_config());
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd.arg(lab.hosts())
        .arg(dst)
        .arg(format!("pg_wal/{name}"))
        .arg(name)
        .arg(CLUSTER)
        .current_dir(&corpus.root);
    let out = e2e::run(&mut cmd);
    let rss = time_file.and_then(|tf| {
        std::fs::read_to_string(tf)
            .ok()?
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())?
            .trim()
            .parse()
            .ok()
    });
    (out, rss)
}

/// What [`archive_segments`] measured per call.
struct Calls {
    latencies: Vec<Duration>,
    rss_kib: u64,
    lookahead_hits: usize,
    retries: usize,
}

/// Archives `names` in order the way the archiver does: `.ready` written
/// (all up front for a backlog, else just before the call), archive-cmd,
/// `.ready` renamed to `.done` on success; a failed call is retried after
/// 1 s, like PostgreSQL, at most 3 times.
fn archive_segments(
    lab: &Lab,
    corpus: &Corpus,
    names: &[String],
    dst: &str,
    sets: &[String],
    backlog: bool,
    time_file: Option<&Path>,
) -> Result<Calls, String> {
    let status = corpus.archive_status();
    let ready = |n: &str| status.join(format!("{n}.ready"));
    if backlog {
        for n in names {
            write_postgres_file(ready(n), "", 0o600);
        }
    }
    let mut calls = Calls {
        latencies: Vec::with_capacity(names.len()),
        rss_kib: 0,
        lookahead_hits: 0,
        retries: 0,
    };
    for n in names {
        if !backlog {
            write_postgres_file(ready(n), "", 0o600);
        }
        let t = Instant::now();
        let mut failures = 0;
        loop {
            let (out, rss) = archive_call(lab, corpus, dst, n, sets, time_file);
            calls.rss_kib = calls.rss_kib.max(rss.unwrap_or(0));
            if out.status.success() {
                if String::from_utf8_lossy(&out.stderr).contains("by look-ahead") {
                    calls.lookahead_hits += 1;
                }
                break;
            }
            failures += 1;
            calls.retries += 1;
            eprintln!(
                "bench-archive: archive-cmd {n} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            if failures >= 3 {
                return Err(format!("archive-cmd {n} failed 3 times"));
            }
            thread::sleep(Duration::from_secs(1));
        }
        calls.latencies.push(t.elapsed());
        std::fs::rename(ready(n), status.join(format!("{n}.done")))
            .map_err(|e| format!("rename {n}.ready to .done: {e}"))?;
    }
    Ok(calls)
}

fn run_scenario(
    out: &mut Results,
    lab: &Lab,
    corpus: &Corpus,
    kind: Kind,
    time_file: Option<&Path>,
    verify: bool,
    cgroup: Option<&CpuCgroup>,
) -> Result<Figures, String> {
    reset_status(corpus);
    let leftover = clear_pushed(lab);
    if leftover > 0 {
        out.say(format!(
            "{}: note: {leftover} unconsumed look-ahead record(s) left by the previous run, removed",
            kind.name()
        ));
    }
    let dst = lab.dst(&kind.dst_name());
    if !wait_no_process(COMM_REMOTE, Duration::from_secs(60)) {
        return Err("archive-remote-cmd processes still running before the scenario".into());
    }

    let sampler = sample_peaks(SAMPLE_EVERY);
    let lab0 = cgroup.and_then(CpuCgroup::usage_secs);
    let cpu0 = CpuTimes::now();
    let t0 = Instant::now();
    let calls = archive_segments(
        lab,
        corpus,
        &corpus.names,
        &dst,
        &kind.sets(),
        kind.backlog(),
        time_file,
    )?;
    let calls_elapsed = t0.elapsed();
    // Work the last call started (a forward, owed deliveries) belongs to
    // the scenario: its time and its CPU cost.
    let quiet = wait_no_process(COMM_REMOTE, Duration::from_secs(60));
    let cpu_window = t0.elapsed();
    let cpu1 = CpuTimes::now();
    let lab1 = cgroup.and_then(CpuCgroup::usage_secs);
    let peaks = sampler.finish();
    if !quiet {
        out.say(format!(
            "{}: note: archive-remote-cmd still running 60 s after the last call",
            kind.name()
        ));
    }

    let stored = [1, 2].map(|n| {
        let probe = lab.stored_path(n, &dst, "x");
        dir_bytes(probe.parent().expect("dst dir"))
    });
    if verify {
        verify_copies(lab, corpus, &dst)?;
    }
    let raw = corpus.raw_bytes();
    Ok(Figures {
        kind,
        segments: corpus.names.len(),
        raw_bytes: raw,
        elapsed: cpu_window,
        calls_elapsed,
        cpu_busy_secs: (cpu1.busy_secs_since(&cpu0) - peaks.own_cpu_secs).max(0.0),
        lab_cpu_secs: lab0
            .zip(lab1)
            .map(|(a, b)| (b - a - peaks.own_cpu_secs).max(0.0)),
        cpu_window,
        cpu_fraction: cpu1.busy_fraction_since(&cpu0),
        stored,
        rss_cmd_kib: calls.rss_kib.max(peaks.archive_cmd_kib),
        rss_remote_kib: peaks.remote_kib,
        latencies: calls.latencies,
        lookahead_hits: calls.lookahead_hits,
        retries: calls.retries,
        peaks,
    })
}

/// Both servers hold every segment, decompressing to the original bytes,
/// and nothing is left owed.
fn verify_copies(lab: &Lab, corpus: &Corpus, dst: &str) -> Result<(), String> {
    for name in &corpus.names {
        let want =
            std::fs::read(corpus.path(name)).map_err(|e| format!("read corpus {name}: {e}"))?;
        for n in [1, 2] {
            match lab.stored_bytes(n, dst, name) {
                Some(got) if got == want => {}
                Some(_) => return Err(format!("arch{n}'s copy of {name} in {dst} differs")),
                None => return Err(format!("arch{n} lacks {name} in {dst}")),
            }
        }
    }
    for n in [1, 2] {
        let owed = lab.owed_names(n, dst);
        if !owed.is_empty() {
            return Err(format!(
                "arch{n} still owes its peer {} file(s) of {dst}",
                owed.len()
            ));
        }
    }
    Ok(())
}

fn summary_line(f: &Figures, bz: u64) -> String {
    format!(
        "{}: {} segments in {:.2} s = {:.1} seg/s, {:.1} MB/s raw; stored arch1 {:.1} MB, arch2 {:.1} MB ({:.2}x bzip2 -1); peak RSS archive-cmd {:.1} MiB, archive-remote-cmd {:.1} MiB; CPU {:.2} s/GiB (whole machine {:.2})",
        f.kind.name(),
        f.segments,
        f.elapsed.as_secs_f64(),
        f.rate(),
        f.mb_per_s(),
        f.stored[0] as f64 / MB,
        f.stored[1] as f64 / MB,
        f.vs_bzip2(bz),
        f.rss_cmd_kib as f64 * 1024.0 / MIB,
        f.rss_remote_kib as f64 * 1024.0 / MIB,
        f.cpu_per_gib(),
        f.machine_cpu_per_gib(),
    )
}

/// The figures of [`summary_line`], one row per scenario.
fn figures_table(all: &[Figures], bz: u64) -> Table {
    let mut t = Table::new(&[
        "scenario",
        "segments",
        "s",
        "seg/s",
        "MB/s raw",
        "stored arch1 MB",
        "stored arch2 MB",
        "x bzip2 -1",
        "peak RSS archive-cmd MiB",
        "peak RSS archive-remote-cmd MiB",
        "CPU s/GiB",
        "whole machine CPU s/GiB",
    ]);
    for f in all {
        t.row(vec![
            f.kind.name().to_string(),
            f.segments.to_string(),
            format!("{:.2}", f.elapsed.as_secs_f64()),
            format!("{:.1}", f.rate()),
            format!("{:.1}", f.mb_per_s()),
            format!("{:.1}", f.stored[0] as f64 / MB),
            format!("{:.1}", f.stored[1] as f64 / MB),
            format!("{:.2}", f.vs_bzip2(bz)),
            format!("{:.1}", f.rss_cmd_kib as f64 * 1024.0 / MIB),
            format!("{:.1}", f.rss_remote_kib as f64 * 1024.0 / MIB),
            format!("{:.2}", f.cpu_per_gib()),
            format!("{:.2}", f.machine_cpu_per_gib()),
        ]);
    }
    t
}

fn detail_line(f: &Figures) -> String {
    let mut s = format!(
        "  {} detail ({}): last archive-cmd returned after {:.2} s; calls p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; {} calls sent, {} answered from look-ahead records; ",
        f.kind.name(),
        f.kind.describe(),
        f.calls_elapsed.as_secs_f64(),
        ms(quantile(&f.latencies, 0.5)),
        ms(quantile(&f.latencies, 0.9)),
        ms(quantile(&f.latencies, 1.0)),
        f.latencies.len() - f.lookahead_hits,
        f.lookahead_hits,
    );
    write!(
        s,
        "{} archive-remote-cmd processes (at most {} at once); CPU {} over {:.2} s, whole machine {:.2} s busy ({:.0}% of {} CPUs); sampler's own {:.2} s excluded; {} retries",
        f.peaks.remote_procs,
        f.peaks.remote_concurrent,
        f.lab_cpu_secs
            .map_or("of the lab unknown".to_string(), |l| format!("{l:.2} s in the lab")),
        f.cpu_window.as_secs_f64(),
        f.cpu_busy_secs,
        f.cpu_fraction * 100.0,
        cpu_count(),
        f.peaks.own_cpu_secs,
        f.retries,
    )
    .unwrap();
    if let Some(out) = f.outside_cpu_secs() {
        if out > 0.05 * f.cpu_window.as_secs_f64() {
            write!(
                s,
                "; WARNING: {out:.2} CPU-s used outside the lab meanwhile (other load: throughput figures are pessimistic)"
            )
            .unwrap();
        }
    }
    s
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn targets_line(f: &Figures, bz: u64) -> (String, usize, usize) {
    let rate = f.rate();
    let ratio = f.vs_bzip2(bz);
    let cmd = f.rss_cmd_kib as f64 * 1024.0 / MIB;
    let remote = f.rss_remote_kib as f64 * 1024.0 / MIB;
    let cpu = f.cpu_per_gib();
    let checks = [
        rate >= f.kind.target_rate(),
        ratio <= TARGET_VS_BZIP2,
        cmd <= TARGET_RSS_CMD_MIB,
        remote <= TARGET_RSS_REMOTE_MIB,
        cpu <= TARGET_CPU_PER_GIB,
    ];
    let line = format!(
        "  {} targets: {:.1} >= {} seg/s {}; {:.2}x <= {}x bzip2 -1 {}; archive-cmd {:.1} <= {} MiB {}; archive-remote-cmd {:.1} <= {} MiB {}; {} CPU {:.2} <= {} s/GiB {}",
        f.kind.name(),
        rate,
        f.kind.target_rate(),
        verdict(checks[0]),
        ratio,
        TARGET_VS_BZIP2,
        verdict(checks[1]),
        cmd,
        TARGET_RSS_CMD_MIB,
        verdict(checks[2]),
        remote,
        TARGET_RSS_REMOTE_MIB,
        verdict(checks[3]),
        if f.lab_cpu_secs.is_some() {
            "lab"
        } else {
            "machine"
        },
        cpu,
        TARGET_CPU_PER_GIB,
        verdict(checks[4]),
    );
    (line, checks.iter().filter(|&&c| c).count(), checks.len())
}

/// The reference pipeline's figures, serial and with a backlog.
#[derive(Clone, Copy)]
struct Reference {
    serial: RefRun,
    backlog: RefRun,
}

#[derive(Clone, Copy)]
struct RefRun {
    rate: f64,
    cpu_per_gib: f64,
    stored: u64,
}

impl Reference {
    fn measure(
        lab: &Lab,
        p: &Pipeline,
        segments: &[PathBuf],
        raw: u64,
        parallel: usize,
        cgroup: Option<&CpuCgroup>,
    ) -> Result<Reference, String> {
        let one = |parallel: usize| -> Result<RefRun, String> {
            let lab0 = cgroup.and_then(CpuCgroup::usage_secs);
            let cpu0 = CpuTimes::now();
            let run = p.run(lab, segments, parallel)?;
            let machine = CpuTimes::now().busy_secs_since(&cpu0);
            let lab1 = cgroup.and_then(CpuCgroup::usage_secs);
            let cpu = lab0.zip(lab1).map_or(machine, |(a, b)| b - a);
            Ok(RefRun {
                rate: segments.len() as f64 / run.elapsed.as_secs_f64(),
                cpu_per_gib: cpu / (raw as f64 / GIB),
                stored: run.stored[0].max(run.stored[1]),
            })
        };
        Ok(Reference {
            serial: one(1)?,
            backlog: one(parallel)?,
        })
    }

    fn mean(&self, other: &Reference) -> Reference {
        let avg = |a: RefRun, b: RefRun| RefRun {
            rate: (a.rate + b.rate) / 2.0,
            cpu_per_gib: (a.cpu_per_gib + b.cpu_per_gib) / 2.0,
            stored: a.stored.max(b.stored),
        };
        Reference {
            serial: avg(self.serial, other.serial),
            backlog: avg(self.backlog, other.backlog),
        }
    }

    /// The run a scenario compares with.
    fn for_kind(&self, kind: Kind) -> RefRun {
        if kind.backlog() {
            self.backlog
        } else {
            self.serial
        }
    }

    fn line(&self, when: &str, parallel: usize) -> String {
        format!(
            "reference pipeline ({when} the scenarios; zstd -1 on arch1, tee to arch2, persistent masters, fsync + rename on both): serial {:.1} seg/s, CPU {:.2} s/GiB; backlog ({parallel} at once) {:.1} seg/s, CPU {:.2} s/GiB; stored {:.1} MB per server (the issue measured {ISSUE_SERIAL} / {ISSUE_BACKLOG} seg/s at {ISSUE_CPU_PER_GIB} s/GiB on its machine)",
            self.serial.rate,
            self.serial.cpu_per_gib,
            self.backlog.rate,
            self.backlog.cpu_per_gib,
            self.serial.stored as f64 / MB,
        )
    }
}

/// The rate and CPU targets scaled by how fast this machine runs the
/// reference pipeline compared with the issue's machine.
fn scaled_targets_line(f: &Figures, r: &Reference) -> (String, usize, usize) {
    let run = r.for_kind(f.kind);
    let issue_rate = if f.kind.backlog() {
        ISSUE_BACKLOG
    } else {
        ISSUE_SERIAL
    };
    let rate_target = f.kind.target_rate() * run.rate / issue_rate;
    let cpu_target = TARGET_CPU_PER_GIB * run.cpu_per_gib / ISSUE_CPU_PER_GIB;
    let checks = [f.rate() >= rate_target, f.cpu_per_gib() <= cpu_target];
    let line = format!(
        "  {} scaled: {:.1} >= {:.1} seg/s {}; CPU {:.2} <= {:.2} s/GiB {}; against the pipeline itself: {:.2}x its rate, {:.2}x its CPU",
        f.kind.name(),
        f.rate(),
        rate_target,
        verdict(checks[0]),
        f.cpu_per_gib(),
        cpu_target,
        verdict(checks[1]),
        f.rate() / run.rate,
        f.cpu_per_gib() / run.cpu_per_gib,
    );
    (line, checks.iter().filter(|&&c| c).count(), checks.len())
}
