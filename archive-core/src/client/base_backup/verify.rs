//! Verifying a tar-format backup against its backup_manifest, and pulling
//! backup_label out of base.tar.
//!
//! PostgreSQL 15's pg_verifybackup reads only plain-format backups, so the
//! default check ("manifest") does what it does for the files, on the tar
//! archives themselves: every archive (`base.tar[.gz|.zst|.lz4]`,
//! `<oid>.tar…` for tablespaces, whose members are `pg_tblspc/<oid>/…` in
//! the manifest) is decompressed to its end (gzip CRC, zstd frame checks),
//! every regular file in it must be in the manifest with the same size and
//! CRC32C, none may appear twice, none listed may be missing, and the
//! manifest's own SHA-256 must match. Like `pg_verifybackup --no-parse-wal`,
//! WAL is not checked (the backup is made with `-X none`: WAL comes from the
//! archive).
//!
//! Manifest versions 1 (PostgreSQL 13 to 16) and 2 (17 and later) are read.
//! Version 2 records the cluster's `System-Identifier`; like
//! pg_verifybackup, it must match the one in the backup's
//! `global/pg_control`. The identifier (the manifest's, else pg_control's)
//! is returned in [`Verified::system_identifier`] for the caller to compare
//! with the archive directory's.
//!
//! The archives are read while pg_basebackup writes them ([`Follower`]), so
//! the check adds little to the backup's wall time; the comparison with the
//! manifest happens once pg_basebackup has written it.
//!
//! The other mode ("pg_verifybackup") extracts the archives into a temp dir
//! and runs `pg_verifybackup --no-parse-wal` on it ([`extract_and_verify`]).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::{Error, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The control file in base.tar; its first field is the system identifier.
const CONTROL_FILE: &str = "global/pg_control";

/// The system identifier a pg_control file starts with (`uint64`, in the
/// byte order of the x86_64 machines this runs on, like the WAL headers).
fn control_sysid(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// Files pg_verifybackup does not expect in the manifest.
const IGNORED: &[&str] = &[
    "backup_manifest",
    "postgresql.auto.conf",
    "recovery.signal",
    "standby.signal",
];

/// A tar archive of a backup: its file and the path prefix its members have
/// in the manifest ("" for base.tar, "pg_tblspc/<oid>/" for a tablespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// File in the backup dir.
    pub path: PathBuf,
    /// Prefix of its members in the manifest.
    pub prefix: String,
    /// Compression, from the file name.
    pub codec: TarCompression,
}

/// Compression of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarCompression {
    /// `.tar`
    None,
    /// `.tar.gz`
    Gzip,
    /// `.tar.zst`
    Zstd,
    /// `.tar.lz4`
    Lz4,
}

/// The archive `name` is, if it is one (`base.tar…` or `<oid>.tar…`).
pub fn archive_of(dir: &Path, name: &str) -> Option<Archive> {
    let (stem, codec) = if let Some(s) = name.strip_suffix(".tar") {
        (s, TarCompression::None)
    } else if let Some(s) = name.strip_suffix(".tar.gz") {
        (s, TarCompression::Gzip)
    } else if let Some(s) = name.strip_suffix(".tar.zst") {
        (s, TarCompression::Zstd)
    } else if let Some(s) = name.strip_suffix(".tar.lz4") {
        (s, TarCompression::Lz4)
    } else {
        return None;
    };
    let prefix = if stem == "base" {
        String::new()
    } else if !stem.is_empty() && stem.chars().all(|c| c.is_ascii_digit()) {
        format!("pg_tblspc/{stem}/")
    } else {
        return None;
    };
    Some(Archive {
        path: dir.join(name),
        prefix,
        codec,
    })
}

/// The archives in a backup dir, base.tar first.
pub fn archives(dir: &Path) -> Result<Vec<Archive>> {
    let mut out: Vec<Archive> = fs::read_dir(dir)
        .map_err(|e| Error::io("cannot list", dir, e))?
        .flatten()
        .filter_map(|e| archive_of(dir, &e.file_name().to_string_lossy()))
        .collect();
    out.sort_by(|a, b| (!a.prefix.is_empty(), &a.path).cmp(&(!b.prefix.is_empty(), &b.path)));
    Ok(out)
}

