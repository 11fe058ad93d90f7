#!/usr/bin/env bash
# The quickstart demo: two local archive servers, a PostgreSQL primary
# archiving under pgbench, and what each server holds. Run as root on a
# fresh Debian machine; `--keep` leaves it running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --workspace --bins
exec target/debug/demo "$@"
