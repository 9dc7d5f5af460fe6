//! In-process tests of the virtio-net PCI model: a driver that programs the
//! device as Linux's virtio_pci_modern and virtio_net do, over real guest
//! memory, with fake interrupts and backends.

mod hostile;
mod linux;
mod multiqueue;
mod net;
mod offload;
mod transport;

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::net::{features as netf, NetBackend, VirtioNetPci, CTRL, RX, TX};
use super::pci::{BAR, NO_VECTOR};
use super::{features, net::Net, status};
use crate::pci::{HostedPciDevice, Interrupts, MsixChange, PciDevice};

/// Guest RAM: two adjacent regions, so buffers can straddle a boundary.
pub const RAM: u64 = 0x20_0000;
pub const REGION: u64 = 0x10_0000;

/// Common configuration field offsets.
pub mod cc {
    pub const DF_SELECT: u64 = 0x00;
    pub const DF: u64 = 0x04;
    pub const GF_SELECT: u64 = 0x08;
    pub const GF: u64 = 0x0c;
    pub const MSIX_CONFIG: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const STATUS: u64 = 0x14;
    pub const GENERATION: u64 = 0x15;
    pub const Q_SELECT: u64 = 0x16;
    pub const Q_SIZE: u64 = 0x18;
    pub const Q_MSIX: u64 = 0x1a;
    pub const Q_ENABLE: u64 = 0x1c;
    pub const Q_NOTIFY_OFF: u64 = 0x1e;
    pub const Q_DESC: u64 = 0x20;
    pub const Q_AVAIL: u64 = 0x28;
    pub const Q_USED: u64 = 0x30;
}

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// Everything the driver side wants by default (the device offers a subset).
pub const WANT: u64 = features::VERSION_1
    | features::RING_EVENT_IDX
    | features::RING_INDIRECT_DESC
    | netf::MAC
    | netf::STATUS
    | netf::MRG_RXBUF
    | netf::CTRL_VQ
    | netf::CTRL_RX
    | netf::CTRL_MAC_ADDR
    | netf::CSUM
    | netf::GUEST_CSUM
    | netf::GUEST_TSO4
    | netf::GUEST_TSO6
    | netf::HOST_TSO4
    | netf::HOST_TSO6;

/// What the model signalled.
#[derive(Default, Debug)]
pub struct IrqLog {
    pub vectors: Vec<u16>,
    pub changes: Vec<MsixChange>,
    pub intx: u32,
}

#[derive(Clone, Default)]
pub struct FakeIrq(pub Arc<Mutex<IrqLog>>);

impl Interrupts for FakeIrq {
    fn signal_vector(&self, vector: u16) {
        self.0.lock().unwrap().vectors.push(vector);
    }
    fn msix_changed(&self, change: &MsixChange) {
        self.0.lock().unwrap().changes.push(*change);
    }
    fn assert_intx(&self) {
        self.0.lock().unwrap().intx += 1;
    }
}

impl FakeIrq {
    /// Vectors signalled since the last call.
    pub fn take(&self) -> Vec<u16> {
        std::mem::take(&mut self.0.lock().unwrap().vectors)
    }
}

/// The far side of a fake backend.
#[derive(Default)]
pub struct WireState {
    pub to_guest: VecDeque<Vec<u8>>,
    pub from_guest: Vec<Vec<u8>>,
    pub offload_calls: Vec<u64>,
    pub attach_calls: Vec<bool>,
    pub block_writes: bool,
}

#[derive(Clone, Default)]
pub struct Wire(pub Arc<Mutex<WireState>>);

impl Wire {
    pub fn push(&self, frame: Vec<u8>) {
        self.0.lock().unwrap().to_guest.push_back(frame);
    }
    pub fn sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.0.lock().unwrap().from_guest)
    }
}

/// An in-memory backend: frames (with `hdr_len` bytes of header) queued on
/// a [`Wire`]; reads scatter like a tap does, truncating what does not fit.
pub struct FakeBackend {
    pub wire: Wire,
    pub hdr_len: usize,
    pub offloads: u64,
}

