//! archive-core: everything the suite's binaries share, in five layers.
//! Each layer imports only the layers listed before it (ARCHITECTURE.md at
//! the repository root is the map; `tests/layers.rs` checks the rule):
//!
//! 1. [`common`]: WAL names, page headers, codecs, durable files, locks,
//!    configuration, errors and exit codes, logging.
//! 2. [`net`]: ssh masters and channels, the wire protocol, host health,
//!    the backup_queue database.
//! 3. [`server`]: what `archive-remote-cmd serve` runs: requests, the store,
//!    owed segments, backup directories.
//! 4. [`client`]: one module per program (archive-cmd, restore-cmd,
//!    wal-sync, wal-cleanup, restore-backup, base-backup).
//! 5. [`status`]: archive-status: collect, check and render a report.
//!
//! Architecture invariant: this crate never prints to stdout and never exits
//! the process; binaries end through [`common::cli::exit`].

pub mod client;
pub mod common;
pub mod net;
pub mod server;
pub mod status;

pub use common::error::{Error, Result};
