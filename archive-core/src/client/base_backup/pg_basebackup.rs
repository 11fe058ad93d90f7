//! Running pg_basebackup: the command line, progress to the log, and a child
//! that dies with us (so a killed base-backup never leaves a pg_basebackup
//! writing behind it).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::config::Config;
use crate::common::log;
use crate::common::pg_programs::{self, Found};
use crate::{Error, Result};

/// Quotes a libpq connection-string value.
pub fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// Host (name, address, or socket directory).
    pub host: &'a str,
    /// Port.
    pub port: i32,
    /// Role.
    pub user: &'a str,
    /// Label stored in backup_label.
    pub label: &'a str,
}

impl Source<'_> {
    /// The libpq connection string (without a database or replication
    /// mode: each caller adds what it needs).
    fn conninfo(&self, cfg: &Config) -> String {
        format!(
            "host={} port={} user={} connect_timeout={} keepalives=1 keepalives_idle=30 \
             keepalives_interval=10 keepalives_count=6 application_name=base-backup",
            conninfo_value(self.host),
            self.port,
            conninfo_value(self.user),
            cfg.connect_timeout,
        )
    }
}

/// One value asked of `src`'s server over an ordinary connection to the
/// `postgres` database (`what` names it in errors).
fn ask(cfg: &Config, src: &Source, sql: &str, what: &str) -> Result<String> {
    let where_ = format!("{}:{}", src.host, src.port);
    // tokio-postgres knows fewer keywords than libpq: only the basic ones.
    let conninfo = format!(
        "host={} port={} user={} dbname=postgres connect_timeout={} application_name=base-backup",
        conninfo_value(src.host),
        src.port,
        conninfo_value(src.user),
        cfg.connect_timeout,
    );
    let mut client = postgres::Client::connect(&conninfo, postgres::NoTls)
        .map_err(|e| Error::host(&where_, format!("cannot connect to ask {what}: {e}")))?;
    let row = client
        .query_one(sql, &[])
        .map_err(|e| Error::host(&where_, format!("cannot ask {what}: {e}")))?;
    Ok(row.get(0))
}

/// The server's major version (`server_version_num` / 10000), asked over an
/// ordinary connection to the `postgres` database.
pub fn server_major(cfg: &Config, src: &Source) -> Result<u32> {
    let num = ask(
        cfg,
        src,
        "select current_setting('server_version_num')",
        "the server version",
    )?;
    num.parse::<u32>().map(|n| n / 10000).map_err(|_| {
        Error::host(
            &format!("{}:{}", src.host, src.port),
            format!("server_version_num {num:?} is not a number"),
        )
    })
}

/// The server's `summarize_wal` setting (PostgreSQL 17 and later): true
/// when on, which incremental backups need.
pub fn summarize_wal(cfg: &Config, src: &Source) -> Result<bool> {
    let v = ask(
        cfg,
        src,
        "select coalesce(current_setting('summarize_wal', true), 'off')",
        "summarize_wal",
    )?;
    Ok(v == "on")
}

/// pg_basebackup for `src`'s server: of its major version or the closest
/// newer one installed (see `common::pg_programs`). When the version cannot
/// be asked (an ordinary connection refused where replication is allowed),
/// the newest installed one, which reads every older server.
pub fn choose_program(cfg: &Config, src: &Source) -> Result<Found> {
    let server = match server_major(cfg, src) {
        Ok(v) => Some(v),
        Err(e) => {
            log::warn(format!(
                "{e}; using the newest pg_basebackup installed (allow an ordinary connection to the postgres database in pg_hba.conf to have the closest version picked)"
            ));
            None
        }
    };
    let found = pg_programs::find(cfg, "pg_basebackup", server)?;
    log::info(format!(
        "{}:{}: server {}, using {} (PostgreSQL {})",
        src.host,
        src.port,
        server.map_or_else(
            || "version unknown".to_string(),
            |v| format!("PostgreSQL {v}")
        ),
        found.path.display(),
        found.major
    ));
    Ok(found)
}

/// The pg_basebackup command (`program`) writing a tar-format backup of
/// `src` into `target` (WAL not included: it comes from the archive); an
/// incremental one against the backup whose manifest is `incremental`.
pub fn command(
    cfg: &Config,
    program: &Path,
    src: &Source,
    target: &Path,
    incremental: Option<&Path>,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("--dbname")
        .arg(src.conninfo(cfg))
        .arg("--pgdata")
        .arg(target)
        .args([
            "--format=tar",
            "--wal-method=none",
            "--manifest-checksums=CRC32C",
        ])
        .arg(format!("--compress={}", cfg.backup_compress))
        .arg(format!("--checkpoint={}", cfg.backup_checkpoint))
        .arg(format!("--label={}", src.label))
        .args(["--verbose", "--no-password"]);
    if cfg.backup_progress_interval > 0 {
        cmd.arg("--progress");
    }
    if let Some(rate) = &cfg.backup_max_rate {
        cmd.arg(format!("--max-rate={}", rate));
    }
    if let Some(manifest) = incremental {
        cmd.arg("--incremental").arg(manifest);
    }
    cmd
}

