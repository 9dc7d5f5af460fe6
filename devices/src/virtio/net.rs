//! virtio-net: receive/transmit queue pairs (one, or with multiqueue up
//! to [`MAX_PAIRS`]) plus a control queue, each pair over its own
//! [`NetBackend`] (a tap queue with IFF_VNET_HDR in production).
//!
//! Queue layout: RX0, TX0, RX1, TX1, ..., then the control queue (index
//! 2N). With multiqueue (VIRTIO_NET_F_MQ) the configuration space says N
//! in max_virtqueue_pairs, the first pair alone works after DRIVER_OK, and
//! the driver sets how many work with the control command MQ VQ_PAIRS_SET.
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
//! the host's entry points); `net/pair.rs` holds a pair's data path (and
//! the handle a host's worker thread drives it by), `net/rx.rs` and
//! `net/tx.rs` work a pair's queues, `net/ctrl.rs` the control queue.

use std::io::{self, IoSlice, IoSliceMut};
use std::sync::{Arc, Mutex};

use log::warn;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

mod ctrl;
mod pair;
mod rx;
mod tx;

use super::pci::VirtioPci;
use super::{features as common, Error, LogLimiter, QueueCtx, Result, VirtioDevice};
pub use crate::backend::vhost_net::VringSpec;
use crate::pci::Interrupts;
use pair::{lock, Pair};
pub use pair::{PairWorker, Work};

/// Virtio device ID of a network card.
pub const DEVICE_TYPE: u16 = 1;
/// Queue indices of the first pair, and of the control queue without
/// multiqueue (with it, the control queue is 2N).
pub const RX: u16 = 0;
pub const TX: u16 = 1;
pub const CTRL: u16 = 2;
/// Most queue pairs a device may have (the transport takes 64 queues).
pub const MAX_PAIRS: u16 = 16;
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
    pub const MQ: u64 = 1 << 22;
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
    pub const DEPENDENCIES: [(u64, u64); 11] = [
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
        (MQ, CTRL_VQ),
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
    /// Lets frames come to this backend, or not, as its pair starts or
    /// stops working (a multi-queue tap steers no frames to a detached
    /// queue, so none wait where nobody reads); nothing by default.
    fn set_attached(&mut self, attached: bool) -> io::Result<()> {
        let _ = attached;
        Ok(())
    }
}

/// A data path that takes the RX and TX queues off the device (vhost-net):
/// while it runs the device works only its control queue, and neither
/// reads nor writes the backends.
pub trait NetOffload: Send {
    /// The ring features ([`OFFLOAD_RING_FEATURES`]) it can do; the device
    /// offers no others.
    fn ring_features(&self) -> u64;
    /// Starts pair `pair` on `rings` (its RX, then its TX: where each lies,
    /// with its queue index, and its MSI-X vector) with `features`
    /// negotiated.
    fn start(&mut self, features: u64, pair: u16, rings: &[(VringSpec, u16)]) -> io::Result<()>;
    /// Stops touching pair `pair`'s rings (device reset, or fewer pairs);
    /// returns where each ring stopped, as (queue index, next available
    /// index), for the rings it could ask.
    fn stop(&mut self, pair: u16) -> Vec<(u16, u16)>;
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
    configured_mac: [u8; 6],
    mac: [u8; 6],
    mtu: u16,
    link_up: bool,
    /// RX and TX of each pair, then the control queue.
    queue_sizes: Vec<u16>,
    offered: u64,
    acked: u64,
    filter: RxFilter,
    ctrl_buf: Vec<u8>,
    /// The data path of each pair.
    pairs: Vec<Arc<Mutex<Pair<B>>>>,
    /// How many pairs work (the driver's VQ_PAIRS_SET; 1 after DRIVER_OK).
    curr_pairs: u16,
    /// Between DRIVER_OK and reset.
    started: bool,
    /// The kernel's data path, if the RX and TX queues go there.
    offload: Option<Box<dyn NetOffload>>,
    /// Which pairs run in the offload.
    offload_running: Vec<bool>,
    backend_errors: LogLimiter,
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
    /// A single-pair device (no multiqueue) on `backend` with address
    /// `mac` (random if `None`) and queues of `queue_size` entries (a power
    /// of two, at most 32768).
    pub fn new(backend: B, mac: Option<[u8; 6]>, queue_size: u16) -> Result<Self> {
        Self::build(vec![backend], false, mac, queue_size)
    }