/// What reading the archives found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Manifest path (bytes) → (size, CRC32C).
    pub files: HashMap<Vec<u8>, (u64, u32)>,
    /// Paths met more than once.
    pub duplicates: Vec<String>,
    /// Contents of backup_label in base.tar.
    pub label: Option<Vec<u8>>,
    /// The system identifier in base.tar's global/pg_control (its first
    /// field), if that file is there and long enough.
    pub control_sysid: Option<u64>,
    /// Bytes of the files in the archives (uncompressed).
    pub data_bytes: u64,
    /// Bytes of the archive files on disk.
    pub stored_bytes: u64,
    /// Archives read.
    pub archives: Vec<PathBuf>,
}

impl Scan {
    /// Adds what another archive of the same backup holds.
    pub fn merge(&mut self, other: Scan) {
        for (k, v) in other.files {
            if self.files.insert(k.clone(), v).is_some() {
                self.duplicates
                    .push(String::from_utf8_lossy(&k).into_owned());
            }
        }
        self.duplicates.extend(other.duplicates);
        if other.label.is_some() {
            self.label = other.label;
        }
        if other.control_sysid.is_some() {
            self.control_sysid = other.control_sysid;
        }
        self.data_bytes += other.data_bytes;
        self.stored_bytes += other.stored_bytes;
        self.archives.extend(other.archives);
    }
}

/// A file being appended to by another process: reads wait for more data
/// until `done` says the writer has exited, so a decoder never sees a
/// premature end.
struct Growing {
    file: File,
    done: Arc<AtomicBool>,
    read: u64,
}

impl Read for Growing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.file.read(buf)?;
            if n > 0 {
                self.read += n as u64;
                return Ok(n);
            }
            if self.done.load(Ordering::Acquire) {
                // The writer is gone: one more read sees everything it wrote.
                let n = self.file.read(buf)?;
                self.read += n as u64;
                return Ok(n);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A writer computing CRC32C and counting bytes.
struct Crc {
    crc: u32,
    len: u64,
}

impl Write for Crc {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Wraps `r` so that reading yields the archive's tar stream (also what
/// restore-backup unpacks with).
pub fn decoder<'a, R: Read + 'a>(codec: TarCompression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match codec {
        TarCompression::None => Box::new(r),
        TarCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        TarCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        TarCompression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(r)),
    })
}

/// Reads one archive to its end: path, size and CRC32C of each regular file.
pub fn scan_reader<R: Read>(archive: &Archive, reader: R) -> Result<Scan> {
    let fail = |what: String| Error::Refused(format!("{}: {what}", archive.path.display()));
    let mut scan = Scan::default();
    let mut chunk = vec![0u8; 256 << 10];
    let mut tar = tar::Archive::new(io::BufReader::with_capacity(
        1 << 20,
        decoder(archive.codec, reader).map_err(|e| fail(format!("cannot decompress: {e}")))?,
    ));
    let entries = tar
        .entries()
        .map_err(|e| fail(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| fail(format!("unreadable tar member: {e}")))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() || kind.is_symlink() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let mut name: &[u8] = &raw;
        while let Some(rest) = name.strip_prefix(b"./") {
            name = rest;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(fail(format!(
                "unexpected member type {kind:?}: {}",
                String::from_utf8_lossy(name)
            )));
        }
        let mut key = archive.prefix.as_bytes().to_vec();
        key.extend_from_slice(name);
        let capture_label = archive.prefix.is_empty() && name == b"backup_label";
        let capture_control = archive.prefix.is_empty() && name == CONTROL_FILE.as_bytes();
        let mut crc = Crc { crc: 0, len: 0 };
        if capture_label || capture_control {
            // Both are small (pg_control is 8 KiB).
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(|e| {
                fail(format!(
                    "cannot read {}: {e}",
                    String::from_utf8_lossy(name)
                ))
            })?;
            crc.write_all(&buf).expect("in memory");
            if capture_label {
                scan.label = Some(buf);
            } else {
                scan.control_sysid = control_sysid(&buf);
            }
        } else {
            loop {
                let n = entry.read(&mut chunk).map_err(|e| {
                    fail(format!(
                        "cannot read {}: {e}",
                        String::from_utf8_lossy(name)
                    ))
                })?;
                if n == 0 {
                    break;
                }
                crc.write_all(&chunk[..n]).expect("in memory");
            }
        }
        scan.data_bytes += crc.len;
        if scan.files.insert(key.clone(), (crc.len, crc.crc)).is_some() {
            scan.duplicates
                .push(String::from_utf8_lossy(&key).into_owned());
        }
    }
    // Read what follows the end-of-archive blocks too, so that the
    // decompressor checks the stream to its very end.
    let mut rest = tar.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| fail(format!("damaged after the last member: {e}")))?;
    scan.archives.push(archive.path.clone());
    scan.stored_bytes = fs::metadata(&archive.path).map(|m| m.len()).unwrap_or(0);
    Ok(scan)
}

