//! pgarchive-check: proves the whole chain from this host, link by link, the
//! way a DBA would by hand after setting it up: each archive server reached
//! with the configured key, its forced command and role in place, the
//! directory writable and bound to this cluster, the two servers reaching
//! each other, and a real segment (`pg_switch_wal()`) arriving on both; on
//! a standby, that the newest segment restores and decodes. Every failing
//! link is named with what to do.

use std::time::{Duration, Instant};

use crate::common::codec;
use crate::common::config::Config;
use crate::common::page_header;
use crate::common::wal::WalName;
use crate::net::ssh::{self, Channel, SshSettings};
use crate::{Error, Result};

/// Where pgarchive-check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On the primary: archiving.
    Primary,
    /// On a standby: restoring.
    Standby,
}

impl Mode {
    fn role(self) -> &'static str {
        match self {
            Mode::Primary => "primary",
            Mode::Standby => "standby",
        }
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    /// Primary or standby.
    pub mode: Mode,
    /// The archive servers (ssh aliases), as in archive_command.
    pub hosts: Vec<String>,
    /// DST-DIR (primary) or SRC-DIR (standby).
    pub dir: String,
    /// libpq connection string of the local PostgreSQL (primary only).
    pub dsn: String,
    /// How long a switched segment may take to reach both servers.
    pub timeout: Duration,
}

/// One link of the chain: ok, or its problem and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// What was checked ("arch1: reachable with the configured key").
    pub what: String,
    /// What is wrong; `None` when the link holds.
    pub problem: Option<String>,
    /// What to do about it.
    pub fix: Option<String>,
}

impl Link {
    fn ok(what: impl Into<String>) -> Link {
        Link {
            what: what.into(),
            problem: None,
            fix: None,
        }
    }

    fn broken(what: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Link {
        Link {
            what: what.into(),
            problem: Some(problem.into()),
            fix: Some(fix.into()),
        }
    }

    /// Whether the link holds.
    pub fn holds(&self) -> bool {
        self.problem.is_none()
    }
}

/// Every link checked, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The links.
    pub links: Vec<Link>,
}

impl Report {
    /// True when every link holds.
    pub fn all_hold(&self) -> bool {
        self.links.iter().all(Link::holds)
    }
}

/// The authorized_keys line a key needs on an archive server.
fn key_line(role: &str, dir: &str) -> String {
    format!("command=\"archive-remote-cmd serve --role {role} --dir {dir}\",restrict ssh-ed25519 AAAA...")
}

/// Runs every check of `req.mode`.
pub fn run(cfg: &Config, req: &CheckRequest) -> Result<Report> {
    crate::common::names::validate_dir_arg(&req.dir)?;
    for h in &req.hosts {
        crate::common::names::validate_host_name(h)?;
    }
    let mut report = Report::default();
    let rt = crate::common::cli::runtime()?;
    match req.mode {
        Mode::Primary => {
            let sysid = local_cluster(req, &mut report);
            let channels = rt.block_on(servers(cfg, req, sysid, &mut report));
            if let (Some(_), false) = (sysid, channels.is_empty()) {
                if let Some(segment) = switch_wal(req, &mut report) {
                    rt.block_on(arrives(req, channels, &segment, &mut report));
                }
            }
        }
        Mode::Standby => {
            let channels = rt.block_on(servers(cfg, req, None, &mut report));
            rt.block_on(restores(req, channels, &mut report));
        }
    }
    Ok(report)
}

fn pg_client(dsn: &str) -> std::result::Result<postgres::Client, String> {
    postgres::Client::connect(dsn, postgres::NoTls).map_err(|e| e.to_string())
}

