#!/usr/bin/env bash
# Fuzzing: runs every target of fuzz/ (property-based, proptest, stable
# Rust) for SECONDS each (default 60): its corpus first, then generated
# cases until the time is up.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: archive-fuzz list
#
# Exits non-zero when a target fails. A failing input is shrunk and written
# to fuzz/corpus/<target>/crash-<hash> (a hang: hang-<hash>), so it stays a
# regression seed: `cargo test -p archive-fuzz` replays the whole corpus.
# Replay one input:  target/fuzz/archive-fuzz replay TARGET FILE
# Same cases again:  FUZZ_SEED=<seed from the report> scripts/fuzz.sh ...
# The server's own log lines (stderr) go to a file named at the start.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
[ $# -gt 0 ] && shift
case "$secs" in
    ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
cargo build --profile fuzz -p archive-fuzz
bin=target/fuzz/archive-fuzz
log="${FUZZ_LOG:-target/fuzz/fuzz-$(date +%Y%m%d-%H%M%S).log}"
seed_args=()
[ -n "${FUZZ_SEED:-}" ] && seed_args=(--seed "$FUZZ_SEED")
echo "fuzz: $secs s per target; stderr of the code under test: $log"
status=0
"$bin" run --seconds "$secs" "${seed_args[@]}" "$@" 2>"$log" || status=$?
if [ "$status" -ne 0 ]; then
    echo "fuzz: FAILED (exit $status): the failing inputs are named above, under fuzz/corpus/<target>/" >&2
    echo "fuzz: replay one with: $bin replay TARGET FILE" >&2
fi
exit "$status"
