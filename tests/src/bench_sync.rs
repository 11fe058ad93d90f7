//! Helpers for the wal-sync benchmark (`src/bin/bench-sync.rs`): a corpus
//! of archive files as the suite stores them (zstd-compressed 16 MiB WAL
//! segments with valid page headers and one system identifier, plus small
//! `.history` and `.backup` files), placed one-sided on the two servers, a
//! check that a sync left both sides byte-identical, and CPU accounting per
//! process name from `/proc`. Measurement only: nothing here asserts a timing.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use archive_core::common::page_header::{build_long_header, magic_for_pg_version};
use archive_core::common::wal::WalName;

use crate::sampler::{thread_cpu_ticks, Sampler, CLK_TCK};
use crate::{chown_postgres, list_files, mkdir_postgres, write_postgres_file, Lab};

/// Raw size of the corpus' WAL segments (PostgreSQL's default).
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// WAL page size (`XLOG_BLCKSZ`).
const PAGE: usize = 8192;
/// The PostgreSQL version whose page magic the segments carry.
const PG_VERSION: u32 = 15;
/// zstd level of the stored files (the servers' default `compress_level`).
const ZSTD_LEVEL: i32 = 1;
/// CLUSTER-NAME recorded for the benchmark's archive directories.
pub const CLUSTER: &str = "bench";
/// Name of the manifest that lets a later run reuse a corpus.
const MANIFEST: &str = "manifest.txt";
/// Bumped whenever the generator changes, so old corpora are not reused.
const GENERATOR_VERSION: u32 = 1;

/// What kind of archive file a corpus entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A 16 MiB WAL segment, stored zstd-compressed.
    Segment,
    /// A timeline history file, stored zstd-compressed.
    History,
    /// A backup history file (`<segment>.XXXXXXXX.backup`), stored zstd-compressed.
    Backup,
}

/// One file of the corpus, as stored on the server that has it.
#[derive(Debug, Clone)]
pub struct CorpusFile {
    /// Archive file name.
    pub name: String,
    /// What it is.
    pub kind: FileKind,
    /// Bytes on disk (compressed).
    pub stored_bytes: u64,
    /// Bytes once decompressed.
    pub raw_bytes: u64,
}

/// Files present only on arch1 (`sides[0]`) and only on arch2 (`sides[1]`),
/// in `<root>/arch1/` and `<root>/arch2/`, owned by postgres, mode 0600,
/// mtimes spaced as if archived one after the other.
#[derive(Debug, Clone)]
pub struct SyncCorpus {
    /// Where the files are.
    pub root: PathBuf,
    /// Per server, the files only it holds.
    pub sides: [Vec<CorpusFile>; 2],
    /// The system identifier every segment carries.
    pub system_identifier: u64,
    /// Seconds spent making it (0 when reused).
    pub generated_secs: f64,
}

impl SyncCorpus {
    /// `<root>/arch<n>`.
    pub fn side_dir(&self, n: usize) -> PathBuf {
        self.root.join(format!("arch{n}"))
    }
    /// The files only server `n` holds.
    pub fn side(&self, n: usize) -> &[CorpusFile] {
        &self.sides[n - 1]
    }
    /// Stored bytes of all files of both sides (what a sync copies).
    pub fn stored_bytes(&self) -> u64 {
        self.sides.iter().flatten().map(|f| f.stored_bytes).sum()
    }
    /// Raw (decompressed) bytes of all files of both sides.
    pub fn raw_bytes(&self) -> u64 {
        self.sides.iter().flatten().map(|f| f.raw_bytes).sum()
    }
    /// Number of files of both sides.
    pub fn file_count(&self) -> usize {
        self.sides.iter().map(Vec::len).sum()
    }
    /// The `.pgarchive/system_identifier` record every server gets, in the
    /// store's JSON format.
    pub fn identity_json(&self) -> String {
        format!(
            "{{\"system_identifier\":{},\"cluster\":\"{CLUSTER}\"}}",
            self.system_identifier
        )
    }
}

