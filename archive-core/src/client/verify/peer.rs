//! Verifying the peer's copies from here: each file is fetched over the
//! peer key's channel (`list`, `get`, `list_backups`, `get_backup_file`)
//! and checked as it streams in, through a pipe to a thread that runs the
//! same checks as on local files, so memory stays at a few buffers
//! whatever the file. A copy that fails its checks is damage on the peer;
//! a channel that breaks ends the peer's part (it could not run).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use crate::client::base_backup::verify::{archive_of, scan_reader, Scan};
use crate::common::config::Config;
use crate::common::error::{Error, Result};
use crate::common::wal::WalName;
use crate::net::ssh::{self, Channel, SshSettings};
use crate::net::wire::{BackupEntry, ErrorKind, Reply, Request, MAX_FILE_SIZE};
use crate::server::backups::MANIFEST;
use crate::server::store::{recorded_identity, META_DIR};

use super::checks::{self, backup_against_manifest, without_path};
use super::{Options, ServerCheck, Throttle};

/// Checks the peer's copies of archive directory `dir` (`opts.dir` on
/// both servers) and of its backups. Never fails: what kept it from its end
/// is the result's `error`.
pub(super) async fn verify(
    cfg: &Config,
    dir: &Path,
    opts: &Options,
    peer: &str,
    throttle: &Throttle,
) -> ServerCheck {
    let mut check = ServerCheck::new(peer);
    let before = throttle.total();
    if let Err(e) = run(&mut check, cfg, dir, opts, peer, throttle).await {
        check.error = Some(format!(
            "{e}; check that {peer} answers with the peer key (ssh_config of this server)"
        ));
    }
    check.bytes = throttle.total() - before;
    check
}

async fn run(
    check: &mut ServerCheck,
    cfg: &Config,
    dir: &Path,
    opts: &Options,
    peer: &str,
    throttle: &Throttle,
) -> Result<()> {
    let mut ch = ssh::connect(&SshSettings::from_config(cfg), peer).await?;
    // Both servers hold the same cluster: the peer's WAL must carry the
    // identity recorded here.
    let sysid = recorded_identity(dir).map(|i| i.system_identifier);
    let entries = ch.list(&opts.dir).await?;
    let mut names = Vec::with_capacity(entries.len());
    let mut seg_sizes = BTreeMap::new();
    for e in &entries {
        let Ok(name) = WalName::parse(&e.name) else {
            continue;
        };
        let shown = format!("{peer}:{}/{}", opts.dir, e.name);
        // Listed: it counts for the holes even if it goes now.
        names.push(name.clone());
        let get = Request::Get {
            dir: opts.dir.clone(),
            name: e.name.clone(),
        };
        let (size, raw) = match open(&mut ch, &get).await? {
            Opened::File { size, raw_blake3 } => (size, raw_blake3),
            // Removed since the listing (wal-cleanup).
            Opened::Refused(ErrorKind::NotFound, _) => continue,
            Opened::Refused(_, m) => {
                check.damage(&shown, format!("{peer} cannot send it: {m}"));
                continue;
            }
        };
        let proof = raw.and_then(|h| {
            blake3::Hash::from_hex(&h)
                .map_err(|_| check.damage(&shown, "its digest record is not a blake3 digest"))
                .ok()
        });
        check.wal_files += 1;
        if size > MAX_FILE_SIZE {
            // Its bytes would follow: the channel cannot be used past them.
            check.damage(
                &shown,
                format!("stored as {size} bytes, more than any WAL file can take"),
            );
            return Err(Error::Protocol(format!(
                "{peer} announced {size} bytes for {}; the files after it were not checked",
                e.name
            )));
        }
        let got = stream(&mut ch, &e.name, size, throttle, move |input| {
            checks::wal_file(&name, input, sysid, proof)
        })
        .await?;
        match got {
            Ok(v) => {
                if let Some(s) = v.seg_size {
                    *seg_sizes.entry(s).or_insert(0u64) += 1;
                }
            }
            Err(m) => check.damage(&shown, m),
        }
    }
    for h in checks::holes(&names, checks::seg_size_of(&seg_sizes)) {
        check.damage(format!("{peer}:{}/{}", opts.dir, h.first), h.problem());
    }
    let Some(backup_dir) = &opts.backup_dir else {
        return Ok(());
    };
    let ctx = BackupContext {
        dir,
        backup_dir,
        present: names.iter().map(WalName::as_str).collect(),
        sysid,
        throttle,
    };
    for b in ch.list_backups(backup_dir).await? {
        if b.complete {
            check.backups += 1;
            verify_backup(check, &mut ch, &b, &ctx).await?;
        }
    }
    Ok(())
}

/// What checking the peer's backups needs besides the backup.
struct BackupContext<'a> {
    /// The archive directory here (temp files go below it).
    dir: &'a Path,
    /// The backup directory on the peer.
    backup_dir: &'a str,
    /// The WAL files the peer holds.
    present: HashSet<&'a str>,
    /// The archive directory's system identifier.
    sysid: Option<u64>,
    throttle: &'a Throttle,
}