/// Reads the archives of a finished backup.
pub fn scan_dir(dir: &Path) -> Result<Scan> {
    let mut scan = Scan::default();
    let list = archives(dir)?;
    if list.is_empty() {
        return Err(Error::Refused(format!(
            "{}: no tar archive (base.tar…) in the backup",
            dir.display()
        )));
    }
    for a in list {
        let f = File::open(&a.path).map_err(|e| Error::io("cannot open", &a.path, e))?;
        scan.merge(scan_reader(&a, io::BufReader::with_capacity(1 << 20, f))?);
    }
    Ok(scan)
}

/// Reads the archives of a backup while pg_basebackup writes them into
/// `dir`: call [`Follower::finish`] once it has exited.
pub struct Follower {
    done: Arc<AtomicBool>,
    handle: JoinHandle<Result<Scan>>,
}

impl Follower {
    /// Starts watching `dir` for archives.
    pub fn start(dir: &Path) -> Follower {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let dir = dir.to_path_buf();
        let handle = thread::Builder::new()
            .name("verify".into())
            .spawn(move || follow(&dir, d))
            .expect("spawn the verifier thread");
        Follower { done, handle }
    }

    /// Tells the readers the writer has exited and collects what they read.
    pub fn finish(self) -> Result<Scan> {
        self.done.store(true, Ordering::Release);
        self.handle
            .join()
            .map_err(|_| Error::Refused("the verifier thread panicked".into()))?
    }
}

/// Runs the calling thread at nice 10 (Linux: `setpriority(PRIO_PROCESS,
/// 0)` applies to the calling thread only): pg_basebackup (and on a shared
/// machine, everything else) goes first; the check uses the CPU left over.
fn lower_priority() {
    let _ = rustix::process::setpriority_process(None, 10);
}

fn follow(dir: &Path, done: Arc<AtomicBool>) -> Result<Scan> {
    let mut seen = HashSet::new();
    let mut workers: Vec<JoinHandle<Result<Scan>>> = Vec::new();
    loop {
        // Read the flag before listing: after it is set, this listing is final.
        let last = done.load(Ordering::Acquire);
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(a) = archive_of(dir, &name) else {
                    continue;
                };
                if !seen.insert(name) {
                    continue;
                }
                let d = done.clone();
                workers.push(
                    thread::Builder::new()
                        .name("verify-archive".into())
                        .spawn(move || {
                            lower_priority();
                            let f = File::open(&a.path)
                                .map_err(|e| Error::io("cannot open", &a.path, e))?;
                            let g = Growing {
                                file: f,
                                done: d,
                                read: 0,
                            };
                            scan_reader(&a, io::BufReader::with_capacity(1 << 20, g))
                        })
                        .expect("spawn a verifier thread"),
                );
            }
        }
        if last {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let mut scan = Scan::default();
    let mut first_error = None;
    for w in workers {
        match w.join() {
            Ok(Ok(s)) => scan.merge(s),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(Error::Refused("a verifier thread panicked".into()));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(scan),
    }
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(rename = "PostgreSQL-Backup-Manifest-Version")]
    version: u32,
    /// Version 2 (PostgreSQL 17 and later) only.
    #[serde(rename = "System-Identifier")]
    system_identifier: Option<u64>,
    #[serde(rename = "Files")]
    files: Vec<ManifestFile>,
}

