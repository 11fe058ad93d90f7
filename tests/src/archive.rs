//! Helpers for the archiving tests: running archive-cmd the way PostgreSQL
//! does, real WAL to feed it, and reading back what the servers stored.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use archive_core::common::codec;

use crate::{bin, list_files, mkdir_postgres, wait_until, Lab, PgCluster, PgOptions};

impl Lab {
    /// archive-cmd as PostgreSQL runs it (as `postgres`, with the primary's
    /// config), for both servers.
    pub fn archive_cmd(&self, dst: &str, wal_path: &Path, name: &str, cluster: &str) -> Command {
        self.archive_cmd_hosts(&self.hosts(), dst, wal_path, name, cluster)
    }

    /// archive-cmd with an explicit HOSTS argument.
    pub fn archive_cmd_hosts(
        &self,
        hosts: &str,
        dst: &str,
        wal_path: &Path,
        name: &str,
        cluster: &str,
    ) -> Command {
        let mut cmd = self.postgres_cmd(bin("archive-cmd"));
        cmd.arg("--config")
            .arg(self.primary_config())
            .arg(hosts)
            .arg(dst)
            .arg(wal_path)
            .arg(name)
            .arg(cluster);
        if let Some(dir) = wal_path.parent() {
            cmd.current_dir(dir.parent().unwrap_or(dir));
        }
        cmd
    }

    /// Archives `<wal>/<name>` to `hosts` with archive-cmd, asserts that it
    /// succeeded, then waits for the servers to [`settle`](Lab::settle).
    pub fn archive_to(&self, hosts: &str, dst: &str, wal: &Path, name: &str) {
        let out =
            crate::run(&mut self.archive_cmd_hosts(hosts, dst, &wal.join(name), name, "main"));
        assert!(out.status.success(), "{name}: {}", crate::stderr(&out));
        self.settle();
    }

    /// A started primary `name` with 1 MiB segments archiving to DST-DIR
    /// `dst` on both servers through archive-cmd (CLUSTER-NAME `main`),
    /// with `extra` settings.
    pub fn archiving_primary(&self, name: &str, dst: &str, extra: &str) -> PgCluster {
        let pg = self.init_cluster(
            name,
            PgOptions {
                wal_segsize_mb: 1,
                conf: format!(
                    "archive_mode = on\narchive_command = '{}'\n{extra}",
                    self.archive_command(dst, "main")
                ),
                ..Default::default()
            },
        );
        pg.start();
        pg
    }

