#!/bin/sh
# L1 stage 2: PID 1 of L1 after switch_root into the host's (read-only) root.
#
# Usage (by l1-init.sh): stage2.sh OUTDIR
# Mounts proc, sysfs and friends, brings `lo` up, points TMPDIR at a tmpfs,
# runs OUTDIR/cmd.sh (written by the xtask), records its exit status in
# OUTDIR/status and powers L1 off. Meanwhile it rewrites OUTDIR/heartbeat
# every 5 s. The console is L1's serial port: cmd.sh
# decides itself what goes there and what goes into files under OUTDIR.
out=$1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# /tmp is a tmpfs unless the checkout lives under /tmp (see l1-init.sh).
tmp=/tmp
if ! touch /tmp/.lab-writable 2>/dev/null; then
    tmp=/run/lab-tmp
    mkdir -p "$tmp" && chmod 1777 "$tmp"
fi
export TMPDIR="$tmp" HOME="$tmp" LAB_OUT="$out"

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts -o ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
ip link set lo up

echo "LAB-L1 stage2 uptime=$(cut -d' ' -f1 /proc/uptime)"
# A heartbeat for the host, which takes an L1 that stops writing it for
# hung (the host compares contents: L1's clock need not match its own).
# Before it kills a job that ran out of time, the host asks (file
# dump-request) for the tasks blocked in L1's kernel and their stacks
# (sysrq w), which then go to the console.
(while :; do
    cut -d' ' -f1 /proc/uptime > "$out/heartbeat"
    if [ -e "$out/dump-request" ]; then
        rm -f "$out/dump-request"
        echo "LAB-L1 blocked tasks at uptime=$(cut -d' ' -f1 /proc/uptime):"
        echo w > /proc/sysrq-trigger
        # Every thread outside the kernel's own, and where it sleeps.
        for t in /proc/[0-9]*/task/[0-9]*; do
            read -r stat < "$t/stat" 2>/dev/null || continue
            set -- ${stat##*) }
            [ "$2" = 2 ] || [ "$2" = 0 ] && continue
            echo "LAB-L1 thread ${t#/proc/} $(cat "$t/comm") state=$1 wchan=$(cat "$t/wchan" 2>/dev/null)"
        done
    fi
    sleep 5
done) &
sh "$out/cmd.sh"
status=$?
echo "$status" > "$out/status"
sync
echo "LAB-L1 done status=$status uptime=$(cut -d' ' -f1 /proc/uptime)"
# PID 1 must not exit (that panics L1, and the panic would read as L1
# trouble); the power-off is asynchronous and may take the host's root
# (9p) away before another program could be started, so the sleep is
# started first and waited for with a builtin.
sleep 60 &
echo o > /proc/sysrq-trigger
wait
