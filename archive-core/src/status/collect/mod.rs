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
//!
//! The files: `requests` (one server's channel and requests), `timeline`
//! (segment size, timeline history), `compare` (divergent and one-sided
//! files), `server` (one server's report and chain), `dropped` (the
//! primary's drop log).

mod compare;
mod dropped;
mod requests;
mod server;
mod timeline;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use crate::net::ssh::SshSettings;
use crate::status::chain;

use self::requests::{describe, detail_phase, list_phase, Conn, HostData};
use self::server::ChainInputs;
use super::{ClusterReport, QueueCluster, QueueServer};

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
    /// The queue's tasks per server, by host.
    pub queue_servers: HashMap<String, QueueServer>,
}

/// Names kept in a report's lists (counts are complete).
const MAX_NAMES: usize = 100;

/// Talks to the archive servers; keeps one channel per host for the run.
pub struct Collector {
    ssh: SshSettings,
    opts: Options,
    conns: HashMap<String, Conn>,
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
        let mut hosts = self.list_all(t).await;
        let readable: Vec<usize> = (0..hosts.len())
            .filter(|&i| hosts[i].listing.is_some())
            .collect();

        // 2. The chain's end, the segment size, the newest timeline's history.
        let union: BTreeSet<&str> = readable
            .iter()
            .flat_map(|&i| hosts[i].files().iter())
            .map(|e| e.name.as_str())
            .collect();
        let newest = chain::newest_segment(union.iter().copied());
        let (seg_size, timelines) = self
            .chain_end(t, &hosts, newest.as_ref(), &mut report)
            .await;

        // 3. Same-named files to compare by content.
        let candidates = compare::candidates(&hosts, &readable, &union, &self.opts);
        report.unverified.extend(candidates.over_limit);
        let candidates = candidates.names;

        // 4. Digests and owed/parked/rejected, every readable host at once.
        self.detail_all(t, &mut hosts, &readable, &candidates).await;
        compare::compare(&mut report, &hosts, &candidates);

        // 5. Per server.
        let inputs = ChainInputs {
            hosts: &hosts,
            readable: &readable,
            timelines: &timelines,
            seg_size,
            newest: newest.as_ref(),
        };
        self.add_servers(&mut report, t, now, &inputs);

        // 6. The primary's drops.
        if let Some(state_dir) = &self.opts.state_dir {
            dropped::add_dropped(
                &mut report,
                state_dir,
                &t.cluster,
                &hosts,
                &readable,
                seg_size,
            );
        }
        report
    }

    /// The listing phase on every host of `t` at once.
    async fn list_all(&mut self, t: &Target) -> Vec<HostData> {
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
        hosts
    }

    /// The detail phase on every readable host at once: digests of the
    /// candidates it holds, and its `DirStatus`.
    async fn detail_all(
        &mut self,
        t: &Target,
        hosts: &mut [HostData],
        readable: &[usize],
        candidates: &[String],
    ) {
        let mut set = tokio::task::JoinSet::new();
        for &i in readable {
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
    }

    /// Every server's report, chain and one-sided files, and a note when
    /// not every server could be read.
    fn add_servers(&self, report: &mut ClusterReport, t: &Target, now: i64, c: &ChainInputs<'_>) {
        let (hosts, readable) = (c.hosts, c.readable);
        for (i, h) in hosts.iter().enumerate() {
            let mut s = server::server_report(t, h, now, c.seg_size);
            s.requests = self.conns.get(&h.host).map_or(0, |c| c.requests);
            if h.listing.is_some() {
                s.chain = server::chain_report(&s, i, c);
                if readable.len() >= 2 {
                    let only = compare::one_sided(hosts, i, readable);
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
    }
}
