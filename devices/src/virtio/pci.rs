//! The virtio 1.x PCI transport ("modern", non-transitional): vendor
//! capabilities pointing into one 64-bit memory BAR that holds the common
//! configuration, ISR, device configuration and notification areas, plus
//! the MSI-X table and PBA.
//!
//! BAR 0 (32 KiB, one page per structure):
//! ```text
//! 0x0000 common cfg   0x1000 ISR   0x2000 device cfg   0x3000 notify
//! 0x4000 MSI-X table  0x5000 MSI-X PBA
//! ```
//! Queue `q` is notified by a write at 0x3000 + 4 * q (queue_notify_off = q,
//! notify_off_multiplier = 4). MSI-X has one vector per queue plus one for
//! configuration changes.

use std::sync::Arc;

use log::warn;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory, Permissions};

use super::irq::Signals;
use super::{
    features, needs_interrupt, status, Error, LogLimiter, QueueCtx, QueueSlot, Result, VirtioDevice,
};
use crate::pci::msix::MsixTable;
use crate::pci::{
    offset, BarInfo, BarKind, ConfigSpace, HostedPciDevice, Interrupts, NotifyRegion, PciDevice,
};

/// PCI vendor ID of virtio devices.
pub const VENDOR_ID: u16 = 0x1af4;
/// A modern device's PCI device ID is this plus its virtio device ID.
pub const DEVICE_ID_BASE: u16 = 0x1040;
pub use super::irq::NO_VECTOR;

/// The BAR holding every structure.
pub const BAR: u8 = 0;
pub const BAR_SIZE: u64 = 0x8000;
pub const COMMON_OFFSET: u64 = 0x0000;
/// Length of the common configuration structure (virtio 1.0/1.1 fields).
pub const COMMON_LEN: u64 = 0x38;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
const PAGE: u64 = 0x1000;

/// Vendor capability structure types (cfg_type).
mod cap {
    pub const VENDOR_ID: u8 = 0x09;
    pub const COMMON: u8 = 1;
    pub const NOTIFY: u8 = 2;
    pub const ISR: u8 = 3;
    pub const DEVICE: u8 = 4;
    pub const PCI_CFG: u8 = 5;
}

/// Command register: INTx disabled.
const COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// Which structure of the BAR an access falls in, with the offset inside it.
enum Region {
    Common(u64),
    Isr(u64),
    Device(u64),
    Notify(u64),
    MsixTable(u64),
    MsixPba(u64),
}

/// A virtio device `D` on the PCI bus, over guest memory `M`, raising
/// interrupts through `I`.
pub struct VirtioPci<D, M, I> {
    config: ConfigSpace,
    /// MSI-X, the ISR and DEVICE_NEEDS_RESET, shared with data-path workers.
    signals: Arc<Signals<I>>,
    msix_vectors: u16,
    msix_cap: usize,
    pci_cfg_cap: usize,
    device: D,
    mem: M,
    status: u8,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    queue_select: u16,
    config_generation: u8,
    queues: Vec<QueueSlot>,
    oddities: LogLimiter,
}

impl QueueSlot {
    fn new(max_size: u16) -> Result<Self> {
        let queue = Queue::new(max_size).map_err(|source| Error::Ring { queue: 0, source })?;
        Ok(QueueSlot {
            max_size,
            size: max_size,
            desc: 0,
            avail: 0,
            used: 0,
            msix_vector: NO_VECTOR,
            enabled: false,
            queue,
        })
    }
}

