#!/bin/bash
# Runs every check and test of hutch: formatting, clippy, unit tests and the root
# end-to-end tests that boot real containers. Run as root on Debian 12 (from another user it
# runs itself again through sudo):
#   ./scripts/test.sh [extra cargo test args, e.g. -p hutch-tests --test images]
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then
        exec sudo --preserve-env=HUTCH_TEST_DEBIAN,HUTCH_TEST_CACHE,HUTCH_REQUIRED_TESTS \
            "$(realpath "$0")" "$@"
    fi
    echo "scripts/test.sh: run as root: the end-to-end tests create namespaces, mounts and cgroups" >&2
    exit 1
fi
cd "$(dirname "$0")/.."
# A root shell from plain `su` keeps the user's PATH, without the sbin directories.
export PATH="$HOME/.cargo/bin:$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# System tools the tests use (lxd-client: LXD's own `lxc`, to drive hutchd; lxd: the reference
# LXD 5.0 the interoperability tests start, each its own), installed only
# when missing; chromium and chromium-driver: the web UI test drives a real browser;
# docker-registry and skopeo: the OCI registry test runs one on loopback and pushes into it;
# etcd-server: the cluster test's shared state; protobuf-compiler: etcd-client's build.
need=()
for pkg in busybox-static debootstrap btrfs-progs dnsmasq-base nftables iproute2 uidmap zstd \
    lxd-client lxd lxcfs squashfs-tools rsync chromium chromium-driver docker-registry skopeo \
    etcd-server protobuf-compiler; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
# pylxd, for the compatibility test with the Python client.
python3 -c 'import pylxd' 2>/dev/null || python3 -m pip install -q pylxd ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pylxd
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace
# Tests that cannot run here (no GPU, no zfs module) say so by name in this file; the list
# is printed at the end, pass or fail, so that nothing is skipped silently.
HUTCH_SKIP_LOG=$(mktemp /tmp/hutch-skipped.XXXXXX)
export HUTCH_SKIP_LOG
report_skipped() {
    if [ -s "$HUTCH_SKIP_LOG" ]; then
        echo "Tests (or parts of tests) that did not run on this machine, by name:"
        sort "$HUTCH_SKIP_LOG" | sed 's/^/  /'
    fi
    rm -f "$HUTCH_SKIP_LOG"
}
trap report_skipped EXIT
HUTCH_REQUIRED_TESTS=1 cargo test --workspace --no-fail-fast "$@"