impl NetBackend for FakeBackend {
    fn readv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let Some(frame) = self.wire.0.lock().unwrap().to_guest.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut done = 0;
        for seg in iov.iter_mut() {
            let n = seg.len().min(frame.len() - done);
            seg[..n].copy_from_slice(&frame[done..done + n]);
            done += n;
        }
        Ok(done)
    }
    fn writev(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut w = self.wire.0.lock().unwrap();
        if w.block_writes {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let frame: Vec<u8> = iov.iter().flat_map(|s| s.iter().copied()).collect();
        let n = frame.len();
        w.from_guest.push(frame);
        Ok(n)
    }
    fn vnet_hdr_len(&self) -> usize {
        self.hdr_len
    }
    fn offloads(&self) -> u64 {
        self.offloads
    }
    fn set_offloads(&mut self, acked: u64) -> io::Result<()> {
        self.wire.0.lock().unwrap().offload_calls.push(acked);
        Ok(())
    }
    fn set_attached(&mut self, attached: bool) -> io::Result<()> {
        self.wire.0.lock().unwrap().attach_calls.push(attached);
        Ok(())
    }
}

/// A split virtqueue as the driver keeps it.
pub struct DriverQueue {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub event_idx: bool,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
    kicked_at: u16,
}

impl DriverQueue {
    pub fn write_desc(
        &self,
        mem: &GuestMemoryMmap,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = GuestAddress(self.desc + 16 * u64::from(i));
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&d, at).unwrap();
    }

    /// Writes a chain of `(addr, len, device-writable)` buffers into free
    /// descriptors; returns its head.
    pub fn add_chain(&mut self, mem: &GuestMemoryMmap, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let me = (head + i as u16) % self.size;
            let last = i + 1 == bufs.len();
            let flags = if write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.write_desc(mem, me, addr, len, flags, (me + 1) % self.size);
        }
        self.next_desc = (head + bufs.len() as u16) % self.size;
        head
    }

    /// Makes chain `head` available.
    pub fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(mem, self.avail_idx);
    }

    /// Whether the device wants a kick for what was published since the
    /// last call (virtqueue_kick_prepare: avail_event or the NO_NOTIFY flag).
    pub fn kick_needed(&mut self, mem: &GuestMemoryMmap) -> bool {
        let (old, new) = (self.kicked_at, self.avail_idx);
        self.kicked_at = new;
        if self.event_idx {
            let at = self.used + 4 + 8 * u64::from(self.size);
            let event: u16 = mem.read_obj(GuestAddress(at)).unwrap();
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            let flags: u16 = mem.read_obj(GuestAddress(self.used)).unwrap();
            flags & 1 == 0
        }
    }

    pub fn set_avail_idx(&self, mem: &GuestMemoryMmap, idx: u16) {
        mem.write_obj(idx.to_le(), GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Sets used_event (EVENT_IDX): interrupt once the used index passes it.
    pub fn set_used_event(&self, mem: &GuestMemoryMmap, idx: u16) {
        let at = self.avail + 4 + 2 * u64::from(self.size);
        mem.write_obj(idx.to_le(), GuestAddress(at)).unwrap();
    }

    /// Used entries (id, len) since the last call; then, as Linux does,
    /// asks for an interrupt on the next one.
    pub fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u32, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let at = self.used + 4 + 8 * u64::from(self.used_seen % self.size);
            let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((id, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        self.set_used_event(mem, self.used_seen);
        out
    }
}

/// Where the driver found each structure (offsets in BAR 0).
#[derive(Debug, Default)]
pub struct Caps {
    pub common: u64,
    pub notify: u64,
    pub notify_len: u32,
    pub multiplier: u32,
    pub isr: u64,
    pub device: u64,
    pub device_len: u32,
    pub pci_cfg: usize,
    pub msix: usize,
    pub msix_table: u64,
    pub msix_pba: u64,
}

/// The model, its memory, and a driver for it.
pub struct Harness<B> {
    pub dev: VirtioNetPci<B, GuestMemoryMmap, FakeIrq>,
    pub mem: GuestMemoryMmap,
    pub irq: FakeIrq,
    pub caps: Caps,
    pub queues: Vec<DriverQueue>,
    pub features: u64,
    next_buf: u64,
}

pub fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), REGION as usize),
        (GuestAddress(REGION), REGION as usize),
    ])
    .unwrap()
}

impl Harness<FakeBackend> {
    /// A device on a fake backend that speaks the 12-byte header and can
    /// do checksum and TSO offloads.
    pub fn new() -> (Self, Wire) {
        Self::with_backend(12, netf::OFFLOADS & !(netf::GUEST_UFO | netf::HOST_UFO))
    }

