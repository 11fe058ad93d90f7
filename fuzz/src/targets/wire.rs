//! `wire`: bytes a client writes to `archive-remote-cmd serve`, fed to the
//! serve loop ([`Server::serve`]) over an in-memory stream: the frame
//! decoder (`net::wire::read_frame_upto` with `MAX_REQUEST_FRAME`), the
//! request decoding, and every request's validation and handling, on a
//! scratch archive root.
//!
//! Each case gets `/tmp/pgarchive-fuzz/<16 hex>/` with `archive/` (the
//! archive root), `outside/` (a directory the client must not reach),
//! `state/`, `run/` and an ssh config whose `ProxyCommand` fails, so a
//! forward or delivery to a peer fails at once instead of reaching the
//! network. The input names paths with the placeholder
//! `ROOTROOTROOTROOT` for the 16 hex digits (same length, so frame lengths
//! hold): [`ROOT`] is the archive root of every case.
//!
//! Properties: no panic (in the loop or any task it spawns); `serve` ends
//! within 60 s on an input that is already complete; what the server wrote
//! is a sequence of well-formed reply frames (length, JSON with a `reply`
//! tag, a `file` reply followed by its bytes and an `end` frame); nothing
//! appears outside the case's directories, in `outside/`, and no symbolic
//! link under the root.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use archive_core::common::codec::{zstd_compress, Codec};
use archive_core::common::config::Config;
use archive_core::common::page_header::build_long_header;
use archive_core::common::wal::WalName;
use archive_core::server::serve::Server;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

use super::{ensure, Target};
use crate::mutate::{mutated, with_edits};

/// The target.
pub static TARGET: Target = Target {
    name: "wire",
    what: "the serve loop: frames, requests, their validation and handling",
    check,
    strategy,
    seeds,
};

/// Where case directories go.
const BASE: &str = "/tmp/pgarchive-fuzz";
/// Stands for a case's 16 hex digits in an input.
const PLACEHOLDER: &[u8; 16] = b"ROOTROOTROOTROOT";
/// The archive root, as inputs name it.
pub const ROOT: &str = "/tmp/pgarchive-fuzz/ROOTROOTROOTROOT/archive";
/// A sibling of the root no request may reach.
const OUTSIDE: &str = "/tmp/pgarchive-fuzz/ROOTROOTROOTROOT/outside";
/// This server's name.
const SERVER_NAME: &str = "arch1";
/// Largest frame a server writes (`net::wire::MAX_FRAME`).
const MAX_FRAME: u64 = 32 << 20;
/// Largest request frame (`net::wire::MAX_REQUEST_FRAME`).
const MAX_REQUEST_FRAME: u32 = 1 << 20;
/// Largest declared file size (`net::wire::MAX_FILE_SIZE`).
const MAX_FILE_SIZE: u64 = (1 << 30) + (64 << 20);
/// How long one input may keep the loop busy.
const CASE_LIMIT: Duration = Duration::from_secs(60);
/// Segment size of the fabricated segments.
const SEG: u64 = 1 << 20;

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

fn next_case_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}{:08x}", std::process::id(), n as u32)
}

/// Replaces the placeholder by `id` wherever it occurs.
fn substitute(input: &[u8], id: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let mut i = 0;
    while i + PLACEHOLDER.len() <= out.len() {
        if &out[i..i + PLACEHOLDER.len()] == PLACEHOLDER {
            out[i..i + PLACEHOLDER.len()].copy_from_slice(id);
            i += PLACEHOLDER.len();
        } else {
            i += 1;
        }
    }
    out
}

struct Case {
    dir: PathBuf,
}

