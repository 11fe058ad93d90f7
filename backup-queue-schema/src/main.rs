//! backup-queue: applies the backup_queue schema and shows the queue.

use std::process::ExitCode;

use archive_core::common::cli::{self, ConfigArgs};
use archive_core::common::log;
use archive_core::net::queue;
use archive_core::Error;
use backup_queue_schema::{applied, migrate, script, ARCHIVE2_SCHEMA, MIGRATIONS};
use clap::{Parser, Subcommand};
use postgres::Client;

const AFTER_HELP: &str = "\
The queue database: schema `backups` (tables hosts and tasks, functions
next_task, stop, set_error, clear, clear_failures, view overview), and
Archive 2.0's interface beside it (get_next(archiver) with its o_* columns,
stop(backup_id), hosts.archiver_name, tasks.backup_id/is_failed; deleting a
failed task's row clears it). `migrate` also takes over an Archive 2.0
queue database in place, in one transaction: its tables move to schema
backups_archive2 and their rows are copied in.

  backup-queue --dsn 'host=queue dbname=backup_queue' migrate
  backup-queue show                 # uses queue_dsn from the config
  backup-queue show --check         # for monitoring: exit 6 on failed/stuck tasks

Add a cluster (plain SQL):
  insert into backups.hosts (cluster_name, host, port, archiver1, archiver2,
                             directory, wals_dir, periodicity_days, keep_backups_cnt)
  values ('main', 'main-standby', 5432, 'arch1', 'arch2',
          '/var/lib/pgarchive/backups/main', '/var/lib/pgarchive/main', 4, 2);
Archive 2.0's form works too (then set wals_dir for WAL maintenance):
  insert into backups.hosts (host, cluster_name, archiver_name, keep_backups_cnt,
                             periodicity_days, directory)
  values ('main-standby', 'main', '{\"arch1\", \"arch2\"}', 2, 4, '/var/lib/pgarchive/backups/main');
Clear a failed task (its server then backs the cluster up again):
  select backups.clear(<task id>);

Configuration: queue_dsn from --dsn, else the config (--config, else
$PGARCHIVE_CONFIG, else /etc/pgarchive.toml), else $PGARCHIVE_QUEUE_DSN.

Exit codes:
  0  done (show: printed; with --check, nothing failed or stuck)
  1  the queue database could not be reached or queried
  2  bad usage or configuration (no queue_dsn)
  3  refused: a migration failed, an applied migration was edited, or the
     database's schema is newer than this program
  6  show --check: there are failed (uncleared) or stuck tasks";

/// Exit code of `show --check` when something needs a human.
const EXIT_PROBLEMS: i32 = 6;

/// Applies and inspects the backup_queue database.
#[derive(Parser, Debug)]
#[command(name = "backup-queue", version, after_help = AFTER_HELP)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Connection string of the queue database (overrides queue_dsn).
    #[arg(long, value_name = "DSN")]
    dsn: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Applies the migrations not applied yet (idempotent; safe to run
    /// concurrently).
    Migrate,
    /// Shows the queue: schema version, clusters, per-server state, failed
    /// and stuck tasks, recent tasks.
    Show {
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// How many recent tasks to list.
        #[arg(long, default_value_t = 20)]
        tasks: i64,
        /// A running task older than this many hours counts as stuck.
        #[arg(long, default_value_t = 24.0)]
        stuck_hours: f64,
        /// Exit 6 when there are failed (uncleared) or stuck tasks.
        #[arg(long)]
        check: bool,
    },
    /// Prints every migration as one psql script (for review, or to apply
    /// by hand: it records itself like `migrate`).
    Sql,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    log::init("backup-queue", log::LogLevel::Info);
    cli::exit(run(args), None)
}

fn run(args: Args) -> Result<i32, Error> {
    if let Cmd::Sql = args.command {
        print!("{}", script());
        return Ok(0);
    }
    let cfg = args.config.load()?;
    let dsn = args.dsn.clone().or(cfg.queue_dsn.clone()).ok_or_else(|| {
        Error::Usage("no queue database: pass --dsn or set queue_dsn in the config".into())
    })?;
    let mut client = queue::connect(&dsn, cfg.connect_timeout(), "backup-queue")?;
    match args.command {
        Cmd::Migrate => {
            let done = migrate(&mut client)?;
            let version = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
            if let Some(t) = done.archive2 {
                log::info(format!(
                    "took over the Archive 2.0 queue: {} cluster(s) and {} task(s) copied{}; its own tables are kept in schema {ARCHIVE2_SCHEMA}",
                    t.hosts,
                    t.tasks,
                    if t.tasks_left > 0 {
                        format!(" ({} task(s) of clusters no longer listed stay there only)", t.tasks_left)
                    } else {
                        String::new()
                    }
                ));
            }
            if done.applied.is_empty() {
                log::info(format!("schema is up to date (version {version})"));
            } else {
                log::info(format!(
                    "applied migration(s) {:?}; schema is at version {version}",
                    done.applied
                ));
            }
            if !done.no_wals_dir.is_empty() {
                log::warn(format!(
                    "cluster(s) {} have no wals_dir: base-backup makes their backups but runs no wal-cleanup or wal-sync until it is set: update backups.hosts set wals_dir = '<archive_command's DST-DIR>' where cluster_name = '…'",
                    done.no_wals_dir.join(", ")
                ));
            }
            Ok(0)
        }
        Cmd::Show {
            cluster,
            tasks,
            stuck_hours,
            check,
        } => {
            let problems = show(&mut client, cluster.as_deref(), tasks, stuck_hours)?;
            Ok(if check && problems > 0 {
                EXIT_PROBLEMS
            } else {
                0
            })
        }
        Cmd::Sql => unreachable!(),
    }
}

