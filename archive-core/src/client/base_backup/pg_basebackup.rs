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
use crate::{Error, Result};

/// Where PostgreSQL 15's programs live on Debian.
pub const PG15_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Path of PostgreSQL program `name`: `pg_bin_dir`, else PostgreSQL 15's
/// directory when it has the program, else the bare name (PATH).
pub fn pg_program(cfg: &Config, name: &str) -> PathBuf {
    if let Some(dir) = &cfg.pg_bin_dir {
        return dir.join(name);
    }
    let p = Path::new(PG15_BIN).join(name);
    if p.is_file() {
        p
    } else {
        PathBuf::from(name)
    }
}

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

/// The pg_basebackup command writing a tar-format backup of `src` into
/// `target` (WAL not included: it comes from the archive).
pub fn command(cfg: &Config, src: &Source, target: &Path) -> Command {
    let conninfo = format!(
        "host={} port={} user={} connect_timeout={} keepalives=1 keepalives_idle=30 \
         keepalives_interval=10 keepalives_count=6 application_name=base-backup",
        conninfo_value(src.host),
        src.port,
        conninfo_value(src.user),
        cfg.connect_timeout,
    );
    let mut cmd = Command::new(pg_program(cfg, "pg_basebackup"));
    cmd.arg("--dbname")
        .arg(conninfo)
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
        let cmd = command(
            &cfg,
            &Source {
                host: "standby",
                port: 5433,
                user: "backup",
                label: "x",
            },
            Path::new("/b/t"),
        );
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
        let cfg = Config::load(None, &["backup_progress_interval=30".into()]).unwrap();
        let src = Source {
            host: "standby",
            port: 5433,
            user: "backup",
            label: "x",
        };
        let cmd = command(&cfg, &src, Path::new("/b/t"));
        assert!(cmd.get_args().any(|a| a == "--progress"));
    }
}
