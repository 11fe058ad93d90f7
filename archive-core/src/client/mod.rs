//! One module per program that drives the archive servers:
//! archive-cmd ([`archive`]), restore-cmd ([`restore`]), wal-sync
//! ([`sync`]), wal-cleanup ([`cleanup`]), restore-backup
//! ([`restore_backup`]), base-backup ([`base_backup`]) and
//! `archive-remote-cmd verify` ([`verify`]).
//!
//! Invariant: imports `common`, `net` and `server` (the tools that run on an
//! archive server use its store and backup directories); never `status`.
//! The binaries call these modules and nothing else does.

pub mod archive;
pub mod base_backup;
pub mod cleanup;
pub mod restore;
pub mod restore_backup;
pub mod setup_check;
pub mod sync;
pub mod verify;
