//! archive-remote-cmd: the only program the suite runs on an archive server.
//! `serve` answers framed requests on stdin/stdout (what ssh runs, usually
//! as the forced command of the clients' keys); `deliver-owed` is the cron
//! sweep that hands the peer what it missed; `status` shows what is owed;
//! `verify` (cron) proves the stored WAL and backups restorable.

use std::path::PathBuf;
use std::process::ExitCode;

use archive_core::client::verify;
use archive_core::common::cli::{self, ConfigArgs};
use archive_core::common::config::parse_byte_size;
use archive_core::common::log;
use archive_core::server::report;
use archive_core::server::serve::{self, Access, Role, Server};
use archive_core::Error;
use clap::{Parser, Subcommand};

const AFTER_HELP: &str = "\
authorized_keys on an archive server: one line per key, each naming its role
(the key can run nothing else and ask nothing beyond its role):
  command=\"/usr/local/bin/archive-remote-cmd serve --role primary --dir /var/lib/pgarchive/main\",restrict ssh-ed25519 AAAA... postgres@primary
  command=\"/usr/local/bin/archive-remote-cmd serve --role standby --dir /var/lib/pgarchive/main\",restrict ssh-ed25519 AAAA... postgres@standby
  command=\"/usr/local/bin/archive-remote-cmd serve --role monitor\",restrict ssh-ed25519 AAAA... nagios@monitor
  command=\"/usr/local/bin/archive-remote-cmd serve --role peer\",restrict ssh-ed25519 AAAA... postgres@arch2
Roles: primary = put; standby = get, list, list_backups, get_backup_file;
monitor = list, list_backups, digest, dir_status, oldest_backup, get of .history;
peer = everything. A key without --role is refused unless allow_keys_without_role.

Configuration (flat TOML from --config, $PGARCHIVE_CONFIG or /etc/pgarchive.toml):
  archive_roots = [\"/var/lib/pgarchive\"]   DST-DIRs must lie below one of these
  server_name = \"arch1\"                     this server's alias (never forwards to itself)
  ssh_config, runtime_dir, state_dir         how to reach the peer (ssh -F file, sockets, health)
  compress_level (1), forward_cooldown (30 s), owed_batch, io_timeout, connect_timeout
  allow_keys_without_role (false)           serve role-less keys as peers, with a warning

verify (cron or a systemd timer on each archive server, at low priority):
  archive-remote-cmd verify --dir /var/lib/pgarchive/main \
      --backup-dir /var/lib/pgarchive/backups/main [--peer arch2] \
      [--json /var/log/pgarchive/verify-main.json] [--max-rate 50M]

Exit codes: 0 ok (verify: clean); 1 failed, retry (verify: could not check
everything); 2 bad usage or configuration, or a forced command asked for
something else; 3 refused input; 4 conflict; 6 verify found damage.";

const VERIFY_HELP: &str = "\
Runs at nice 19, SCHED_BATCH and the idle I/O class. The result is recorded
in DIR/.pgarchive/verify.json, which archive-status shows.

Exit codes: 0 clean; 6 damage found (each damaged or missing item is named);
1 could not check everything (e.g. the peer unreachable); 2 bad usage;
4 another verify of DIR is running.";

/// Archive server side of the dual-archive WAL suite.
#[derive(Parser, Debug)]
#[command(name = "archive-remote-cmd", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve protocol requests on stdin/stdout (run by ssh).
    Serve {
        /// What the key may ask: primary, standby, monitor or peer
        /// (repeatable, or comma-separated: the union of their requests).
        /// Set in the forced command of authorized_keys, never by the client.
        #[arg(long, value_enum, value_delimiter = ',')]
        role: Vec<Role>,
        /// An archive or backup directory the key may name, with everything
        /// below it (repeatable); must lie under archive_roots. Without it:
        /// anywhere under archive_roots.
        #[arg(long, value_name = "DIR")]
        dir: Vec<PathBuf>,
    },
    /// Deliver every file owed to a peer server (run from cron, e.g. every minute).
    DeliverOwed,
    /// Print owed files per directory and peer health as JSON.
    Status,
    /// Decode every stored WAL file of an archive directory and check every
    /// complete backup against its manifest, here and (with --peer) on the
    /// peer; prints a summary, records the result for archive-status.
    #[command(after_help = VERIFY_HELP)]
    Verify {
        /// The archive directory (DST-DIR), under archive_roots.
        #[arg(long, value_name = "DIR")]
        dir: String,
        /// The cluster's backup directory (data.master.N), if any.
        #[arg(long, value_name = "DIR")]
        backup_dir: Option<String>,
        /// Also fetch and check the peer server's copies (its ssh alias).
        #[arg(long, value_name = "HOST")]
        peer: Option<String>,
        /// Write the full report (every damaged item) as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Read at most this many stored bytes per second (e.g. 50M).
        #[arg(long, value_name = "BYTES", value_parser = parse_byte_size)]
        max_rate: Option<u64>,
    },
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    log::init("archive-remote-cmd", log::LogLevel::Info);
    cli::exit(run(args), None)
}

fn run(args: Args) -> Result<i32, Error> {
    let cfg = args.config.load()?;
    let rt = cli::runtime()?;
    match args.command {
        Command::Serve { role, dir } => {
            let original = std::env::var("SSH_ORIGINAL_COMMAND").ok();
            serve::check_forced_command(original.as_deref())?;
            let access = Access::new(&role, &dir, &cfg)?;
            let mut server = Server::with_access(cfg, access)?;
            serve::widen_stdio();
            rt.block_on(server.serve(tokio::io::stdin(), tokio::io::stdout()))?;
        }
        Command::DeliverOwed => rt.block_on(serve::sweep(cfg))?,
        Command::Status => println!("{}", report::server_status(&cfg)?.to_json()),
        Command::Verify {
            dir,
            backup_dir,
            peer,
            json,
            max_rate,
        } => {
            let opts = verify::Options {
                dir,
                backup_dir,
                peer,
                json,
                max_rate,
            };
            let report = rt.block_on(verify::run(&cfg, &opts))?;
            print!("{}", report.summary());
            return Ok(report.exit_code());
        }
    }
    Ok(0)
}
