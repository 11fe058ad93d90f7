//! How the data directory is recovering (standby or archive recovery, from
//! its signal files) and the exit code that follows for a file not restored:
//! 1 for "not available", or [`EXIT_STOP_RECOVERY`] (200) where "not
//! available" would end a point-in-time recovery early.

use std::path::Path;

use super::{Attempt, Unavailable};
use crate::common::error::{Failure, EXIT_RETRY};
use crate::common::log;

/// Exit code that makes PostgreSQL stop archive recovery (any code above
/// 125 is fatal to the startup process). 200 is clear of the shell's 126
/// (cannot execute), 127 (not found) and 128+N (killed by signal N), so the
/// server log's "exited with exit code 200" can only mean this.
pub const EXIT_STOP_RECOVERY: i32 = 200;

/// How the data directory is recovering, from its signal files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// `standby.signal`: a standby retries "not available" forever.
    Standby,
    /// `recovery.signal` without `standby.signal`: targeted archive recovery
    /// (PITR), which ends at the first "not available".
    ArchiveRecovery,
    /// Neither (a manual call, or not a data directory).
    Unknown,
}

impl RecoveryMode {
    /// Reads the signal files of `data_dir`.
    pub fn detect(data_dir: &Path) -> RecoveryMode {
        if data_dir.join("standby.signal").exists() {
            RecoveryMode::Standby
        } else if data_dir.join("recovery.signal").exists() {
            RecoveryMode::ArchiveRecovery
        } else {
            RecoveryMode::Unknown
        }
    }
}

/// The exit code for an unavailable file: 1 (PostgreSQL retries, or ends
/// recovery when it is archive recovery) unless answering "not available"
/// could end a point-in-time recovery early: archive recovery, and some host
/// failed (or had a bad copy, or a local error stopped the call). Then
/// [`EXIT_STOP_RECOVERY`]: PostgreSQL stops rather than promote.
pub fn exit_code(mode: RecoveryMode, u: &Unavailable) -> i32 {
    let stop = mode == RecoveryMode::ArchiveRecovery;
    match u {
        Unavailable::NotFound | Unavailable::TooYoung { .. } => EXIT_RETRY,
        Unavailable::Failed(_) if stop => EXIT_STOP_RECOVERY,
        Unavailable::Failed(_) => EXIT_RETRY,
        Unavailable::Local(_) if stop => EXIT_STOP_RECOVERY,
        Unavailable::Local(e) => e.exit_code(),
    }
}

/// A file restore-cmd did not hand to PostgreSQL, and in which recovery
/// mode: together they decide the exit code ([`exit_code`]).
#[derive(Debug)]
pub struct NotRestored {
    /// Why the file is not there.
    pub why: Unavailable,
    /// How the data directory is recovering.
    pub mode: RecoveryMode,
}

impl std::fmt::Display for NotRestored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.why.fmt(f)
    }
}

impl Failure for NotRestored {
    fn exit_code(&self) -> i32 {
        exit_code(self.mode, &self.why)
    }

    /// Most "not available" answers are routine and stay out of
    /// PostgreSQL's log; a stop of recovery always explains itself.
    /// `context` is the file's name.
    fn report(&self, context: Option<&str>) {
        let name = context.unwrap_or_default();
        let code = self.exit_code();
        let u = &self.why;
        match u {
            // Quiet: PostgreSQL asks for the next file until it exists.
            Unavailable::NotFound => {}
            // Logged once per file when it was found too young.
            Unavailable::TooYoung { .. } => {}
            // A standby retries: each host failure was logged when it
            // happened (and a host in cooldown is not asked at all).
            // Bad copies get the line naming every host.
            Unavailable::Failed(attempts)
                if code != EXIT_STOP_RECOVERY
                    && !attempts.iter().any(|(_, a)| matches!(a, Attempt::Bad(_))) => {}
            _ if code == EXIT_STOP_RECOVERY => log::error(format!(
                "{name}: {u}. This is archive recovery (recovery.signal without standby.signal): \
                 answering \"not available\" would end recovery here and promote with WAL \
                 possibly missing, so restore-cmd exits {EXIT_STOP_RECOVERY} and PostgreSQL \
                 stops. Bring the failed host back (or name only the hosts you trust in \
                 restore_command) and start PostgreSQL again"
            )),
            _ => log::error(format!("{name}: not restored: {u}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::common::error::Error;

    #[test]
    fn exit_codes_by_mode() {
        use RecoveryMode::*;
        let failed = || {
            Unavailable::Failed(vec![
                ("arch1".into(), Attempt::Failed("connection refused".into())),
                ("arch2".into(), Attempt::NotFound),
            ])
        };
        let young = Unavailable::TooYoung {
            archived: 0,
            ready_at: 1,
        };
        // Plain "not available" is 1 everywhere.
        for m in [Standby, ArchiveRecovery, Unknown] {
            assert_eq!(exit_code(m, &Unavailable::NotFound), 1);
            assert_eq!(exit_code(m, &young), 1);
        }
        // A failed host: a standby retries, archive recovery stops.
        assert_eq!(exit_code(Standby, &failed()), 1);
        assert_eq!(exit_code(Unknown, &failed()), 1);
        assert_eq!(exit_code(ArchiveRecovery, &failed()), EXIT_STOP_RECOVERY);
        let bad = Unavailable::Failed(vec![
            ("arch1".into(), Attempt::Bad("x".into())),
            ("arch2".into(), Attempt::Bad("y".into())),
        ]);
        assert_eq!(exit_code(ArchiveRecovery, &bad), EXIT_STOP_RECOVERY);
        assert_eq!(exit_code(Standby, &bad), 1);
        let usage = || Unavailable::Local(Error::Usage("bad".into()));
        assert_eq!(exit_code(Standby, &usage()), 2);
        assert_eq!(exit_code(ArchiveRecovery, &usage()), EXIT_STOP_RECOVERY);
        // Above 125 (fatal for PostgreSQL) and clear of shell conventions.
        const { assert!(EXIT_STOP_RECOVERY > 125 && EXIT_STOP_RECOVERY > 128 + 64) };
        // The message names both hosts.
        let text = bad.to_string();
        assert!(text.contains("arch1") && text.contains("arch2"), "{text}");
    }

    #[test]
    fn recovery_mode_from_signal_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(RecoveryMode::detect(d.path()), RecoveryMode::Unknown);
        fs::write(d.path().join("recovery.signal"), "").unwrap();
        assert_eq!(
            RecoveryMode::detect(d.path()),
            RecoveryMode::ArchiveRecovery
        );
        fs::write(d.path().join("standby.signal"), "").unwrap();
        assert_eq!(RecoveryMode::detect(d.path()), RecoveryMode::Standby);
    }
}
