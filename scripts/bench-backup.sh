#!/usr/bin/env bash
# base-backup against plain pg_basebackup of the same cluster, same
# compression, same run (issue 4, item 4). Run as root; see the doc comment
# of tests/src/bin/bench-backup.rs for the knobs (BENCH_SCALE, BENCH_ROUNDS,
# BENCH_COMPRESS, KEEP_LAB).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --workspace --bins
exec target/release/bench-backup "$@"
