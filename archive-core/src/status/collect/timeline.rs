//! What a cluster's chains need before they can be walked: the segment
//! size and the newest timeline's history (its ancestors and switch
//! points), each asked of the servers only when nothing local tells.

use crate::common::codec;
use crate::common::wal::{self, WalName};
use crate::status::chain::{self, HistoryEntry, Timelines};
use crate::status::ClusterReport;

use super::requests::HostData;
use super::{Collector, Target};

/// A segment size and where it came from.
pub(super) struct SegmentSize {
    pub(super) bytes: u64,
    /// "option", "backup labels", "size of <segment>", "default (…)".
    pub(super) source: String,
}

impl Collector {
    /// Records the chain's end (`newest`), the segment size and the newest
    /// timeline's history in `report`; returns the segment size and the
    /// timelines (or why the history cannot be followed).
    pub(super) async fn chain_end(
        &mut self,
        t: &Target,
        hosts: &[HostData],
        newest: Option<&WalName>,
        report: &mut ClusterReport,
    ) -> (u64, std::result::Result<Timelines, String>) {
        let size = self.segment_size(t, hosts, newest).await;
        report.segment_size = Some(size.bytes);
        report.segment_size_source = size.source;
        let mut timelines = Ok(Timelines::single(newest.map_or(1, WalName::timeline)));
        if let Some(w) = newest {
            report.newest_segment = Some(w.to_string());
            report.timeline = Some(w.timeline());
            if w.timeline() > 1 {
                timelines = self.history(t, hosts, w.timeline()).await.and_then(|h| {
                    report.history = h.clone();
                    Timelines::from_history(w.timeline(), &h)
                });
            }
        }
        (size.bytes, timelines)
    }

    /// The segment size: the option, the backup labels, the newest segment's
    /// decoded size, else 16 MiB.
    async fn segment_size(
        &mut self,
        t: &Target,
        hosts: &[HostData],
        newest: Option<&WalName>,
    ) -> SegmentSize {
        let found = |bytes: u64, source: String| SegmentSize { bytes, source };
        if let Some(s) = self.opts.segment_size {
            return found(s, "option".into());
        }
        let labels: Vec<(&str, u64)> = hosts
            .iter()
            .filter_map(|h| h.listing.as_ref()?.backups.as_ref())
            .flatten()
            .filter_map(|b| Some((b.start_wal.as_deref()?, b.start_lsn?)))
            .collect();
        if let Some(s) = chain::segment_size_from_labels(labels) {
            return found(s, "backup labels".into());
        }
        if let Some(w) = newest {
            if let Some(h) = hosts.iter().find(|h| h.has(w.as_str()).is_some()) {
                if let Some(size) = self.decoded_size(t, &h.host, w).await {
                    return found(size, format!("size of {w}"));
                }
            }
        }
        found(
            wal::DEFAULT_SEGMENT_SIZE,
            "default (neither the labels nor the newest segment tell; use --segment-size)".into(),
        )
    }

    /// The decoded size of segment `w` on `host`, when it is a valid
    /// segment size.
    async fn decoded_size(&mut self, t: &Target, host: &str, w: &WalName) -> Option<u64> {
        let mut conn = self.take(host);
        let res = match conn.channel(&self.ssh).await {
            Ok(ch) => ch.digests(&t.wals_dir, &[w.to_string()]).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &res {
            conn.failed(e);
        }
        self.conns.insert(host.to_string(), conn);
        match res.ok()?.first() {
            Some(Some(d)) if wal::check_segment_size(d.raw_size).is_ok() => Some(d.raw_size),
            _ => None,
        }
    }

    /// Fetches and parses the history file of timeline `tli` from the first
    /// server that holds it.
    async fn history(
        &mut self,
        t: &Target,
        hosts: &[HostData],
        tli: u32,
    ) -> std::result::Result<Vec<HistoryEntry>, String> {
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
