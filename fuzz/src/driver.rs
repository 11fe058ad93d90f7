//! Runs a target: corpus replay, then generated cases until a budget runs
//! out. Panics (in the case's thread or any other, such as a spawned task)
//! and hangs are failures; a failing input is written to the corpus.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::targets::Target;

/// How long a target runs.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Stop generating cases at this moment.
    pub deadline: Option<Instant>,
    /// Stop after this many generated cases.
    pub max_cases: Option<u64>,
    /// Seed of the case generator (same seed, same cases).
    pub seed: u64,
}

impl Budget {
    /// Runs for `d`.
    pub fn for_time(d: Duration, seed: u64) -> Budget {
        Budget {
            deadline: Some(Instant::now() + d),
            max_cases: None,
            seed,
        }
    }

    /// Runs `n` cases.
    pub fn cases(n: u64, seed: u64) -> Budget {
        Budget {
            deadline: None,
            max_cases: Some(n),
            seed,
        }
    }
}

/// One failing input.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Where the input is: a corpus file that failed on replay, or the file
    /// the shrunk input was written to.
    pub input: Option<PathBuf>,
    /// Its length.
    pub len: usize,
    /// What the check said, or the panic message.
    pub reason: String,
    /// Location and stack of the panic, when it was one.
    pub panic: Option<String>,
}

/// What a run of one target did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Target name.
    pub target: &'static str,
    /// Corpus files replayed.
    pub replayed: usize,
    /// Generated cases that passed.
    pub cases: u64,
    /// Checks executed in all (replays, cases, shrinking).
    pub executions: u64,
    /// Generated cases that failed like an earlier failure (not shrunk or
    /// saved again).
    pub known_hits: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Seed used.
    pub seed: u64,
    /// Failing inputs.
    pub failures: Vec<Failure>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "{}: {} corpus inputs replayed, {} generated cases ({} executions, {:.0}/s) in {:.1} s, seed {}, {} failure(s), {} more case(s) failing like one of them",
            self.target,
            self.replayed,
            self.cases,
            self.executions,
            self.executions as f64 / secs.max(1e-9),
            secs,
            self.seed,
            self.failures.len(),
            self.known_hits
        )?;
        for fail in &self.failures {
            match &fail.input {
                Some(p) => writeln!(f, "  FAILED on {} ({} bytes)", p.display(), fail.len)?,
                None => writeln!(f, "  FAILED ({} bytes, not saved)", fail.len)?,
            }
            writeln!(f, "    {}", fail.reason)?;
            if let Some(p) = &fail.panic {
                for line in p.lines() {
                    writeln!(f, "    | {line}")?;
                }
            }
        }
        Ok(())
    }
}

thread_local! {
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
    /// The last panic of a case on this thread.
    static OWN_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}
/// Panics in threads that run no cases (tasks, threads the code started).
static FOREIGN_PANICS: AtomicU64 = AtomicU64::new(0);
static FOREIGN_LAST: Mutex<Option<String>> = Mutex::new(None);
static CAPTURE: AtomicBool = AtomicBool::new(false);

/// Threads that run cases (a test harness's threads, the binary's main).
static DRIVERS: Mutex<Vec<ThreadId>> = Mutex::new(Vec::new());

/// Installs the panic hook once. A panic inside a case, or in a thread
/// that runs no cases (a task or thread the code under test started), is
/// counted and recorded, and not printed (shrinking panics many times);
/// any other (a test's own assertion) prints as usual.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let in_case = IN_CASE.with(Cell::get);
            let me = thread::current();
            let driver = DRIVERS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&me.id());
            if !in_case && driver {
                default(info);
                return;
            }
            let mut text = format!(
                "panic in thread {:?}: {info}",
                me.name().unwrap_or("<unnamed>")
            );
            if CAPTURE.load(Ordering::SeqCst) {
                text.push_str(&format!("\n{}", std::backtrace::Backtrace::force_capture()));
            }
            if in_case {
                OWN_PANIC.with(|p| *p.borrow_mut() = Some(text));
            } else {
                FOREIGN_PANICS.fetch_add(1, Ordering::SeqCst);
                *FOREIGN_LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
            }
        }));
    });
}

