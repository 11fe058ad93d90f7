//! Findings about the WAL on the servers: a server that cannot be read,
//! the newest segment's age, the chain and its gaps, files only one server
//! holds, owed and conflicting copies, divergent and uncompared files.

use super::{some_names, Level, Sink, Thresholds};
use crate::status::{human_age, ClusterReport, GapRange, ServerReport};

/// A server that cannot be read, and the age of its newest segment.
pub(super) fn reachability(s: &ServerReport, t: &Thresholds, sink: &mut Sink<'_>) {
    let host = Some(s.host.as_str());
    if let Some(e) = &s.error {
        sink.add(
            Level::Unknown,
            "unreadable",
            host,
            "cannot be read".into(),
            e.clone(),
        );
    }
    if let (Some(age), Some(name)) = (s.newest_age_secs, &s.newest_segment) {
        let level = t.newest_age.level(age.max(0) as u64);
        sink.add(
            level,
            "newest_age",
            host,
            format!("newest segment {} old", human_age(age)),
            format!(
                "the newest segment on {} is {name}, {} old: is the primary archiving (pg_stat_archiver, its log), or idle without archive_timeout?",
                s.host,
                human_age(age)
            ),
        );
    }
}

/// A chain that cannot be followed, and its gaps.
pub(super) fn chain(s: &ServerReport, t: &Thresholds, sink: &mut Sink<'_>) {
    let host = Some(s.host.as_str());
    if let Some(ch) = &s.chain {
        let from = match ch.from_backup {
            Some(n) => format!("backup data.master.{n} (START WAL {})", ch.from),
            None => format!("the oldest segment {} (no backup)", ch.from),
        };
        if let Some(e) = &ch.error {
            sink.add(
                Level::Critical,
                "chain",
                host,
                "WAL chain broken".into(),
                format!(
                    "the WAL chain from {from} on {} cannot be followed: {e}",
                    s.host
                ),
            );
        }
        let ranges: Vec<String> = ch.gaps.iter().map(GapRange::describe).collect();
        sink.add(
            t.gaps.level(ch.gap_segments),
            "gap",
            host,
            format!("{} segment(s) missing on all servers", ch.gap_segments),
            format!(
                "{} segment(s) of the WAL chain from {from} on {} to {} are missing on every server: {}; a restore from that backup cannot go past them: if the primary still has them in pg_wal, archive them again with archive-cmd; otherwise take a new base backup",
                ch.gap_segments,
                s.host,
                ch.to,
                some_names(&ranges, ch.gaps.len() as u64, 5)
            ),
        );
    }
}

/// Files only this server holds, files it owes its peer, and conflicting
/// copies it parked or refused.
pub(super) fn copies(c: &ClusterReport, s: &ServerReport, t: &Thresholds, sink: &mut Sink<'_>) {
    let host = Some(s.host.as_str());
    let peers: Vec<&str> = c
        .servers
        .iter()
        .filter(|o| o.host != s.host)
        .map(|o| o.host.as_str())
        .collect();
    sink.add(
        t.one_sided.level(s.one_sided),
        "one_sided",
        host,
        format!("{} file(s) only here", s.one_sided),
        format!(
            "{} file(s) are on {} but not on {}: {}; a single copy until wal-sync (or the owed delivery) runs: wal-sync {} {}",
            s.one_sided,
            s.host,
            peers.join(", "),
            some_names(&s.one_sided_names, s.one_sided, 5),
            c.wals_dir,
            peers.first().copied().unwrap_or("PEER")
        ),
    );
    if let Some(n) = s.owed {
        let to: Vec<String> = s
            .owed_to
            .iter()
            .map(|p| format!("{} to {}", p.count, p.peer))
            .collect();
        sink.add(
            t.owed.level(n),
            "owed",
            host,
            format!("{n} file(s) owed"),
            format!(
                "{} owes {n} file(s) ({}) it could not forward: is the peer down? they are delivered when it answers (archive-remote-cmd deliver-owed)",
                s.host,
                to.join(", ")
            ),
        );
    }
    let parked = s.conflicts.unwrap_or(0);
    let rejected = s.rejected.unwrap_or(0);
    sink.add(
        t.conflicts.level(parked + rejected),
        "conflicts",
        host,
        format!("{parked} parked conflict(s), {rejected} rejected copy(ies)"),
        format!(
            "{} holds {parked} owed file(s) parked because the peer has other content under the name, and {rejected} incoming copy(ies) refused as conflicting ({}/.pgarchive/conflicts, .pgarchive/rejected): compare them with the stored files, then remove them",
            s.host, c.wals_dir
        ),
    );
}