/// The primary's system identifier, and whether it archives.
fn local_cluster(req: &CheckRequest, report: &mut Report) -> Option<u64> {
    let what = format!("PostgreSQL ({}): a primary that archives", req.dsn);
    let fix_conn = "run pgarchive-check on the primary as postgres, or give --dsn";
    let mut client = match pg_client(&req.dsn) {
        Ok(c) => c,
        Err(e) => {
            report
                .links
                .push(Link::broken(what, format!("cannot connect: {e}"), fix_conn));
            return None;
        }
    };
    let row = client.query_one(
        "select system_identifier::text, pg_is_in_recovery(), current_setting('archive_mode'), \
         current_setting('archive_command') from pg_control_system()",
        &[],
    );
    let row = match row {
        Ok(r) => r,
        Err(e) => {
            report.links.push(Link::broken(
                what,
                format!("cannot read its settings: {e}"),
                fix_conn,
            ));
            return None;
        }
    };
    let sysid: Option<u64> = row.get::<_, String>(0).parse().ok();
    let (recovery, mode, command): (bool, String, String) = (row.get(1), row.get(2), row.get(3));
    if recovery {
        report.links.push(Link::broken(
            what,
            "it is in recovery (a standby)",
            "run the primary check on the primary; on a standby run pgarchive-check standby",
        ));
        return None;
    }
    if mode == "off" {
        report.links.push(Link::broken(
            what,
            "archive_mode is off",
            "set archive_mode = on and archive_command = 'archive-cmd ...' (docs/setup.md), then restart PostgreSQL",
        ));
        return None;
    }
    if !command.contains("archive-cmd") {
        report.links.push(Link::broken(
            what,
            format!("archive_command is {command:?}, not archive-cmd"),
            format!(
                "set archive_command = 'archive-cmd \"{}\" {} %p %f CLUSTER' and reload",
                req.hosts.join(" "),
                req.dir
            ),
        ));
        return None;
    }
    report.links.push(Link::ok(format!(
        "{what} (system identifier {})",
        sysid.map_or_else(|| "?".into(), |s| s.to_string())
    )));
    sysid
}

/// Reaches each server and checks its key, role and directory (and, on
/// the primary, the peer). Returns the channels that work.
async fn servers(
    cfg: &Config,
    req: &CheckRequest,
    sysid: Option<u64>,
    report: &mut Report,
) -> Vec<Channel> {
    let settings = SshSettings::from_config(cfg);
    let role = req.mode.role();
    let mut good = Vec::new();
    for host in &req.hosts {
        let mut ch = match ssh::connect(&settings, host).await {
            Ok(ch) => ch,
            Err(e) => {
                report.links.push(Link::broken(
                    format!("{host}: reachable with this host's key"),
                    e.to_string(),
                    format!(
                        "add this host's public key to {host}'s authorized_keys as `{}`, and check the entry for {host} in ssh_config{}",
                        key_line(role, &req.dir),
                        cfg.ssh_config
                            .as_ref()
                            .map(|p| format!(" ({})", p.display()))
                            .unwrap_or_default()
                    ),
                ));
                continue;
            }
        };
        report
            .links
            .push(Link::ok(format!("{host}: reachable with this host's key")));
        let mut fine = true;
        match ch.forced_command {
            Some(false) => {
                fine = false;
                report.links.push(Link::broken(
                    format!("{host}: the key runs only archive-remote-cmd (forced command)"),
                    "the key has no forced command: it can run any command on the server",
                    format!(
                        "start its authorized_keys line with `{}`",
                        key_line(role, &req.dir)
                    ),
                ));
            }
            _ => report.links.push(Link::ok(format!(
                "{host}: the key runs only archive-remote-cmd (forced command)"
            ))),
        }
        let roles = ch.role.clone().unwrap_or_default();
        if roles
            .split(',')
            .any(|r| r == role || r == "peer" || r == "none")
        {
            report
                .links
                .push(Link::ok(format!("{host}: the key has role {role}")));
        } else {
            fine = false;
            report.links.push(Link::broken(
                format!("{host}: the key has role {role}"),
                format!("{host} gives this key role {roles:?}"),
                format!(
                    "use --role {role} in its forced command: `{}`",
                    key_line(role, &req.dir)
                ),
            ));
        }
        if req.mode == Mode::Primary {
            let peer = req.hosts.iter().find(|h| *h != host).map(String::as_str);
            match ch.check_setup(&req.dir, peer, None).await {
                Ok(s) => {
                    dir_links(host, req, sysid, &s, report);
                    if let Some(p) = peer {
                        peer_link(host, p, &req.dir, &s, report);
                    }
                    fine &= s.dir_error.is_none() && s.peer_error.is_none();
                }
                Err(e) => {
                    fine = false;
                    report.links.push(Link::broken(
                        format!("{host}: {} writable", req.dir),
                        e.to_string(),
                        format!(
                            "the forced command's --dir must allow {} (or lie above it)",
                            req.dir
                        ),
                    ));
                }
            }
        }
        if fine {
            good.push(ch);
        }
    }
    good
}

fn dir_links(
    host: &str,
    req: &CheckRequest,
    sysid: Option<u64>,
    s: &crate::net::wire::SetupChecked,
    report: &mut Report,
) {
    let what = format!("{host}: {} writable", req.dir);
    match &s.dir_error {
        Some(e) => report.links.push(Link::broken(
            what,
            e.clone(),
            format!(
                "on {host}, make {} (or its archive root) owned and writable by the user of the forced command",
                req.dir
            ),
        )),
        None => report.links.push(Link::ok(what)),
    }
    let what = format!("{host}: {} belongs to this cluster", req.dir);
    match (s.recorded_system_identifier, sysid) {
        (Some(theirs), Some(ours)) if theirs != ours => report.links.push(Link::broken(
            what,
            format!("it holds WAL of database system {theirs}, this cluster is {ours}"),
            "give this cluster a DST-DIR of its own (two clusters never share one)",
        )),
        (Some(_), _) => report.links.push(Link::ok(what)),
        (None, _) => report.links.push(Link::ok(format!(
            "{what} (not bound yet: the first segment binds it)"
        ))),
    }
}

