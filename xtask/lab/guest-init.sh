#!/bin/sh
# PID 1 of the L2 guest initramfs (what moatvm and QEMU boot in the lab).
#
# Configured by `moat.*` words on the kernel command line; reports on the
# serial console with machine-readable lines `MOAT <event> key=value ...`.
#
# Words:
#   moat.nic=all|NAME[,NAME...]  load NIC driver modules (names: see
#                                /etc/moat/nic/); default: none (fast boot)
#   moat.dev=IFACE               interface moat.ip configures (default eth0)
#   moat.ip=ADDR/PREFIX|dhcp     configure that interface, bring it up
#                                (dhcp: busybox udhcpc; address, default
#                                route and DNS server from the lease)
#   moat.gw=ADDR                 default route
#   moat.action=STEP[,STEP...]   steps run in order; STEP is NAME[:ARG...]
#                                (default: reboot)
# Steps: reboot | poweroff | shell | sleep:SECS | panic
#        | ping:HOST[:COUNT[:INTERVAL]] | iperf:HOST[:SECS[:tx|rx[:PORT]]]
#        | iperf-server[:PORT]   (serves one client, then goes on)
#        | iperf2:HOST:SECS:tx|rx:PORT0:PORT1  (two iperf3 clients at once,
#                                client i on CPU i (-A i) to PORTi, 4
#                                streams each: one queue pair per CPU)
#        | queues                (the interface's queue directories, the
#                                interrupt count of each virtio queue, and
#                                its packet and byte counters)
#        | reload:NIC            (rmmod the driver, insmod it, configure again)
#        | fetch:HOST:PORT       (HTTP GET of /moat.txt)
#        | net:DEV:ADDR/PREFIX   (configure one more interface; `MOAT net`)
#        | cpuflags              (the flags line of /proc/cpuinfo)
# A step that does not end the VM falls through to the next; after the last
# one the guest reboots (`reboot -f`; with `reboot=k` that is an i8042 reset).
#
# Lines (always): `MOAT start ...`, `MOAT cpus online=N ...`; then per step
# `MOAT action name=NAME` and the step's own result line. Parameters of a
# module (`MODULE.param=value` words) are passed on to insmod, as modprobe
# would.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export TMPDIR=/tmp HOME=/tmp

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "MOAT $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

say "start kernel=$(uname -r) uptime=$(uptime_s)"

# Count CPUs in a list such as "0-3,5".
count_cpus() {
    n=0
    for range in $(echo "$1" | tr ',' ' '); do
        case "$range" in
            *-*) n=$((n + ${range#*-} - ${range%-*} + 1)) ;;
            *) n=$((n + 1)) ;;
        esac
    done
    echo "$n"
}
online=$(cat /sys/devices/system/cpu/online)
say "cpus online=$(count_cpus "$online") list=$online cpuinfo=$(grep -c '^processor' /proc/cpuinfo)"
say "mem total_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"

nic= dev=eth0 ip= gw= actions=reboot
for word in $(cat /proc/cmdline); do
    case "$word" in
        moat.nic=*) nic=${word#*=} ;;
        moat.dev=*) dev=${word#*=} ;;
        moat.ip=*) ip=${word#*=} ;;
        moat.gw=*) gw=${word#*=} ;;
        moat.action=*) actions=${word#*=} ;;
    esac
done

# insmod one module (path relative to /lib/modules/VERSION) with its
# MODULE.param= words from the command line; no-op if already loaded.
load_module() {
    name=$(basename "$1" .ko | tr '-' '_')
    [ -d "/sys/module/$name" ] && return 0
    params=
    for word in $(cat /proc/cmdline); do
        case "$word" in
            "$name".*=*) params="$params ${word#$name.}" ;;
        esac
    done
    # shellcheck disable=SC2086
    insmod "/lib/modules/$(uname -r)/$1" $params
}

load_nics() {
    [ "$1" = all ] && set -- "$(ls /etc/moat/nic | tr '\n' ',')"
    loaded= failed=
    for n in $(echo "$1" | tr ',' ' '); do
        ok=1
        if [ -f "/etc/moat/nic/$n" ]; then
            while read -r ko; do load_module "$ko" || ok=0; done < "/etc/moat/nic/$n"
        else
            ok=0
        fi
        if [ $ok = 1 ]; then loaded="$loaded,$n"; else failed="$failed,$n"; fi
    done
    say "modules loaded=${loaded#,} failed=${failed#,}"
}
[ -n "$nic" ] && load_nics "$nic"

# Waits up to 10 s for interface $1 to appear.
wait_iface() {
    i=0
    while [ ! -e "/sys/class/net/$1" ]; do
        i=$((i + 1))
        [ $i -gt 100 ] && return 1
        sleep 0.1
    done
}

