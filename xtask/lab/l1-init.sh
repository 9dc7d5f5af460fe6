#!/bin/sh
# L1 stage 1: PID 1 of the lab's L1 initramfs (busybox only).
#
# Loads the modules listed in /etc/lab/modules (dependency order, worked out
# by the xtask from modules.dep), mounts the host's root read-only over 9p at
# /host and the writable results share at its host path under /host, then
# switch_roots (never chroot: user namespaces break under chroot) into the
# host's root and runs stage 2 from the repository.
#
# Kernel command line words read here:
#   lab.out=DIR      host path of the results directory (also its mount point)
#   lab.stage2=PATH  host path of the stage 2 script
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
    echo "LAB-L1 error: $*"
    echo o > /proc/sysrq-trigger
    sleep 60
}

out=
stage2=
for word in $(cat /proc/cmdline); do
    case "$word" in
        lab.out=*) out=${word#lab.out=} ;;
        lab.stage2=*) stage2=${word#lab.stage2=} ;;
    esac
done
[ -n "$out" ] && [ -n "$stage2" ] || fail "lab.out= and lab.stage2= are required"

while read -r ko; do
    insmod "/lib/modules/$(uname -r)/$ko" || fail "insmod $ko"
done < /etc/lab/modules

mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host \
    || fail "mounting the host root"
mount -t devtmpfs devtmpfs /host/dev || fail "devtmpfs on /host/dev"
mount -t tmpfs -o mode=0755 tmpfs /host/run || fail "tmpfs on /host/run"
# A fresh tmpfs on /tmp, unless the checkout itself lives under /tmp (then
# the host's /tmp stays visible, read-only, and stage 2 puts TMPDIR on /run).
case "$out" in
    /tmp/*) ;;
    *) mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fail "tmpfs on /host/tmp" ;;
esac
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 labout "/host$out" \
    || fail "mounting the results share on $out"

echo "LAB-L1 stage1 uptime=$(cut -d' ' -f1 /proc/uptime)"
umount /proc /sys
umount -l /dev
exec switch_root /host /bin/sh "$stage2" "$out"
