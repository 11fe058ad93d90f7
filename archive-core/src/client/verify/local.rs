//! Verifying this server's copies: the WAL files of an archive directory
//! and the complete backups of a backup directory, read from disk.

use std::collections::{BTreeMap, HashSet};
use std::io::BufReader;
use std::path::Path;

use crate::client::base_backup::verify::{archives, scan_reader, Scan};
use crate::common::durable;
use crate::common::error::Result;
use crate::common::wal::WalName;
use crate::net::wire::CHUNK;
use crate::server::backups;
use crate::server::store::{recorded_digest, recorded_identity, Store};

use super::checks::{self, backup_against_manifest, without_path};
use super::{ServerCheck, Throttle};

/// Checks every WAL file of archive directory `dir` (the resolved
/// `dir_arg`) and every complete backup of `backup_dir`. Errors: the
/// directory cannot be listed.
pub(super) fn verify(
    store: &Store,
    dir_arg: &str,
    dir: &Path,
    backup_dir: Option<&Path>,
    host: &str,
    throttle: &Throttle,
) -> Result<ServerCheck> {
    let mut check = ServerCheck::new(host);
    let before = throttle.total();
    let sysid = recorded_identity(dir).map(|i| i.system_identifier);
    let entries = store.list(dir_arg)?;
    let mut names = Vec::with_capacity(entries.len());
    let mut seg_sizes = BTreeMap::new();
    for e in &entries {
        let Ok(name) = WalName::parse(&e.name) else {
            continue;
        };
        let path = dir.join(&e.name);
        let shown = path.display().to_string();
        let proof = recorded_digest(dir, &e.name).unwrap_or_else(|err| {
            check.damage(&shown, err.to_string());
            None
        });
        // Listed: it counts for the holes even if it goes now.
        names.push(name.clone());
        let file = match durable::open_no_follow(&path) {
            Ok(f) => f,
            // Removed since the listing (wal-cleanup): nothing to check.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                check.damage(&shown, format!("cannot open: {err}"));
                continue;
            }
        };
        check.wal_files += 1;
        let input = BufReader::with_capacity(CHUNK, throttle.reader(file));
        match checks::wal_file(&name, input, sysid, proof) {
            Ok(v) => {
                if let Some(s) = v.seg_size {
                    *seg_sizes.entry(s).or_insert(0u64) += 1;
                }
            }
            Err(m) => check.damage(&shown, m),
        }
    }
    for h in checks::holes(&names, checks::seg_size_of(&seg_sizes)) {
        check.damage(dir.join(&h.first).display().to_string(), h.problem());
    }
    if let Some(b) = backup_dir {
        let present: HashSet<&str> = names.iter().map(WalName::as_str).collect();
        match backups::list(b) {
            Ok(list) => {
                for backup in list.iter().filter(|b| b.complete) {
                    check.backups += 1;
                    verify_backup(&mut check, backup, dir, &present, sysid, throttle);
                }
            }
            Err(e) => check.error = Some(e.to_string()),
        }
    }
    check.bytes = throttle.total() - before;
    Ok(check)
}