impl Case {
    fn new(id: &str) -> Result<Case, String> {
        let dir = Path::new(BASE).join(id);
        let _ = fs::remove_dir_all(&dir);
        for sub in ["archive", "outside", "state", "run"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| format!("setup: {e}"))?;
        }
        fs::write(
            dir.join("ssh_config"),
            "Host *\n  ProxyCommand /bin/false\n  BatchMode yes\n",
        )
        .map_err(|e| format!("setup: {e}"))?;
        Ok(Case { dir })
    }

    fn config(&self) -> Config {
        Config {
            archive_roots: vec![self.dir.join("archive")],
            state_dir: Some(self.dir.join("state")),
            runtime_dir: Some(self.dir.join("run")),
            ssh_config: Some(self.dir.join("ssh_config")),
            server_name: Some(SERVER_NAME.into()),
            io_timeout: 5,
            connect_timeout: 1,
            quiet: true,
            ..Config::default()
        }
    }

    /// Nothing outside the case's directories, nothing in `outside/`, no
    /// symbolic link under the root.
    fn check_tree(&self) -> Result<(), String> {
        let mut top: Vec<String> = fs::read_dir(&self.dir)
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        ensure(
            top == ["archive", "outside", "run", "ssh_config", "state"],
            || format!("the case directory holds {top:?}"),
        )?;
        let outside: Vec<_> = fs::read_dir(self.dir.join("outside"))
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.path())
            .collect();
        ensure(outside.is_empty(), || {
            format!("a request reached outside the root: {outside:?}")
        })?;
        let mut stack = vec![self.dir.join("archive")];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).map_err(|e| e.to_string())?.flatten() {
                let t = e.file_type().map_err(|e| e.to_string())?;
                ensure(!t.is_symlink(), || {
                    format!("a symbolic link under the root: {}", e.path().display())
                })?;
                if t.is_dir() {
                    stack.push(e.path());
                }
            }
        }
        Ok(())
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// What the server wrote must be reply frames, a `file` reply followed by
/// its bytes and an `end` frame.
fn check_replies(out: &[u8]) -> Result<(), String> {
    let mut p = 0usize;
    let mut want_end = false;
    while p < out.len() {
        ensure(out.len() - p >= 4, || {
            "the output ends inside a frame length".into()
        })?;
        let len = u32::from_be_bytes(out[p..p + 4].try_into().expect("4 bytes"));
        ensure(u64::from(len) <= MAX_FRAME, || {
            format!("a reply frame of {len} bytes")
        })?;
        p += 4;
        let len = len as usize;
        ensure(out.len() - p >= len, || {
            "the output ends inside a frame".into()
        })?;
        let v: Value = serde_json::from_slice(&out[p..p + len])
            .map_err(|e| format!("a reply frame is not JSON: {e}"))?;
        p += len;
        let reply = v
            .get("reply")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("a reply without a reply tag: {v}"))?;
        if want_end {
            ensure(reply == "end", || format!("file bytes closed by {reply:?}"))?;
            want_end = false;
            continue;
        }
        if reply == "file" {
            let size = v
                .get("size")
                .and_then(Value::as_u64)
                .ok_or("file without size")?;
            ensure(size <= (out.len() - p) as u64, || {
                format!("a file reply of {size} bytes, fewer follow")
            })?;
            p += size as usize;
            want_end = true;
        }
    }
    ensure(!want_end, || "file bytes without their end frame".into())
}

/// The properties.
pub fn check(input: &[u8]) -> Result<(), String> {
    let id = next_case_id();
    let input = substitute(input, id.as_bytes());
    let case = Case::new(&id)?;
    let mut out = Vec::new();
    let served = RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
        });
        rt.block_on(async {
            let mut server = Server::new(case.config()).map_err(|e| format!("Server::new: {e}"))?;
            tokio::time::timeout(CASE_LIMIT, server.serve(&input[..], &mut out))
                .await
                .map_err(|_| format!("serve did not end within {CASE_LIMIT:?}"))
        })
    });
    let _result = served?;
    check_replies(&out)?;
    case.check_tree()
}

// ---- inputs ----

fn frame(v: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(v).expect("json");
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend(body);
    f
}

fn end_frame(content: &[u8]) -> Vec<u8> {
    frame(&json!({"op": "end", "checksum": blake3::hash(content).to_hex().to_string()}))
}

/// A 1 MiB segment named `name`: its header and zeros.
fn segment(name: &str, tli: u32) -> Vec<u8> {
    let w = WalName::parse(name).expect("a segment name");
    let mut v = vec![0u8; SEG as usize];
    v[..40].copy_from_slice(&build_long_header(
        16,
        tli,
        w.start_lsn(SEG),
        7_000_000_000_000_000_001,
        SEG as u32,
    ));
    v
}

