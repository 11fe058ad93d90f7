-- backup_queue, version 3: incremental base backups (PostgreSQL 17 and
-- later).
--
-- incrementals_per_full: after each full backup, a server takes up to this
-- many incremental backups (pg_basebackup --incremental against its own
-- newest backup) before its next full one. 0, the default: every backup is
-- full, as before. Incrementals need the cluster at PostgreSQL 17 or later
-- with summarize_wal = on; otherwise base-backup takes a full backup and
-- logs why. For example, a full backup each week and an incremental every
-- day in between, on each of the two servers:
--   update backups.hosts set periodicity_days = 2, incrementals_per_full = 3
--    where cluster_name = 'main';
alter table backups.hosts
    add column incrementals_per_full integer not null default 0
        check (incrementals_per_full between 0 and 1000);

comment on column backups.hosts.incrementals_per_full is
    'Incremental backups (PostgreSQL 17+, summarize_wal = on) a server takes after each full one before the next full one; 0: every backup is full';
