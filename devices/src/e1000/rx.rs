//! Receive: a frame read from the backend into a reusable buffer, checked
//! (size, VLAN and address filters), padded to 60 bytes, given its FCS
//! unless RCTL.SECRC, then copied into the buffers of descriptors from RDH
//! on. A frame that finds too few free descriptors stays held (and the
//! backend unread) until the guest moves RDT.

use std::io::{self, IoSliceMut};
use std::sync::atomic::{fence, Ordering};

use log::warn;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::regs::{ctrl, int, rctl, RAH_AV};
use super::ring::Ring;
use super::stats::{reg as stat, Cast};
use super::{crc, Dir, Error, E1000};
use crate::pci::Interrupts;
use crate::virtio::net::NetBackend;

/// Most bytes read for one frame; longer ones are oversize anyway.
const MAX_READ: usize = 16384;
/// Largest frame without FCS: with LPE, and without (a tagged 1500-byte MTU).
const MAX_LONG: usize = 16384 - 4;
const MAX_SHORT: usize = 14 + 4 + 1500;
/// Frames are padded to this (without FCS).
const MIN_FRAME: usize = 60;
/// Backend reads per call, so a flood of filtered frames cannot hold the
/// device forever (a later readable event or RDT write goes on).
const BUDGET: usize = 1024;
const VLAN_TPID: [u8; 2] = [0x81, 0x00];
/// virtio_net_hdr flags and GSO type.
const NEEDS_CSUM: u8 = 1;

/// Descriptor status bits.
mod sta {
    pub const DD: u8 = 1 << 0;
    pub const EOP: u8 = 1 << 1;
    /// Ignore checksum indication: none was checked.
    pub const IXSM: u8 = 1 << 2;
    pub const VP: u8 = 1 << 3;
}

/// A frame in the buffer, ready to be placed.
#[derive(Clone, Copy, Debug)]
struct Frame {
    /// Bytes to place (FCS included when not stripped).
    len: usize,
    /// Frame size for the statistics (no FCS).
    size: usize,
    vlan: Option<u16>,
    cast: Cast,
}

/// Receive state.
#[derive(Debug)]
pub struct Rx {
    buf: Box<[u8]>,
    /// Where the backend's header goes.
    hdr: Vec<u8>,
    /// The backend may hold frames.
    pub pending: bool,
    held: Option<Frame>,
    /// A fault stopped the ring until its registers are written.
    pub fault: bool,
}

impl Rx {
    pub fn new(hdr_len: usize) -> Self {
        Rx {
            buf: vec![0; MAX_READ + 4].into_boxed_slice(),
            hdr: vec![0; hdr_len],
            pending: true,
            held: None,
            fault: false,
        }
    }

    /// Power-on state: a held frame is dropped; the backend is left as is.
    pub fn reset(&mut self) {
        self.held = None;
        self.fault = false;
    }
}

/// Outcome of placing a frame.
enum Placed {
    Yes,
    NoRoom,
    TooBig,
}

impl<B: NetBackend, M: GuestMemory + Send, I: Interrupts> E1000<B, M, I> {
    /// Whether the receiver may take frames.
    fn rx_ready(&self) -> bool {
        self.regs.rctl & rctl::EN != 0 && self.link_up && self.bus_master() && !self.rx.fault
    }

    /// Receive buffer size from RCTL.BSIZE and BSEX.
    pub(super) fn rx_buf_size(&self) -> usize {
        let bsize = (self.regs.rctl >> rctl::BSIZE_SHIFT) & 3;
        match (self.regs.rctl & rctl::BSEX != 0, bsize) {
            (false, 1) => 1024,
            (false, 2) => 512,
            (false, 3) => 256,
            (true, 1) => 16384,
            (true, 2) => 8192,
            (true, 3) => 4096,
            _ => 2048,
        }
    }