impl<D: VirtioDevice, M: GuestMemory + Send, I: Interrupts> VirtioPci<D, M, I> {
    /// Puts `device` behind the transport. Fails only if the device asks
    /// for a queue size that is not a power of two up to 32768, or for more
    /// than 64 queues.
    pub fn new(device: D, mem: M, irq: I) -> Result<Self> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| QueueSlot::new(max))
            .collect::<Result<Vec<_>>>()?;
        if queues.len() > 64 {
            return Err(Error::BadQueue {
                queue: 64,
                detail: "more than 64 queues".into(),
            });
        }
        let (class, subclass) = device.pci_class();
        let mut config = ConfigSpace::new(
            VENDOR_ID,
            DEVICE_ID_BASE + device.device_type(),
            class,
            subclass,
            0,
            1,
        );
        config.set_u16(offset::SUBSYSTEM_VENDOR_ID, VENDOR_ID);
        // Non-transitional devices: subsystem ID 0x40 or higher.
        config.set_u16(offset::SUBSYSTEM_ID, 0x40 + device.device_type());
        config.set_u8(offset::INTERRUPT_PIN, 1);
        config.add_bar(&BarInfo {
            index: BAR,
            size: BAR_SIZE,
            kind: BarKind::Memory64,
            prefetchable: false,
        });
        let nq = queues.len() as u32;
        let vendor_cap = |config: &mut ConfigSpace, kind: u8, off: u64, len: u32, extra: &[u8]| {
            let mut body = [0u8; 18];
            let n = 14 + extra.len();
            body[0] = (n + 2) as u8; // cap_len counts the ID and next bytes
            body[1] = kind;
            body[2] = BAR;
            body[6..10].copy_from_slice(&(off as u32).to_le_bytes());
            body[10..14].copy_from_slice(&len.to_le_bytes());
            body[14..n].copy_from_slice(extra);
            config.add_capability(cap::VENDOR_ID, &body[..n])
        };
        vendor_cap(
            &mut config,
            cap::COMMON,
            COMMON_OFFSET,
            COMMON_LEN as u32,
            &[],
        );
        vendor_cap(
            &mut config,
            cap::NOTIFY,
            NOTIFY_OFFSET,
            nq.max(1) * NOTIFY_MULTIPLIER,
            &NOTIFY_MULTIPLIER.to_le_bytes(),
        );
        vendor_cap(&mut config, cap::ISR, ISR_OFFSET, 1, &[]);
        vendor_cap(
            &mut config,
            cap::DEVICE,
            DEVICE_OFFSET,
            device.config_len(),
            &[],
        );
        let pci_cfg_cap = vendor_cap(&mut config, cap::PCI_CFG, 0, 0, &[0; 4]).unwrap_or(0);
        // The window's bar, offset and length fields are the driver's.
        config.set_writable_u8(pci_cfg_cap + 4, 0xff);
        config.set_writable_u32(pci_cfg_cap + 8, u32::MAX);
        config.set_writable_u32(pci_cfg_cap + 12, u32::MAX);
        let msix = MsixTable::new(nq as u16 + 1);
        let msix_vectors = msix.len();
        let msix_cap = msix
            .add_capability(
                &mut config,
                BAR,
                MSIX_TABLE_OFFSET as u32,
                BAR,
                MSIX_PBA_OFFSET as u32,
            )
            .unwrap_or(0);
        let device_id = DEVICE_ID_BASE + device.device_type();
        Ok(VirtioPci {
            config,
            signals: Arc::new(Signals::new(irq, msix_vectors, queues.len(), device_id)),
            msix_vectors,
            msix_cap,
            pci_cfg_cap,
            device,
            mem,
            status: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            queue_select: 0,
            config_generation: 0,
            queues,
            oddities: LogLimiter::default(),
        })
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, for changes that raise no interrupt by themselves.
    pub(crate) fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The configuration space as the guest left it (BAR addresses, command).
    pub fn config_space(&self) -> &ConfigSpace {
        &self.config
    }

    pub fn mem(&self) -> &M {
        &self.mem
    }

    pub fn interrupts(&self) -> &I {
        self.signals.interrupts()
    }

    /// The interrupt state data-path workers share.
    pub fn signals(&self) -> &Arc<Signals<I>> {
        &self.signals
    }

    /// A copy of the MSI-X table as it stands.
    pub fn msix(&self) -> MsixTable {
        self.signals.lock().msix.clone()
    }

    /// The device status register.
    pub fn status(&self) -> u8 {
        if self.signals.broken() {
            self.status | status::DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    /// Features the driver acknowledged (final once FEATURES_OK is set).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Whether the device works its queues: DRIVER_OK, and neither
    /// FAILED nor DEVICE_NEEDS_RESET.
    pub fn live(&self) -> bool {
        self.status & status::DRIVER_OK != 0
            && self.status & status::FAILED == 0
            && !self.signals.broken()
    }

    /// Lets the device work on its queues (if live), then raises the
    /// interrupts it earned and turns an error into DEVICE_NEEDS_RESET.
    pub fn run<F>(&mut self, f: F)
    where
        F: FnOnce(&mut D, &mut QueueCtx<'_, M>) -> Result<()>,
    {
        if !self.live() {
            return;
        }
        let mut ctx = QueueCtx::new(&self.mem, &mut self.queues);
        let result = f(&mut self.device, &mut ctx);
        let (used, raise, config_changed) = ctx.take();
        for q in 0..self.queues.len() as u16 {
            if raise & (1 << q) != 0 {
                self.signals.queue_interrupt(q);
            } else if used & (1 << q) != 0 {
                let slot = &mut self.queues[usize::from(q)];
                match needs_interrupt(&mut slot.queue, &self.mem, q) {
                    Ok(true) => self.signals.queue_interrupt(q),
                    Ok(false) => {}
                    Err(e) => self.fault(e),
                }
            }
        }
        if config_changed {
            self.config_generation = self.config_generation.wrapping_add(1);
            self.signals.config_interrupt();
        }
        if let Err(e) = result {
            self.fault(e);
        }
    }

    /// Logs (rate-limited) what the guest did wrong and asks for a reset.
    fn fault(&mut self, e: Error) {
        self.signals.fault(&e);
    }

    /// Logs (rate-limited) an access the model ignores.
    fn odd(&mut self, what: &str, at: u64, len: usize) {
        if self.oddities.hit() {
            warn!("virtio-pci: ignored {what} of {len} bytes at {at:#x}");
        }
    }

    /// Interrupts for queue `q` as if it had just got used buffers: for a
    /// kernel data path whose interrupts reach the host (its vector masked,
    /// or INTx), which has already applied notification suppression.
    pub fn raise_queue_interrupt(&mut self, q: u16) {
        if self.live() && usize::from(q) < self.queues.len() {
            self.signals.queue_interrupt(q);
        }
    }

    /// Back to the power-on state, except MSI-X, which belongs to PCI.
    /// The device resets first: it stops its data-path workers before the
    /// queues they worked change under them.
    fn reset(&mut self) {
        self.device.reset();
        self.status = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        self.signals.reset();
        for slot in &mut self.queues {
            slot.queue.reset();
            slot.size = slot.max_size;
            slot.desc = 0;
            slot.avail = 0;
            slot.used = 0;
            slot.msix_vector = NO_VECTOR;
            slot.enabled = false;
        }
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // Bits stick until reset; DEVICE_NEEDS_RESET is the device's own.
        let mut new = old | (value & !status::DEVICE_NEEDS_RESET);
        if new & !old & status::FEATURES_OK != 0 && !self.features_acceptable() {
            new &= !status::FEATURES_OK;
        }
        if new & status::FEATURES_OK == 0 {
            new &= !status::DRIVER_OK;
        }
        self.status = new;
        if new & !old & status::DRIVER_OK != 0 {
            let features = self.driver_features;
            let event_idx = features & features::RING_EVENT_IDX != 0;
            for slot in &mut self.queues {
                slot.queue.set_event_idx(event_idx);
            }
            self.run(|dev, ctx| dev.activate(features, ctx));
        }
    }

    fn features_acceptable(&self) -> bool {
        let f = self.driver_features;
        f & !self.device.features() == 0
            && f & features::VERSION_1 != 0
            && self.device.features_valid(f)
    }

    /// Sets queue `q` live from its registers, or reports why not.
    fn enable_queue(&mut self, q: u16) -> Result<()> {
        let event_idx = self.driver_features & features::RING_EVENT_IDX != 0;
        let slot = &mut self.queues[usize::from(q)];
        if slot.enabled {
            return Ok(());
        }
        let ring = |source| Error::Ring { queue: q, source };
        let mut queue = Queue::new(slot.max_size).map_err(ring)?;
        queue.try_set_size(slot.size).map_err(ring)?;
        queue
            .try_set_desc_table_address(GuestAddress(slot.desc))
            .map_err(ring)?;
        queue
            .try_set_avail_ring_address(GuestAddress(slot.avail))
            .map_err(ring)?;
        queue
            .try_set_used_ring_address(GuestAddress(slot.used))
            .map_err(ring)?;
        let n = u64::from(slot.size);
        let areas = [
            ("descriptor table", slot.desc, 16 * n, Permissions::Read),
            ("available ring", slot.avail, 6 + 2 * n, Permissions::Read),
            ("used ring", slot.used, 6 + 8 * n, Permissions::Write),
        ];
        for (name, addr, len, access) in areas {
            if !self
                .mem
                .check_range(GuestAddress(addr), len as usize, access)
            {
                return Err(Error::BadQueue {
                    queue: q,
                    detail: format!("{name} {addr:#x}+{len:#x} is not in guest RAM"),
                });
            }
        }
        queue.set_event_idx(event_idx);
        queue.set_ready(true);
        if !queue.is_valid(&self.mem) {
            return Err(Error::BadQueue {
                queue: q,
                detail: "rejected by virtio-queue".into(),
            });
        }
        slot.queue = queue;
        slot.enabled = true;
        Ok(())
    }

    /// The selected queue, if it exists.
    fn selected(&mut self) -> Option<&mut QueueSlot> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    /// The value of the common configuration field that starts at `off`.
    fn common_field(&self, off: u64) -> u32 {
        let sel = self.queues.get(usize::from(self.queue_select));
        let q = |f: fn(&QueueSlot) -> u32| sel.map_or(0, f);
        let half = |v: u64, select: u32| match select {
            0 => v as u32,
            1 => (v >> 32) as u32,
            _ => 0,
        };
        match off {
            0x00 => self.device_feature_select,
            0x04 => half(self.device.features(), self.device_feature_select),
            0x08 => self.driver_feature_select,
            0x0c => half(self.driver_features, self.driver_feature_select),
            0x10 => u32::from(self.signals.lock().config_vector),
            0x12 => self.queues.len() as u32,
            0x14 => u32::from(self.status()),
            0x15 => u32::from(self.config_generation),
            0x16 => u32::from(self.queue_select),
            0x18 => q(|s| u32::from(s.size)),
            0x1a => sel.map_or(u32::from(NO_VECTOR), |s| u32::from(s.msix_vector)),
            0x1c => q(|s| u32::from(s.enabled)),
            0x1e => sel.map_or(0, |_| u32::from(self.queue_select)),
            0x20 => q(|s| s.desc as u32),
            0x24 => q(|s| (s.desc >> 32) as u32),
            0x28 => q(|s| s.avail as u32),
            0x2c => q(|s| (s.avail >> 32) as u32),
            0x30 => q(|s| s.used as u32),
            0x34 => q(|s| (s.used >> 32) as u32),
            _ => 0,
        }
    }

    /// Start and width of the common configuration field holding byte `off`.
    fn common_layout(off: u64) -> Option<(u64, usize)> {
        Some(match off {
            0x00..=0x0f => (off & !3, 4),
            0x10..=0x13 => (off & !1, 2),
            0x14 | 0x15 => (off, 1),
            0x16..=0x1f => (off & !1, 2),
            0x20..=0x37 => (off & !3, 4),
            _ => return None,
        })
    }

    fn common_read(&self, off: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let at = off + i as u64;
            *byte = match Self::common_layout(at) {
                Some((start, _)) => (self.common_field(start) >> ((at - start) * 8)) as u8,
                None => 0,
            };
        }
    }

    fn common_write(&mut self, off: u64, data: &[u8]) {
        if Self::common_layout(off) != Some((off, data.len())) {
            self.odd("common cfg write", off, data.len());
            return;
        }
        let mut b = [0u8; 4];
        b[..data.len()].copy_from_slice(data);
        let v = u32::from_le_bytes(b);
        let v16 = v as u16;
        let features_locked = self.status & status::FEATURES_OK != 0;
        let vectors = self.msix_vectors;
        let valid_vector = |v: u16| if v < vectors { v } else { NO_VECTOR };
        match off {
            0x00 => self.device_feature_select = v,
            0x08 => self.driver_feature_select = v,
            0x0c if !features_locked => match self.driver_feature_select {
                0 => self.driver_features = self.driver_features & !0xffff_ffff | u64::from(v),
                1 => self.driver_features = self.driver_features & 0xffff_ffff | u64::from(v) << 32,
                _ => {}
            },
            0x10 => self.signals.lock().config_vector = valid_vector(v16),
            0x14 => self.write_status(v as u8),
            0x16 => self.queue_select = v16,
            0x1a => {
                let q = usize::from(self.queue_select);
                if let Some(s) = self.selected() {
                    s.msix_vector = valid_vector(v16);
                    let v = s.msix_vector;
                    if let Some(slot) = self.signals.lock().queue_vectors.get_mut(q) {
                        *slot = v;
                    }
                }
            }
            0x1c => {
                let q = self.queue_select;
                if v16 == 1 && usize::from(q) < self.queues.len() {
                    if let Err(e) = self.enable_queue(q) {
                        self.fault(e);
                    }
                }
            }
            0x18 | 0x20..=0x37 => {
                let Some(s) = self.selected().filter(|s| !s.enabled) else {
                    return;
                };
                let set = |r: &mut u64, high: bool| {
                    *r = if high {
                        *r & 0xffff_ffff | u64::from(v) << 32
                    } else {
                        *r & !0xffff_ffff | u64::from(v)
                    }
                };
                match off {
                    0x18 => s.size = v16,
                    0x20 | 0x24 => set(&mut s.desc, off == 0x24),
                    0x28 | 0x2c => set(&mut s.avail, off == 0x2c),
                    _ => set(&mut s.used, off == 0x34),
                }
            }
            _ => {}
        }
    }

    /// The structure an access of `len` bytes at `offset` of the BAR falls
    /// wholly inside, if any.
    fn region(&self, offset: u64, len: usize) -> Option<Region> {
        let end = offset.checked_add(len as u64)?;
        let base = offset & !(PAGE - 1);
        if end > base.saturating_add(PAGE) || len == 0 || len > 8 {
            return None;
        }
        let off = offset - base;
        let inside = |limit: u64| end - base <= limit;
        match base {
            COMMON_OFFSET if inside(PAGE) => Some(Region::Common(off)),
            ISR_OFFSET if inside(PAGE) => Some(Region::Isr(off)),
            DEVICE_OFFSET if inside(u64::from(self.device.config_len())) => {
                Some(Region::Device(off))
            }
            NOTIFY_OFFSET => Some(Region::Notify(off)),
            MSIX_TABLE_OFFSET if inside(u64::from(self.msix_vectors) * 16) => {
                Some(Region::MsixTable(off))
            }
            MSIX_PBA_OFFSET if inside(u64::from(self.msix_vectors).div_ceil(64) * 8) => {
                Some(Region::MsixPba(off))
            }
            _ => None,
        }
    }

    /// A read through the PCI configuration access capability's window.
    fn window(&self) -> Option<(u8, u64, usize)> {
        let at = self.pci_cfg_cap;
        let bar = self.config.u8_at(at + 4);
        let off = u64::from(self.config.u32_at(at + 8));
        let len = self.config.u32_at(at + 12) as usize;
        (matches!(len, 1 | 2 | 4) && off % len as u64 == 0).then_some((bar, off, len))
    }

    fn window_data_reg(&self) -> usize {
        (self.pci_cfg_cap + 16) / 4
    }

    /// The guest rang queue `q`'s doorbell.
    fn notify(&mut self, q: u16) {
        let enabled = self.queues.get(usize::from(q)).is_some_and(|s| s.enabled);
        if !enabled {
            self.odd("notify of a missing or disabled queue", u64::from(q), 0);
            return;
        }
        self.run(|dev, ctx| dev.queue_notify(q, ctx));
    }
}

impl<D: VirtioDevice, M: GuestMemory + Send, I: Interrupts> PciDevice for VirtioPci<D, M, I> {
    fn config_read(&mut self, reg: usize) -> u32 {
        if self.pci_cfg_cap != 0 && reg == self.window_data_reg() {
            let mut b = [0u8; 4];
            if let Some((bar, off, len)) = self.window() {
                self.bar_read(bar, off, &mut b[..len]);
            }
            return u32::from_le_bytes(b);
        }
        self.config.read_reg(reg)
    }

    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        if self.pci_cfg_cap != 0 && reg == self.window_data_reg() {
            if let Some((bar, off, len)) = self.window() {
                if offset == 0 && data.len() >= len {
                    self.bar_write(bar, off, &data[..len]);
                }
            }
            return;
        }
        self.config.write_reg(reg, offset, data);
        let intx = self.config.u16_at(offset::COMMAND) & COMMAND_INTX_DISABLE == 0;
        self.signals.lock().intx_enabled = intx;
        let Some(start) = reg.checked_mul(4).and_then(|r| r.checked_add(offset)) else {
            return;
        };
        let control = self.msix_cap + 2;
        if self.msix_cap != 0 && start < control + 2 && start + data.len() > control {
            let value = self.config.u16_at(control);
            self.signals.set_msix_control(value);
        }
    }
}

