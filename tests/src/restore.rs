//! Helpers for the restore tests: restore-cmd configs, running restore-cmd
//! the way PostgreSQL does (as postgres, in the data directory, %p =
//! `pg_wal/RECOVERYXLOG`), stand-in data directories, and a look at the
//! prefetch buffer and its worker.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{bin, mkdir_postgres, write_postgres_file, Lab, PgCluster};

/// Copies `from`'s `global/pg_control` into the stand-in data directory
/// `data_dir`, owned by postgres as PostgreSQL keeps it.
pub(crate) fn install_pg_control(from: &Path, data_dir: &Path) {
    let src = from.join("global/pg_control");
    let bytes = std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    mkdir_postgres(data_dir.join("global"), 0o700);
    write_postgres_file(data_dir.join("global/pg_control"), bytes, 0o600);
}

/// `%p` as PostgreSQL passes it to restore_command.
pub const RECOVERYXLOG: &str = "pg_wal/RECOVERYXLOG";

/// The default prefetch buffer of a data directory.
pub fn prefetch_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pg_wal").join(".restore-prefetch")
}

/// Bytes of WAL in a prefetch buffer (complete segments, claims, temps): what
/// `restore_queue_max` bounds.
pub fn prefetch_wal_bytes(buffer: &Path) -> u64 {
    archive_core::client::restore::buffer::wal_bytes(buffer)
}

/// Living prefetch workers whose buffer is `buffer`.
pub fn prefetch_workers(buffer: &Path) -> Vec<i32> {
    let needle = buffer.to_string_lossy().into_owned();
    crate::lab_processes_matching("--prefetch-worker")
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| {
                    c.split(|b| *b == 0)
                        .any(|a| String::from_utf8_lossy(a) == needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// A process's scheduling niceness: its own (`/proc/PID/stat`), and its
/// autogroup's when the kernel schedules by autogroup (`None` otherwise).
pub fn niceness(pid: i32) -> (Option<i32>, Option<i32>) {
    // The comm field may hold spaces: the fields after it follow the last ')'.
    let own = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            // state ppid pgrp session tty_nr tpgid flags minflt cminflt
            // majflt cmajflt utime stime cutime cstime priority nice
            rest.split_whitespace().nth(16)?.parse().ok()
        });
    let autogroup_on = std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
        .is_ok_and(|s| s.trim() == "1");
    let group = autogroup_on
        .then(|| std::fs::read_to_string(format!("/proc/{pid}/autogroup")).ok())
        .flatten()
        .and_then(|s| s.trim().rsplit_once("nice ")?.1.parse().ok());
    (own, group)
}

/// The scheduling policy of each thread of `pid` (`SCHED_*` numbers, from
/// `/proc/<pid>/task/*/stat`).
pub fn thread_policies(pid: i32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let s = std::fs::read_to_string(t.path().join("stat")).ok()?;
            // Field 41, the 39th after the comm field's closing ')'.
            s.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(38)?
                .parse()
                .ok()
        })
        .collect()
}

impl Lab {
    /// Writes `<lab>/<tag>/restore.toml`: the standby key's ssh config
    /// (`--role standby`), the primary's control socket directory, its own
    /// state dir (host health),
    /// the lab's timeouts, then `extra`. Returns its path.
    pub fn restore_config(&self, tag: &str, extra: &str) -> PathBuf {
        let dir = self.dir().join(tag);
        mkdir_postgres(&dir, 0o755);
        mkdir_postgres(dir.join("state"), 0o700);
        let q = |p: &Path| format!("{:?}", p.to_string_lossy());
        let text = format!(
            "# restore-cmd config written by the e2e lab\n\
             ssh_config = {}\n\
             runtime_dir = {}\n\
             state_dir = {}\n\
             remote_command = {:?}\n\
             connect_timeout = 5\n\
             io_timeout = 20\n\
             {}{extra}\n",
            q(&self.standby_ssh_config()),
            q(&self.primary_runtime_dir()),
            q(&dir.join("state")),
            self.remote_command(),
            self.client_log_line(),
        );
        let path = dir.join("restore.toml");
        write_postgres_file(&path, text, 0o600);
        path
    }

    /// A log-shipping standby `name` made from a base backup of `primary`
    /// (not started): WAL only through `restore_command`, no
    /// primary_conninfo.
    pub fn log_shipping_standby(
        &self,
        primary: &PgCluster,
        name: &str,
        restore_command: &str,
    ) -> PgCluster {
        let sb = self.base_backup(primary, name);
        sb.set_conf(&format!(
            "restore_command = '{restore_command}'\nprimary_conninfo = ''\n"
        ));
        sb.create_standby_signal();
        sb
    }

