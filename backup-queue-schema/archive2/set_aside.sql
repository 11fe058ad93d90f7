-- Taking over an Archive 2.0 queue database, step 1 (before migration 1):
-- its tables and functions move, untouched, to schema backups_archive2, so
-- that ours can be created in backups. Run by `backup-queue migrate` in the
-- same transaction as the migrations and import.sql.
create schema backups_archive2;
comment on schema backups_archive2 is
    'Archive 2.0''s backup queue as it was when backup-queue migrate took the database over (its rows were copied into backups.*); kept for rollback';
alter table backups.hosts set schema backups_archive2;
alter table backups.tasks set schema backups_archive2;
do $$
begin
    if to_regprocedure('backups.get_next(text)') is not null then
        alter function backups.get_next(text) set schema backups_archive2;
    end if;
    if to_regprocedure('backups.stop(integer)') is not null then
        alter function backups.stop(integer) set schema backups_archive2;
    end if;
end;
$$;
