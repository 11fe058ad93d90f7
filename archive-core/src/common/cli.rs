//! What every binary does around its work: load the configuration, start
//! the async runtime, and turn the outcome into one log line and an exit
//! code. Kept here so the binaries stay a page of argument parsing.

use std::path::Path;
use std::process::ExitCode;

use crate::common::config::Config;
use crate::common::error::{Error, Result};
use crate::common::log;

/// Loads the configuration (file, then `PGARCHIVE_*`, then `--set`) and
/// applies its logging settings.
pub fn load_config(path: Option<&Path>, overrides: &[String]) -> Result<Config> {
    let cfg = Config::load(path, overrides)?;
    log::set_quiet(cfg.quiet);
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

/// The process exit code for `outcome`: its code on success; on an error,
/// the error logged (prefixed with `context` when given) and its code.
pub fn exit(outcome: Result<i32>, context: Option<&str>) -> ExitCode {
    let code = match outcome {
        Ok(code) => code,
        Err(e) => {
            match context {
                Some(c) => log::error(format!("{c}: {e}")),
                None => log::error(e.to_string()),
            }
            e.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
