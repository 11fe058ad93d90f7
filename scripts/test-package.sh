#!/usr/bin/env bash
# Builds the Debian package (scripts/build-deb.sh), installs it with dpkg -i
# on this machine, checks what an operator would use (every program runs
# from /usr/bin, man pages render, bash completions load and complete, the
# systemd units parse, nothing was started or enabled), then removes and
# purges it and checks that nothing is left. Exits non-zero on the first
# failure, and never leaves the package installed. Run as root, on a machine
# where pgarchive is not installed otherwise.
#
# Usage: scripts/test-package.sh [--no-build]   (passed to build-deb.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

PROGRAMS="archive-cmd archive-remote-cmd restore-cmd restore-backup base-backup
wal-sync wal-cleanup backup-queue archive-status pgarchive-check"
UNITS="pgarchive-deliver-owed.service pgarchive-deliver-owed.timer
pgarchive-base-backup.service pgarchive-base-backup.timer
pgarchive-status.service pgarchive-status.timer
pgarchive-wal-sync@.service pgarchive-wal-sync@.timer"

say() { printf 'test-package: %s\n' "$*"; }
fail() { printf 'test-package: FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf 'test-package: ok   %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || fail "run as root (dpkg -i)"
if dpkg-query -W -f='${Status}' pgarchive 2>/dev/null | grep -q 'install ok'; then
    fail "pgarchive is already installed here; this test installs and purges it"
fi
for p in $PROGRAMS; do
    [ ! -e "/usr/bin/$p" ] || fail "/usr/bin/$p exists before the install (from elsewhere?)"
done

build=$(bash scripts/build-deb.sh "$@")
echo "$build"
DEB=$(echo "$build" | sed -n 's/^package: \([^ ]*\) .*/\1/p')
[ -f "$DEB" ] || fail "build-deb.sh named no package"

# Installing runs nothing: the package has no maintainer scripts.
scripts=$(dpkg-deb --ctrl-tarfile "$DEB" | tar -tf - | grep -E 'inst$|rm$' || true)
[ -z "$scripts" ] || fail "maintainer scripts in the package: $scripts"
ok "no maintainer scripts"

cleanup() {
    if dpkg-query -W -f='${Status}' pgarchive 2>/dev/null | grep -qv 'not-installed'; then
        dpkg -P pgarchive >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

dpkg -i "$DEB" >/dev/null || fail "dpkg -i $DEB"
ok "dpkg -i $(basename "$DEB")"

for p in $PROGRAMS; do
    [ "$(command -v "$p")" = "/usr/bin/$p" ] || fail "$p is not /usr/bin/$p on the PATH"
    v=$("/usr/bin/$p" --version) || fail "$p --version exits non-zero"
    case $v in "$p "[0-9]*) ;; *) fail "$p --version says: $v" ;; esac
    "/usr/bin/$p" --help | grep -q '^Usage: ' || fail "$p --help has no Usage line"
    if readelf -S "/usr/bin/$p" | grep -qE '\.symtab|\.debug_(info|line)'; then fail "/usr/bin/$p is not stripped"; fi
    man -w "$p" >/dev/null 2>&1 || fail "no man page for $p"
    [ -f "/usr/share/zsh/vendor-completions/_$p" ] || fail "no zsh completion for $p"
    [ -f "/usr/share/fish/vendor_completions.d/$p.fish" ] || fail "no fish completion for $p"
done
ok "every program runs --version and --help from /usr/bin, stripped, with a man page and completions"

# The man page renders, with the sections generated from --help.
page=$(MANWIDTH=80 man -P cat archive-cmd 2>/dev/null) || fail "man archive-cmd"
echo "$page" | head -5
for section in NAME SYNOPSIS DESCRIPTION OPTIONS DETAILS 'EXIT STATUS'; do
    echo "$page" | grep -q "^$section" || fail "man archive-cmd lacks $section"
done
echo "$page" | grep -q '^ *archive-cmd  *-  *PostgreSQL  *archive_command' || fail "man archive-cmd: NAME line"
echo "$page" | tail -1 | grep -q 'pgarchive 0' || fail "man archive-cmd: no version in the footer"
echo "$page" | grep -q '4  conflict' || fail "man archive-cmd: exit codes lost their layout"
for sub in archive-remote-cmd-serve archive-remote-cmd-deliver-owed archive-status-check backup-queue-migrate; do
    man -w "$sub" >/dev/null 2>&1 || fail "no man page for the subcommand $sub"
done
ok "man archive-cmd renders; subcommand pages exist"

