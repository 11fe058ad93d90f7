#!/usr/bin/env bash
# The restore benchmark (issue 3, item 8): archives N real 16 MiB pgbench
# segments to the lab's two sshd archive servers through archive-cmd, then
# restores them in order, one restore-cmd process at a time, exactly as
# PostgreSQL calls restore_command (as postgres, in the data directory,
# %p = pg_wal/RECOVERYXLOG), with prefetch off and on (for each queue size),
# and prints segments/s, MB/s, per-call latency (median, p99; the calls
# served from the prefetch buffer separately) and peak RSS of restore-cmd
# and of its prefetch worker, each next to the issue's target.
# Informational: it exits 0 whether targets are met or not, non-zero only
# when the run itself broke (a call failed, a restored file differs).
#
# Run as root (the lab starts sshd and runs PostgreSQL as `postgres`):
#   scripts/bench-restore.sh
# Knobs (environment, see tests/src/bin/bench-restore.rs):
#   BENCH_SEGMENTS=64  BENCH_SCALE=20  BENCH_QUEUES=256MiB,1GiB
#   BENCH_CORPUS_DIR=/var/tmp/bench-corpus   keep and reuse the corpus between runs
#   BENCH_RESTORE_CONFIG='restore_parallel = 4'   restore-cmd settings
#   BENCH_SSH_CONFIG='Ciphers aes128-gcm@openssh.com'   ssh client options (what-if)
#   BENCH_MEMORY=fresh,steady   memory regimes; also `full` (a memory cgroup of
#     BENCH_MEMORY_LIMIT=768MiB): see the README's Benchmarks section
#   BENCH_TRACE=1   every call's latency, in order
#   KEEP_LAB=1
# The figures are only meaningful on an otherwise idle machine.
# Results: besides printing its figures, a completed run appends them to
# docs/benchmarks/YYYY-MM-DD-restore.md (UTC date; made when missing): date and
# time, git commit, machine, the knobs used, a table and every line printed.
#   BENCH_RESULTS_DIR=/some/dir   write there instead
#   BENCH_RESULTS_DIR=            (empty) write no file
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bench-restore.sh: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root" >&2
    exit 1
fi

bash scripts/install-deps.sh

cargo build --release --workspace --bins

# The lab runs the binaries found next to the running executable
# (e2e::bin_dir), so target/release/bench-restore measures the release
# restore-cmd, archive-cmd and archive-remote-cmd just built.
for b in bench-restore restore-cmd archive-cmd archive-remote-cmd; do
    if [ ! -x "target/release/$b" ]; then
        say "target/release/$b was not built" >&2
        exit 1
    fi
done
say "release binaries: $(cd target/release && pwd)"

exec target/release/bench-restore "$@"
