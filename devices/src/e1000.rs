//! Intel 82540EM Gigabit Ethernet ("e1000"): the NIC every guest has a
//! driver for, as a plain state machine over a [`NetBackend`].
//!
//! - PCI 8086:100E, class 02:00:00, INTA, no MSI; BAR 0 holds the
//!   registers (128 KiB of memory), BAR 1 reaches them indirectly through
//!   IOADDR/IODATA (64 bytes of I/O ports).
//! - The 64-word EEPROM answers EERD and Microwire bit-banging through
//!   EECD; the PHY (a Marvell 88E1011) answers MDIC; the link is what the
//!   host says ([`E1000::set_link`]), 1000 Mb/s full duplex, negotiated at
//!   once.
//! - Transmit and receive rings are worked synchronously: a write of TDT
//!   sends, the host's readable/writable events move frames. Checksum
//!   offload and TCP segmentation are done in software.
//! - Interrupts are level-triggered INTx: ICR & IMS. The model asserts the
//!   line when that becomes non-zero, and again at each resample while it
//!   stays non-zero; it never lowers it (KVM does, at the guest's EOI).
//!   ITR throttles them: an interrupt that comes sooner than ITR × 256 ns
//!   after the last one waits until then (the host arms a timer for
//!   [`E1000::irq_deadline`]), while one after a quiet spell is raised at
//!   once. The other moderation registers (RDTR, RADV, TIDV, TADV) are
//!   stored and ignored.
//!
//! Left out: receive checksum offload (every frame says "not checked",
//! IXSM), skipping receive descriptors with a null buffer address (0 is an
//! address like any other here), wake-up and manageability (their
//! registers read 0), flow control, and EEPROM writes.
//!
//! Everything the guest writes is hostile: a ring that is empty, outside
//! RAM, or whose head or tail lies beyond it, or a descriptor pointing
//! outside RAM, stops that ring (logged, rate-limited) until the guest
//! writes one of its registers or resets the device; a packet that is too
//! long or cannot be segmented is dropped. Every loop is bounded by the
//! ring size, and guest memory is reached through vm-memory's checked
//! accessors only.
//!
//! # Hosting (what a device process wires up)
//! Configuration cycles and BAR accesses go to [`PciDevice`] and
//! [`HostedPciDevice`]; the INTx irqfd with its resample fd to
//! [`Interrupts::assert_intx`] and [`HostedPciDevice::intx_resample`];
//! the tap fd in epoll (edge-triggered is enough) to
//! [`E1000::backend_readable`] and [`E1000::backend_writable`].
//! `intx_resample` must follow every EOI: the model asserts INTx only on
//! a rising edge of its own view of the line, which a resample lowers.
//! The tap keeps its offloads off (no TUNSETOFFLOAD): frames go out behind
//! an all-zero virtio_net_hdr, and GSO frames coming in are dropped.

mod crc;
mod eeprom;
mod mmio;
mod offload;
mod phy;
pub mod regs;
mod ring;
mod rx;
mod stats;
mod tx;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::{Duration, Instant};

use log::warn;
use vm_memory::GuestMemory;

pub use eeprom::{CHECKSUM_SUM as EEPROM_CHECKSUM_SUM, WORDS as EEPROM_WORDS};
pub use phy::PHY_ID;

use crate::pci::{offset, BarInfo, BarKind, ConfigSpace, HostedPciDevice, Interrupts, PciDevice};
use crate::virtio::net::NetBackend;
use crate::virtio::LogLimiter;
use eeprom::Eeprom;
use mmio::Regs;
use phy::Phy;
use regs::{int, status};
use rx::Rx;
use stats::Stats;
use tx::Tx;

pub const VENDOR_ID: u16 = 0x8086;
pub const DEVICE_ID: u16 = 0x100e;
/// The subsystem QEMU gives its e1000 (Red Hat, "QEMU").
pub const SUBSYSTEM_VENDOR_ID: u16 = 0x1af4;
pub const SUBSYSTEM_ID: u16 = 0x1100;
pub const REVISION: u8 = 3;
/// BAR 0: the registers.
pub const MMIO_BAR: u8 = 0;
pub const MMIO_SIZE: u64 = 0x2_0000;
/// BAR 1: IOADDR at 0, IODATA at 4.
pub const IO_BAR: u8 = 1;
pub const IO_SIZE: u64 = 0x40;

const BARS: [BarInfo; 2] = [
    BarInfo {
        index: MMIO_BAR,
        size: MMIO_SIZE,
        kind: BarKind::Memory32,
        prefetchable: false,
    },
    BarInfo {
        index: IO_BAR,
        size: IO_SIZE,
        kind: BarKind::Io,
        prefetchable: false,
    },
];

/// PCI command register bits.
const COMMAND_BUS_MASTER: u16 = 1 << 2;
const COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// Which ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Rx,
    Tx,
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dir::Rx => "rx",
            Dir::Tx => "tx",
        })
    }
}

