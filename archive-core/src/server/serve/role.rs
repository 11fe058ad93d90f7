//! What one key may ask of `serve`: its roles and its directories.
//!
//! The forced command of each key in `authorized_keys` names them, e.g.
//! `archive-remote-cmd serve --role primary --dir /var/lib/pgarchive/main`.
//! They come from the server's own command line, never from the client
//! (what the client asked for is only checked by
//! [`super::check_forced_command`]). Every request is checked here before
//! it is handled; a request the key may not make is answered with a
//! `refused` error and ends the channel (a refused put's content is never
//! read).
//!
//! The verbs of each role are what its programs send:
//!
//! - `primary` (archive-cmd): `put` of a file from a primary, nothing else:
//!   no reading back, no removing, so a stored file can never be replaced.
//! - `standby` (restore-cmd, restore-backup): `get`, `list`,
//!   `list_backups`, `get_backup_file`.
//! - `monitor` (archive-status): `list`, `list_backups`, `digest`,
//!   `dir_status`, `oldest_backup`, and `get` of `.history` files (the
//!   newest timeline's history), no segment.
//! - `peer` (the other archive server: forwards, wal-sync, wal-cleanup,
//!   owed delivery): every request.
//!
//! `hello` is every role's. A key may have several roles (the union of
//! their verbs). A key without any role is refused outright unless
//! `allow_keys_without_role` is set, which serves it as a peer key (the
//! behaviour before roles existed) with a warning per channel.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::common::config::Config;
use crate::common::error::{Error, Result};
use crate::common::log;
use crate::common::names::validate_dir_arg;
use crate::common::wal::{WalKind, WalName};
use crate::net::wire::Request;

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// archive-cmd on a primary: stores files, reads nothing back.
    Primary,
    /// restore-cmd and restore-backup on a standby or restore host.
    Standby,
    /// the other archive server: forwards, wal-sync, wal-cleanup, owed
    /// delivery, locks (every request).
    Peer,
    /// archive-status: listings, digests and status.
    Monitor,
}

