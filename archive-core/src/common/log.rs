//! Logging through `tracing`: one line per event, naming the program.
//!
//! PostgreSQL copies archive_command's and restore_command's stderr into its
//! own log, so archive-cmd and restore-cmd log at `warn` by default (problems
//! only, not a line per segment); the cron and daemon tools at `info`
//! (`log_level`). The destination (`log_destination`) is stderr (the
//! default), a file (appended to), or journald. A line on stderr or in a file
//! carries its time, the program, its pid and its level; journald records
//! those itself.
//!
//! The rest of the library calls [`info`], [`warn`], [`error`] and
//! [`debug`]; they are `tracing` events, so the subscriber set up here is
//! the one place that decides what is written where.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Deserialize;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, Registry};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Detail for a developer or a puzzled operator.
    Debug,
    /// Normal progress.
    Info,
    /// Something an operator should look at; the work went on.
    Warning,
    /// The work failed.
    Error,
}

/// `log_level`: the least severe lines written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and warnings (archive-cmd's and restore-cmd's default).
    Warn,
    /// Progress too (the other programs' default).
    Info,
    /// Everything.
    Debug,
}

impl LogLevel {
    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
        }
    }
}

/// `log_destination`: "stderr", "journald", or a file's absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard error (PostgreSQL's log for archive_command/restore_command).
    Stderr,
    /// The systemd journal.
    Journald,
    /// Appended to this file.
    File(PathBuf),
}

impl Destination {
    /// Parses a `log_destination` value.
    pub fn parse(s: &str) -> Result<Destination, String> {
        match s {
            "stderr" => Ok(Destination::Stderr),
            "journald" => Ok(Destination::Journald),
            p if p.starts_with('/') => Ok(Destination::File(PathBuf::from(p))),
            other => Err(format!(
                "log_destination {other:?}: expected \"stderr\", \"journald\" or an absolute file path"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Destination::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Stderr => f.write_str("stderr"),
            Destination::Journald => f.write_str("journald"),
            Destination::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Where lines go now; changed once the configuration is read.
enum Sink {
    Stderr,
    File(File),
    /// journald's layer writes; the line formatter writes nothing.
    Nowhere,
}

/// The subscriber below the journald layer: the registry and the level.
type Leveled = Layered<reload::Layer<LevelFilter, Registry>, Registry>;

struct State {
    program: String,
    sink: Mutex<Sink>,
    level: reload::Handle<LevelFilter, Registry>,
    journald: reload::Handle<Option<tracing_journald::Layer>, Leveled>,
}

static STATE: OnceLock<Arc<State>> = OnceLock::new();

/// Formats `<time> <program>[<pid>] <LEVEL>: <message>`; the time is left
/// out for journald, which has its own.
struct LineFormat {
    state: Arc<State>,
}

fn tag(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3f UTC");
        write!(
            w,
            "{now} {}[{}] {}: ",
            self.state.program,
            std::process::id(),
            tag(event.metadata().level())
        )?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// The formatter's writer: whatever the sink is at the time of the line.
/// tracing-subscriber formats a whole line first and writes it with one
/// call, so concurrent processes do not interleave lines.
struct SinkWriter {
    state: Arc<State>,
}

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut sink = self.state.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::Stderr => io::stderr().lock().write_all(buf)?,
            Sink::File(f) => f.write_all(buf)?,
            Sink::Nowhere => {}
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct MakeSink {
    state: Arc<State>,
}

impl<'a> MakeWriter<'a> for MakeSink {
    type Writer = SinkWriter;
    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter {
            state: self.state.clone(),
        }
    }
}

/// Names the program in every line and logs at `default` to stderr until
/// [`configure`] applies the configuration. Called once, first thing in
/// `main`; a second call changes nothing.
pub fn init(program: &str, default: LogLevel) {
    let (level, level_handle) = reload::Layer::new(default.filter());
    let (journald, journald_handle) = reload::Layer::new(None::<tracing_journald::Layer>);
    let state = Arc::new(State {
        program: program.to_string(),
        sink: Mutex::new(Sink::Stderr),
        level: level_handle,
        journald: journald_handle,
    });
    if STATE.set(state.clone()).is_err() {
        return;
    }
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .event_format(LineFormat {
            state: state.clone(),
        })
        .with_writer(MakeSink { state });
    let subscriber = Registry::default().with(level).with(journald).with(lines);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Applies `log_level` (else `quiet`: warn; else the program's default) and
/// `log_destination`. A destination that cannot be opened is reported on
/// stderr, which then stays the destination.
pub fn configure(level: Option<LogLevel>, quiet: bool, destination: &Destination) {
    let Some(state) = STATE.get() else {
        return;
    };
    let level = level.or(quiet.then_some(LogLevel::Warn));
    if let Some(l) = level {
        let _ = state.level.modify(|f| *f = l.filter());
    }
    let sink = match destination {
        Destination::Stderr => Sink::Stderr,
        Destination::File(p) => match open_log_file(p) {
            Ok(f) => Sink::File(f),
            Err(e) => {
                error(format!(
                    "cannot open the log file {}: {e}; logging to stderr instead (check the directory and its owner)",
                    p.display()
                ));
                Sink::Stderr
            }
        },
        Destination::Journald => match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_syslog_identifier(state.program.clone());
                let _ = state.journald.modify(|j| *j = Some(layer));
                Sink::Nowhere
            }
            Err(e) => {
                error(format!(
                    "cannot reach journald: {e}; logging to stderr instead"
                ));
                Sink::Stderr
            }
        },
    };
    *state.sink.lock().unwrap_or_else(|e| e.into_inner()) = sink;
}

fn open_log_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Writes one event; newlines inside the message are folded so one event
/// stays one line.
pub fn log(level: Severity, message: &str) {
    let message = message.replace(['\n', '\r'], " | ");
    match level {
        Severity::Debug => tracing::debug!("{message}"),
        Severity::Info => tracing::info!("{message}"),
        Severity::Warning => tracing::warn!("{message}"),
        Severity::Error => tracing::error!("{message}"),
    }
}

/// Logs at DEBUG.
pub fn debug(message: impl AsRef<str>) {
    log(Severity::Debug, message.as_ref());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_a_relative_path_is_refused() {
        assert_eq!(Destination::parse("stderr"), Ok(Destination::Stderr));
        assert_eq!(Destination::parse("journald"), Ok(Destination::Journald));
        assert_eq!(
            Destination::parse("/var/log/pgarchive/base-backup.log"),
            Ok(Destination::File(
                "/var/log/pgarchive/base-backup.log".into()
            ))
        );
        let e = Destination::parse("base-backup.log").unwrap_err();
        assert!(e.contains("an absolute file path"), "{e}");
    }
}