    /// restore-backup as a DBA runs it (as postgres, with the standby
    /// key) for backup directory `main` on server `from`, into `data_dir`,
    /// promoting at the target; restore_command uses restore-cmd with
    /// `config`. Add `--target` and the like.
    pub fn restore_backup_cmd(&self, from: usize, config: &Path, data_dir: &Path) -> Command {
        let mut cmd = self.postgres_cmd(bin("restore-backup"));
        cmd.arg("--config")
            .arg(self.standby_config())
            .args(["--from", &format!("arch{from}")])
            .args(["--backup-dir", &self.backup_dir("main")])
            .args(["--wals-dir", &self.dst("main")])
            .args(["--hosts", "arch1 arch2"])
            .args(["--action", "promote"])
            .arg("--restore-cmd")
            .arg(format!(
                "{} --config {}",
                bin("restore-cmd").display(),
                config.display()
            ))
            .arg(data_dir);
        cmd
    }

    /// Runs [`Lab::restore_backup_cmd`] with `args` into a new cluster
    /// `name`, starts it and waits for the end of recovery; returns it and
    /// what restore-backup said (panics if it fails).
    pub fn restore_backup_and_start(
        &self,
        name: &str,
        from: usize,
        config: &Path,
        args: &[&str],
    ) -> (PgCluster, String) {
        let mut said = String::new();
        let pg = self.adopt_cluster(name, |dir| {
            let out = crate::run(self.restore_backup_cmd(from, config, dir).args(args));
            said = crate::stderr(&out);
            assert!(out.status.success(), "restore-backup {args:?}: {said}");
            assert!(said.contains("restored data.master."), "{said}");
            // It names the pg_ctl of the restored cluster's own version.
            let start = format!(
                "Start it with: {} -D ",
                crate::pg_server_dir().join("pg_ctl").display()
            );
            assert!(
                crate::stdout(&out).contains(&start),
                "{start:?} not in {}",
                crate::stdout(&out)
            );
        });
        pg.start_no_wait();
        crate::wait_until(
            std::time::Duration::from_secs(180),
            &format!("{name} to finish recovery"),
            || pg.try_psql("select pg_is_in_recovery()").ok().as_deref() == Some("f"),
        );
        (pg, said)
    }

    /// The `restore_command` setting using `config`, for SRC-DIR `src`.
    pub fn restore_command(&self, config: &Path, src: &str, delay: Option<u64>) -> String {
        format!(
            "{} --config {} \"{}\" {src} %f %p{}",
            bin("restore-cmd").display(),
            config.display(),
            self.hosts(),
            delay.map(|d| format!(" {d}")).unwrap_or_default()
        )
    }

    /// restore-cmd as PostgreSQL runs it: as postgres, in `data_dir`, with
    /// `%p = pg_wal/RECOVERYXLOG`.
    pub fn restore_cmd(&self, config: &Path, src: &str, data_dir: &Path, name: &str) -> Command {
        let mut cmd = self.postgres_cmd(bin("restore-cmd"));
        cmd.arg("--config")
            .arg(config)
            .arg(self.hosts())
            .arg(src)
            .arg(name)
            .arg(RECOVERYXLOG)
            .current_dir(data_dir);
        cmd
    }

    /// `<lab>/<name>`: a directory restore-cmd takes for a data directory
    /// (`PG_VERSION`, `pg_wal/`), owned by postgres, with `standby.signal`
    /// when `standby`.
    pub fn fake_data_dir(&self, name: &str, standby: bool) -> PathBuf {
        let d = self.dir().join(name);
        mkdir_postgres(&d, 0o700);
        mkdir_postgres(d.join("pg_wal"), 0o700);
        write_postgres_file(d.join("PG_VERSION"), "15\n", 0o600);
        if standby {
            write_postgres_file(d.join("standby.signal"), "", 0o600);
        }
        d
    }

    /// Gives `data_dir` the control file of the cluster that wrote
    /// `wal_segments(tag, ..)`: restore-cmd then knows its system identifier
    /// and segment size, as on a real standby of that cluster.
    pub fn copy_pg_control(&self, tag: &str, data_dir: &Path) {
        let cluster = self.dir().join("pg").join(format!("src-{tag}"));
        install_pg_control(&cluster, data_dir);
    }
}
