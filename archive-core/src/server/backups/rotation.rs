//! Rotating backups ([`install`]) and putting a crashed rotation right
//! ([`repair`]).
//!
//! A new backup is built and verified in `data.master.new.<pid>` (a name
//! [`list`] ignores) and gets its SUCCESS marker there. It then joins the
//! numbering by renames only, each followed by a directory fsync, in an order
//! such that at every instant — so also after a crash at any point — the
//! numbered backups are contiguous from `.0`, complete, and in chronological
//! order, and no complete backup has been deleted except the oldest one being
//! rotated out:
//!
//! - fewer than `keep` backups: the new one is renamed to the next number;
//! - otherwise the new one is swapped (`renameat2(RENAME_EXCHANGE)`) with the
//!   newest, which is swapped with the one below, and so on down to `.0`; the
//!   temp name then holds the oldest, whose SUCCESS is removed before the
//!   directory is. (`{0:A,1:B}+C` → `{0:A,1:C}+B` → `{0:B,1:C}+A` → drop A.)
//!
//! [`repair`] (run under the caller's lock before each rotation) puts a crash
//! right: a leftover temp dir without SUCCESS is removed; one with SUCCESS is
//! re-inserted at its chronological place (by the `finished=` time its SUCCESS
//! records), or removed when it is older than every numbered backup (it was
//! being rotated out); numbering gaps (someone deleted a directory) are
//! closed by renaming downwards; a numbered directory without SUCCESS is not
//! ours to delete: it is moved out of the numbering to
//! `data.master.incomplete.<N>.<time>` and reported.
//!
//! Which backups stay is the union of a [`Retention`]'s rules: the newest
//! `keep` restorable points, every backup needed to restore to any point of
//! the last `keep_days` days, every pinned one (a [`PINNED`] file in it),
//! and every backup a kept incremental depends on (its chain, see
//! [`chain`]): a full backup never goes while an incremental of it stays.
//! The others are dropped one at a time, each by the same swaps: the newest
//! moves aside and is swapped down to the dropped one's place, which then
//! holds it (`{0:A,1:B,2:C}` dropping B → `{0:A,1:C}` + B → drop B).
//!
//! Callers serialize: base-backup holds its single-instance lock around
//! [`repair`] and [`install`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::common::durable;
use crate::common::error::{Error, Result};

use super::chain;
use super::legacy;
use super::marker::{mtime_micros, success_time_micros};
use super::{list, slot, Backup, INCOMPLETE_PREFIX, PREFIX, SUCCESS, TEMP_PREFIX};

/// A file that keeps its backup out of rotation (its text: why, by whom).
pub const PINNED: &str = "PINNED";

/// What rotation keeps (the union of its rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many backups (keep_backups_cnt, at least 1).
    pub keep: u32,
    /// Every backup needed to restore to any point of the last this many
    /// days: those that ended within them, and the newest one before.
    pub keep_days: Option<u32>,
    /// The window's end, Unix seconds (now).
    pub now: i64,
}

impl Retention {
    /// Which of `numbered` (oldest first) stay. Restorable points count
    /// (a full backup, or an incremental whose chain is whole, see
    /// [`chain`]); every backup a kept incremental depends on stays with it.
    fn kept(&self, numbered: &[Backup]) -> Vec<bool> {
        let n = numbered.len();
        let links = chain::resolve(numbered);
        let chains: Vec<Option<Vec<usize>>> = (0..n).map(|i| chain::chain(&links, i)).collect();
        // The newest `keep` restorable points.
        let newest: Vec<usize> = (0..n)
            .rev()
            .filter(|i| chains[*i].is_some())
            .take(self.keep as usize)
            .collect();
        // The newest restorable point that ended before the window opened
        // serves its first moments; everything after it too (and a backup
        // whose end is unknown, to be safe).
        let from = self.keep_days.map_or(n, |days| {
            let opens = self.now - i64::from(days) * 86_400;
            numbered
                .iter()
                .enumerate()
                .rposition(|(i, b)| {
                    chains[i].is_some() && b.consistency().by.is_some_and(|by| by <= opens)
                })
                .unwrap_or(0)
        });
        let mut kept: Vec<bool> = numbered
            .iter()
            .enumerate()
            .map(|(i, b)| {
                newest.contains(&i)
                    || i >= from
                    || (self.keep_days.is_some() && b.consistency().by.is_none())
                    || b.path.join(PINNED).exists()
            })
            .collect();
        for i in 0..n {
            if kept[i] {
                for j in chains[i].iter().flatten() {
                    kept[*j] = true;
                }
            }
        }
        kept
    }
}

