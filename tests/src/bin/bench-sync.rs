//! bench-sync: the wal-sync benchmark (issue 5, item 4). Not a test: it
//! asserts no timing; it prints figures and compares wal-sync with
//! `rsync -a --ignore-existing` over the same ssh, informationally.
//!
//! The corpus is what an outage leaves behind: `BENCH_FILES` archive files
//! present only on arch1 and as many only on arch2, as the suite stores them
//! (zstd-compressed 16 MiB WAL segments with valid page headers and one
//! system identifier, 1-5 MB each for the most part, a few cut short by a WAL
//! switch, a few incompressible, plus 2% small `.history` and `.backup`
//! files). Every scenario gets its own archive directory holding the very
//! same corpus (hard links), and runs on archive server 1 as its cron would
//! (as postgres, inside the server's namespace, with its config):
//!
//! - `wal-sync`: one `wal-sync DIR arch2` run, both directions, for each
//!   `parallel` value in `BENCH_PARALLEL` (`--set parallel=N`);
//! - `rsync`: `rsync -a --ignore-existing -e 'ssh -F <arch1's ssh_config>'`
//!   arch1→arch2 (`DIR/ arch2:DIR/`), then arch2→arch1 (`arch2:DIR/ DIR/`):
//!   the same ssh client, config, key, cipher and sshd as wal-sync;
//! - `rsync-concurrent`: the same two rsync runs started at once.
//!
//! rsync needs a shell on the servers, so the lab's authorized_keys carry
//! no forced command (`LabOptions { forced_command: false, .. }`); wal-sync
//! asks for `archive-remote-cmd serve` itself and runs the same either way.
//! Before each wal-sync run its persistent ssh master is closed, so each run
//! pays for its connection, as each rsync run does. wal-sync makes each
//! copy durable (fsync of file and directory) before it counts; rsync does
//! not, so the time a `sync(1)` takes right after each scenario is shown too.
//!
//! Run as root after `cargo build --release --workspace --bins` (or use
//! `scripts/bench-sync.sh`). Environment:
//!
//! - `BENCH_FILES` (500): files only on arch1, and as many only on arch2;
//! - `BENCH_PARALLEL` (`4,2,8`): comma-separated `parallel` values for
//!   wal-sync (4 is the default of the config);
//! - `BENCH_SCENARIOS` (`wal-sync,rsync,rsync-concurrent`);
//! - `BENCH_ROUNDS` (2): repeat all scenarios, the summary keeps each one's
//!   best (the fastest run is the one least disturbed by other load);
//! - `BENCH_CORPUS_DIR`: keep the corpus there and reuse it on later runs
//!   (default: made afresh inside the lab);
//! - `BENCH_SEED` (1): corpus seed;
//! - `BENCH_SERVER_CONFIG`: TOML lines (`;` separates lines) appended to
//!   both servers' remote.toml;
//! - `BENCH_VERIFY` (1): after each scenario, check that both servers hold
//!   all files, byte-identical (outside the measured window);
//! - `BENCH_QUIET_WAIT` (120): before each scenario, wait up to this many
//!   seconds for the machine to be idle (at most 10% busy over 1 s): other
//!   work on a 2-core machine distorts the figures, and each scenario
//!   reports the CPU time of every other process that ran during it;
//! - `BENCH_RESULTS_DIR`: where the results file goes (default
//!   `docs/benchmarks/`, `YYYY-MM-DD-sync.md`, a section appended per
//!   completed run: see `e2e::bench_results`); set but empty, none is
//!   written;
//! - `KEEP_LAB=1`: keep the lab dir.
//!
//! Exit status: 0 when every scenario ran (target met or not), 1 when the
//! run itself broke (a tool failed, a copy is missing or differs), 101 on a
//! lab panic.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Output};
use std::thread;
use std::time::{Duration, Instant};