/// Segments made once: (name, content as sent).
fn stock() -> &'static [(String, Vec<u8>)] {
    static STOCK: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    STOCK.get_or_init(|| {
        let mut v = Vec::new();
        for (i, codec) in [Codec::Zstd, Codec::Gzip, Codec::Bzip2]
            .into_iter()
            .enumerate()
        {
            let name = format!("0000000100000000000000{:02X}", i + 1);
            let seg = segment(&name, 1);
            v.push((name.clone(), super::codec::compress(codec, &seg, 1)));
            v.push((
                format!("{name}.partial"),
                zstd_compress(&seg, 1).expect("zstd"),
            ));
        }
        // Another cluster's segment (other system identifier).
        let mut other = segment("000000010000000000000004", 1);
        other[24..32].copy_from_slice(&42u64.to_le_bytes());
        v.push((
            "000000010000000000000004".into(),
            zstd_compress(&other, 1).expect("zstd"),
        ));
        v.push((
            "00000002.history".into(),
            b"1\t0/3000000\tno recovery target specified\n".to_vec(),
        ));
        v.push((
            "000000010000000000000001.00000028.backup".into(),
            b"START WAL LOCATION: 0/1000028 (file 000000010000000000000001)\n".to_vec(),
        ));
        v
    })
}

fn dirs() -> impl Strategy<Value = String> {
    let root = ROOT.to_string();
    prop_oneof![
        8 => Just(format!("{root}/main")),
        1 => select(vec![
            format!("{root}/main/sub"),
            format!("{root}/other"),
            root.clone(),
            format!("{root}/"),
            format!("{root}//main"),
            format!("{root}/./main"),
            format!("{root}/main/.."),
            format!("{root}/../outside"),
            format!("{root}/main/.pgarchive"),
            format!("{root}/main/.pgarchive/owed"),
            format!("{root}/main/000000010000000000000001"),
            format!("{root}/main/00000002.history"),
            format!("{root}/main/x\u{0}y"),
            format!("{root}/main/é"),
            format!("{root}/{}", "a".repeat(1100)),
            OUTSIDE.to_string(),
            format!("{OUTSIDE}/x"),
            "/etc".to_string(),
            "/".to_string(),
            "main".to_string(),
            String::new(),
        ]),
    ]
}

fn names() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(stock().iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()),
        1 => select(vec![
            "", ".", "..", "../x", "a/b", ".pgarchive", "x.tmp", "00000001000000000000000a",
            "000000000000000000000001", "000000010000000000001000", "FFFFFFFFFFFFFFFF000000FF",
            "0000000100000000000000FF.partial", "base.tar.zst", "backup_label", "wal-sync",
            "a\nb", "-x",
        ])
        .prop_map(str::to_string),
        1 => "[0-9A-Fa-z./]{0,70}",
    ]
}

fn hosts() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        1 => select(vec![
            "arch2", SERVER_NAME, "-oProxyCommand=x", "../x", "a b", "", "arch2.example.com",
        ])
        .prop_map(|s| Some(s.to_string())),
    ]
}

fn sizes(len: usize) -> impl Strategy<Value = u64> {
    let len = len as u64;
    prop_oneof![
        8 => Just(len),
        1 => select(vec![
            0,
            1,
            len.saturating_sub(1),
            len + 1,
            SEG,
            MAX_FILE_SIZE,
            MAX_FILE_SIZE + 1,
            u64::MAX,
        ]),
    ]
}

