//! Keys with roles: each key's forced command names what it may ask
//! (`serve --role primary|standby|monitor|peer [--dir DIR]...`). Hand-made
//! frames through real sshd and the lab's authorized_keys; each test fails
//! on a server that gives every key every request.

use std::fs;

use e2e::hostile::{error_kind, exists, segment, RawChannel};
use e2e::{Key, Lab};

const SYSID: u64 = 7_100_000_000_000_000_002;
const SEG: &str = "000000010000000000000001";
const HISTORY: &[u8] = b"1\t0/3000000\tno recovery target specified\n";

/// The server view of a path under the lab's archive root.
fn served(lab: &Lab, rel: &str) -> String {
    lab.archive_root().join(rel).display().to_string()
}

/// A hello, answered.
fn open(lab: &Lab, key: Key, n: usize) -> RawChannel {
    let mut ch = lab.raw_channel_with(key, n);
    let hello = ch.hello();
    assert!(hello.contains(r#""reply":"hello""#), "{key:?}: {hello}");
    ch
}

/// Sends `request` on a new channel with `key` and asserts it is refused
/// for the key's role, naming the verb, and that the channel ends.
fn assert_refused(lab: &Lab, key: Key, request: &str, says: &str) {
    let mut ch = open(lab, key, 1);
    ch.send(request);
    let reply = ch
        .reply()
        .unwrap_or_else(|| panic!("no reply to {request}"));
    assert_eq!(
        error_kind(&reply).as_deref(),
        Some("refused"),
        "{key:?} {request}: {reply}"
    );
    assert!(reply.contains(says), "{key:?} {request}: {reply}");
    assert_eq!(ch.reply(), None, "the channel goes on after a refusal");
}

fn get(dir: &str, name: &str) -> String {
    format!(r#"{{"op":"get","dir":"{dir}","name":"{name}"}}"#)
}
fn list(dir: &str) -> String {
    format!(r#"{{"op":"list","dir":"{dir}"}}"#)
}
fn digest(dir: &str, name: &str) -> String {
    format!(r#"{{"op":"digest","dir":"{dir}","names":["{name}"]}}"#)
}
fn remove(dir: &str, name: &str) -> String {
    format!(r#"{{"op":"remove","dir":"{dir}","names":["{name}"]}}"#)
}

/// A put's request, content and checksum frames.
fn put_frames(ch: &mut RawChannel, dir: &str, name: &str, content: &[u8], from: &str) {
    ch.send(&format!(
        r#"{{"op":"put","dir":"{dir}","name":"{name}","size":{},"mtime":0,"cluster":"main","forward_to":null{from}}}"#,
        content.len()
    ));
    ch.send_bytes(content);
    ch.send(&format!(
        r#"{{"op":"end","checksum":"{}"}}"#,
        blake3::hash(content).to_hex()
    ));
}

/// Stores `name` in `dir` on server 1 with the primary's key.
fn store(lab: &Lab, dir: &str, name: &str, content: &[u8]) {
    let mut ch = open(lab, Key::Primary, 1);
    let reply = ch.put(&served(lab, dir), name, content).unwrap();
    assert!(reply.contains(r#""reply":"stored""#), "{name}: {reply}");
}

/// Other bytes for the same segment: same header, different content.
fn forged(name: &str) -> Vec<u8> {
    let mut v = segment(name, SYSID);
    v[4096..4096 + 11].copy_from_slice(b"not the WAL");
    v
}

/// Finding 4: `remove` then `put` replaced an archived segment.
#[test]
fn a_primary_key_cannot_remove_a_stored_segment_nor_replace_it() {
    let lab = Lab::new();
    let main = served(&lab, "main");
    store(&lab, "main", SEG, &segment(SEG, SYSID));
    let stored = lab.server(1).storage().join("main").join(SEG);
    let before = fs::read(&stored).unwrap();

    assert_refused(
        &lab,
        Key::Primary,
        &remove(&main, SEG),
        "role primary may not remove",
    );
    let mut ch = open(&lab, Key::Primary, 1);
    let reply = ch.put(&main, SEG, &forged(SEG)).unwrap();
    assert_eq!(error_kind(&reply).as_deref(), Some("conflict"), "{reply}");
    assert_eq!(
        fs::read(&stored).unwrap(),
        before,
        "the stored copy changed"
    );

    // Nor can it pose as the peer (a forwarded copy) or pick its role:
    // the role is the forced command's, whatever the client asks for.
    let mut ch = open(&lab, Key::Primary, 1);
    put_frames(
        &mut ch,
        &main,
        "000000010000000000000002",
        &segment("000000010000000000000002", SYSID),
        r#","from":"arch2""#,
    );
    let reply = ch.reply().unwrap();
    assert_eq!(error_kind(&reply).as_deref(), Some("refused"), "{reply}");
    assert!(reply.contains("forwarded by a peer"), "{reply}");
    for asked in [
        "archive-remote-cmd --role peer serve",
        "archive-remote-cmd serve --role peer",
    ] {
        let mut ch = lab.raw_channel_asking(1, asked);
        ch.send(r#"{"op":"hello","version":1}"#);
        if ch.reply().is_some() {
            ch.send(&remove(&main, SEG));
            let reply = ch.reply().unwrap();
            assert_eq!(error_kind(&reply).as_deref(), Some("refused"), "{reply}");
        }
    }
    assert_eq!(fs::read(&stored).unwrap(), before);
}

/// Every key reached every cluster under the roots; a primary's `--dir`
/// confines it to its own.
#[test]
fn a_primary_key_cannot_reach_another_clusters_directory() {
    let lab = Lab::new();
    store(&lab, "other", SEG, &segment(SEG, SYSID + 1));
    let stored = lab.server(1).storage().join("other").join(SEG);
    let before = fs::read(&stored).unwrap();
    let main = served(&lab, "main");
    let other = served(&lab, "other");
    lab.set_forced_args(Key::Primary, &format!("--role primary --dir {main}"));
    assert!(lab.forced_args(Key::Primary).contains("--dir"));

    store(&lab, "main", SEG, &segment(SEG, SYSID));
    store(&lab, "main/sub", SEG, &segment(SEG, SYSID));
    let name = "000000010000000000000002";
    let mut ch = open(&lab, Key::Primary, 1);
    let reply = ch.put(&other, name, &segment(name, SYSID + 1)).unwrap();
    assert_eq!(error_kind(&reply).as_deref(), Some("refused"), "{reply}");
    assert!(reply.contains("may not put in"), "{reply}");
    for (request, says) in [
        (get(&other, SEG), "may not get"),
        (list(&other), "may not list"),
        (digest(&other, SEG), "may not digest"),
        (remove(&other, SEG), "may not remove"),
        (list(&served(&lab, "mainx")), "may not list"),
    ] {
        assert_refused(&lab, Key::Primary, &request, says);
    }
    assert_eq!(fs::read(&stored).unwrap(), before);
    assert!(!exists(&lab.server(1).storage().join("other").join(name)));
}

#[test]
fn a_standby_key_reads_but_cannot_put_or_remove() {
    let lab = Lab::new();
    let main = served(&lab, "main");
    store(&lab, "main", SEG, &segment(SEG, SYSID));
    let stored = lab.server(1).storage().join("main").join(SEG);

    let mut ch = open(&lab, Key::Standby, 1);
    ch.send(&list(&main));
    assert!(ch.reply().unwrap().contains(SEG));
    ch.send(&get(&main, SEG));
    assert!(ch.reply().unwrap().contains(r#""reply":"file""#));
    drop(ch);

    assert_refused(&lab, Key::Standby, &remove(&main, SEG), "role standby");
    assert_refused(&lab, Key::Standby, &digest(&main, SEG), "role standby");
    let name = "000000010000000000000002";
    let mut ch = open(&lab, Key::Standby, 1);
    let reply = ch.put(&main, name, &segment(name, SYSID)).unwrap();
    assert_eq!(error_kind(&reply).as_deref(), Some("refused"), "{reply}");
    assert!(reply.contains("role standby may not put"), "{reply}");
    assert!(exists(&stored));
    assert!(!exists(&lab.server(1).storage().join("main").join(name)));
}

#[test]
fn a_monitor_key_reads_listings_and_history_but_no_segment() {
    let lab = Lab::new();
    let main = served(&lab, "main");
    store(&lab, "main", SEG, &segment(SEG, SYSID));
    store(&lab, "main", "00000002.history", HISTORY);

    let mut ch = open(&lab, Key::Monitor, 1);
    ch.send(&list(&main));
    assert!(ch.reply().unwrap().contains(SEG));
    ch.send(&digest(&main, SEG));
    assert!(ch.reply().unwrap().contains("raw_size"));
    ch.send(&format!(r#"{{"op":"dir_status","dir":"{main}"}}"#));
    assert!(ch.reply().unwrap().contains("dir_status"));
    ch.send(&get(&main, "00000002.history"));
    assert!(ch.reply().unwrap().contains(r#""reply":"file""#));
    drop(ch);

    assert_refused(
        &lab,
        Key::Monitor,
        &get(&main, SEG),
        "role monitor may not get a file other than a .history file",
    );
    assert_refused(&lab, Key::Monitor, &remove(&main, SEG), "role monitor");
    let name = "000000010000000000000002";
    let mut ch = open(&lab, Key::Monitor, 1);
    let reply = ch.put(&main, name, &segment(name, SYSID)).unwrap();
    assert_eq!(error_kind(&reply).as_deref(), Some("refused"), "{reply}");
}

#[test]
fn a_key_without_a_role_is_refused_unless_the_configuration_allows_it() {
    let lab = Lab::new();
    let main = served(&lab, "main");
    lab.set_forced_args(Key::Primary, "");

    let mut ch = lab.raw_channel(1);
    ch.send(r#"{"op":"hello","version":1}"#);
    let reply = ch.reply().expect("a reply to hello");
    assert_eq!(error_kind(&reply).as_deref(), Some("refused"), "{reply}");
    assert!(reply.contains("--role"), "{reply}");
    assert!(reply.contains("authorized_keys"), "{reply}");
    assert_eq!(ch.reply(), None);
    // archive-cmd says why.
    let wal = lab.dir().join("wal");
    e2e::mkdir_postgres(&wal, 0o755);
    e2e::write_postgres_file(wal.join(SEG), segment(SEG, SYSID), 0o600);
    let out = e2e::run(&mut lab.archive_cmd(&main, &wal.join(SEG), SEG, "main"));
    assert!(!out.status.success());
    assert!(
        e2e::stderr(&out).contains("--role"),
        "{}",
        e2e::stderr(&out)
    );
    assert!(!exists(&lab.server(1).storage().join("main").join(SEG)));

    // The old behaviour, on purpose: every request, with a warning.
    lab.set_server_config_extra("allow_keys_without_role = true\n");
    store(&lab, "main", SEG, &segment(SEG, SYSID));
    let mut ch = open(&lab, Key::Primary, 1);
    ch.send(&remove(&main, SEG));
    assert!(ch.reply().unwrap().contains(r#""removed":1"#));
}

/// What wal-sync, wal-cleanup and forwards need stays the peer's (the
/// sync and cleanup tests run the real programs).
#[test]
fn the_peer_key_keeps_every_request() {
    let lab = Lab::new();
    let main = served(&lab, "main");
    let mut ch = open(&lab, Key::Peer, 1);
    put_frames(
        &mut ch,
        &main,
        SEG,
        &segment(SEG, SYSID),
        r#","from":"arch2""#,
    );
    assert!(ch.reply().unwrap().contains(r#""reply":"stored""#));
    for (request, answer) in [
        (
            format!(r#"{{"op":"lock","dir":"{main}","name":"wal-sync","holder":"t"}}"#),
            "locked",
        ),
        (digest(&main, SEG), "raw_size"),
        (list(&main), SEG),
        (get(&main, SEG), r#""reply":"file""#),
    ] {
        ch.send(&request);
        let reply = ch.reply().unwrap();
        assert!(reply.contains(answer), "{request}: {reply}");
    }
    drop(ch);
    let mut ch = open(&lab, Key::Peer, 1);
    ch.send(&remove(&main, SEG));
    assert!(ch.reply().unwrap().contains(r#""removed":1"#));
}

fn check_setup(dir: &str, extra: &str) -> String {
    format!(r#"{{"op":"check_setup","dir":"{dir}"{extra}}}"#)
}

/// pgarchive-check's request: a primary key asks only about its own
/// directory, every name it sends is checked, and the other roles may not
/// ask at all.
#[test]
fn check_setup_answers_a_primary_about_its_own_directory_only() {
    let lab = Lab::new();
    let main = served(&lab, "main");
    lab.set_forced_args(Key::Primary, &format!("--role primary --dir {main}"));
    store(&lab, "main", SEG, &segment(SEG, SYSID));

    // Its own directory: writable, bound to the stored segment's system;
    // a name that is no WAL name is never looked up; a peer that is a path
    // is not reached.
    let mut ch = open(&lab, Key::Primary, 1);
    ch.send(&check_setup(&main, &format!(r#","holds":"{SEG}""#)));
    let reply = ch.reply().unwrap();
    assert!(reply.contains(r#""reply":"setup_checked""#), "{reply}");
    assert!(
        reply.contains(&format!(r#""recorded_system_identifier":{SYSID}"#)),
        "{reply}"
    );
    assert!(
        reply.contains(r#""holds":true"#) && !reply.contains("dir_error"),
        "{reply}"
    );
    ch.send(&check_setup(
        &main,
        r#","holds":"../main/000000010000000000000001","peer":"/etc""#,
    ));
    let reply = ch.reply().unwrap();
    assert!(reply.contains(r#""holds":false"#), "{reply}");
    assert!(
        reply.contains("is not a host this server forwards to"),
        "{reply}"
    );
    drop(ch);
    let probes: Vec<String> = fs::read_dir(lab.server(1).storage().join("main"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pgarchive-check"))
        .collect();
    assert!(probes.is_empty(), "probe files left: {probes:?}");

    // Another directory: refused, and not created.
    let other = served(&lab, "other");
    assert_refused(
        &lab,
        Key::Primary,
        &check_setup(&other, ""),
        "may not check_setup",
    );
    assert!(!exists(&lab.server(1).storage().join("other")));
    // The standby and monitor roles may not ask.
    assert_refused(&lab, Key::Standby, &check_setup(&main, ""), "role standby");
    assert_refused(&lab, Key::Monitor, &check_setup(&main, ""), "role monitor");
}
