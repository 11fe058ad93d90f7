//! One line per event on stderr. PostgreSQL copies archive_command's and
//! restore_command's stderr into its own log, so each line carries the
//! time, the program, the level and a message that names segment and host.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static PROGRAM: OnceLock<String> = OnceLock::new();
static QUIET: AtomicBool = AtomicBool::new(false);

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Normal progress (suppressed by `quiet`).
    Info,
    /// Something an operator should look at; the work went on.
    Warning,
    /// The work failed.
    Error,
}

/// Names the program in every line and sets quiet mode.
pub fn init(program: &str, quiet: bool) {
    let _ = PROGRAM.set(program.to_string());
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Changes quiet mode once the configuration is known.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Writes one line; newlines inside the message are folded so one event
/// stays one line.
pub fn log(level: Severity, message: &str) {
    if level == Severity::Info && QUIET.load(Ordering::Relaxed) {
        return;
    }
    let tag = match level {
        Severity::Info => "INFO",
        Severity::Warning => "WARNING",
        Severity::Error => "ERROR",
    };
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3f UTC");
    let program = PROGRAM.get().map(String::as_str).unwrap_or("pgarchive");
    let message = message.replace(['\n', '\r'], " | ");
    let line = format!("{now} {program}[{}] {tag}: {message}\n", std::process::id());
    // One write call, so concurrent processes do not interleave lines.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs at INFO.
pub fn info(message: impl AsRef<str>) {
    log(Severity::Info, message.as_ref());
}

/// Logs at WARNING.
pub fn warn(message: impl AsRef<str>) {
    log(Severity::Warning, message.as_ref());
}

/// Logs at ERROR.
pub fn error(message: impl AsRef<str>) {
    log(Severity::Error, message.as_ref());
}
