//! Reads a cluster's archive directory on every server and builds its
//! [`ClusterReport`].
//!
//! Per server, concurrently: `List` and `ListBackups` (one round trip
//! each, whatever the number of files); then, after comparing the
//! listings, `Digest` of the same-named files whose stored sizes differ
//! (batched) and `DirStatus`. Plus, once per cluster, the newest timeline's
//! history file (`Get`) and, when neither an option nor the backup labels
//! tell the segment size, one `Digest` of the newest segment. Channels are
//! kept for the next cluster on the same host; a host that cannot be
//! reached is not retried within the run (each attempt costs a timeout).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use crate::common::codec;
use crate::common::error::{Error, Result};
use crate::common::wal::{self, WalKind, WalName};
use crate::net::ssh::{self, Channel, SshSettings};
use crate::net::wire::{BackupEntry, DirStatus, ListEntry, RawDigest};

use super::chain::{self, Timelines};
use super::local;
use super::{
    BackupInfo, ChainReport, ClusterReport, CopyInfo, Divergent, DroppedReport, QueueCluster,
    QueueServer, ServerReport,
};

/// How thoroughly to look.
#[derive(Debug, Clone)]
pub struct Options {
    /// Compare every same-named file by content, not only those whose
    /// stored sizes differ (decodes every file on every server).
    pub checksum: bool,
    /// Most same-named files compared by content per cluster.
    pub max_digests: usize,
    /// WAL segment size; `None`: from the backup labels, else from the
    /// newest segment, else 16 MiB.
    pub segment_size: Option<u64>,
    /// The primary's state directory (drop log), when run on the primary.
    pub state_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            checksum: false,
            max_digests: 1000,
            segment_size: None,
            state_dir: None,
        }
    }
}

/// One cluster to check.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Cluster name.
    pub cluster: String,
    /// Archive servers (ssh aliases).
    pub hosts: Vec<String>,
    /// Archive directory on the servers.
    pub wals_dir: String,
    /// Backup directory on the servers.
    pub backup_dir: Option<String>,
    /// Its row in the backup queue, when one was consulted.
    pub queue: Option<QueueCluster>,
    /// The queue's tasks per server (host → tasks).
    pub queue_servers: Vec<(String, QueueServer)>,
}

/// Names of same-named files sent per `Digest` request: each is decoded on
/// the server before the reply, so the batch bounds the wait for it.
const DIGEST_BATCH: usize = 32;
/// Names kept in a report's lists (counts are complete).
const MAX_NAMES: usize = 100;

struct Conn {
    host: String,
    chan: Option<Channel>,
    /// Why it could not be reached (not retried within the run).
    down: Option<String>,
    requests: u32,
}

impl Conn {
    fn new(host: &str) -> Conn {
        Conn {
            host: host.to_string(),
            chan: None,
            down: None,
            requests: 0,
        }
    }

