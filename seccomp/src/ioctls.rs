//! The ioctl request numbers the lists allow, computed the way the kernel's
//! `_IO`/`_IOR`/`_IOW`/`_IOWR` macros do (x86_64 encoding: 2 direction bits,
//! 14 size bits, 8 type bits, 8 number bits).

use std::mem::size_of;

use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_ioeventfd, kvm_irq_level, kvm_irq_routing, kvm_irqfd,
    kvm_lapic_state, kvm_mp_state, kvm_msi, kvm_msrs, kvm_regs, kvm_sregs, kvm_vcpu_events,
    kvm_xcrs,
};

const NONE: u64 = 0;
const WRITE: u64 = 1;
const READ: u64 = 2;

const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
}
const fn io(ty: u64, nr: u64) -> u64 {
    ioc(NONE, ty, nr, 0)
}
const fn ior<T>(ty: u64, nr: u64) -> u64 {
    ioc(READ, ty, nr, size_of::<T>())
}
const fn iow<T>(ty: u64, nr: u64) -> u64 {
    ioc(WRITE, ty, nr, size_of::<T>())
}
const fn iowr<T>(ty: u64, nr: u64) -> u64 {
    ioc(READ | WRITE, ty, nr, size_of::<T>())
}

// --- Generic (asm-generic/ioctls.h) ---
/// Sets or clears O_NONBLOCK (Rust's `set_nonblocking` on sockets).
pub const FIONBIO: u64 = 0x5421;
/// Reads a terminal's settings (also how `isatty` asks).
pub const TCGETS: u64 = 0x5401;
/// Sets a terminal's settings.
pub const TCSETS: u64 = 0x5402;
/// Sets a terminal's settings once output has drained.
pub const TCSETSW: u64 = 0x5403;

// --- TUN/TAP (linux/if_tun.h), type 'T' ---
const TUN: u64 = b'T' as u64;
/// Which offloads (checksum, TSO, UFO) the tap may hand us.
pub const TUNSETOFFLOAD: u64 = iow::<u32>(TUN, 208);
/// Size of the virtio-net header on every frame (10 or 12 bytes).
pub const TUNSETVNETHDRSZ: u64 = iow::<i32>(TUN, 216);
/// Attaches or detaches one queue of a multi-queue tap.
pub const TUNSETQUEUE: u64 = iow::<i32>(TUN, 217);

// --- vhost / vhost-net (linux/vhost.h), type 0xAF ---
const VHOST: u64 = 0xaf;
/// `struct vhost_vring_state { u32 index, num; }`
type VringState = [u32; 2];
/// `struct vhost_vring_file { u32 index; i32 fd; }`
type VringFile = [u32; 2];
/// `struct vhost_vring_addr { u32 index, flags; u64 desc, used, avail, log; }`
type VringAddr = [u64; 5];
/// `struct vhost_memory { u32 nregions, padding; regions[] }` (header only)
type VhostMemory = [u32; 2];
/// Features the guest driver accepted.
pub const VHOST_SET_FEATURES: u64 = iow::<u64>(VHOST, 0x00);
/// Guest memory layout (the memfd mapping's addresses).
pub const VHOST_SET_MEM_TABLE: u64 = iow::<VhostMemory>(VHOST, 0x03);
/// Queue size the guest chose.
pub const VHOST_SET_VRING_NUM: u64 = iow::<VringState>(VHOST, 0x10);
/// Where the guest put the rings.
pub const VHOST_SET_VRING_ADDR: u64 = iow::<VringAddr>(VHOST, 0x11);
/// Ring index to start from.
pub const VHOST_SET_VRING_BASE: u64 = iow::<VringState>(VHOST, 0x12);
/// Ring index reached (read back when the device is reset).
pub const VHOST_GET_VRING_BASE: u64 = iowr::<VringState>(VHOST, 0x12);
/// The queue's notify eventfd (ioeventfd).
pub const VHOST_SET_VRING_KICK: u64 = iow::<VringFile>(VHOST, 0x20);
/// The queue's interrupt eventfd (irqfd).
pub const VHOST_SET_VRING_CALL: u64 = iow::<VringFile>(VHOST, 0x21);
/// The queue's error eventfd.
pub const VHOST_SET_VRING_ERR: u64 = iow::<VringFile>(VHOST, 0x22);
/// Attaches (or, with -1, detaches) the tap to a queue.
pub const VHOST_NET_SET_BACKEND: u64 = iow::<VringFile>(VHOST, 0x30);