# DHCP on interface $1 (busybox udhcpc, with a script that applies the
# lease); prints ADDR/PREFIX, fails without a lease.
dhcp() {
    cat > /tmp/udhcpc.script <<'SCRIPT'
#!/bin/sh
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route add default via "$r"; break; done
        for d in $dns; do echo "nameserver $d"; done > /etc/resolv.conf
        echo "$ip/${mask:-24}" > /tmp/dhcp.addr
        ;;
esac
SCRIPT
    chmod +x /tmp/udhcpc.script
    ip link set "$1" up
    udhcpc -i "$1" -n -q -t 5 -T 2 -s /tmp/udhcpc.script > /dev/null 2>&1 &&
        cat /tmp/dhcp.addr
}

# Configures $dev with moat.ip (an address, or dhcp) and moat.gw and
# reports it (`MOAT net`).
config_net() {
    [ -n "$ip" ] || return 0
    if wait_iface "$dev"; then
        if [ "$ip" = dhcp ]; then
            addr=$(dhcp "$dev") || say "error step=net reason=no-dhcp-lease"
        else
            addr=$ip
            ip addr add "$ip" dev "$dev" && ip link set "$dev" up
            [ -n "$gw" ] && ip route add default via "$gw"
        fi
        driver=$(basename "$(readlink "/sys/class/net/$dev/device/driver")" 2>/dev/null)
        # Link state once the interface is up (autonegotiation may take a
        # moment on emulated PHYs): 1 = carrier.
        i=0
        while [ "$(cat "/sys/class/net/$dev/carrier" 2>/dev/null)" != 1 ] && [ $i -lt 50 ]; do
            i=$((i + 1))
            sleep 0.1
        done
        carrier=$(cat "/sys/class/net/$dev/carrier" 2>/dev/null)
        say "net dev=$dev driver=$driver mac=$(cat "/sys/class/net/$dev/address") addr=$addr carrier=${carrier:-none}"
    else
        say "error step=net reason=no-interface-$dev"
    fi
}

ip link set lo up
config_net

# One more interface, configured and reported as moat.dev/moat.ip do the
# first (on another subnet). Every interface then answers ARP only for its
# own addresses, so that the host reaches each address through its NIC.
act_net() {
    echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore
    echo 2 > /proc/sys/net/ipv4/conf/all/arp_announce
    dev=$1 ip=$2 gw=
    config_net
}

act_reboot() { sync; reboot -f; sleep 30; }
act_poweroff() { sync; poweroff -f; sleep 30; }
act_shell() { setsid cttyhack sh -l; }
act_sleep() { sleep "${1:-1}"; }
act_panic() { echo c > /proc/sysrq-trigger; }

# Unloads NIC driver $1 (a name in /etc/moat/nic/: its last module is the
# driver), loads it again and configures the interface anew.
act_reload() {
    ko=$(tail -n 1 "/etc/moat/nic/$1" 2>/dev/null)
    mod=$(basename "$ko" .ko | tr '-' '_')
    ip link set "$dev" down 2>/dev/null
    if [ -z "$ko" ] || ! rmmod "$mod"; then
        say "reload driver=$1 error=rmmod"
        return
    fi
    gone=$([ -e "/sys/class/net/$dev" ] && echo 0 || echo 1)
    load_nics "$1"
    say "reload driver=$1 unloaded=$gone"
    config_net
}

# HTTP GET http://$1:$2/moat.txt by hand over busybox nc (the static
# busybox's wget crashes in glibc's resolver): reports the status and the
# first line of the body, or ok=0.
act_fetch() {
    printf 'GET /moat.txt HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" |
        nc -w 10 "$1" "$2" > /tmp/fetch.out 2>/dev/null
    status=$(head -n 1 /tmp/fetch.out | tr -d '\r' | cut -d' ' -f2)
    body=$(sed '1,/^\r*$/d' /tmp/fetch.out | head -n 1 | tr -c 'A-Za-z0-9_.-' '_')
    if [ "$status" = 200 ]; then
        say "fetch host=$1 port=$2 ok=1 bytes=$(wc -c < /tmp/fetch.out) text=$body"
    else
        say "fetch host=$1 port=$2 ok=0 status=${status:-none}"
    fi
}