/// xorshift64*: fast, deterministic, good enough to make bytes zstd cannot
/// compress.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// A 16 MiB segment `name` that the archive servers accept: every page has
/// a valid header (the first the long one, with `sysid`); the first
/// `filled` (0..=1) of the pages hold WAL-like records (pgbench-style heap
/// updates: small headers, counters, blank-padded filler) interleaved with
/// random "full-page image" bytes making up `incompressible` (0..=1) of the
/// page bodies; the pages after that are empty, as after a WAL switch
/// (`archive_timeout`). Compressed size ≈ `filled` × ([`BASE_MB`] +
/// `incompressible` × (16.8 - [`BASE_MB`])) MB.
pub fn fabricate_segment(
    name: &WalName,
    sysid: u64,
    incompressible: f64,
    filled: f64,
    rng: &mut Rng,
) -> Vec<u8> {
    let magic = magic_for_pg_version(PG_VERSION).expect("supported version");
    let tli = name.timeline();
    let start = name.start_lsn(SEGMENT_BYTES);
    let mut seg = vec![0u8; SEGMENT_BYTES as usize];
    let f = incompressible.clamp(0.0, 1.0);
    // Random bytes owed to keep the share at `f`.
    let mut debt = 0.0f64;
    let mut xid: u32 = (start >> 14) as u32;
    let mut aid: u32 = rng.range(1, 2_000_000) as u32;
    let mut prev = start;
    let pages = SEGMENT_BYTES as usize / PAGE;
    let filled_pages = ((filled.clamp(0.0, 1.0) * pages as f64).round() as usize).max(1);
    for (i, page) in seg.chunks_exact_mut(PAGE).enumerate() {
        let addr = start + (i * PAGE) as u64;
        let hdr = if i == 0 {
            page[..40].copy_from_slice(&build_long_header(
                PG_VERSION,
                tli,
                addr,
                sysid,
                SEGMENT_BYTES as u32,
            ));
            40
        } else {
            page[0..2].copy_from_slice(&magic.to_le_bytes());
            page[4..8].copy_from_slice(&tli.to_le_bytes());
            page[8..16].copy_from_slice(&addr.to_le_bytes());
            24
        };
        let mut pos = if i < filled_pages { hdr } else { PAGE };
        while pos < PAGE {
            if f >= 1.0 || debt >= 512.0 {
                let n = if f >= 1.0 {
                    PAGE - pos
                } else {
                    (debt as usize).min(PAGE - pos)
                };
                rng.fill(&mut page[pos..pos + n]);
                pos += n;
                debt -= n as f64;
                continue;
            }
            // One heap-update record: 24-byte header, block reference,
            // then the new tuple (aid, bid, abalance, 84 blanks of filler).
            let rec_start = pos;
            let mut rec = [0u8; 160];
            let len = 24 + 20 + 16 + 84;
            rec[0..4].copy_from_slice(&(len as u32).to_le_bytes());
            rec[4..8].copy_from_slice(&xid.to_le_bytes());
            rec[8..16].copy_from_slice(&prev.to_le_bytes());
            rec[16] = 0x20; // XLOG_HEAP_HOT_UPDATE-ish info
            rec[17] = 10; // RM_HEAP_ID
            let crc = rng.next_u64();
            rec[20..24].copy_from_slice(&(crc as u32).to_le_bytes());
            rec[24..28].copy_from_slice(&1663u32.to_le_bytes());
            rec[28..32].copy_from_slice(&16384u32.to_le_bytes());
            rec[32..36].copy_from_slice(&16397u32.to_le_bytes());
            rec[36..40].copy_from_slice(&(aid / 61).to_le_bytes());
            rec[40..42].copy_from_slice(&((aid % 61) as u16).to_le_bytes());
            rec[44..48].copy_from_slice(&aid.to_le_bytes());
            rec[48..52].copy_from_slice(&(aid / 100_000 + 1).to_le_bytes());
            let balance = (crc >> 32) as i32 % 5000;
            rec[52..56].copy_from_slice(&balance.to_le_bytes());
            for b in &mut rec[60..len] {
                *b = b' ';
            }
            let n = len.min(PAGE - pos);
            page[pos..pos + n].copy_from_slice(&rec[..n]);
            pos += n;
            xid = xid.wrapping_add(1);
            aid = if crc & 7 == 0 {
                rng.range(1, 2_000_000) as u32
            } else {
                aid.wrapping_add(1)
            };
            prev = addr + rec_start as u64;
            // MAXALIGN.
            pos = (pos + 7) & !7;
            if f > 0.0 {
                debt += n as f64 * f / (1.0 - f);
            }
        }
    }
    seg
}

