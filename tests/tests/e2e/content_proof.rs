//! The content proof (security review, finding 7): the raw content's blake3
//! is recorded by the server that first accepts a file, travels with every
//! copy, and restore-cmd and wal-sync check every decoded byte against it.
//! A stored copy that still decodes but is not the archived content (a zstd
//! stream without a content checksum, one literal flipped, same length,
//! valid page header) used to be restored with exit 0 and the wrong byte in
//! %p: only the first page header was checked.

use std::fs;
use std::time::Duration;

use e2e::hostile::{error_kind, exists, segment, zstd_unchecked};
use e2e::{run, stderr, wait_until, write_postgres_file, Lab, LabOptions, RECOVERYXLOG};

/// The record server `n` keeps of `name` in `dst`, if any.
fn record(lab: &Lab, n: usize, dst: &str, name: &str) -> Option<String> {
    let p = lab.stored_path(n, dst, &format!(".pgarchive/digest/{name}"));
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// `original` with one byte past the first page flipped, as zstd without a
/// content checksum: same length, same page header, decodes fine.
fn forged(original: &[u8]) -> Vec<u8> {
    let mut raw = original.to_vec();
    let at = raw.len() / 2 + 123;
    raw[at] ^= 0x01;
    zstd_unchecked(&raw)
}

fn hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn wait_on_both(lab: &Lab, dst: &str, name: &str) {
    wait_until(Duration::from_secs(60), "both servers to hold it", || {
        lab.stored_path(1, dst, name).exists() && lab.stored_path(2, dst, name).exists()
    });
}

/// restore-cmd of `name` into a fresh data directory; the bytes at %p.
fn restore(lab: &Lab, tag: &str, dst: &str, name: &str) -> (std::process::Output, Option<Vec<u8>>) {
    let dd = lab.fake_data_dir(tag, true);
    let cfg = lab.restore_config(tag, "restore_prefetch = false\n");
    let out = run(&mut lab.restore_cmd(&cfg, dst, &dd, name));
    (out, fs::read(dd.join(RECOVERYXLOG)).ok())
}

#[test]
fn a_stored_copy_that_decodes_to_other_bytes_is_not_restored_the_other_servers_is() {
    let lab = Lab::with(LabOptions::short_cooldowns());
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("proof", 2, 1);

    // Sent as is (compressed by arch1), and compressed on the primary
    // (arch1 light-checks it and records the primary's digest): either
    // way both servers record the digest of %p.
    let plain = &names[0];
    let out = run(&mut lab.archive_cmd(&dst, &wal.join(plain), plain, "main"));
    assert!(out.status.success(), "{}", stderr(&out));
    lab.set_client_config_extra("compress_on_primary = true\n");
    let zstd = &names[1];
    let out = run(&mut lab.archive_cmd(&dst, &wal.join(zstd), zstd, "main"));
    assert!(out.status.success(), "{}", stderr(&out));

    for (i, name) in names.iter().enumerate() {
        wait_on_both(&lab, &dst, name);
        let original = fs::read(wal.join(name)).unwrap();
        // arch1's copy replaced by a forgery that passes every check but
        // the content's.
        write_postgres_file(lab.stored_path(1, &dst, name), forged(&original), 0o600);
        let (out, got) = restore(&lab, &format!("sb{i}"), &dst, name);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(
            got.as_deref() == Some(&original[..]),
            "{name}: %p is not the archived segment (the forged copy was handed over)"
        );
        assert!(
            stderr(&out).contains("on arch1 is bad")
                && stderr(&out).contains("not the file that was archived"),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("from arch2"), "{}", stderr(&out));
        for n in [1, 2] {
            assert_eq!(
                record(&lab, n, &dst, name).as_deref(),
                Some(hex(&original).as_str()),
                "arch{n} records the digest of {name}"
            );
        }
    }

    // Both copies forged: no restore, never the wrong bytes.
    let name = plain;
    let original = fs::read(wal.join(name)).unwrap();
    write_postgres_file(lab.stored_path(2, &dst, name), forged(&original), 0o600);
    let (out, got) = restore(&lab, "sb-both", &dst, name);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(got.is_none(), "nothing at %p");
}

#[test]
fn wal_sync_does_not_copy_a_copy_that_is_not_its_record() {
    let lab = Lab::new();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("psync", 2, 1);
    // One-sided files, as an outage leaves them; names[0] forged on arch1,
    // names[1] is fine.
    for n in &names {
        lab.archive_to("arch1", &dst, &wal, n);
    }
    let original = fs::read(wal.join(&names[0])).unwrap();
    write_postgres_file(
        lab.stored_path(1, &dst, &names[0]),
        forged(&original),
        0o600,
    );

    // Pushed by arch1's run, pulled by arch2's: neither copies it.
    for on in [1, 2] {
        let peer = if on == 1 { "arch2" } else { "arch1" };
        let mut cmd = lab.server_cmd(on, e2e::bin("wal-sync"));
        cmd.arg(&dst).arg(peer);
        let out = run(&mut cmd);
        assert!(
            !out.status.success(),
            "wal-sync on arch{on}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(&format!("copying {} failed", names[0])),
            "wal-sync on arch{on}: {}",
            stderr(&out)
        );
        assert!(
            !exists(&lab.stored_path(2, &dst, &names[0])),
            "wal-sync on arch{on} copied the forged copy"
        );
        assert!(record(&lab, 2, &dst, &names[0]).is_none());
        assert_eq!(
            lab.stored_bytes(2, &dst, &names[1]).as_deref(),
            Some(&fs::read(wal.join(&names[1])).unwrap()[..]),
            "the good copy is synced"
        );
        assert_eq!(
            record(&lab, 2, &dst, &names[1]),
            record(&lab, 1, &dst, &names[1]),
            "its record travels with it"
        );
    }
}

const SYSID: u64 = 7_100_000_000_000_000_007;

#[test]
fn a_put_whose_content_is_not_the_declared_digest_is_refused_and_nothing_stored() {
    let lab = Lab::new();
    let dir = lab.archive_root().join("main").display().to_string();
    let storage = lab.server(1).storage().join("main");
    let name = "000000010000000000000001";
    let seg = segment(name, SYSID);
    let mut other = seg.clone();
    other[(8 << 20) + 5] = 1;
    let mut ch = lab.raw_channel(1);
    ch.hello();
    // Plain content (compressed by the server) and bzip2 (decoded in
    // full): the server proves both, and refuses them.
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    std::io::Write::write_all(&mut bz, &other).unwrap();
    let bz = bz.finish().unwrap();
    for content in [other.clone(), bz] {
        let reply = ch
            .put_declaring(&dir, name, &content, &hex(&seg))
            .expect("a reply");
        assert_eq!(error_kind(&reply).as_deref(), Some("refused"), "{reply}");
        assert!(reply.contains("declared"), "{reply}");
        assert!(!exists(&storage.join(name)), "stored anyway");
        assert!(!exists(&storage.join(".pgarchive/digest").join(name)));
    }
    // The true content with its digest is stored, and recorded.
    let reply = ch.put_declaring(&dir, name, &seg, &hex(&seg)).unwrap();
    assert!(reply.contains(r#""reply":"stored""#), "{reply}");
    assert_eq!(
        fs::read_to_string(storage.join(".pgarchive/digest").join(name))
            .unwrap()
            .trim(),
        hex(&seg)
    );
}
