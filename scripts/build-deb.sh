#!/usr/bin/env bash
# Builds the Debian package target/debian/pgarchive_<version>_<arch>.deb:
# the nine programs in /usr/bin (stripped: the debug info is dropped, no
# -dbgsym package), their man pages and shell completions generated from the
# clap definitions (PROGRAM --generate-docs DIR), the documentation, one
# example configuration per role, systemd units (installed, not enabled) and
# a logrotate file. Installing it starts nothing and touches no PostgreSQL
# setting: the package has no maintainer scripts.
#
# The tree is staged by hand and packed with `dpkg-deb --build
# --root-owner-group` rather than with cargo-deb: nothing to install beyond
# dpkg-dev (dpkg-shlibdeps computes the shared-library dependencies), and
# every installed path is visible in this file.
#
# Usage: scripts/build-deb.sh [--no-build]   (--no-build: use target/release)
# Prints the package path, its size and each binary's size.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PROGRAMS="archive-cmd archive-remote-cmd restore-cmd restore-backup base-backup
wal-sync wal-cleanup backup-queue archive-status pgarchive-check"
# The workspace packages that hold them (backup-queue is in backup-queue-schema).
CRATES="archive-cmd archive-remote-cmd restore-cmd restore-backup base-backup
wal-sync wal-cleanup backup-queue-schema archive-status pgarchive-check"

die() { echo "build-deb: $*" >&2; exit 1; }
for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install dpkg-dev)"
done

if [ "${1:-}" != "--no-build" ]; then
    # Only the packaged programs: not the lab's demo and benchmarks (tests/)
    # nor the fuzz driver, which --workspace --bins would build too.
    # shellcheck disable=SC2046,SC2086
    CARGO_INCREMENTAL=0 cargo build --release --locked $(printf -- '-p %s ' $CRATES)
fi

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || die "no version in Cargo.toml [workspace.package]"
ARCH=$(dpkg --print-architecture)
OUT=$ROOT/target/debian
STAGE=$OUT/pgarchive_${VERSION}_${ARCH}
DEB=$OUT/pgarchive_${VERSION}_${ARCH}.deb
rm -rf "$STAGE" "$DEB"
umask 022
mkdir -p "$STAGE/DEBIAN" "$STAGE/usr/bin"

# --- programs, stripped ----------------------------------------------------
for p in $PROGRAMS; do
    [ -x "target/release/$p" ] || die "target/release/$p missing: build first"
    install -m 0755 "target/release/$p" "$STAGE/usr/bin/$p"
    strip --strip-all --remove-section=.comment "$STAGE/usr/bin/$p"
done

# --- man pages and completions from the clap definitions -------------------
GEN=$OUT/generated
rm -rf "$GEN"
# The man pages' date: the last commit's, so a rebuild gives the same pages.
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH
for p in $PROGRAMS; do
    "$STAGE/usr/bin/$p" --generate-docs "$GEN" || die "$p --generate-docs failed"
done
MAN=$STAGE/usr/share/man/man1
mkdir -p "$MAN"
for page in "$GEN"/man/*.1; do
    gzip -9n -c "$page" > "$MAN/$(basename "$page").gz"
done
BASH_DIR=$STAGE/usr/share/bash-completion/completions
ZSH_DIR=$STAGE/usr/share/zsh/vendor-completions
FISH_DIR=$STAGE/usr/share/fish/vendor_completions.d
mkdir -p "$BASH_DIR" "$ZSH_DIR" "$FISH_DIR"
install -m 0644 "$GEN"/completions/bash/* "$BASH_DIR/"
install -m 0644 "$GEN"/completions/zsh/* "$ZSH_DIR/"
install -m 0644 "$GEN"/completions/fish/* "$FISH_DIR/"
rm -rf "$GEN"

# --- documentation and examples --------------------------------------------
DOC=$STAGE/usr/share/doc/pgarchive
mkdir -p "$DOC/reference" "$DOC/examples"
install -m 0644 README.md docs/setup.md docs/configuration.md docs/security.md "$DOC/"
install -m 0644 docs/reference/*.md "$DOC/reference/"
install -m 0644 packaging/examples/* "$DOC/examples/"
{
    cat packaging/debian/copyright
    tail -n +3 LICENSE | sed -e 's/^$/./' -e 's/^/ /'
} > "$DOC/copyright"
chmod 0644 "$DOC/copyright"

# --- systemd units (not enabled) and logrotate -----------------------------
UNITS=$STAGE/usr/lib/systemd/system
mkdir -p "$UNITS" "$STAGE/etc/logrotate.d"
install -m 0644 packaging/systemd/* "$UNITS/"
install -m 0644 packaging/logrotate/pgarchive "$STAGE/etc/logrotate.d/pgarchive"

# --- control ---------------------------------------------------------------
install -m 0644 packaging/debian/conffiles "$STAGE/DEBIAN/conffiles"
# dpkg-shlibdeps wants a debian/control to read; the binaries need only
# what it finds (libc6, libgcc-s1 today), the rest is in control.in.
SHLIBS=$(mktemp -d)
trap 'rm -rf "$SHLIBS"' EXIT
mkdir "$SHLIBS/debian"
printf 'Source: pgarchive\n\nPackage: pgarchive\nArchitecture: any\n' > "$SHLIBS/debian/control"
DEPENDS=$(cd "$SHLIBS" && dpkg-shlibdeps -O "$STAGE"/usr/bin/* | sed -n 's/^shlibs:Depends=//p')
[ -n "$DEPENDS" ] || die "dpkg-shlibdeps found no dependencies"
INSTALLED_SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" \
    -e "s/@INSTALLED_SIZE@/$INSTALLED_SIZE/" -e "s/@DEPENDS@/$DEPENDS/" \
    packaging/debian/control.in > "$STAGE/DEBIAN/control"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f ! -path './etc/*' -printf '%P\0' |
    sort -z | xargs -0 md5sum) > "$STAGE/DEBIAN/md5sums"
chmod 0644 "$STAGE/DEBIAN/md5sums"

dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null

echo "package: $DEB ($(du -k "$DEB" | cut -f1) KiB; installed $INSTALLED_SIZE KiB)"
echo "depends: $DEPENDS, openssh-client, shared-mime-info"
for p in $PROGRAMS; do
    printf '  %-20s %6.1f MiB\n' "$p" "$(stat -c %s "$STAGE/usr/bin/$p" | awk '{ print $1 / 1048576 }')"
done
rm -rf "$STAGE"
