//! An e1000 (Intel 82540EM) device process over a tap.
//!
//! Its steady state: one event loop in `epoll_wait` over the tap, the INTx
//! resample eventfd, the ITR timer and the IPC socket to the vCPU process. Register
//! accesses come as messages (the transmit doorbell TDT among them); frames
//! move between the guest's descriptor rings and the tap with
//! `readv`/`writev`, and the level-triggered interrupt is raised by a
//! `write` to its irqfd. No files, no sockets, no new processes or threads,
//! and no ioctl at all: the tap's offloads stay off (the model does
//! checksums and segmentation itself).

use crate::common::{fcntl_commands, rust_runtime};
use crate::policy::{sys, Policy};

/// The kind's name, as on the command line of its hidden role.
pub(crate) const NAME: &str = "e1000";

/// The allowlist: the runtime's 23 and the 11 below (34).
pub(crate) fn policy() -> Policy {
    let mut p = Policy::new();
    rust_runtime(&mut p);

    // Event loop.
    // Waits for the tap, the resample eventfd and the IPC socket (glibc's
    // epoll_wait on x86_64).
    p.allow(sys!(SYS_epoll_wait));
    // The same through epoll_pwait (what other libcs and crates call).
    p.allow(sys!(SYS_epoll_pwait));
    // Drops the tap from the set when its interface goes away; watches its
    // writability only while a frame waits for room.
    p.allow(sys!(SYS_epoll_ctl));
    // ipc's Channel::recv_timeout and sends with a deadline.
    p.allow(sys!(SYS_poll));

    // Interrupt throttling (ITR): arms the one-shot timer for a held-back
    // interrupt (the timerfd was created before the filter).
    p.allow(sys!(SYS_timerfd_settime));

    // Data path.
    // Drains the resample eventfd.
    p.allow(sys!(SYS_read));
    // A received frame from the tap into a flat buffer.
    p.allow(sys!(SYS_readv));
    // A frame to the tap (the INTx irqfd is signalled with write, which
    // the runtime part allows for stderr).
    p.allow(sys!(SYS_writev));

    // IPC with the vCPU process (SOCK_SEQPACKET).
    // Register accesses from the guest.
    p.allow(sys!(SYS_recvmsg));
    // Register values back to the vCPU process.
    p.allow(sys!(SYS_sendmsg));

    // Flags of held descriptors.
    p.allow_when(sys!(SYS_fcntl), fcntl_commands());
    p
}
