//! Talking to other machines: ssh masters and channels to
//! `archive-remote-cmd serve` ([`ssh`]), the framed protocol they speak
//! ([`wire`]), per-host failure counters and cooldowns ([`health`]), and the
//! `backup_queue` database ([`queue`]).
//!
//! Invariant: imports only `common`; never touches an archive's files.

pub mod health;
pub mod queue;
pub(crate) mod ssh;
pub(crate) mod wire;