    /// Moves frames from the backend into the ring until either runs dry.
    pub(super) fn process_rx(&mut self) {
        let mut cause = 0;
        let mut reads = 0;
        while self.rx_ready() {
            let r = &self.regs;
            let ring = match Ring::new(Dir::Rx, &self.mem, r.rdbal, r.rdbah, r.rdlen, r.rdh, r.rdt)
            {
                Ok(ring) => ring,
                Err(e) => {
                    self.fault(Dir::Rx, e);
                    break;
                }
            };
            if let Some(frame) = self.rx.held {
                match self.place(ring, frame) {
                    Ok(Placed::Yes) => cause |= int::RXT0 | self.rx_threshold(ring),
                    Ok(Placed::NoRoom) => break,
                    Ok(Placed::TooBig) => {
                        self.stats.add(stat::MPC, 1);
                        cause |= int::RXO;
                        self.dropped(Error::FrameTooBig {
                            len: frame.len,
                            count: ring.count,
                        });
                    }
                    Err(e) => self.fault(Dir::Rx, e),
                }
                self.rx.held = None;
                continue;
            }
            if !self.rx.pending || ring.owned(self.regs.rdh, self.regs.rdt) == 0 || reads >= BUDGET
            {
                break;
            }
            reads += 1;
            self.rx.held = self.read_frame();
        }
        self.raise(cause);
    }

    /// RXDMT0 if the free descriptors fell to RCTL.RDMTS of the ring.
    fn rx_threshold(&self, ring: Ring) -> u32 {
        let shift = ((self.regs.rctl >> rctl::RDMTS_SHIFT) & 3) + 1;
        if ring.owned(self.regs.rdh, self.regs.rdt) <= ring.count >> shift {
            int::RXDMT0
        } else {
            0
        }
    }

