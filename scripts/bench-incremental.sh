#!/usr/bin/env bash
# An incremental base backup against a full one of the same cluster, same
# run (issue 23): pg_basebackup's time, the whole job's, bytes sent and
# stored. Needs PostgreSQL 17 or later (E2E_PG_VERSION, 18 unless set; see
# scripts/install-pg.sh). Run as root; see the doc comment of
# tests/src/bin/bench-incremental.rs for the knobs (BENCH_SCALE,
# BENCH_ROUNDS, BENCH_CHANGE_PERMILLE, KEEP_LAB).
# Results: besides printing its figures, a completed run appends them to
# docs/benchmarks/YYYY-MM-DD-incremental.md (UTC date; made when missing).
#   BENCH_RESULTS_DIR=/some/dir   write there instead
#   BENCH_RESULTS_DIR=            (empty) write no file
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export E2E_PG_VERSION="${E2E_PG_VERSION:-18}"
cargo build --release --workspace --bins
exec target/release/bench-incremental "$@"
