//! virtio-net: one receive and one transmit queue plus a control queue,
//! over a [`NetBackend`] (a tap with IFF_VNET_HDR in production).
//!
//! Frames move with one readv/writev per frame straight between the
//! backend and the guest's buffers: the 12-byte `virtio_net_hdr_v1` passes
//! through unchanged when the backend speaks it (a tap whose vnet header
//! size is 12), and is made up or stripped when it does not. With
//! MRG_RXBUF a received frame may spread over several chains; the device
//! then gathers enough of them before the read and gives back the unused.
//! Offloads are offered only as far as the backend can do them, and
//! applied to it (TUNSETOFFLOAD) when the driver sets DRIVER_OK.
//!
//! This file holds the device (features, configuration space, lifecycle,
//! the host's entry points); `net/rx.rs`, `net/tx.rs` and `net/ctrl.rs`
//! work the three queues.

use std::io::{self, IoSlice, IoSliceMut};

use log::warn;
use virtio_queue::{Queue, QueueOwnedT};
use vm_memory::GuestMemory;

mod ctrl;
mod rx;
mod tx;

use super::chain::IovBuf;
use super::pci::VirtioPci;
use super::{features as common, Error, LogLimiter, QueueCtx, Result, VirtioDevice};
pub use crate::backend::vhost_net::VringSpec;
use crate::pci::Interrupts;

/// Virtio device ID of a network card.
pub const DEVICE_TYPE: u16 = 1;
/// Queue indices.
pub const RX: u16 = 0;
pub const TX: u16 = 1;
pub const CTRL: u16 = 2;
/// Size of `virtio_net_hdr_v1`.
pub const HDR_LEN: usize = 12;
/// Largest frame (Ethernet header and a 64 KiB GSO payload), as the spec
/// sizes receive buffers.
pub const MAX_FRAME: usize = 65550;

/// virtio-net feature bits.
pub mod features {
    pub const CSUM: u64 = 1 << 0;
    pub const GUEST_CSUM: u64 = 1 << 1;
    pub const MAC: u64 = 1 << 5;
    pub const GUEST_TSO4: u64 = 1 << 7;
    pub const GUEST_TSO6: u64 = 1 << 8;
    pub const GUEST_ECN: u64 = 1 << 9;
    pub const GUEST_UFO: u64 = 1 << 10;
    pub const HOST_TSO4: u64 = 1 << 11;
    pub const HOST_TSO6: u64 = 1 << 12;
    pub const HOST_ECN: u64 = 1 << 13;
    pub const HOST_UFO: u64 = 1 << 14;
    pub const MRG_RXBUF: u64 = 1 << 15;
    pub const STATUS: u64 = 1 << 16;
    pub const CTRL_VQ: u64 = 1 << 17;
    pub const CTRL_RX: u64 = 1 << 18;
    pub const CTRL_MAC_ADDR: u64 = 1 << 23;
    /// The offloads a backend may support; the rest depends on nothing.
    pub const OFFLOADS: u64 = CSUM
        | GUEST_CSUM
        | GUEST_TSO4
        | GUEST_TSO6
        | GUEST_ECN
        | GUEST_UFO
        | HOST_TSO4
        | HOST_TSO6
        | HOST_ECN
        | HOST_UFO;
    /// Offloads in the device-to-driver direction: what TUNSETOFFLOAD sets.
    pub const GUEST_OFFLOADS: u64 = GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | GUEST_ECN | GUEST_UFO;
    /// (feature, features of which it needs at least one), virtio 1.x 5.1.3.1.
    pub const DEPENDENCIES: [(u64, u64); 10] = [
        (GUEST_TSO4, GUEST_CSUM),
        (GUEST_TSO6, GUEST_CSUM),
        (GUEST_ECN, GUEST_TSO4 | GUEST_TSO6),
        (GUEST_UFO, GUEST_CSUM),
        (HOST_TSO4, CSUM),
        (HOST_TSO6, CSUM),
        (HOST_ECN, HOST_TSO4 | HOST_TSO6),
        (HOST_UFO, CSUM),
        (CTRL_RX, CTRL_VQ),
        (CTRL_MAC_ADDR, CTRL_VQ),
    ];
}

/// Status field: link up.
const S_LINK_UP: u16 = 1;
/// Control command acks.
pub const CTRL_OK: u8 = 0;
pub const CTRL_ERR: u8 = 1;