    /// Reads one frame and readies it for the guest, or drops it.
    fn read_frame(&mut self) -> Option<Frame> {
        let hdr_len = self.rx.hdr.len();
        let mut iov = [
            IoSliceMut::new(&mut self.rx.hdr),
            IoSliceMut::new(&mut self.rx.buf[..MAX_READ]),
        ];
        let n = match self.backend.readv(&mut iov) {
            Ok(0) => {
                self.rx.pending = false;
                return None;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
            Err(e) => {
                // Nothing more (or a broken backend): wait for the next event.
                self.rx.pending = false;
                if e.kind() != io::ErrorKind::WouldBlock && self.logs.backend.hit() {
                    warn!(
                        "e1000: backend read: {e} ({} errors)",
                        self.logs.backend.count()
                    );
                }
                return None;
            }
        };
        let len = n.checked_sub(hdr_len)?;
        if hdr_len >= 10 {
            let h = &self.rx.hdr;
            if h[1] != 0 {
                if self.logs.backend.hit() {
                    warn!("e1000: backend sent a GSO frame (its offloads must stay off); dropped");
                }
                return None;
            }
            if h[0] & NEEDS_CSUM != 0 {
                let start = usize::from(u16::from_le_bytes([h[6], h[7]]));
                let off = usize::from(u16::from_le_bytes([h[8], h[9]]));
                crate::net_offload::insert_checksum(&mut self.rx.buf[..len], start, start + off, 0);
            }
        }
        self.accept(len)
    }

    /// Filters the `len`-byte frame in the buffer, strips its VLAN tag if
    /// asked to, pads it and appends its FCS.
    fn accept(&mut self, mut len: usize) -> Option<Frame> {
        let rctl = self.regs.rctl;
        if len < 14 {
            self.stats.add(stat::RUC, 1);
            return None;
        }
        let max = if rctl & rctl::LPE != 0 {
            MAX_LONG
        } else {
            MAX_SHORT
        };
        if len > max && rctl & rctl::SBP == 0 {
            self.stats.add(stat::ROC, 1);
            return None;
        }
        let buf = &mut self.rx.buf;
        let tagged = len >= 18 && buf[12..14] == VLAN_TPID;
        let tci = u16::from_be_bytes([buf[14], buf[15]]);
        if tagged && rctl & rctl::VFE != 0 {
            let vid = usize::from(tci & 0xfff);
            if self.regs.vfta[vid / 32] & (1 << (vid % 32)) == 0 {
                return None;
            }
        }
        if !self.address_filter() {
            return None;
        }
        let buf = &mut self.rx.buf;
        let mut vlan = None;
        if tagged && self.regs.ctrl & ctrl::VME != 0 {
            buf.copy_within(16..len, 12);
            len -= 4;
            vlan = Some(tci);
        }
        if len < MIN_FRAME {
            buf[len..MIN_FRAME].fill(0);
            len = MIN_FRAME;
        }
        let size = len;
        if rctl & rctl::SECRC == 0 {
            let fcs = crc::fcs(&buf[..len]);
            buf[len..len + 4].copy_from_slice(&fcs);
            len += 4;
        }
        Some(Frame {
            len,
            size,
            vlan,
            cast: Cast::of(&buf[..6]),
        })
    }

    /// Whether the destination address passes: promiscuous modes,
    /// broadcast, an exact receive address, or the multicast hash.
    fn address_filter(&self) -> bool {
        let r = &self.regs;
        let dst = &self.rx.buf[..6];
        let cast = Cast::of(dst);
        let pass = match cast {
            Cast::Broadcast => r.rctl & rctl::BAM != 0,
            Cast::Multicast => r.rctl & rctl::MPE != 0,
            Cast::Unicast => r.rctl & rctl::UPE != 0,
        };
        let exact = r.ra.chunks_exact(2).any(|pair| {
            let (lo, hi) = (pair[0].to_le_bytes(), pair[1].to_le_bytes());
            pair[1] & RAH_AV != 0 && dst[..4] == lo && dst[4..] == hi[..2]
        });
        if pass || exact {
            return true;
        }
        if cast == Cast::Unicast {
            return false;
        }
        // 12 bits of the address, starting at bit 36, 35, 34 or 32 (RCTL.MO).
        let shift = [4, 3, 2, 0][((r.rctl >> rctl::MO_SHIFT) & 3) as usize];
        let hash = (usize::from(u16::from_le_bytes([dst[4], dst[5]])) >> shift) & 0xfff;
        r.mta[hash / 32] & (1 << (hash % 32)) != 0
    }

    /// Copies the frame into descriptors from RDH on, if enough are free.
    fn place(&mut self, ring: Ring, f: Frame) -> Result<Placed, Error> {
        let size = self.rx_buf_size();
        let needed = f.len.div_ceil(size) as u32;
        if needed > ring.count - 1 {
            return Ok(Placed::TooBig);
        }
        if ring.owned(self.regs.rdh, self.regs.rdt) < needed {
            return Ok(Placed::NoRoom);
        }
        let mut off = 0;
        while off < f.len {
            let head = self.regs.rdh;
            let at = ring.desc(head);
            let addr = self
                .mem
                .read_obj::<u64>(at)
                .map_err(|_| Error::RingOutsideRam {
                    dir: Dir::Rx,
                    base: at.0,
                    len: 16,
                })?;
            let addr = u64::from_le(addr);
            let n = size.min(f.len - off);
            self.mem
                .write_slice(&self.rx.buf[off..off + n], GuestAddress(addr))
                .map_err(|_| Error::BadBuffer {
                    dir: Dir::Rx,
                    index: head,
                    addr,
                    len: n,
                })?;
            off += n;
            let mut status = sta::DD;
            if off == f.len {
                status |= sta::EOP | sta::IXSM;
            }
            if f.vlan.is_some() {
                status |= sta::VP;
            }
            let mut wb = [0u8; 8];
            wb[..2].copy_from_slice(&(n as u16).to_le_bytes());
            wb[6..].copy_from_slice(&f.vlan.unwrap_or(0).to_le_bytes());
            // Length, checksum, errors and special first; status (DD) last.
            let _ = self.mem.write_slice(&wb[..4], GuestAddress(at.0 + 8));
            let _ = self.mem.write_slice(&wb[5..], GuestAddress(at.0 + 13));
            fence(Ordering::Release);
            let _ = self.mem.write_obj(status, GuestAddress(at.0 + 12));
            self.regs.rdh = ring.next(head);
        }
        self.stats.received(f.cast, f.size);
        Ok(Placed::Yes)
    }
}