#[derive(Debug, Deserialize)]
struct ManifestFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Checksum-Algorithm")]
    algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

impl Manifest {
    /// Checks the version (1 or 2) and returns the system identifier,
    /// which version 2 has and version 1 has not (pg_verifybackup's rules).
    fn checked_system_identifier(&self) -> std::result::Result<Option<u64>, String> {
        match (self.version, self.system_identifier) {
            (1, None) => Ok(None),
            (1, Some(_)) => {
                Err("manifest version 1 with a System-Identifier (only version 2 has one)".into())
            }
            (2, Some(id)) => Ok(Some(id)),
            (2, None) => Err("manifest version 2 without a System-Identifier".into()),
            (v, _) => Err(format!(
                "manifest version {v} (this program knows versions 1 and 2)"
            )),
        }
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the manifest's own checksum: SHA-256 of everything up to and
/// including the newline before its last line (PostgreSQL's rule).
pub fn check_manifest_checksum(text: &[u8]) -> std::result::Result<(), String> {
    let newlines: Vec<usize> = text
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i)
        .collect();
    if newlines.len() < 2 || *newlines.last().expect("two") != text.len() - 1 {
        return Err("the manifest does not end with a newline-terminated checksum line".into());
    }
    let cut = newlines[newlines.len() - 2] + 1;
    let last = String::from_utf8_lossy(&text[cut..]);
    let want = last
        .trim()
        .strip_prefix("\"Manifest-Checksum\": \"")
        .and_then(|s| s.strip_suffix("\"}"))
        .ok_or_else(|| format!("unexpected last line {:?}", last.trim()))?;
    let got = hex(&Sha256::digest(&text[..cut]));
    if got != want.to_ascii_lowercase() {
        return Err(format!(
            "manifest checksum mismatch: computed {got}, recorded {want}"
        ));
    }
    Ok(())
}

/// What a verified backup is made of.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Files checked.
    pub files: usize,
    /// Their bytes (uncompressed).
    pub data_bytes: u64,
    /// Bytes of the archives on disk.
    pub stored_bytes: u64,
    /// backup_label's text.
    pub label: String,
    /// The cluster's system identifier: the manifest's (version 2, checked
    /// against the backup's pg_control when read), else the backup's
    /// global/pg_control's; `None` when neither was read.
    pub system_identifier: Option<u64>,
}