/// A put: its frame, its content and its end frame.
fn put() -> impl Strategy<Value = Vec<u8>> {
    let content = prop_oneof![
        4 => select(stock().to_vec()),
        1 => (names(), vec(any::<u8>(), 0..64)),
    ];
    (
        content,
        any::<bool>(),
        names(),
        dirs(),
        hosts(),
        hosts(),
        any::<bool>(),
        prop_oneof![
            6 => Just("main"),
            1 => select(vec!["main.15-a_b", "", "../x", "a/b", "-x", "other"]),
        ],
        any::<i64>(),
        0u8..8,
    )
        .prop_flat_map(
            |((name, content), rename, other, dir, to, from, bg, cluster, mtime, end)| {
                let len = content.len();
                sizes(len).prop_map(move |size| {
                    let name = if rename { other.clone() } else { name.clone() };
                    let mut v = frame(&json!({
                        "op": "put", "dir": dir, "name": name, "size": size, "mtime": mtime,
                        "cluster": cluster, "forward_to": to, "from": from,
                        "forward_in_background": bg,
                    }));
                    v.extend_from_slice(&content);
                    match end {
                        0 => v.extend(frame(&json!({"op": "end", "checksum": "00"}))),
                        1 => v.extend(frame(&json!({"op": "hello", "version": 1}))),
                        2 => {}
                        _ => v.extend(end_frame(&content)),
                    }
                    v
                })
            },
        )
}

fn name_list() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        8 => vec(names(), 0..5),
        1 => Just((1..=1001u32).map(|i| format!("0000000100000000{i:08X}")).collect()),
    ]
}

/// One request other than a put.
fn other_request() -> impl Strategy<Value = Value> {
    prop_oneof![
        (prop_oneof![Just(1u32), any::<u32>()]).prop_map(|v| json!({"op": "hello", "version": v})),
        (dirs(), names()).prop_map(|(d, n)| json!({"op": "get", "dir": d, "name": n})),
        dirs().prop_map(|d| json!({"op": "list", "dir": d})),
        (dirs(), name_list()).prop_map(|(d, n)| json!({"op": "remove", "dir": d, "names": n})),
        (dirs(), name_list()).prop_map(|(d, n)| json!({"op": "digest", "dir": d, "names": n})),
        (
            dirs(),
            select(vec!["wal-sync", "wal-cleanup", "../x", "", ".x", "a/b"]),
            ".{0,20}"
        )
            .prop_map(|(d, n, h)| json!({"op": "lock", "dir": d, "name": n, "holder": h})),
        dirs().prop_map(|d| json!({"op": "oldest_backup", "backup_dir": d})),
        dirs().prop_map(|d| json!({"op": "list_backups", "backup_dir": d})),
        (dirs(), any::<u32>(), names()).prop_map(|(d, i, n)| {
            json!({"op": "get_backup_file", "backup_dir": d, "index": i % 4, "name": n})
        }),
        (dirs(), hosts()).prop_map(|(d, p)| json!({"op": "deliver_owed", "dir": d, "peer": p})),
        (dirs(), proptest::option::of(dirs()))
            .prop_map(|(d, b)| json!({"op": "dir_status", "dir": d, "backup_dir": b})),
        ".{0,70}".prop_map(|c| json!({"op": "end", "checksum": c})),
        Just(json!({"op": "shutdown"})),
        Just(json!({"op": ["put"]})),
        Just(json!([1, 2, 3])),
        Just(json!({"op": "list", "dir": 5})),
        Just(json!({"op": "put", "dir": ROOT, "name": "000000010000000000000001", "size": -1})),
    ]
}

/// Frames whose length prefix lies now and then.
fn framed(v: Value) -> impl Strategy<Value = Vec<u8>> {
    let body = serde_json::to_vec(&v).expect("json");
    let len = body.len() as u32;
    prop_oneof![
        12 => Just(len),
        1 => select(vec![
            0,
            len.saturating_sub(1),
            len + 1,
            MAX_REQUEST_FRAME,
            MAX_REQUEST_FRAME + 1,
            u32::MAX,
        ]),
    ]
    .prop_map(move |l| {
        let mut f = l.to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        f
    })
}

/// A session: a few puts, then other requests (so they find files).
fn session() -> impl Strategy<Value = Vec<u8>> {
    let message = prop_oneof![
        1 => put(),
        3 => other_request().prop_flat_map(framed),
    ];
    (vec(put(), 0..3), vec(message, 0..6))
        .prop_map(|(puts, rest)| puts.into_iter().chain(rest).flatten().collect())
}

