#!/usr/bin/env bash
# The archiving benchmark (issue 2, item 7): archives N real 16 MiB pgbench
# segments through archive-cmd exactly as PostgreSQL does (one process per
# segment, .ready files present, .ready renamed to .done after each success)
# onto the lab's two sshd archive servers, in three scenarios (serial,
# backlog, backlog with zstd on the primary), and prints segments/s, MB/s,
# bytes stored per server against bzip2 -1, peak RSS of archive-cmd and
# archive-remote-cmd and CPU-seconds per GiB, each next to the issue's target.
# Informational: it exits 0 whether targets are met or not, non-zero only
# when the run itself broke.
#
# Run as root (the lab starts sshd and runs PostgreSQL as `postgres`):
#   scripts/bench-archive.sh
# Knobs (environment, see tests/src/bin/bench-archive.rs):
#   BENCH_SEGMENTS=64  BENCH_SCALE=20  BENCH_SCENARIOS=serial,backlog,backlog-primary-zstd
#   BENCH_CORPUS_DIR=/var/tmp/bench-corpus   keep and reuse the corpus between runs
#   BENCH_CLIENT_CONFIG='parallel = 2; lookahead_max = 16'   archive-cmd settings
#   BENCH_SERVER_CONFIG='compress_level = 3'                 archive-remote-cmd settings
#   BENCH_SSH_CONFIG='Ciphers aes128-gcm@openssh.com'        ssh client options
#   BENCH_VERIFY=0 (skip the byte-for-byte check of both copies)  KEEP_LAB=1
#   BENCH_REFERENCE=0 (skip the yardstick: the issue's shell pipeline of this
#   design, run before and after the scenarios on the same lab and corpus; its
#   speed here scales the issue's targets to this machine)
# The figures are only meaningful on an otherwise idle machine: the output
# warns when other processes used CPU during a scenario.
# Results: besides printing its figures, a completed run appends them to
# docs/benchmarks/YYYY-MM-DD-archive.md (UTC date; made when missing): date and
# time, git commit, machine, the knobs used, a table and every line printed.
#   BENCH_RESULTS_DIR=/some/dir   write there instead
#   BENCH_RESULTS_DIR=            (empty) write no file
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bench-archive.sh: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root" >&2
    exit 1
fi

bash scripts/install-deps.sh

# archive-cmd's peak RSS is read with GNU time (`/usr/bin/time -f %M`), which
# Debian ships in the `time` package (without it the benchmark falls back to
# sampling /proc, which can miss a short-lived peak); the reference pipeline
# runs the zstd command (package `zstd`).
need=()
[ -x /usr/bin/time ] || need+=(time)
[ -x /usr/bin/zstd ] || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} (archive-cmd's peak RSS, the reference pipeline)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
    fi
fi

cargo build --release --workspace --bins

# The lab runs the binaries found next to the running executable
# (e2e::bin_dir), so target/release/bench-archive uses the release
# archive-cmd and archive-remote-cmd just built. Check that they are there.
for b in bench-archive archive-cmd archive-remote-cmd; do
    if [ ! -x "target/release/$b" ]; then
        say "target/release/$b was not built" >&2
        exit 1
    fi
done
say "release binaries: $(cd target/release && pwd)"

exec target/release/bench-archive "$@"
