//! The life of one vCPU thread: KVM_RUN, and dispatch of its exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_ioctls::{VcpuExit, VcpuFd};

use super::bus::{Bus, DeviceRequest};
use super::regs;

/// Why the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEnd {
    /// The guest reset the machine (i8042, reset control, KVM reset event).
    Reset,
    /// The guest powered off (ACPI S5, KVM shutdown event).
    PowerOff,
    /// moatvm received this signal.
    Signal(i32),
    /// A vCPU could not go on.
    VcpuFailed {
        index: usize,
        reason: String,
        registers: String,
    },
}

impl VmEnd {
    /// The process exit code this end deserves.
    pub fn exit_code(&self) -> i32 {
        match self {
            VmEnd::VcpuFailed { .. } => 1,
            _ => 0,
        }
    }
}

/// The devices the vCPUs reach: port I/O and MMIO.
#[derive(Clone, Default)]
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

/// What a vCPU thread shares with the rest of the VM.
pub struct VcpuContext {
    pub index: usize,
    pub buses: Buses,
    /// Set once the VM is ending: leave KVM_RUN and stop.
    pub done: Arc<AtomicBool>,
    /// Where this vCPU reports the end of the VM.
    pub end: Sender<VmEnd>,
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

/// Installs a do-nothing handler for the kick signal: its only job is to
/// make KVM_RUN return EINTR.
pub fn install_kick_handler() -> std::io::Result<()> {
    extern "C" fn nothing(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    vmm_sys_util::signal::register_signal_handler(kick_signal(), nothing)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// Interrupts the vCPU thread `t` if it is in KVM_RUN.
pub fn kick(t: &JoinHandle<()>) {
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: the pthread_t belongs to a thread we still hold the handle of,
    // so it has not been joined or detached; the signal has a handler.
    unsafe {
        libc::pthread_kill(t.as_pthread_t(), kick_signal());
    }
}

/// Runs `vcpu` until the VM ends, then reports why (if it was this vCPU's doing).
pub fn run_vcpu(mut vcpu: VcpuFd, ctx: VcpuContext) {
    while !ctx.done.load(Ordering::SeqCst) {
        let end = match vcpu.run() {
            Ok(exit) => handle_exit(exit, &ctx.buses),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(Err(format!("KVM_RUN failed: {e}"))),
        };
        match end {
            None => {}
            Some(Ok(end)) => {
                let _ = ctx.end.send(end);
                return;
            }
            Some(Err(reason)) => {
                let registers = regs::describe(&vcpu);
                let _ = ctx.end.send(VmEnd::VcpuFailed {
                    index: ctx.index,
                    reason,
                    registers,
                });
                return;
            }
        }
    }
}

/// KVM_SYSTEM_EVENT types.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;

/// `None` to carry on, `Some(Ok(end))` when the guest ended the VM,
/// `Some(Err(reason))` when this vCPU cannot continue.
fn handle_exit(exit: VcpuExit<'_>, buses: &Buses) -> Option<Result<VmEnd, String>> {
    let request = match exit {
        VcpuExit::IoIn(port, data) => {
            if !buses.pio.read(u64::from(port), data) {
                data.fill(0xff);
            }
            DeviceRequest::None
        }
        VcpuExit::IoOut(port, data) => buses
            .pio
            .write(u64::from(port), data)
            .unwrap_or(DeviceRequest::None),
        VcpuExit::MmioRead(addr, data) => {
            if !buses.mmio.read(addr, data) {
                data.fill(0xff);
            }
            DeviceRequest::None
        }
        VcpuExit::MmioWrite(addr, data) => {
            buses.mmio.write(addr, data).unwrap_or(DeviceRequest::None)
        }
        VcpuExit::SystemEvent(SYSTEM_EVENT_RESET, _) => DeviceRequest::Reset,
        VcpuExit::SystemEvent(SYSTEM_EVENT_SHUTDOWN, _) => DeviceRequest::PowerOff,
        VcpuExit::Intr => DeviceRequest::None,
        VcpuExit::Shutdown => {
            return Some(Err(
                "triple fault (KVM_EXIT_SHUTDOWN) without a reset request".into(),
            ))
        }
        VcpuExit::FailEntry(reason, cpu) => {
            return Some(Err(format!(
                "VM entry failed (hardware reason {reason:#x} on host CPU {cpu})"
            )))
        }
        VcpuExit::InternalError => return Some(Err("KVM internal error".into())),
        other => return Some(Err(format!("unexpected exit {other:?}"))),
    };
    match request {
        DeviceRequest::None => None,
        DeviceRequest::Reset => Some(Ok(VmEnd::Reset)),
        DeviceRequest::PowerOff => Some(Ok(VmEnd::PowerOff)),
    }
}