    pub fn with_backend(hdr_len: usize, offloads: u64) -> (Self, Wire) {
        let wire = Wire::default();
        let backend = FakeBackend {
            wire: wire.clone(),
            hdr_len,
            offloads,
        };
        (Self::on(backend), wire)
    }
}

impl<B: NetBackend> Harness<B> {
    pub fn on(backend: B) -> Self {
        Self::on_memory(backend, memory())
    }

    /// A device on `backend` over guest memory `mem`.
    pub fn on_memory(backend: B, mem: GuestMemoryMmap) -> Self {
        let net = Net::new(backend, Some([0x02, 0, 0, 0, 0, 1]), 256).unwrap();
        Self::on_net(net, mem)
    }

    /// The device `net` over guest memory `mem`.
    pub fn on_net(net: Net<B>, mem: GuestMemoryMmap) -> Self {
        let irq = FakeIrq::default();
        let dev = VirtioNetPci::new(net, mem.clone(), irq.clone()).unwrap();
        let mut h = Harness {
            dev,
            mem,
            irq,
            caps: Caps::default(),
            queues: Vec::new(),
            features: 0,
            next_buf: 0x8_0000,
        };
        h.probe();
        h
    }

    pub fn cfg8(&mut self, at: usize) -> u8 {
        (self.dev.config_read(at / 4) >> (8 * (at % 4))) as u8
    }
    pub fn cfg16(&mut self, at: usize) -> u16 {
        u16::from(self.cfg8(at)) | u16::from(self.cfg8(at + 1)) << 8
    }
    pub fn cfg32(&mut self, at: usize) -> u32 {
        self.dev.config_read(at / 4)
    }
    pub fn cfg_write(&mut self, at: usize, data: &[u8]) {
        self.dev.config_write(at / 4, at % 4, data);
    }

    pub fn read(&mut self, offset: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.bar_read(BAR, offset, &mut b[..len]);
        u64::from_le_bytes(b)
    }
    pub fn write(&mut self, offset: u64, len: usize, value: u64) {
        self.dev.bar_write(BAR, offset, &value.to_le_bytes()[..len]);
    }
    pub fn common_read(&mut self, field: u64, len: usize) -> u64 {
        self.read(self.caps.common + field, len)
    }
    pub fn common_write(&mut self, field: u64, len: usize, value: u64) {
        self.write(self.caps.common + field, len, value);
    }
    pub fn status(&mut self) -> u8 {
        self.common_read(cc::STATUS, 1) as u8
    }
    pub fn set_status(&mut self, s: u8) {
        self.common_write(cc::STATUS, 1, u64::from(s));
    }

    /// Walks the capability list as virtio_pci_modern's probe does.
    fn probe(&mut self) {
        assert_ne!(self.cfg16(0x06) & 0x10, 0, "capability list");
        let mut at = usize::from(self.cfg8(0x34));
        let mut caps = Caps::default();
        let mut seen = 0;
        while at != 0 && seen < 16 {
            seen += 1;
            let id = self.cfg8(at);
            if id == 0x11 {
                caps.msix = at;
                let t = self.cfg32(at + 4);
                let p = self.cfg32(at + 8);
                assert_eq!((t & 7, p & 7), (0, 0), "MSI-X in BAR 0");
                caps.msix_table = u64::from(t & !7);
                caps.msix_pba = u64::from(p & !7);
            } else if id == 0x09 {
                let (kind, bar) = (self.cfg8(at + 3), self.cfg8(at + 4));
                let off = u64::from(self.cfg32(at + 8));
                let len = self.cfg32(at + 12);
                if kind != 5 {
                    assert_eq!(bar, 0);
                }
                match kind {
                    1 => {
                        assert!(len >= 0x38);
                        caps.common = off;
                    }
                    2 => {
                        caps.notify = off;
                        caps.notify_len = len;
                        caps.multiplier = self.cfg32(at + 16);
                    }
                    3 => caps.isr = off,
                    4 => {
                        caps.device = off;
                        caps.device_len = len;
                    }
                    5 => caps.pci_cfg = at,
                    k => panic!("unexpected virtio cap type {k}"),
                }
            }
            at = usize::from(self.cfg8(at + 1));
        }
        self.caps = caps;
    }