/// Chronological key of a complete backup: SUCCESS's `finished=` time, else
/// SUCCESS's mtime (markers written by other tools), else, for Archive 2.0's
/// backups, when their files were last written; in microseconds.
fn finished_key(backup: &Path) -> i64 {
    let p = backup.join(SUCCESS);
    let from_text = fs::read_to_string(&p)
        .ok()
        .and_then(|t| success_time_micros(&t, "finished"));
    from_text
        .or_else(|| mtime_micros(&p))
        .or_else(|| {
            legacy::recognise(backup)
                .ok()
                .flatten()
                .and_then(|_| legacy::end_micros(backup))
        })
        .unwrap_or(0)
}

/// A leftover temp dir holds a complete backup (ours or Archive 2.0's,
/// moved aside by a rotation that crashed).
fn is_complete(dir: &Path) -> bool {
    dir.join(SUCCESS).is_file() || matches!(legacy::recognise(dir), Ok(Some(_)))
}

/// Swaps two directory entries atomically (RENAME_EXCHANGE). A file system
/// without it (NFS) is refused: three renames would leave a window, and a
/// crash in it, where a kept backup is out of the numbering and repair
/// takes it for the one being rotated out.
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => {}
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            return Err(Error::Usage(format!(
                "cannot rotate backups in {}: its file system cannot swap directories atomically (RENAME_EXCHANGE); keep backups on a local file system (ext4, xfs, btrfs)",
                a.parent().unwrap_or(a).display()
            )))
        }
        Err(e) => {
            return Err(Error::io(
                "cannot exchange",
                a,
                io::Error::from_raw_os_error(e.raw_os_error()),
            ))
        }
    }
    durable::sync_parent(a)
}

fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    durable::rename_noreplace(from, to).map_err(|e| Error::io("cannot rename", from, e))?;
    durable::sync_parent(to)
}

/// Removes a backup directory that is no longer wanted: SUCCESS first (and
/// fsynced), so a crash halfway never leaves a partial directory that looks
/// complete.
pub fn remove_backup_dir(dir: &Path) -> Result<()> {
    match fs::remove_file(dir.join(SUCCESS)) {
        Ok(()) => durable::sync_dir(dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot remove", dir.join(SUCCESS), e)),
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot remove", dir, e)),
    }
    durable::sync_parent(dir)
}

/// What [`repair`] changed (all empty when the directory was consistent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Leftover temp dirs removed (incomplete, or rotated-out oldest).
    pub removed: Vec<PathBuf>,
    /// Complete leftovers put back into the numbering, as (from, to).
    pub reinserted: Vec<(PathBuf, PathBuf)>,
    /// Numbered backups renumbered to close a gap, as (from, to).
    pub renumbered: Vec<(PathBuf, PathBuf)>,
    /// Numbered dirs without SUCCESS moved out of the numbering, as (from, to).
    pub set_aside: Vec<(PathBuf, PathBuf)>,
}

impl RepairReport {
    /// True when nothing had to be done.
    pub fn is_clean(&self) -> bool {
        *self == RepairReport::default()
    }
}

/// Brings `backup_dir` back to the invariant after a crash (see the module
/// docs). The caller holds the lock that serializes base-backup runs; a
/// missing directory is consistent.
pub fn repair(backup_dir: &Path) -> Result<RepairReport> {
    repair_except(backup_dir, None)
}

