//! PostgreSQL clusters (of the version [`crate::pg_version`] names) run as
//! `postgres` inside the lab.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::proc::{
    describe_output, file_tail, free_port, kill_tree, pg_bin, pid_alive, postgres_cmd, run, run_ok,
    run_with_input, run_with_timeout, write_postgres_file,
};

/// Options for [`crate::Lab::init_cluster`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `initdb --wal-segsize` in MB (a power of two, 1..=1024). Default 16.
    pub wal_segsize_mb: u32,
    /// `initdb --data-checksums`. Default false.
    pub data_checksums: bool,
    /// Lines appended to postgresql.conf right after initdb.
    pub conf: String,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            wal_segsize_mb: 16,
            data_checksums: false,
            conf: String::new(),
        }
    }
}

/// Data dirs of the clusters a lab made, so that teardown can stop any that a
/// test leaked.
pub(crate) type ClusterRegistry = Arc<Mutex<Vec<PathBuf>>>;

/// A PostgreSQL cluster in `<lab>/pg/<name>`, run as `postgres`, reachable
/// on the Unix socket dir `<lab>/pg/sock` and on 127.0.0.1:`port()`.
/// Dropping it stops it (immediate mode, then SIGKILL).
#[derive(Debug)]
pub struct PgCluster {
    name: String,
    data_dir: PathBuf,
    sock_dir: PathBuf,
    log_path: PathBuf,
    lab_dir: PathBuf,
    port: u16,
    registry: ClusterRegistry,
}

impl PgCluster {
    pub(crate) fn init(
        lab_dir: &Path,
        registry: ClusterRegistry,
        name: &str,
        opts: &PgOptions,
    ) -> PgCluster {
        let cluster = PgCluster::new(lab_dir, registry, name);
        let mut cmd = cluster.cmd("initdb");
        cmd.arg("-D")
            .arg(&cluster.data_dir)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg(format!("--wal-segsize={}", opts.wal_segsize_mb))
            .arg("--no-sync");
        if opts.data_checksums {
            cmd.arg("--data-checksums");
        }
        run_ok(&mut cmd);
        cluster.write_lab_conf();
        if !opts.conf.is_empty() {
            cluster.set_conf(&opts.conf);
        }
        cluster
    }

    /// A cluster made by `pg_basebackup -X none` from `primary`; not started.
    pub(crate) fn base_backup(
        lab_dir: &Path,
        registry: ClusterRegistry,
        primary: &PgCluster,
        name: &str,
    ) -> PgCluster {
        let cluster = PgCluster::new(lab_dir, registry, name);
        run_ok(
            cluster
                .cmd("pg_basebackup")
                .arg("-D")
                .arg(&cluster.data_dir)
                .arg("-h")
                .arg(&primary.sock_dir)
                .arg("-p")
                .arg(primary.port.to_string())
                .args(["-U", "postgres", "-X", "none", "-c", "fast", "--no-sync"]),
        );
        cluster.write_lab_conf();
        cluster
    }

    /// A cluster whose data directory `fill` creates (e.g. a restore tool),
    /// then gets the lab's port, sockets and logging.
    pub(crate) fn adopt(
        lab_dir: &Path,
        registry: ClusterRegistry,
        name: &str,
        fill: impl FnOnce(&Path),
    ) -> PgCluster {
        let cluster = PgCluster::new(lab_dir, registry, name);
        fill(&cluster.data_dir);
        cluster.write_lab_conf();
        cluster
    }

