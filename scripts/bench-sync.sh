#!/usr/bin/env bash
# The wal-sync benchmark (issue 5, item 4): on the lab's two sshd archive
# servers, BENCH_FILES (500) archive files only on arch1 and as many only on
# arch2, synced by one wal-sync run, against `rsync -a --ignore-existing`
# over the same ssh (arch1->arch2, then arch2->arch1), each on a fresh copy
# of the same corpus (and rsync both directions at once, informationally).
# Prints files/s, MB/s and the CPU time of every process involved.
# Informational: exits 0 whether wal-sync beats rsync or not, non-zero only
# when the run itself broke.
#
# Run as root: installs what the lab needs (scripts/install-deps.sh) and
# rsync if missing, builds every binary in release mode, runs the benchmark:
#   scripts/bench-sync.sh
# Knobs (environment, see tests/src/bin/bench-sync.rs):
#   BENCH_FILES=500  BENCH_PARALLEL=4,2,8 (wal-sync --set parallel=N)  BENCH_ROUNDS=2
#   BENCH_SCENARIOS=wal-sync,rsync,rsync-concurrent  BENCH_SEED=1
#   BENCH_CORPUS_DIR=/var/tmp/bench-sync-corpus   keep and reuse the corpus
#   BENCH_SERVER_CONFIG='io_timeout = 30'         archive-remote-cmd/wal-sync settings
#   BENCH_QUIET_WAIT=120 (wait for an idle machine before each scenario)
#   BENCH_VERIFY=0 (skip the byte-for-byte check of both sides)  KEEP_LAB=1
# The figures are only meaningful on an otherwise idle machine: each
# scenario reports the CPU time processes outside the lab used meanwhile.
# Results: besides printing its figures, a completed run appends them to
# docs/benchmarks/YYYY-MM-DD-sync.md (UTC date; made when missing): date and
# time, git commit, machine, the knobs used, a table and every line printed.
#   BENCH_RESULTS_DIR=/some/dir   write there instead
#   BENCH_RESULTS_DIR=            (empty) write no file
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bench-sync.sh: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root" >&2
    exit 1
fi

bash scripts/install-deps.sh

if ! command -v rsync >/dev/null 2>&1; then
    # rsync ships a daemon service: forbid service starts during the install,
    # as install-deps.sh does.
    POLICY=/usr/sbin/policy-rc.d
    backup=
    if [ -e "$POLICY" ]; then
        backup=$(mktemp "$POLICY.bench-sync.XXXXXX")
        cp -p "$POLICY" "$backup"
    fi
    restore_policy() {
        if [ -n "$backup" ]; then
            mv -f "$backup" "$POLICY"
            backup=
        else
            rm -f "$POLICY"
        fi
    }
    trap restore_policy EXIT
    printf '#!/bin/sh\n# temporary, written by bench-sync.sh\nexit 101\n' >"$POLICY"
    chmod 0755 "$POLICY"
    say "apt-get install rsync"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rsync; then
        say "apt-get update, then install rsync again"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rsync
    fi
    restore_policy
    trap - EXIT
fi
command -v rsync >/dev/null 2>&1 || { say "rsync still missing" >&2; exit 1; }

cargo build --release --workspace --bins
for b in bench-sync wal-sync archive-remote-cmd; do
    if [ ! -x "target/release/$b" ]; then
        say "target/release/$b was not built" >&2
        exit 1
    fi
done
exec target/release/bench-sync "$@"
