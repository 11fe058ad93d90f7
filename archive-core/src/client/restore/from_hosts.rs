//! The last source of a restore: the archive hosts, asked in health order
//! ([`order_hosts`]): healthy ones first, a host in cooldown (after
//! `retry_count` failures in a row) last, and on a standby skipped once
//! another host answered. "Not found" is an answer, not a failure; a bad
//! copy on one host means the other host's copy. Each copy is fetched,
//! decoded and verified into a temp next to %p, then renamed into place.

use std::path::Path;

use super::fetch::{self, FetchError};
use super::verify::Check;
use super::{commit_replace, Attempt, RecoveryMode, RestoreRequest, Unavailable};
use crate::common::config::Config;
use crate::common::durable::AtomicFile;
use crate::common::error::Error;
use crate::common::log;
use crate::net::health::{self, HealthBook, HostState};
use crate::net::ssh::{self, SshSettings};

/// Orders hosts for an attempt: healthy ones first (configured order), then
/// those in cooldown, each with its state. When every host is in cooldown,
/// their counters are reset and all are healthy again: the alternative is
/// waiting for a cooldown to end while PostgreSQL asks again and again.
pub(crate) fn order_hosts(
    health: &HealthBook,
    hosts: &[String],
) -> Vec<(String, Option<HostState>)> {
    let now = health::now();
    let states: Vec<(String, HostState)> =
        hosts.iter().map(|h| (h.clone(), health.state(h))).collect();
    if !states.is_empty() && states.iter().all(|(_, s)| s.in_cooldown(now)) {
        log::warn(format!(
            "every archive host is in cooldown ({}): counters reset, trying them all",
            hosts.join(", ")
        ));
        for h in hosts {
            let _ = health.record_success(h);
        }
        return hosts.iter().map(|h| (h.clone(), None)).collect();
    }
    let (healthy, cooling): (Vec<_>, Vec<_>) =
        states.into_iter().partition(|(_, s)| !s.in_cooldown(now));
    healthy
        .into_iter()
        .map(|(h, _)| (h, None))
        .chain(cooling.into_iter().map(|(h, s)| (h, Some(s))))
        .collect()
}

/// Why no host's copy was put at %p.
pub(super) enum HostsError {
    /// A host has a good copy, archived less than DELAY-SECONDS ago.
    TooYoung { mtime: i64, seg_size: Option<u64> },
    /// No good copy (see [`Unavailable`]).
    Unavailable(Unavailable),
}

impl From<Error> for HostsError {
    fn from(e: Error) -> Self {
        HostsError::Unavailable(Unavailable::Local(e))
    }
}

