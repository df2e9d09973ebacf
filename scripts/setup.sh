#!/bin/bash
# Sets up hutch on a fresh Debian 12 machine, as root: installs the system packages and Rust
# (when missing), builds and installs hutchd, and boots a first container, "first", from a
# busybox root filesystem. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/setup.sh: run as root" >&2
    exit 1
fi

apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    build-essential pkg-config curl ca-certificates \
    busybox-static debootstrap btrfs-progs dnsmasq-base nftables iproute2 uidmap zstd

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi

cargo build --release
install -m 0755 target/release/hutchd /usr/local/bin/hutchd

dir=${HUTCH_DIR:-/var/lib/hutch}
rootfs="$dir/rootfs/first"
if [ ! -e "$rootfs/sbin/init" ]; then
    rm -rf "$rootfs"
    tests/images/busybox.sh "$rootfs"
fi

if hutchd --dir "$dir" container state first 2>/dev/null | grep -q '"status": *"running"'; then
    echo "container first is already running"
else
    pid=$(hutchd --dir "$dir" container start first --rootfs "$rootfs")
    echo "started container first (init is host pid $pid)"
fi
echo "PID 1 in first is: $(hutchd --dir "$dir" container exec first -- cat /proc/1/comm)"
echo "try:  hutchd container exec first -- sh -c 'ps; id; hostname'"
echo "stop: hutchd container stop first"
