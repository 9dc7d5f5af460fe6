//! Virtio 1.x devices: the PCI transport ([`pci`]), virtio-net ([`net`]),
//! and what they share: feature and status bits, the [`VirtioDevice`] trait
//! a device implements under the transport, and the walk from descriptor
//! chains to iovecs over guest memory ([`chain`]).
//!
//! Everything the guest writes is hostile. A malformed ring or chain is
//! logged (rate-limited) and puts the device in DEVICE_NEEDS_RESET with a
//! configuration interrupt; nothing the guest does makes the model panic or
//! loop without progress.
//!
//! # Hosting a device (what a device process wires up)
//! - Configuration cycles and BAR accesses the vCPU process forwards go to
//!   [`PciDevice`](crate::pci::PciDevice) and
//!   [`HostedPciDevice`](crate::pci::HostedPciDevice) (`bar_read` answers a
//!   synchronous round trip; `bar_write` may be posted).
//! - One ioeventfd per [`notify_regions`](crate::pci::HostedPciDevice::notify_regions)
//!   entry, at BAR base + offset (length 0: any width); when one fires, call
//!   `queue_notify(queue)`. Re-register when the guest moves the BAR.
//! - One irqfd per MSI-X vector (`msix_vectors()`), written by
//!   [`Interrupts::signal_vector`](crate::pci::Interrupts::signal_vector);
//!   [`Interrupts::msix_changed`](crate::pci::Interrupts::msix_changed) must
//!   update that vector's MSI route before it returns. Optionally an INTx
//!   irqfd with a resample fd (`assert_intx`, then `intx_resample()`).
//! - For virtio-net, the tap fd in epoll (EPOLLIN | EPOLLOUT, edge-triggered
//!   is enough): [`backend_readable`](pci::VirtioPci::backend_readable) and
//!   [`backend_writable`](pci::VirtioPci::backend_writable).

pub mod chain;
pub mod irq;
pub mod net;
pub mod pci;

#[cfg(test)]
mod tests;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Feature bits common to all devices (bit numbers as masks).
pub mod features {
    /// Descriptors may point at indirect descriptor tables.
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// used_event / avail_event notification suppression.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// A virtio 1.x (non-legacy) driver.
    pub const VERSION_1: u64 = 1 << 32;
}

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}