    async fn channel(&mut self, ssh: &SshSettings) -> Result<&mut Channel> {
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
    fn failed(&mut self, e: &Error) {
        if e.is_host_failure() {
            self.chan = None;
        }
    }
}

struct Listing {
    files: Vec<ListEntry>,
    backups: Option<Vec<BackupEntry>>,
    server_name: Option<String>,
}

async fn list_phase(
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

type Digests = HashMap<String, Option<RawDigest>>;

struct Details {
    digests: Digests,
    digest_errors: Vec<(Vec<String>, String)>,
    status: Result<DirStatus>,
}

async fn detail_phase(
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
                d.digest_errors.push((chunk.to_vec(), e.to_string()));
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

/// Talks to the archive servers; keeps one channel per host for the run.
pub struct Collector {
    ssh: SshSettings,
    opts: Options,
    conns: HashMap<String, Conn>,
}

struct HostData {
    host: String,
    listing: Option<Listing>,
    error: Option<String>,
    details: Option<Details>,
}

impl HostData {
    fn has(&self, name: &str) -> Option<&ListEntry> {
        let files = &self.listing.as_ref()?.files;
        files
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &files[i])
    }
}

impl Collector {
    /// A collector with these ssh settings and options.
    pub fn new(ssh: SshSettings, opts: Options) -> Collector {
        Collector {
            ssh,
            opts,
            conns: HashMap::new(),
        }
    }

    fn take(&mut self, host: &str) -> Conn {
        self.conns.remove(host).unwrap_or_else(|| Conn::new(host))
    }

    /// Closes every channel.
    pub async fn close(&mut self) {
        for (_, c) in self.conns.drain() {
            if let Some(ch) = c.chan {
                ch.close().await;
            }
        }
    }

    /// Checks one cluster; `now` is this machine's clock (Unix seconds).
    pub async fn cluster(&mut self, t: &Target, now: i64) -> ClusterReport {
        let mut report = ClusterReport {
            name: t.cluster.clone(),
            wals_dir: t.wals_dir.clone(),
            backup_dir: t.backup_dir.clone(),
            hosts: t.hosts.clone(),
            queue: t.queue.clone(),
            ..Default::default()
        };

        // 1. Listings, every host at once.
        let mut set = tokio::task::JoinSet::new();
        for (i, h) in t.hosts.iter().enumerate() {
            let mut conn = self.take(h);
            conn.requests = 0;
            let fut = list_phase(
                conn,
                self.ssh.clone(),
                t.wals_dir.clone(),
                t.backup_dir.clone(),
            );
            set.spawn(async move { (i, fut.await) });
        }
        let mut hosts: Vec<HostData> = t
            .hosts
            .iter()
            .map(|h| HostData {
                host: h.clone(),
                listing: None,
                error: Some(format!("host {h}: the listing task failed")),
                details: None,
            })
            .collect();
        while let Some(joined) = set.join_next().await {
            let Ok((i, (conn, res))) = joined else {
                continue;
            };
            match res {
                Ok(mut l) => {
                    l.files.sort_by(|a, b| a.name.cmp(&b.name));
                    hosts[i].listing = Some(l);
                    hosts[i].error = None;
                }
                Err(e) => hosts[i].error = Some(describe(&conn.host, &t.wals_dir, &e)),
            }
            self.conns.insert(conn.host.clone(), conn);
        }
        let readable: Vec<usize> = (0..hosts.len())
            .filter(|&i| hosts[i].listing.is_some())
            .collect();

        // 2. The chain's end, the segment size, the newest timeline's history.
        let union: BTreeSet<&str> = readable
            .iter()
            .flat_map(|&i| hosts[i].listing.as_ref().expect("readable").files.iter())
            .map(|e| e.name.as_str())
            .collect();
        let newest = chain::newest_segment(union.iter().copied());
        let (seg_size, source) = self.segment_size(t, &hosts, newest.as_ref()).await;
        report.segment_size = Some(seg_size);
        report.segment_size_source = source;
        let mut timelines: std::result::Result<Timelines, String> = Ok(Timelines::single(
            newest.as_ref().map_or(1, WalName::timeline),
        ));
        if let Some(w) = &newest {
            report.newest_segment = Some(w.to_string());
            report.timeline = Some(w.timeline());
            if w.timeline() > 1 {
                timelines = self.history(t, &hosts, w.timeline()).await.and_then(|h| {
                    report.history = h.clone();
                    Timelines::from_history(w.timeline(), &h)
                });
            }
        }

        // 3. Same-named files to compare by content.
        let mut candidates: Vec<String> = Vec::new();
        if readable.len() >= 2 {
            for name in &union {
                let sizes: Vec<u64> = readable
                    .iter()
                    .filter_map(|&i| hosts[i].has(name).map(|e| e.size))
                    .collect();
                if sizes.len() >= 2 && (self.opts.checksum || sizes.iter().any(|&s| s != sizes[0]))
                {
                    candidates.push(name.to_string());
                }
            }
        }
        let over = candidates.split_off(candidates.len().min(self.opts.max_digests));
        report.unverified.extend(over);

        // 4. Digests and owed/parked/rejected, every readable host at once.
        let mut set = tokio::task::JoinSet::new();
        for &i in &readable {
            let names: Vec<String> = candidates
                .iter()
                .filter(|n| hosts[i].has(n).is_some())
                .cloned()
                .collect();
            let conn = self.take(&hosts[i].host);
            let fut = detail_phase(
                conn,
                self.ssh.clone(),
                t.wals_dir.clone(),
                t.backup_dir.clone(),
                names,
            );
            set.spawn(async move { (i, fut.await) });
        }
        while let Some(joined) = set.join_next().await {
            let Ok((i, (conn, d))) = joined else {
                continue;
            };
            self.conns.insert(conn.host.clone(), conn);
            hosts[i].details = Some(d);
        }
        compare(&mut report, &hosts, &candidates);

        // 5. Per server.
        let newest_segno = newest.as_ref().map(|w| w.segment_number(seg_size));
        for (i, h) in hosts.iter().enumerate() {
            let mut s = self.server_report(t, h, now, seg_size);
            s.requests = self.conns.get(&h.host).map_or(0, |c| c.requests);
            if let Some(listing) = &h.listing {
                if let (Some(end), Some(end_name)) = (newest_segno, &newest) {
                    s.chain = chain_report(
                        &s, &hosts, i, &readable, &timelines, seg_size, end, end_name,
                    );
                }
                if readable.len() >= 2 {
                    let mine = &listing.files;
                    let only: Vec<&str> = mine
                        .iter()
                        .filter(|e| {
                            readable
                                .iter()
                                .filter(|&&j| j != i)
                                .any(|&j| hosts[j].has(&e.name).is_none())
                        })
                        .map(|e| e.name.as_str())
                        .collect();
                    s.one_sided = only.len() as u64;
                    s.one_sided_names =
                        only.iter().take(MAX_NAMES).map(|n| n.to_string()).collect();
                }
            }
            report.servers.push(s);
        }
        if readable.is_empty() {
            report.notes.push(
                "no server could be read: gaps, one-sided and divergent files are unknown".into(),
            );
        } else if readable.len() < hosts.len() {
            report.notes.push(
                "not every server could be read: gaps are segments missing on every server that answered; one-sided and divergent files are only compared between those".into(),
            );
        }

        // 6. The primary's drops.
        if let Some(state_dir) = &self.opts.state_dir {
            match local::read_dropped(state_dir, &t.cluster) {
                Ok(Some((log, mut segments))) => {
                    let oldest_needed = report
                        .servers
                        .iter()
                        .filter_map(|s| s.chain.as_ref())
                        .filter_map(|c| WalName::parse(&c.from).ok())
                        .map(|w| w.segment_number(seg_size))
                        .min();
                    for d in &mut segments {
                        let stored = readable.iter().any(|&i| hosts[i].has(&d.name).is_some());
                        let needed = match (oldest_needed, WalName::parse(&d.name)) {
                            (Some(min), Ok(w)) => w.segment_number(seg_size) >= min,
                            _ => true,
                        };
                        d.unresolved = !stored && needed;
                    }
                    report.dropped = Some(DroppedReport {
                        log,
                        total: segments.len() as u64,
                        unresolved: segments.iter().filter(|d| d.unresolved).count() as u64,
                        segments,
                    });
                }
                Ok(None) => {}
                Err(e) => report.notes.push(format!("drop log: {e}")),
            }
        }
        report
    }

    /// The segment size: the option, the backup labels, the newest segment's
    /// decoded size, else 16 MiB.
    async fn segment_size(
        &mut self,
        t: &Target,
        hosts: &[HostData],
        newest: Option<&WalName>,
    ) -> (u64, String) {
        if let Some(s) = self.opts.segment_size {
            return (s, "option".into());
        }
        let labels: Vec<(&str, u64)> = hosts
            .iter()
            .filter_map(|h| h.listing.as_ref()?.backups.as_ref())
            .flatten()
            .filter_map(|b| Some((b.start_wal.as_deref()?, b.start_lsn?)))
            .collect();
        if let Some(s) = chain::segment_size_from_labels(labels) {
            return (s, "backup labels".into());
        }
        if let Some(w) = newest {
            if let Some(h) = hosts.iter().find(|h| h.has(w.as_str()).is_some()) {
                let mut conn = self.take(&h.host);
                let res = match conn.channel(&self.ssh).await {
                    Ok(ch) => ch.digests(&t.wals_dir, &[w.to_string()]).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = &res {
                    conn.failed(e);
                }
                self.conns.insert(h.host.clone(), conn);
                if let Ok(d) = res {
                    if let Some(Some(d)) = d.first() {
                        if wal::check_segment_size(d.raw_size).is_ok() {
                            return (d.raw_size, format!("size of {w}"));
                        }
                    }
                }
            }
        }
        (
            wal::DEFAULT_SEGMENT_SIZE,
            "default (neither the labels nor the newest segment tell; use --segment-size)".into(),
        )
    }

    /// Fetches and parses the history file of timeline `tli` from the first
    /// server that holds it.
    async fn history(
        &mut self,
        t: &Target,
        hosts: &[HostData],
        tli: u32,
    ) -> std::result::Result<Vec<chain::HistoryEntry>, String> {
        let name = format!("{tli:08X}.history");
        let holders: Vec<&HostData> = hosts.iter().filter(|h| h.has(&name).is_some()).collect();
        if holders.is_empty() {
            return Err(format!(
                "the history file {name} of the newest timeline is missing on every server: a restore cannot follow the switch to timeline {tli}; copy it from the primary's pg_wal"
            ));
        }
        let mut last = String::new();
        for h in holders {
            let mut conn = self.take(&h.host);
            let mut bytes = Vec::new();
            let res = match conn.channel(&self.ssh).await {
                Ok(ch) => ch.get(&t.wals_dir, &name, &mut bytes).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &res {
                conn.failed(e);
            }
            self.conns.insert(h.host.clone(), conn);
            match res {
                Ok(_) => {
                    let c = codec::sniff(&bytes);
                    match codec::decode_all(c, &bytes) {
                        Ok(raw) => {
                            return chain::parse_history(&String::from_utf8_lossy(&raw))
                                .map_err(|e| format!("{name} on {}: {e}", h.host))
                        }
                        Err(e) => last = format!("{name} on {} does not decode: {e}", h.host),
                    }
                }
                Err(e) => last = format!("cannot read {name} from {}: {e}", h.host),
            }
        }
        Err(last)
    }
}

/// Divergent and unverified files from the digests.
fn compare(report: &mut ClusterReport, hosts: &[HostData], candidates: &[String]) {
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for h in hosts {
        if let Some(d) = &h.details {
            for (names, e) in &d.digest_errors {
                report.notes.push(format!(
                    "{} could not digest {} file(s) ({}…): {e}",
                    h.host,
                    names.len(),
                    names[0]
                ));
                failed.extend(names.iter().cloned());
            }
        }
    }
    for name in candidates {
        if failed.contains(name) {
            report.unverified.push(name.clone());
            continue;
        }
        let mut copies = Vec::new();
        for h in hosts {
            let (Some(entry), Some(d)) = (h.has(name), &h.details) else {
                continue;
            };
            // Removed since the listing (retention): nothing to compare.
            let Some(Some(dig)) = d.digests.get(name) else {
                continue;
            };
            copies.push(CopyInfo {
                server: h.host.clone(),
                stored_size: entry.size,
                raw_size: Some(dig.raw_size),
                blake3: Some(dig.blake3.clone()),
            });
        }
        if copies.len() < 2 {
            continue;
        }
        report.compared += 1;
        let first = (&copies[0].raw_size, &copies[0].blake3);
        if copies.iter().any(|c| (&c.raw_size, &c.blake3) != first) {
            report.divergent.push(Divergent {
                name: name.clone(),
                copies,
            });
        }
    }
    report.unverified.sort();
}

impl Collector {
    fn server_report(&self, t: &Target, h: &HostData, now: i64, seg_size: u64) -> ServerReport {
        let mut s = ServerReport {
            host: h.host.clone(),
            error: h.error.clone(),
            queue: t
                .queue_servers
                .iter()
                .find(|(host, _)| *host == h.host)
                .map(|(_, q)| q.clone()),
            ..Default::default()
        };
        let Some(l) = &h.listing else {
            return s;
        };
        s.server_name = l.server_name.clone();
        s.files = l.files.len() as u64;
        s.stored_bytes = l.files.iter().map(|e| e.size).sum();
        let mut segs: Vec<(WalName, &ListEntry)> = l
            .files
            .iter()
            .filter_map(|e| WalName::parse(&e.name).ok().map(|w| (w, e)))
            .filter(|(w, _)| w.kind() == WalKind::Segment)
            .collect();
        s.segments = segs.len() as u64;
        segs.sort_by(|a, b| a.0.cmp(&b.0));
        s.oldest_segment = segs
            .iter()
            .min_by(|a, b| wal::cmp_by_position(&a.0, &b.0, seg_size))
            .map(|(w, _)| w.to_string());
        if let Some((w, e)) = segs.last() {
            s.newest_segment = Some(w.to_string());
            s.newest_mtime = Some(e.mtime);
            s.newest_age_secs = Some(now - e.mtime);
        }
        let status = h.details.as_ref().map(|d| &d.status);
        let finished: HashMap<u32, i64> = match status {
            Some(Ok(st)) => st
                .backups
                .iter()
                .filter_map(|b| Some((b.index, b.finished?)))
                .collect(),
            _ => HashMap::new(),
        };
        for b in l.backups.iter().flatten() {
            let fin = finished.get(&b.index).copied();
            let age = fin
                .or_else(|| {
                    b.start_time
                        .as_deref()
                        .and_then(crate::client::restore_backup::parse_time)
                        .map(|t| t.timestamp())
                })
                .map(|t| now - t);
            s.backups.push(BackupInfo {
                index: b.index,
                complete: b.complete,
                start_wal: b.start_wal.clone(),
                start_lsn: b.start_lsn,
                start_time: b.start_time.clone(),
                finished: fin,
                age_secs: age,
            });
        }
        s.oldest_backup = s
            .backups
            .iter()
            .find(|b| b.complete && b.start_wal.is_some() && b.start_lsn.is_some())
            .map(|b| b.index);
        s.newest_backup_age_secs = s
            .backups
            .iter()
            .rev()
            .find(|b| b.complete)
            .and_then(|b| b.age_secs);
        match status {
            Some(Ok(st)) => {
                s.owed = Some(st.owed.iter().map(|p| p.count).sum());
                s.owed_to = st.owed.clone();
                s.conflicts = Some(st.conflicts.iter().map(|p| p.count).sum());
                s.conflicts_with = st.conflicts.clone();
                s.rejected = Some(st.rejected);
                s.rejected_names = st.rejected_names.clone();
                s.clock_skew_secs = Some(st.now - now);
            }
            Some(Err(e)) => {
                s.error = Some(format!(
                    "host {}: owed, parked and rejected files of {} unknown: {e}; if archive-remote-cmd there is older than archive-status, upgrade it",
                    h.host, t.wals_dir
                ));
            }
            None => {}
        }
        s
    }
}

/// An error reading a server, with what to do.
fn describe(host: &str, dir: &str, e: &Error) -> String {
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

#[allow(clippy::too_many_arguments)]
fn chain_report(
    s: &ServerReport,
    hosts: &[HostData],
    me: usize,
    readable: &[usize],
    timelines: &std::result::Result<Timelines, String>,
    seg_size: u64,
    end: u64,
    end_name: &WalName,
) -> Option<ChainReport> {
    let backup = s
        .oldest_backup
        .and_then(|n| s.backups.iter().find(|b| b.index == n));
    let mut report = ChainReport {
        from_backup: backup.map(|b| b.index),
        to: end_name.to_string(),
        ..Default::default()
    };
    let tl = match timelines {
        Ok(tl) => tl,
        Err(e) => {
            report.from = backup
                .and_then(|b| b.start_wal.clone())
                .unwrap_or_else(|| s.oldest_segment.clone().unwrap_or_default());
            report.error = Some(e.clone());
            return Some(report);
        }
    };
    let anywhere = |n: &str| readable.iter().any(|&i| hosts[i].has(n).is_some());
    let here = |n: &str| hosts[me].has(n).is_some();
    let start = match backup {
        Some(b) => {
            let name = b.start_wal.as_deref().unwrap_or_default();
            report.from = name.to_string();
            let w = match WalName::parse(name) {
                Ok(w) if w.check_segment_size(seg_size).is_ok() => w,
                _ => {
                    report.error = Some(format!(
                        "START WAL {name} of data.master.{} is not a segment name for {} MiB segments",
                        b.index,
                        seg_size >> 20
                    ));
                    return Some(report);
                }
            };
            let lsn = b.start_lsn.unwrap_or_else(|| w.start_lsn(seg_size));
            if !tl.leads_to_newest(w.timeline(), lsn) {
                let why = match tl.end_of(w.timeline()) {
                    Some(end) => format!(
                        "timeline {} was left at {} for timeline {}",
                        w.timeline(),
                        chain::format_lsn(end),
                        tl.newest()
                    ),
                    None => format!(
                        "timeline {} is not an ancestor of timeline {}",
                        w.timeline(),
                        tl.newest()
                    ),
                };
                report.error = Some(format!(
                    "data.master.{} starts at {} on timeline {}, which does not lead to the newest segment {end_name}: {why}",
                    b.index,
                    chain::format_lsn(lsn),
                    w.timeline()
                ));
                return Some(report);
            }
            w.segment_number(seg_size)
        }
        None => {
            // No backup: from the oldest segment on the newest timeline's path.
            let first = readable
                .iter()
                .flat_map(|&i| hosts[i].listing.as_ref().expect("readable").files.iter())
                .filter_map(|e| WalName::parse(&e.name).ok())
                .filter(|w| w.kind() == WalKind::Segment && w.check_segment_size(seg_size).is_ok())
                .filter(|w| {
                    tl.tli_for_segment(w.segment_number(seg_size), seg_size) == w.timeline()
                })
                .min_by_key(|w| w.segment_number(seg_size))?;
            report.from = first.to_string();
            first.segment_number(seg_size)
        }
    };
    match chain::walk(tl, seg_size, start, end.max(start), here, anywhere) {
        Ok(w) => {
            report.expected = w.expected;
            report.missing_here = w.missing_here;
            report.gap_segments = w.gap_segments;
            report.gaps = w.gaps;
        }
        Err(e) => report.error = Some(e),
    }
    Some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn host(name: &str, files: &[&str]) -> HostData {
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

    fn seg(tli: u32, segno: u64) -> String {
        WalName::from_segment_number(tli, segno, MB).to_string()
    }

    fn server_with_backup(start: Option<(String, u64)>) -> ServerReport {
        let mut s = ServerReport::default();
        if let Some((wal, lsn)) = start {
            s.backups.push(BackupInfo {
                index: 0,
                complete: true,
                start_wal: Some(wal),
                start_lsn: Some(lsn),
                ..Default::default()
            });
            s.oldest_backup = Some(0);
        }
        s
    }

    #[test]
    fn chain_without_a_backup_starts_at_the_oldest_segment_on_the_path() {
        // Timeline 2 begins in segment 4. Timeline 1's segments 5 and 6
        // (the old primary went on) are off the path; so is the lone
        // segment 2 of timeline 2, from before it began.
        let h = chain::parse_history("1\t0/400000\tx\n").unwrap();
        let tl = Ok(Timelines::from_history(2, &h).unwrap());
        let a = host(
            "arch1",
            &[
                &seg(2, 2),
                &seg(1, 3),
                &seg(2, 4),
                &seg(1, 5),
                &seg(1, 6),
                &seg(2, 6),
            ],
        );
        let b = host("arch2", &[&seg(1, 3), &seg(2, 4)]);
        let hosts = [a, b];
        let end = WalName::parse(&seg(2, 6)).unwrap();
        let s = server_with_backup(None);
        let ch = chain_report(&s, &hosts, 1, &[0, 1], &tl, MB, 6, &end).unwrap();
        assert_eq!(ch.from, seg(1, 3));
        assert_eq!(ch.from_backup, None);
        assert_eq!(ch.expected, 4);
        assert_eq!(ch.gap_segments, 1, "{ch:?}");
        assert_eq!(ch.gaps[0].from, seg(2, 5));
        assert_eq!(
            ch.missing_here, 1,
            "segment 6 of timeline 2 is on arch1 only"
        );
    }

    #[test]
    fn chain_from_a_backup_checks_its_timeline_and_its_start_segment() {
        let h = chain::parse_history("1\t0/400000\tx\n").unwrap();
        let tl = Ok(Timelines::from_history(2, &h).unwrap());
        let a = host("arch1", &[&seg(1, 2), &seg(1, 3), &seg(2, 4)]);
        let hosts = [a];
        let end = WalName::parse(&seg(2, 4)).unwrap();
        // Before the switch: fine.
        let s = server_with_backup(Some((seg(1, 2), 2 * MB + 0x28)));
        let ch = chain_report(&s, &hosts, 0, &[0], &tl, MB, 4, &end).unwrap();
        assert_eq!(
            (ch.expected, ch.gap_segments, ch.error.clone()),
            (3, 0, None)
        );
        // On timeline 1 after the switch: off the path.
        let s = server_with_backup(Some((seg(1, 4), 4 * MB + 0x28)));
        let ch = chain_report(&s, &hosts, 0, &[0], &tl, MB, 4, &end).unwrap();
        assert!(ch
            .error
            .unwrap()
            .contains("timeline 1 was left at 0/400000"));
        // On a timeline that is no ancestor at all.
        let s = server_with_backup(Some((seg(3, 3), 3 * MB + 0x28)));
        let ch = chain_report(&s, &hosts, 0, &[0], &tl, MB, 4, &end).unwrap();
        assert!(ch.error.unwrap().contains("not an ancestor"));
        // A backup whose START WAL is newer than every segment: the START
        // WAL itself is the gap.
        let s = server_with_backup(Some((seg(2, 7), 7 * MB + 0x28)));
        let ch = chain_report(&s, &hosts, 0, &[0], &tl, MB, 4, &end).unwrap();
        assert_eq!((ch.expected, ch.gap_segments), (1, 1));
        assert_eq!(ch.gaps[0].from, seg(2, 7));
        // A missing history file: the chain cannot be followed.
        let broken: std::result::Result<Timelines, String> = Err("no history".into());
        let ch = chain_report(&s, &hosts, 0, &[0], &broken, MB, 4, &end).unwrap();
        assert_eq!(ch.error.as_deref(), Some("no history"));
    }

    #[test]
    fn only_different_digests_make_a_divergent_file() {
        let mut a = host(
            "arch1",
            &[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003",
            ],
        );
        let mut b = host(
            "arch2",
            &[
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003",
            ],
        );
        let dig = |size: u64, h: &str| {
            Some(RawDigest {
                raw_size: size,
                blake3: h.into(),
            })
        };
        let details =
            |d: Vec<(&str, Option<RawDigest>)>, errors: Vec<(Vec<String>, String)>| Details {
                digests: d.into_iter().map(|(n, g)| (n.to_string(), g)).collect(),
                digest_errors: errors,
                status: Ok(DirStatus::default()),
            };
        a.details = Some(details(
            vec![
                ("000000010000000000000001", dig(MB, "aa")),
                ("000000010000000000000002", dig(MB, "bb")),
            ],
            vec![],
        ));
        b.details = Some(details(
            vec![
                // Same content, another compression: not divergent.
                ("000000010000000000000001", dig(MB, "aa")),
                ("000000010000000000000002", dig(MB, "cc")),
            ],
            vec![(
                vec!["000000010000000000000003".into()],
                "does not decode".into(),
            )],
        ));
        let mut r = ClusterReport::default();
        let candidates: Vec<String> = (1..=3)
            .map(|i| format!("00000001000000000000000{i}"))
            .collect();
        compare(&mut r, &[a, b], &candidates);
        assert_eq!(r.compared, 2);
        assert_eq!(r.divergent.len(), 1);
        assert_eq!(r.divergent[0].name, "000000010000000000000002");
        assert_eq!(r.unverified, ["000000010000000000000003"]);
        assert!(
            r.notes[0].contains("arch2 could not digest 1 file(s)"),
            "{:?}",
            r.notes
        );
    }

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
