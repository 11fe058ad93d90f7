//! The requests sent to one archive server and what they returned: a
//! channel kept per host for the run, the listing phase (`List`,
//! `ListBackups`) and the detail phase (`Digest` batches, `DirStatus`).

use std::collections::HashMap;

use crate::common::error::{Error, Result};
use crate::net::ssh::{self, Channel, SshSettings};
use crate::net::wire::{BackupEntry, DirStatus, ListEntry, RawDigest};

/// Names of same-named files sent per `Digest` request: each is decoded on
/// the server before the reply, so the batch bounds the wait for it.
const DIGEST_BATCH: usize = 32;

/// The channel to one host, kept for the next cluster on it.
pub(super) struct Conn {
    pub(super) host: String,
    pub(super) chan: Option<Channel>,
    /// Why it could not be reached (not retried within the run).
    down: Option<String>,
    /// Requests sent for the current cluster.
    pub(super) requests: u32,
}

impl Conn {
    pub(super) fn new(host: &str) -> Conn {
        Conn {
            host: host.to_string(),
            chan: None,
            down: None,
            requests: 0,
        }
    }

    pub(super) async fn channel(&mut self, ssh: &SshSettings) -> Result<&mut Channel> {
        if let Some(e) = &self.down {
            return Err(Error::host(&self.host, format!("{e} (not retried)")));
        }
        if self.chan.is_none() {
            match ssh::connect(ssh, &self.host).await {
                Ok(c) => self.chan = Some(c),
                Err(e) => {
                    self.down = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        self.requests += 1;
        Ok(self.chan.as_mut().expect("just set"))
    }

    /// After a failed request: a channel that may be mid-message is dropped.
    pub(super) fn failed(&mut self, e: &Error) {
        if e.is_host_failure() {
            self.chan = None;
        }
    }
}

/// What the listing phase read from one server.
pub(super) struct Listing {
    /// Sorted by name (see [`HostData::has`]).
    pub(super) files: Vec<ListEntry>,
    pub(super) backups: Option<Vec<BackupEntry>>,
    pub(super) server_name: Option<String>,
}

/// `List` and `ListBackups` on one server.
pub(super) async fn list_phase(
    mut conn: Conn,
    ssh: SshSettings,
    wals: String,
    backup_dir: Option<String>,
) -> (Conn, Result<Listing>) {
    let res = async {
        let ch = conn.channel(&ssh).await?;
        let server_name = ch.server_name.clone();
        let files = ch.list(&wals).await?;
        let backups = match &backup_dir {
            Some(b) => Some(conn.channel(&ssh).await?.list_backups(b).await?),
            None => None,
        };
        Ok(Listing {
            files,
            backups,
            server_name,
        })
    }
    .await;
    if let Err(e) = &res {
        conn.failed(e);
    }
    (conn, res)
}

/// Names whose `Digest` request failed, and why.
pub(super) struct DigestError {
    pub(super) names: Vec<String>,
    pub(super) error: String,
}

/// What the detail phase read from one server.
pub(super) struct Details {
    /// `None`: the file was gone by then.
    pub(super) digests: HashMap<String, Option<RawDigest>>,
    pub(super) digest_errors: Vec<DigestError>,
    pub(super) status: Result<DirStatus>,
}

/// `Digest` of `names` (in batches) and `DirStatus` on one server.
pub(super) async fn detail_phase(
    mut conn: Conn,
    ssh: SshSettings,
    wals: String,
    backup_dir: Option<String>,
    names: Vec<String>,
) -> (Conn, Details) {
    let mut d = Details {
        digests: HashMap::new(),
        digest_errors: Vec::new(),
        status: Err(Error::Usage("not asked".into())),
    };
    for chunk in names.chunks(DIGEST_BATCH) {
        let res = match conn.channel(&ssh).await {
            Ok(ch) => ch.digests(&wals, chunk).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(files) => {
                for (n, f) in chunk.iter().zip(files) {
                    d.digests.insert(n.clone(), f);
                }
            }
            Err(e) => {
                conn.failed(&e);
                d.digest_errors.push(DigestError {
                    names: chunk.to_vec(),
                    error: e.to_string(),
                });
            }
        }
    }
    let res = match conn.channel(&ssh).await {
        Ok(ch) => ch.dir_status(&wals, backup_dir.as_deref()).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &res {
        conn.failed(e);
    }
    d.status = res;
    (conn, d)
}

/// Everything read from one server for the cluster.
pub(super) struct HostData {
    pub(super) host: String,
    /// `None`: it could not be listed (see `error`).
    pub(super) listing: Option<Listing>,
    pub(super) error: Option<String>,
    pub(super) details: Option<Details>,
}

impl HostData {
    /// Its listing entry of `name`, if it holds it.
    pub(super) fn has(&self, name: &str) -> Option<&ListEntry> {
        let files = &self.listing.as_ref()?.files;
        files
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &files[i])
    }

    /// Its files; empty when it could not be listed.
    pub(super) fn files(&self) -> &[ListEntry] {
        self.listing.as_ref().map_or(&[], |l| &l.files)
    }
}

/// An error reading a server, with what to do.
pub(super) fn describe(host: &str, dir: &str, e: &Error) -> String {
    let hint = match e {
        Error::Refused(_) | Error::Usage(_) => format!(
            "check that {dir} lies under archive_roots in {host}'s config"
        ),
        _ => format!(
            "check that {host} is up and that this user can run 'ssh {host}' (ssh_config, keys) and archive-remote-cmd there"
        ),
    };
    let text = e.to_string();
    let text = if text.contains(host) {
        text
    } else {
        format!("host {host}: {text}")
    };
    format!("cannot read {dir}: {text}; {hint}")
}

#[cfg(test)]
impl HostData {
    /// A listed host holding `files` (10 bytes each), for tests.
    pub(super) fn listed(name: &str, files: &[&str]) -> HostData {
        let mut files: Vec<ListEntry> = files
            .iter()
            .map(|n| ListEntry {
                name: n.to_string(),
                size: 10,
                mtime: 0,
            })
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        HostData {
            host: name.into(),
            listing: Some(Listing {
                files,
                backups: None,
                server_name: None,
            }),
            error: None,
            details: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_do() {
        let e = Error::host(
            "arch2",
            "cannot connect over ssh (exit status: 255): refused",
        );
        let m = describe("arch2", "/a/main", &e);
        assert!(
            m.contains("cannot read /a/main: host arch2: cannot connect"),
            "{m}"
        );
        assert!(m.contains("check that arch2 is up"), "{m}");
        let e = Error::Refused("archive directory /x is not under an archive root".into());
        let m = describe("arch1", "/x", &e);
        assert!(m.contains("host arch1: archive directory"), "{m}");
        assert!(m.contains("archive_roots"), "{m}");
    }
}