/// What went wrong with something the guest gave the device. Every variant
/// is the guest's doing; the transport answers with DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("queue {queue}: descriptor chain at head {head} is empty, loops, or is too long")]
    BadChain { queue: u16, head: u16 },
    #[error("queue {queue}: buffer {addr:#x}+{len:#x} is not in guest RAM")]
    BadBuffer { queue: u16, addr: u64, len: u32 },
    #[error("queue {queue}: a {which} descriptor where only the other kind belongs")]
    WrongDirection { queue: u16, which: &'static str },
    #[error("queue {queue}: a {len}-byte buffer cannot hold the {need}-byte header")]
    ShortBuffer { queue: u16, len: usize, need: usize },
    #[error("queue {queue}: chain needs more than {max} segments")]
    TooManySegments { queue: u16, max: usize },
    #[error("queue {queue}: {detail}")]
    BadQueue { queue: u16, detail: String },
    #[error("queue {queue}: {source}")]
    Ring {
        queue: u16,
        #[source]
        source: virtio_queue::Error,
    },
    #[error("backend: {0}")]
    Backend(std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A virtio device under a transport: identity, features, configuration
/// space, and queue processing. Queues belong to the transport, which lends
/// them through [`QueueCtx`].
pub trait VirtioDevice: Send {
    /// Virtio device ID (1: network).
    fn device_type(&self) -> u16;
    /// PCI class and subclass.
    fn pci_class(&self) -> (u8, u8) {
        (0xff, 0)
    }
    /// Largest size of each queue (powers of two); their count is the
    /// device's number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers, VERSION_1 included.
    fn features(&self) -> u64;
    /// Whether the driver's feature set is one the device accepts, beyond
    /// being a subset of [`features`](Self::features) (checked already).
    fn features_valid(&self, acked: u64) -> bool {
        let _ = acked;
        true
    }
    /// Size of the device configuration space in bytes.
    fn config_len(&self) -> u32;
    /// Reads the device configuration space at `offset`; bytes beyond it read 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A driver write to the device configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
    /// The driver set DRIVER_OK with `features` negotiated.
    fn activate<M: GuestMemory>(&mut self, features: u64, ctx: &mut QueueCtx<'_, M>) -> Result<()>;
    /// The driver reset the device (status 0): back to power-on state.
    fn reset(&mut self);
    /// The driver notified queue `queue` (always one that is enabled).
    fn queue_notify<M: GuestMemory>(&mut self, queue: u16, ctx: &mut QueueCtx<'_, M>)
        -> Result<()>;
}

/// A queue as the transport keeps it: the driver-visible registers and,
/// once enabled, the live ring.
#[derive(Debug)]
pub(crate) struct QueueSlot {
    pub(crate) max_size: u16,
    pub(crate) size: u16,
    pub(crate) desc: u64,
    pub(crate) avail: u64,
    pub(crate) used: u64,
    pub(crate) msix_vector: u16,
    pub(crate) enabled: bool,
    pub(crate) queue: Queue,
}

/// What a device gets while it works: guest memory, the enabled queues, and
/// a record of which queues got used buffers (the transport interrupts for
/// those, subject to notification suppression) and of config changes.
pub struct QueueCtx<'a, M> {
    pub mem: &'a M,
    queues: &'a mut [QueueSlot],
    used: u64,
    raise: u64,
    config_changed: bool,
}

impl<'a, M: GuestMemory> QueueCtx<'a, M> {
    pub(crate) fn new(mem: &'a M, queues: &'a mut [QueueSlot]) -> Self {
        QueueCtx {
            mem,
            queues,
            used: 0,
            raise: 0,
            config_changed: false,
        }
    }

    /// Queue `index`, if the driver enabled it.
    pub fn queue(&mut self, index: u16) -> Option<&mut Queue> {
        self.queues
            .get_mut(usize::from(index))
            .filter(|s| s.enabled)
            .map(|s| &mut s.queue)
    }

    /// Where the driver put queue `index` and its MSI-X vector, if it is
    /// enabled: what a kernel data path (vhost) needs to take it over.
    pub fn vring(&self, index: u16) -> Option<(crate::backend::vhost_net::VringSpec, u16)> {
        use virtio_queue::QueueT;
        let s = self.queues.get(usize::from(index)).filter(|s| s.enabled)?;
        let spec = crate::backend::vhost_net::VringSpec {
            index: usize::from(index),
            size: s.size,
            desc: s.desc,
            avail: s.avail,
            used: s.used,
            next_avail: s.queue.next_avail(),
        };
        Some((spec, s.msix_vector))
    }

    /// Takes queue `index` (if enabled) out of the transport for a data
    /// path that works it on its own until the device resets; the
    /// transport keeps the registers and a fresh queue in its place.
    pub fn take_queue(&mut self, index: u16) -> Option<Queue> {
        let slot = self
            .queues
            .get_mut(usize::from(index))
            .filter(|s| s.enabled)?;
        let fresh = Queue::new(slot.max_size).ok()?;
        Some(std::mem::replace(&mut slot.queue, fresh))
    }

    /// Records that queue `index` got used buffers.
    pub fn mark_used(&mut self, index: u16) {
        if index < 64 {
            self.used |= 1 << index;
        }
    }

    /// Asks for queue `index`'s interrupt: the caller has applied
    /// notification suppression already (its queue is not the transport's).
    pub fn raise(&mut self, index: u16) {
        if index < 64 {
            self.raise |= 1 << index;
        }
    }

    /// Records a change of the device configuration space.
    pub fn config_changed(&mut self) {
        self.config_changed = true;
    }

    pub(crate) fn take(self) -> (u64, u64, bool) {
        (self.used, self.raise, self.config_changed)
    }
}

/// avail->flags: the driver wants no interrupts (without EVENT_IDX).
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Whether the driver wants an interrupt for the used buffers just put on
/// `queue` (queue index `index`, for errors): EVENT_IDX's used_event, or
/// the avail ring's NO_INTERRUPT flag.
pub fn needs_interrupt<M: GuestMemory>(queue: &mut Queue, mem: &M, index: u16) -> Result<bool> {
    let ring = |source| Error::Ring {
        queue: index,
        source,
    };
    if queue.event_idx_enabled() {
        return queue.needs_notification(mem).map_err(ring);
    }
    let flags: u16 = mem
        .read_obj(GuestAddress(queue.avail_ring()))
        .map_err(|e| ring(virtio_queue::Error::GuestMemory(e)))?;
    Ok(u16::from_le(flags) & AVAIL_F_NO_INTERRUPT == 0)
}

/// Rate-limits a log line: it is let through at the 1st, 2nd, 4th, 8th...
/// occurrence, so a guest repeating a fault cannot flood the log.
#[derive(Debug, Default)]
pub struct LogLimiter(u64);

impl LogLimiter {
    /// Counts an occurrence; true if this one should be logged.
    pub fn hit(&mut self) -> bool {
        self.0 = self.0.saturating_add(1);
        self.0.is_power_of_two()
    }

    /// Occurrences so far.
    pub fn count(&self) -> u64 {
        self.0
    }
}
