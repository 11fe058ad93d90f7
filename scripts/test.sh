#!/usr/bin/env bash
# The test command: installs what the tests need (sshd, pbzip2, the MIME
# database), builds every binary, then runs unit and end-to-end tests.
# Run as root: the lab starts sshd processes and PostgreSQL as `postgres`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --workspace --bins
# Two at a time: each end-to-end test runs two sshd and one or more
# PostgreSQL clusters, and the machine has two cores.
cargo test --workspace -- --test-threads=2
