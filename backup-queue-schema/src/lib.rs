//! The backup_queue database: its versioned SQL ([`MIGRATIONS`], one file
//! per version in `migrations/NNNN_name.sql`, embedded at build time), the
//! code that applies them ([`migrate`]); the queue client lives
//! in `archive_core::net::queue`.
//!
//! The schema (`backups`): table `hosts` (one row per cluster: where to back
//! it up from, its two archive servers, directories, periodicity, how many
//! backups to keep and for how many days, start time of day, PostgreSQL
//! programs, incremental backups between full ones: migration 3), table
//! `tasks` (one row per backup handed out: running / done / failed),
//! functions `next_task(archiver)`, `stop(task_id, details)`,
//! `set_error(task_id, text)`, `clear(task_id)`, `clear_failures(cluster,
//! archiver)`, view `overview`; and Archive 2.0's interface beside it
//! (`get_next(archiver)`, `stop(backup_id)`, its columns: migration 2). The
//! rules are documented in `migrations/0001_init.sql` above `get_next`
//! (renamed `next_task` by migration 2). An Archive 2.0 queue database is
//! taken over by [`migrate`] with `archive2/*.sql`.

use archive_core::net::queue;

use archive_core::{Error, Result};
use postgres::Client;

/// One versioned migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// NNNN of the file name.
    pub version: i32,
    /// The rest of the file name, without `.sql`.
    pub name: &'static str,
    /// The SQL, run in one transaction.
    pub sql: &'static str,
}

/// Every migration, in order. A new one is a new file plus a line here
/// (a unit test checks that the two agree); an applied file is never edited.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "archive2_retention",
        sql: include_str!("../migrations/0002_archive2_retention.sql"),
    },
    Migration {
        version: 3,
        name: "incrementals",
        sql: include_str!("../migrations/0003_incrementals.sql"),
    },
];

/// Table recording applied migrations (with the md5 of their text).
pub const MIGRATIONS_TABLE: &str = "backups.schema_migrations";

/// Advisory lock key (two int4) serializing concurrent `migrate` runs.
const MIGRATE_LOCK: (i32, i32) = (1_113_879_397, 0);

/// A migration as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Version.
    pub version: i32,
    /// Name.
    pub name: String,
    /// When (text, as the server prints it).
    pub applied_at: String,
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Versions applied now.
    pub applied: Vec<i32>,
    /// An Archive 2.0 queue was taken over: what was copied.
    pub archive2: Option<TakenOver>,
    /// Clusters without a wals_dir (Archive 2.0's rows have none): their
    /// backups are made, but no WAL maintenance runs until it is set.
    pub no_wals_dir: Vec<String>,
}

/// What was copied from an Archive 2.0 queue (its tables stay, untouched,
/// in schema [`ARCHIVE2_SCHEMA`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakenOver {
    /// Clusters.
    pub hosts: i64,
    /// Tasks.
    pub tasks: i64,
    /// Tasks of hosts no longer listed, left in the old table only.
    pub tasks_left: i64,
}

/// Where an Archive 2.0 queue's own tables go when it is taken over.
pub const ARCHIVE2_SCHEMA: &str = "backups_archive2";

/// Moves an Archive 2.0 queue's tables and functions aside.
const ARCHIVE2_SET_ASIDE: &str = include_str!("../archive2/set_aside.sql");
/// Copies its clusters and tasks into ours.
const ARCHIVE2_IMPORT: &str = include_str!("../archive2/import.sql");