/// Compares what the archives hold with `dir`/backup_manifest.
pub fn check_against_manifest(dir: &Path, scan: Scan) -> Result<Verified> {
    let mpath = dir.join("backup_manifest");
    let text = fs::read(&mpath).map_err(|e| Error::io("cannot read", &mpath, e))?;
    let refuse = |what: String| {
        Error::Refused(format!(
            "backup in {} did not verify: {what}",
            dir.display()
        ))
    };
    check_manifest_checksum(&text).map_err(refuse)?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| refuse(format!("backup_manifest is not valid: {e}")))?;
    let manifest_sysid = manifest.checked_system_identifier().map_err(refuse)?;
    if let (Some(m), Some(c)) = (manifest_sysid, scan.control_sysid) {
        if m != c {
            return Err(refuse(format!(
                "backup_manifest has system identifier {m}, the backup's {CONTROL_FILE} {c}"
            )));
        }
    }
    let mut problems = Vec::new();
    for d in &scan.duplicates {
        problems.push(format!("{d:?} is in the archives twice"));
    }
    let mut listed = HashSet::new();
    for f in &manifest.files {
        let key = match (&f.path, &f.encoded_path) {
            (Some(p), _) => p.as_bytes().to_vec(),
            (None, Some(h)) => unhex(h).ok_or_else(|| refuse(format!("bad Encoded-Path {h:?}")))?,
            (None, None) => return Err(refuse("a manifest entry has no path".into())),
        };
        let shown = String::from_utf8_lossy(&key).into_owned();
        listed.insert(key.clone());
        let Some(&(size, crc)) = scan.files.get(&key) else {
            problems.push(format!(
                "{shown:?} is in the manifest but not in the archives"
            ));
            continue;
        };
        if size != f.size {
            problems.push(format!(
                "{shown:?} has size {size} in the archives but {} in the manifest",
                f.size
            ));
            continue;
        }
        match (f.algorithm.as_deref(), f.checksum.as_deref()) {
            (Some("CRC32C"), Some(want)) => {
                // PostgreSQL prints the CRC's bytes in memory order.
                let got = hex(&crc.to_le_bytes());
                if got != want.to_ascii_lowercase() {
                    problems.push(format!(
                        "{shown:?} has CRC32C {got} in the archives but {want} in the manifest"
                    ));
                }
            }
            (None, _) | (Some("NONE"), _) => {}
            (Some(other), _) => {
                return Err(refuse(format!(
                    "{shown:?} has checksum algorithm {other}; base-backup makes and checks CRC32C manifests"
                )))
            }
        }
    }
    for key in scan.files.keys() {
        let name = String::from_utf8_lossy(key);
        if !listed.contains(key) && !IGNORED.contains(&name.as_ref()) {
            problems.push(format!(
                "{name:?} is in the archives but not in the manifest"
            ));
        }
    }
    if !problems.is_empty() {
        problems.sort();
        let n = problems.len();
        problems.truncate(10);
        return Err(refuse(format!("{n} problem(s): {}", problems.join("; "))));
    }
    let label = scan
        .label
        .ok_or_else(|| refuse("base.tar has no backup_label".into()))?;
    Ok(Verified {
        files: manifest.files.len(),
        data_bytes: scan.data_bytes,
        stored_bytes: scan.stored_bytes,
        label: String::from_utf8(label).map_err(|_| refuse("backup_label is not UTF-8".into()))?,
        system_identifier: manifest_sysid.or(scan.control_sysid),
    })
}

