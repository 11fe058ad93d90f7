//! What a check yields: a [`Finding`] at a Nagios [`Level`].

use serde::{Deserialize, Serialize};

/// A Nagios service state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Nothing to do.
    #[default]
    Ok,
    /// Look at it soon.
    Warning,
    /// Act now: a restore would fail or lose data.
    Critical,
    /// Could not be checked.
    Unknown,
}

impl Level {
    /// Nagios exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::Unknown => 3,
        }
    }

    /// "OK", "WARNING", "CRITICAL", "UNKNOWN".
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }

    /// Its rank when looking for the worst: CRITICAL > UNKNOWN > WARNING > OK.
    pub(super) fn rank(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Unknown => 2,
            Level::Critical => 3,
        }
    }

    /// The worse of the two.
    pub fn worst(self, other: Level) -> Level {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// One thing that needs attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What was checked: "unreadable", "newest_age", "gap", "chain",
    /// "no_backup", "one_sided", "divergent", "unverified", "owed",
    /// "conflicts", "dropped", "backup_age", "failed_tasks", "stuck_tasks",
    /// "queue", "host_health".
    pub check: String,
    /// The cluster, if it is about one.
    pub cluster: Option<String>,
    /// The server, if it is about one.
    pub server: Option<String>,
    /// A few words for the Nagios summary line.
    pub short: String,
    /// The whole story: what, where, and what to do.
    pub message: String,
}

impl Finding {
    /// "main/arch1", "main", "arch1" or "".
    pub fn scope(&self) -> String {
        match (&self.cluster, &self.server) {
            (Some(c), Some(s)) => format!("{c}/{s}"),
            (Some(c), None) => c.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => String::new(),
        }
    }
}
