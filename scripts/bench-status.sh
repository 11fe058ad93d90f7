#!/usr/bin/env bash
# The monitoring benchmark (issue 7, item 4): archive-status against the
# lab's two archive servers holding BENCH_SEGMENTS (10,000) fabricated
# segments each (plus a timeline switch, backups, one-sided and divergent
# files), cold and warm; prints seconds per run and requests per server.
# Informational: exit 0 whatever the figures, non-zero only when the run
# itself broke or the report was wrong.
#
# Run as root (the lab starts sshd and runs the tools as `postgres`):
#   scripts/bench-status.sh
# Knobs (environment, see tests/src/bin/bench-status.rs):
#   BENCH_SEGMENTS=10000 BENCH_ROUNDS=5 BENCH_TL2=100 BENCH_ONE_SIDED=10
#   BENCH_DIVERGENT=3 KEEP_LAB=1
# Results: besides printing its figures, a completed run appends them to
# docs/benchmarks/YYYY-MM-DD-status.md (UTC date; made when missing): date and
# time, git commit, machine, the knobs used, a table and every line printed.
#   BENCH_RESULTS_DIR=/some/dir   write there instead
#   BENCH_RESULTS_DIR=            (empty) write no file
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-status.sh: must run as root" >&2
    exit 1
fi

bash scripts/install-deps.sh
cargo build --release --workspace --bins
for b in bench-status archive-status archive-remote-cmd; do
    if [ ! -x "target/release/$b" ]; then
        echo "bench-status.sh: target/release/$b was not built" >&2
        exit 1
    fi
done
exec target/release/bench-status "$@"