/// Where frames go to and come from: a tap in production.
pub trait NetBackend: Send {
    /// Reads one frame into `iov`, preceded by a `vnet_hdr_len()`-byte
    /// header; `WouldBlock` when there is none (the fd is non-blocking).
    fn readv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize>;
    /// Writes one frame, preceded by its header, from `iov`.
    fn writev(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Size of the header before each frame: 12 (`virtio_net_hdr_v1`, a tap
    /// with IFF_VNET_HDR and TUNSETVNETHDRSZ 12) or 0 (bare frames).
    fn vnet_hdr_len(&self) -> usize;
    /// virtio-net offload feature bits ([`features::OFFLOADS`]) the backend
    /// can honour; none by default.
    fn offloads(&self) -> u64 {
        0
    }
    /// Turns on the receive offloads among `acked` (GUEST_* bits, to map to
    /// TUN_F_*) and turns off the others.
    fn set_offloads(&mut self, acked: u64) -> io::Result<()> {
        let _ = acked;
        Ok(())
    }
}

/// A data path that takes the RX and TX queues off the device (vhost-net):
/// while it runs the device works only its control queue, and neither
/// reads nor writes the backend.
pub trait NetOffload: Send {
    /// The ring features ([`OFFLOAD_RING_FEATURES`]) it can do; the device
    /// offers no others.
    fn ring_features(&self) -> u64;
    /// Starts on `rings` (RX, then TX: where each lies, and its MSI-X
    /// vector) with `features` negotiated.
    fn start(&mut self, features: u64, rings: &[(VringSpec, u16)]) -> io::Result<()>;
    /// Stops touching the rings (device reset).
    fn stop(&mut self);
}

/// Ring features an offload must support for the device to offer them.
pub const OFFLOAD_RING_FEATURES: u64 =
    common::RING_EVENT_IDX | common::RING_INDIRECT_DESC | features::MRG_RXBUF;

/// Receive filtering as the driver last set it through the control queue.
/// The model records it; a host may apply it to the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxFilter {
    pub promisc: bool,
    pub allmulti: bool,
    pub unicast: Vec<[u8; 6]>,
    pub multicast: Vec<[u8; 6]>,
}

impl Default for RxFilter {
    /// Everything passes until the driver says otherwise.
    fn default() -> Self {
        RxFilter {
            promisc: true,
            allmulti: false,
            unicast: Vec::new(),
            multicast: Vec::new(),
        }
    }
}

/// Frame and error counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
    pub tx_errors: u64,
}

/// The virtio-net device.
pub struct Net<B> {
    backend: B,
    configured_mac: [u8; 6],
    mac: [u8; 6],
    mtu: u16,
    link_up: bool,
    queue_sizes: [u16; 3],
    offered: u64,
    acked: u64,
    filter: RxFilter,
    /// The backend may hold frames not read yet.
    rx_pending: bool,
    /// The backend refused a frame; wait until it is writable.
    tx_blocked: bool,
    iov: IovBuf,
    rx_chains: Vec<(u16, usize)>,
    ctrl_buf: Vec<u8>,
    stats: NetStats,
    backend_errors: LogLimiter,
    /// The kernel's data path, if the RX and TX queues go there.
    offload: Option<Box<dyn NetOffload>>,
    /// The offload is running (between activation and reset).
    offloaded: bool,
}

/// virtio-net behind the PCI transport.
pub type VirtioNetPci<B, M, I> = VirtioPci<Net<B>, M, I>;

/// A random locally administered unicast MAC address.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most `mac.len()` bytes into `mac`.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if n != mac.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        mac.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    mac[0] = (mac[0] & !1) | 2;
    mac
}

impl<B: NetBackend> Net<B> {
    /// A device on `backend` with address `mac` (random if `None`) and
    /// queues of `queue_size` entries (a power of two, at most 32768).
    pub fn new(backend: B, mac: Option<[u8; 6]>, queue_size: u16) -> Result<Self> {
        let hdr = backend.vnet_hdr_len();
        if hdr != 0 && hdr != HDR_LEN {
            return Err(Error::Backend(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("vnet header of {hdr} bytes (want 0 or {HDR_LEN})"),
            )));
        }
        let mut offered = common::VERSION_1
            | common::RING_EVENT_IDX
            | common::RING_INDIRECT_DESC
            | features::MAC
            | features::STATUS
            | features::MRG_RXBUF
            | features::CTRL_VQ
            | features::CTRL_RX
            | features::CTRL_MAC_ADDR;
        if hdr == HDR_LEN {
            offered |= backend.offloads() & features::OFFLOADS;
        }
        // Drop offloads whose prerequisites are missing (twice: ECN needs TSO needs CSUM).
        for _ in 0..2 {
            for (f, needs) in features::DEPENDENCIES {
                if offered & needs == 0 {
                    offered &= !f;
                }
            }
        }
        let mac = mac.unwrap_or_else(random_mac);
        Ok(Net {
            backend,
            configured_mac: mac,
            mac,
            mtu: 1500,
            link_up: true,
            queue_sizes: [queue_size; 3],
            offered,
            acked: 0,
            filter: RxFilter::default(),
            rx_pending: true,
            tx_blocked: false,
            iov: IovBuf::with_capacity(64),
            rx_chains: Vec::with_capacity(64),
            ctrl_buf: Vec::new(),
            stats: NetStats::default(),
            backend_errors: LogLimiter::default(),
            offload: None,
            offloaded: false,
        })
    }

    /// Hands the RX and TX queues to `offload` whenever the driver starts
    /// the device; ring features it cannot do are no longer offered.
    pub fn with_offload(mut self, offload: Box<dyn NetOffload>) -> Self {
        let missing = OFFLOAD_RING_FEATURES & !offload.ring_features();
        self.offered &= !missing;
        self.offload = Some(offload);
        self
    }

    /// Whether the RX and TX queues are with the offload right now.
    pub fn offloaded(&self) -> bool {
        self.offloaded
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    pub fn rx_filter(&self) -> &RxFilter {
        &self.filter
    }

    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Features the driver acked at DRIVER_OK (0 while inactive).
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    /// Whether the device waits for the backend to become writable.
    pub fn tx_blocked(&self) -> bool {
        self.tx_blocked
    }

    fn backend_error(&mut self, what: &str, e: &io::Error) {
        if self.backend_errors.hit() {
            warn!(
                "virtio-net: backend {what}: {e} ({} errors)",
                self.backend_errors.count()
            );
        }
    }
}

