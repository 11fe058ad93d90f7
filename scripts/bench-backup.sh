#!/usr/bin/env bash
# base-backup against plain pg_basebackup of the same cluster, same
# compression, same run (issue 4, item 4). Run as root; see the doc comment
# of tests/src/bin/bench-backup.rs for the knobs (BENCH_SCALE, BENCH_ROUNDS,
# BENCH_COMPRESS, KEEP_LAB).
# Results: besides printing its figures, a completed run appends them to
# docs/benchmarks/YYYY-MM-DD-backup.md (UTC date; made when missing): date and
# time, git commit, machine, the knobs used, a table and every line printed.
#   BENCH_RESULTS_DIR=/some/dir   write there instead
#   BENCH_RESULTS_DIR=            (empty) write no file
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --workspace --bins
exec target/release/bench-backup "$@"
