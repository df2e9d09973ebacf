#!/bin/bash
# Makes a Debian 12 root filesystem with systemd as init at DEST, as root. debootstrap runs
# once per machine; its result is cached as a tarball in $HUTCH_TEST_CACHE (default
# /var/cache/hutch-tests), built aside and renamed into place, so later calls (concurrent
# ones too, serialised by flock) only unpack it. Refuses a non-empty DEST. The cache's name
# carries a revision, bumped with the package list so that an older cache is not reused; the
# image builder (`hutch image build debian/12 --debootstrap-cache`) reads the same file.
set -euo pipefail
dest=${1:?usage: debian.sh DEST}
die() { echo "debian.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (file owners and device nodes)"
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
    die "$dest is not empty"
fi
cache=${HUTCH_TEST_CACHE:-/var/cache/hutch-tests}
arch=$(dpkg --print-architecture)
if command -v zstd >/dev/null; then ext=zst comp=--zstd; else ext=gz comp=--gzip; fi
tarball="$cache/debian-12-$arch-r2.tar.$ext"
tar_opts=(--numeric-owner --xattrs --xattrs-include='*' "$comp")

# Removes a build tree without crossing into anything a killed debootstrap left mounted.
remove_tree() {
    awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$1"
}

build() {
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
    local old
    for old in "$cache"/build.*; do [ -d "$old" ] && remove_tree "$old"; done
    work=$(mktemp -d "$cache/build.XXXXXX")
    trap 'remove_tree "$work"' EXIT
    trap 'exit 130' INT TERM
    local root=$work/root
    echo "debian.sh: debootstrap bookworm (once, cached in $cache)" >&2
    debootstrap --variant=minbase --include=systemd,systemd-sysv,systemd-resolved,dbus,iproute2 \
        bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
        { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
    chroot "$root" passwd -l root >/dev/null
    # Units for hardware or host kernel facilities a container does not have.
    local unit
    for unit in systemd-journald-audit.socket getty@tty1.service systemd-modules-load.service \
        sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount; do
        ln -sfn /dev/null "$root/etc/systemd/system/$unit"
    done
    # Per-machine identity: systemd makes a machine id at boot, the runtime sets the hostname.
    : >"$root/etc/machine-id"
    rm -f "$root/etc/hostname" "$root/var/lib/dbus/machine-id"

    tar -C "$root" "${tar_opts[@]}" -cf "$work/rootfs.tar" .
    sync "$work/rootfs.tar"
    mv -T "$work/rootfs.tar" "$tarball"
    remove_tree "$work"
    trap - EXIT INT TERM
}

mkdir -p "$cache"
exec 9>"$cache/.debian.lock"
flock 9
[ -s "$tarball" ] || build
flock -u 9
exec 9>&-

mkdir -p "$dest"
tar -C "$dest" "${tar_opts[@]}" -xpf "$tarball"