/// Gives the last `n` chains taken off `q` back to the ring.
fn rewind(q: &mut Queue, n: usize) {
    for _ in 0..n {
        q.go_to_previous_position();
    }
}

impl<B: NetBackend> VirtioDevice for Net<B> {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE
    }

    fn pci_class(&self) -> (u8, u8) {
        (0x02, 0x00)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.offered
    }

    fn features_valid(&self, acked: u64) -> bool {
        features::DEPENDENCIES
            .iter()
            .all(|&(f, needs)| acked & f == 0 || acked & needs != 0)
    }

    fn config_len(&self) -> u32 {
        12
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // mac[6], status, max_virtqueue_pairs, mtu (all little-endian).
        let mut cfg = [0u8; 12];
        cfg[..6].copy_from_slice(&self.mac);
        let status = if self.link_up { S_LINK_UP } else { 0 };
        cfg[6..8].copy_from_slice(&status.to_le_bytes());
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes());
        cfg[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *b = usize::try_from(at)
                .ok()
                .and_then(|a| cfg.get(a))
                .copied()
                .unwrap_or(0);
        }
    }

    fn activate<M: GuestMemory>(&mut self, features: u64, ctx: &mut QueueCtx<'_, M>) -> Result<()> {
        self.acked = features;
        if let Err(e) = self
            .backend
            .set_offloads(features & features::GUEST_OFFLOADS)
        {
            self.backend_error("set_offloads", &e);
        }
        self.rx_pending = true;
        self.tx_blocked = false;
        self.process_ctrl(ctx)?;
        if let Some(offload) = &mut self.offload {
            let rings: Vec<_> = [RX, TX].iter().filter_map(|&q| ctx.vring(q)).collect();
            if rings.len() != 2 {
                return Err(Error::Backend(io::Error::other(
                    "the driver enabled neither or only one of the RX and TX queues",
                )));
            }
            offload.start(features, &rings).map_err(Error::Backend)?;
            self.offloaded = true;
            return Ok(());
        }
        self.process_tx(ctx)?;
        self.process_rx(ctx)
    }

    fn reset(&mut self) {
        if std::mem::take(&mut self.offloaded) {
            if let Some(offload) = &mut self.offload {
                offload.stop();
            }
        }
        self.acked = 0;
        self.mac = self.configured_mac;
        self.filter = RxFilter::default();
        self.tx_blocked = false;
        if let Err(e) = self.backend.set_offloads(0) {
            self.backend_error("set_offloads", &e);
        }
    }

    fn queue_notify<M: GuestMemory>(
        &mut self,
        queue: u16,
        ctx: &mut QueueCtx<'_, M>,
    ) -> Result<()> {
        match queue {
            // The offload has its own doorbells for these.
            RX | TX if self.offloaded => Ok(()),
            RX => self.process_rx(ctx),
            TX => self.process_tx(ctx),
            CTRL => self.process_ctrl(ctx),
            _ => Ok(()),
        }
    }
}

/// Entry points for the host's backend events and link changes.
impl<B: NetBackend, M: GuestMemory + Send, I: Interrupts> VirtioPci<Net<B>, M, I> {
    /// The backend became readable (EPOLLIN, edge-triggered is enough):
    /// reads frames until it has none or the guest has no buffers; the
    /// guest's next receive-queue kick resumes.
    pub fn backend_readable(&mut self) {
        if self.device().offloaded {
            return;
        }
        self.device_mut().rx_pending = true;
        self.run(|net, ctx| net.process_rx(ctx));
    }

    /// The backend became writable (EPOLLOUT): resumes a blocked transmit.
    pub fn backend_writable(&mut self) {
        if self.device().tx_blocked && !self.device().offloaded {
            self.device_mut().tx_blocked = false;
            self.run(|net, ctx| net.process_tx(ctx));
        }
    }

    /// Sets the link state in the configuration space and, if the device
    /// is live, tells the driver with a configuration interrupt.
    pub fn set_link_up(&mut self, up: bool) {
        if self.device().link_up != up {
            self.device_mut().link_up = up;
            self.run(|_, ctx| {
                ctx.config_changed();
                Ok(())
            });
        }
    }
}
