#!/bin/sh
# Installs what the end-to-end tests (tests/, the "lab") need on Debian 12:
# OpenSSH server and client (the lab runs its own sshd processes), pbzip2/bzip2
# (Archive 2.0 compatibility), shared-mime-info (MIME sniffing), PostgreSQL 15.
#
# Idempotent: installs only what is missing, runs `apt-get update` at most once.
# Never starts system services: a policy-rc.d denying service starts is in
# place during the install, and an ssh service a fresh install started anyway
# is stopped. Run as root.
set -eu

say() { printf 'install-deps: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root" >&2
    exit 1
fi

PG_BIN=/usr/lib/postgresql/15/bin
POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=

packages=
need() { packages="$packages $*"; }

# --- what is missing -------------------------------------------------------
missing_base=
[ -x /usr/sbin/sshd ] || { say "missing: /usr/sbin/sshd"; missing_base=1; }
command -v ssh-keygen >/dev/null 2>&1 || { say "missing: ssh-keygen"; missing_base=1; }
command -v ssh >/dev/null 2>&1 || { say "missing: ssh"; missing_base=1; }
command -v pbzip2 >/dev/null 2>&1 || { say "missing: pbzip2"; missing_base=1; }
command -v bzip2 >/dev/null 2>&1 || { say "missing: bzip2"; missing_base=1; }
[ -e /usr/share/mime/magic ] || { say "missing: /usr/share/mime/magic"; missing_base=1; }
if [ -n "$missing_base" ]; then
    need openssh-server openssh-client pbzip2 bzip2 shared-mime-info
fi
if [ ! -x "$PG_BIN/postgres" ]; then
    say "missing: $PG_BIN/postgres"
    need postgresql-15
fi
command -v unshare >/dev/null 2>&1 || { say "missing: unshare"; need util-linux; }
command -v mount >/dev/null 2>&1 || { say "missing: mount"; need mount; }

# sshd installed before us may be a service someone relies on: only stop one
# that this run installed.
sshd_was_installed=
[ -x /usr/sbin/sshd ] && sshd_was_installed=1

restore_policy() {
    if [ -n "$POLICY_BACKUP" ]; then
        say "restoring the previous $POLICY"
        mv -f "$POLICY_BACKUP" "$POLICY"
        POLICY_BACKUP=
    elif [ -e "$POLICY" ] && grep -q 'install-deps.sh' "$POLICY" 2>/dev/null; then
        say "removing the temporary $POLICY"
        rm -f "$POLICY"
    fi
}

# --- install -----------------------------------------------------------------
if [ -n "$packages" ]; then
    if [ -e "$POLICY" ]; then
        POLICY_BACKUP=$(mktemp "$POLICY.install-deps.XXXXXX")
        cp -p "$POLICY" "$POLICY_BACKUP"
    fi
    trap restore_policy EXIT
    trap 'exit 130' INT TERM
    say "writing a temporary $POLICY that forbids starting services"
    printf '#!/bin/sh\n# temporary, written by install-deps.sh\nexit 101\n' >"$POLICY"
    chmod 0755 "$POLICY"

    say "apt-get update"
    apt-get update
    say "apt-get install:$packages"
    # shellcheck disable=SC2086 # word splitting of the package list is wanted
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages

    restore_policy
    trap - EXIT INT TERM

    if [ -z "$sshd_was_installed" ] && [ -x /usr/sbin/sshd ]; then
        say "making sure the freshly installed ssh service is not running"
        service ssh stop >/dev/null 2>&1 || true
    fi
else
    say "all packages present, nothing to install"
fi

# --- checks --------------------------------------------------------------------
for f in /usr/sbin/sshd "$PG_BIN/postgres" "$PG_BIN/initdb" "$PG_BIN/pg_ctl" /usr/share/mime/magic; do
    if [ ! -e "$f" ]; then
        say "still missing after install: $f" >&2
        exit 1
    fi
done
for c in ssh ssh-keygen pbzip2 bzip2 unshare; do
    if ! command -v "$c" >/dev/null 2>&1; then
        say "still missing after install: $c" >&2
        exit 1
    fi
done
if ! id postgres >/dev/null 2>&1; then
    say "the postgres account does not exist (it comes with postgresql-15)" >&2
    exit 1
fi

# sshd's privilege separation directory (normally made by the service's start).
if [ ! -d /run/sshd ]; then
    say "mkdir -p /run/sshd"
    mkdir -p /run/sshd
fi
chmod 0755 /run/sshd

say "ok: $(/usr/sbin/sshd -V 2>&1 | head -n 1 || true); $("$PG_BIN/postgres" --version)"
