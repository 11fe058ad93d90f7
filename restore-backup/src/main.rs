//! restore-backup: the DBA's restore. Unpacks a base backup from an archive
//! server into an empty data directory and sets it up to recover, from both
//! archive servers, to a point in time (or to the end, or as a standby).

use std::path::PathBuf;
use std::process::ExitCode;

use archive_core::client::restore_backup::{self, tablespace, PitrRequest, Target, Timeline};
use archive_core::common::cli::{self, ConfigArgs};
use archive_core::common::log;
use archive_core::common::names::parse_hosts;
use archive_core::Error;
use clap::Parser;

const AFTER_HELP: &str = "\
Examples:
  restore-backup --from arch1 --backup-dir /var/lib/pgarchive/backups/main \\
      --wals-dir /var/lib/pgarchive/main --hosts 'arch1 arch2' \\
      --target \"time:2026-11-25 10:00:00+00\" /var/lib/postgresql/15/restore
  restore-backup ... --target latest --standby /var/lib/postgresql/15/standby
  restore-backup ... --target xid:7412 --backup 3 \\
      --tablespace-map /srv/ts1=/srv/restore/ts1 /var/lib/postgresql/15/restore

The backup is the newest complete one that ended at or before the target
(--backup N picks data.master.N): PostgreSQL cannot stop recovery inside the
backup it started from. A time target is compared with when pg_basebackup
exited (the archive server's clock), an LSN target with the backup's end LSN
(servers of older versions tell only the start, compared instead). No record
tells which transactions a backup holds: for an xid target the oldest backup
is taken unless --backup N names a newer one. Only backups on the target
timeline (N, or the archive's newest for latest), or on an ancestor before it
branched off, qualify; current takes any.
Tablespaces go back to their original locations, or where --tablespace-map
OLD=NEW says; each must be empty or missing.
The data directory gets restore_command =
restore-cmd reading from both hosts, the recovery target, recovery_target_action
(--action, default pause), recovery.signal (standby.signal with --standby) and
archive_mode = off unless --keep-archiving, so a test restore never writes into
the production archive. Nothing is started: the last line says what to run.

Exit codes: 0 restored; 1 archive server unreachable; 2 bad usage;
3 refused (directory not empty, target before the end of every backup, timeline
not reachable, damaged or unsupported backup); 5 no such backup.";

/// Restore a base backup for point-in-time recovery.
#[derive(Parser, Debug)]
#[command(name = "restore-backup", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Archive server to take the backup from.
    #[arg(long)]
    from: String,
    /// Backup directory on the archive server.
    #[arg(long)]
    backup_dir: String,
    /// WAL archive directory (DST-DIR) on the archive servers.
    #[arg(long)]
    wals_dir: String,
    /// Archive hosts for restore_command, e.g. 'arch1 arch2' (default: --from).
    #[arg(long)]
    hosts: Option<String>,
    /// latest | immediate | time:<timestamp with zone> | lsn:<X/Y> | name:<restore point> | xid:<xid>.
    #[arg(long, default_value = "latest")]
    target: String,
    /// recovery_target_timeline: latest, current or a timeline number.
    #[arg(long, default_value = "latest", value_name = "TIMELINE")]
    target_timeline: String,
    /// Restore the tablespace at OLD into NEW instead (absolute paths; repeatable).
    #[arg(long = "tablespace-map", value_name = "OLD=NEW")]
    tablespace_map: Vec<String>,
    /// Restore data.master.N instead of choosing by target.
    #[arg(long, value_name = "N")]
    backup: Option<u32>,
    /// Set up a log-shipping standby (standby.signal) instead of a recovery.
    #[arg(long)]
    standby: bool,
    /// recovery_target_action: pause, promote or shutdown.
    #[arg(long, default_value = "pause")]
    action: String,
    /// Keep the backup's archive_mode/archive_command.
    #[arg(long)]
    keep_archiving: bool,
    /// restore_command program (and options) to write.
    #[arg(long, default_value = "restore-cmd")]
    restore_cmd: String,
    /// Extra postgresql.auto.conf line, e.g. --conf "port = 5433" (repeatable).
    #[arg(long = "conf", value_name = "LINE")]
    conf: Vec<String>,
    /// Empty (or missing) data directory to restore into.
    data_dir: PathBuf,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    log::init("restore-backup", log::LogLevel::Info);
    cli::exit(run(&args).map(|()| 0), None)
}

fn run(args: &Args) -> Result<(), Error> {
    let cfg = args.config.load()?;
    if !["pause", "promote", "shutdown"].contains(&args.action.as_str()) {
        return Err(Error::Usage(format!(
            "--action {:?}: use pause, promote or shutdown",
            args.action
        )));
    }
    let req = PitrRequest {
        hosts: parse_hosts(args.hosts.as_deref().unwrap_or(&args.from))?,
        from: parse_hosts(&args.from)?.remove(0),
        backup_dir: args.backup_dir.clone(),
        wals_dir: args.wals_dir.clone(),
        target: Target::parse(&args.target)?,
        timeline: Timeline::parse(&args.target_timeline)?,
        tablespace_map: args
            .tablespace_map
            .iter()
            .map(|m| tablespace::parse_mapping(m))
            .collect::<Result<_, _>>()?,
        backup: args.backup,
        standby: args.standby,
        data_dir: args.data_dir.clone(),
        restore_cmd: args.restore_cmd.clone(),
        action: args.action.clone(),
        keep_archiving: args.keep_archiving,
        extra_conf: args.conf.clone(),
    };
    let rt = cli::runtime()?;
    let chosen = rt.block_on(restore_backup::restore(&cfg, &req))?;
    log::info(format!(
        "restored {} into {}",
        restore_backup::describe(&chosen),
        args.data_dir.display()
    ));
    println!(
        "Start it with: {}   (it recovers from {} until {})",
        restore_backup::start_command(&cfg, &args.data_dir),
        req.hosts.join(" and "),
        if args.standby {
            "promoted".to_string()
        } else {
            args.target.clone()
        }
    );
    Ok(())
}