/// "pg_verifybackup" mode: extracts the archives into `scratch` (base.tar at
/// its top, a tablespace archive under pg_tblspc/<oid>/, backup_manifest
/// copied), runs `pg_verifybackup --no-parse-wal` there, removes `scratch`.
/// Returns the label text and what was extracted.
pub fn extract_and_verify(dir: &Path, scratch: &Path, pg_verifybackup: &Path) -> Result<Verified> {
    let result = (|| {
        fs::create_dir(scratch).map_err(|e| Error::io("cannot create", scratch, e))?;
        let mut data_bytes = 0;
        let mut stored_bytes = 0;
        for a in archives(dir)? {
            let target = scratch.join(&a.prefix);
            fs::create_dir_all(&target).map_err(|e| Error::io("cannot create", &target, e))?;
            let f = File::open(&a.path).map_err(|e| Error::io("cannot open", &a.path, e))?;
            stored_bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
            let dec = decoder(a.codec, io::BufReader::with_capacity(1 << 20, f))
                .map_err(|e| Error::io("cannot decompress", &a.path, e))?;
            let mut tar = tar::Archive::new(dec);
            tar.set_preserve_permissions(true);
            for entry in tar
                .entries()
                .map_err(|e| Error::io("cannot read", &a.path, e))?
            {
                let mut entry = entry.map_err(|e| Error::io("cannot read", &a.path, e))?;
                if entry.header().entry_type().is_symlink() && a.prefix.is_empty() {
                    // pg_tblspc/<oid> links point at the source's tablespaces:
                    // their archives are extracted in their place instead.
                    continue;
                }
                data_bytes += entry.size();
                entry
                    .unpack_in(&target)
                    .map_err(|e| Error::io("cannot extract into", &target, e))?;
            }
        }
        fs::copy(dir.join("backup_manifest"), scratch.join("backup_manifest"))
            .map_err(|e| Error::io("cannot copy backup_manifest into", scratch, e))?;
        let mut cmd = Command::new(pg_verifybackup);
        cmd.arg("--no-parse-wal").arg(scratch);
        let out = cmd
            .output()
            .map_err(|e| Error::io("cannot run", pg_verifybackup, e))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = err.lines().take(10).collect();
            return Err(Error::Refused(format!(
                "backup in {} did not verify: pg_verifybackup ({}): {}",
                dir.display(),
                out.status,
                lines.join("; ")
            )));
        }
        let label = fs::read_to_string(scratch.join("backup_label"))
            .map_err(|e| Error::io("cannot read", scratch.join("backup_label"), e))?;
        let manifest = serde_json::from_slice::<Manifest>(
            &fs::read(dir.join("backup_manifest"))
                .map_err(|e| Error::io("cannot read", dir.join("backup_manifest"), e))?,
        )
        .ok();
        // pg_verifybackup has checked the manifest (and, from 17 on, its
        // System-Identifier against pg_control).
        let control = fs::read(scratch.join(CONTROL_FILE))
            .ok()
            .and_then(|b| control_sysid(&b));
        Ok(Verified {
            files: manifest.as_ref().map_or(0, |m| m.files.len()),
            data_bytes,
            stored_bytes,
            label,
            system_identifier: manifest
                .and_then(|m| m.checked_system_identifier().ok().flatten())
                .or(control),
        })
    })();
    let _ = fs::remove_dir_all(scratch);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names() {
        let d = Path::new("/b");
        assert_eq!(
            archive_of(d, "base.tar.zst").unwrap().codec,
            TarCompression::Zstd
        );
        assert_eq!(archive_of(d, "base.tar").unwrap().prefix, "");
        assert_eq!(
            archive_of(d, "16384.tar.gz").unwrap().prefix,
            "pg_tblspc/16384/"
        );
        assert_eq!(
            archive_of(d, "base.tar.lz4").unwrap().codec,
            TarCompression::Lz4
        );
        assert!(archive_of(d, "backup_manifest").is_none());
        assert!(archive_of(d, "x.tar").is_none());
        assert!(archive_of(d, "base.tar.bz2").is_none());
    }

    #[test]
    fn crc32c_is_printed_like_postgresql() {
        // From a real manifest: PG_VERSION "15\n".
        assert_eq!(hex(&crc32c::crc32c(b"15\n").to_le_bytes()), "8a744722");
    }

    #[test]
    fn manifest_checksum() {
        let body = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n],\n";
        let sum = hex(&Sha256::digest(body.as_bytes()));
        let good = format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n");
        assert!(check_manifest_checksum(good.as_bytes()).is_ok());
        let bad = good.replace("[\n]", "[ \n]");
        assert!(check_manifest_checksum(bad.as_bytes()).is_err());
        assert!(check_manifest_checksum(b"{}").is_err());
    }

    fn tar_with(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// The start of a version 1 manifest (PostgreSQL 13 to 16).
    const V1: &str = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n";

    fn write_backup(dir: &Path, files: &[(&str, &[u8])], manifest_files: &[(&str, &[u8])]) {
        write_backup_with(dir, files, manifest_files, V1)
    }

    /// A backup whose manifest starts with `head` (the version line and,
    /// for version 2, the System-Identifier line).
    fn write_backup_with(
        dir: &Path,
        files: &[(&str, &[u8])],
        manifest_files: &[(&str, &[u8])],
        head: &str,
    ) {
        let tar = tar_with(files);
        fs::write(
            dir.join("base.tar.zst"),
            zstd::encode_all(&tar[..], 1).unwrap(),
        )
        .unwrap();
        let mut body = format!("{head}\"Files\": [\n");
        let entries: Vec<String> = manifest_files
            .iter()
            .map(|(n, d)| {
                format!(
                    "{{ \"Path\": \"{n}\", \"Size\": {}, \"Last-Modified\": \"2026-01-01 00:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
                    d.len(),
                    hex(&crc32c::crc32c(d).to_le_bytes())
                )
            })
            .collect();
        body.push_str(&entries.join(",\n"));
        body.push_str("\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n");
        let sum = hex(&Sha256::digest(body.as_bytes()));
        fs::write(
            dir.join("backup_manifest"),
            format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n"),
        )
        .unwrap();
    }

    const LABEL: &[u8] = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n";

    #[test]
    fn a_good_backup_verifies_and_yields_its_label() {
        let d = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8])] = &[
            ("backup_label", LABEL),
            ("PG_VERSION", b"15\n"),
            ("base/1/1", b"x"),
        ];
        write_backup(d.path(), files, files);
        let v = check_against_manifest(d.path(), scan_dir(d.path()).unwrap()).unwrap();
        assert_eq!(v.files, 3);
        assert_eq!(v.system_identifier, None);
        assert_eq!(v.label.as_bytes(), LABEL);
        assert_eq!(v.data_bytes, (LABEL.len() + 4) as u64);
        assert_eq!(
            crate::server::backups::manifest_stop_lsn(&d.path().join("backup_manifest")).unwrap(),
            Some(0x2000100)
        );
    }

    const SYSID: u64 = 7_715_701_925_703_041_311;

    /// A pg_control whose first field is `sysid` (the rest does not matter
    /// here).
    fn pg_control(sysid: u64) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[..8].copy_from_slice(&sysid.to_le_bytes());
        b[8..12].copy_from_slice(&1800u32.to_le_bytes());
        b
    }

    /// The start of a version 2 manifest (PostgreSQL 17 and later), as
    /// PostgreSQL 18's pg_basebackup writes it.
    fn v2(sysid: u64) -> String {
        format!("{{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": {sysid},\n")
    }

    #[test]
    fn a_version_2_manifest_verifies_and_yields_its_system_identifier() {
        let d = tempfile::tempdir().unwrap();
        let control = pg_control(SYSID);
        let files: &[(&str, &[u8])] = &[
            ("backup_label", LABEL),
            ("PG_VERSION", b"18\n"),
            ("global/pg_control", &control),
        ];
        write_backup_with(d.path(), files, files, &v2(SYSID));
        let scan = scan_dir(d.path()).unwrap();
        assert_eq!(scan.control_sysid, Some(SYSID));
        let v = check_against_manifest(d.path(), scan).unwrap();
        assert_eq!(v.files, 3);
        assert_eq!(v.system_identifier, Some(SYSID));
        // The stop LSN is read from a version 2 manifest too.
        assert_eq!(
            crate::server::backups::manifest_stop_lsn(&d.path().join("backup_manifest")).unwrap(),
            Some(0x2000100)
        );
        // The largest identifier a u64 holds.
        let d = tempfile::tempdir().unwrap();
        let control = pg_control(u64::MAX);
        let files: &[(&str, &[u8])] = &[("backup_label", LABEL), ("global/pg_control", &control)];
        write_backup_with(d.path(), files, files, &v2(u64::MAX));
        let v = check_against_manifest(d.path(), scan_dir(d.path()).unwrap()).unwrap();
        assert_eq!(v.system_identifier, Some(u64::MAX));
    }

    #[test]
    fn a_version_1_backup_yields_the_identifier_of_its_pg_control() {
        let d = tempfile::tempdir().unwrap();
        let control = pg_control(SYSID);
        let files: &[(&str, &[u8])] = &[("backup_label", LABEL), ("global/pg_control", &control)];
        write_backup(d.path(), files, files);
        let v = check_against_manifest(d.path(), scan_dir(d.path()).unwrap()).unwrap();
        assert_eq!(v.system_identifier, Some(SYSID));
    }

    #[test]
    fn a_version_2_manifest_of_another_cluster_than_its_pg_control_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let control = pg_control(SYSID + 1);
        let files: &[(&str, &[u8])] = &[("backup_label", LABEL), ("global/pg_control", &control)];
        write_backup_with(d.path(), files, files, &v2(SYSID));
        let e = check_against_manifest(d.path(), scan_dir(d.path()).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "backup_manifest has system identifier {SYSID}, the backup's global/pg_control {}",
                SYSID + 1
            )),
            "{e}"
        );
    }

    #[test]
    fn manifest_versions_and_their_system_identifier() {
        let files: &[(&str, &[u8])] = &[("backup_label", LABEL)];
        let refused = |head: &str| {
            let d = tempfile::tempdir().unwrap();
            write_backup_with(d.path(), files, files, head);
            check_against_manifest(d.path(), scan_dir(d.path()).unwrap())
                .unwrap_err()
                .to_string()
        };
        let e = refused("{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n");
        assert!(
            e.contains("manifest version 2 without a System-Identifier"),
            "{e}"
        );
        let e = refused(&format!("{V1}\"System-Identifier\": {SYSID},\n"));
        assert!(
            e.contains("manifest version 1 with a System-Identifier"),
            "{e}"
        );
        let e = refused(&format!(
            "{{ \"PostgreSQL-Backup-Manifest-Version\": 3,\n\"System-Identifier\": {SYSID},\n"
        ));
        assert!(
            e.contains("manifest version 3 (this program knows versions 1 and 2)"),
            "{e}"
        );
        let e =
            refused("{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": -1,\n");
        assert!(e.contains("backup_manifest is not valid"), "{e}");
        // Without pg_control in the archives, the manifest's identifier.
        let d = tempfile::tempdir().unwrap();
        write_backup_with(d.path(), files, files, &v2(SYSID));
        let v = check_against_manifest(d.path(), scan_dir(d.path()).unwrap()).unwrap();
        assert_eq!(v.system_identifier, Some(SYSID));
    }

    #[test]
    fn damage_is_found() {
        let good: &[(&str, &[u8])] = &[("backup_label", LABEL), ("PG_VERSION", b"15\n")];
        // A file whose content differs from the manifest.
        let d = tempfile::tempdir().unwrap();
        write_backup(
            d.path(),
            &[("backup_label", LABEL), ("PG_VERSION", b"16\n")],
            good,
        );
        let e = check_against_manifest(d.path(), scan_dir(d.path()).unwrap()).unwrap_err();
        assert!(e.to_string().contains("CRC32C"), "{e}");
        // Missing and extra files.
        let d = tempfile::tempdir().unwrap();
        write_backup(d.path(), &[("backup_label", LABEL), ("extra", b"1")], good);
        let e = check_against_manifest(d.path(), scan_dir(d.path()).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"PG_VERSION\" is in the manifest but not in the archives"),
            "{e}"
        );
        assert!(
            e.contains("\"extra\" is in the archives but not in the manifest"),
            "{e}"
        );
        // A truncated archive.
        let d = tempfile::tempdir().unwrap();
        write_backup(d.path(), good, good);
        let p = d.path().join("base.tar.zst");
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 8]).unwrap();
        assert!(scan_dir(d.path()).is_err());
    }

    #[test]
    fn following_a_growing_archive_reads_it_whole() {
        let d = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8])] = &[("backup_label", LABEL), ("big", &[7u8; 300_000])];
        let src = tempfile::tempdir().unwrap();
        write_backup(src.path(), files, files);
        let bytes = fs::read(src.path().join("base.tar.zst")).unwrap();
        let follower = Follower::start(d.path());
        let mut out = File::create(d.path().join("base.tar.zst")).unwrap();
        for chunk in bytes.chunks(97) {
            out.write_all(chunk).unwrap();
            out.flush().unwrap();
        }
        thread::sleep(Duration::from_millis(100));
        fs::copy(
            src.path().join("backup_manifest"),
            d.path().join("backup_manifest"),
        )
        .unwrap();
        let scan = follower.finish().unwrap();
        let v = check_against_manifest(d.path(), scan).unwrap();
        assert_eq!(v.files, 2);
    }
}
