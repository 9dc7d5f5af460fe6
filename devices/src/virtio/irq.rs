//! Interrupt state a virtio transport shares with the threads that work
//! its data queues: the MSI-X table (masks and pending bits), the ISR, the
//! queues' vectors, and DEVICE_NEEDS_RESET.
//!
//! One short lock covers it, never held across a backend's readv/writev:
//! a queue interrupt checks the vector's mask and either fires the irqfd or
//! sets the pending bit under the lock, and an unmask delivers pending bits
//! under the same lock, so no interrupt is lost between a worker and a
//! guest's MSI-X table write. Lock order: a data path's own lock first,
//! then this one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use log::warn;

use super::{Error, LogLimiter};
use crate::pci::msix::{MsixChange, MsixTable};
use crate::pci::Interrupts;

/// "No vector" in the MSI-X vector registers.
pub const NO_VECTOR: u16 = 0xffff;
/// ISR status bits.
pub const ISR_QUEUE: u8 = 1;
pub const ISR_CONFIG: u8 = 2;

/// What the lock guards.
pub(crate) struct IrqState {
    pub(crate) msix: MsixTable,
    pub(crate) isr: u8,
    /// The command register's INTx-disable bit is clear.
    pub(crate) intx_enabled: bool,
    /// Each queue's MSI-X vector.
    pub(crate) queue_vectors: Vec<u16>,
    pub(crate) config_vector: u16,
    /// DEVICE_NEEDS_RESET is set: nothing works the queues until a reset.
    pub(crate) broken: bool,
    faults: LogLimiter,
}

/// The shared interrupt state and the host's [`Interrupts`].
pub struct Signals<I> {
    irq: I,
    state: Mutex<IrqState>,
    /// A copy of `IrqState::broken` that workers read without the lock.
    broken: AtomicBool,
    /// For messages: the PCI device ID.
    device_id: u16,
}

impl<I: Interrupts> Signals<I> {
    pub(crate) fn new(irq: I, vectors: u16, queues: usize, device_id: u16) -> Self {
        Signals {
            irq,
            state: Mutex::new(IrqState {
                msix: MsixTable::new(vectors),
                isr: 0,
                intx_enabled: true,
                queue_vectors: vec![NO_VECTOR; queues],
                config_vector: NO_VECTOR,
                broken: false,
                faults: LogLimiter::default(),
            }),
            broken: AtomicBool::new(false),
            device_id,
        }
    }

    pub fn interrupts(&self) -> &I {
        &self.irq
    }

    /// The state, for the transport's register accesses. A poisoned lock
    /// (a thread panicked holding it) is taken over: the process exits on
    /// panic anyway, and the state stays consistent field by field.
    pub(crate) fn lock(&self) -> MutexGuard<'_, IrqState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether DEVICE_NEEDS_RESET is set.
    pub fn broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Back to the power-on state, except MSI-X, which belongs to PCI.
    pub(crate) fn reset(&self) {
        let mut s = self.lock();
        s.isr = 0;
        s.config_vector = NO_VECTOR;
        s.queue_vectors.fill(NO_VECTOR);
        s.broken = false;
        self.broken.store(false, Ordering::Release);
    }

    /// Interrupts for used buffers on queue `q` (notification suppression
    /// already applied by the caller).
    pub fn queue_interrupt(&self, q: u16) {
        let mut s = self.lock();
        if s.broken {
            return;
        }
        if !s.msix.enabled() {
            s.isr |= ISR_QUEUE;
        }
        let vector = s.queue_vectors.get(usize::from(q)).copied();
        if let Some(vector) = vector {
            self.raise(&mut s, vector);
        }
    }

    /// A configuration change interrupt.
    pub(crate) fn config_interrupt(&self) {
        let mut s = self.lock();
        Self::config_locked(&self.irq, &mut s);
    }

    fn config_locked(irq: &I, s: &mut IrqState) {
        s.isr |= ISR_CONFIG;
        let vector = s.config_vector;
        Self::raise_with(irq, s, vector);
    }

    fn raise(&self, s: &mut IrqState, vector: u16) {
        Self::raise_with(&self.irq, s, vector);
    }

    fn raise_with(irq: &I, s: &mut IrqState, vector: u16) {
        if s.msix.enabled() {
            if vector != NO_VECTOR {
                s.msix.signal(vector, irq);
            }
        } else if s.intx_enabled {
            irq.assert_intx();
        }
    }

    /// INTx was acknowledged: asserts it again while the ISR has a reason.
    pub(crate) fn intx_resample(&self) {
        let mut s = self.lock();
        if s.isr != 0 && !s.msix.enabled() {
            self.raise(&mut s, NO_VECTOR);
        }
    }

    /// The guest wrote the MSI-X table; the host's route is updated and a
    /// pending vector delivered under the lock, so a worker cannot fire
    /// the vector through a stale route in between.
    pub(crate) fn write_msix_table(&self, offset: u64, data: &[u8]) {
        let mut s = self.lock();
        if let Some(change) = s.msix.write_table(offset, data) {
            self.msix_changed(&mut s, &change);
        }
    }

    fn msix_changed(&self, s: &mut IrqState, change: &MsixChange) {
        self.irq.msix_changed(change);
        s.msix.deliver_pending(change.vector, &self.irq);
    }

    /// The guest wrote MSI-X's message control.
    pub(crate) fn set_msix_control(&self, control: u16) {
        let mut s = self.lock();
        s.msix.set_control(control, &self.irq);
    }

    /// Logs (rate-limited) what the guest did wrong and sets
    /// DEVICE_NEEDS_RESET with a configuration interrupt (once).
    pub fn fault(&self, e: &Error) {
        let mut s = self.lock();
        if s.faults.hit() {
            warn!(
                "virtio-pci {:04x}: {e}; device needs reset ({} faults)",
                self.device_id,
                s.faults.count()
            );
        }
        if !s.broken {
            s.broken = true;
            self.broken.store(true, Ordering::Release);
            Self::config_locked(&self.irq, &mut s);
        }
    }
}
