#!/bin/bash
# Sets up hutch on a fresh Debian 12 machine, as root: installs the system packages and Rust
# (when missing), builds and installs hutchd and hutch, initialises hutchd with working
# defaults, starts it, imports a busybox image and launches a first container, "first".
# Starts lxcfs too (as LXD's packaging does), so that containers see their own limits in
# free, top, uptime and nproc. Safe to run again. Run it as root; from another user it runs
# itself again through sudo.
#
# With --cluster, it also installs and starts etcd on loopback (Debian's etcd-server) and
# makes this server the first member of a cluster named after the host; more hosts join
# with `hutch cluster add NAME` here and `hutch cluster join TOKEN` there (README,
# "Clusters").
set -euo pipefail

cluster=0
for arg in "$@"; do
    case "$arg" in
        --cluster) cluster=1 ;;
        *) echo "scripts/setup.sh: unknown argument $arg (only --cluster)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then
        exec sudo --preserve-env=HUTCH_DIR "$(realpath "$0")" "$@"
    fi
    echo "scripts/setup.sh: run as root (there is no sudo here: log in as root or use su -)" >&2
    exit 1
fi
cd "$(dirname "$0")/.."
# A root shell from plain `su` keeps the user's PATH, without the sbin directories.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    build-essential pkg-config curl ca-certificates protobuf-compiler \
    busybox-static debootstrap btrfs-progs dnsmasq-base nftables iproute2 uidmap zstd lxcfs \
    squashfs-tools

# lxcfs before the first container: hutchd binds its files into containers it starts while
# lxcfs serves; without it they start all the same and see the host's totals.
if ! scripts/lxcfs.sh start >/dev/null; then
    echo "scripts/setup.sh: going on without lxcfs: containers will see the host's /proc" >&2
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi

cargo build --release -p hutchd -p hutch-helper -p hutch
# The helper first: a daemon restarted onto the new hutchd spawns the new helper.
install -m 0755 target/release/hutchd-helper /usr/local/bin/hutchd-helper
install -m 0755 target/release/hutchd /usr/local/bin/hutchd
install -m 0755 target/release/hutch /usr/local/bin/hutch

export HUTCH_DIR=${HUTCH_DIR:-/var/lib/hutch}

# Initialise, then start the daemon: as a systemd service where systemd runs, else in the
# background. A running hutchd holds its directory's lock, so init is for a stopped one.
if [ -S "$HUTCH_DIR/unix.socket" ] && hutch list >/dev/null 2>&1; then
    echo "hutchd is already running"
else
    hutchd init --auto
fi
if [ -S "$HUTCH_DIR/unix.socket" ] && hutch list >/dev/null 2>&1; then
    :
elif [ -d /run/systemd/system ]; then
    cat >/etc/systemd/system/hutchd.service <<UNIT
[Unit]
Description=hutch system-container daemon
After=network.target

[Service]
Environment=HUTCH_DIR=$HUTCH_DIR
ExecStart=/usr/local/bin/hutchd --verbose
KillMode=process
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
    # Host shutdown stops the containers in boot.stop.priority order through a second
    # unit, as LXD's lxd-containers: its ExecStop runs `hutchd shutdown` when the host
    # goes down (it stops before hutchd, being ordered after it). `systemctl restart
    # hutchd` (an upgrade) does not touch it: Wants= passes no stop or restart on, and
    # hutchd's SIGTERM leaves containers running.
    cat >/etc/systemd/system/hutchd-containers.service <<UNIT
[Unit]
Description=hutch - stop containers in order at host shutdown
After=hutchd.service
Wants=hutchd.service

[Service]
Type=oneshot
RemainAfterExit=yes
Environment=HUTCH_DIR=$HUTCH_DIR
ExecStart=/bin/true
ExecStop=/usr/local/bin/hutchd shutdown
TimeoutStopSec=600

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now hutchd
    systemctl enable --now hutchd-containers
else
    setsid nohup hutchd --verbose >>/var/log/hutchd.log 2>&1 </dev/null &
fi
for _ in $(seq 50); do hutch list >/dev/null 2>&1 && break; sleep 0.1; done

# A first image, built offline from busybox-static by hutch's image builder, and a first
# container. (With a network: `hutch launch images:debian/12 web` pulls from the public
# image server instead.)
if ! hutch image info busybox >/dev/null 2>&1; then
    hutch image build busybox --alias busybox
fi
if ! hutch info first >/dev/null 2>&1; then
    hutch launch busybox first
fi
for _ in $(seq 50); do hutch list -c 4 --format csv first | grep -q . && break; sleep 0.1; done
hutch list
echo "PID 1 in first is: $(hutch exec first -- cat /proc/1/comm)"
echo "try: hutch exec first -- sh"

if [ "$cluster" = 1 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server
    if ! curl -sf http://127.0.0.1:2379/health >/dev/null; then
        if [ -d /run/systemd/system ]; then
            systemctl enable --now etcd
        else
            mkdir -p /var/lib/hutch-etcd
            setsid nohup etcd --data-dir /var/lib/hutch-etcd \
                --listen-client-urls http://127.0.0.1:2379 \
                --advertise-client-urls http://127.0.0.1:2379 \
                >>/var/log/hutch-etcd.log 2>&1 </dev/null &
        fi
        for _ in $(seq 100); do curl -sf http://127.0.0.1:2379/health >/dev/null && break; sleep 0.1; done
    fi
    if [ "$(hutch config get core.https_address)" = "" ]; then
        hutch config set core.https_address :8443
    fi
    if ! hutch cluster list >/dev/null 2>&1; then
        hutch cluster enable "$(hostname -s)" --etcd http://127.0.0.1:2379
    fi
    hutch cluster list
    echo "add a member: hutch cluster add NAME here, then hutch cluster join TOKEN there"
fi
