#!/bin/bash
# Builds a minimal busybox-init root filesystem at DEST, offline, from the busybox binary of
# Debian's busybox-static package. Fast (well under a second) and refuses a non-empty DEST.
set -euo pipefail
dest=${1:?usage: busybox.sh DEST}
bb=/bin/busybox
[ -x "$bb" ] || { echo "busybox.sh: $bb missing: apt-get install busybox-static" >&2; exit 1; }
if ldd "$bb" >/dev/null 2>&1; then
    echo "busybox.sh: $bb is not static: apt-get install busybox-static" >&2; exit 1
fi
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
    echo "busybox.sh: $dest is not empty" >&2; exit 1
fi
mkdir -p "$dest"
cd "$dest"
mkdir -p bin sbin etc/init.d proc sys dev run tmp root var/log usr/bin usr/sbin home
chmod 1777 tmp
chmod 700 root
cp "$bb" bin/busybox
# One symlink per applet, relative so they resolve inside the container.
"$bb" --list-full | while read -r applet; do
    [ -e "$applet" ] || [ -L "$applet" ] && continue
    case "$applet" in
        bin/*) ln -s busybox "$applet" ;;
        sbin/*) ln -s ../bin/busybox "$applet" ;;
        usr/bin/*|usr/sbin/*) ln -s ../../bin/busybox "$applet" ;;
    esac
done
ln -sf ../bin/busybox sbin/init
cat > etc/inittab <<'INITTAB'
::sysinit:/etc/init.d/rcS
::shutdown:/bin/sync
INITTAB
cat > etc/init.d/rcS <<'RCS'
#!/bin/sh
# The runtime has mounted /proc, /sys, /dev and /run already.
ip link set lo up 2>/dev/null
echo "busybox container up"
RCS
chmod 755 etc/init.d/rcS
cat > etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > etc/group <<'GROUP'
root:x:0:
tty:x:5:
nogroup:x:65534:
GROUP
: > etc/hostname
printf 'ID=busybox\nNAME="BusyBox"\nPRETTY_NAME="BusyBox (hutch test image)"\n' > etc/os-release