    /// Initialises the device as Linux does, negotiating `want` with what
    /// the device offers; returns the negotiated features.
    pub fn init(&mut self, want: u64) -> u64 {
        self.init_queues(want, 3)
    }

    /// [`Harness::init`] for a device with `nq` queues (the last one the
    /// control queue); queue `q` gets vector `q`, configuration `nq`.
    pub fn init_queues(&mut self, want: u64, nq: u16) -> u64 {
        self.set_status(0);
        assert_eq!(self.status(), 0);
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER);
        let offered = self.device_features();
        let f = offered & want;
        self.write_features(f);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        assert_ne!(
            self.status() & status::FEATURES_OK,
            0,
            "FEATURES_OK refused"
        );
        self.features = f;
        self.enable_msix();
        assert_eq!(self.common_read(cc::NUM_QUEUES, 2) as u16, nq);
        self.common_write(cc::MSIX_CONFIG, 2, u64::from(nq));
        assert_eq!(self.common_read(cc::MSIX_CONFIG, 2), u64::from(nq));
        // Without multiqueue negotiated, one pair and the control queue.
        let used = if f & netf::MQ != 0 { nq } else { 3 };
        let setup = if f & netf::CTRL_VQ != 0 {
            used
        } else {
            used - 1
        };
        self.queues.clear();
        for q in 0..setup {
            self.setup_queue(q, 256);
        }
        self.set_status(
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert_eq!(self.status() & status::DRIVER_OK, status::DRIVER_OK);
        self.irq.take();
        f
    }

    pub fn device_features(&mut self) -> u64 {
        self.common_write(cc::DF_SELECT, 4, 0);
        let lo = self.common_read(cc::DF, 4);
        self.common_write(cc::DF_SELECT, 4, 1);
        lo | self.common_read(cc::DF, 4) << 32
    }

    pub fn write_features(&mut self, f: u64) {
        self.common_write(cc::GF_SELECT, 4, 0);
        self.common_write(cc::GF, 4, f & 0xffff_ffff);
        self.common_write(cc::GF_SELECT, 4, 1);
        self.common_write(cc::GF, 4, f >> 32);
    }

    /// Enables MSI-X the way the PCI core does: function-masked while the
    /// table is programmed, every vector unmasked, then the mask dropped.
    pub fn enable_msix(&mut self) {
        let ctrl = self.caps.msix + 2;
        self.cfg_write(ctrl, &(0xc000u16).to_le_bytes());
        let vectors = u64::from(self.cfg16(ctrl) & 0x7ff) + 1;
        for v in 0..vectors {
            let e = self.caps.msix_table + 16 * v;
            self.write(e, 4, 0xfee0_0000);
            self.write(e + 4, 4, 0);
            self.write(e + 8, 4, 0x40 + v);
            self.write(e + 12, 4, 0);
        }
        self.cfg_write(ctrl, &(0x8000u16).to_le_bytes());
    }

    /// Sets up queue `q` with `size` entries, as vp_modern's setup_vq does.
    pub fn setup_queue(&mut self, q: u16, size: u16) {
        self.common_write(cc::Q_SELECT, 2, u64::from(q));
        assert_eq!(self.common_read(cc::Q_SIZE, 2), 256);
        assert_eq!(self.common_read(cc::Q_ENABLE, 2), 0);
        self.common_write(cc::Q_SIZE, 2, u64::from(size));
        let base = 0x1000 + 0x8000 * u64::from(q);
        // Fresh rings, as a driver allocates zeroed memory for them.
        self.mem
            .write_slice(&[0u8; 0x3000], GuestAddress(base))
            .unwrap();
        let dq = DriverQueue {
            size,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            event_idx: self.features & features::RING_EVENT_IDX != 0,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
            kicked_at: 0,
        };
        for (field, addr) in [
            (cc::Q_DESC, dq.desc),
            (cc::Q_AVAIL, dq.avail),
            (cc::Q_USED, dq.used),
        ] {
            self.common_write(field, 4, addr & 0xffff_ffff);
            self.common_write(field + 4, 4, addr >> 32);
        }
        self.common_write(cc::Q_MSIX, 2, u64::from(q));
        assert_eq!(self.common_read(cc::Q_MSIX, 2), u64::from(q));
        self.common_write(cc::Q_ENABLE, 2, 1);
        assert_eq!(self.common_read(cc::Q_ENABLE, 2), 1);
        self.queues.push(dq);
    }

