#!/usr/bin/env bash
# restore-backup against pg_basebackup + tar -x of the same data, and
# pgBackRest's restore where it can run (issue 22). Run as root; see the doc
# comment of tests/src/bin/bench-restore-backup.rs for the knobs
# (BENCH_SCALE, BENCH_ROUNDS, BENCH_COMPRESS, KEEP_LAB).
# Results: besides printing its figures, a completed run appends them to
# docs/benchmarks/YYYY-MM-DD-restore-backup.md (UTC date; made when missing).
#   BENCH_RESULTS_DIR=/some/dir   write there instead
#   BENCH_RESULTS_DIR=            (empty) write no file
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# pgBackRest for the comparison; the bench says so when it is missing.
command -v pgbackrest >/dev/null || apt-get install -y pgbackrest || true
cargo build --release --workspace --bins
exec target/release/bench-restore-backup "$@"