/// Prints a table with a header, columns padded to their widest cell.
fn table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    println!("{title}");
    if rows.is_empty() {
        println!("  (none)");
        return;
    }
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(&format!(" {c}"));
            } else {
                s.push_str(&format!(" {c:<w$}", w = width[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn text_rows(
    client: &mut Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Vec<Vec<String>>, Error> {
    let rows = client.query(sql, params).map_err(queue::db_error)?;
    Ok(rows
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i).unwrap_or_else(|| "-".into()))
                .collect()
        })
        .collect())
}

/// Prints the queue; returns the number of failed (uncleared) plus stuck tasks.
fn show(
    client: &mut Client,
    cluster: Option<&str>,
    tasks: i64,
    stuck_hours: f64,
) -> Result<usize, Error> {
    let versions = applied(client)?;
    if versions.is_empty() {
        return Err(Error::NotFound(
            "the backups schema is not installed here: run backup-queue migrate".into(),
        ));
    }
    let v = versions.last().expect("not empty");
    println!(
        "schema version {} ({}_{}, applied {})\n",
        v.version,
        format_args!("{:04}", v.version),
        v.name,
        v.applied_at
    );
    let ts = "'YYYY-MM-DD HH24:MI TZ'";
    // Incrementals between full backups: from version 3 on.
    let every = if v.version >= 3 {
        "periodicity_days::text || 'd' || case when incrementals_per_full > 0 \
         then ', ' || incrementals_per_full || ' incremental(s) per full' else '' end"
    } else {
        "periodicity_days::text || 'd'"
    };
    let hosts = text_rows(
        client,
        &format!(
        "select cluster_name, pg_user || '@' || host || ':' || port, archiver1 || ', ' || archiver2, \
                {every}, \
                keep_backups_cnt::text || coalesce(' + ' || keep_days || 'd', ''), \
                to_char(start_time, 'HH24:MI') || ' ' || time_zone, \
                case when enabled then 'yes' else 'NO' end, directory, \
                coalesce(wals_dir, 'NOT SET: no wal-cleanup, no wal-sync') \
           from backups.hosts where $1::text is null or cluster_name = $1 order by cluster_name"),
        &[&cluster],
    )?;
    table(
        "clusters:",
        &[
            "CLUSTER",
            "FROM",
            "ARCHIVERS",
            "EVERY",
            "KEEP",
            "START",
            "ENABLED",
            "DIRECTORY",
            "WALS_DIR",
        ],
        &hosts,
    );
    let overview = text_rows(
        client,
        &format!(
            "select cluster_name, archiver, \
                    coalesce('#' || last_done_id || ' ' || to_char(last_done_started_at, {ts}), 'never'), \
                    coalesce('#' || running_id || ' since ' || to_char(running_since, {ts}), '-'), \
                    coalesce('FAILED #' || failed_id || ' ' || to_char(failed_started_at, {ts}) \
                             || ': ' || coalesce(failed_error, '?') \
                             || ' -- clear: select backups.clear(' || failed_id || ');', 'ok') \
               from backups.overview where $1::text is null or cluster_name = $1"
        ),
        &[&cluster],
    )?;
    println!();
    table(
        "per server:",
        &["CLUSTER", "ARCHIVER", "LAST DONE", "RUNNING", "STATE"],
        &overview,
    );
    let failed = overview
        .iter()
        .filter(|r| r[4].starts_with("FAILED"))
        .count();
    let stuck = text_rows(
        client,
        &format!(
            "select '#' || id, cluster_name, archiver, to_char(started_at, {ts}), \
                    to_char(now() - started_at, 'DD\"d\" HH24\"h\"MI\"m\"'), coalesce(error, '') \
               from backups.tasks where status = 'running' \
                and started_at < now() - $2 * interval '1 hour' \
                and ($1::text is null or cluster_name = $1) order by id"
        ),
        &[&cluster, &stuck_hours],
    )?;
    println!();
    table(
        &format!("stuck (running for more than {stuck_hours} h):"),
        &["TASK", "CLUSTER", "ARCHIVER", "STARTED", "FOR", "ERROR"],
        &stuck,
    );
    let recent = text_rows(
        client,
        &format!(
            "select * from (select '#' || id, cluster_name, archiver, \
                    status || case when cleared_at is not null then ' (cleared)' else '' end, \
                    to_char(started_at, {ts}), coalesce(to_char(finished_at, {ts}), '-'), \
                    coalesce(details->>'size', ''), coalesce(error, '') \
               from backups.tasks where $1::text is null or cluster_name = $1 \
              order by id desc limit $2) r"
        ),
        &[&cluster, &tasks],
    )?;
    println!();
    table(
        &format!("recent tasks (newest first, up to {tasks}):"),
        &[
            "TASK", "CLUSTER", "ARCHIVER", "STATUS", "STARTED", "FINISHED", "SIZE", "ERROR",
        ],
        &recent,
    );
    Ok(failed + stuck.len())
}
