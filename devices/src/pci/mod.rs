//! PCI plumbing shared by every PCI device model: the configuration space,
//! BARs, the MSI-X table, and the traits a device implements to be reached
//! through them and to raise interrupts.

mod config;
pub mod msix;

pub use config::{offset, ConfigSpace, CONFIG_SPACE_SIZE, STATUS_CAP_LIST};
pub use msix::{MsixChange, MsixTable};

/// A function on the PCI bus, reached through configuration cycles.
pub trait PciDevice: Send {
    /// Reads the 32-bit configuration register `reg` (a dword index, 0..64).
    fn config_read(&mut self, reg: usize) -> u32;
    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` of configuration register `reg`.
    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]);
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// Memory below 4 GiB.
    Memory32,
    /// Memory anywhere; takes this BAR slot and the next.
    Memory64,
}

/// One BAR a device model asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarInfo {
    /// BAR slot, 0..=5.
    pub index: u8,
    /// Size in bytes, a power of two.
    pub size: u64,
    pub kind: BarKind,
    pub prefetchable: bool,
}

/// A doorbell inside a BAR that the host may serve with an ioeventfd: a
/// guest write of `len` bytes (0: any width) at `offset` of BAR `bar`
/// notifies queue `queue`, and the host then calls
/// [`HostedPciDevice::queue_notify`] instead of forwarding the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotifyRegion {
    pub bar: u8,
    pub offset: u64,
    pub len: u64,
    pub queue: u16,
}

/// How a device model raises interrupts. The hosting process implements it
/// with one irqfd per MSI-X vector (and one, with a resample fd, for INTx).
pub trait Interrupts: Send + Sync {
    /// Raises MSI-X vector `vector`. The model has already checked that
    /// MSI-X is enabled and the vector unmasked.
    fn signal_vector(&self, vector: u16);
    /// The guest changed MSI-X table entry `change.vector`. The host must
    /// have updated that vector's route when this returns: the model may
    /// signal the vector right after (a pending vector being unmasked).
    fn msix_changed(&self, change: &MsixChange) {
        let _ = change;
    }
    /// Asserts the INTx pin (level-triggered). KVM lowers it at EOI and
    /// signals the resample fd; the host then calls
    /// [`HostedPciDevice::intx_resample`], which asserts again if the
    /// device still has a reason to.
    fn assert_intx(&self) {}
}

/// A PCI device model as a device process hosts it: configuration cycles
/// (through [`PciDevice`]), BAR accesses forwarded by the vCPU process, and
/// the hooks for doorbells served by ioeventfds. BAR offsets are relative
/// to the BAR's start; accesses of odd sizes or offsets are ignored (reads
/// return zeros) rather than trusted.
pub trait HostedPciDevice: PciDevice {
    /// The BARs the device decodes.
    fn bars(&self) -> Vec<BarInfo>;
    /// A guest read of `data.len()` bytes at `offset` of BAR `bar`.
    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]);
    /// A guest write at `offset` of BAR `bar`.
    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]);
    /// Doorbells the host may register as ioeventfds.
    fn notify_regions(&self) -> Vec<NotifyRegion> {
        Vec::new()
    }
    /// A doorbell rang (an ioeventfd from [`notify_regions`](Self::notify_regions) fired).
    fn queue_notify(&mut self, queue: u16) {
        let _ = queue;
    }
    /// Number of MSI-X vectors (the host creates one irqfd for each).
    fn msix_vectors(&self) -> u16 {
        0
    }
    /// The INTx resample fd fired (the guest acknowledged the interrupt).
    fn intx_resample(&mut self) {}
    /// The 32-bit register at `offset` of BAR `bar` as a read would see
    /// it, without a read's side effects; `None` if the model does not say.
    /// The host may publish it for the vCPU process to answer reads from
    /// (only for registers the guest's writes cannot change).
    fn bar_peek(&mut self, bar: u8, offset: u64) -> Option<u32> {
        let _ = (bar, offset);
        None
    }
}