use e2e::bench_common::{
    binaries_line, close_ssh_masters, env_lines, env_list, env_or, env_path, exit_code, open_lab,
    require_root,
};
use e2e::bench_results::{Results, Table};
use e2e::bench_sync::{
    lab_pid_namespaces, place_corpus, remove_dst, sample_cpu_by_name, sync_corpus, verify_costs,
    verify_synced, CpuByName, FileKind, SyncCorpus, VerifyCosts, KERNEL_THREADS,
};
use e2e::sampler::{cpu_count, wait_quiet, CpuTimes};
use e2e::{bin, sh_quote, Lab, LabOptions};

const MB: f64 = 1e6;
/// /proc sampling period of the CPU accounting.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Before each scenario, wait for the machine to be at most this busy...
const QUIET: f64 = 0.10;
/// Process names whose CPU time is accounted.
const COMMS: [&str; 6] = [
    "wal-sync",
    "archive-remote-",
    "ssh",
    "sshd",
    "rsync",
    "nsenter",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    WalSync,
    Rsync,
    RsyncConcurrent,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::WalSync, Kind::Rsync, Kind::RsyncConcurrent];
    fn name(self) -> &'static str {
        match self {
            Kind::WalSync => "wal-sync",
            Kind::Rsync => "rsync",
            Kind::RsyncConcurrent => "rsync-concurrent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scenario {
    kind: Kind,
    /// wal-sync's `parallel`.
    parallel: usize,
}

impl Scenario {
    fn label(self) -> String {
        match self.kind {
            Kind::WalSync => format!("wal-sync parallel={}", self.parallel),
            Kind::Rsync => "rsync arch1->arch2 then arch2->arch1".into(),
            Kind::RsyncConcurrent => "rsync both directions at once".into(),
        }
    }
    fn slug(self) -> String {
        match self.kind {
            Kind::WalSync => format!("walsync-p{}", self.parallel),
            k => k.name().to_string(),
        }
    }
}

struct Settings {
    files: usize,
    scenarios: Vec<Scenario>,
    rounds: usize,
    corpus_dir: Option<PathBuf>,
    seed: u64,
    server_config: String,
    verify: bool,
    /// ... for at most this long.
    quiet_wait: Duration,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let files: usize = env_or("BENCH_FILES", 500)?;
        if files == 0 {
            return Err("BENCH_FILES must be at least 1".into());
        }
        let parallel = env_list("BENCH_PARALLEL", "4,2,8")
            .iter()
            .map(|p| match p.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("BENCH_PARALLEL: {p:?} is not a positive number")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut scenarios = Vec::new();
        for s in env_list("BENCH_SCENARIOS", "wal-sync,rsync,rsync-concurrent") {
            let kind = Kind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
                format!("BENCH_SCENARIOS: unknown scenario {s:?} (wal-sync, rsync, rsync-concurrent)")
            })?;
            if kind == Kind::WalSync {
                scenarios.extend(parallel.iter().map(|&p| Scenario { kind, parallel: p }));
            } else {
                scenarios.push(Scenario { kind, parallel: 0 });
            }
        }
        if scenarios.is_empty() {
            return Err("BENCH_SCENARIOS names no scenario".into());
        }
        let rounds: usize = env_or("BENCH_ROUNDS", 2)?;
        Ok(Settings {
            files,
            scenarios,
            rounds: rounds.max(1),
            corpus_dir: env_path("BENCH_CORPUS_DIR"),
            seed: env_or("BENCH_SEED", 1)?,
            server_config: env_lines("BENCH_SERVER_CONFIG"),
            verify: env_or("BENCH_VERIFY", 1u8)? != 0,
            quiet_wait: Duration::from_secs(env_or("BENCH_QUIET_WAIT", 120)?),
        })
    }
}

/// What one scenario run measured.
struct Figures {
    scenario: Scenario,
    round: usize,
    files: usize,
    bytes: u64,
    elapsed: Duration,
    /// Per-step wall times (the two rsync runs).
    steps: Vec<(String, Duration)>,
    /// `sync(1)` right after.
    sync_after: Duration,
    cpu: CpuByName,
    machine_busy: f64,
    machine_iowait: f64,
    machine_fraction: f64,
    /// wal-sync's own summary line.
    tool_says: Option<String>,
    /// Busy fraction of the machine just before.
    background: f64,
}

