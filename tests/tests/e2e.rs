//! The single end-to-end test binary. Each scenario lives in `tests/e2e/<name>.rs`;
//! add it as a `mod <name>;` line below.
//!
//! Run: `cargo build --workspace --bins && cargo test -p e2e -- --test-threads=2`
//! (`KEEP_LAB=1` keeps each lab dir for inspection).

mod e2e {
    mod archive2;
    mod archiving;
    mod backup_queue;
    mod base_backup;
    mod content_proof;
    mod demo;
    mod drill;
    mod hostile;
    mod incremental;
    mod lab_smoke;
    mod logging;
    mod pg_versions;
    mod restore;
    mod restore_backup;
    mod retention;
    mod roles;
    mod setup_check;
    mod status;
    mod sync_cleanup;
    mod verify;
}