/// The case running on each thread, for the watchdog.
struct Running {
    target: &'static str,
    corpus: PathBuf,
    started: Instant,
    input: Arc<Vec<u8>>,
}

static RUNNING: Mutex<Option<HashMap<ThreadId, Running>>> = Mutex::new(None);

/// Seconds one case may run before it counts as a hang
/// (`ARCHIVE_FUZZ_HANG_SECS`, default 60).
fn hang_limit() -> Duration {
    let secs = std::env::var("ARCHIVE_FUZZ_HANG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Starts the watchdog once: a case running past [`hang_limit`] is
/// written to the corpus as `hang-<hash>` and the process exits with 3.
fn start_watchdog() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let limit = hang_limit();
        thread::Builder::new()
            .name("fuzz-watchdog".into())
            .spawn(move || loop {
                thread::sleep(Duration::from_millis(500));
                let guard = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
                for run in guard.iter().flat_map(|m| m.values()) {
                    if run.started.elapsed() > limit {
                        let path = save(&run.corpus, run.target, "hang", &run.input);
                        let msg = format!(
                            "{}: HANG: a case ran for more than {} s; input ({} bytes) written to {}",
                            run.target,
                            limit.as_secs(),
                            run.input.len(),
                            path.as_deref()
                                .map(|p| p.display().to_string())
                                .unwrap_or_else(|e| format!("<not saved: {e}>"))
                        );
                        println!("{msg}");
                        eprintln!("{msg}");
                        std::process::exit(3);
                    }
                }
            })
            .expect("spawn the watchdog");
    });
}

/// Writes `input` to `<corpus>/<target>/<kind>-<hash>`.
pub fn save(corpus: &Path, target: &str, kind: &str, input: &[u8]) -> std::io::Result<PathBuf> {
    let dir = corpus.join(target);
    std::fs::create_dir_all(&dir)?;
    let hash = blake3::hash(input).to_hex();
    let path = dir.join(format!("{kind}-{}", &hash[..16]));
    std::fs::write(&path, input)?;
    Ok(path)
}

/// The corpus files of `target`, sorted by name.
pub fn corpus_files(corpus: &Path, target: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus.join(target))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Runs `target`'s check on one input: `Err` with the reason on a failed
/// property or a panic in any thread during the case.
pub fn check_one(target: &Target, corpus: &Path, input: &[u8]) -> Result<(), String> {
    install_hook();
    start_watchdog();
    let id = thread::current().id();
    {
        let mut drivers = DRIVERS.lock().unwrap_or_else(|e| e.into_inner());
        if !drivers.contains(&id) {
            drivers.push(id);
        }
    }
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(
            id,
            Running {
                target: target.name,
                corpus: corpus.to_path_buf(),
                started: Instant::now(),
                input: Arc::new(input.to_vec()),
            },
        );
    let before = FOREIGN_PANICS.load(Ordering::SeqCst);
    OWN_PANIC.with(|p| p.borrow_mut().take());
    IN_CASE.with(|c| c.set(true));
    let res = panic::catch_unwind(AssertUnwindSafe(|| (target.check)(input)));
    IN_CASE.with(|c| c.set(false));
    if let Some(m) = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        m.remove(&id);
    }
    match res {
        Err(_) => Err(format!(
            "panicked: {}",
            first_line(&OWN_PANIC.with(|p| p.borrow().clone()).unwrap_or_default())
        )),
        Ok(_) if FOREIGN_PANICS.load(Ordering::SeqCst) != before => Err(format!(
            "another thread panicked during the case: {}",
            first_line(&foreign_last())
        )),
        Ok(r) => r,
    }
}