    fn new(lab_dir: &Path, registry: ClusterRegistry, name: &str) -> PgCluster {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "cluster name must be [A-Za-z0-9_-]+: {name:?}"
        );
        let pg = lab_dir.join("pg");
        let data_dir = pg.join(name);
        assert!(
            !data_dir.exists(),
            "cluster {name} already exists in this lab"
        );
        registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(data_dir.clone());
        PgCluster {
            name: name.to_string(),
            data_dir,
            sock_dir: pg.join("sock"),
            log_path: pg.join(format!("{name}.log")),
            lab_dir: lab_dir.to_path_buf(),
            port: free_port(Ipv4Addr::LOCALHOST),
            registry,
        }
    }

    /// Appends the lab's own settings (port, sockets, logging) to postgresql.conf.
    fn write_lab_conf(&self) {
        self.set_conf(&format!(
            "# --- e2e lab ---\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sock}'\n\
             logging_collector = off\n\
             log_line_prefix = '%m [%p] {name}: '\n\
             shared_buffers = 32MB\n\
             max_connections = 50\n",
            port = self.port,
            sock = self.sock_dir.display(),
            name = self.name,
        ));
    }

    /// A command for PostgreSQL program `program`, run as postgres in the lab dir.
    pub fn cmd(&self, program: &str) -> Command {
        let mut cmd = postgres_cmd(pg_bin(program));
        cmd.current_dir(&self.lab_dir)
            .env("PGHOST", &self.sock_dir)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres");
        cmd
    }

    /// The cluster's name in the lab.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// TCP port (also the Unix socket's number).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `<lab>/pg/sock`.
    pub fn socket_dir(&self) -> &Path {
        &self.sock_dir
    }
    /// `<lab>/pg/<name>`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// `<data>/pg_wal`.
    pub fn pg_wal(&self) -> PathBuf {
        self.data_dir.join("pg_wal")
    }
    /// `<data>/pg_wal/archive_status`.
    pub fn archive_status_dir(&self) -> PathBuf {
        self.pg_wal().join("archive_status")
    }
    /// `<lab>/pg/<name>.log` (pg_ctl -l).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
    /// libpq connection string over the Unix socket, database `postgres`.
    pub fn connstr(&self) -> String {
        self.connstr_db("postgres")
    }
    /// libpq connection string over the Unix socket for database `db`.
    pub fn connstr_db(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.sock_dir.display(),
            self.port
        )
    }

    /// Appends `lines` to postgresql.conf (later settings win; takes effect at
    /// the next start, or reload for reloadable settings).
    pub fn set_conf(&self, lines: &str) {
        let path = self.data_dir.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let mut text = lines.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        f.write_all(format!("\n{text}").as_bytes())
            .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
    }

    /// Creates `standby.signal` (log-shipping standby on next start).
    pub fn create_standby_signal(&self) {
        write_postgres_file(self.data_dir.join("standby.signal"), "", 0o600);
    }

    /// Creates `recovery.signal` (targeted archive recovery on next start).
    pub fn create_recovery_signal(&self) {
        write_postgres_file(self.data_dir.join("recovery.signal"), "", 0o600);
    }

    /// `pg_ctl start -w -t 60`; panics with the server log on failure.
    pub fn start(&self) {
        let out = run(self
            .pg_ctl()
            .args(["-l"])
            .arg(&self.log_path)
            .args(["-w", "-t", "60", "start"]));
        if !out.status.success() {
            panic!(
                "cluster {} did not start\n{}\n--- server log ---\n{}",
                self.name,
                describe_output(&self.pg_ctl(), &out),
                file_tail(&self.log_path, 8000)
            );
        }
    }

    /// `pg_ctl start -W`: does not wait (for a standby that may not get
    /// consistent, or a recovery expected to fail).
    pub fn start_no_wait(&self) {
        run_ok(
            self.pg_ctl()
                .args(["-l"])
                .arg(&self.log_path)
                .args(["-W", "start"]),
        );
    }

    /// `pg_ctl stop -m fast`; SIGKILLs the postmaster and its children if that fails.
    pub fn stop(&self) {
        let out = run_with_timeout(
            self.pg_ctl().args(["-m", "fast", "-w", "-t", "60", "stop"]),
            Duration::from_secs(70),
        );
        if !out.is_some_and(|o| o.status.success()) {
            self.kill();
        }
    }

    /// `pg_ctl stop -m immediate` (crash-like), then SIGKILL if still alive.
    pub fn stop_immediate(&self) {
        self.stop_immediate_quiet();
    }

    fn stop_immediate_quiet(&self) {
        if self.postmaster_pid().is_none() {
            return;
        }
        let out = run_with_timeout(
            self.pg_ctl()
                .args(["-m", "immediate", "-w", "-t", "30", "stop"]),
            Duration::from_secs(40),
        );
        if !out.is_some_and(|o| o.status.success()) {
            self.kill();
        }
    }

    /// SIGKILLs the postmaster and all its children (a crash).
    pub fn kill(&self) {
        if let Some(pid) = self.postmaster_pid() {
            kill_tree(pid, Duration::from_secs(10));
        }
    }

    /// stop + start.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    /// `pg_ctl reload`.
    pub fn reload(&self) {
        run_ok(self.pg_ctl().arg("reload"));
    }

    /// `pg_ctl promote -w`.
    pub fn promote(&self) {
        run_ok(self.pg_ctl().args(["-w", "-t", "60", "promote"]));
    }

    /// The living postmaster's PID from postmaster.pid.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        pid_alive(pid).then_some(pid)
    }

    /// True while the postmaster is alive.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = self.cmd("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir);
        cmd
    }

    fn psql_cmd(&self, db: &str) -> Command {
        let mut cmd = self.cmd("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.sock_dir)
            .args(["-p", &self.port.to_string(), "-d", db, "-f", "-"]);
        cmd
    }

    /// Runs `sql` (a script: several statements allowed) in database
    /// `postgres`; returns the unaligned, tuples-only output without the final
    /// newline. Panics on any error.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("postgres", sql)
    }

    /// [`Self::psql`] in database `db`.
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        match self.try_psql_db(db, sql) {
            Ok(s) => s,
            Err(e) => panic!("psql on cluster {} failed\n{e}", self.name),
        }
    }

    /// [`Self::psql`] returning the error text instead of panicking.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.try_psql_db("postgres", sql)
    }

    /// [`Self::psql_db`] returning the error text instead of panicking.
    pub fn try_psql_db(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = self.psql_cmd(db);
        let out: Output = run_with_input(&mut cmd, sql);
        if out.status.success() {
            let s = String::from_utf8_lossy(&out.stdout);
            Ok(s.strip_suffix('\n').unwrap_or(&s).to_string())
        } else {
            Err(format!("sql: {sql}\n{}", describe_output(&cmd, &out)))
        }
    }

    /// Runs pgbench against this cluster (`-h`/`-p` given; database from
    /// `args` or `postgres`); returns stdout, panics on failure.
    pub fn pgbench(&self, args: &[&str]) -> String {
        run_ok(
            self.cmd("pgbench")
                .arg("-h")
                .arg(&self.sock_dir)
                .args(["-p", &self.port.to_string()])
                .args(args),
        )
    }

    /// Writes a little WAL, then `select pg_walfile_name(pg_switch_wal())`:
    /// returns the name of the segment that was just completed (and will be
    /// archived). The WAL write first makes sure each call completes a new
    /// segment, even on an idle cluster.
    pub fn switch_wal(&self) -> String {
        let out = self.psql(
            "select pg_logical_emit_message(false, 'e2e-lab', 'switch');\n\
             select pg_walfile_name(pg_switch_wal());",
        );
        out.lines().last().unwrap_or_default().to_string()
    }

    /// Polls `sql` until its output equals `expected`; panics after `timeout`
    /// with the last output or error and the server log.
    pub fn wait_for(&self, sql: &str, expected: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            last = self.try_psql(sql);
            if last.as_deref() == Ok(expected) {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "cluster {}: timed out after {timeout:?} waiting for `{sql}` to return {expected:?}; last: {last:?}\n--- server log ---\n{}",
            self.name,
            file_tail(&self.log_path, 8000)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_immediate_quiet();
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d| d != &self.data_dir);
    }
}

/// Stops a cluster known only by its data dir (lab teardown of leaked clusters).
pub(crate) fn stop_data_dir(data_dir: &Path) {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return;
    };
    if !pid_alive(pid) {
        return;
    }
    let _ = run_with_timeout(
        postgres_cmd(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(data_dir)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"]),
        Duration::from_secs(40),
    );
    if pid_alive(pid) {
        kill_tree(pid, Duration::from_secs(10));
    }
}
