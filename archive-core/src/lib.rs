//! archive-core: everything the suite's binaries share.
//!
//! One module per concept, so a behaviour can be found from the file name:
//! WAL names ([`wal`]), the WAL page header ([`page_header`]), compression
//! ([`codec`]), crash-safe files ([`durable`]), failure counters and cooldowns
//! ([`health`]), configuration ([`config`]), one-line logging ([`log`]), the
//! ssh transport ([`transport`]), the wire protocol between the tools and
//! `archive-remote-cmd` ([`protocol`]), the archive server's storage
//! ([`store`]), segments owed to the peer server ([`owed`]) and the primary's
//! push logic ([`push`]); what every binary's main does ([`cli`]).
//!
//! Architecture invariant: this crate never prints to stdout and never exits
//! the process; binaries map [`error::Error`] to exit codes in one place.

pub mod backups;
pub mod cleanup;
pub mod cli;
pub mod codec;
pub mod config;
pub mod durable;
pub mod error;
pub mod health;
pub mod lock;
pub mod log;
pub mod owed;
pub mod page_header;
pub mod pitr;
pub mod protocol;
pub mod push;
pub mod restore;
pub mod server;
pub mod status;
pub mod store;
pub mod sync;
pub mod transport;
pub mod wal;

pub use error::{Error, Result};