fn repair_except(backup_dir: &Path, skip: Option<&Path>) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    let rd = match fs::read_dir(backup_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(Error::io("cannot list backups in", backup_dir, e)),
    };
    let mut leftovers = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) && e.path().is_dir() && Some(e.path().as_path()) != skip {
            leftovers.push(e.path());
        }
    }
    // Numbered dirs without SUCCESS leave the numbering.
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    for b in list(backup_dir)?.into_iter().filter(|b| !b.complete) {
        let to = backup_dir.join(format!("{INCOMPLETE_PREFIX}{}.{stamp}", b.index));
        rename_durable(&b.path, &to)?;
        report.set_aside.push((b.path, to));
    }
    // Close gaps, lowest first, so the order is kept.
    for (pos, b) in list(backup_dir)?.into_iter().enumerate() {
        if b.index != pos as u32 {
            let to = slot(backup_dir, pos as u32);
            rename_durable(&b.path, &to)?;
            report.renumbered.push((b.path, to));
        }
    }
    // Leftovers: incomplete ones go, complete ones go back in order (or go
    // when older than everything: they were being rotated out).
    let (mut complete, incomplete): (Vec<PathBuf>, Vec<PathBuf>) =
        leftovers.into_iter().partition(|p| is_complete(p));
    for p in incomplete {
        remove_backup_dir(&p)?;
        report.removed.push(p);
    }
    complete.sort_by_key(|p| finished_key(p));
    for x in complete {
        let numbered = list(backup_dir)?;
        let key = finished_key(&x);
        let pos = numbered
            .iter()
            .position(|b| finished_key(&b.path) > key)
            .unwrap_or(numbered.len());
        if pos == 0 && !numbered.is_empty() {
            remove_backup_dir(&x)?;
            report.removed.push(x);
            continue;
        }
        // Swap it upwards through the newer ones, then append the newest.
        for b in &numbered[pos..] {
            exchange(&x, &b.path)?;
        }
        let to = slot(backup_dir, numbered.len() as u32);
        rename_durable(&x, &to)?;
        report.reinserted.push((x, to));
    }
    Ok(report)
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Where the new backup is now (`data.master.<keep-1>` once full).
    pub path: PathBuf,
    /// Backups rotated out (their former paths).
    pub dropped: Vec<PathBuf>,
    /// Backups kept, the new one included.
    pub kept: usize,
}

/// Makes the complete backup at `new` (a dir in `backup_dir`, normally
/// [`temp_dir`], with its SUCCESS marker) the newest numbered backup, then
/// drops the backups `retention` does not keep, the oldest as `.0`.
/// Crash-safe: see the module docs. Runs [`repair`] first (leaving `new`
/// alone).
///
/// [`temp_dir`]: super::temp_dir
pub fn install(backup_dir: &Path, new: &Path, retention: &Retention) -> Result<Installed> {
    if retention.keep == 0 {
        return Err(Error::Usage("keep_backups_cnt must be at least 1".into()));
    }
    if new.parent() != Some(backup_dir) || !new.join(SUCCESS).is_file() {
        return Err(Error::Usage(format!(
            "{} is not a complete backup in {}",
            new.display(),
            backup_dir.display()
        )));
    }
    let name = new.file_name().map(|n| n.to_string_lossy().into_owned());
    if name
        .as_deref()
        .and_then(|n| n.strip_prefix(PREFIX))
        .is_some_and(|n| n.parse::<u32>().is_ok())
    {
        return Err(Error::Usage(format!(
            "{} is already numbered",
            new.display()
        )));
    }
    repair_except(backup_dir, Some(new))?;
    rename_durable(new, &slot(backup_dir, list(backup_dir)?.len() as u32))?;

    let mut dropped = Vec::new();
    loop {
        let numbered = list(backup_dir)?;
        let Some(i) = retention.kept(&numbered).iter().position(|k| !k) else {
            return Ok(Installed {
                path: slot(backup_dir, numbered.len() as u32 - 1),
                dropped,
                kept: numbered.len(),
            });
        };
        drop_at(backup_dir, &numbered, i)?;
        dropped.push(numbered[i].path.clone());
    }
}

/// Drops `numbered[i]`: the newest moves aside and is swapped down to `i`,
/// so the numbering stays contiguous and in order at every instant.
fn drop_at(backup_dir: &Path, numbered: &[Backup], i: usize) -> Result<()> {
    let aside = backup_dir.join(format!("{TEMP_PREFIX}{}.drop", std::process::id()));
    let (top, rest) = numbered.split_last().expect("not empty");
    rename_durable(&top.path, &aside)?;
    for b in rest[i.min(rest.len())..].iter().rev() {
        exchange(&aside, &b.path)?;
    }
    remove_backup_dir(&aside)
}

#[cfg(test)]
mod tests {
    use super::super::{temp_dir, write_success};
    use super::*;