// --- KVM (linux/kvm.h), type 0xAE ---
const KVM: u64 = 0xae;
/// Asks whether a capability exists (read-only; some kvm-ioctls calls ask).
pub const KVM_CHECK_EXTENSION: u64 = io(KVM, 0x03);
/// Raises or lowers a legacy interrupt line (i8042, serial without irqfd).
pub const KVM_IRQ_LINE: u64 = iow::<kvm_irq_level>(KVM, 0x61);
/// The same, reporting whether the interrupt was delivered.
pub const KVM_IRQ_LINE_STATUS: u64 = iowr::<kvm_irq_level>(KVM, 0x67);
/// MSI/MSI-X routes, updated when the guest programs a device's vectors.
pub const KVM_SET_GSI_ROUTING: u64 = iow::<kvm_irq_routing>(KVM, 0x6a);
/// Connects (or disconnects) an interrupt eventfd a device process sent.
pub const KVM_IRQFD: u64 = iow::<kvm_irqfd>(KVM, 0x76);
/// Connects (or disconnects) a doorbell eventfd a device process sent.
pub const KVM_IOEVENTFD: u64 = iow::<kvm_ioeventfd>(KVM, 0x79);
/// Injects one MSI.
pub const KVM_SIGNAL_MSI: u64 = iow::<kvm_msi>(KVM, 0xa5);
/// Runs the vCPU: the hot path.
pub const KVM_RUN: u64 = io(KVM, 0x80);
/// Reading vCPU state for the failure report.
pub const KVM_GET_REGS: u64 = ior::<kvm_regs>(KVM, 0x81);
/// See [`KVM_GET_REGS`].
pub const KVM_GET_SREGS: u64 = ior::<kvm_sregs>(KVM, 0x83);
/// See [`KVM_GET_REGS`].
pub const KVM_GET_MSRS: u64 = iowr::<kvm_msrs>(KVM, 0x88);
/// See [`KVM_GET_REGS`].
pub const KVM_GET_FPU: u64 = ior::<kvm_fpu>(KVM, 0x8c);
/// See [`KVM_GET_REGS`].
pub const KVM_GET_LAPIC: u64 = ior::<kvm_lapic_state>(KVM, 0x8e);
/// See [`KVM_GET_REGS`].
pub const KVM_GET_MP_STATE: u64 = ior::<kvm_mp_state>(KVM, 0x98);
/// See [`KVM_GET_REGS`].
pub const KVM_GET_VCPU_EVENTS: u64 = ior::<kvm_vcpu_events>(KVM, 0x9f);
/// See [`KVM_GET_REGS`].
pub const KVM_GET_DEBUGREGS: u64 = ior::<kvm_debugregs>(KVM, 0xa1);
/// See [`KVM_GET_REGS`].
pub const KVM_GET_XCRS: u64 = ior::<kvm_xcrs>(KVM, 0xa6);

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the values the kernel headers give (x86_64).
    #[test]
    fn request_numbers_match_the_kernel_headers() {
        let known = [
            (TUNSETOFFLOAD, 0x400454d0),
            (TUNSETVNETHDRSZ, 0x400454d8),
            (TUNSETQUEUE, 0x400454d9),
            (VHOST_SET_FEATURES, 0x4008af00),
            (VHOST_SET_MEM_TABLE, 0x4008af03),
            (VHOST_SET_VRING_NUM, 0x4008af10),
            (VHOST_SET_VRING_ADDR, 0x4028af11),
            (VHOST_SET_VRING_BASE, 0x4008af12),
            (VHOST_GET_VRING_BASE, 0xc008af12),
            (VHOST_SET_VRING_KICK, 0x4008af20),
            (VHOST_SET_VRING_CALL, 0x4008af21),
            (VHOST_SET_VRING_ERR, 0x4008af22),
            (VHOST_NET_SET_BACKEND, 0x4008af30),
            (KVM_CHECK_EXTENSION, 0xae03),
            (KVM_IRQ_LINE, 0x4008ae61),
            (KVM_IRQ_LINE_STATUS, 0xc008ae67),
            (KVM_SET_GSI_ROUTING, 0x4008ae6a),
            (KVM_IRQFD, 0x4020ae76),
            (KVM_IOEVENTFD, 0x4040ae79),
            (KVM_SIGNAL_MSI, 0x4020aea5),
            (KVM_RUN, 0xae80),
            (KVM_GET_REGS, 0x8090ae81),
            (KVM_GET_SREGS, 0x8138ae83),
            (KVM_GET_MSRS, 0xc008ae88),
            (KVM_GET_FPU, 0x81a0ae8c),
            (KVM_GET_LAPIC, 0x8400ae8e),
            (KVM_GET_MP_STATE, 0x8004ae98),
            (KVM_GET_VCPU_EVENTS, 0x8040ae9f),
            (KVM_GET_DEBUGREGS, 0x8080aea1),
            (KVM_GET_XCRS, 0x8188aea6),
            (FIONBIO, libc::FIONBIO),
            (TCGETS, libc::TCGETS),
            (TCSETS, libc::TCSETS),
            (TCSETSW, libc::TCSETSW),
        ];
        for (i, (ours, kernel)) in known.iter().enumerate() {
            assert_eq!(ours, kernel, "entry {i}: {ours:#x} != {kernel:#x}");
        }
    }
}
