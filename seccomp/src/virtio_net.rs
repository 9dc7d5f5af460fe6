//! A virtio-net device process (with a tap, or vhost-net on a tap).
//!
//! Its steady state: a main event loop in `epoll_wait` over the IPC
//! socket to the vCPU process and the control queue's notify eventfd, and
//! one thread per queue pair in `epoll_wait` over the pair's tap queue and
//! its queues' notify eventfds (ioeventfds); on a notification a thread
//! reads the eventfd, moves frames between the guest's descriptor chains
//! and the tap with `readv`/`writev`, and signals the queue's irqfd with
//! `write`. Configuration requests (BAR and config-space accesses,
//! activation, reset) come over the IPC socket as messages, some carrying
//! descriptors. No files, no sockets, no new processes or threads: every
//! thread it has was started before the filter (the pair threads
//! included), and TSYNC covers them.

use crate::common::{fcntl_commands, rust_runtime};
use crate::ioctls::*;
use crate::policy::{arg_in, sys, Policy};

/// The kind's name, as on the command line of its hidden role.
pub(crate) const NAME: &str = "virtio-net";

/// The allowlist: the runtime's 23 and the 12 below (35).
pub(crate) fn policy() -> Policy {
    let mut p = Policy::new();
    rust_runtime(&mut p);

    // Event loop.
    // Waits for the tap, the queue-notify eventfds and the IPC socket
    // (glibc's epoll_wait on x86_64).
    p.allow(sys!(SYS_epoll_wait));
    // The same through epoll_pwait (what other libcs and crates call).
    p.allow(sys!(SYS_epoll_pwait));
    // Adds and removes queue eventfds when the guest activates or resets
    // the device; a queue pair's thread watches its tap's writability
    // only while a frame waits for room.
    p.allow(sys!(SYS_epoll_ctl));
    // New queue-notify and interrupt eventfds when the guest activates the
    // device (they go to the vCPU process for KVM_IOEVENTFD/KVM_IRQFD).
    p.allow(sys!(SYS_eventfd2));
    // ipc's Channel::recv_timeout: a reply awaited with a deadline.
    p.allow(sys!(SYS_poll));

    // Data path.
    // Drains eventfds; one frame from the tap into a flat buffer.
    p.allow(sys!(SYS_read));
    // A received frame from the tap into the guest's descriptor chain.
    p.allow(sys!(SYS_readv));
    // A frame from the guest's descriptor chain to the tap.
    p.allow(sys!(SYS_writev));

    // IPC with the vCPU process and the launcher (SOCK_SEQPACKET).
    // Requests, with descriptors (SCM_RIGHTS).
    p.allow(sys!(SYS_recvmsg));
    // Replies, and eventfds handed to the vCPU process.
    p.allow(sys!(SYS_sendmsg));

    // Descriptor and device control.
    // Flags of held and received descriptors; duplicating one.
    p.allow_when(sys!(SYS_fcntl), fcntl_commands());
    // Only what the guest's feature negotiation and resets trigger, on the
    // tap and (vhost-net backend) the vhost fd: never TUNSETIFF,
    // TUNSETPERSIST or anything that reconfigures the host.
    p.allow_when(
        sys!(SYS_ioctl),
        arg_in(
            1,
            &[
                // Rust's set_nonblocking on a socket.
                FIONBIO,
                // Offloads and header size follow the negotiated features.
                TUNSETOFFLOAD,
                TUNSETVNETHDRSZ,
                // Multiqueue: a pair's tap queue is detached while the
                // driver uses fewer pairs (the tap then steers no frames
                // to it) and attached again after; it changes nothing but
                // which of the tap's own queues take frames.
                TUNSETQUEUE,
                // vhost-net: (re)programming the kernel's data path at
                // activation, reading ring positions back at reset.
                VHOST_SET_FEATURES,
                VHOST_SET_MEM_TABLE,
                VHOST_SET_VRING_NUM,
                VHOST_SET_VRING_ADDR,
                VHOST_SET_VRING_BASE,
                VHOST_GET_VRING_BASE,
                VHOST_SET_VRING_KICK,
                VHOST_SET_VRING_CALL,
                VHOST_SET_VRING_ERR,
                VHOST_NET_SET_BACKEND,
            ],
        ),
    );
    p
}