impl<D: VirtioDevice, M: GuestMemory + Send, I: Interrupts> HostedPciDevice for VirtioPci<D, M, I> {
    fn bars(&self) -> Vec<BarInfo> {
        vec![BarInfo {
            index: BAR,
            size: BAR_SIZE,
            kind: BarKind::Memory64,
            prefetchable: false,
        }]
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let region = if bar == BAR {
            self.region(offset, data.len())
        } else {
            None
        };
        match region {
            Some(Region::Common(off)) => self.common_read(off, data),
            Some(Region::Isr(off)) => {
                // Reading the ISR clears it (and so lowers INTx).
                if off == 0 {
                    data[0] = std::mem::take(&mut self.signals.lock().isr);
                }
            }
            Some(Region::Device(off)) => self.device.read_config(off, data),
            Some(Region::Notify(_)) => {}
            Some(Region::MsixTable(off)) => self.signals.lock().msix.read_table(off, data),
            Some(Region::MsixPba(off)) => self.signals.lock().msix.read_pba(off, data),
            None => self.odd("BAR read", offset, data.len()),
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        let region = if bar == BAR {
            self.region(offset, data.len())
        } else {
            None
        };
        match region {
            Some(Region::Common(off)) => self.common_write(off, data),
            Some(Region::Device(off)) => self.device.write_config(off, data),
            Some(Region::Notify(off)) => {
                let q = off / u64::from(NOTIFY_MULTIPLIER);
                match u16::try_from(q) {
                    Ok(q) if off % u64::from(NOTIFY_MULTIPLIER) == 0 => self.notify(q),
                    _ => self.odd("notify", offset, data.len()),
                }
            }
            Some(Region::MsixTable(off)) => self.signals.write_msix_table(off, data),
            Some(Region::Isr(_)) | Some(Region::MsixPba(_)) => {}
            None => self.odd("BAR write", offset, data.len()),
        }
    }

    fn notify_regions(&self) -> Vec<NotifyRegion> {
        (0..self.queues.len() as u16)
            .map(|q| NotifyRegion {
                bar: BAR,
                offset: NOTIFY_OFFSET + u64::from(q) * u64::from(NOTIFY_MULTIPLIER),
                len: 0,
                queue: q,
            })
            .collect()
    }

    fn queue_notify(&mut self, queue: u16) {
        self.notify(queue);
    }

    fn msix_vectors(&self) -> u16 {
        self.msix_vectors
    }

    fn intx_resample(&mut self) {
        self.signals.intx_resample();
    }
}
