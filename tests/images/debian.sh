#!/bin/bash
# Makes a Debian 12 root filesystem with systemd as init at DEST. debootstrap runs once;
# its result is cached as a tarball ($HUTCH_TEST_CACHE, default /var/cache/hutch-tests)
# and later calls only unpack it. Concurrent callers are serialised with flock.
set -euo pipefail
dest=${1:?usage: debian.sh DEST}
cache=${HUTCH_TEST_CACHE:-/var/cache/hutch-tests}
arch=$(dpkg --print-architecture)
tarball="$cache/debian-12-$arch.tar.gz"
mkdir -p "$cache"
exec 9>"$cache/.debian.lock"
flock 9
if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "debian.sh: debootstrap missing: apt-get install debootstrap" >&2; exit 1; }
    work=$(mktemp -d "$cache/build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,iproute2 bookworm "$work/root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    chroot "$work/root" apt-get clean
    rm -rf "$work/root/var/lib/apt/lists/"*
    # Units that need hardware or a real kernel console have no place in a container.
    for unit in getty@tty1.service serial-getty@console.service systemd-journald-audit.socket \
        sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount \
        systemd-modules-load.service; do
        ln -sf /dev/null "$work/root/etc/systemd/system/$unit"
    done
    passwd_root_locked=$(chroot "$work/root" passwd -l root 2>&1) || echo "$passwd_root_locked" >&2
    : > "$work/root/etc/machine-id"
    tar -C "$work/root" --numeric-owner --xattrs -czf "$work/rootfs.tar.gz" .
    mv "$work/rootfs.tar.gz" "$tarball"
fi
flock -u 9
mkdir -p "$dest"
tar -C "$dest" --numeric-owner --xattrs -xzf "$tarball"
# debootstrap copied the build host's name; without one, systemd keeps the container's.
rm -f "$dest/etc/hostname"
