//! The library's error type, and the one trait through which every failure
//! of the suite says its process exit code ([`Failure`]), so a binary never
//! guesses it: `main` ends through [`crate::common::cli::exit`].
//!
//! Exit codes shared by all binaries (documented in every `--help`):
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | not done, safe to retry (host unreachable, timeout, I/O error) |
//! | 2 | bad usage or configuration |
//! | 3 | refused: the input is invalid (name, size, header, other cluster) |
//! | 4 | conflict: a different file with the same name is already stored |
//! | 5 | not found |
//! | 6 | damage found (`archive-remote-cmd verify`: a stored file or backup is damaged or missing) |
//!
//! All codes stay below 126: PostgreSQL treats higher codes (and death by a
//! signal) from archive_command as fatal for the archiver. The one exception
//! is restore-cmd's deliberate 200 (see `client::restore`), and
//! archive-status's check uses the Nagios codes 0-3 as successes.

use std::path::PathBuf;

use crate::common::log;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: not done, safe to retry.
pub const EXIT_RETRY: i32 = 1;
/// Exit code: bad usage or configuration.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the input was refused as invalid.
pub const EXIT_REFUSED: i32 = 3;
/// Exit code: a different file with the same name is already stored.
pub const EXIT_CONFLICT: i32 = 4;
/// Exit code: the requested file is not stored.
pub const EXIT_NOT_FOUND: i32 = 5;
/// Exit code: a check ran and found damage (not a failure to run).
pub const EXIT_DAMAGED: i32 = 6;

/// Why an operation failed, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration or command line.
    #[error("{0}")]
    Usage(String),
    /// The input is invalid and retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// A different file is already stored under this name.
    #[error("{0}")]
    Conflict(String),
    /// The file is not stored.
    #[error("{0}")]
    NotFound(String),
    /// A host could not be reached or did not answer in time.
    #[error("host {host}: {message}")]
    Host { host: String, message: String },
    /// A local file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// A failure that ends a program: its exit code and how it is reported.
/// Implemented by every error type a binary can end with.
pub trait Failure: std::fmt::Display {
    /// The process exit code.
    fn exit_code(&self) -> i32;

    /// Reports the failure once, as the program ends: an ERROR line,
    /// prefixed with `context` (e.g. the WAL file) when given. A program for
    /// which some failures are routine overrides this to keep them quiet.
    fn report(&self, context: Option<&str>) {
        match context {
            Some(c) => log::error(format!("{c}: {self}")),
            None => log::error(self.to_string()),
        }
    }
}

impl Failure for Error {
    fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Refused(_) => EXIT_REFUSED,
            Error::Conflict(_) => EXIT_CONFLICT,
            Error::NotFound(_) => EXIT_NOT_FOUND,
            Error::Host { .. } | Error::Io { .. } | Error::Protocol(_) => EXIT_RETRY,
        }
    }
}

impl Error {
    /// Short helper for [`Error::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Short helper for [`Error::Host`].
    pub fn host(host: &str, message: impl Into<String>) -> Self {
        Error::Host {
            host: host.to_string(),
            message: message.into(),
        }
    }

    /// True when the failure says something about the host's health (it
    /// counts toward its failure counter), rather than about the input.
    pub fn is_host_failure(&self) -> bool {
        matches!(
            self,
            Error::Host { .. } | Error::Io { .. } | Error::Protocol(_)
        )
    }
}
