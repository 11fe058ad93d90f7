//! A client holding a key of the archive servers, behaving as an attacker:
//! hand-made frames through real sshd and the real forced command. Each
//! test is one finding of the security review; it fails on a server that
//! lets the attack through.

use std::fs;

use e2e::hostile::exists;
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

    let mut ch = lab.raw_channel(1);
    ch.hello();
    for peer in ["../../../victim", &victim.display().to_string(), "a/b"] {
        ch.send(&format!(
            r#"{{"op":"deliver_owed","dir":"{}","peer":"{peer}"}}"#,
            served(&lab, "main")
        ));
        let reply = ch.reply();
        assert!(
            reply.as_deref().is_none_or(|r| r.contains(r#""reply":"error""#)),
            "peer {peer:?} accepted: {reply:?}"
        );
        if reply.is_none() {
            ch = lab.raw_channel(1);
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
