//! The demo (a newcomer's first contact) fails fast and cleanly when
//! PostgreSQL cannot run archive-cmd.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use e2e::{bin, bin_dir, run_with_timeout, stderr, stdout};

#[test]
fn a_demo_whose_archive_cmd_cannot_run_quotes_postgresql_and_leaves_nothing_running() {
    // The built programs, but an archive-cmd only root may execute.
    let dir = tempfile::tempdir().unwrap();
    for e in fs::read_dir(bin_dir()).unwrap().flatten() {
        let meta = e.metadata().unwrap();
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    let archive_cmd = dir.path().join("archive-cmd");
    fs::set_permissions(&archive_cmd, fs::Permissions::from_mode(0o700)).unwrap();

    let out = run_with_timeout(
        Command::new(bin("demo")).env("E2E_BIN_DIR", dir.path()),
        Duration::from_secs(120),
    )
    .expect("the demo ends within 2 minutes");
    let (said, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{said}{err}");
    assert!(
        err.contains("archiving does not work")
            && err.contains("archive command failed with exit code 126")
            && err.contains("Permission denied"),
        "{err}"
    );
    // Its lab, named in its first lines, is gone with everything it ran.
    let lab = said
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/s1/storage"))
        .unwrap_or_else(|| panic!("no lab dir in {said}"));
    assert!(!std::path::Path::new(lab).exists(), "{lab} left behind");
    let left = e2e::lab_processes_matching(lab);
    assert!(left.is_empty(), "processes of {lab} still run: {left:?}");
}