/// What the guest got wrong. Ring faults stop the ring; the others drop a
/// packet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{dir} ring has length 0")]
    EmptyRing { dir: Dir },
    #[error("{dir} ring: head {head} or tail {tail} beyond its {count} descriptors")]
    BeyondRing {
        dir: Dir,
        head: u32,
        tail: u32,
        count: u32,
    },
    #[error("{dir} ring: {len:#x} bytes at {base:#x} are not guest RAM")]
    RingOutsideRam { dir: Dir, base: u64, len: u64 },
    #[error("{dir} descriptor {index}: buffer {addr:#x}+{len:#x} is not guest RAM")]
    BadBuffer {
        dir: Dir,
        index: u32,
        addr: u64,
        len: usize,
    },
    #[error("tx: packet longer than {max} bytes dropped")]
    PacketTooLong { max: usize },
    #[error("tx: segmentation impossible: {0}; packet dropped")]
    BadTso(&'static str),
    #[error("tx descriptor {index}: unknown type {dtyp}, skipped")]
    BadDescriptorType { index: u32, dtyp: u32 },
    #[error("rx: a {len}-byte frame needs more than the ring's {count} descriptors; dropped")]
    FrameTooBig { len: usize, count: u32 },
}

/// Rate limiters, one per kind of complaint.
#[derive(Debug, Default)]
struct Logs {
    faults: LogLimiter,
    drops: LogLimiter,
    unknown: LogLimiter,
    backend: LogLimiter,
}

/// The 82540EM on backend `B`, over guest memory `M`, interrupting
/// through `I`.
pub struct E1000<B, M, I> {
    config: ConfigSpace,
    backend: B,
    mem: M,
    irq: I,
    mac: [u8; 6],
    link_up: bool,
    regs: Regs,
    eeprom: Eeprom,
    phy: Phy,
    stats: Stats,
    tx: Tx,
    rx: Rx,
    /// The zeroed header written before each frame (the backend's size).
    vnet_hdr: Vec<u8>,
    /// INTx asserted and not resampled since.
    intx: bool,
    /// When INTx was last asserted, and whether an interrupt waits for
    /// the ITR interval to pass.
    last_irq: Option<Instant>,
    irq_deferred: bool,
    clock: Box<dyn Fn() -> Instant + Send>,
    io_addr: u32,
    logs: Logs,
}

