//! Retention beyond keep_backups_cnt, with real base-backup runs: pinned
//! backups and the time window (the rules themselves are unit-tested in
//! archive-core's `server::backups::rotation`).

use std::fs;
use std::path::Path;
use std::time::Duration;

use e2e::{list_files, run, stderr, wait_archived, write_postgres_file, Lab, PgOptions};

/// The task ids of the backups in `dir`, oldest first (from SUCCESS).
fn tasks(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.master.") && n[12..].parse::<u32>().is_ok())
        .collect();
    names.sort_by_key(|n| n[12..].parse::<u32>().unwrap());
    names
        .iter()
        .map(|n| {
            let text = fs::read_to_string(dir.join(n).join("SUCCESS")).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("task="))
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn pinned_backups_and_the_window_outlive_keep_backups_cnt() {
    let lab = Lab::new();
    let q = lab.queue_db();
    let pg = lab.init_cluster("primary", PgOptions::default());
    pg.set_conf(&format!(
        "archive_mode = on\narchive_command = '{}'\n",
        lab.archive_command(&lab.dst("main"), "main")
    ));
    pg.start();
    let w = pg.switch_wal();
    wait_archived(&pg, &w, Duration::from_secs(120));
    lab.set_server_config_extra(&format!(
        "queue_dsn = \"{}\"\nbackup_checkpoint = \"fast\"\n",
        q.dsn()
    ));
    let mut row = lab.host_row("main", &pg, "main");
    row.keep_backups_cnt = 1;
    q.add(&row);
    let dir = lab.stored_backup_dir(1, "main");
    let backup = || {
        q.age_history(1);
        let out = run(&mut lab.base_backup_cmd(1));
        assert!(out.status.success(), "{}", stderr(&out));
    };

    backup();
    assert_eq!(tasks(&dir), ["1"]);
    // A DBA pins it: it outlives keep_backups_cnt = 1.
    write_postgres_file(
        dir.join("data.master.0/PINNED"),
        "kept for the audit (dba, 2026-12-05)\n",
        0o600,
    );
    backup();
    backup();
    assert_eq!(tasks(&dir), ["1", "3"], "2 rotated out, 1 pinned");
    assert!(list_files(dir.join("data.master.0")).contains(&"PINNED".to_string()));

    // A window of 2 days: every backup that ended within it stays.
    q.sql("update backups.hosts set keep_days = 2");
    backup();
    assert_eq!(tasks(&dir), ["1", "3", "4"]);

    // Unpinned, no window: keep_backups_cnt alone again.
    fs::remove_file(dir.join("data.master.0/PINNED")).unwrap();
    q.sql("update backups.hosts set keep_days = null");
    backup();
    assert_eq!(tasks(&dir), ["5"]);
}
