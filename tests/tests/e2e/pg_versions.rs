//! PostgreSQL versions: WAL of a version newer than every known one is
//! archived (with a WARNING in PostgreSQL's log) and restored, as long as
//! its page header is consistent; base-backup picks pg_basebackup by the
//! server's version and names what is missing. The rest of the suite runs
//! on the version `E2E_PG_VERSION` names (scripts/test-pg-matrix.sh).

use std::fs;

use e2e::{run, stderr, write_postgres_file, Lab};

/// A magic no known version writes, of the `0xD1xx` family a newer
/// PostgreSQL would use.
const FUTURE_MAGIC: u16 = 0xD1F0;

/// `segment` with every page's `xlp_magic` set to `magic`, as a newer
/// PostgreSQL would write it.
fn with_magic(segment: &[u8], magic: u16) -> Vec<u8> {
    const WAL_BLOCK: usize = 8192;
    let mut v = segment.to_vec();
    for page in v.chunks_mut(WAL_BLOCK) {
        page[..2].copy_from_slice(&magic.to_le_bytes());
    }
    v
}

fn has_warning(err: &str, name: &str) -> bool {
    err.contains(&format!(
        "{name}: unknown WAL page magic 0x{FUTURE_MAGIC:04X}"
    )) && err.contains("accepted because the rest of its page header is consistent")
}

#[test]
fn a_newer_versions_wal_is_archived_with_a_warning_and_an_inconsistent_one_refused() {
    let lab = Lab::new();
    let dst = lab.dst("main");
    let (wal, names) = lab.wal_segments("future", 2, 1);

    // Consistent but for the magic: stored on both servers, with the
    // WARNING on archive-cmd's stderr (PostgreSQL's log).
    let name = &names[0];
    let future = with_magic(&fs::read(wal.join(name)).unwrap(), FUTURE_MAGIC);
    let path = wal.join(name);
    write_postgres_file(&path, &future, 0o600);
    let out = run(&mut lab.archive_cmd_hosts("arch1 arch2", &dst, &path, name, "main"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        has_warning(&stderr(&out), &path.display().to_string()),
        "{}",
        stderr(&out)
    );
    lab.settle();
    for n in [1, 2] {
        let stored = lab
            .stored_bytes(n, &dst, name)
            .unwrap_or_else(|| panic!("arch{n} lacks {name}"));
        assert!(
            e2e::decode(&stored) == future,
            "arch{n}'s copy of {name} differs"
        );
    }

    // And it restores, byte for byte, with the warning.
    let dd = lab.fake_data_dir("standby", true);
    let cfg = lab.restore_config("standby", "restore_prefetch = false\n");
    let out = run(&mut lab.restore_cmd(&cfg, &dst, &dd, name));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("unknown WAL page magic 0x{FUTURE_MAGIC:04X}")),
        "{}",
        stderr(&out)
    );
    let restored = fs::read(dd.join(e2e::RECOVERYXLOG)).unwrap();
    assert!(
        restored == future,
        "the restored {name} differs from what was archived"
    );

    // The same magic in a header whose page address is not the file name's:
    // refused by the server, naming the magic and the mismatch; nothing kept.
    let other = with_magic(&fs::read(wal.join(&names[1])).unwrap(), FUTURE_MAGIC);
    let wrong_name = "000000010000000000000099";
    let wrong = wal.join(wrong_name);
    write_postgres_file(&wrong, &other, 0o600);
    let out = run(&mut lab.archive_cmd_hosts("arch1 arch2", &dst, &wrong, wrong_name, "main"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("unknown WAL page magic 0x{FUTURE_MAGIC:04X}"))
            && err.contains(wrong_name),
        "{err}"
    );
    for n in [1, 2] {
        assert!(
            lab.stored_bytes(n, &dst, wrong_name).is_none(),
            "arch{n} kept {wrong_name}"
        );
    }
}

/// A directory with a `pg_basebackup` that says it is PostgreSQL 12's: an
/// installed client too old for the lab's server.
fn old_client_dir(lab: &Lab) -> std::path::PathBuf {
    let dir = lab.dir().join("old-pg-bin");
    e2e::mkdir_postgres(&dir, 0o755);
    write_postgres_file(
        dir.join("pg_basebackup"),
        "#!/bin/sh\necho 'pg_basebackup (PostgreSQL) 12.22'\n",
        0o755,
    );
    dir
}

#[test]
fn base_backup_takes_pg_basebackup_of_the_servers_version_and_names_what_is_missing() {
    let lab = Lab::new();
    let q = lab.queue_db();
    let pg = lab.archiving_primary("primary", &lab.dst("main"), "");
    lab.set_server_config_extra(&format!(
        "queue_dsn = \"{}\"\nbackup_checkpoint = \"fast\"\n",
        q.dsn()
    ));
    q.add(&lab.host_row("main", &pg, "main"));
    let version = e2e::pg_version();

    // Searched: the closest version at least the server's, said in the log.
    let out = run(&mut lab.base_backup_cmd(1));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let client = e2e::pg_client_dir().join("pg_basebackup");
    let client_major = archive_core::common::pg_programs::major_of(&client).unwrap();
    let expect = if version <= 15 { 15 } else { client_major };
    assert!(
        err.contains(&format!("server PostgreSQL {version}, using "))
            && err.contains(&format!("(PostgreSQL {expect})")),
        "{err}"
    );
    assert!(lab
        .stored_backup_dir(1, "main")
        .join("data.master.0")
        .join("SUCCESS")
        .is_file());

    // Then arch2's turn, with only a too-old client in pg_bin_dir: the
    // task fails naming it, and no backup is left.
    let old = old_client_dir(&lab);
    let out = run(lab
        .base_backup_cmd(2)
        .arg("--set")
        .arg(format!("pg_bin_dir=\"{}\"", old.display())));
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    for want in [
        format!("no pg_basebackup of PostgreSQL {version} or newer in pg_bin_dir"),
        format!("12 ({})", old.join("pg_basebackup").display()),
        format!("postgresql-client-{version}"),
    ] {
        assert!(err.contains(&want), "{want:?} not in {err}");
    }
    assert!(!lab
        .stored_backup_dir(2, "main")
        .join("data.master.0")
        .exists());
}
