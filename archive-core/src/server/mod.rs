//! What runs on an archive server: the request loop of
//! `archive-remote-cmd serve` ([`serve`]), the archive directory and its
//! checks ([`store`]), segments owed to the peer server ([`owed`]), the
//! backup directories ([`backups`]) and what the server reports about them
//! ([`report`]).
//!
//! Invariant: imports only `common` and `net`; every request is validated
//! before it touches the disk.

pub mod backups;
pub(crate) mod owed;
pub mod report;
pub mod serve;
pub mod store;
