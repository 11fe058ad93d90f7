//! A client holding a key of the archive servers, behaving as an attacker:
//! hand-made frames through real sshd and the real forced command. Each
//! test is one finding of the security review; it fails on a server that
//! lets the attack through.

use std::fs;

use e2e::hostile::{error_kind, exists, segment};
use e2e::{mkdir_postgres, write_postgres_file, Lab};

/// The server view of a path under the lab's archive root.
fn served(lab: &Lab, rel: &str) -> String {
    lab.archive_root().join(rel).display().to_string()
}

#[test]
fn deliver_owed_with_a_peer_that_is_a_path_deletes_nothing_outside_the_archive() {
    let lab = Lab::new();
    let storage = lab.server(1).storage();
    // The archive directory, and a directory of the server user's files
    // beside it that an unchecked peer name would reach as its "owed list".
    mkdir_postgres(storage.join("main"), 0o700);
    let victim = storage.join("victim");
    mkdir_postgres(&victim, 0o700);
    write_postgres_file(victim.join("000000010000000000000001"), b"keep me", 0o600);
    write_postgres_file(victim.join("postgresql.conf"), b"keep me too", 0o600);

    // A peer's key: the only role that may ask for a delivery.
    let mut ch = lab.raw_channel_as_peer(2, 1);
    ch.hello();
    for peer in ["../../../victim", &victim.display().to_string(), "a/b"] {
        ch.send(&format!(
            r#"{{"op":"deliver_owed","dir":"{}","peer":"{peer}"}}"#,
            served(&lab, "main")
        ));
        let reply = ch.reply();
        assert!(
            reply
                .as_deref()
                .is_none_or(|r| r.contains(r#""reply":"error""#)),
            "peer {peer:?} accepted: {reply:?}"
        );
        if reply.is_none() {
            ch = lab.raw_channel_as_peer(2, 1);
            ch.hello();
        }
    }
    drop(ch);
    for f in ["000000010000000000000001", "postgresql.conf"] {
        assert!(exists(&victim.join(f)), "{f} was deleted");
    }
    assert_eq!(
        fs::read(victim.join("postgresql.conf")).unwrap(),
        b"keep me too"
    );
}

const SYSID: u64 = 7_100_000_000_000_000_001;

/// An identity record made a directory made every later put recurse until
/// the stack overflowed: the server crashed on each put of that cluster,
/// and on each forward from its peer.
#[test]
fn an_identity_record_that_is_a_directory_fails_puts_without_crashing_the_server() {
    let lab = Lab::new();
    let storage = lab.server(1).storage();
    // Each level made by postgres (mkdir_postgres chowns only the last).
    for dir in [
        "main",
        "main/.pgarchive",
        "main/.pgarchive/system_identifier",
    ] {
        mkdir_postgres(storage.join(dir), 0o700);
    }
    let mut ch = lab.raw_channel(1);
    ch.hello();
    for name in ["000000010000000000000001", "000000010000000000000002"] {
        let reply = ch.put(&served(&lab, "main"), name, &segment(name, SYSID));
        let reply =
            reply.unwrap_or_else(|| panic!("no reply to the put of {name}: the server died"));
        assert_eq!(error_kind(&reply).as_deref(), Some("failed"), "{reply}");
        assert!(reply.contains("identity record"), "{reply}");
        assert!(!exists(&storage.join("main").join(name)));
    }
    assert!(ch.hello().contains("hello"), "the channel still answers");
}

/// A directory named like a WAL file would take that file's place (a later
/// put of the segment fails for good); `.pgarchive` is the archive's own.
#[test]
fn a_put_into_a_directory_named_like_a_segment_or_hidden_is_refused_and_creates_nothing() {
    let lab = Lab::new();
    let storage = lab.server(1).storage();
    let name = "000000010000000000000001";
    let mut ch = lab.raw_channel(1);
    ch.hello();
    for dir in [
        "main/000000010000000000000042",
        "main/.pgarchive/x",
        "main/.x",
    ] {
        let reply = ch
            .put(&served(&lab, dir), name, &segment(name, SYSID))
            .unwrap();
        assert_eq!(
            error_kind(&reply).as_deref(),
            Some("refused"),
            "{dir}: {reply}"
        );
    }
    assert!(!exists(&storage.join("main")), "nothing created");
    // A put refused for its content leaves no directory either.
    let wrong = segment("000000010000000000000009", SYSID);
    let reply = ch.put(&served(&lab, "other/deep"), name, &wrong).unwrap();
    assert_eq!(error_kind(&reply).as_deref(), Some("refused"), "{reply}");
    assert!(
        !exists(&storage.join("other")),
        "a refused put left its directory"
    );
}

/// A few KiB that decode to gigabytes: refused in bounded time, not stored.
#[test]
fn decompression_bombs_are_refused_without_decoding_them_whole() {
    use std::io::Write;
    let lab = Lab::new();
    let storage = lab.server(1).storage();
    // zstd: 1 GiB of zeros in a few KiB.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        enc.write_all(&zeros).unwrap();
    }
    let zbomb = enc.finish().unwrap();
    // bzip2: one stream of 40 MiB of zeros, repeated 200 times (8 GiB).
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    for _ in 0..40 {
        bz.write_all(&zeros).unwrap();
    }
    let stream = bz.finish().unwrap();
    let bbomb: Vec<u8> = stream
        .iter()
        .copied()
        .cycle()
        .take(stream.len() * 200)
        .collect();
    assert!(zbomb.len() < 64 << 10 && bbomb.len() < 1 << 20);

    let mut ch = lab.raw_channel(1);
    ch.hello();
    for (name, bomb) in [("00000002.history", &zbomb), ("00000003.history", &bbomb)] {
        let started = std::time::Instant::now();
        let reply = ch.put(&served(&lab, "main"), name, bomb).unwrap();
        assert_eq!(
            error_kind(&reply).as_deref(),
            Some("refused"),
            "{name}: {reply}"
        );
        assert!(reply.contains("decodes to more than"), "{reply}");
        assert!(!exists(&storage.join("main").join(name)), "{name} stored");
        eprintln!("{name}: refused after {:?}", started.elapsed());
    }
}

/// A link inside a root led puts and gets out of it.
#[test]
fn symbolic_links_below_a_root_are_refused_for_puts_and_gets() {
    let lab = Lab::new();
    let storage = lab.server(1).storage();
    let outside = lab.dir().join("outside");
    mkdir_postgres(&outside, 0o777);
    let name = "000000010000000000000001";
    write_postgres_file(outside.join(name), b"not for you", 0o644);
    std::os::unix::fs::symlink(&outside, storage.join("evil")).unwrap();
    mkdir_postgres(storage.join("main"), 0o700);
    std::os::unix::fs::symlink(outside.join(name), storage.join("main").join(name)).unwrap();

    let mut ch = lab.raw_channel(1);
    ch.hello();
    let other = "000000010000000000000002";
    let reply = ch
        .put(&served(&lab, "evil"), other, &segment(other, SYSID))
        .unwrap();
    assert_eq!(error_kind(&reply).as_deref(), Some("refused"), "{reply}");
    assert!(reply.contains("symbolic link"), "{reply}");
    assert!(!exists(&outside.join(other)), "written through the link");
    // Reading: a peer's key (a primary's may not get at all).
    let mut ch = lab.raw_channel_as_peer(2, 1);
    ch.hello();
    for dir in ["evil", "main"] {
        ch.send(&format!(
            r#"{{"op":"get","dir":"{}","name":"{name}"}}"#,
            served(&lab, dir)
        ));
        let reply = ch.reply().unwrap();
        assert!(
            error_kind(&reply).is_some(),
            "{dir}: read through the link: {reply}"
        );
    }
}

/// A put declaring more than any WAL file was refused without reading its
/// content, and the server went on reading that content as requests.
#[test]
fn an_oversized_put_is_refused_and_closes_the_channel() {
    let lab = Lab::new();
    let mut ch = lab.raw_channel(1);
    ch.hello();
    ch.send(&format!(
        r#"{{"op":"put","dir":"{}","name":"000000010000000000000001","size":{},"mtime":0,"cluster":"main","forward_to":null}}"#,
        served(&lab, "main"),
        4u64 << 30
    ));
    // "Content" that is a well-formed request.
    ch.send(r#"{"op":"hello","version":1}"#);
    let reply = ch.reply().expect("a reply to the put");
    assert_eq!(error_kind(&reply).as_deref(), Some("refused"), "{reply}");
    assert_eq!(ch.reply(), None, "the content was read as a request");
}

/// A stream cut short is a broken connection (retry, fail over), not bad
/// input.
#[test]
fn a_put_cut_short_is_a_failure_to_retry_not_refused() {
    let lab = Lab::new();
    let storage = lab.server(1).storage();
    let name = "000000010000000000000001";
    let mut ch = lab.raw_channel(1);
    ch.hello();
    ch.send(&format!(
        r#"{{"op":"put","dir":"{}","name":"{name}","size":{},"mtime":0,"cluster":"main","forward_to":null}}"#,
        served(&lab, "main"),
        16u64 << 20
    ));
    ch.send_bytes(&segment(name, SYSID)[..1 << 20]);
    ch.close_input();
    let reply = ch.reply().expect("a reply");
    assert_eq!(error_kind(&reply).as_deref(), Some("failed"), "{reply}");
    assert!(!exists(&storage.join("main").join(name)));
}

/// Frames and name lists are bounded: a 32 MiB list of names cost the
/// server 650-760 MiB of memory.
#[test]
fn large_requests_are_refused() {
    let lab = Lab::new();
    // A peer's key: the primary's may not ask for digests at all.
    let mut ch = lab.raw_channel_as_peer(2, 1);
    ch.hello();
    let names = |n: usize| {
        (0..n)
            .map(|i| format!("\"{:024X}\"", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    };
    ch.send(&format!(
        r#"{{"op":"digest","dir":"{}","names":[{}]}}"#,
        served(&lab, "main"),
        names(1001)
    ));
    let reply = ch.reply().unwrap();
    assert_eq!(error_kind(&reply).as_deref(), Some("refused"), "{reply}");
    // 2 MiB of JSON: the channel ends without the server parsing it.
    ch.send(&format!(
        r#"{{"op":"digest","dir":"{}","names":[{}]}}"#,
        served(&lab, "main"),
        names(80_000)
    ));
    assert_eq!(ch.reply(), None, "a 2 MiB request was read");
}

/// A client that keeps its channel alive with `hello` alone loses the lock
/// it took once the lease runs out; until then nobody else gets it.
#[test]
fn a_lock_held_by_a_channel_that_only_says_hello_expires() {
    let lab = Lab::new();
    lab.set_server_config_extra("lock_lease = 2\n");
    mkdir_postgres(lab.server(1).storage().join("main"), 0o700);
    let lock = format!(
        r#"{{"op":"lock","dir":"{}","name":"wal-sync","holder":"test"}}"#,
        served(&lab, "main")
    );
    // Peers' keys: the role that takes locks (wal-sync, wal-cleanup).
    let mut a = lab.raw_channel_as_peer(2, 1);
    a.hello();
    a.send(&lock);
    assert!(a.reply().unwrap().contains("locked"));
    let mut b = lab.raw_channel_as_peer(2, 1);
    b.hello();
    b.send(&lock);
    assert_eq!(error_kind(&b.reply().unwrap()).as_deref(), Some("conflict"));
    std::thread::sleep(std::time::Duration::from_secs(3));
    a.hello();
    b.send(&lock);
    let reply = b.reply().unwrap();
    assert!(
        reply.contains("locked"),
        "the lease did not expire: {reply}"
    );
}
