-- backup_queue, version 1: the schedule of base backups on the two archive
-- servers (Archive 2.0's backup_queue.sql, with its semantics made explicit).
--
-- Users add clusters with plain inserts into backups.hosts; base-backup on
-- each archive server calls backups.get_next(<its server_name>) from cron and
-- backups.stop(<task id>) when the backup, wal-cleanup and wal-sync are done.

create schema if not exists backups;

-- One row per cluster to back up.
create table backups.hosts (
    -- Unique cluster name (as in archive_command's CLUSTER-NAME).
    cluster_name     text primary key
                     check (cluster_name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    -- Where pg_basebackup connects: the cluster's standby (or primary).
    host             text not null check (host <> ''),
    port             integer not null default 5432 check (port between 1 and 65535),
    -- Role pg_basebackup logs in as (needs REPLICATION; password in the
    -- archive servers' ~/.pgpass).
    pg_user          text not null default 'postgres' check (pg_user <> ''),
    -- The two archive servers, as their base-backup's server_name. The first
    -- backup of a cluster is made on archiver1.
    archiver1        text not null check (archiver1 <> ''),
    archiver2        text not null check (archiver2 <> ''),
    -- Backup directory on the archive servers (same path on both; under
    -- their archive_roots): <directory>/data.master.<N>.
    directory        text not null check (directory ~ '^/'),
    -- The cluster's WAL directory on the archive servers (archive_command's
    -- DST-DIR), for wal-cleanup and wal-sync.
    wals_dir         text not null check (wals_dir ~ '^/'),
    -- Days between two backups on the same server; backups alternate, so
    -- the cluster gets one about every periodicity_days / 2 days.
    periodicity_days integer not null default 4 check (periodicity_days >= 1),
    -- Backups kept on each server.
    keep_backups_cnt integer not null default 2 check (keep_backups_cnt >= 1),
    -- No backup starts before this local time of day (in time_zone).
    start_time       time not null default '03:07',
    time_zone        text not null default 'UTC'
                     check ((now() at time zone time_zone) is not null),
    enabled          boolean not null default true,
    comment          text,
    created_at       timestamptz not null default now(),
    check (archiver1 <> archiver2)
);

comment on table backups.hosts is
    'Clusters to back up. Add one with: insert into backups.hosts (cluster_name, host, port, archiver1, archiver2, directory, wals_dir, periodicity_days, keep_backups_cnt) values (...)';

-- One row per backup handed out by get_next.
create table backups.tasks (
    id           bigint generated always as identity primary key,
    cluster_name text not null references backups.hosts (cluster_name)
                 on update cascade on delete cascade,
    archiver     text not null,
    -- running: handed out, not stopped yet; done: stop() was called;
    -- failed: not stopped before this archiver's next get_next (or stuck
    -- for a whole period).
    status       text not null default 'running'
                 check (status in ('running', 'done', 'failed')),
    -- Wall clock of the queue when get_next handed it out.
    created_at   timestamptz not null default now(),
    -- The schedule's clock at hand-out (get_next's p_now; equal to
    -- created_at unless a test drives the clock). The schedule counts from here.
    started_at   timestamptz not null,
    finished_at  timestamptz,
    -- What went wrong (base-backup's own report via set_error, and how the
    -- failure was detected).
    error        text,
    -- A failed task blocks its archiver for its cluster until cleared.
    cleared_at   timestamptz,
    -- What base-backup reported with stop() (size, START WAL, durations).
    details      jsonb,
    check ((status = 'running') = (finished_at is null)),
    check (cleared_at is null or status = 'failed')
);

-- Never two backups of one cluster at once (also the safety net against a
-- caller whose snapshot predates another caller's task).
create unique index tasks_one_running_per_cluster
    on backups.tasks (cluster_name) where status = 'running';
create index tasks_by_cluster_archiver
    on backups.tasks (cluster_name, archiver, started_at desc);
create index tasks_failed_uncleared
    on backups.tasks (cluster_name, archiver) where status = 'failed' and cleared_at is null;

-- The task to run now on archive server p_archiver, or no row.
--
-- Rules, per enabled cluster that has p_archiver as one of its archivers
-- (X = p_archiver, Y = the other one; dates are local dates in time_zone):
--  * every task X left running is dead (base-backup holds a single-instance
--    lock while it runs and asks get_next only when it has none): it is
--    marked failed, for every cluster, first;
--  * a task running for periodicity_days or longer is stuck: marked failed;
--  * a cluster with a running task is skipped (never two backups at once);
--  * X with an uncleared failed task of the cluster is blocked;
--  * no done backup of the cluster yet: it goes to archiver1 (to archiver2
--    only when archiver1 is blocked);
--  * otherwise X is due on date(X's last done backup) + periodicity_days
--    (at once if it has none), and, when the cluster's last done backup was
--    made by Y and Y is not blocked, not before date(that backup) +
--    periodicity_days / 2 (rounded down): backups alternate, each server
--    every periodicity_days days, the second offset by half a period. When
--    Y is blocked, or Y let its turn pass, X goes on at its full period;
--  * and never before start_time local time of day.
-- Among several due clusters the most overdue is handed out (ties by name).
-- Callers are serialized by a transaction-level advisory lock, so two
-- archivers calling at the same instant never get the same task.
--
-- p_now drives the clock (tests); leave it out in production.
create function backups.get_next(p_archiver text, p_now timestamptz default now())
returns table (
    task_id          bigint,
    cluster_name     text,
    host             text,
    port             integer,
    pg_user          text,
    directory        text,
    wals_dir         text,
    keep_backups_cnt integer,
    peer             text
)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    h              backups.hosts;
    v_other        text;
    v_today        date;
    v_last         backups.tasks;
    v_mine_done    timestamptz;
    v_other_blocked boolean;
    v_due          date;
    v_best         backups.hosts;
    v_best_due     date;
    v_task         bigint;
    r              record;
begin
    if p_archiver is null or p_archiver = '' then
        raise exception 'backups.get_next: the archiver name is empty';
    end if;
    if p_now is null then
        raise exception 'backups.get_next: p_now is null';
    end if;
    -- One decision at a time.
    perform pg_advisory_xact_lock(1113879397, 1);

    for r in
        update backups.tasks t
           set status = 'failed',
               finished_at = greatest(p_now, t.started_at),
               error = format('not stopped before the next get_next on %s', p_archiver)
                       || coalesce(': ' || t.error, '')
         where t.archiver = p_archiver and t.status = 'running'
        returning t.id, t.cluster_name
    loop
        raise warning 'backups.get_next: task % (%) on % was not stopped: marked failed',
            r.id, r.cluster_name, p_archiver;
    end loop;

    for h in
        select * from backups.hosts bh
         where bh.enabled and p_archiver in (bh.archiver1, bh.archiver2)
         order by bh.cluster_name
    loop
        v_other := case when p_archiver = h.archiver1 then h.archiver2 else h.archiver1 end;
        v_today := (p_now at time zone h.time_zone)::date;

        update backups.tasks t
           set status = 'failed',
               finished_at = greatest(p_now, t.started_at),
               error = format('stuck: running since %s, a whole period (%s days); marked failed by get_next on %s',
                              t.started_at, h.periodicity_days, p_archiver)
                       || coalesce(': ' || t.error, '')
         where t.cluster_name = h.cluster_name and t.status = 'running'
           and t.started_at <= p_now - h.periodicity_days * interval '1 day';

        continue when exists (
            select 1 from backups.tasks t
             where t.cluster_name = h.cluster_name and t.status = 'running');
        continue when exists (
            select 1 from backups.tasks t
             where t.cluster_name = h.cluster_name and t.archiver = p_archiver
               and t.status = 'failed' and t.cleared_at is null);
        continue when (p_now at time zone h.time_zone)::time < h.start_time;

        v_other_blocked := exists (
            select 1 from backups.tasks t
             where t.cluster_name = h.cluster_name and t.archiver = v_other
               and t.status = 'failed' and t.cleared_at is null);

        select * into v_last from backups.tasks t
         where t.cluster_name = h.cluster_name and t.status = 'done'
         order by t.started_at desc, t.id desc limit 1;

        if v_last.id is null then
            continue when p_archiver <> h.archiver1 and not v_other_blocked;
            v_due := v_today;
        else
            select max(t.started_at) into v_mine_done from backups.tasks t
             where t.cluster_name = h.cluster_name and t.archiver = p_archiver
               and t.status = 'done';
            v_due := greatest(
                (v_mine_done at time zone h.time_zone)::date + h.periodicity_days,
                case when v_last.archiver <> p_archiver and not v_other_blocked
                     then (v_last.started_at at time zone h.time_zone)::date
                          + h.periodicity_days / 2
                end);
            v_due := coalesce(v_due, v_today);
        end if;
        continue when v_due > v_today;

        if v_best.cluster_name is null or v_due < v_best_due then
            v_best := h;
            v_best_due := v_due;
        end if;
    end loop;

    if v_best.cluster_name is null then
        return;
    end if;

    insert into backups.tasks (cluster_name, archiver, started_at)
    values (v_best.cluster_name, p_archiver, p_now)
    returning id into v_task;

    return query select
        v_task,
        v_best.cluster_name,
        v_best.host,
        v_best.port,
        v_best.pg_user,
        v_best.directory,
        v_best.wals_dir,
        v_best.keep_backups_cnt,
        case when p_archiver = v_best.archiver1 then v_best.archiver2 else v_best.archiver1 end;
end;
$$;

-- Marks a running task done (its backup, wal-cleanup and wal-sync
-- succeeded). True when it was running; false when it was already done.
-- A failed task cannot be stopped: its backup does not count.
create function backups.stop(p_task_id bigint, p_details jsonb default null)
returns boolean
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_status text;
    v_error  text;
begin
    update backups.tasks t
       set status = 'done', finished_at = greatest(now(), t.started_at),
           details = coalesce(p_details, t.details)
     where t.id = p_task_id and t.status = 'running';
    if found then
        return true;
    end if;
    select t.status, t.error into v_status, v_error from backups.tasks t where t.id = p_task_id;
    if not found then
        raise exception 'backups.stop: there is no task %', p_task_id;
    end if;
    if v_status = 'failed' then
        raise exception 'backups.stop: task % was already marked failed (%); it does not count as a backup',
            p_task_id, v_error
            using hint = format('clear it with: select backups.clear(%s);', p_task_id);
    end if;
    return false;
end;
$$;

-- Records what went wrong in a running task (base-backup calls it before it
-- exits on a failure; the task stays running until get_next marks it failed).
create function backups.set_error(p_task_id bigint, p_error text)
returns boolean
language sql volatile
set search_path = pg_catalog, pg_temp
as $$
    update backups.tasks t set error = left(p_error, 8000)
     where t.id = p_task_id and t.status = 'running'
    returning true;
$$;

-- Clears a failed task: its archiver backs the cluster up again (once due).
-- True when it was a failed, uncleared task.
create function backups.clear(p_task_id bigint)
returns boolean
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    update backups.tasks t set cleared_at = now()
     where t.id = p_task_id and t.status = 'failed' and t.cleared_at is null;
    if found then
        return true;
    end if;
    if not exists (select 1 from backups.tasks t where t.id = p_task_id) then
        raise exception 'backups.clear: there is no task %', p_task_id;
    end if;
    return false;
end;
$$;

-- Clears every failed task of a cluster (on one archiver, or on both).
-- Returns how many were cleared.
create function backups.clear_failures(p_cluster text, p_archiver text default null)
returns integer
language sql volatile
set search_path = pg_catalog, pg_temp
as $$
    with c as (
        update backups.tasks t set cleared_at = now()
         where t.cluster_name = p_cluster
           and (p_archiver is null or t.archiver = p_archiver)
           and t.status = 'failed' and t.cleared_at is null
        returning 1)
    select count(*)::integer from c;
$$;

-- One row per cluster and archiver: what monitoring looks at.
create view backups.overview as
select
    h.cluster_name,
    a.archiver,
    h.enabled,
    d.id          as last_done_id,
    d.started_at  as last_done_started_at,
    d.finished_at as last_done_finished_at,
    r.id          as running_id,
    r.started_at  as running_since,
    f.id          as failed_id,
    f.started_at  as failed_started_at,
    f.error       as failed_error
from backups.hosts h
cross join lateral (values (h.archiver1, 1), (h.archiver2, 2)) a(archiver, ord)
left join lateral (
    select t.id, t.started_at, t.finished_at from backups.tasks t
     where t.cluster_name = h.cluster_name and t.archiver = a.archiver and t.status = 'done'
     order by t.started_at desc, t.id desc limit 1) d on true
left join lateral (
    select t.id, t.started_at from backups.tasks t
     where t.cluster_name = h.cluster_name and t.archiver = a.archiver and t.status = 'running'
     order by t.id desc limit 1) r on true
left join lateral (
    select t.id, t.started_at, t.error from backups.tasks t
     where t.cluster_name = h.cluster_name and t.archiver = a.archiver
       and t.status = 'failed' and t.cleared_at is null
     order by t.id desc limit 1) f on true
order by h.cluster_name, a.ord;
