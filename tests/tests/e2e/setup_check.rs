//! pgarchive-check through real sshd and PostgreSQL: all links hold in a
//! good lab; each broken link is named with its fix.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use e2e::{bin, run, stderr, stdout, write_postgres_file, Lab, LabOptions, PgCluster};

/// pgarchive-check as postgres on the primary with `config`.
fn check(lab: &Lab, pg: &PgCluster, mode: &str, config: &Path, dir: &str, timeout: u64) -> Output {
    run(lab
        .postgres_cmd(bin("pgarchive-check"))
        .arg("--config")
        .arg(config)
        .arg("--dsn")
        .arg(format!(
            "host={} port={} user=postgres dbname=postgres",
            pg.socket_dir().display(),
            pg.port()
        ))
        .args(["--timeout", &timeout.to_string(), mode, &lab.hosts(), dir]))
}

/// The FAIL lines of `out` (with their fix lines).
fn failures(out: &Output) -> String {
    let text = stdout(out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(out));
    text.lines()
        .filter(|l| l.starts_with("FAIL") || l.starts_with("      fix:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_mentions(text: &str, wants: &[&str]) {
    for w in wants {
        assert!(text.contains(w), "{w:?} not in:\n{text}");
    }
}

#[test]
fn every_link_holds_in_a_good_setup_on_the_primary_and_the_standby() {
    let lab = Lab::new();
    let dst = lab.dst("main");
    let pg = lab.archiving_primary("primary", &dst, "");
    let out = check(&lab, &pg, "primary", &lab.primary_config(), &dst, 60);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(!text.contains("FAIL"), "{text}");
    let seg = text
        .lines()
        .find_map(|l| l.strip_prefix("ok    pg_switch_wal(): a segment to archive: "))
        .unwrap_or_else(|| panic!("no switched segment in {text}"))
        .to_string();
    for (n, host) in [(1, "arch1"), (2, "arch2")] {
        assert_mentions(
            &text,
            &[
                &format!("ok    {host}: the key runs only archive-remote-cmd (forced command)"),
                &format!("ok    {host}: the key has role primary"),
                &format!("ok    {host}: holds {seg}"),
            ],
        );
        assert!(
            lab.stored_bytes(n, &dst, &seg).is_some(),
            "{host} lacks {seg}"
        );
    }
    assert_mentions(
        &text,
        &["ok    arch1 reaches arch2", "ok    arch2 reaches arch1"],
    );

    let out = check(&lab, &pg, "standby", &lab.standby_config(), &dst, 60);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert_mentions(
        &text,
        &["ok    arch1: the key has role standby", "restores ("],
    );
}

#[test]
fn a_missing_key_and_an_unwritable_directory_are_named_with_their_fix() {
    let lab = Lab::new();
    let dst = lab.dst("main");
    let pg = lab.archiving_primary("primary", &dst, "");

    // The primary's key missing on arch2.
    let keys_path = lab.server(2).authorized_keys_path();
    let keys = fs::read_to_string(&keys_path).unwrap();
    let primary_pub = fs::read_to_string(lab.primary_key().with_extension("pub")).unwrap();
    let primary_key = primary_pub.split_whitespace().nth(1).unwrap();
    let without: String = keys
        .lines()
        .filter(|l| !l.contains(primary_key))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(
        without, keys,
        "the primary's key was in arch2's authorized_keys"
    );
    write_postgres_file(&keys_path, without, 0o600);
    let fails = failures(&check(&lab, &pg, "primary", &lab.primary_config(), &dst, 5));
    assert_mentions(
        &fails,
        &[
            "FAIL  arch2: reachable with this host's key",
            "fix: add this host's public key to arch2's authorized_keys",
            "--role primary",
        ],
    );
    assert!(!fails.contains("arch1:"), "arch1 is fine: {fails}");
    write_postgres_file(&keys_path, keys, 0o600);

    // DST-DIR on arch1 not writable by the server's user.
    let dir = lab
        .stored_path(1, &dst, "x")
        .parent()
        .unwrap()
        .to_path_buf();
    let mode = fs::metadata(&dir).unwrap().permissions().mode();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
    let fails = failures(&check(&lab, &pg, "primary", &lab.primary_config(), &dst, 5));
    fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
    assert_mentions(
        &fails,
        &[
            &format!("FAIL  arch1: {dst} writable: cannot write in"),
            "Permission denied",
            "owned and writable by the user of the forced command",
        ],
    );
    assert!(!fails.contains("arch2:"), "arch2 is fine: {fails}");
}

#[test]
fn a_peer_arch1_cannot_reach_is_named() {
    let lab = Lab::new();
    // arch1's ssh config sends it to a port where nothing listens for arch2,
    // before any forward opened a connection.
    let cfg_path = lab.server(1).ssh_config_path();
    let text = fs::read_to_string(&cfg_path).unwrap();
    let dead = e2e::free_port(lab.server(2).ip());
    let broken = text.replace(
        &format!("Port {}", lab.server(2).port()),
        &format!("Port {dead}"),
    );
    assert_ne!(broken, text);
    write_postgres_file(&cfg_path, broken, 0o600);
    let dst = lab.dst("main");
    let pg = lab.archiving_primary("primary", &dst, "");
    let fails = failures(&check(&lab, &pg, "primary", &lab.primary_config(), &dst, 5));
    assert_mentions(
        &fails,
        &[
            "FAIL  arch1 reaches arch2 (the second copy)",
            "add arch1's key",
            "--role peer",
        ],
    );
    assert!(!fails.contains("arch2 reaches arch1"), "{fails}");
}

#[test]
fn a_key_without_a_forced_command_is_named() {
    let lab = Lab::with(LabOptions {
        forced_command: false,
        ..Default::default()
    });
    let dst = lab.dst("main");
    let pg = lab.archiving_primary("primary", &dst, "");
    let fails = failures(&check(&lab, &pg, "primary", &lab.primary_config(), &dst, 5));
    for host in ["arch1", "arch2"] {
        assert_mentions(
            &fails,
            &[
                &format!("FAIL  {host}: the key runs only archive-remote-cmd (forced command): the key has no forced command"),
                "start its authorized_keys line with `command=\"archive-remote-cmd serve --role primary",
            ],
        );
    }
}
