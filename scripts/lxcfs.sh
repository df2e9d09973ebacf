#!/bin/bash
# Starts or stops lxcfs on /var/lib/lxcfs, as Debian's packaging runs it: its systemd unit
# where systemd runs, else in the background. hutchd looks for it at each container start.
#   lxcfs.sh start       prints what it started ("systemd", or the pid of lxcfs), nothing
#                        when lxcfs was serving already; fails, saying why, when it cannot
#   lxcfs.sh stop WHAT   stops what `start` printed
set -euo pipefail
dir=/var/lib/lxcfs
pidfile=/run/lxcfs.pid
die() { echo "lxcfs.sh: $*" >&2; exit 1; }

mounted() { awk -v d="$dir" '$5 == d && / - fuse\.lxcfs / { f = 1 } END { exit !f }' /proc/self/mountinfo; }
# The mount of an lxcfs that died fails the test of its files.
serving() { mounted && [ -e "$dir/proc/meminfo" ]; }
# Exited: no process, or a zombie that its new parent has not reaped yet.
gone() { [ ! -e "/proc/$1" ] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
wait_for() { for _ in $(seq 100); do "$@" && return 0; sleep 0.1; done; return 1; }

case "${1:-}" in
start)
    serving && exit 0
    command -v lxcfs >/dev/null || die "lxcfs is not installed (apt-get install lxcfs)"
    [ -e /dev/fuse ] || die "/dev/fuse is missing: lxcfs needs FUSE"
    if [ -d /run/systemd/system ] && systemctl start lxcfs 2>/dev/null && wait_for serving; then
        echo systemd
        exit 0
    fi
    if mounted; then umount -l "$dir"; fi
    mkdir -p "$dir"
    rm -f "$pidfile"
    setsid lxcfs -p "$pidfile" "$dir" >>/var/log/lxcfs.log 2>&1 </dev/null &
    if wait_for serving; then
        cat "$pidfile" 2>/dev/null || echo $!
        exit 0
    fi
    kill $! 2>/dev/null || true
    die "lxcfs did not start (see /var/log/lxcfs.log)"
    ;;
stop)
    what=${2:-}
    case "$what" in
    "") ;;
    systemd) systemctl stop lxcfs ;;
    *[!0-9]*) die "stop: $what is not what start printed" ;;
    *)
        # Only that pid, and only while it is lxcfs; it unmounts itself on SIGTERM.
        if [ "$(cat "/proc/$what/comm" 2>/dev/null)" = lxcfs ]; then
            kill "$what"
            wait_for gone "$what" || kill -9 "$what" 2>/dev/null || true
        fi
        if mounted; then umount -l "$dir"; fi
        ;;
    esac
    ;;
*) die "usage: lxcfs.sh start | stop WHAT" ;;
esac