impl Figures {
    fn files_per_s(&self) -> f64 {
        self.files as f64 / self.elapsed.as_secs_f64()
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / MB / self.elapsed.as_secs_f64()
    }
}

fn main() -> ExitCode {
    exit_code("bench-sync", run())
}

fn run() -> Result<(), String> {
    require_root("the tools")?;
    let settings = Settings::from_env()?;
    let mut out = Results::new("sync");
    bin("wal-sync");
    bin("archive-remote-cmd");
    let rsync_version = tool_version("rsync")
        .ok_or("rsync is not installed (apt-get install rsync, or run scripts/bench-sync.sh)")?;
    out.say(binaries_line("bench-sync"));

    let lab = open_lab(
        &mut out,
        LabOptions {
            forced_command: false,
            extra_server_config: settings.server_config.clone(),
            ..Default::default()
        },
    );
    let ssh_config = lab.server(1).ssh_config_path();
    out.say(format!(
        "bench-sync: lab {}; {} CPUs; {}; {}; servers' extra config {:?}",
        lab.dir().display(),
        cpu_count(),
        rsync_version,
        tool_version("ssh").unwrap_or_else(|| "ssh ?".into()),
        settings.server_config.trim_end().replace('\n', "; "),
    ));
    out.say(format!(
        "bench-sync: every tool runs on arch1 as postgres inside its namespace (nsenter), PGARCHIVE_CONFIG={}, peer arch2 reached with ssh -F {} (no forced command: rsync needs a shell)",
        lab.server(1).config_path().display(),
        ssh_config.display()
    ));

    // The corpus.
    let corpus_root = settings
        .corpus_dir
        .clone()
        .unwrap_or_else(|| lab.dir().join("bench-corpus"));
    e2e::mkdir_postgres(&corpus_root, 0o755);
    let corpus = sync_corpus(&corpus_root, settings.files, settings.seed, cpu_count());
    describe_corpus(&mut out, &corpus);
    let costs = verify_costs(&corpus, 60);
    out.say(format!(
        "verification cost, one core, whole corpus (measured on {} segments): read + blake3 of the {:.1} GB stored: {:.2} CPU-s; zstd decode + blake3 of the {:.1} GB raw: {:.2} CPU-s",
        costs.sampled,
        corpus.stored_bytes() as f64 / 1e9,
        costs.hash_stored_secs,
        corpus.raw_bytes() as f64 / 1e9,
        costs.decode_raw_secs,
    ));

    // Warm-up: binaries into the page cache, host keys checked, nothing
    // measured.
    let warm = lab.dst("bench-warmup");
    for n in [1, 2] {
        e2e::mkdir_postgres(lab.stored_path(n, &warm, "x").parent().unwrap(), 0o700);
    }
    check(&mut wal_sync_cmd(&lab, &warm, 4), "warm-up wal-sync")?;
    check(&mut rsync_cmd(&lab, &warm, true), "warm-up rsync")?;
    close_masters(&lab);
    remove_dst(&lab, &warm);

    out.say(format!(
        "commands (DIR = {}):",
        lab.dst("bench-<round>-<scenario>")
    ));
    out.say(format!(
        "  wal-sync: {} --set parallel=N DIR arch2",
        bin("wal-sync").display()
    ));
    out.say(format!(
        "  rsync:    rsync -a --ignore-existing -e {} DIR/ arch2:DIR/   then   rsync -a --ignore-existing -e {} arch2:DIR/ DIR/",
        sh_quote(&rsync_ssh(&lab)),
        sh_quote(&rsync_ssh(&lab)),
    ));

    let mut all: Vec<Figures> = Vec::new();
    for round in 1..=settings.rounds {
        for &scenario in &settings.scenarios {
            let f = run_scenario(&mut out, &lab, &corpus, scenario, round, &settings)?;
            print_figures(&mut out, &f);
            all.push(f);
        }
    }
    summary(&mut out, &all, &settings, &corpus, &costs);
    out.write();
    Ok(())
}

