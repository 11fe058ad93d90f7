//! The bottom layer: what every other layer uses and nothing here knows
//! about hosts, servers or programs. WAL names and page headers, codecs,
//! crash-safe files and locks, configuration, errors and exit codes,
//! logging, process-level primitives (detaching, priorities), and what every
//! binary's `main` does around its work.
//!
//! Invariant: imports nothing from `net`, `server`, `client` or `status`.

pub mod cli;
pub mod codec;
pub mod config;
pub(crate) mod durable;
pub mod error;
pub(crate) mod lock;
pub mod log;
pub mod names;
pub mod page_header;
pub mod pg_programs;
pub(crate) mod process;
pub mod progress;
pub mod wal;