# The bash completion loads and completes.
spec=$(bash -c 'source /usr/share/bash-completion/completions/archive-cmd; complete -p archive-cmd') ||
    fail "bash completion for archive-cmd does not load"
echo "$spec"
words=$(bash -c 'source /usr/share/bash-completion/completions/archive-remote-cmd
    COMP_WORDS=(archive-remote-cmd serve --ro); COMP_CWORD=2; COMP_LINE="archive-remote-cmd serve --ro"
    COMP_POINT=${#COMP_LINE}
    _archive__remote__cmd archive-remote-cmd --ro serve; echo "${COMPREPLY[*]}"')
[ "$words" = "--role" ] || fail "completing 'archive-remote-cmd serve --ro' gives '$words', not --role"
ok "bash completion loads and completes 'archive-remote-cmd serve --ro' to --role"

for u in $UNITS; do
    [ -f "/usr/lib/systemd/system/$u" ] || fail "unit $u not installed"
done
if command -v systemd-analyze >/dev/null; then
    # The templates as an instance, so that %i has a value.
    tmp=$(mktemp -d)
    for u in $UNITS; do cp "/usr/lib/systemd/system/$u" "$tmp/${u/@./@main.}"; done
    complaints=$(systemd-analyze verify --man=no "$tmp"/* 2>&1 || echo "exit status $?")
    rm -rf "$tmp"
    [ -z "$complaints" ] || fail "systemd-analyze verify: $complaints"
    ok "systemd units parse (systemd-analyze verify)"
fi
if [ -d /run/systemd/system ]; then
    for u in $UNITS; do
        case $u in *@*) continue ;; esac
        state=$(systemctl is-enabled "$u" 2>/dev/null || true)
        [ "$state" = disabled ] || fail "$u is '$state' after install, not disabled"
        ! systemctl is-active --quiet "$u" || fail "$u is active after install"
    done
    ok "units installed disabled and inactive"
fi
for e in primary.toml archive-server.toml standby.toml monitor.toml authorized_keys \
         ssh_config.client ssh_config.archive-server pgarchive.cron default-pgarchive pgpass; do
    [ -f "/usr/share/doc/pgarchive/examples/$e" ] || fail "example $e missing"
done
[ -f /usr/share/doc/pgarchive/setup.md ] || fail "setup.md missing"
[ -f /etc/logrotate.d/pgarchive ] || fail "logrotate file missing"
if command -v logrotate >/dev/null; then
    logrotate -d /etc/logrotate.d/pgarchive >/dev/null 2>&1 || fail "logrotate -d rejects /etc/logrotate.d/pgarchive"
fi
ok "examples, setup.md and the logrotate file are installed"

# The installed programs at work: the demo and pgarchive-check's end-to-end
# tests run against /usr/bin (the lab's test binaries from the debug build,
# which scripts/test.sh made; skipped when it is missing).
if [ -x target/debug/demo ]; then
    E2E_BIN_DIR=/usr/bin target/debug/demo >/tmp/test-package-demo.log 2>&1 ||
        { tail -30 /tmp/test-package-demo.log >&2; fail "the demo against /usr/bin"; }
    grep -q "both servers hold the same WAL: yes" /tmp/test-package-demo.log ||
        fail "the demo's servers differ"
    ok "the demo runs on the installed programs"
    E2E_BIN_DIR=/usr/bin cargo test -q -p e2e --test e2e -- --test-threads=2 setup_check ||
        fail "pgarchive-check's e2e tests against /usr/bin"
    ok "pgarchive-check's e2e tests pass on the installed programs"
else
    say "target/debug/demo missing (run scripts/test.sh first): demo and check not run"
fi

files=$(dpkg -L pgarchive | while read -r f; do [ -d "$f" ] || echo "$f"; done)
dpkg -r pgarchive >/dev/null || fail "dpkg -r pgarchive"
left=$(echo "$files" | while read -r f; do [ ! -e "$f" ] || echo "$f"; done)
[ "$left" = /etc/logrotate.d/pgarchive ] || fail "left after dpkg -r: $left"
dpkg -P pgarchive >/dev/null || fail "dpkg -P pgarchive"
[ ! -e /etc/logrotate.d/pgarchive ] || fail "the logrotate conffile survives dpkg -P"
for p in $PROGRAMS; do
    [ ! -e "/usr/bin/$p" ] || fail "/usr/bin/$p left after removal"
done
ok "dpkg -r removes every file but the conffile, dpkg -P that one too"
say "all checks passed"
