//! `archive-fuzz`: runs the fuzz targets (see the library's documentation).
//!
//! ```text
//! archive-fuzz run [--seconds N | --cases N] [--seed N] [--corpus DIR] [TARGET...]
//! archive-fuzz replay TARGET FILE...
//! archive-fuzz seed [--corpus DIR]
//! archive-fuzz list
//! ```
//!
//! `run` replays each target's corpus, then generates cases for N seconds
//! (default 60) or N cases; it exits 1 when any target failed, naming the
//! file each failing input was written to. `seed` writes the targets' seed
//! inputs into the corpus.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use archive_fuzz::{all, by_name, driver, Budget, Target};

fn usage() -> ExitCode {
    eprintln!(
        "usage: archive-fuzz run [--seconds N | --cases N] [--seed N] [--corpus DIR] [TARGET...]\n\
         \x20      archive-fuzz replay TARGET FILE...\n\
         \x20      archive-fuzz seed [--corpus DIR]\n\
         \x20      archive-fuzz list"
    );
    ExitCode::from(2)
}

fn default_corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        return usage();
    };
    let mut corpus = default_corpus();
    let mut seconds = None;
    let mut cases = None;
    let mut seed = None;
    let mut free = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> Option<u64> {
            let v = it.next().and_then(|s| s.parse().ok());
            if v.is_none() {
                eprintln!("{what} needs a number");
            }
            v
        };
        match a.as_str() {
            "--seconds" => match num("--seconds") {
                Some(v) => seconds = Some(v),
                None => return usage(),
            },
            "--cases" => match num("--cases") {
                Some(v) => cases = Some(v),
                None => return usage(),
            },
            "--seed" => match num("--seed") {
                Some(v) => seed = Some(v),
                None => return usage(),
            },
            "--corpus" => match it.next() {
                Some(p) => corpus = PathBuf::from(p),
                None => return usage(),
            },
            _ => free.push(a.clone()),
        }
    }
    let targets = |names: &[String]| -> Option<Vec<&'static Target>> {
        if names.is_empty() {
            return Some(all().to_vec());
        }
        names
            .iter()
            .map(|n| {
                let t = by_name(n);
                if t.is_none() {
                    eprintln!("no target {n:?}; try archive-fuzz list");
                }
                t
            })
            .collect()
    };
    match cmd.as_str() {
        "list" => {
            for t in all() {
                println!("{:12} {}", t.name, t.what);
            }
            ExitCode::SUCCESS
        }
        "seed" => {
            for t in all() {
                let dir = corpus.join(t.name);
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    eprintln!("{}: {e}", dir.display());
                    return ExitCode::FAILURE;
                }
                let seeds = (t.seeds)();
                for (name, bytes) in &seeds {
                    if let Err(e) = std::fs::write(dir.join(format!("seed-{name}")), bytes) {
                        eprintln!("{}: {e}", dir.display());
                        return ExitCode::FAILURE;
                    }
                }
                println!("{}: {} seeds in {}", t.name, seeds.len(), dir.display());
            }
            ExitCode::SUCCESS
        }
        "replay" => {
            let Some((name, files)) = free.split_first() else {
                return usage();
            };
            let Some(t) = by_name(name) else {
                eprintln!("no target {name:?}");
                return ExitCode::from(2);
            };
            let mut failed = false;
            for f in files {
                let input = match std::fs::read(f) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!("{f}: {e}");
                        return ExitCode::from(2);
                    }
                };
                match driver::check_one(t, &corpus, &input) {
                    Ok(()) => println!("{f}: ok"),
                    Err(e) => {
                        failed = true;
                        println!("{f}: FAILED: {e}");
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        "run" => {
            let Some(targets) = targets(&free) else {
                return ExitCode::from(2);
            };
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
            });
            let mut failed = 0;
            for t in targets {
                let budget = match cases {
                    Some(n) => Budget::cases(n, seed),
                    None => Budget::for_time(Duration::from_secs(seconds.unwrap_or(60)), seed),
                };
                let report = driver::run(t, &corpus, &budget);
                print!("{report}");
                failed += report.failures.len();
            }
            if failed > 0 {
                println!(
                    "{failed} failure(s); failing inputs are in {}",
                    corpus.display()
                );
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => usage(),
    }
}
