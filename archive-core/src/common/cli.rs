//! What every binary does around its work: parsing its arguments
//! ([`parse`], which also writes its man pages and completions when asked),
//! the `--config`/`--set` options, loading the configuration, starting the
//! async runtime, and ending the process through [`exit`], the one place an
//! outcome becomes an exit code. Kept here so the binaries stay a page of
//! argument parsing.

mod docs;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::common::config::Config;
use crate::common::error::{Error, Failure, Result};
use crate::common::log;

/// The hidden first argument that makes [`parse`] write the program's man
/// pages and completions: `PROGRAM --generate-docs DIR` (what
/// scripts/build-deb.sh runs). Read before clap, so it appears in no
/// `--help`, no completion and no man page, and needs no other argument.
pub const GENERATE_DOCS: &str = "--generate-docs";

/// Every binary's `Args::parse()`: clap's parse, plus the hidden
/// [`GENERATE_DOCS`]. Like clap's own `--help`, `--version` and usage errors,
/// generating ends the process here (0 when written, else the error's code), before
/// any work: the one exit outside [`exit`].
pub fn parse<A: clap::Parser>() -> A {
    generate_docs_if_asked::<A>();
    A::parse()
}

/// [`parse`] for a program that maps clap's errors itself (restore-cmd).
pub fn try_parse<A: clap::Parser>() -> std::result::Result<A, clap::Error> {
    generate_docs_if_asked::<A>();
    A::try_parse()
}

fn generate_docs_if_asked<A: clap::CommandFactory>() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.len() != 3 || argv[1] != GENERATE_DOCS {
        return;
    }
    match docs::generate(A::command(), Path::new(&argv[2])) {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            e.report(Some(GENERATE_DOCS));
            std::process::exit(e.exit_code())
        }
    }
}

/// The configuration options every binary takes (flattened into its
/// arguments; accepted before or after a subcommand).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// Config file (default: $PGARCHIVE_CONFIG, else /etc/pgarchive.toml).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set retry_count=3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub set: Vec<String>,
}

impl ConfigArgs {
    /// Loads the configuration (file, then `PGARCHIVE_*`, then `--set`) and
    /// applies its logging settings.
    pub fn load(&self) -> Result<Config> {
        load_config(self.config.as_deref(), &self.set)
    }

    /// The same options as command-line words, for a child process.
    pub fn to_command_line(&self) -> Vec<OsString> {
        let mut words: Vec<OsString> = Vec::new();
        if let Some(c) = &self.config {
            words.push("--config".into());
            words.push(c.into());
        }
        for s in &self.set {
            words.push("--set".into());
            words.push(s.into());
        }
        words
    }
}

/// Loads the configuration (file, then `PGARCHIVE_*`, then `--set`) and
/// applies its logging settings.
pub fn load_config(path: Option<&Path>, overrides: &[String]) -> Result<Config> {
    let cfg = Config::load(path, overrides)?;
    log::configure(cfg.log_level, cfg.quiet, &cfg.log_destination);
    Ok(cfg)
}

/// A single-threaded runtime: the tools wait on the network, not the CPU.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the runtime: {e}")))
}

/// A runtime using every core, for work that verifies what it copies.
pub fn runtime_all_cores() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the runtime: {e}")))
}

/// How every binary's `main` ends: a success carries its exit code (0, or
/// a code that is a result, like a Nagios level); a failure is reported
/// once (see [`Failure::report`], prefixed with `context` when given) and
/// exits with its own code.
pub fn exit<F: Failure>(outcome: std::result::Result<i32, F>, context: Option<&str>) -> ExitCode {
    let code = match outcome {
        Ok(code) => code,
        Err(failure) => {
            failure.report(context);
            failure.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