/// `bytes` compressed the way the servers store WAL (zstd with checksum).
pub fn zstd_stored(bytes: &[u8]) -> Vec<u8> {
    let mut enc =
        archive_core::common::codec::zstd_encoder(Vec::with_capacity(bytes.len() / 3), ZSTD_LEVEL)
            .expect("zstd encoder");
    let _ = enc.set_pledged_src_size(Some(bytes.len() as u64));
    enc.write_all(bytes).expect("compress into memory");
    enc.finish().expect("finish zstd frame")
}

/// What one corpus file is to be, before it is made.
#[derive(Debug, Clone)]
struct Plan {
    side: usize,
    name: String,
    kind: FileKind,
    /// Share of random bytes (segments only).
    incompressible: f64,
    /// Share of pages with records (segments only).
    filled: f64,
    /// Text content (history and backup files).
    text: String,
    /// Seed of the segment's bytes.
    seed: u64,
    /// Seconds after the corpus' base mtime.
    age_rank: u64,
}

/// Compressed size (MB) of a full segment of records with no random bytes
/// ([`fabricate_segment`] with `incompressible` 0, `filled` 1).
pub const BASE_MB: f64 = 2.25;
/// Compressed size (MB) of a segment of random bytes.
const FULL_MB: f64 = 16.78;

/// The compressed-size mix of the segments: mostly 2.3-5 MB (what the
/// suite stores for busy pgbench WAL), 15% cut short by a WAL switch
/// (0.3-1.5 MB), 5% 5-10 MB (full-page-image bursts after a checkpoint), 2%
/// incompressible (~16.8 MB). Returns (`incompressible`, `filled`).
fn draw_segment_shape(rng: &mut Rng) -> (f64, f64) {
    let share = |target_mb: f64, filled: f64| {
        ((target_mb / filled - BASE_MB) / (FULL_MB - BASE_MB)).clamp(0.0, 1.0)
    };
    match rng.unit() {
        u if u < 0.02 => (1.0, 1.0),
        u if u < 0.07 => (share(5.0 + 5.0 * rng.unit(), 1.0), 1.0),
        u if u < 0.22 => {
            let filled = 0.1 + 0.5 * rng.unit();
            (share(filled * (BASE_MB + 0.3 * rng.unit()), filled), filled)
        }
        // Mean of two uniforms: peaks at 3.6 MB.
        _ => (share(2.3 + 1.35 * (rng.unit() + rng.unit()), 1.0), 1.0),
    }
}