fn tool_version(tool: &str) -> Option<String> {
    let out = Command::new(tool).arg("-V").output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let line = String::from_utf8_lossy(&text)
        .lines()
        .next()?
        .trim()
        .to_string();
    Some(
        line.split("  ")
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn describe_corpus(out: &mut Results, c: &SyncCorpus) {
    for n in [1, 2] {
        let side = c.side(n);
        let mut seg: Vec<u64> = side
            .iter()
            .filter(|f| f.kind == FileKind::Segment)
            .map(|f| f.stored_bytes)
            .collect();
        seg.sort_unstable();
        let small = side.iter().filter(|f| f.kind != FileKind::Segment);
        let histories = side.iter().filter(|f| f.kind == FileKind::History).count();
        let backups = side.iter().filter(|f| f.kind == FileKind::Backup).count();
        let small_bytes: Vec<u64> = small.map(|f| f.stored_bytes).collect();
        let q = |v: &[u64], x: f64| -> f64 {
            if v.is_empty() {
                0.0
            } else {
                v[((v.len() - 1) as f64 * x).round() as usize] as f64 / MB
            }
        };
        out.say(format!(
            "corpus: only on arch{n}: {} files, {:.1} MB stored ({:.1} MB raw): {} zstd 16 MiB segments {}..{} (stored MB: min {:.2}, p10 {:.2}, median {:.2}, p90 {:.2}, max {:.2}), {histories} .history + {backups} .backup ({}..{} bytes)",
            side.len(),
            side.iter().map(|f| f.stored_bytes).sum::<u64>() as f64 / MB,
            side.iter().map(|f| f.raw_bytes).sum::<u64>() as f64 / MB,
            seg.len(),
            side.iter().find(|f| f.kind == FileKind::Segment).map_or("-", |f| f.name.as_str()),
            side.iter().rev().find(|f| f.kind == FileKind::Segment).map_or("-", |f| f.name.as_str()),
            q(&seg, 0.0),
            q(&seg, 0.1),
            q(&seg, 0.5),
            q(&seg, 0.9),
            q(&seg, 1.0),
            small_bytes.iter().min().unwrap_or(&0),
            small_bytes.iter().max().unwrap_or(&0),
        ));
    }
    out.say(format!(
        "corpus: {} files, {:.1} MB to copy, system identifier {}; {} in {}",
        c.file_count(),
        c.stored_bytes() as f64 / MB,
        c.system_identifier,
        if c.generated_secs > 0.0 {
            format!("made in {:.0} s", c.generated_secs)
        } else {
            "reused".to_string()
        },
        c.root.display()
    ));
}

fn wal_sync_cmd(lab: &Lab, dst: &str, parallel: usize) -> Command {
    let mut cmd = lab.server_cmd(1, bin("wal-sync"));
    cmd.arg("--set")
        .arg(format!("parallel={parallel}"))
        .arg(dst)
        .arg("arch2");
    cmd
}

fn rsync_ssh(lab: &Lab) -> String {
    format!(
        "ssh -F {}",
        sh_quote(&lab.server(1).ssh_config_path().to_string_lossy())
    )
}

/// `rsync -a --ignore-existing` arch1→arch2 (`push`) or arch2→arch1, run on arch1.
fn rsync_cmd(lab: &Lab, dst: &str, push: bool) -> Command {
    let mut cmd = lab.server_cmd(1, "rsync");
    cmd.args(["-a", "--ignore-existing", "-e"])
        .arg(rsync_ssh(lab));
    let local = format!("{dst}/");
    let remote = format!("arch2:{dst}/");
    if push {
        cmd.arg(local).arg(remote);
    } else {
        cmd.arg(remote).arg(local);
    }
    cmd
}

fn stderr_of(out: &Output) -> String {
    e2e::stderr(out).trim().to_string()
}

fn check(cmd: &mut Command, what: &str) -> Result<Output, String> {
    let out = e2e::run(cmd);
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed ({}): {}\n{}",
            out.status,
            stderr_of(&out),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// Asks every ssh master under arch1's runtime dir to exit, so the next
/// wal-sync connects afresh.
fn close_masters(lab: &Lab) {
    close_ssh_masters(&lab.server(1).runtime_dir(), "arch2", || {
        lab.server_cmd(1, "ssh")
    });
}

fn run_scenario(
    out: &mut Results,
    lab: &Lab,
    corpus: &SyncCorpus,
    scenario: Scenario,
    round: usize,
    settings: &Settings,
) -> Result<Figures, String> {
    let dst = lab.dst(&format!("bench-r{round}-{}", scenario.slug()));
    let copied = place_corpus(lab, corpus, &dst);
    if copied > 0 && round == 1 {
        out.say(format!(
            "note: {copied} corpus files copied, not hard-linked (corpus on another filesystem)"
        ));
    }
    close_masters(lab);
    // Earlier scenarios' dirty pages out of the way, then a quiet moment.
    Command::new("sync")
        .status()
        .map_err(|e| format!("sync: {e}"))?;
    let background = wait_quiet(QUIET, settings.quiet_wait);

    let sampler = sample_cpu_by_name(SAMPLE_EVERY, lab_pid_namespaces(lab));
    let m0 = CpuTimes::now();
    let t0 = Instant::now();
    let mut steps = Vec::new();
    let mut tool_says = None;
    match scenario.kind {
        Kind::WalSync => {
            let out = check(
                &mut wal_sync_cmd(lab, &dst, scenario.parallel),
                &scenario.label(),
            )?;
            tool_says = stderr_of(&out)
                .lines()
                .rev()
                .find(|l| l.contains(" copied "))
                .map(str::to_string);
        }
        Kind::Rsync => {
            let t = Instant::now();
            check(&mut rsync_cmd(lab, &dst, true), "rsync arch1->arch2")?;
            steps.push(("arch1->arch2".to_string(), t.elapsed()));
            let t = Instant::now();
            check(&mut rsync_cmd(lab, &dst, false), "rsync arch2->arch1")?;
            steps.push(("arch2->arch1".to_string(), t.elapsed()));
        }
        Kind::RsyncConcurrent => {
            let push = thread::spawn({
                let mut cmd = rsync_cmd(lab, &dst, true);
                move || {
                    let t = Instant::now();
                    (e2e::run(&mut cmd), t.elapsed())
                }
            });
            let t = Instant::now();
            let pull = check(&mut rsync_cmd(lab, &dst, false), "rsync arch2->arch1");
            let pull_time = t.elapsed();
            let (push_out, push_time) = push.join().map_err(|_| "rsync thread panicked")?;
            pull?;
            if !push_out.status.success() {
                return Err(format!(
                    "rsync arch1->arch2 failed ({}): {}",
                    push_out.status,
                    stderr_of(&push_out)
                ));
            }
            steps.push(("arch1->arch2".to_string(), push_time));
            steps.push(("arch2->arch1".to_string(), pull_time));
        }
    }
    let elapsed = t0.elapsed();
    let m1 = CpuTimes::now();
    let cpu = sampler.finish();
    let t = Instant::now();
    Command::new("sync")
        .status()
        .map_err(|e| format!("sync: {e}"))?;
    let sync_after = t.elapsed();
    let (machine_busy, machine_iowait, machine_fraction) = m1.since(&m0);

    if settings.verify {
        verify_synced(lab, corpus, &dst).map_err(|e| format!("{}: {e}", scenario.label()))?;
    }
    remove_dst(lab, &dst);
    Ok(Figures {
        scenario,
        round,
        files: corpus.file_count(),
        bytes: corpus.stored_bytes(),
        elapsed,
        steps,
        sync_after,
        cpu,
        machine_busy,
        machine_iowait,
        machine_fraction,
        tool_says,
        background,
    })
}

fn print_figures(out: &mut Results, f: &Figures) {
    let wall = f.elapsed.as_secs_f64();
    let mut steps = String::new();
    for (what, d) in &f.steps {
        steps.push_str(&format!(", {what} {:.2} s", d.as_secs_f64()));
    }
    out.say(format!(
        "{} [round {}]: {} files, {:.1} MB in {:.2} s = {:.1} files/s, {:.1} MB/s{steps}; sync(1) right after: {:.2} s; machine {:.0}% busy just before",
        f.scenario.label(),
        f.round,
        f.files,
        f.bytes as f64 / MB,
        wall,
        f.files_per_s(),
        f.mb_per_s(),
        f.sync_after.as_secs_f64(),
        f.background * 100.0,
    ));
    let mut parts = Vec::new();
    for comm in COMMS.iter().copied().chain([KERNEL_THREADS]) {
        let s = if comm == KERNEL_THREADS {
            f.cpu.other(comm)
        } else {
            f.cpu.of(comm)
        };
        if s > 0.0 {
            let name = if comm == "archive-remote-" {
                "archive-remote-cmd"
            } else {
                comm
            };
            let procs = f.cpu.procs.get(comm).copied().unwrap_or(0);
            parts.push(format!(
                "{name} {s:.2} ({:.0}% of wall{})",
                s / wall * 100.0,
                if comm == KERNEL_THREADS {
                    String::new()
                } else {
                    format!(", {procs} proc{}", if procs == 1 { "" } else { "s" })
                }
            ));
        }
    }
    let others: Vec<String> = f
        .cpu
        .others(3)
        .into_iter()
        .map(|(n, s)| format!("{n} {s:.2}"))
        .collect();
    out.say(format!(
        "  CPU-s of the lab's processes: {}; outside the lab: {}; unaccounted (irq, exited processes) {:.2}; machine {:.2} CPU-s busy = {:.0}% of {} CPUs, iowait {:.2} s",
        parts.join(", "),
        if others.is_empty() {
            "none".to_string()
        } else {
            others.join(", ")
        },
        (f.machine_busy - f.cpu.total() - f.cpu.own_secs).max(0.0),
        f.machine_busy,
        f.machine_fraction * 100.0,
        cpu_count(),
        f.machine_iowait,
    ));
    if let Some(line) = &f.tool_says {
        out.say(format!("  wal-sync says: {line}"));
    }
}

fn summary(
    out: &mut Results,
    all: &[Figures],
    settings: &Settings,
    corpus: &SyncCorpus,
    costs: &VerifyCosts,
) {
    let best = |s: Scenario| {
        all.iter()
            .filter(|f| f.scenario == s)
            .min_by(|a, b| a.elapsed.cmp(&b.elapsed))
    };
    let rounds = if settings.rounds > 1 {
        format!("best of {} rounds", settings.rounds)
    } else {
        "one round".to_string()
    };
    out.say(format!(
        "summary ({} files only on arch1 + {} only on arch2 = {} files, {:.1} MB; {rounds}):",
        corpus.side(1).len(),
        corpus.side(2).len(),
        corpus.file_count(),
        corpus.stored_bytes() as f64 / MB,
    ));
    let mut table = Table::new(&["scenario", "s", "files/s", "MB/s", "then sync(1) s"]);
    for &s in &settings.scenarios {
        if let Some(f) = best(s) {
            out.say(format!(
                "  {:<40} {:>7.2} s  {:>7.1} files/s  {:>7.1} MB/s   (+ sync(1) {:.2} s)",
                s.label(),
                f.elapsed.as_secs_f64(),
                f.files_per_s(),
                f.mb_per_s(),
                f.sync_after.as_secs_f64()
            ));
            table.row(vec![
                s.label(),
                format!("{:.2}", f.elapsed.as_secs_f64()),
                format!("{:.1}", f.files_per_s()),
                format!("{:.1}", f.mb_per_s()),
                format!("{:.2}", f.sync_after.as_secs_f64()),
            ]);
        }
    }
    out.table(
        &format!(
            "Summary ({} files, {:.1} MB; {rounds})",
            corpus.file_count(),
            corpus.stored_bytes() as f64 / MB,
        ),
        table,
    );
    let wal_sync = settings
        .scenarios
        .iter()
        .filter(|s| s.kind == Kind::WalSync)
        .filter_map(|&s| best(s))
        .min_by(|a, b| a.elapsed.cmp(&b.elapsed));
    let default_p = settings
        .scenarios
        .iter()
        .find(|s| s.kind == Kind::WalSync && s.parallel == 4)
        .and_then(|&s| best(s));
    for (kind, what) in [
        (
            Kind::Rsync,
            "rsync -a --ignore-existing, one direction then the other",
        ),
        (
            Kind::RsyncConcurrent,
            "rsync -a --ignore-existing, both directions at once",
        ),
    ] {
        let Some(r) = best(Scenario { kind, parallel: 0 }) else {
            continue;
        };
        if let Some(w) = wal_sync {
            let ratio = r.elapsed.as_secs_f64() / w.elapsed.as_secs_f64();
            out.say(format!(
                "result: wal-sync (parallel={}) {:.1} files/s, {:.1} MB/s vs {what} {:.1} files/s, {:.1} MB/s: wal-sync {:.2}x as fast{}",
                w.scenario.parallel,
                w.files_per_s(),
                w.mb_per_s(),
                r.files_per_s(),
                r.mb_per_s(),
                ratio,
                if kind == Kind::Rsync {
                    format!(
                        " -> target (at least as fast as rsync) {}",
                        if ratio >= 1.0 { "MET" } else { "MISSED" }
                    )
                } else {
                    " (informational)".to_string()
                }
            ));
            if let Some(d) = default_p.filter(|d| d.scenario != w.scenario) {
                out.say(format!(
                    "  with the default parallel=4: {:.1} files/s, {:.2}x rsync",
                    d.files_per_s(),
                    r.elapsed.as_secs_f64() / d.elapsed.as_secs_f64()
                ));
            }
        }
    }
    where_time_goes(out, all, settings, costs);
}

/// CPU-seconds of the lab's processes in a run, by role.
fn roles(f: &Figures) -> (f64, f64, f64) {
    let tools = f.cpu.of("wal-sync")
        + f.cpu.of("archive-remote-")
        + f.cpu.of("rsync")
        + f.cpu.of("nsenter");
    let ssh = f.cpu.of("ssh") + f.cpu.of("sshd");
    (tools, ssh, f.cpu.other(KERNEL_THREADS))
}

fn where_time_goes(out: &mut Results, all: &[Figures], settings: &Settings, costs: &VerifyCosts) {
    let best = |s: Scenario| {
        all.iter()
            .filter(|f| f.scenario == s)
            .min_by(|a, b| a.elapsed.cmp(&b.elapsed))
    };
    out.say(format!("where the time goes (CPU-s of the lab's processes in each scenario's best run; the machine has {} CPUs):", cpu_count()));
    for &s in &settings.scenarios {
        let Some(f) = best(s) else { continue };
        let (tools, ssh, kernel) = roles(f);
        let wall = f.elapsed.as_secs_f64();
        let detail = match s.kind {
            Kind::WalSync => format!(
                "wal-sync on arch1 {:.1} = {:.0}% of one core + archive-remote-cmd on arch2 {:.1}",
                f.cpu.of("wal-sync") + f.cpu.of("nsenter"),
                (f.cpu.of("wal-sync") + f.cpu.of("nsenter")) / wall * 100.0,
                f.cpu.of("archive-remote-"),
            ),
            _ => format!("rsync processes (both ends) {:.1}", f.cpu.of("rsync")),
        };
        out.say(format!(
            "  {:<40} tools {tools:>5.1} ({detail}); ssh + sshd {ssh:>4.1}; kernel threads {kernel:.1}; together {:.1} CPU-s in {wall:.1} s = {:.0}% of the machine",
            s.label(),
            tools + ssh + kernel,
            (tools + ssh + kernel) / wall / cpu_count() as f64 * 100.0,
        ));
    }
    out.say(format!(
        "  a verified copy as the receiving side checks it here costs, for this corpus on one core: zstd decode + blake3 of the raw bytes {:.1} CPU-s, plus blake3 of the stored bytes {:.1} CPU-s per pass; rsync only checksums the stored bytes it moves",
        costs.decode_raw_secs, costs.hash_stored_secs
    ));
}
