//! pgarchive-check: run on the primary (or a standby) after setting up, or
//! after any change, to prove the whole chain link by link.

use std::process::ExitCode;
use std::time::Duration;

use archive_core::client::setup_check::{self, CheckRequest, Mode};
use archive_core::common::cli::{self, ConfigArgs};
use archive_core::common::{log, names};
use archive_core::Error;
use clap::{Parser, ValueEnum};

const AFTER_HELP: &str = "\
On the primary (as postgres, with archive-cmd's config), it checks:
  PostgreSQL archives through archive-cmd; each archive server is reached
  with the configured key, which runs only archive-remote-cmd (forced
  command) with role primary; DST-DIR there is writable and holds WAL of
  this cluster only; each server reaches the other (the second copy); then
  pg_switch_wal() and the segment arrives on both servers within --timeout.
On a standby (with restore-cmd's config): each server is reached with role
  standby, and the newest segment of SRC-DIR restores and decodes.

Each line says ok or FAIL; a FAIL line says what is wrong and the fix.

Exit codes:
  0  every link holds
  1  a link is broken (see the FAIL lines)
  2  bad usage or configuration";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Where {
    /// On the primary: archiving works end to end.
    Primary,
    /// On a standby: restoring works.
    Standby,
}

/// Proves the archiving (or restoring) chain to both archive servers.
#[derive(Parser, Debug)]
#[command(name = "pgarchive-check", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// libpq connection string of the local PostgreSQL (primary).
    #[arg(
        long,
        default_value = "host=/var/run/postgresql user=postgres dbname=postgres"
    )]
    dsn: String,
    /// Seconds a switched segment may take to reach both servers.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Where this runs.
    #[arg(value_enum)]
    mode: Where,
    /// The archive servers, as in archive_command: "arch1 arch2".
    hosts: String,
    /// DST-DIR (primary) or SRC-DIR (standby) on the archive servers.
    dir: String,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    log::init("pgarchive-check", log::LogLevel::Warn);
    cli::exit(run(&args), None)
}

fn run(args: &Args) -> Result<i32, Error> {
    let cfg = args.config.load()?;
    let req = CheckRequest {
        mode: match args.mode {
            Where::Primary => Mode::Primary,
            Where::Standby => Mode::Standby,
        },
        hosts: names::parse_hosts(&args.hosts)?,
        dir: args.dir.clone(),
        dsn: args.dsn.clone(),
        timeout: Duration::from_secs(args.timeout),
    };
    let report = setup_check::run(&cfg, &req)?;
    for link in &report.links {
        match (&link.problem, &link.fix) {
            (None, _) => println!("ok    {}", link.what),
            (Some(p), fix) => {
                println!("FAIL  {}: {p}", link.what);
                if let Some(f) = fix {
                    println!("      fix: {f}");
                }
            }
        }
    }
    Ok(if report.all_hold() { 0 } else { 1 })
}