/// The cluster as a whole: no WAL archived at all, divergent files, files
/// left uncompared.
pub(super) fn cluster(c: &ClusterReport, t: &Thresholds, sink: &mut Sink<'_>) {
    let readable = c.servers.iter().filter(|s| s.error.is_none()).count();
    if readable > 0 && c.newest_segment.is_none() {
        sink.add(
            Level::Warning,
            "newest_age",
            None,
            "no WAL archived".into(),
            format!(
                "no WAL segment in {} on any server that answered: is archive_command set to archive-cmd with this directory?",
                c.wals_dir
            ),
        );
    }
    let n = c.divergent.len() as u64;
    let names: Vec<&str> = c.divergent.iter().map(|d| d.name.as_str()).collect();
    sink.add(
        t.divergent.level(n),
        "divergent",
        None,
        format!("{n} divergent file(s)"),
        format!(
            "{n} file(s) differ between the servers under the same name: {}; neither copy is overwritten by wal-sync: compare them (archive-status --json lists sizes and checksums) and keep the one whose WAL page headers match the cluster",
            some_names(&names, n, 10)
        ),
    );
    let n = c.unverified.len() as u64;
    sink.add(
        t.unverified.level(n),
        "unverified",
        None,
        format!("{n} file(s) not compared"),
        format!(
            "{n} same-named file(s) differ in stored size but were not compared by content: {}; rerun with a higher --max-digests",
            some_names(&c.unverified, n, 10)
        ),
    );
}

#[cfg(test)]
mod tests {
    use crate::status::check::tests::{assert_default_levels, Breaker};
    use crate::status::check::Level;
    use crate::status::{Divergent, GapRange, Report, ServerReport};

    #[test]
    fn each_wal_problem_gets_its_default_level() {
        let cases: Vec<(&str, Level, Breaker)> = vec![
            (
                "gap",
                Level::Critical,
                Box::new(|r: &mut Report| {
                    let ch = r.clusters[0].servers[0].chain.as_mut().unwrap();
                    ch.gap_segments = 1;
                    ch.gaps.push(GapRange {
                        from: "000000010000000000000003".into(),
                        to: "000000010000000000000003".into(),
                        count: 1,
                    });
                }),
            ),
            (
                "chain",
                Level::Critical,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].chain.as_mut().unwrap().error = Some("x".into());
                }),
            ),
            (
                "one_sided",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[1].one_sided = 1;
                }),
            ),
            (
                "divergent",
                Level::Critical,
                Box::new(|r: &mut Report| {
                    r.clusters[0].divergent.push(Divergent::default());
                }),
            ),
            (
                "owed",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].owed = Some(10);
                }),
            ),
            (
                "conflicts",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].rejected = Some(1);
                }),
            ),
            (
                "newest_age",
                Level::Warning,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].newest_age_secs = Some(2 * 3600);
                }),
            ),
            (
                "newest_age",
                Level::Critical,
                Box::new(|r: &mut Report| {
                    r.clusters[0].servers[0].newest_age_secs = Some(7 * 3600);
                }),
            ),
            (
                "unreadable",
                Level::Unknown,
                Box::new(|r: &mut Report| {
                    let s = &mut r.clusters[0].servers[1];
                    *s = ServerReport {
                        host: "arch2".into(),
                        error: Some("host arch2: down".into()),
                        ..Default::default()
                    };
                }),
            ),
        ];
        assert_default_levels(cases);
    }
}