fn plan_corpus(files_per_side: usize, seed: u64) -> (u64, Vec<Plan>) {
    let mut rng = Rng::new(seed);
    // A plausible PostgreSQL system identifier (time-based high bits).
    let sysid = (1_700_000_000u64 << 32) | (rng.next_u64() & 0xFFFF_FFFF);
    // 2% small files (at least one), 40% of them .history.
    let small = (files_per_side * 2).div_ceil(100).min(files_per_side);
    let histories = small * 2 / 5;
    let backups = small - histories;
    let segments = files_per_side - small;
    let mut plans = Vec::new();
    let mut segno: u64 = 1;
    let mut next_tli: u32 = 2;
    let mut rank = 0u64;
    for side in 1..=2 {
        let mut names_here = Vec::new();
        for _ in 0..segments {
            let name = WalName::from_segment_number(1, segno, SEGMENT_BYTES);
            segno += 1;
            names_here.push(name.as_str().to_string());
            let (incompressible, filled) = draw_segment_shape(&mut rng);
            plans.push(Plan {
                side,
                name: name.as_str().to_string(),
                kind: FileKind::Segment,
                incompressible,
                filled,
                text: String::new(),
                seed: rng.next_u64(),
                age_rank: rank,
            });
            rank += 1;
        }
        for i in 0..backups {
            // A backup label every so often along this side's segments.
            let seg = if names_here.is_empty() {
                WalName::from_segment_number(1, segno + i as u64, SEGMENT_BYTES)
                    .as_str()
                    .to_string()
            } else {
                names_here[(i * names_here.len()) / backups.max(1)].clone()
            };
            let seg_name = WalName::parse(&seg).expect("valid");
            let lsn = seg_name.start_lsn(SEGMENT_BYTES) + 0x28;
            let stop = lsn + 0x3000;
            let name = format!("{seg}.00000028.backup");
            let text = format!(
                "START WAL LOCATION: {} (file {seg})\nSTOP WAL LOCATION: {} (file {seg})\n\
                 CHECKPOINT LOCATION: {}\nBACKUP METHOD: streamed\nBACKUP FROM: standby\n\
                 START TIME: 2026-11-25 01:00:{:02} UTC\nLABEL: base-backup\nSTART TIMELINE: 1\n\
                 STOP TIME: 2026-11-25 01:07:{:02} UTC\nSTOP TIMELINE: 1\n",
                lsn_text(lsn),
                lsn_text(stop),
                lsn_text(lsn + 0x38),
                i % 60,
                (i * 7) % 60
            );
            plans.push(Plan {
                side,
                name,
                kind: FileKind::Backup,
                incompressible: 0.0,
                filled: 0.0,
                text,
                seed: 0,
                age_rank: rank,
            });
            rank += 1;
        }
        for _ in 0..histories {
            let tli = next_tli;
            next_tli += 1;
            let mut text = String::new();
            for parent in 1..tli {
                writeln!(
                    text,
                    "{parent}\t{}\tno recovery target specified",
                    lsn_text(u64::from(parent) * SEGMENT_BYTES * 37 + 0xA0)
                )
                .unwrap();
            }
            plans.push(Plan {
                side,
                name: format!("{tli:08X}.history"),
                kind: FileKind::History,
                incompressible: 0.0,
                filled: 0.0,
                text,
                seed: 0,
                age_rank: rank,
            });
            rank += 1;
        }
    }
    (sysid, plans)
}

fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Reuses the corpus in `root` when its manifest matches
/// (`files_per_side`, `seed`, generator version) and every file is there
/// with its recorded size; otherwise makes it with `threads` threads.
pub fn sync_corpus(root: &Path, files_per_side: usize, seed: u64, threads: usize) -> SyncCorpus {
    let header = format!("v={GENERATOR_VERSION} files_per_side={files_per_side} seed={seed}");
    if let Some(c) = existing_corpus(root, &header) {
        return c;
    }
    let started = Instant::now();
    let (sysid, plans) = plan_corpus(files_per_side, seed);
    for n in [1, 2] {
        let d = root.join(format!("arch{n}"));
        if d.exists() {
            std::fs::remove_dir_all(&d).unwrap_or_else(|e| panic!("rm -r {}: {e}", d.display()));
        }
        mkdir_postgres(&d, 0o700);
    }
    let _ = std::fs::remove_file(root.join(MANIFEST));
    let base = SystemTime::now() - Duration::from_secs(10 * plans.len() as u64 + 3600);
    let todo = Arc::new(Mutex::new((0..plans.len()).rev().collect::<Vec<_>>()));
    let plans = Arc::new(plans);
    let done: Arc<Mutex<Vec<Option<CorpusFile>>>> = Arc::new(Mutex::new(vec![None; plans.len()]));
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let todo = todo.clone();
            let plans = plans.clone();
            let done = done.clone();
            let root = root.to_path_buf();
            thread::spawn(move || loop {
                let Some(i) = todo.lock().unwrap().pop() else {
                    return;
                };
                let p = &plans[i];
                let (raw, stored) = match p.kind {
                    FileKind::Segment => {
                        let name = WalName::parse(&p.name).expect("valid name");
                        let mut rng = Rng::new(p.seed);
                        let seg =
                            fabricate_segment(&name, sysid, p.incompressible, p.filled, &mut rng);
                        (seg.len() as u64, zstd_stored(&seg))
                    }
                    _ => (p.text.len() as u64, zstd_stored(p.text.as_bytes())),
                };
                let path = root.join(format!("arch{}", p.side)).join(&p.name);
                write_postgres_file(&path, &stored, 0o600);
                let mtime = base + Duration::from_secs(10 * p.age_rank);
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(mtime))
                    .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
                done.lock().unwrap()[i] = Some(CorpusFile {
                    name: p.name.clone(),
                    kind: p.kind,
                    stored_bytes: stored.len() as u64,
                    raw_bytes: raw,
                });
            })
        })
        .collect();
    for w in workers {
        w.join().expect("corpus worker");
    }
    let files: Vec<CorpusFile> = done
        .lock()
        .unwrap()
        .iter()
        .map(|f| f.clone().expect("made"))
        .collect();
    let mut sides: [Vec<CorpusFile>; 2] = [Vec::new(), Vec::new()];
    for (p, f) in plans.iter().zip(files) {
        sides[p.side - 1].push(f);
    }
    for s in &mut sides {
        s.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let mut manifest = format!("{header}\nsysid={sysid}\n");
    for (i, s) in sides.iter().enumerate() {
        for f in s {
            writeln!(
                manifest,
                "{} {} {} {}",
                i + 1,
                f.name,
                f.stored_bytes,
                f.raw_bytes
            )
            .unwrap();
        }
    }
    std::fs::write(root.join(MANIFEST), manifest).expect("write corpus manifest");
    SyncCorpus {
        root: root.to_path_buf(),
        sides,
        system_identifier: sysid,
        generated_secs: started.elapsed().as_secs_f64(),
    }
}