impl Role {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Peer => "peer",
            Role::Monitor => "monitor",
        }
    }

    /// Whether this role may make `req` (directories aside).
    fn allows(self, req: &Request) -> bool {
        use Request as R;
        match self {
            Role::Peer => true,
            Role::Primary => {
                matches!(req, R::Hello { .. } | R::End { .. } | R::CheckSetup { .. })
                // Only a peer forwards a copy (`from`): it makes this
                // server deliver what it owes that host.
                || matches!(req, R::Put(p) if p.from.is_none())
            }
            Role::Standby => matches!(
                req,
                R::Hello { .. }
                    | R::End { .. }
                    | R::Get { .. }
                    | R::List { .. }
                    | R::ListBackups { .. }
                    | R::GetBackupFile { .. }
            ),
            Role::Monitor => match req {
                R::Hello { .. }
                | R::End { .. }
                | R::List { .. }
                | R::ListBackups { .. }
                | R::Digest { .. }
                | R::DirStatus { .. }
                | R::OldestBackup { .. } => true,
                R::Get { name, .. } => {
                    WalName::parse(name).is_ok_and(|n| n.kind() == WalKind::History)
                }
                _ => false,
            },
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the requests of one channel may do: the key's roles and the
/// directories they are confined to.
#[derive(Debug, Clone)]
pub struct Access {
    grant: Grant,
    /// Archive and backup directories a request may name (or lie below);
    /// `None`: anywhere under the archive roots.
    dirs: Option<Vec<PathBuf>>,
    /// The archive roots: a directory outside all of them is left to the
    /// store, which refuses it saying so.
    roots: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
enum Grant {
    /// The roles named by the forced command.
    Roles(Vec<Role>),
    /// No role, `allow_keys_without_role` set: every request.
    WithoutRole,
    /// No role: nothing, not even `hello`.
    Nothing,
    /// In-process use (the `deliver-owed` sweep, tests): every request.
    Internal,
}

impl Access {
    /// The roles granted, for `hello` ("primary", "standby,monitor", or
    /// "none" for a key without a role that the configuration allows).
    pub fn role_names(&self) -> Option<String> {
        match &self.grant {
            Grant::Roles(r) => Some(r.iter().map(|r| r.name()).collect::<Vec<_>>().join(",")),
            Grant::WithoutRole => Some("none".into()),
            Grant::Nothing | Grant::Internal => None,
        }
    }

    /// The access of a `serve` started with `--role` `roles` and `--dir`
    /// `dirs`. Each directory must be absolute and lie under an archive
    /// root (bad usage otherwise: the authorized_keys line is wrong).
    pub fn new(roles: &[Role], dirs: &[PathBuf], cfg: &Config) -> Result<Access> {
        let grant = if !roles.is_empty() {
            let mut r = roles.to_vec();
            r.dedup();
            Grant::Roles(r)
        } else if cfg.allow_keys_without_role {
            Grant::WithoutRole
        } else {
            Grant::Nothing
        };
        let dirs = if dirs.is_empty() {
            None
        } else {
            Some(
                dirs.iter()
                    .map(|d| checked_dir(d, &cfg.archive_roots))
                    .collect::<Result<Vec<_>>>()?,
            )
        };
        Ok(Access {
            grant,
            dirs,
            roots: cfg.archive_roots.clone(),
        })
    }

    /// Every request anywhere under the roots: for a server the program
    /// runs itself (the `deliver-owed` sweep) and for tests, never for a
    /// client's channel.
    pub fn internal() -> Access {
        Access {
            grant: Grant::Internal,
            dirs: None,
            roots: Vec::new(),
        }
    }

    /// Logs, once per channel, what a role-less key is served as.
    pub fn warn_at_start(&self) {
        if matches!(self.grant, Grant::WithoutRole) {
            log::warn(
                "this key's forced command names no --role; serving it with every right \
                 because allow_keys_without_role = true: give it --role in authorized_keys \
                 (see docs/security.md)",
            );
        }
    }

    /// Checks that this key may make `req`; a `refused` error naming the
    /// role and the verb otherwise.
    pub fn check(&self, req: &Request) -> Result<()> {
        let verb = verb(req);
        match &self.grant {
            Grant::Internal | Grant::WithoutRole => {}
            Grant::Nothing => {
                return Err(Error::Refused(format!(
                    "this key's forced command names no role, so it may not {verb}: add \
                     --role primary|standby|monitor|peer (and --dir DIR for a primary) to its \
                     command=\"archive-remote-cmd serve ...\" in authorized_keys on this \
                     server, or set allow_keys_without_role = true to serve role-less keys as \
                     peers (see docs/security.md)"
                )))
            }
            Grant::Roles(roles) => {
                if !roles.iter().any(|r| r.allows(req)) {
                    let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
                    let what = match req {
                        Request::Put(_) => " a copy forwarded by a peer",
                        Request::Get { .. } => " a file other than a .history file",
                        _ => "",
                    };
                    return Err(Error::Refused(format!(
                        "a key with role {} may not {verb}{what}",
                        names.join("+")
                    )));
                }
            }
        }
        if let Some(allowed) = &self.dirs {
            for dir in dirs_named(req) {
                validate_dir_arg(dir)?;
                let path = normalized(dir);
                // Outside every root: the store refuses it (with the
                // message that says to fix DST-DIR or archive_roots).
                let in_roots = self.roots.iter().any(|r| path.starts_with(r));
                if in_roots && !allowed.iter().any(|a| path.starts_with(a)) {
                    let list: Vec<String> =
                        allowed.iter().map(|a| a.display().to_string()).collect();
                    return Err(Error::Refused(format!(
                        "this key may not {verb} in {dir}: its forced command allows only {}",
                        list.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A `--dir` value, checked and normalized.
fn checked_dir(dir: &Path, roots: &[PathBuf]) -> Result<PathBuf> {
    let s = dir.to_str().unwrap_or("");
    validate_dir_arg(s).map_err(|e| Error::Usage(format!("--dir: {e}")))?;
    let path = normalized(s);
    if roots.iter().any(|r| path.starts_with(r)) {
        Ok(path)
    } else {
        Err(Error::Usage(format!(
            "--dir {} is not under an archive root of this server (archive_roots)",
            dir.display()
        )))
    }
}

/// `dir` without `//` or trailing slashes, as the store resolves it.
fn normalized(dir: &str) -> PathBuf {
    Path::new(dir)
        .components()
        .filter(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        .collect()
}

/// The archive and backup directories a request names.
fn dirs_named(req: &Request) -> Vec<&str> {
    use Request as R;
    match req {
        R::Hello { .. } | R::End { .. } => vec![],
        R::Put(p) => vec![&p.dir],
        R::Get { dir, .. }
        | R::List { dir }
        | R::Remove { dir, .. }
        | R::Lock { dir, .. }
        | R::Digest { dir, .. }
        | R::DeliverOwed { dir, .. }
        | R::CheckSetup { dir, .. } => vec![dir],
        R::OldestBackup { backup_dir }
        | R::ListBackups { backup_dir }
        | R::GetBackupFile { backup_dir, .. } => vec![backup_dir],
        R::DirStatus { dir, backup_dir } => {
            let mut v = vec![dir.as_str()];
            v.extend(backup_dir.as_deref());
            v
        }
    }
}

/// The request's name on the wire (`put`, `get`, ...), for messages.
fn verb(req: &Request) -> &'static str {
    use Request as R;
    match req {
        R::Hello { .. } => "hello",
        R::Put(_) => "put",
        R::End { .. } => "end",
        R::Get { .. } => "get",
        R::List { .. } => "list",
        R::Remove { .. } => "remove",
        R::Lock { .. } => "lock",
        R::Digest { .. } => "digest",
        R::OldestBackup { .. } => "oldest_backup",
        R::ListBackups { .. } => "list_backups",
        R::GetBackupFile { .. } => "get_backup_file",
        R::DeliverOwed { .. } => "deliver_owed",
        R::DirStatus { .. } => "dir_status",
        R::CheckSetup { .. } => "check_setup",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::wire::PutRequest;

    const ROOT: &str = "/var/lib/pgarchive";

    fn cfg(allow: bool) -> Config {
        Config {
            archive_roots: vec![PathBuf::from(ROOT)],
            allow_keys_without_role: allow,
            ..Config::default()
        }
    }

    fn put(dir: &str, from: Option<&str>) -> Request {
        Request::Put(PutRequest {
            dir: dir.into(),
            name: "000000010000000000000001".into(),
            size: 1,
            mtime: 0,
            cluster: "main".into(),
            forward_to: Some("arch2".into()),
            from: from.map(str::to_string),
            forward_in_background: false,
            raw_blake3: None,
        })
    }

    fn every_request(dir: &str) -> Vec<Request> {
        let d = || dir.to_string();
        let names = vec!["000000010000000000000001".to_string()];
        vec![
            Request::Hello { version: 1 },
            put(dir, None),
            put(dir, Some("arch2")),
            Request::Get {
                dir: d(),
                name: "000000010000000000000001".into(),
            },
            Request::Get {
                dir: d(),
                name: "00000002.history".into(),
            },
            Request::List { dir: d() },
            Request::Remove {
                dir: d(),
                names: names.clone(),
            },
            Request::Lock {
                dir: d(),
                name: "wal-sync".into(),
                holder: "x".into(),
            },
            Request::Digest { dir: d(), names },
            Request::OldestBackup { backup_dir: d() },
            Request::ListBackups { backup_dir: d() },
            Request::GetBackupFile {
                backup_dir: d(),
                index: 1,
                name: "base.tar.zst".into(),
            },
            Request::DeliverOwed {
                dir: d(),
                peer: "arch2".into(),
            },
            Request::DirStatus {
                dir: d(),
                backup_dir: None,
            },
        ]
    }

    /// The verbs (`get` split into segment and history, `put` into from a
    /// primary and from a peer) a role's key may use.
    fn allowed(roles: &[Role]) -> Vec<String> {
        let access = Access::new(roles, &[], &cfg(false)).unwrap();
        every_request(&format!("{ROOT}/main"))
            .iter()
            .filter(|r| access.check(r).is_ok())
            .map(|r| match r {
                Request::Get { name, .. } if name.ends_with("history") => "get-history".into(),
                Request::Put(p) if p.from.is_some() => "put-from-peer".into(),
                r => verb(r).to_string(),
            })
            .collect()
    }

    #[test]
    fn each_role_has_the_verbs_its_programs_use() {
        assert_eq!(allowed(&[Role::Primary]), ["hello", "put"]);
        assert_eq!(
            allowed(&[Role::Standby]),
            [
                "hello",
                "get",
                "get-history",
                "list",
                "list_backups",
                "get_backup_file"
            ]
        );
        assert_eq!(
            allowed(&[Role::Monitor]),
            [
                "hello",
                "get-history",
                "list",
                "digest",
                "oldest_backup",
                "list_backups",
                "dir_status"
            ]
        );
        assert_eq!(allowed(&[Role::Peer]).len(), every_request("/x").len());
        assert_eq!(
            allowed(&[Role::Primary, Role::Standby]),
            [
                "hello",
                "put",
                "get",
                "get-history",
                "list",
                "list_backups",
                "get_backup_file"
            ]
        );
    }

    #[test]
    fn a_refusal_names_the_role_and_the_verb() {
        let access = Access::new(&[Role::Primary], &[], &cfg(false)).unwrap();
        let req = Request::Remove {
            dir: format!("{ROOT}/main"),
            names: vec![],
        };
        let e = access.check(&req).unwrap_err();
        assert!(matches!(e, Error::Refused(_)));
        assert!(e.to_string().contains("role primary may not remove"), "{e}");
    }

    #[test]
    fn without_a_role_nothing_is_served_unless_the_config_allows_it() {
        let none = Access::new(&[], &[], &cfg(false)).unwrap();
        for req in every_request(&format!("{ROOT}/main")) {
            let e = none.check(&req).unwrap_err();
            assert!(e.to_string().contains("--role"), "{e}");
        }
        let legacy = Access::new(&[], &[], &cfg(true)).unwrap();
        for req in every_request(&format!("{ROOT}/main")) {
            assert!(legacy.check(&req).is_ok(), "{req:?}");
        }
    }

    #[test]
    fn dirs_confine_every_request_to_them_and_below() {
        let dirs = [PathBuf::from(format!("{ROOT}/main/"))];
        let access = Access::new(&[Role::Peer], &dirs, &cfg(false)).unwrap();
        for dir in [
            format!("{ROOT}/main"),
            format!("{ROOT}//main/"),
            format!("{ROOT}/main/backups"),
        ] {
            for req in every_request(&dir) {
                assert!(access.check(&req).is_ok(), "{req:?}");
            }
        }
        for dir in [
            format!("{ROOT}/other"),
            format!("{ROOT}/mainx"),
            ROOT.to_string(),
            format!("{ROOT}/main/../other"),
        ] {
            for req in every_request(&dir).into_iter().skip(1) {
                let e = access.check(&req).unwrap_err();
                assert!(matches!(e, Error::Refused(_)), "{dir}: {req:?}");
            }
        }
        // Outside every root: left to the store, which refuses it.
        for req in every_request("/etc") {
            assert!(access.check(&req).is_ok(), "{req:?}");
        }
        let status = Request::DirStatus {
            dir: format!("{ROOT}/main"),
            backup_dir: Some(format!("{ROOT}/other")),
        };
        assert!(access.check(&status).is_err());
    }

    #[test]
    fn a_dir_outside_the_roots_or_relative_is_bad_usage() {
        for bad in [
            "/etc",
            "main",
            "/var/lib/pgarchive/../x",
            "/var/lib/pgarchiveX",
        ] {
            let e = Access::new(&[Role::Primary], &[PathBuf::from(bad)], &cfg(false)).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{bad}: {e}");
        }
    }
}