act_ping() {
    res=$(ping -c "${2:-3}" -i "${3:-1}" -W 5 "$1" 2>&1)
    rx=$(echo "$res" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
    avg=$(echo "$res" | sed -n 's|.*min/avg/max = [0-9.]*/\([0-9.]*\)/.*|\1|p')
    say "ping host=$1 sent=${2:-3} received=${rx:-0} avg_ms=${avg:-none}"
}

# The receiver's rate (Mbit/s) in iperf3's output on stdin (the [SUM] line
# with several streams: it comes last).
iperf_rate() {
    awk '/receiver$/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Mbits/sec") r = $i } END { print r }'
}

# iperf3 client: tx = guest sends, rx = guest receives (-R). Reports the
# receiver's rate in Mbit/s.
act_iperf() {
    dir=${3:-tx}
    rev=
    [ "$dir" = rx ] && rev=-R
    res=$(iperf3 -c "$1" -p "${4:-5201}" -t "${2:-5}" -f m $rev 2>&1)
    rate=$(echo "$res" | iperf_rate)
    if [ -n "$rate" ]; then
        say "iperf host=$1 dir=$dir mbits=$rate"
    else
        say "iperf host=$1 dir=$dir error=$(echo "$res" | tail -n 1 | tr ' ' '_')"
    fi
}

# Two iperf3 clients at once, client i pinned to CPU i (the driver maps
# CPU i to queue pair i) talking to port PORTi with 4 streams; tx = guest
# sends, rx = guest receives. Reports both receivers' rates.
act_iperf2() {
    dir=${3:-tx}
    rev=
    [ "$dir" = rx ] && rev=-R
    iperf3 -c "$1" -p "$4" -t "${2:-5}" -f m -P 4 -A 0 $rev > /tmp/iperf2.0 2>&1 &
    p0=$!
    iperf3 -c "$1" -p "$5" -t "${2:-5}" -f m -P 4 -A 1 $rev > /tmp/iperf2.1 2>&1 &
    p1=$!
    wait $p0
    wait $p1
    r0=$(iperf_rate < /tmp/iperf2.0)
    r1=$(iperf_rate < /tmp/iperf2.1)
    err0=$(tail -n 1 /tmp/iperf2.0 | tr ' ' '_')
    err1=$(tail -n 1 /tmp/iperf2.1 | tr ' ' '_')
    say "iperf2 host=$1 dir=$dir mbits0=${r0:-none} mbits1=${r1:-none} last0=$err0 last1=$err1"
}

# The CPU flags the guest's kernel sees (first CPU of /proc/cpuinfo).
act_cpuflags() {
    flags=$(sed -n 's/^flags[[:space:]]*: //p' /proc/cpuinfo | head -n 1 | tr ' ' ',')
    say "cpuflags flags=$flags"
}

# The queue directories of $dev (rx-0,rx-1,tx-0,tx-1...) and, per virtio
# queue, its interrupts summed over the CPUs (/proc/interrupts lines
# virtioN-input.Q / virtioN-output.Q), as input.Q=COUNT output.Q=COUNT.
act_queues() {
    list=$(ls "/sys/class/net/$dev/queues" 2>/dev/null | sort | tr '\n' ',')
    irqs=$(awk '$NF ~ /^virtio[0-9]+-(input|output)\.[0-9]+$/ {
        n = 0
        for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i
        name = $NF
        sub(/^virtio[0-9]+-/, "", name)
        printf "%s=%d ", name, n
    }' /proc/interrupts)
    st=/sys/class/net/$dev/statistics
    frames="rx_packets=$(cat $st/rx_packets) rx_bytes=$(cat $st/rx_bytes)"
    frames="$frames tx_packets=$(cat $st/tx_packets) tx_bytes=$(cat $st/tx_bytes)"
    say "queues dev=$dev list=${list%,} $irqs$frames"
}

# iperf3 server for one client: says "ready" once the port listens (seen
# in /proc/net/tcp{,6}, state 0A), not before.
act_iperf_server() {
    port=${1:-5201}
    iperf3 -s -1 -p "$port" > /tmp/iperf-server.log 2>&1 &
    pid=$!
    hex=$(printf '%04X' "$port")
    i=0
    while ! grep -qE ":$hex [0-9A-F]+:0000 0A" /proc/net/tcp /proc/net/tcp6 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 200 ] && break
        sleep 0.1
    done
    say "iperf-server port=$port ready"
    wait $pid
    say "iperf-server port=$port status=$?"
}

for step in $(echo "$actions" | tr ',' ' '); do
    name=${step%%:*}
    args=
    [ "$name" != "$step" ] && args=$(echo "${step#*:}" | tr ':' ' ')
    say "action name=$name uptime=$(uptime_s)"
    fn="act_$(echo "$name" | tr '-' '_')"
    if command -v "$fn" > /dev/null; then
        # shellcheck disable=SC2086
        "$fn" $args
    else
        say "error step=$name reason=unknown-action"
    fi
done
act_reboot