fn existing_corpus(root: &Path, header: &str) -> Option<SyncCorpus> {
    let text = std::fs::read_to_string(root.join(MANIFEST)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != header {
        return None;
    }
    let sysid: u64 = lines.next()?.strip_prefix("sysid=")?.parse().ok()?;
    let mut sides: [Vec<CorpusFile>; 2] = [Vec::new(), Vec::new()];
    for l in lines {
        let mut it = l.split(' ');
        let side: usize = it.next()?.parse().ok()?;
        let name = it.next()?.to_string();
        let stored_bytes: u64 = it.next()?.parse().ok()?;
        let raw_bytes: u64 = it.next()?.parse().ok()?;
        let kind = match WalName::parse(&name).ok()?.kind() {
            archive_core::common::wal::WalKind::Segment => FileKind::Segment,
            archive_core::common::wal::WalKind::History => FileKind::History,
            _ => FileKind::Backup,
        };
        let path = root.join(format!("arch{side}")).join(&name);
        if std::fs::metadata(&path).ok()?.len() != stored_bytes || !(1..=2).contains(&side) {
            return None;
        }
        sides[side - 1].push(CorpusFile {
            name,
            kind,
            stored_bytes,
            raw_bytes,
        });
    }
    Some(SyncCorpus {
        root: root.to_path_buf(),
        sides,
        system_identifier: sysid,
        generated_secs: 0.0,
    })
}

/// Puts the corpus in archive directory `dst` of both servers: each server
/// gets its side's files (hard links to the corpus, so every scenario starts
/// from the very same bytes and mtimes; a copy when the corpus is on
/// another filesystem) and the `.pgarchive/system_identifier` record.
/// Returns how many files were copied rather than linked.
pub fn place_corpus(lab: &Lab, corpus: &SyncCorpus, dst: &str) -> usize {
    let mut copied = 0;
    for n in [1, 2] {
        let dir = lab
            .stored_path(n, dst, "x")
            .parent()
            .expect("dir")
            .to_path_buf();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .unwrap_or_else(|e| panic!("rm -r {}: {e}", dir.display()));
        }
        mkdir_postgres(&dir, 0o700);
        mkdir_postgres(dir.join(".pgarchive"), 0o700);
        write_postgres_file(
            dir.join(".pgarchive/system_identifier"),
            corpus.identity_json(),
            0o600,
        );
        assert_eq!(
            archive_core::server::store::recorded_identity(&dir).map(|i| i.system_identifier),
            Some(corpus.system_identifier),
            "the store reads back the identity record"
        );
        for f in corpus.side(n) {
            let from = corpus.side_dir(n).join(&f.name);
            let to = dir.join(&f.name);
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to)
                    .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
                chown_postgres(&to);
                let mtime = std::fs::metadata(&from)
                    .and_then(|m| m.modified())
                    .expect("corpus mtime");
                std::fs::File::options()
                    .write(true)
                    .open(&to)
                    .and_then(|f| f.set_modified(mtime))
                    .expect("set mtime");
                copied += 1;
            }
        }
    }
    copied
}

