-- Taking over an Archive 2.0 queue database, step 2 (after the
-- migrations): its clusters and task history, copied from
-- backups_archive2 into ours. Same transaction as set_aside.sql.
--
-- hosts: the same ids and columns; archiver_name gives archiver1/archiver2;
-- the start time of day stays 03:07, in the database's time zone (where
-- Archive 2.0's get_next computed it); wals_dir is not known (set it).
insert into backups.hosts (id, cluster_name, host, port, archiver1, archiver2, directory,
                           periodicity_days, keep_backups_cnt, time_zone, bareos_on,
                           last_archiver, last_backup_id, last_backup_start_txtime, comment)
select h.id, h.cluster_name, h.host, coalesce(h.port, 5432), h.archiver_name[1], h.archiver_name[2],
       h.directory, h.periodicity_days, h.keep_backups_cnt::integer, current_setting('TimeZone'),
       h.bareos_on, h.last_archiver, h.last_backup_id, h.last_backup_start_txtime,
       'taken over from Archive 2.0'
  from backups_archive2.hosts h
 order by h.id;
select setval(pg_get_serial_sequence('backups.hosts', 'id'), coalesce(max(id), 0) + 1, false)
  from backups.hosts;

-- tasks: the same ids. is_failed → failed (blocking, as it did); an end
-- time → done; the cluster's last task still open → running (the next
-- get_next on its archiver marks it failed, or its base-backup stops it);
-- any other open task → failed and cleared (Archive 2.0 ignored them).
-- Tasks of hosts no longer in backups.hosts stay in backups_archive2 only.
insert into backups.tasks (id, cluster_name, archiver, status, created_at, started_at,
                           finished_at, error, cleared_at, host)
overriding system value
select t.backup_id, h.cluster_name, t.archiver_name, s.status,
       coalesce(t.start_txtime, 'epoch'), coalesce(t.start_txtime, 'epoch'),
       case when s.status <> 'running'
            then greatest(coalesce(t.end_txtime, t.start_txtime, 'epoch'), coalesce(t.start_txtime, 'epoch'))
       end,
       case when t.is_failed then 'failed under Archive 2.0'
            when s.status = 'failed' then 'left unfinished under Archive 2.0'
       end,
       case when s.status = 'failed' and not t.is_failed then now() end,
       t.host
  from backups_archive2.tasks t
  join backups_archive2.hosts h on h.host = t.host
 cross join lateral (select case
        when t.is_failed then 'failed'
        when t.end_txtime is not null then 'done'
        when t.backup_id = h.last_backup_id then 'running'
        else 'failed' end as status) s
 order by t.backup_id;
-- New ids follow every old one, copied or not.
select setval(pg_get_serial_sequence('backups.tasks', 'id'),
              greatest((select max(id) from backups.tasks),
                       (select max(backup_id) from backups_archive2.tasks), 0) + 1, false);
