//! The thresholds that give a finding its level: a [`Limit`] per count,
//! with the defaults of `archive-status check`.

use serde::{Deserialize, Serialize};

use super::Level;

/// A count's thresholds: WARNING from `warn`, CRITICAL from `crit` (0: off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// WARNING at this count or more (0: never).
    pub warn: u64,
    /// CRITICAL at this count or more (0: never).
    pub crit: u64,
}

impl Limit {
    /// The level of `n`.
    pub fn level(&self, n: u64) -> Level {
        if self.crit > 0 && n >= self.crit {
            Level::Critical
        } else if self.warn > 0 && n >= self.warn {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

/// Every threshold, with the defaults of `archive-status check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Age of a server's newest segment, seconds (1 h / 6 h).
    pub newest_age: Limit,
    /// A server's last backup older than this many times its periodicity:
    /// WARNING (1.25); 0: off.
    pub backup_age_warn_factor: f64,
    /// ... CRITICAL (2.0); 0: off.
    pub backup_age_crit_factor: f64,
    /// Periodicity in days when the queue does not say (4).
    pub periodicity_days: u32,
    /// Segments missing on every server in a chain (CRITICAL from 1).
    pub gaps: Limit,
    /// Same-named files with different content (CRITICAL from 1).
    pub divergent: Limit,
    /// Same-named files of different size not compared (WARNING from 1).
    pub unverified: Limit,
    /// Files only one server holds (WARNING from 1).
    pub one_sided: Limit,
    /// Segments dropped by the push queue limit, unresolved (CRITICAL from 1).
    pub dropped: Limit,
    /// Failed, uncleared backup tasks (CRITICAL from 1).
    pub failed_tasks: Limit,
    /// Tasks running longer than the stuck threshold (WARNING from 1).
    pub stuck_tasks: Limit,
    /// Files a server owes its peer (WARNING from 10).
    pub owed: Limit,
    /// Parked conflicts plus rejected copies on a server (WARNING from 1).
    pub conflicts: Limit,
    /// Consecutive failures of a host on the primary (WARNING from 1).
    pub host_failures: Limit,
    /// Level of a host in cooldown on the primary (WARNING).
    pub host_cooldown: Level,
    /// Level of a server without a complete backup (WARNING).
    pub no_backup: Level,
    /// A server's last verify older than this, seconds: WARNING (8 days;
    /// 0: off). A server that never ran one is not warned about.
    pub verify_age: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            newest_age: Limit {
                warn: 3600,
                crit: 6 * 3600,
            },
            backup_age_warn_factor: 1.25,
            backup_age_crit_factor: 2.0,
            periodicity_days: 4,
            gaps: Limit { warn: 0, crit: 1 },
            divergent: Limit { warn: 0, crit: 1 },
            unverified: Limit { warn: 1, crit: 0 },
            one_sided: Limit { warn: 1, crit: 0 },
            dropped: Limit { warn: 0, crit: 1 },
            failed_tasks: Limit { warn: 0, crit: 1 },
            stuck_tasks: Limit { warn: 1, crit: 0 },
            owed: Limit { warn: 10, crit: 0 },
            conflicts: Limit { warn: 1, crit: 0 },
            host_failures: Limit { warn: 1, crit: 0 },
            host_cooldown: Level::Warning,
            no_backup: Level::Warning,
            verify_age: 8 * 86400,
        }
    }
}