/// Removes archive directory `dst` from both servers.
pub fn remove_dst(lab: &Lab, dst: &str) {
    for n in [1, 2] {
        let dir = lab.stored_path(n, dst, "x");
        let dir = dir.parent().expect("dir");
        if dir.exists() {
            std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("rm -r {}: {e}", dir.display()));
        }
    }
}

/// Checks that both servers hold every corpus file of both sides in `dst`,
/// byte for byte as stored, and no other archive file.
pub fn verify_synced(lab: &Lab, corpus: &SyncCorpus, dst: &str) -> Result<(), String> {
    let mut want: Vec<(usize, &CorpusFile)> = Vec::new();
    for n in [1, 2] {
        want.extend(corpus.side(n).iter().map(|f| (n, f)));
    }
    let mut names: Vec<&str> = want.iter().map(|(_, f)| f.name.as_str()).collect();
    names.sort_unstable();
    for server in [1, 2] {
        let dir = lab.stored_path(server, dst, "x");
        let have: Vec<String> = list_files(dir.parent().expect("dir"))
            .into_iter()
            .filter(|f| !f.starts_with('.'))
            .collect();
        if have != names {
            let missing = names
                .iter()
                .filter(|n| !have.iter().any(|h| h == *n))
                .count();
            let extra = have.iter().filter(|h| !names.contains(&h.as_str())).count();
            return Err(format!(
                "arch{server} holds {} files in {dst}, expected {} ({missing} missing, {extra} unexpected)",
                have.len(),
                names.len()
            ));
        }
        for (origin, f) in &want {
            if *origin == server {
                continue;
            }
            let got = lab.stored_path(server, dst, &f.name);
            let src = corpus.side_dir(*origin).join(&f.name);
            if !same_bytes(&got, &src)? {
                return Err(format!(
                    "arch{server}'s copy of {} differs from arch{origin}'s",
                    f.name
                ));
            }
        }
    }
    Ok(())
}