/// Tokens for byte mutations.
pub const DICT: &[&[u8]] = &[
    b"\"op\"",
    b"\"put\"",
    b"\"get\"",
    b"\"end\"",
    b"/..",
    b"/.",
    b"\\u0000",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b"null",
    b"-1",
    b"18446744073709551615",
    b"1e999",
    b"\x00\x10\x00\x00",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"ROOTROOTROOTROOT",
];

/// Sessions, sessions with byte edits, corpus mutations, arbitrary bytes.
pub fn strategy(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => session(),
        2 => with_edits(session(), 4, DICT),
        3 => mutated(seeds, DICT),
        1 => vec(any::<u8>(), 0..64),
    ]
    .boxed()
}

/// A put of each stock file followed by every other request on it, and
/// refusals.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = format!("{ROOT}/main");
    let put = |name: &str, content: &[u8], to: Option<&str>| {
        let mut v = frame(&json!({
            "op": "put", "dir": dir, "name": name, "size": content.len(), "mtime": 1_700_000_000,
            "cluster": "main", "forward_to": to, "from": null,
        }));
        v.extend_from_slice(content);
        v.extend(end_frame(content));
        v
    };
    let mut out = Vec::new();
    out.push(("hello".into(), frame(&json!({"op": "hello", "version": 1}))));
    for (name, content) in stock() {
        let mut v = frame(&json!({"op": "hello", "version": 1}));
        v.extend(put(name, content, None));
        for req in [
            json!({"op": "get", "dir": dir, "name": name}),
            json!({"op": "list", "dir": dir}),
            json!({"op": "digest", "dir": dir, "names": [name, "000000010000000000000009"]}),
            json!({"op": "dir_status", "dir": dir}),
            json!({"op": "remove", "dir": dir, "names": [name]}),
        ] {
            v.extend(frame(&req));
        }
        out.push((format!("put-{name}"), v));
    }
    let (name, content) = &stock()[0];
    out.push(("put-forward".into(), put(name, content, Some("arch2"))));
    // The same name again: the same segment compressed otherwise (already
    // stored), then other content (a conflict).
    let seg = segment(name, 1);
    let mut twice = put(name, content, None);
    twice.extend(put(
        name,
        &super::codec::compress(Codec::Gzip, &seg, 1),
        None,
    ));
    let mut changed = seg;
    changed[4096] = 1;
    twice.extend(put(name, &zstd_compress(&changed, 1).expect("zstd"), None));
    out.push(("put-twice-conflict".into(), twice));
    let mut lock = frame(&json!({"op": "lock", "dir": dir, "name": "wal-sync", "holder": "h"}));
    lock.extend(frame(
        &json!({"op": "lock", "dir": dir, "name": "wal-sync", "holder": "h"}),
    ));
    out.push(("lock-twice".into(), lock));
    out.push((
        "backups".into(),
        [
            frame(&json!({"op": "oldest_backup", "backup_dir": format!("{ROOT}/bk")})),
            frame(&json!({"op": "list_backups", "backup_dir": format!("{ROOT}/bk")})),
            frame(&json!({"op": "get_backup_file", "backup_dir": format!("{ROOT}/bk"), "index": 1, "name": "base.tar"})),
            frame(&json!({"op": "dir_status", "dir": dir, "backup_dir": format!("{ROOT}/bk")})),
        ]
        .concat(),
    ));
    out.push((
        "deliver-owed".into(),
        frame(&json!({"op": "deliver_owed", "dir": dir, "peer": "arch2"})),
    ));
    let mut escape = frame(&json!({
        "op": "put", "dir": format!("{ROOT}/../outside"), "name": name, "size": content.len(),
        "mtime": 0, "cluster": "main", "forward_to": null,
    }));
    escape.extend_from_slice(content);
    escape.extend(end_frame(content));
    out.push(("escape-dotdot".into(), escape));
    out.push((
        "too-large".into(),
        (MAX_REQUEST_FRAME + 1).to_be_bytes().to_vec(),
    ));
    out.push(("cut-length".into(), vec![0, 0]));
    out.push((
        "cut-body".into(),
        frame(&json!({"op": "hello", "version": 1}))[..10].to_vec(),
    ));
    out.push((
        "end-without-file".into(),
        frame(&json!({"op": "end", "checksum": "00"})),
    ));
    out
}