/// Applies the migrations not applied yet, all in one transaction,
/// serialized against concurrent runs by an advisory lock. Idempotent.
/// An Archive 2.0 queue database (its `backups.hosts` without our columns)
/// is taken over in the same transaction: its tables move to
/// [`ARCHIVE2_SCHEMA`], the migrations run, its clusters and task history
/// are copied in. Refuses when an applied migration's text differs from
/// the embedded one (someone edited an applied file) or the database is
/// newer than this program.
pub fn migrate(client: &mut Client) -> Result<Migrated> {
    let mut out = Migrated::default();
    let mut tx = client.transaction().map_err(queue::db_error)?;
    tx.execute(
        "select pg_advisory_xact_lock($1, $2)",
        &[&MIGRATE_LOCK.0, &MIGRATE_LOCK.1],
    )
    .map_err(queue::db_error)?;
    let archive2: bool = tx
        .query_one(
            "select to_regclass('backups.hosts') is not null and not exists (
                 select 1 from pg_attribute
                  where attrelid = to_regclass('backups.hosts') and attname = 'archiver1'
                    and not attisdropped)",
            &[],
        )
        .map_err(queue::db_error)?
        .get(0);
    let refused = |what: &str, e: postgres::Error| {
        Error::Refused(format!(
            "{what} failed: {}; nothing was changed",
            queue::db_message(&e)
        ))
    };
    if archive2 {
        tx.batch_execute(ARCHIVE2_SET_ASIDE)
            .map_err(|e| refused("taking over the Archive 2.0 queue", e))?;
    }
    tx.batch_execute(&format!(
        "create schema if not exists backups;
         create table if not exists {MIGRATIONS_TABLE} (
             version    integer primary key,
             name       text not null,
             md5        text not null,
             applied_at timestamptz not null default now())"
    ))
    .map_err(queue::db_error)?;
    for m in MIGRATIONS {
        let row = tx
            .query_opt(
                &format!("select md5 = md5($2) from {MIGRATIONS_TABLE} where version = $1"),
                &[&m.version, &m.sql],
            )
            .map_err(queue::db_error)?;
        match row {
            Some(r) if r.get::<_, bool>(0) => continue,
            Some(_) => {
                return Err(Error::Refused(format!(
                    "migration {:04}_{} was applied with a different text: applied migrations must never change; add a new one",
                    m.version, m.name
                )))
            }
            None => {}
        }
        tx.batch_execute(m.sql)
            .map_err(|e| refused(&format!("migration {:04}_{}", m.version, m.name), e))?;
        tx.execute(
            &format!(
                "insert into {MIGRATIONS_TABLE} (version, name, md5) values ($1, $2, md5($3))"
            ),
            &[&m.version, &m.name, &m.sql],
        )
        .map_err(queue::db_error)?;
        out.applied.push(m.version);
    }
    if archive2 {
        tx.batch_execute(ARCHIVE2_IMPORT)
            .map_err(|e| refused("copying the Archive 2.0 queue's rows", e))?;
        let count = |tx: &mut postgres::Transaction, sql: &str| -> Result<i64> {
            Ok(tx.query_one(sql, &[]).map_err(queue::db_error)?.get(0))
        };
        let hosts = count(&mut tx, "select count(*) from backups.hosts")?;
        let tasks = count(&mut tx, "select count(*) from backups.tasks")?;
        let old = count(&mut tx, "select count(*) from backups_archive2.tasks")?;
        out.archive2 = Some(TakenOver {
            hosts,
            tasks,
            tasks_left: old - tasks,
        });
    }
    let newest: Option<i32> = tx
        .query_one(&format!("select max(version) from {MIGRATIONS_TABLE}"), &[])
        .map_err(queue::db_error)?
        .get(0);
    let known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
    if newest.unwrap_or(0) > known {
        return Err(Error::Refused(format!(
            "the database has schema version {} but this program knows only up to {known}: upgrade it",
            newest.unwrap_or(0)
        )));
    }
    out.no_wals_dir = tx
        .query(
            "select cluster_name from backups.hosts where wals_dir is null order by 1",
            &[],
        )
        .map_err(queue::db_error)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.commit().map_err(queue::db_error)?;
    Ok(out)
}

/// Migrations recorded in the database (empty when none ever ran).
pub fn applied(client: &mut Client) -> Result<Vec<Applied>> {
    let exists: bool = client
        .query_one("select to_regclass($1) is not null", &[&MIGRATIONS_TABLE])
        .map_err(queue::db_error)?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!(
                "select version, name, to_char(applied_at, 'YYYY-MM-DD HH24:MI:SS TZ') from {MIGRATIONS_TABLE} order by version"
            ),
            &[],
        )
        .map_err(queue::db_error)?;
    Ok(rows
        .iter()
        .map(|r| Applied {
            version: r.get(0),
            name: r.get(1),
            applied_at: r.get(2),
        })
        .collect())
}

/// All migrations as one script (`backup-queue sql`), recording themselves
/// in the migrations table like `migrate` does, for review or for applying
/// with psql.
pub fn script() -> String {
    let mut s = format!(
        "-- backup_queue schema, versions 1..{}\n\\set ON_ERROR_STOP on\nbegin;\ncreate schema if not exists backups;\n\
         create table if not exists {MIGRATIONS_TABLE} (version integer primary key, name text not null, md5 text not null, applied_at timestamptz not null default now());\ncommit;\n",
        MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
    );
    for m in MIGRATIONS {
        s.push_str(&format!(
            "\n-- {:04}_{}.sql\nbegin;\n{}\ninsert into {MIGRATIONS_TABLE} (version, name, md5) values ({}, '{}', md5($migration${}$migration$));\ncommit;\n",
            m.version, m.name, m.sql, m.version, m.name, m.sql
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_files_and_the_list_agree() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, listed);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version,
                i as i32 + 1,
                "versions are 1, 2, 3, … without gaps"
            );
            let on_disk = std::fs::read_to_string(dir.join(&listed[i])).unwrap();
            assert_eq!(on_disk, m.sql);
            assert!(!m.sql.contains("$migration$"), "the script's quoting");
        }
    }
}