fn peer_link(
    host: &str,
    peer: &str,
    dir: &str,
    s: &crate::net::wire::SetupChecked,
    report: &mut Report,
) {
    let what = format!("{host} reaches {peer} (the second copy)");
    match &s.peer_error {
        Some(e) => report.links.push(Link::broken(
            what,
            e.clone(),
            format!(
                "add {host}'s key (archive user's) to {peer}'s authorized_keys as `{}`, and check {host}'s ssh_config entry for {peer}",
                key_line("peer", dir)
            ),
        )),
        None => report.links.push(Link::ok(what)),
    }
}

/// Makes PostgreSQL finish a segment; its name.
fn switch_wal(req: &CheckRequest, report: &mut Report) -> Option<String> {
    let what = "pg_switch_wal(): a segment to archive";
    let result = pg_client(&req.dsn).and_then(|mut c| {
        // A record first, so that the switch always completes a segment.
        c.query_one(
            "select pg_walfile_name(pg_switch_wal()) \
             from (select pg_logical_emit_message(false, 'pgarchive-check', 'probe')) m",
            &[],
        )
        .map(|r| r.get::<_, String>(0))
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(seg) => {
            report.links.push(Link::ok(format!("{what}: {seg}")));
            Some(seg)
        }
        Err(e) => {
            report.links.push(Link::broken(
                what,
                e,
                "run pgarchive-check as a superuser (postgres), or a role allowed pg_switch_wal()",
            ));
            None
        }
    }
}

/// Waits until every server holds `segment`.
async fn arrives(
    req: &CheckRequest,
    mut channels: Vec<Channel>,
    segment: &str,
    report: &mut Report,
) {
    let deadline = Instant::now() + req.timeout;
    for ch in &mut channels {
        let host = ch.host().to_string();
        let what = format!("{host}: holds {segment} (archived through archive_command)");
        let held = loop {
            match ch.check_setup(&req.dir, None, Some(segment)).await {
                Ok(s) if s.holds == Some(true) => break Ok(()),
                Ok(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Ok(_) => break Err(format!("not there after {} s", req.timeout.as_secs())),
                Err(e) => break Err(e.to_string()),
            }
        };
        match held {
            Ok(()) => report.links.push(Link::ok(what)),
            Err(e) => report.links.push(Link::broken(
                what,
                e,
                "read pg_stat_archiver (last_failed_wal) and PostgreSQL's log for archive-cmd's error",
            )),
        }
    }
    for ch in channels {
        ch.close().await;
    }
}

/// On a standby: the newest segment of each server restores and decodes.
async fn restores(req: &CheckRequest, channels: Vec<Channel>, report: &mut Report) {
    for mut ch in channels {
        let host = ch.host().to_string();
        let what = format!("{host}: the newest segment of {} restores", req.dir);
        match newest_segment_decodes(&mut ch, &req.dir).await {
            Ok(name) => report.links.push(Link::ok(format!("{what} ({name})"))),
            Err(e) => report.links.push(Link::broken(
                what,
                e.to_string(),
                format!(
                    "check that SRC-DIR {} is the primary's DST-DIR and that {host} holds WAL (archive-status)",
                    req.dir
                ),
            )),
        }
        ch.close().await;
    }
}

async fn newest_segment_decodes(ch: &mut Channel, dir: &str) -> Result<String> {
    let names = ch.list(dir).await?;
    let newest = names
        .iter()
        .filter_map(|e| {
            WalName::parse(&e.name)
                .ok()
                .filter(WalName::has_page_header)
        })
        .max_by(|a, b| a.to_string().cmp(&b.to_string()))
        .ok_or_else(|| Error::NotFound(format!("{dir} holds no WAL segment yet")))?;
    let mut stored = Vec::new();
    ch.get(dir, &newest.to_string(), &mut stored).await?;
    let raw = codec::decode_all(codec::sniff(&stored), &stored)
        .map_err(|e| Error::Refused(format!("{newest} does not decode: {e}")))?;
    page_header::validate_first_page(&raw, &newest)
        .map_err(|e| Error::Refused(format!("{newest}: {e}")))?;
    Ok(newest.to_string())
}
