#!/bin/sh
# Makes Archive 2.0's program names point at ours, for a drop-in switch:
# every archive_command, restore_command, cron line and runbook that names
# archive_cmd_2, restore_cmd_2, ... keeps working.
#
# Usage: scripts/install-compat-links.sh [--replace] BINDIR
#   BINDIR: where our programs are installed (e.g. /usr/local/bin); the
#   links are made there, relative (archive_cmd_2 -> archive-cmd).
#   An existing link is replaced. An existing file (Archive 2.0's script
#   itself) is left alone and reported (exit 1), unless --replace: then it
#   is renamed NAME.archive2 first (rename it back to roll back).
#
# Argument differences (docs/migrating-from-archive2.md has the details):
#   archive_cmd_2 'H1 H2' DST-DIR %p %f CLUSTER   same arguments
#   restore_cmd_2 'H1 H2' SRC-DIR %f %p [DELAY]   same arguments
#   wal-cleanup_2 BACKUP-DIR WALS-DIR PEER        same arguments
#   base-backup_2                                 no arguments; reads the
#       configuration (server_name, queue_dsn, ...) instead of its variables
#   archive_remote_cmd_2                          NOT argument-compatible:
#       only `archive-remote-cmd serve --role R --dir D` as an ssh forced
#       command; the link keeps the path valid, authorized_keys must change
#   wal-sync                                      same name, same arguments
set -eu

replace=false
if [ "${1:-}" = "--replace" ]; then
    replace=true
    shift
fi
if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 [--replace] BINDIR (where archive-cmd and the others are installed)" >&2
    exit 2
fi
bindir=$1
status=0
for pair in \
    archive_cmd_2:archive-cmd \
    restore_cmd_2:restore-cmd \
    archive_remote_cmd_2:archive-remote-cmd \
    base-backup_2:base-backup \
    wal-cleanup_2:wal-cleanup; do
    old=${pair%%:*}
    new=${pair#*:}
    if [ ! -x "$bindir/$new" ]; then
        echo "$bindir/$new is missing: install our programs into $bindir first" >&2
        exit 2
    fi
    if [ -e "$bindir/$old" ] && [ ! -L "$bindir/$old" ]; then
        if ! $replace; then
            echo "$bindir/$old exists and is not a link (Archive 2.0's own?): left alone; rerun with --replace to rename it $old.archive2" >&2
            status=1
            continue
        fi
        if [ -e "$bindir/$old.archive2" ]; then
            echo "$bindir/$old.archive2 exists already: left $bindir/$old alone" >&2
            status=1
            continue
        fi
        mv "$bindir/$old" "$bindir/$old.archive2"
        echo "renamed $bindir/$old to $old.archive2"
    fi
    ln -sfn "$new" "$bindir/$old"
    echo "$bindir/$old -> $new"
done
exit $status
