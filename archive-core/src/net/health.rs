//! Host health: consecutive-failure counters and cooldowns that survive
//! between invocations (every archive_command is a new process), crashes
//! and concurrent callers.
//!
//! Rules (fixing Archive 2.0's faults):
//! - a success resets the counter, so failures spread over days never add up;
//! - after `retry_count` consecutive failures a host is in cooldown for
//!   `cooldown` seconds: callers try it last, not first, so they do not pay
//!   its timeout while another host works;
//! - the counter only decides the order: a host in cooldown is still tried
//!   when every other host failed.
//!
//! One small JSON file per host, replaced atomically under an exclusive
//! `flock`, so concurrent read-modify-write cycles never lose an update.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::common::durable;
use crate::common::error::Result;
use crate::common::lock;

/// What is known about one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// Consecutive failures since the last success.
    pub failures: u32,
    /// Unix time until which the host is in cooldown (0: none).
    pub cooldown_until: i64,
    /// Unix time of the last failure.
    pub last_failure: i64,
    /// The last failure's message.
    pub last_error: String,
}

impl HostState {
    /// True while the host should be tried last.
    pub fn in_cooldown(&self, now: i64) -> bool {
        now < self.cooldown_until
    }
}

/// The health records kept in one directory.
#[derive(Debug, Clone)]
pub struct HealthBook {
    dir: PathBuf,
}

/// Current Unix time in seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl HealthBook {
    /// Opens (creating) the record directory.
    pub fn open(dir: &Path) -> Result<Self> {
        durable::create_dir_all(dir)?;
        Ok(HealthBook {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{host}.json"))
    }

    /// Reads a host's state; a missing or unreadable record is a healthy host.
    pub fn state(&self, host: &str) -> HostState {
        std::fs::read(self.path(host))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn lock(&self, host: &str) -> Result<File> {
        let path = self.dir.join(format!("{host}.lock"));
        let f = lock::open(&path)?;
        lock::exclusive(&f, &path)?;
        Ok(f)
    }

    fn update(&self, host: &str, f: impl FnOnce(&mut HostState)) -> Result<HostState> {
        let _guard = self.lock(host)?;
        let mut st = self.state(host);
        f(&mut st);
        let bytes = serde_json::to_vec(&st).expect("serializable");
        durable::write_replace(&self.path(host), &bytes)?;
        Ok(st)
    }

    /// Records a success: the counter and any cooldown are cleared. Costs
    /// nothing when the host was already healthy (the common case).
    pub fn record_success(&self, host: &str) -> Result<()> {
        if self.state(host) == HostState::default() {
            return Ok(());
        }
        self.update(host, |st| *st = HostState::default()).map(drop)
    }

    /// Records a failure; at `retry_count` consecutive failures the host
    /// enters a cooldown of `cooldown` seconds.
    pub fn record_failure(
        &self,
        host: &str,
        retry_count: u32,
        cooldown: u64,
        error: &str,
    ) -> Result<HostState> {
        let t = now();
        self.update(host, |st| {
            st.failures = st.failures.saturating_add(1);
            st.last_failure = t;
            st.last_error = error.chars().take(500).collect();
            if st.failures >= retry_count {
                st.cooldown_until = t + cooldown as i64;
            }
        })
    }

    /// Orders hosts for an attempt: those not in cooldown first (keeping the
    /// configured order), then those in cooldown. When every host is in
    /// cooldown the order is the configured one: there is nothing better.
    pub fn order<'a>(&self, hosts: &'a [String]) -> Vec<&'a str> {
        let t = now();
        let (healthy, cooling): (Vec<&str>, Vec<&str>) = hosts
            .iter()
            .map(String::as_str)
            .partition(|h| !self.state(h).in_cooldown(t));
        healthy.into_iter().chain(cooling).collect()
    }

    /// All records, for monitoring.
    pub fn all(&self) -> Vec<(String, HostState)> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(host) = name.strip_suffix(".json") {
                    out.push((host.to_string(), self.state(host)));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        vec!["arch1".into(), "arch2".into()]
    }

    #[test]
    fn cooldown_after_retry_count_failures_then_success_resets() {
        let dir = tempfile::tempdir().unwrap();
        let book = HealthBook::open(dir.path()).unwrap();
        for _ in 0..5 {
            book.record_failure("arch1", 6, 600, "refused").unwrap();
        }
        assert_eq!(book.order(&hosts()), ["arch1", "arch2"], "5 < retry_count");
        let st = book.record_failure("arch1", 6, 600, "refused").unwrap();
        assert!(st.in_cooldown(now()));
        assert_eq!(book.order(&hosts()), ["arch2", "arch1"]);
        book.record_success("arch1").unwrap();
        assert_eq!(book.state("arch1"), HostState::default());
        assert_eq!(book.order(&hosts()), ["arch1", "arch2"]);
    }

    #[test]
    fn expired_cooldown_puts_host_first_again() {
        let dir = tempfile::tempdir().unwrap();
        let book = HealthBook::open(dir.path()).unwrap();
        book.record_failure("arch1", 1, 0, "x").unwrap();
        assert_eq!(book.order(&hosts()), ["arch1", "arch2"]);
    }

    #[test]
    fn concurrent_failures_are_all_counted() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let book = HealthBook::open(&d).unwrap();
                    for _ in 0..10 {
                        book.record_failure("arch1", 1000, 1, "x").unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let book = HealthBook::open(dir.path()).unwrap();
        assert_eq!(book.state("arch1").failures, 80);
    }
}