/// One complete backup of the peer: its START WAL is stored there, its
/// archives streamed to the end match its manifest (fetched to a temp dir).
async fn verify_backup(
    check: &mut ServerCheck,
    ch: &mut Channel,
    b: &BackupEntry,
    ctx: &BackupContext<'_>,
) -> Result<()> {
    let BackupContext {
        dir,
        backup_dir,
        sysid,
        throttle,
        ..
    } = *ctx;
    let remote = Path::new(backup_dir).join(format!("data.master.{}", b.index));
    let shown = format!("{}:{}", ch.host(), remote.display());
    match &b.start_wal {
        Some(w) if !ctx.present.contains(w.as_str()) => check.damage(
            &shown,
            format!(
                "its START WAL {w} is not stored there: the backup cannot be restored from that server; copy it from the other server (wal-sync) if it has it"
            ),
        ),
        Some(_) => {}
        None => check.damage(&shown, "its backup_label cannot be read"),
    }
    let archives: Vec<_> = b
        .files
        .iter()
        .filter_map(|f| archive_of(&remote, &f.name))
        .collect();
    if archives.is_empty() {
        check.damage(&shown, "no tar archive (base.tar…) in the backup");
        return Ok(());
    }
    let mut scan = Scan::default();
    let mut readable = true;
    for a in archives {
        let name = a
            .path
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .into_owned();
        let shown_archive = format!("{}:{}", ch.host(), a.path.display());
        let get = Request::GetBackupFile {
            backup_dir: backup_dir.to_string(),
            index: b.index,
            name: name.clone(),
        };
        let size = match open(ch, &get).await? {
            Opened::File { size, .. } => size,
            Opened::Refused(_, m) => {
                check.damage(shown_archive, format!("{} cannot send it: {m}", ch.host()));
                readable = false;
                continue;
            }
        };
        let got = stream(ch, &name, size, throttle, move |input| {
            scan_reader(&a, BufReader::with_capacity(1 << 20, input))
                .map_err(|e| without_path(e.to_string(), &a.path))
        })
        .await?;
        match got {
            Ok(s) => scan.merge(s),
            Err(m) => {
                check.damage(shown_archive, m);
                readable = false;
            }
        }
    }
    if !readable {
        return Ok(());
    }
    let Some(manifest) = b.files.iter().find(|f| f.name == MANIFEST) else {
        check.damage(&shown, format!("no {MANIFEST} in the backup"));
        return Ok(());
    };
    // base-backup's check reads the manifest whole (a million files make
    // about 200 MB of it).
    if manifest.size > MAX_MANIFEST {
        check.error = Some(format!(
            "{shown}/{MANIFEST} has {} bytes, more than verify reads ({MAX_MANIFEST}): run verify on {} itself",
            manifest.size,
            ch.host()
        ));
        return Ok(());
    }
    // Beside the archive (a manifest can be large, /tmp small); removed on drop.
    let meta = dir.join(META_DIR);
    let tmp = tempfile::Builder::new()
        .prefix("verify-manifest-")
        .tempdir_in(&meta)
        .map_err(|e| Error::io("cannot create a temp dir in", &meta, e))?;
    let local = tmp.path().join(MANIFEST);
    let mut f = File::create(&local).map_err(|e| Error::io("cannot create", &local, e))?;
    ch.get_backup_file(backup_dir, b.index, MANIFEST, &mut f)
        .await?;
    if let Err(m) = backup_against_manifest(tmp.path(), scan, sysid) {
        check.damage(&shown, m.replace(&tmp.path().display().to_string(), &shown));
    }
    Ok(())
}

/// Largest peer's backup_manifest fetched.
const MAX_MANIFEST: u64 = 1 << 30;

/// The answer to a `get` or `get_backup_file`.
enum Opened {
    /// `size` bytes follow, then the checksum frame.
    File {
        size: u64,
        raw_blake3: Option<String>,
    },
    /// The peer answered with an error: nothing follows, the channel
    /// goes on.
    Refused(ErrorKind, String),
}

/// Sends `req` (a `get` or `get_backup_file`) and reads its answer. Errors:
/// the channel broke, or answered out of turn.
async fn open(ch: &mut Channel, req: &Request) -> Result<Opened> {
    ch.send(req).await?;
    match ch.reply().await? {
        Reply::File {
            size, raw_blake3, ..
        } => Ok(Opened::File { size, raw_blake3 }),
        Reply::Error { kind, message } => Ok(Opened::Refused(kind, message)),
        other => Err(ch.unexpected(other)),
    }
}

/// Streams the `size` bytes announced on `ch` into `check`, run on a
/// thread that reads them through a pipe (paced by `throttle`). A check
/// that stops early (bad content) leaves the rest of the transfer to be
/// read and dropped, so the channel stays usable. Errors: the transfer.
async fn stream<T: Send + 'static>(
    ch: &mut Channel,
    name: &str,
    size: u64,
    throttle: &Throttle,
    check: impl FnOnce(Box<dyn Read + Send>) -> T + Send + 'static,
) -> Result<T> {
    let (reader, writer) =
        io::pipe().map_err(|e| Error::io("cannot create a pipe for", name, e))?;
    let input: Box<dyn Read + Send> = Box::new(throttle.reader(reader));
    let worker = std::thread::Builder::new()
        .name("verify-peer".into())
        .spawn(move || check(input))
        .map_err(|e| Error::io("cannot start a thread for", name, e))?;
    let mut sink = Forgiving(Some(writer));
    let got = ch.receive_body(name, size, &mut sink).await;
    drop(sink);
    let result = worker
        .join()
        .map_err(|_| Error::Protocol(format!("the check of {name} panicked")))?;
    got.map_err(|e| ch.body_error(e))?;
    Ok(result)
}

/// A writer that drops what its reader no longer wants: once the check
/// has stopped reading, the rest of the transfer goes nowhere.
struct Forgiving<W>(Option<W>);

impl<W: Write> Write for Forgiving<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(w) = self.0.as_mut() {
            if w.write_all(buf).is_err() {
                self.0 = None;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