    /// A multiqueue device (VIRTIO_NET_F_MQ offered): one pair per backend
    /// (1 to [`MAX_PAIRS`]), all alike.
    pub fn multiqueue(backends: Vec<B>, mac: Option<[u8; 6]>, queue_size: u16) -> Result<Self> {
        Self::build(backends, true, mac, queue_size)
    }

    fn build(backends: Vec<B>, mq: bool, mac: Option<[u8; 6]>, queue_size: u16) -> Result<Self> {
        let invalid =
            |what: String| Error::Backend(io::Error::new(io::ErrorKind::InvalidInput, what));
        let n = backends.len();
        if n == 0 || n > usize::from(MAX_PAIRS) {
            return Err(invalid(format!("{n} queue pairs (want 1 to {MAX_PAIRS})")));
        }
        let hdr = backends[0].vnet_hdr_len();
        if hdr != 0 && hdr != HDR_LEN {
            return Err(invalid(format!(
                "vnet header of {hdr} bytes (want 0 or {HDR_LEN})"
            )));
        }
        if backends.iter().any(|b| b.vnet_hdr_len() != hdr) {
            return Err(invalid("the backends' vnet headers differ".into()));
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
        if mq {
            offered |= features::MQ;
        }
        if hdr == HDR_LEN {
            offered |= backends
                .iter()
                .fold(features::OFFLOADS, |f, b| f & b.offloads());
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
        let pairs: Vec<_> = backends
            .into_iter()
            .enumerate()
            .map(|(i, b)| Arc::new(Mutex::new(Pair::new(i as u16, b))))
            .collect();
        Ok(Net {
            configured_mac: mac,
            mac,
            mtu: 1500,
            link_up: true,
            queue_sizes: vec![queue_size; 2 * n + 1],
            offered,
            acked: 0,
            filter: RxFilter::default(),
            ctrl_buf: Vec::new(),
            offload_running: vec![false; n],
            pairs,
            curr_pairs: 1,
            started: false,
            offload: None,
            backend_errors: LogLimiter::default(),
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
        self.offload_running.iter().any(|&r| r)
    }

    /// Number of queue pairs (max_virtqueue_pairs).
    pub fn max_pairs(&self) -> u16 {
        self.pairs.len() as u16
    }

    /// How many pairs work now.
    pub fn active_pairs(&self) -> u16 {
        if self.started {
            self.curr_pairs
        } else {
            0
        }
    }

    /// Pairs the driver may use: all with VIRTIO_NET_F_MQ negotiated, else
    /// the first.
    fn usable_pairs(&self) -> u16 {
        if self.acked & features::MQ != 0 {
            self.max_pairs()
        } else {
            1
        }
    }

    /// Index of the control queue: after the usable pairs' queues (2N with
    /// VIRTIO_NET_F_MQ negotiated, else 2).
    pub fn ctrl_queue(&self) -> u16 {
        2 * self.usable_pairs()
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

    /// The counters of all pairs together.
    pub fn stats(&self) -> NetStats {
        self.pairs.iter().fold(NetStats::default(), |t, p| {
            let s = lock(p).stats;
            NetStats {
                rx_frames: t.rx_frames + s.rx_frames,
                rx_bytes: t.rx_bytes + s.rx_bytes,
                rx_errors: t.rx_errors + s.rx_errors,
                tx_frames: t.tx_frames + s.tx_frames,
                tx_bytes: t.tx_bytes + s.tx_bytes,
                tx_dropped: t.tx_dropped + s.tx_dropped,
                tx_errors: t.tx_errors + s.tx_errors,
            }
        })
    }

    /// The counters of pair `pair`.
    pub fn pair_stats(&self, pair: u16) -> Option<NetStats> {
        self.pairs.get(usize::from(pair)).map(|p| lock(p).stats)
    }

    /// Features the driver acked at DRIVER_OK (0 while inactive).
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    /// Whether some pair waits for its backend to become writable.
    pub fn tx_blocked(&self) -> bool {
        self.pairs.iter().any(|p| lock(p).tx_blocked)
    }

    fn backend_error(&mut self, what: &str, e: &io::Error) {
        if self.backend_errors.hit() {
            warn!(
                "virtio-net: backend {what}: {e} ({} errors)",
                self.backend_errors.count()
            );
        }
    }

    /// Has pair `p` work `work` on the calling thread (under its lock);
    /// its interrupts go through `ctx`.
    fn pair_work<M: GuestMemory>(
        &self,
        p: usize,
        work: Work,
        ctx: &mut QueueCtx<'_, M>,
    ) -> Result<()> {
        let Some(pair) = self.pairs.get(p) else {
            return Ok(());
        };
        let raise = lock(pair).work(ctx.mem, work)?;
        for q in 0..64 {
            if raise & (1 << q) != 0 {
                ctx.raise(q);
            }
        }
        Ok(())
    }

    /// Whether the driver enabled both queues of each of the first `n` pairs.
    fn pairs_enabled<M: GuestMemory>(&self, n: u16, ctx: &QueueCtx<'_, M>) -> bool {
        (0..2 * n).all(|q| ctx.vring(q).is_some())
    }

    /// Brings the working pairs in line with `curr_pairs`: stops those
    /// beyond it (waiting for their workers), then starts those below.
    fn apply_pairs<M: GuestMemory>(&mut self, ctx: &mut QueueCtx<'_, M>) -> Result<()> {
        if !self.started {
            return Ok(());
        }
        let want = |p: usize, curr: u16| p < usize::from(curr);
        let curr = self.curr_pairs;
        if let Some(offload) = &mut self.offload {
            for p in 0..self.pairs.len() {
                if !want(p, curr) && self.offload_running[p] {
                    self.offload_running[p] = false;
                    for (q, base) in offload.stop(p as u16) {
                        if let Some(queue) = ctx.queue(q) {
                            queue.set_next_avail(base);
                        }
                    }
                }
                if !want(p, curr) {
                    lock(&self.pairs[p]).set_attached(false);
                }
            }
            for p in 0..self.pairs.len() {
                if want(p, curr) && !self.offload_running[p] {
                    let q = 2 * p as u16;
                    let rings: Vec<_> = [q, q + 1].iter().filter_map(|&q| ctx.vring(q)).collect();
                    if rings.len() != 2 {
                        return Err(Error::Backend(io::Error::other(format!(
                            "the driver enabled neither or only one of the queues of pair {p}"
                        ))));
                    }
                    lock(&self.pairs[p]).set_attached(true);
                    offload
                        .start(self.acked, p as u16, &rings)
                        .map_err(Error::Backend)?;
                    self.offload_running[p] = true;
                }
            }
            return Ok(());
        }
        for p in 0..self.pairs.len() {
            let start = {
                let mut pair = lock(&self.pairs[p]);
                let on = want(p, curr);
                let start = on && !pair.active;
                pair.active = on;
                pair.set_attached(on);
                if start {
                    pair.rx_pending = true;
                    pair.tx_blocked = false;
                }
                start
            };
            if start {
                self.pair_work(p, Work::Start, ctx)?;
            }
        }
        Ok(())
    }

    /// The driver's VQ_PAIRS_SET: `n` pairs work from now on. Returns the ack.
    fn set_pairs<M: GuestMemory>(&mut self, n: u16, ctx: &mut QueueCtx<'_, M>) -> Result<u8> {
        if self.acked & features::MQ == 0
            || n == 0
            || n > self.max_pairs()
            || !self.pairs_enabled(n, ctx)
        {
            return Ok(CTRL_ERR);
        }
        self.curr_pairs = n;
        self.apply_pairs(ctx)?;
        Ok(CTRL_OK)
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
        cfg[8..10].copy_from_slice(&self.max_pairs().to_le_bytes());
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
        self.curr_pairs = 1;
        let offloaded = self.offload.is_some();
        let usable = usize::from(self.usable_pairs());
        let mut failed = None;
        for (p, pair) in self.pairs.iter().enumerate().take(usable) {
            let mut pair = lock(pair);
            pair.clear();
            pair.acked = features;
            pair.mtu = self.mtu;
            if let Err(e) = pair
                .backend
                .set_offloads(features & features::GUEST_OFFLOADS)
            {
                failed = Some(e);
            }
            if !offloaded {
                // The pair's data path owns its rings until reset.
                pair.rx = ctx.take_queue(2 * p as u16);
                pair.tx = ctx.take_queue(2 * p as u16 + 1);
            }
        }
        if let Some(e) = failed {
            self.backend_error("set_offloads", &e);
        }
        self.started = true;
        self.process_ctrl(ctx)?;
        self.apply_pairs(ctx)
    }

    fn reset(&mut self) {
        if let Some(offload) = &mut self.offload {
            for (p, running) in self.offload_running.iter_mut().enumerate() {
                if std::mem::take(running) {
                    offload.stop(p as u16);
                }
            }
        }
        let mut failed = None;
        for pair in &self.pairs {
            // Waits for the pair's worker to finish what it is doing.
            let mut pair = lock(pair);
            pair.clear();
            if let Err(e) = pair.backend.set_offloads(0) {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            self.backend_error("set_offloads", &e);
        }
        self.started = false;
        self.curr_pairs = 1;
        self.acked = 0;
        self.mac = self.configured_mac;
        self.filter = RxFilter::default();
    }

    fn queue_notify<M: GuestMemory>(
        &mut self,
        queue: u16,
        ctx: &mut QueueCtx<'_, M>,
    ) -> Result<()> {
        if queue == self.ctrl_queue() {
            return self.process_ctrl(ctx);
        }
        // Without multiqueue, queues beyond the control queue are unused.
        // With an offload, it has its own doorbells for the data queues.
        if queue >= self.ctrl_queue() || self.offload.is_some() {
            return Ok(());
        }
        let work = if queue.is_multiple_of(2) {
            Work::RxKick
        } else {
            Work::TxKick
        };
        self.pair_work(usize::from(queue / 2), work, ctx)
    }
}

/// Entry points for the host's backend events and link changes.
impl<B: NetBackend, M: GuestMemory + Send, I: Interrupts> VirtioPci<Net<B>, M, I> {
    /// The first pair's backend became readable (EPOLLIN, edge-triggered
    /// is enough): reads frames until it has none or the guest has no
    /// buffers; the guest's next receive-queue kick resumes. On the
    /// calling thread; a host with worker threads uses [`Self::pair_workers`].
    pub fn backend_readable(&mut self) {
        if !self.device().offloaded() {
            self.run(|net, ctx| net.pair_work(0, Work::Readable, ctx));
        }
    }

    /// The first pair's backend became writable (EPOLLOUT): resumes a
    /// blocked transmit.
    pub fn backend_writable(&mut self) {
        if !self.device().offloaded() {
            self.run(|net, ctx| net.pair_work(0, Work::Writable, ctx));
        }
    }

    /// One handle per pair for the host's worker threads (userspace data
    /// path: without an offload).
    pub fn pair_workers(&self) -> Vec<PairWorker<B, M, I>>
    where
        M: Clone,
    {
        self.device()
            .pairs
            .iter()
            .map(|pair| PairWorker {
                pair: pair.clone(),
                mem: self.mem().clone(),
                signals: self.signals().clone(),
            })
            .collect()
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