/// Tries the hosts in health order until one delivers a good copy.
pub(super) async fn from_hosts(
    cfg: &Config,
    req: &RestoreRequest,
    check: &Check,
    dest: &Path,
    not_after: Option<i64>,
    on_found: &dyn Fn(i64),
) -> std::result::Result<(String, fetch::Fetched), HostsError> {
    let health = HealthBook::open(&cfg.state_dir().join("health"))?;
    let ssh = SshSettings::from_config(cfg);
    let name = check.name.as_str();
    let mut attempts: Vec<(String, Attempt)> = Vec::new();
    for (host, cooling) in order_hosts(&health, &req.hosts) {
        // In archive recovery a "not available" ends recovery (and a
        // promotion may follow with data missing): a host in cooldown is
        // still asked, only later. A standby just asks again later.
        let may_skip = req.mode != RecoveryMode::ArchiveRecovery;
        if let Some(st) = cooling.as_ref().filter(|_| may_skip) {
            let answered = attempts
                .iter()
                .any(|(_, a)| matches!(a, Attempt::NotFound | Attempt::Bad(_)));
            // A standby retries anyway: a host in cooldown is not worth its
            // timeout once another answered. Archive recovery asks it all
            // the same: it may be back, and only its answer can tell "end
            // of the archive" from "stop, WAL may be missing".
            if answered && req.mode != RecoveryMode::ArchiveRecovery {
                attempts.push((
                    host,
                    Attempt::Skipped(format!(
                        "in cooldown for {} s after {} failures: {}",
                        st.cooldown_until - health::now(),
                        st.failures,
                        st.last_error
                    )),
                ));
                continue;
            }
        }
        let mut ch = match ssh::connect(&ssh, &host).await {
            Ok(c) => c,
            Err(e) => {
                host_failed(cfg, &health, &host, name, &e);
                attempts.push((host, Attempt::Failed(e.to_string())));
                continue;
            }
        };
        let out = AtomicFile::create(dest)?;
        let res = fetch::fetch(&mut ch, &req.src_dir, check, out, on_found).await;
        let usable = res
            .as_ref()
            .map_or_else(FetchError::channel_usable, |_| true);
        match res {
            Ok((out, fetched)) => {
                let _ = health.record_success(&host);
                ch.leave().await;
                if not_after.is_some_and(|t| fetched.mtime > t) {
                    // Verified, but not to be handed over yet (the temp goes).
                    drop(out);
                    return Err(HostsError::TooYoung {
                        mtime: fetched.mtime,
                        seg_size: fetched.verified.seg_size,
                    });
                }
                commit_replace(out, dest)?;
                return Ok((host, fetched));
            }
            Err(FetchError::NotFound) => {
                let _ = health.record_success(&host);
                attempts.push((host, Attempt::NotFound));
            }
            Err(FetchError::Bad(m)) => {
                let _ = health.record_success(&host);
                log::error(format!(
                    "the copy of {name} on {host} is bad: {m}; trying the other host"
                ));
                attempts.push((host, Attempt::Bad(m)));
            }
            Err(FetchError::Refused(e)) => {
                log::error(format!("{name}: {host} refused the request: {e}"));
                attempts.push((host, Attempt::Failed(e.to_string())));
            }
            Err(FetchError::Host(e)) => {
                host_failed(cfg, &health, &host, name, &e);
                attempts.push((host, Attempt::Failed(e.to_string())));
            }
            Err(FetchError::Local(e)) => {
                ch.leave().await;
                return Err(e.into());
            }
        }
        if usable {
            ch.leave().await;
        }
    }
    if attempts.iter().all(|(_, a)| !a.is_failure()) {
        Err(HostsError::Unavailable(Unavailable::NotFound))
    } else {
        Err(HostsError::Unavailable(Unavailable::Failed(attempts)))
    }
}

/// Records a host's failure in the health book and logs it (with its
/// cooldown, once it began).
fn host_failed(cfg: &Config, health: &HealthBook, host: &str, name: &str, e: &Error) {
    let msg = e.to_string();
    let cooling = match health.record_failure(host, cfg.retry_count, cfg.cooldown, &msg) {
        Ok(st) if st.in_cooldown(health::now()) => format!(
            "; {host} is tried last for {} s after {} consecutive failures",
            st.cooldown_until - health::now(),
            st.failures
        ),
        _ => String::new(),
    };
    log::warn(format!(
        "fetching {name} from {host} failed: {msg}{cooling}"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_order_puts_cooling_hosts_last_and_resets_when_all_cool() {
        let d = tempfile::tempdir().unwrap();
        let book = HealthBook::open(d.path()).unwrap();
        let hosts: Vec<String> = vec!["arch1".into(), "arch2".into()];
        let names = |v: Vec<(String, Option<HostState>)>| {
            v.into_iter()
                .map(|(h, s)| (h, s.is_some()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(order_hosts(&book, &hosts)),
            [("arch1".into(), false), ("arch2".into(), false)]
        );
        book.record_failure("arch1", 1, 600, "down").unwrap();
        assert_eq!(
            names(order_hosts(&book, &hosts)),
            [("arch2".into(), false), ("arch1".into(), true)]
        );
        book.record_failure("arch2", 1, 600, "down").unwrap();
        // Both cooling: counters reset, configured order, nobody skipped.
        assert_eq!(
            names(order_hosts(&book, &hosts)),
            [("arch1".into(), false), ("arch2".into(), false)]
        );
        assert_eq!(book.state("arch1"), HostState::default());
        assert_eq!(book.state("arch2"), HostState::default());
    }
}
