//! What the worker does with the buffer: which buffered segments must go
//! ([`stale`]) and which segments to fetch next ([`Plan`]), within
//! `restore_queue_max` and `restore_parallel`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::{Entry, Want};
use crate::common::wal::WalKind;

/// Buffered segments that must go: another timeline, not a segment, or
/// outside the window `want` asks for (stale: older than requested, or
/// beyond what the bound allows).
pub(crate) fn stale<'a>(
    want: Option<&Want>,
    queue_max: u64,
    entries: &'a [Entry],
) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| {
            let Some(w) = want else { return true };
            if e.name.kind() != WalKind::Segment || e.name.timeline() != w.tli {
                return true;
            }
            match w.window(queue_max) {
                None => true,
                Some((first, last)) => {
                    let s = e.name.segment_number(w.seg_size);
                    s < first || s > last
                }
            }
        })
        .collect()
}

/// What the worker should start now, given the buffer and its transfers.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// The request.
    pub want: &'a Want,
    /// Segment numbers buffered (complete).
    pub present: &'a BTreeSet<u64>,
    /// Bytes of complete segments and claims in the buffer.
    pub bytes_used: u64,
    /// Segment numbers being fetched: each holds one of `parallel`
    /// transfers.
    pub inflight: &'a BTreeSet<u64>,
    /// Segment numbers received and being made durable (fsync, rename):
    /// not fetched again and counted against the bound, but no longer
    /// holding a transfer, so the next one starts while the disk works.
    pub committing: &'a BTreeSet<u64>,
    /// Segment numbers not to retry before the given instant (not found,
    /// bad copies, failed hosts).
    pub waiting: &'a BTreeMap<u64, Instant>,
    /// Now.
    pub now: Instant,
    /// `restore_queue_max`.
    pub queue_max: u64,
    /// `restore_parallel`.
    pub parallel: usize,
}

impl Plan<'_> {
    /// Segment numbers to fetch now, oldest first: the lowest missing ones
    /// of the window, no more than `parallel` transfers at once, never past
    /// a segment that is waiting for a retry, and only while every transfer,
    /// counted as a whole segment, fits in `queue_max` with what is buffered.
    pub(crate) fn next(&self) -> Vec<u64> {
        let Some((first, last)) = self.want.window(self.queue_max) else {
            return Vec::new();
        };
        let seg = self.want.seg_size;
        let pending = self.inflight.len() + self.committing.len();
        let mut used = self.bytes_used + pending as u64 * seg;
        let mut out = Vec::new();
        for s in first..=last {
            if self.inflight.len() + out.len() >= self.parallel {
                break;
            }
            if self.present.contains(&s)
                || self.inflight.contains(&s)
                || self.committing.contains(&s)
            {
                continue;
            }
            if self.waiting.get(&s).is_some_and(|t| self.now < *t) {
                break;
            }
            if used + seg > self.queue_max {
                break;
            }
            used += seg;
            out.push(s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{want, MIB};
    use super::*;
    use crate::common::wal::WalName;

    /// The sets a plan reads, owned by a test.
    #[derive(Default)]
    struct Sets {
        present: BTreeSet<u64>,
        inflight: BTreeSet<u64>,
        committing: BTreeSet<u64>,
        waiting: BTreeMap<u64, Instant>,
    }

    impl Sets {
        fn plan<'a>(
            &'a self,
            want: &'a Want,
            bytes_used: u64,
            queue_max: u64,
            parallel: usize,
        ) -> Plan<'a> {
            Plan {
                want,
                present: &self.present,
                bytes_used,
                inflight: &self.inflight,
                committing: &self.committing,
                waiting: &self.waiting,
                now: Instant::now(),
                queue_max,
                parallel,
            }
        }
    }

    #[test]
    fn plan_fetches_lowest_missing_within_parallel_and_bound() {
        let w = want(10, false);
        let sets = Sets {
            present: [12].into(),
            inflight: [11].into(),
            ..Default::default()
        };
        let p = sets.plan(&w, MIB, 4 * MIB, 4);
        // 12 buffered (1 MiB) + 11 in flight (1 MiB): room for 2 more.
        assert_eq!(p.next(), vec![13, 14]);
        let p = Plan { parallel: 2, ..p };
        assert_eq!(p.next(), vec![13]);
        // A claim being handed over counts too.
        let p = Plan {
            bytes_used: 2 * MIB,
            parallel: 4,
            ..p
        };
        assert_eq!(p.next(), vec![13]);
    }

    /// A transfer that ended held its slot through the fsync of its
    /// segment: with every transfer committing at once, the machine sat
    /// idle for the disk between batches (a sixth of the worker's time).
    #[test]
    fn a_committing_segment_frees_its_transfer_but_not_its_room() {
        let w = want(10, false);
        let sets = Sets {
            inflight: [13].into(),
            committing: [11, 12].into(),
            ..Default::default()
        };
        let p = sets.plan(&w, 0, 5 * MIB, 2);
        // 11 and 12 are not fetched again; one transfer runs (13), so one
        // more starts; 3 segments pending leave room for 2 in 5 MiB.
        assert_eq!(p.next(), vec![14]);
        let p = Plan {
            queue_max: 3 * MIB,
            ..p
        };
        assert_eq!(
            p.next(),
            Vec::<u64>::new(),
            "committing ones fill the bound"
        );
    }

    #[test]
    fn plan_never_exceeds_the_bound_whatever_the_state() {
        let w = want(100, false);
        for q in 1..8u64 {
            for used in 0..=q {
                for (nin, ncom) in [(0, 0), (1, 0), (2, 0), (0, 1), (1, 2), (0, 3)] {
                    let sets = Sets {
                        inflight: (101..101 + nin).collect(),
                        committing: (101 + nin..101 + nin + ncom).collect(),
                        ..Default::default()
                    };
                    let n = sets.plan(&w, used * MIB, q * MIB, 8).next().len() as u64;
                    let pending = nin + ncom;
                    if used + pending <= q {
                        assert!(
                            used + pending + n <= q,
                            "q={q} used={used} inflight={nin} committing={ncom} n={n}"
                        );
                    } else {
                        assert_eq!(n, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn plan_stops_at_a_segment_waiting_for_retry() {
        let w = want(10, false);
        let now = Instant::now();
        let sets = Sets {
            waiting: [(12, now + Duration::from_secs(1))].into(),
            ..Default::default()
        };
        let p = Plan {
            now,
            ..sets.plan(&w, 0, 8 * MIB, 4)
        };
        assert_eq!(p.next(), vec![11]);
        let later = now + Duration::from_secs(2);
        let p = Plan { now: later, ..p };
        assert_eq!(p.next(), vec![11, 12, 13, 14]);
    }

    fn entry(n: &str) -> Entry {
        Entry {
            name: WalName::parse(n).unwrap(),
            size: MIB,
        }
    }

    #[test]
    fn stale_entries_are_older_beyond_or_on_another_timeline() {
        let entries = vec![
            entry("00000001000000000000000A"), // the requested one: consumed
            entry("00000001000000000000000B"),
            entry("00000001000000000000000E"),
            entry("00000001000000000000000F"), // beyond a 4-segment window
            entry("00000002000000000000000C"), // other timeline
        ];
        let w = want(10, false);
        let names: Vec<&str> = stale(Some(&w), 4 * MIB, &entries)
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "00000001000000000000000A",
                "00000001000000000000000F",
                "00000002000000000000000C"
            ]
        );
        assert_eq!(stale(None, 4 * MIB, &entries).len(), 5);
    }
}