/// How a pg_basebackup run ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Its last stderr lines (for the error message).
    pub tail: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs `cmd`, logging its verbose lines and (every `progress_interval`)
/// its progress line; the child gets SIGKILL if this process dies.
pub fn run(mut cmd: Command, progress_interval: Duration) -> Result<Finished> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("cannot run", PathBuf::from(&program), e))?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        // Progress lines end in '\r' on a terminal and '\n' otherwise.
        let mut r = BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    for part in String::from_utf8_lossy(&buf).split(['\r', '\n']) {
                        let line = part.trim();
                        if !line.is_empty() && tx.send(line.to_string()).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    let mut tail: Vec<String> = Vec::new();
    let mut last_progress_log: Option<Instant> = None;
    let mut pending_progress: Option<String> = None;
    let mut handle = |line: String, tail: &mut Vec<String>| {
        if is_progress(&line) {
            let due = last_progress_log.is_none_or(|t| t.elapsed() >= progress_interval);
            if due {
                log::info(format!("pg_basebackup: {line}"));
                last_progress_log = Some(Instant::now());
                pending_progress = None;
            } else {
                pending_progress = Some(line);
            }
            return;
        }
        log::info(if line.starts_with("pg_basebackup") {
            line.clone()
        } else {
            format!("pg_basebackup: {line}")
        });
        tail.push(line);
        if tail.len() > 20 {
            tail.remove(0);
        }
    };
    // Lines until stderr closes (the child has exited or closed it).
    for line in rx.iter() {
        handle(line, &mut tail);
    }
    let _ = reader.join();
    let status = child
        .wait()
        .map_err(|e| Error::io("cannot wait for", PathBuf::from(&program), e))?;
    if let Some(p) = pending_progress.take() {
        log::info(format!("pg_basebackup: {p}"));
    }
    Ok(Finished {
        status,
        tail,
        elapsed: started.elapsed(),
    })
}

/// "12345/67890 kB (18%), 0/1 tablespace (...)".
fn is_progress(line: &str) -> bool {
    line.split_once(" kB (").is_some_and(|(head, _)| {
        head.split_once('/').is_some_and(|(a, b)| {
            a.chars().all(|c| c.is_ascii_digit()) && b.chars().all(|c| c.is_ascii_digit())
        })
    })
}

/// PR_SET_PDEATHSIG: the child is SIGKILLed when this thread's process dies.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs between fork and exec and only makes two
    // async-signal-safe system calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                // The parent died before prctl took effect.
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_recognized() {
        assert!(is_progress(
            "22953/22953 kB (100%), 1/1 tablespace (/tmp/x/base.tar   )"
        ));
        assert!(is_progress("0/22953 kB (0%), 0/1 tablespace"));
        assert!(!is_progress("pg_basebackup: checkpoint completed"));
    }

    #[test]
    fn conninfo_values_are_quoted() {
        assert_eq!(conninfo_value("a b"), "'a b'");
        assert_eq!(conninfo_value("it's"), "'it\\'s'");
    }

    #[test]
    fn the_command_line_has_tar_format_and_no_wal() {
        let cfg = Config::load(None, &["backup_max_rate=\"10M\"".into()]).unwrap();
        let src = Source {
            host: "standby",
            port: 5433,
            user: "backup",
            label: "x",
        };
        let cmd = command(
            &cfg,
            Path::new("/pg/18/bin/pg_basebackup"),
            &src,
            Path::new("/b/t"),
            None,
        );
        assert_eq!(cmd.get_program(), "/pg/18/bin/pg_basebackup");
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in [
            "--format=tar",
            "--wal-method=none",
            "--compress=client-zstd:1",
            "--max-rate=10M",
            "--checkpoint=spread",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
        }
        assert!(
            args[1].contains("host='standby' port=5433 user='backup'"),
            "{}",
            args[1]
        );
        // Progress (and the server's size-estimation pass) only when asked.
        assert!(!args.iter().any(|a| a == "--progress"), "{args:?}");
        assert!(!args.iter().any(|a| a == "--incremental"), "{args:?}");
        let cfg = Config::load(None, &["backup_progress_interval=30".into()]).unwrap();
        let parent = Path::new("/b/data.master.1/backup_manifest");
        let cmd = command(
            &cfg,
            Path::new("pg_basebackup"),
            &src,
            Path::new("/b/t"),
            Some(parent),
        );
        assert!(cmd.get_args().any(|a| a == "--progress"));
        let args: Vec<_> = cmd.get_args().collect();
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--incremental" && w[1] == parent.as_os_str()),
            "{args:?}"
        );
    }
}