fn same_bytes(a: &Path, b: &Path) -> Result<bool, String> {
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| format!("open {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let la = fa.metadata().map_err(|e| e.to_string())?.len();
    let lb = fb.metadata().map_err(|e| e.to_string())?.len();
    if la != lb {
        return Ok(false);
    }
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    loop {
        let n = archive_core::common::codec::read_full(&mut fa, &mut ba)
            .map_err(|e| format!("read {}: {e}", a.display()))?;
        let m = archive_core::common::codec::read_full(&mut fb, &mut bb)
            .map_err(|e| format!("read {}: {e}", b.display()))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// One core's CPU time for the checks a verified copy implies, measured on
/// a sample of the corpus' segments and scaled to the whole corpus.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyCosts {
    /// Segments measured.
    pub sampled: usize,
    /// Reading the stored bytes (page cache) and hashing them with blake3:
    /// what checking a copy byte for byte costs.
    pub hash_stored_secs: f64,
    /// Decoding the zstd stream and hashing the raw bytes with blake3: what
    /// the receiving side's decode check costs.
    pub decode_raw_secs: f64,
}

/// Measures [`VerifyCosts`] on up to `sample` segments spread over the
/// corpus (this thread's CPU time).
pub fn verify_costs(corpus: &SyncCorpus, sample: usize) -> VerifyCosts {
    let segs: Vec<(PathBuf, &CorpusFile)> = [1, 2]
        .iter()
        .flat_map(|&n| {
            corpus
                .side(n)
                .iter()
                .filter(|f| f.kind == FileKind::Segment)
                .map(move |f| (corpus.side_dir(n).join(&f.name), f))
        })
        .collect();
    if segs.is_empty() || sample == 0 {
        return VerifyCosts::default();
    }
    let step = (segs.len() / sample.min(segs.len())).max(1);
    let picked: Vec<&(PathBuf, &CorpusFile)> = segs.iter().step_by(step).take(sample).collect();
    let (mut stored, mut raw) = (0u64, 0u64);
    let (mut t_hash, mut t_decode) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    for (path, f) in &picked {
        let t = thread_cpu_ticks();
        let bytes = std::fs::read(path).expect("read corpus file");
        std::hint::black_box(blake3::hash(&bytes));
        let t2 = thread_cpu_ticks();
        let mut dec = zstd::stream::read::Decoder::new(&bytes[..]).expect("decoder");
        let mut h = blake3::Hasher::new();
        loop {
            let n = dec.read(&mut buf).expect("decode corpus file");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        std::hint::black_box(h.finalize());
        let t3 = thread_cpu_ticks();
        t_hash += t2 - t;
        t_decode += t3 - t2;
        stored += f.stored_bytes;
        raw += f.raw_bytes;
    }
    let scale_stored = corpus.stored_bytes() as f64 / stored.max(1) as f64;
    let scale_raw = corpus.raw_bytes() as f64 / raw.max(1) as f64;
    VerifyCosts {
        sampled: picked.len(),
        hash_stored_secs: t_hash as f64 / CLK_TCK * scale_stored,
        decode_raw_secs: t_decode as f64 / CLK_TCK * scale_raw,
    }
}

// ---------------------------------------------------------------------------
// CPU accounting
// ---------------------------------------------------------------------------

/// CPU time per process name over a sampling window.
#[derive(Debug, Clone, Default)]
pub struct CpuByName {
    /// CPU-seconds (user + system) per comm of the processes in the
    /// watched PID namespaces (the lab's servers).
    pub secs: BTreeMap<String, f64>,
    /// Distinct processes seen per comm, in the watched namespaces.
    pub procs: BTreeMap<String, usize>,
    /// CPU-seconds per comm of every other process; kernel threads are
    /// added up under [`KERNEL_THREADS`].
    pub other_secs: BTreeMap<String, f64>,
    /// CPU-seconds the sampler thread used.
    pub own_secs: f64,
}

/// The name [`CpuByName`] gives all kernel threads (kworker, ksoftirqd,
/// jbd2, ...: writeback, journal, deferred network work).
pub const KERNEL_THREADS: &str = "[kernel threads]";

impl CpuByName {
    /// CPU-seconds of `comm` (0 when unseen).
    pub fn of(&self, comm: &str) -> f64 {
        self.secs.get(comm).copied().unwrap_or(0.0)
    }
    /// CPU-seconds of every process seen, watched or not.
    pub fn total(&self) -> f64 {
        self.secs.values().chain(self.other_secs.values()).sum()
    }
    /// CPU-seconds of the processes outside the watched namespaces named
    /// `name` ([`KERNEL_THREADS`] for kernel threads).
    pub fn other(&self, name: &str) -> f64 {
        self.other_secs.get(name).copied().unwrap_or(0.0)
    }
    /// The `n` busiest processes outside the watched namespaces by name,
    /// kernel threads excepted, busiest first.
    pub fn others(&self, n: usize) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = self
            .other_secs
            .iter()
            .filter(|(k, s)| k.as_str() != KERNEL_THREADS && **s > 0.0)
            .map(|(k, s)| (k.clone(), *s))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(n);
        v
    }
}

/// Samples `/proc` every `interval` from a background thread, adding up
/// the CPU time every process used while it ran, by name (`/proc/PID/comm`)
/// and by whether it runs in one of the watched PID `namespaces` (as
/// `/proc/PID/ns/pid` names them, see [`lab_pid_namespaces`]): for a
/// process alive at the first sample, from that moment; for one born later,
/// from its start. Up to one interval of a process that exits is missed.
/// [`Sampler::finish`] takes a last sample and returns the totals.
pub fn sample_cpu_by_name(interval: Duration, namespaces: Vec<String>) -> Sampler<CpuByName> {
    Sampler::start("bench-cpu", move |stop| {
        cpu_loop(stop, interval, &namespaces)
    })
}

/// (comm, is a kernel thread, starttime, utime + stime) of a process.
fn proc_cpu(pid: i32) -> Option<(String, bool, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // Fields after comm start at field 3 (state).
    let at = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    let kernel = pid == 2 || at(4)? == 2;
    Some((comm, kernel, at(22)?, at(14)? + at(15)?))
}

/// The PID namespaces of the lab's running servers (everything the lab's
/// sshd runs, and everything run through [`Lab::server_cmd`], is in one).
pub fn lab_pid_namespaces(lab: &Lab) -> Vec<String> {
    lab.servers()
        .iter()
        .filter_map(|s| s.listener_pid())
        .filter_map(|pid| crate::proc::namespace_of(pid, "pid"))
        .collect()
}

fn cpu_loop(stop: &AtomicBool, interval: Duration, namespaces: &[String]) -> CpuByName {
    let own0 = thread_cpu_ticks();
    // (pid, starttime) -> (name, watched, ticks at first sight or 0, latest ticks)
    let mut seen: HashMap<(i32, u64), (String, bool, u64, u64)> = HashMap::new();
    let mut first = true;
    loop {
        let last = stop.load(Ordering::SeqCst);
        for pid in crate::proc::all_pids() {
            let Some((comm, kernel, start, ticks)) = proc_cpu(pid) else {
                continue;
            };
            seen.entry((pid, start))
                .and_modify(|e| {
                    // A fork gets its name at exec (nsenter -> wal-sync).
                    if !kernel {
                        e.0.clone_from(&comm);
                    }
                    e.3 = e.3.max(ticks);
                })
                .or_insert_with(|| {
                    let name = if kernel {
                        KERNEL_THREADS.to_string()
                    } else {
                        comm
                    };
                    let watched = !kernel
                        && crate::proc::namespace_of(pid, "pid")
                            .is_some_and(|ns| namespaces.contains(&ns));
                    (name, watched, if first { ticks } else { 0 }, ticks)
                });
        }
        first = false;
        if last {
            break;
        }
        thread::sleep(interval);
    }
    let mut out = CpuByName::default();
    for (comm, watched, base, latest) in seen.into_values() {
        let secs = latest.saturating_sub(base) as f64 / CLK_TCK;
        if watched {
            *out.secs.entry(comm.clone()).or_default() += secs;
            *out.procs.entry(comm).or_default() += 1;
        } else {
            *out.other_secs.entry(comm).or_default() += secs;
        }
    }
    out.own_secs = thread_cpu_ticks().saturating_sub(own0) as f64 / CLK_TCK;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use archive_core::common::codec::{self, Codec};
    use archive_core::common::page_header::validate_first_page;

    #[test]
    fn fabricated_segments_pass_the_store_checks_and_compress_as_planned() {
        let name = WalName::parse("000000010000000A000000C3").unwrap();
        let mut sizes = Vec::new();
        for (f, filled) in [(0.0, 1.0), (0.1, 1.0), (1.0, 1.0), (0.0, 0.25)] {
            let seg = fabricate_segment(&name, 42, f, filled, &mut Rng::new(7));
            assert_eq!(seg.len() as u64, SEGMENT_BYTES);
            let hdr = validate_first_page(&seg, &name).unwrap();
            assert_eq!(hdr.system_identifier, 42);
            assert_eq!(u64::from(hdr.seg_size), SEGMENT_BYTES);
            let z = zstd_stored(&seg);
            assert_eq!(
                codec::sniff(&z[..z.len().min(codec::SNIFF_LEN)]),
                Codec::Zstd
            );
            assert_eq!(codec::decode_all(Codec::Zstd, &z).unwrap(), seg);
            sizes.push(z.len() as f64 / 1e6);
        }
        let expect = |f: f64, filled: f64| filled * (BASE_MB + f * (FULL_MB - BASE_MB));
        for (got, want) in sizes.iter().zip([
            expect(0.0, 1.0),
            expect(0.1, 1.0),
            expect(1.0, 1.0),
            expect(0.0, 0.25),
        ]) {
            assert!((got / want - 1.0).abs() < 0.1, "{sizes:?}");
        }
    }

    #[test]
    fn the_plan_has_unique_valid_names_and_the_small_file_share() {
        let (_, plans) = plan_corpus(500, 1);
        assert_eq!(plans.len(), 1000);
        let mut names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 1000);
        for p in &plans {
            WalName::parse(&p.name).unwrap();
        }
        let small = plans.iter().filter(|p| p.kind != FileKind::Segment).count();
        assert_eq!(small, 20);
        for side in [1, 2] {
            assert_eq!(plans.iter().filter(|p| p.side == side).count(), 500);
        }
    }
}