    /// Rings queue `q`'s doorbell if the device asked for it, as Linux
    /// does; returns whether it rang.
    pub fn kick_if_needed(&mut self, q: u16) -> bool {
        let needed = self.queues[usize::from(q)].kick_needed(&self.mem);
        if needed {
            self.kick(q);
        }
        needed
    }

    /// Rings queue `q`'s doorbell through the notify area.
    pub fn kick(&mut self, q: u16) {
        self.common_write(cc::Q_SELECT, 2, u64::from(q));
        let off = self.common_read(cc::Q_NOTIFY_OFF, 2);
        let at = self.caps.notify + off * u64::from(self.caps.multiplier);
        self.write(at, 2, u64::from(q));
    }

    /// A fresh guest buffer of `len` bytes.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let at = self.next_buf;
        self.next_buf += (len + 15) & !15;
        assert!(self.next_buf <= RAM);
        at
    }

    /// Puts `frame` on the transmit queue in `pieces` descriptors and kicks.
    pub fn transmit(&mut self, frame: &[u8], pieces: usize) -> u16 {
        self.transmit_on(TX, frame, pieces)
    }

    /// [`Harness::transmit`] on transmit queue `q`.
    pub fn transmit_on(&mut self, q: u16, frame: &[u8], pieces: usize) -> u16 {
        let chunk = frame.len().div_ceil(pieces);
        let mut bufs = Vec::new();
        for part in frame.chunks(chunk) {
            let at = self.alloc(part.len() as u64);
            self.mem.write_slice(part, GuestAddress(at)).unwrap();
            bufs.push((at, part.len() as u32, false));
        }
        let dq = &mut self.queues[usize::from(q)];
        let head = dq.add_chain(&self.mem, &bufs);
        dq.publish(&self.mem, head);
        self.kick(q);
        head
    }

    /// Posts `n` receive buffers of `len` bytes each (one descriptor each).
    pub fn post_rx(&mut self, n: usize, len: u32) -> Vec<(u16, u64)> {
        self.post_rx_on(RX, n, len)
    }

    /// [`Harness::post_rx`] on receive queue `rxq` (no kick).
    pub fn post_rx_on(&mut self, rxq: u16, n: usize, len: u32) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let at = self.alloc(u64::from(len));
            let q = &mut self.queues[usize::from(rxq)];
            let head = q.add_chain(&self.mem, &[(at, len, true)]);
            q.publish(&self.mem, head);
            out.push((head, at));
        }
        out
    }

    /// Sends a control command (class, command, data) and returns the ack.
    pub fn ctrl(&mut self, class: u8, cmd: u8, data: &[u8]) -> u8 {
        let hdr = self.alloc(2);
        self.mem
            .write_slice(&[class, cmd], GuestAddress(hdr))
            .unwrap();
        let ack = self.alloc(1);
        self.mem.write_obj(0xaau8, GuestAddress(ack)).unwrap();
        let mut bufs = vec![(hdr, 2, false)];
        if !data.is_empty() {
            let d = self.alloc(data.len() as u64);
            self.mem.write_slice(data, GuestAddress(d)).unwrap();
            bufs.push((d, data.len() as u32, false));
        }
        bufs.push((ack, 1, true));
        // The control queue is the last one.
        let ctrl = self.queues.len() - 1;
        assert!(ctrl >= usize::from(CTRL));
        let q = &mut self.queues[ctrl];
        let head = q.add_chain(&self.mem, &bufs);
        q.publish(&self.mem, head);
        self.kick(ctrl as u16);
        let used = self.queues[ctrl].take_used(&self.mem);
        assert_eq!(used, vec![(u32::from(head), 1)]);
        self.mem.read_obj(GuestAddress(ack)).unwrap()
    }

    pub fn needs_reset(&mut self) -> bool {
        self.status() & status::DEVICE_NEEDS_RESET != 0
    }

    pub fn bytes(&self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
        v
    }
}

/// A frame with a 12-byte header (flags, gso_type, ... num_buffers 0).
pub fn frame(flags: u8, payload_len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f[0] = flags;
    f.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    f
}

/// Unused-vector sentinel, re-exported for tests.
pub const NONE: u16 = NO_VECTOR;
