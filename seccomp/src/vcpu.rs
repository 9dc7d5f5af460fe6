//! The vCPU process: the VM fd, the vCPU threads in KVM_RUN, the platform
//! devices (serial, i8042, PCI host bridge), and the IPC that forwards BAR
//! and config-space accesses to device processes and registers the
//! ioeventfds, irqfds and MSI routes they ask for.
//!
//! Generous on purpose, each entry with its reason: besides the steady
//! state (KVM_RUN, eventfd writes, IPC, kicks) it allows what `Vm::run` does
//! if the filter goes on before it, namely starting the vCPU threads and
//! installing the kick handler. Installing the filter after those lets
//! `clone3`, `clone` and `rt_sigaction` go (a new thread's own start-up
//! calls are in the runtime part, for threads started just before the
//! filter).

use crate::common::{fcntl_commands, rust_runtime};
use crate::ioctls::*;
use crate::policy::{arg_has, arg_in, sys, Policy};

/// The kind's name, as on the command line of its hidden role.
pub(crate) const NAME: &str = "vcpu";

/// The allowlist: the runtime's 23 and the 17 below (40).
pub(crate) fn policy() -> Policy {
    let mut p = Policy::new();
    rust_runtime(&mut p);

    // KVM, on the VM and vCPU fds opened before the filter; and the console.
    p.allow_when(
        sys!(SYS_ioctl),
        arg_in(
            1,
            &[
                // The hot path.
                KVM_RUN,
                // Interrupts: legacy lines (i8042, serial), MSI routes the
                // guest programs, one-off MSIs, and the irqfds/ioeventfds
                // device processes send once the guest places their BARs.
                KVM_IRQ_LINE,
                KVM_IRQ_LINE_STATUS,
                KVM_SET_GSI_ROUTING,
                KVM_SIGNAL_MSI,
                KVM_IRQFD,
                KVM_IOEVENTFD,
                // Read-only capability queries some kvm-ioctls calls make.
                KVM_CHECK_EXTENSION,
                // Reading a failed vCPU's state for the report.
                KVM_GET_REGS,
                KVM_GET_SREGS,
                KVM_GET_FPU,
                KVM_GET_MSRS,
                KVM_GET_LAPIC,
                KVM_GET_MP_STATE,
                KVM_GET_VCPU_EVENTS,
                KVM_GET_DEBUGREGS,
                KVM_GET_XCRS,
                // Serial on stdio: isatty, and restoring the terminal's
                // settings when the VM ends.
                TCGETS,
                TCSETS,
                TCSETSW,
                // Rust's set_nonblocking on a socket.
                FIONBIO,
            ],
        ),
    );

    // vCPU threads, if started after the filter (see the module docs).
    // std::thread::spawn: glibc's pthread_create. Its flags sit in a struct
    // seccomp cannot read, so a fork is possible too; it would stay under
    // this filter, the jail and RLIMIT_NPROC.
    p.allow(sys!(SYS_clone3));
    // glibc's fallback where clone3 is missing: threads only.
    p.allow_when(
        sys!(SYS_clone),
        vec![vec![arg_has(0, libc::CLONE_THREAD as u64)]],
    );

    // Kicks and signals.
    // Vm::run installs the kick handler; glibc's first pthread_create in a
    // process installs its own internal handlers.
    p.allow(sys!(SYS_rt_sigaction));
    // pthread_kill and raise name the target process by its id (the thread
    // id, gettid, is allowed by the runtime part).
    p.allow(sys!(SYS_getpid));
    // Kicking a vCPU thread out of KVM_RUN (the kick signal, SIGRTMIN), and
    // abort() after a panic (SIGABRT); no other signal.
    p.allow_when(
        sys!(SYS_tgkill),
        arg_in(2, &[libc::SIGRTMIN() as u64, libc::SIGABRT as u64]),
    );
    // The signal thread's sigwait for SIGTERM, SIGINT, SIGHUP.
    p.allow(sys!(SYS_rt_sigtimedwait));

    // Event loops, IPC, input.
    // Waiting on IPC sockets and eventfds (epoll_wait is glibc's on x86_64,
    // epoll_pwait other callers').
    p.allow(sys!(SYS_epoll_wait));
    p.allow(sys!(SYS_epoll_pwait));
    // Adding a device process's socket or eventfd to the set.
    p.allow(sys!(SYS_epoll_ctl));
    // ipc's Channel::recv_timeout: a device's reply awaited with a deadline.
    p.allow(sys!(SYS_poll));
    // Forwarded BAR/config accesses and replies, with descriptors
    // (ioeventfds and irqfds from device processes).
    p.allow(sys!(SYS_recvmsg));
    p.allow(sys!(SYS_sendmsg));
    // Serial input from stdin; draining eventfds.
    p.allow(sys!(SYS_read));
    // Flags of held and received descriptors; duplicating one.
    p.allow_when(sys!(SYS_fcntl), fcntl_commands());

    // Sleeping: thread::sleep (nanosleep in older glibc, clock_nanosleep
    // in newer).
    p.allow(sys!(SYS_nanosleep));
    p.allow(sys!(SYS_clock_nanosleep));
    p
}
