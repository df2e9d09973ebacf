#!/bin/bash
# Builds a minimal busybox-init root filesystem at DEST, offline, from the static busybox of
# Debian's busybox-static package. Fast (well under a second); refuses a non-empty DEST.
set -euo pipefail
dest=${1:?usage: busybox.sh DEST}
bb=/bin/busybox
die() { echo "busybox.sh: $*" >&2; exit 1; }

[ -x "$bb" ] || die "$bb is missing: apt-get install busybox-static"
# ldd succeeds only on dynamic executables (Debian's "busybox" package ships one there).
if ldd "$bb" >/dev/null 2>&1; then
    die "$bb is not static: apt-get install busybox-static"
fi
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
    die "$dest is not empty"
fi

mkdir -p "$dest"
cd "$dest"
mkdir -p bin sbin etc/init.d proc sys dev run tmp root var/log usr/bin usr/sbin home
chmod 1777 tmp
chmod 700 root
cp "$bb" bin/busybox

# One relative symlink per applet, so they resolve inside the container.
"$bb" --list-full | while read -r applet; do
    [ -e "$applet" ] && continue # bin/busybox itself
    case "$applet" in
        bin/*) ln -s busybox "$applet" ;;
        sbin/*) ln -s ../bin/busybox "$applet" ;;
        usr/bin/* | usr/sbin/*) ln -s ../../bin/busybox "$applet" ;;
    esac
done
ln -sfn ../bin/busybox sbin/init

# Quiet init: no console shell, no ctrl-alt-del action.
cat >etc/inittab <<'EOF'
::sysinit:/etc/init.d/rcS
::shutdown:/bin/sync
EOF
cat >etc/init.d/rcS <<'EOF'
#!/bin/sh
# The runtime has mounted /proc, /sys, /dev and /run already.
ip link set lo up 2>/dev/null
# DHCP on every NIC hutch plugged in; udhcpc goes to the background once it has a lease
# (or after a few tries) and keeps renewing it.
for dev in /sys/class/net/*; do
    dev=${dev##*/}
    [ "$dev" = lo ] && continue
    udhcpc -i "$dev" -b -t 5 -T 1 -A 1 -x "hostname:$(hostname)" -s /etc/udhcpc.script >/dev/null 2>&1
done
exit 0
EOF
chmod 755 etc/init.d/rcS
cat >etc/udhcpc.script <<'EOF'
#!/bin/sh
# udhcpc's hook: applies a lease to $interface (busybox passes ip, mask, router, dns, domain).
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound | renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    : >/etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
    for s in $dns; do echo "nameserver $s" >>/etc/resolv.conf; done
    ;;
esac
exit 0
EOF
chmod 755 etc/udhcpc.script

cat >etc/passwd <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >etc/group <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
: >etc/hostname
cat >etc/os-release <<'EOF'
ID=busybox
NAME="BusyBox"
PRETTY_NAME="BusyBox (hutch test image)"
EOF