    /// A complete backup named `id` at `path` (its id in a file, for checks).
    fn make(path: &Path, id: &str) {
        fs::create_dir_all(path).unwrap();
        fs::write(path.join("id"), id).unwrap();
        write_success(path, &[("task", id.to_string())]).unwrap();
        // Distinct finished= times.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }

    /// Ids of the numbered backups, in index order, with their indexes.
    fn ids(dir: &Path) -> Vec<(u32, String)> {
        list(dir)
            .unwrap()
            .into_iter()
            .map(|b| (b.index, fs::read_to_string(b.path.join("id")).unwrap()))
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn ordered(v: &[(u32, &str)]) -> Vec<(u32, String)> {
        v.iter().map(|(n, s)| (*n, s.to_string())).collect()
    }

    fn keep(n: u32) -> Retention {
        Retention {
            keep: n,
            keep_days: None,
            now: 0,
        }
    }

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    /// A complete backup `id` whose end was `days_ago` days before NOW.
    fn ended(path: &Path, id: &str, days_ago: i64) {
        fs::create_dir_all(path).unwrap();
        fs::write(path.join("id"), id).unwrap();
        let at = chrono::DateTime::from_timestamp(NOW - days_ago * DAY, 0).unwrap();
        write_success(path, &[("consistent_by", at.to_rfc3339())]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }

    #[test]
    fn the_window_keeps_every_backup_needed_for_its_days() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        for (i, (id, ago)) in [("A", 10), ("B", 6), ("C", 3), ("D", 1)].iter().enumerate() {
            ended(&slot(dir, i as u32), id, *ago);
        }
        let t = temp_dir(dir, 1);
        ended(&t, "E", 0);
        let window = Retention {
            keep: 2,
            keep_days: Some(5),
            now: NOW,
        };
        // 5 days back is inside B (ended 6 days ago, C 3): B serves it.
        let got = install(dir, &t, &window).unwrap();
        assert_eq!(got.dropped, vec![slot(dir, 0)]);
        assert_eq!(got.path, slot(dir, 3));
        assert_eq!(ids(dir), ordered(&[(0, "B"), (1, "C"), (2, "D"), (3, "E")]));
        // A window that opens after every backup ended keeps the newest
        // before it, and no more than keep otherwise.
        let t = temp_dir(dir, 2);
        ended(&t, "F", 0);
        let short = Retention {
            keep_days: Some(0),
            ..window
        };
        install(dir, &t, &short).unwrap();
        assert_eq!(ids(dir), ordered(&[(0, "E"), (1, "F")]));
    }

    /// keep 2 over F1 <- I1 <- I2 (manifest checksums a1, b1, b2), then F2
    /// (a2): the newest two restorable points are I2 and F2, so F1 and I1 stay for I2; only when I2 is no
    /// longer among them does the whole chain go.
    #[test]
    fn a_full_backup_stays_while_a_kept_incremental_depends_on_it() {
        use super::super::chain::tests::make_backup;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        make_backup(&slot(dir, 0), "a1", None);
        make_backup(&slot(dir, 1), "b1", Some("a1"));
        make_backup(&slot(dir, 2), "b2", Some("b1"));
        let sums = |dir: &Path| -> Vec<String> {
            list(dir)
                .unwrap()
                .iter()
                .map(|b| fs::read_to_string(b.path.join(SUCCESS)).unwrap())
                .map(|t| super::super::success_value(&t, "task").unwrap().to_string())
                .collect()
        };
        let t = temp_dir(dir, 1);
        make_backup(&t, "a2", None);
        let got = install(dir, &t, &keep(2)).unwrap();
        assert!(got.dropped.is_empty(), "{:?}", got.dropped);
        assert_eq!(sums(dir), ["a1", "b1", "b2", "a2"]);
        // An incremental of F2: I2 is now the third newest point.
        let t = temp_dir(dir, 2);
        make_backup(&t, "c1", Some("a2"));
        install(dir, &t, &keep(2)).unwrap();
        assert_eq!(sums(dir), ["a2", "c1"]);
        // A broken incremental (its parent gone) is no restorable point.
        make_backup(&slot(dir, 2), "d0", Some("ee"));
        let t = temp_dir(dir, 3);
        make_backup(&t, "c2", Some("c1"));
        install(dir, &t, &keep(2)).unwrap();
        assert_eq!(sums(dir), ["a2", "c1", "c2"]);
    }

    #[test]
    fn pinned_backups_are_never_rotated_out() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        for (i, id) in ["A", "B", "C"].iter().enumerate() {
            make(&slot(dir, i as u32), id);
        }
        fs::write(slot(dir, 0).join(PINNED), "before the upgrade\n").unwrap();
        fs::write(slot(dir, 1).join(PINNED), "audit\n").unwrap();
        let t = temp_dir(dir, 1);
        make(&t, "D");
        let got = install(dir, &t, &keep(1)).unwrap();
        assert_eq!(got.dropped.len(), 1, "C only");
        assert_eq!(ids(dir), ordered(&[(0, "A"), (1, "B"), (2, "D")]));
        // Unpinned, it goes at the next rotation.
        fs::remove_file(slot(dir, 0).join(PINNED)).unwrap();
        let t = temp_dir(dir, 2);
        make(&t, "E");
        install(dir, &t, &keep(1)).unwrap();
        assert_eq!(ids(dir), ordered(&[(0, "B"), (1, "E")]));
        assert!(slot(dir, 0).join(PINNED).is_file(), "the pin moved with B");
    }

    /// A crash while a backup between two kept ones is being dropped: the
    /// one moved aside is always put back in order (at worst the dropped
    /// one comes back, to be dropped again), never lost.
    #[test]
    fn a_crash_while_dropping_a_middle_backup_loses_no_kept_one() {
        // Dropping B from A,B,C,D (A pinned): D aside, swapped with C, then B.
        let cases: &[(&[&str], &str)] = &[
            (&["A", "B", "C"], "D"),
            (&["A", "B", "D"], "C"),
            (&["A", "C", "D"], "B"),
        ];
        for (numbered, aside) in cases {
            let d = tempfile::tempdir().unwrap();
            let dir = d.path();
            let mut all: Vec<&str> = numbered.to_vec();
            all.push(aside);
            all.sort();
            for id in all {
                if id == *aside {
                    make(&dir.join(format!("{TEMP_PREFIX}9.drop")), id);
                } else {
                    let n = numbered.iter().position(|x| *x == id).unwrap();
                    make(&slot(dir, n as u32), id);
                }
            }
            repair(dir).unwrap();
            let got: Vec<String> = ids(dir).into_iter().map(|(_, s)| s).collect();
            assert_eq!(got, ["A", "B", "C", "D"], "from {numbered:?} + {aside}");
        }
    }

    #[test]
    fn install_fills_then_rotates_keeping_the_oldest_at_0() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        for (i, id) in ["A", "B", "C", "D"].iter().enumerate() {
            let t = temp_dir(dir, 100 + i as u32);
            make(&t, id);
            let got = install(dir, &t, &keep(2)).unwrap();
            assert!(!t.exists());
            assert_eq!(got.path, slot(dir, (i as u32).min(1)));
            assert_eq!(got.dropped.len(), usize::from(i >= 2));
        }
        assert_eq!(ids(dir), ordered(&[(0, "C"), (1, "D")]));
        assert_eq!(names(dir), vec!["data.master.0", "data.master.1"]);
        for b in list(dir).unwrap() {
            assert!(b.complete);
        }
    }