fn foreign_last() -> String {
    FOREIGN_LAST
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

fn first_line(s: &str) -> String {
    s.lines().take(2).collect::<Vec<_>>().join(" ")
}

/// Runs `input` again with stack capture on, for the report.
fn panic_details(target: &Target, corpus: &Path, input: &[u8]) -> Option<String> {
    let before = FOREIGN_PANICS.load(Ordering::SeqCst);
    CAPTURE.store(true, Ordering::SeqCst);
    let res = check_one(target, corpus, input);
    CAPTURE.store(false, Ordering::SeqCst);
    match res {
        Err(r) if r.starts_with("panicked") => OWN_PANIC.with(|p| p.borrow().clone()),
        _ if FOREIGN_PANICS.load(Ordering::SeqCst) != before => Some(foreign_last()),
        _ => None,
    }
}

/// Generated cases per proptest run (a deadline is checked between runs).
const BATCH: u64 = 32;

/// Most distinct failures one run collects before it stops.
const MAX_FAILURES: usize = 8;

/// What makes two failures the same bug: the panic's location, or the
/// words of the failed property (values left out).
fn signature(reason: &str) -> String {
    if let Some(at) = reason.find("panicked at ") {
        let loc = &reason[at + "panicked at ".len()..];
        return loc.split(':').take(2).collect::<Vec<_>>().join(":");
    }
    reason
        .split_whitespace()
        .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .take(8)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Replays `target`'s corpus under `corpus`, then generates cases within
/// `budget`. A failing generated input is shrunk and saved; a failure
/// already seen (same [`signature`], from the corpus or earlier) counts as
/// a known hit and the run goes on looking for others.
pub fn run(target: &Target, corpus: &Path, budget: &Budget) -> Report {
    let started = Instant::now();
    let executions = Cell::new(0u64);
    let known_hits = Cell::new(0u64);
    let known: RefCell<Vec<String>> = RefCell::new(Vec::new());
    let mut report = Report {
        target: target.name,
        replayed: 0,
        cases: 0,
        executions: 0,
        known_hits: 0,
        elapsed: Duration::ZERO,
        seed: budget.seed,
        failures: Vec::new(),
    };
    let mut seeds = Vec::new();
    for path in corpus_files(corpus, target.name) {
        let Ok(input) = std::fs::read(&path) else {
            continue;
        };
        report.replayed += 1;
        executions.set(executions.get() + 1);
        if let Err(reason) = check_one(target, corpus, &input) {
            known.borrow_mut().push(signature(&reason));
            report.failures.push(Failure {
                input: Some(path.clone()),
                len: input.len(),
                panic: panic_details(target, corpus, &input),
                reason,
            });
        }
        seeds.push(input);
    }
    let strategy = (target.strategy)(seeds);
    let mut batch_no = 0u64;
    while report.failures.len() < MAX_FAILURES {
        if budget.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let left = budget
            .max_cases
            .map_or(BATCH, |m| m.saturating_sub(report.cases));
        if left == 0 {
            break;
        }
        let n = left.min(BATCH);
        let mut rng_seed = [0u8; 32];
        rng_seed[..8].copy_from_slice(&budget.seed.to_le_bytes());
        rng_seed[8..16].copy_from_slice(&batch_no.to_le_bytes());
        rng_seed[16..].copy_from_slice(&blake3::hash(target.name.as_bytes()).as_bytes()[..16]);
        batch_no += 1;
        let config = Config {
            cases: n as u32,
            failure_persistence: None,
            max_shrink_iters: 10_000,
            max_shrink_time: 120_000,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &rng_seed));
        let res = runner.run(&strategy, |input| {
            executions.set(executions.get() + 1);
            match check_one(target, corpus, &input) {
                Ok(()) => Ok(()),
                Err(reason) if known.borrow().contains(&signature(&reason)) => {
                    known_hits.set(known_hits.get() + 1);
                    Ok(())
                }
                Err(reason) => Err(TestCaseError::fail(reason)),
            }
        });
        match res {
            Ok(()) => report.cases += n,
            Err(TestError::Fail(reason, input)) => {
                known.borrow_mut().push(signature(reason.message()));
                let saved = save(corpus, target.name, "crash", &input);
                let reason = match &saved {
                    Ok(_) => reason.to_string(),
                    Err(e) => format!("{reason} (could not save the input: {e})"),
                };
                report.failures.push(Failure {
                    input: saved.ok(),
                    len: input.len(),
                    panic: panic_details(target, corpus, &input),
                    reason,
                });
            }
            Err(TestError::Abort(reason)) => {
                report.failures.push(Failure {
                    input: None,
                    len: 0,
                    reason: format!("proptest aborted: {reason}"),
                    panic: None,
                });
                break;
            }
        }
    }
    report.executions = executions.get();
    report.known_hits = known_hits.get();
    report.elapsed = started.elapsed();
    report
}