/// One complete backup: its START WAL is stored, its archives read to the
/// end match its manifest.
fn verify_backup(
    check: &mut ServerCheck,
    backup: &backups::Backup,
    dir: &Path,
    present: &HashSet<&str>,
    sysid: Option<u64>,
    throttle: &Throttle,
) {
    let shown = backup.path.display().to_string();
    match backup.label() {
        Ok(l) if !present.contains(l.start_wal.as_str()) => check.damage(
            &shown,
            format!(
                "its START WAL {} is not in {}: the backup cannot be restored from this server; copy it from the other server (wal-sync) if it has it",
                l.start_wal,
                dir.display()
            ),
        ),
        Ok(_) => {}
        Err(e) => check.damage(&shown, e.to_string()),
    }
    let list = match archives(&backup.path) {
        Ok(l) if l.is_empty() => {
            check.damage(&shown, "no tar archive (base.tar…) in the backup");
            return;
        }
        Ok(l) => l,
        Err(e) => {
            check.damage(&shown, e.to_string());
            return;
        }
    };
    let mut scan = Scan::default();
    let mut readable = true;
    for a in &list {
        let read = durable::open_no_follow(&a.path)
            .map_err(|e| format!("cannot open: {e}"))
            .and_then(|f| {
                let input = BufReader::with_capacity(1 << 20, throttle.reader(f));
                scan_reader(a, input).map_err(|e| without_path(e.to_string(), &a.path))
            });
        match read {
            Ok(s) => scan.merge(s),
            Err(m) => {
                check.damage(a.path.display().to_string(), m);
                readable = false;
            }
        }
    }
    // A damaged archive already says why; the manifest would only add
    // every file it could not reach.
    if readable {
        if let Err(m) = backup_against_manifest(&backup.path, scan, sysid) {
            check.damage(&shown, m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::testing::{put_bytes, req, segment, store, SEG, SYSID};

    /// Four segments stored by a real put (digest records, identity), then
    /// one rewritten plain with a byte flipped and one removed.
    #[tokio::test]
    async fn a_flipped_byte_and_a_missing_segment_are_named_a_clean_directory_passes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        let st = store(root.path());
        let names = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000004",
        ];
        for (i, n) in names.iter().enumerate() {
            put_bytes(&st, &req(&dir, n, SEG), &segment(n, SYSID, i as u8 + 1))
                .await
                .unwrap();
        }
        let history = "00000002.history";
        let text = b"1\t0/4000000\tno recovery target specified\n";
        put_bytes(&st, &req(&dir, history, text.len() as u64), text)
            .await
            .unwrap();
        let arg = dir.to_str().unwrap();
        let t = Throttle::new(None);
        let c = verify(&st, arg, &dir, None, "arch1", &t).unwrap();
        assert_eq!((c.wal_files, c.damaged_total), (5, 0), "{:?}", c.damaged);
        assert!(c.bytes > 0 && c.error.is_none());

        let mut raw = segment(names[1], SYSID, 2);
        raw[500_000] ^= 0x01;
        std::fs::write(dir.join(names[1]), raw).unwrap();
        std::fs::remove_file(dir.join(names[2])).unwrap();
        // A history file edited by hand: still text, not what was archived.
        std::fs::write(dir.join(history), b"1\t0/5000000\tedited\n").unwrap();
        let mut c = verify(&st, arg, &dir, None, "arch1", &t).unwrap();
        assert_eq!(c.damaged_total, 3, "{:?}", c.damaged);
        // Names in listing order; the holes come after the files.
        let h = c.damaged.remove(1);
        assert!(h.path.ends_with(history), "{h:?}");
        assert!(h.problem.contains("not the file that was archived"));
        assert!(c.damaged[0].path.ends_with(names[1]));
        assert!(
            c.damaged[0]
                .problem
                .contains("not the file that was archived"),
            "{:?}",
            c.damaged[0]
        );
        assert!(c.damaged[1].path.ends_with(names[2]));
        assert!(c.damaged[1].problem.starts_with("missing"));
    }

    /// A complete backup (SUCCESS) whose START WAL the archive lacks and
    /// whose archives are gone: both named; a backup without SUCCESS is
    /// not checked.
    #[test]
    fn a_backup_without_its_start_wal_or_archives_is_named() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("main");
        std::fs::create_dir_all(&dir).unwrap();
        let backups_dir = root.path().join("backups");
        let b = backups_dir.join("data.master.0");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            b.join(backups::LABEL),
            "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\n\
             CHECKPOINT LOCATION: 0/9000060\nSTART TIME: 2026-12-01 00:00:00 UTC\n\
             START TIMELINE: 1\n",
        )
        .unwrap();
        backups::write_success(&b, &[]).unwrap();
        std::fs::create_dir_all(backups_dir.join("data.master.1")).unwrap();
        let st = store(root.path());
        let t = Throttle::new(None);
        let c = verify(
            &st,
            dir.to_str().unwrap(),
            &dir,
            Some(&backups_dir),
            "arch1",
            &t,
        )
        .unwrap();
        assert_eq!((c.backups, c.damaged_total), (1, 2), "{:?}", c.damaged);
        assert!(c.damaged.iter().all(|d| d.path.ends_with("data.master.0")));
        assert!(
            c.damaged[0]
                .problem
                .starts_with("its START WAL 000000010000000000000009 is not in"),
            "{:?}",
            c.damaged
        );
        assert!(c.damaged[1].problem.starts_with("no tar archive"));
    }
}