impl<B: NetBackend, M: GuestMemory + Send, I: Interrupts> E1000<B, M, I> {
    /// A NIC with address `mac` on `backend`, its link up. Before each
    /// frame it sends it writes `backend.vnet_hdr_len()` zero bytes (a
    /// virtio_net_hdr asking for nothing), and it skips as many before each
    /// frame it reads.
    pub fn new(backend: B, mac: [u8; 6], mem: M, irq: I) -> Self {
        let mut config = ConfigSpace::new(VENDOR_ID, DEVICE_ID, 0x02, 0x00, 0x00, REVISION);
        config.set_u16(offset::SUBSYSTEM_VENDOR_ID, SUBSYSTEM_VENDOR_ID);
        config.set_u16(offset::SUBSYSTEM_ID, SUBSYSTEM_ID);
        config.set_u8(offset::INTERRUPT_PIN, 1);
        for bar in &BARS {
            config.add_bar(bar);
        }
        let hdr_len = backend.vnet_hdr_len();
        E1000 {
            config,
            backend,
            mem,
            irq,
            mac,
            link_up: true,
            regs: Regs::new(&mac),
            eeprom: Eeprom::new(mac, DEVICE_ID, SUBSYSTEM_VENDOR_ID, SUBSYSTEM_ID),
            phy: Phy::new(true),
            stats: Stats::default(),
            tx: Tx::new(),
            rx: Rx::new(hdr_len),
            vnet_hdr: vec![0; hdr_len],
            intx: false,
            last_irq: None,
            irq_deferred: false,
            clock: Box::new(Instant::now),
            io_addr: 0,
            logs: Logs::default(),
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn mem(&self) -> &M {
        &self.mem
    }

    pub fn interrupts(&self) -> &I {
        &self.irq
    }

    /// The address the NIC was made with (the EEPROM's, RAL0/RAH0's after reset).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// The configuration space as the guest left it (BAR addresses, command).
    pub fn config_space(&self) -> &ConfigSpace {
        &self.config
    }

    /// The EEPROM's words.
    pub fn eeprom(&self) -> &[u16; EEPROM_WORDS] {
        self.eeprom.words()
    }

    /// Whether transmission waits for the backend to become writable.
    pub fn tx_blocked(&self) -> bool {
        self.tx.blocked
    }

    /// The backend became readable (EPOLLIN, edge-triggered is enough):
    /// reads frames until it has none or the guest has no free
    /// descriptors; the guest's next RDT write resumes.
    pub fn backend_readable(&mut self) {
        self.rx.pending = true;
        self.process_rx();
    }

    /// The backend became writable (EPOLLOUT): resumes a blocked transmit.
    pub fn backend_writable(&mut self) {
        if self.tx.blocked {
            self.tx.blocked = false;
            self.process_tx();
        }
    }

    /// Sets the link state (cable plugged or not); a change raises LSC.
    pub fn set_link(&mut self, up: bool) {
        if self.link_up == up {
            return;
        }
        self.link_up = up;
        self.phy.set_link(up);
        self.raise(int::LSC);
        if up {
            self.process_tx();
            self.process_rx();
        }
    }

    /// CTRL.RST: registers, EEPROM interface and rings back to their
    /// power-on state. The PHY and the PCI configuration are not reset.
    fn reset(&mut self) {
        self.regs = Regs::new(&self.mac);
        self.eeprom.reset();
        self.tx.reset();
        self.rx.reset();
        self.io_addr = 0;
        self.last_irq = None;
        self.irq_deferred = false;
    }

    fn status(&self) -> u32 {
        let link = if self.link_up { status::LU } else { 0 };
        status::FD | status::SPEED_1000 | status::ASDV_1000 | status::MTXCKOK | link
    }

    fn bus_master(&self) -> bool {
        self.config.u16_at(offset::COMMAND) & COMMAND_BUS_MASTER != 0
    }

    /// Sets interrupt causes and updates the line.
    fn raise(&mut self, cause: u32) {
        self.regs.icr |= cause;
        self.update_irq();
    }

    /// Asserts INTx if an unmasked cause is pending and the line is not
    /// already up, unless ITR says it is too soon after the last one.
    fn update_irq(&mut self) {
        let pending = self.regs.icr & self.regs.ims != 0;
        let enabled = self.config.u16_at(offset::COMMAND) & COMMAND_INTX_DISABLE == 0;
        if !pending || !enabled || self.intx {
            self.irq_deferred = false;
            return;
        }
        let now = (self.clock)();
        if let Some(due) = self.throttled_until() {
            if now < due {
                self.irq_deferred = true;
                return;
            }
        }
        self.irq_deferred = false;
        self.last_irq = Some(now);
        self.intx = true;
        self.irq.assert_intx();
    }

    /// The earliest time ITR lets the next interrupt through.
    fn throttled_until(&mut self) -> Option<Instant> {
        let itr = self.read_reg(regs::ITR, false) & 0xffff;
        let interval = Duration::from_nanos(u64::from(itr) * 256);
        self.last_irq
            .filter(|_| itr != 0)
            .map(|last| last + interval)
    }

    /// When the host should call [`E1000::irq_timer`]: an interrupt is
    /// held back by ITR until then.
    pub fn irq_deadline(&mut self) -> Option<Instant> {
        if !self.irq_deferred {
            return None;
        }
        // ITR may have been cleared meanwhile: then at once.
        Some(self.throttled_until().unwrap_or_else(|| (self.clock)()))
    }

    /// The ITR deadline passed: raises the interrupt held back, if it is
    /// still due.
    pub fn irq_timer(&mut self) {
        self.update_irq();
    }

    /// Replaces the clock ITR is measured with (tests).
    pub fn set_clock(&mut self, clock: Box<dyn Fn() -> Instant + Send>) {
        self.clock = clock;
    }

    /// Stops ring `dir` for what the guest did wrong.
    fn fault(&mut self, dir: Dir, e: Error) {
        match dir {
            Dir::Rx => self.rx.fault = true,
            Dir::Tx => self.tx.fault = true,
        }
        if self.logs.faults.hit() {
            warn!(
                "e1000: {e}; {dir} ring stopped until reprogrammed or reset ({} faults)",
                self.logs.faults.count()
            );
        }
    }

    /// Logs a dropped packet or skipped descriptor (rate-limited).
    fn dropped(&mut self, e: Error) {
        if self.logs.drops.hit() {
            warn!("e1000: {e} ({} drops)", self.logs.drops.count());
        }
    }
}

impl<B: NetBackend, M: GuestMemory + Send, I: Interrupts> PciDevice for E1000<B, M, I> {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read_reg(reg)
    }

    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        let before = self.config.u16_at(offset::COMMAND);
        self.config.write_reg(reg, offset, data);
        let after = self.config.u16_at(offset::COMMAND);
        if after & !before & COMMAND_BUS_MASTER != 0 {
            self.process_tx();
            self.process_rx();
        }
        if before & !after & COMMAND_INTX_DISABLE != 0 {
            self.update_irq();
        }
    }
}

impl<B: NetBackend, M: GuestMemory + Send, I: Interrupts> HostedPciDevice for E1000<B, M, I> {
    fn bars(&self) -> Vec<BarInfo> {
        BARS.to_vec()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        match bar {
            MMIO_BAR => self.mmio_read(offset, data),
            IO_BAR => self.io_read(offset, data),
            _ => data.fill(0),
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        match bar {
            MMIO_BAR => self.mmio_write(offset, data),
            IO_BAR => self.io_write(offset, data),
            _ => {}
        }
    }

    fn intx_resample(&mut self) {
        self.intx = false;
        self.update_irq();
    }

    fn bar_peek(&mut self, bar: u8, offset: u64) -> Option<u32> {
        let offset = u32::try_from(offset).ok().filter(|o| o % 4 == 0)?;
        (bar == MMIO_BAR && u64::from(offset) < MMIO_SIZE).then(|| self.read_reg(offset, false))
    }
}
