//! The lab: real sshd archive servers and real PostgreSQL clusters for end-to-end tests.
//!
//! ```no_run
//! use e2e::{Lab, LabOptions, PgOptions};
//! let lab = Lab::with(LabOptions { forced_command: false, ..Default::default() });
//! let pg = lab.init_cluster("main", PgOptions::default());
//! pg.start();
//! assert_eq!(pg.psql("select 1"), "1");
//! lab.stop_server(1); // arch1 is down; arch2 still answers
//! ```
//!
//! Layout of a lab dir (`/tmp/lab-XXXXXX`, kept when `KEEP_LAB=1`):
//!
//! ```text
//! archive/               DST-DIR: each server sees its own storage here (bind mount
//!                        in the server's mount namespace); empty & read-only on the host
//! known_hosts            both servers' host keys ([127.0.0.2]:P1, [127.0.0.3]:P2)
//! primary/               archive.toml, ssh_config, id_ed25519 (--role primary),
//!                        standby.toml, standby_ssh_config, standby_ed25519 (--role standby),
//!                        monitor.toml, monitor_ssh_config, monitor_ed25519 (--role monitor),
//!                        run/, state/
//! s1/ s2/                sshd_config, ssh_host_ed25519_key, authorized_keys (one line per
//!                        key and role), sshd.log, remote.toml, ssh_config,
//!                        id_ed25519 (to reach the peer, --role peer there),
//!                        storage/ (the server's archive), run/, state/
//! pg/<name>/ pg/<name>.log pg/sock/
//! ```
//!
//! Modules: the lab itself ([`Lab`], servers, clusters, the queue database,
//! process helpers) serves the end-to-end tests (`tests/e2e/*.rs`) and the
//! binaries alike. The benchmarks (`src/bin/bench-*.rs`) share
//! [`bench_common`] (knobs, preamble, ssh options), [`bench_results`] (the
//! dated results files under `docs/benchmarks/`) and [`sampler`] (`/proc`
//! measurements); [`bench`](mod@bench) holds the pgbench WAL corpus of bench-archive
//! and bench-restore, [`bench_sync`] the corpus of bench-sync, [`reference`](mod@reference)
//! bench-archive's yardstick pipeline and [`memory`] bench-restore's memory
//! regimes.

mod archive;
pub mod bench;
pub mod bench_common;
pub mod bench_results;
pub mod bench_sync;
pub mod hostile;
mod lab;
pub mod memory;
mod pg;
mod proc;
mod queue;
pub mod reference;
mod restore;
pub mod sampler;
mod sshd;

pub use archive::{decode, wait_archived};
pub use lab::{lab_base_tar, lab_compress, lab_formats, Key, Lab, LabOptions};
pub use pg::{PgCluster, PgOptions};
pub use proc::{
    bin, bin_dir, chown_postgres, comm, command_line, descendants, describe_output, file_tail,
    free_port, kill_descendant_named, kill_tree, lab_processes_matching, list_files,
    mkdir_postgres, pg_bin, pg_client_dir, pg_path, pg_server_dir, pg_version, pid_alive,
    postgres_cmd, postgres_user, run, run_ok, run_with_input, run_with_timeout, sh_quote, stderr,
    stdout, temp_files, wait_until, walk, write_postgres_file, PostgresUser,
};
pub use queue::{clock, sql_str, Handed, HostRow, QueueDb, ARCHIVE2_SCHEMA};
pub use restore::{
    niceness, prefetch_dir, prefetch_wal_bytes, prefetch_workers, thread_policies, RECOVERYXLOG,
};
pub use sshd::ArchiveServer;