    #[test]
    fn install_with_keep_lowered_drops_the_oldest_ones() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        for (i, id) in ["A", "B", "C", "D"].iter().enumerate() {
            make(&slot(dir, i as u32), id);
        }
        let t = temp_dir(dir, 7);
        make(&t, "E");
        let got = install(dir, &t, &keep(2)).unwrap();
        assert_eq!(got.dropped.len(), 3);
        assert_eq!(ids(dir), ordered(&[(0, "D"), (1, "E")]));
        assert_eq!(names(dir), vec!["data.master.0", "data.master.1"]);

        let t = temp_dir(dir, 8);
        make(&t, "F");
        install(dir, &t, &keep(1)).unwrap();
        assert_eq!(ids(dir), ordered(&[(0, "F")]));
    }

    #[test]
    fn install_refuses_an_incomplete_backup() {
        let d = tempfile::tempdir().unwrap();
        let t = temp_dir(d.path(), 1);
        fs::create_dir(&t).unwrap();
        assert!(install(d.path(), &t, &keep(2)).is_err());
        make(&t, "A");
        assert!(install(d.path(), &t, &keep(0)).is_err());
    }

    #[test]
    fn repair_removes_unfinished_leftovers_and_keeps_backups() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        make(&slot(dir, 0), "A");
        let partial = temp_dir(dir, 55);
        fs::create_dir(&partial).unwrap();
        fs::write(partial.join("base.tar"), b"half").unwrap();
        let r = repair(dir).unwrap();
        assert_eq!(r.removed, vec![partial.clone()]);
        assert!(!partial.exists());
        assert_eq!(ids(dir), ordered(&[(0, "A")]));
        assert!(repair(dir).unwrap().is_clean());
    }

    #[test]
    fn every_crash_point_of_a_rotation_repairs_to_an_ordered_set() {
        // The states a crash can leave during `install` of D with keep 3 over
        // A,B,C, as (numbered, temp), and what repair must make of them.
        let cases: &[(&[&str], Option<&str>, &[&str])] = &[
            // New backup complete, not yet swapped in.
            (&["A", "B", "C"], Some("D"), &["A", "B", "C", "D"]),
            // After the first swap: C is out of the numbering.
            (&["A", "B", "D"], Some("C"), &["A", "B", "C", "D"]),
            // After the second.
            (&["A", "C", "D"], Some("B"), &["A", "B", "C", "D"]),
            // After the last: the temp holds the oldest, being rotated out.
            (&["B", "C", "D"], Some("A"), &["B", "C", "D"]),
            // Done.
            (&["B", "C", "D"], None, &["B", "C", "D"]),
        ];
        for (numbered, temp, want) in cases {
            let d = tempfile::tempdir().unwrap();
            let dir = d.path();
            // Create them in chronological order (A oldest).
            let mut all: Vec<&str> = numbered.to_vec();
            all.extend(temp.iter());
            all.sort();
            for id in all {
                if Some(id) == *temp {
                    make(&temp_dir(dir, 9), id);
                } else {
                    let n = numbered.iter().position(|x| *x == id).unwrap();
                    make(&slot(dir, n as u32), id);
                }
            }
            repair(dir).unwrap();
            let got: Vec<String> = ids(dir).into_iter().map(|(_, s)| s).collect();
            assert_eq!(&got, want, "from {numbered:?} + {temp:?}");
            assert_eq!(
                ids(dir).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                (0..want.len() as u32).collect::<Vec<_>>()
            );
            assert!(!names(dir).iter().any(|n| n.starts_with(TEMP_PREFIX)));
        }
    }

    #[test]
    fn repair_closes_gaps_and_sets_aside_foreign_incomplete_dirs() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        make(&slot(dir, 1), "A");
        fs::create_dir(slot(dir, 2)).unwrap(); // no SUCCESS: not a backup
        make(&slot(dir, 4), "B");
        let r = repair(dir).unwrap();
        assert_eq!(ids(dir), ordered(&[(0, "A"), (1, "B")]));
        assert_eq!(r.set_aside.len(), 1);
        assert!(r.set_aside[0]
            .1
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(INCOMPLETE_PREFIX));
        assert!(r.set_aside[0].1.is_dir(), "never deleted");
        assert_eq!(r.renumbered.len(), 2);
    }

    /// Archive 2.0's backups carry no SUCCESS: repair used to move them
    /// aside as incomplete. They stay, count as the oldest, and rotate out
    /// like any backup.
    #[test]
    fn archive2_backups_are_kept_by_repair_and_rotate_as_the_oldest() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        super::super::legacy::tests::make_legacy(&slot(dir, 0), true);
        super::super::legacy::tests::make_legacy(&slot(dir, 1), false);
        fs::write(slot(dir, 0).join("id"), "old0").unwrap();
        fs::write(slot(dir, 1).join("id"), "old1").unwrap();
        assert!(repair(dir).unwrap().is_clean());
        let t = temp_dir(dir, 5);
        make(&t, "A");
        install(dir, &t, &keep(3)).unwrap();
        assert_eq!(ids(dir), ordered(&[(0, "old0"), (1, "old1"), (2, "A")]));
        let t = temp_dir(dir, 6);
        make(&t, "B");
        let got = install(dir, &t, &keep(3)).unwrap();
        assert_eq!(got.dropped.len(), 1);
        assert_eq!(ids(dir), ordered(&[(0, "old1"), (1, "A"), (2, "B")]));
    }

    #[test]
    fn removing_a_backup_drops_its_marker_first() {
        let d = tempfile::tempdir().unwrap();
        let p = temp_dir(d.path(), 3);
        make(&p, "A");
        remove_backup_dir(&p).unwrap();
        assert!(!p.exists());
        remove_backup_dir(&p).unwrap();
    }

    #[test]
    fn exchange_swaps_directories() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        make(&a, "A");
        make(&b, "B");
        exchange(&a, &b).unwrap();
        assert_eq!(fs::read_to_string(a.join("id")).unwrap(), "B");
        assert_eq!(fs::read_to_string(b.join("id")).unwrap(), "A");
    }
}