    /// Waits until no archive-remote-cmd runs on either server: every
    /// background forward (and owed delivery) archive-cmd set off has ended,
    /// so what the servers hold no longer changes. For tests that inspect or
    /// alter both servers right after archiving.
    pub fn settle(&self) {
        let busy = |n: usize| {
            self.server(n).processes().into_iter().any(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("archive-remote-cmd"))
                    .unwrap_or(false)
            })
        };
        wait_until(
            Duration::from_secs(60),
            "the archive servers' forwards to end",
            || !busy(1) && !busy(2),
        );
    }

    /// A command run on archive server `n` the way its cron would run it: as
    /// `postgres`, inside the server's mount and PID namespaces (so it sees
    /// that server's storage), with `PGARCHIVE_CONFIG` set to its config.
    pub fn server_cmd(&self, n: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let server = self.server(n);
        let pid = server.listener_pid().expect("server is running");
        let user = crate::postgres_user();
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(pid.to_string())
            .args(["-m", "-p", "-S"])
            .arg(user.uid.to_string())
            .arg("-G")
            .arg(user.gid.to_string())
            .arg("--")
            .arg(program)
            .env_clear()
            .env("HOME", &user.home)
            .env("USER", "postgres")
            .env("PATH", crate::pg_path())
            .env("PGARCHIVE_CONFIG", server.config_path())
            .current_dir("/");
        cmd
    }

    /// The `archive_command` setting for a primary archiving to both servers.
    pub fn archive_command(&self, dst: &str, cluster: &str) -> String {
        format!(
            "{} --config {} \"{}\" {dst} %p %f {cluster}",
            bin("archive-cmd").display(),
            self.primary_config().display(),
            self.hosts()
        )
    }

    /// An archive_command that first keeps a reference copy of %p in `refdir`
    /// (what PostgreSQL handed over), then runs archive-cmd.
    pub fn archive_command_with_reference(
        &self,
        dst: &str,
        cluster: &str,
        refdir: &Path,
    ) -> String {
        mkdir_postgres(refdir, 0o755);
        let script = self.dir().join(format!("archive-ref-{cluster}.sh"));
        let body = format!(
            "#!/bin/sh\ncp \"$1\" \"{r}/$2.tmp\" && mv \"{r}/$2.tmp\" \"{r}/$2\" || exit 1\nexec {} --config {} \"{}\" {dst} \"$1\" \"$2\" {cluster}\n",
            bin("archive-cmd").display(),
            self.primary_config().display(),
            self.hosts(),
            r = refdir.display(),
        );
        crate::write_postgres_file(&script, body, 0o755);
        format!("{} %p %f", script.display())
    }

    /// Path of `name` in `dst` as server `n` stores it (host view).
    pub fn stored_path(&self, n: usize, dst: &str, name: &str) -> PathBuf {
        let rel = Path::new(dst)
            .strip_prefix(self.archive_root())
            .expect("DST-DIR under the lab's archive root");
        self.server(n).storage().join(rel).join(name)
    }

    /// Decompressed content of `name` on server `n`, if stored.
    pub fn stored_bytes(&self, n: usize, dst: &str, name: &str) -> Option<Vec<u8>> {
        let raw = std::fs::read(self.stored_path(n, dst, name)).ok()?;
        Some(decode(&raw))
    }

    /// WAL names (no metadata, no temp files) server `n` holds in `dst`.
    pub fn stored_names(&self, n: usize, dst: &str) -> Vec<String> {
        let dir = self.stored_path(n, dst, "x");
        list_files(dir.parent().expect("dir"))
            .into_iter()
            .filter(|f| !f.starts_with('.'))
            .collect()
    }

    /// Files server `n` owes its peer for `dst`.
    pub fn owed_names(&self, n: usize, dst: &str) -> Vec<String> {
        let peer = if n == 1 { "arch2" } else { "arch1" };
        let dir = self.stored_path(n, dst, ".pgarchive");
        list_files(dir.join("owed").join(peer))
    }

    /// A DST-DIR under the lab's archive root.
    pub fn dst(&self, name: &str) -> String {
        self.archive_root().join(name).display().to_string()
    }

    /// Makes `count` real, completed WAL segments of a fresh cluster with
    /// `seg_mb` MiB segments, in a directory laid out like pg_wal (with an
    /// empty archive_status/), owned by postgres. Returns the directory and
    /// the names in order.
    pub fn wal_segments(&self, tag: &str, count: usize, seg_mb: u32) -> (PathBuf, Vec<String>) {
        let out = self.dir().join(format!("wal-{tag}"));
        mkdir_postgres(&out, 0o755);
        mkdir_postgres(out.join("archive_status"), 0o755);
        let pg = self.init_cluster(
            &format!("src-{tag}"),
            PgOptions {
                wal_segsize_mb: seg_mb,
                ..Default::default()
            },
        );
        pg.set_conf(&format!(
            "archive_mode = on\narchive_command = 'cp %p {}/%f'\n",
            out.display()
        ));
        pg.start();
        pg.psql("create table filler(i int, t text)");
        let mut names = Vec::new();
        for i in 0..count {
            pg.psql(&format!(
                "insert into filler select g, md5(g::text) from generate_series(1, 2000) g where {i} >= 0"
            ));
            names.push(pg.switch_wal());
        }
        wait_until(Duration::from_secs(60), "source segments archived", || {
            names.iter().all(|n| out.join(n).exists())
        });
        pg.stop();
        drop(pg);
        // Keep exactly the segments named; cp may have archived others.
        for f in list_files(&out) {
            if !names.contains(&f) {
                let _ = std::fs::remove_file(out.join(f));
            }
        }
        (out, names)
    }
}

/// Decompresses stored bytes by sniffing their codec.
pub fn decode(raw: &[u8]) -> Vec<u8> {
    let c = codec::sniff(&raw[..raw.len().min(codec::SNIFF_LEN)]);
    codec::decode_all(c, raw).expect("stored file decodes")
}

/// Waits for `cluster` to have archived every segment up to `name`.
pub fn wait_archived(pg: &PgCluster, name: &str, timeout: Duration) {
    wait_until(timeout, &format!("{} archived {name}", pg.name()), || {
        let last = pg
            .try_psql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
            .unwrap_or_default();
        last.as_str() >= name && last.len() == name.len()
    });
}
