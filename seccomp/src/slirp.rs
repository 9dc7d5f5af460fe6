//! A user-mode networking backend process: libslirp (4.7) between a frame
//! channel to a NIC process and real sockets in the host's network
//! namespace.
//!
//! Its steady state: one loop in `poll` over the frame channel and the
//! sockets libslirp names; guest frames come in with `recvmsg` and go to
//! libslirp, which answers ARP, DHCP and ICMP echo itself and carries TCP
//! and UDP over host sockets it opens, connects, reads, writes and closes;
//! frames for the guest leave with `sendmsg`. The `hostfwd` listeners are
//! bound and listening before the filter, so neither `bind` nor `listen`
//! is allowed afterwards; only `accept` on them. Sockets may only be of the
//! Internet domains: no Unix, netlink or packet sockets.
//!
//! libslirp also looks for `/etc/resolv.conf` on its own (`stat`, `fopen`)
//! when it builds an IPv6 router advertisement or forwards to its DNS
//! alias. Those calls are refused with `ENOENT` (the empty root has no such
//! file anyway) rather than fatal: the guest can trigger them at will.
//! DNS for the guest goes where the launcher said instead (see
//! `devices::backend::slirp`).

use crate::common::{fcntl_commands, rust_runtime};
use crate::ioctls::FIONBIO;
use crate::policy::{arg_in, arg_is, sys, Policy};

/// The kind's name, as on the command line of its hidden role.
pub(crate) const NAME: &str = "slirp";

/// `FIONREAD`: bytes waiting on a socket (`asm-generic/ioctls.h`).
const FIONREAD: u64 = 0x541b;

/// The allowlist: the runtime's 23 and the 17 below (40); six calls
/// refused.
pub(crate) fn policy() -> Policy {
    let mut p = Policy::new();
    rust_runtime(&mut p);

    // Event loop.
    // Waits for the frame channel and libslirp's sockets, with libslirp's
    // timeout (glibc's poll on x86_64).
    p.allow(sys!(SYS_poll));
    // The same through ppoll (what other libcs call).
    p.allow(sys!(SYS_ppoll));

    // The frame channel (SOCK_SEQPACKET).
    // A frame from the NIC process; also libslirp reading a UDP socket's
    // error queue (MSG_ERRQUEUE, for ICMP errors to forward).
    p.allow(sys!(SYS_recvmsg));
    // A frame to the NIC process.
    p.allow(sys!(SYS_sendmsg));

    // Host sockets, for the guest's TCP, UDP and ICMP echo.
    // Only AF_INET and AF_INET6: stream, datagram and ICMP ("ping")
    // sockets; libslirp's raw ICMP fallback fails for want of CAP_NET_RAW
    // in the host's namespace.
    p.allow_when(
        sys!(SYS_socket),
        arg_in(0, &[libc::AF_INET as u64, libc::AF_INET6 as u64]),
    );
    // The guest's outgoing TCP connections (non-blocking).
    p.allow(sys!(SYS_connect));
    // Incoming connections on the hostfwd listeners.
    p.allow(sys!(SYS_accept));
    // Connections accepted with flags (what other libcs call).
    p.allow(sys!(SYS_accept4));
    // UDP and ICMP datagrams out; send() on TCP sockets.
    p.allow(sys!(SYS_sendto));
    // UDP and ICMP datagrams in; recv() on TCP sockets.
    p.allow(sys!(SYS_recvfrom));
    // The guest's half-closes (FIN) passed on.
    p.allow(sys!(SYS_shutdown));
    // A hostfwd connection's peer; the local address when translating.
    p.allow(sys!(SYS_getsockname));
    // Whether a socket that read nothing is still connected.
    p.allow(sys!(SYS_getpeername));
    // Only the options libslirp sets: address reuse, out-of-band data
    // inline, no Nagle, TTL and hop limit of forwarded datagrams, error
    // queues, v6-only listeners.
    let opt = |level: i32, name: i32| vec![arg_is(1, level as u64), arg_is(2, name as u64)];
    p.allow_when(
        sys!(SYS_setsockopt),
        vec![
            opt(libc::SOL_SOCKET, libc::SO_REUSEADDR),
            opt(libc::SOL_SOCKET, libc::SO_OOBINLINE),
            opt(libc::IPPROTO_TCP, libc::TCP_NODELAY),
            opt(libc::IPPROTO_IP, libc::IP_TTL),
            opt(libc::IPPROTO_IP, libc::IP_RECVERR),
            opt(libc::IPPROTO_IPV6, libc::IPV6_RECVERR),
            opt(libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS),
            opt(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
        ],
    );
    // A failed connection's error (SO_ERROR), and a socket's type.
    p.allow_when(
        sys!(SYS_getsockopt),
        vec![
            opt(libc::SOL_SOCKET, libc::SO_ERROR),
            opt(libc::SOL_SOCKET, libc::SO_TYPE),
        ],
    );
    // Bytes waiting on a UDP socket (FIONREAD); non-blocking mode by ioctl.
    p.allow_when(sys!(SYS_ioctl), arg_in(1, &[FIONREAD, FIONBIO]));
    // Non-blocking and close-on-exec flags of new sockets.
    p.allow_when(sys!(SYS_fcntl), fcntl_commands());

    // Refused: libslirp's look for /etc/resolv.conf (glibc's stat is
    // newfstatat, fopen is openat; the others for other libcs).
    for call in [
        sys!(SYS_open),
        sys!(SYS_openat),
        sys!(SYS_stat),
        sys!(SYS_lstat),
        sys!(SYS_newfstatat),
        sys!(SYS_statx),
    ] {
        p.refuse(call, libc::ENOENT);
    }
    p
}
