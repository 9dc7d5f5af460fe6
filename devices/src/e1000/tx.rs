//! Transmit: descriptors from TDH up to TDT (legacy, context and data
//! descriptors), a packet gathered into a reusable buffer until EOP, then
//! sent as one frame or, with TSE, as MSS-sized segments; each frame is one
//! writev of the zeroed backend header and the frame.

use std::io::{self, IoSlice};
use std::sync::atomic::{fence, Ordering};

use log::warn;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::offload::{self, Context};
use super::regs::{ctrl, int, tctl};
use super::ring::Ring;
use super::stats::{reg as stat, Cast};
use super::{Dir, Error, E1000};
use crate::pci::Interrupts;
use crate::virtio::net::NetBackend;

/// Descriptor command bits (byte 11).
mod cmd {
    pub const EOP: u8 = 1 << 0;
    /// Legacy: insert checksum. Data: segmentation.
    pub const IC_TSE: u8 = 1 << 2;
    pub const RS: u8 = 1 << 3;
    pub const RPS: u8 = 1 << 4;
    pub const DEXT: u8 = 1 << 5;
    pub const VLE: u8 = 1 << 6;
}
/// Extended descriptor types.
const DTYP_CONTEXT: u32 = 0;
const DTYP_DATA: u32 = 1;
/// Status: descriptor done.
const STA_DD: u8 = 1;
/// Largest packet gathered: a 64 KiB TSO payload behind a 255-byte header.
pub const MAX_PACKET: usize = 0x10000 + 255;
/// Frames shorter than an Ethernet header are not sent.
const MIN_FRAME: usize = 14;

/// Transmit state.
#[derive(Debug, Default)]
pub struct Tx {
    /// The packet gathered so far.
    buf: Vec<u8>,
    /// One segment of a TSO packet.
    seg: Vec<u8>,
    /// A packet is being gathered (descriptors without EOP seen).
    started: bool,
    /// The packet is dropped at its EOP (too long, or a bad buffer).
    dropping: bool,
    tso: bool,
    popts: u8,
    /// A legacy packet's checksum start, and with IC (start, offset).
    css: u8,
    legacy_sum: Option<(u8, u8)>,
    vlan: Option<u16>,
    /// Contexts for plain packets and for segmentation.
    csum_ctx: Context,
    tso_ctx: Context,
    /// The gathered packet is ready: the index of its next frame to send.
    resume: Option<usize>,
    /// The backend would block: wait for backend_writable.
    pub blocked: bool,
    /// A fault stopped the ring until its registers are written.
    pub fault: bool,
}

impl Tx {
    pub fn new() -> Self {
        Tx {
            buf: Vec::with_capacity(MAX_PACKET),
            seg: Vec::with_capacity(MAX_PACKET),
            ..Tx::default()
        }
    }

    /// Bytes of the packet gathered so far.
    #[cfg(test)]
    pub fn gathered(&self) -> usize {
        self.buf.len()
    }

    /// Forgets the packet in progress and any fault (ring reprogrammed).
    pub fn restart(&mut self) {
        self.started = false;
        self.dropping = false;
        self.resume = None;
        self.blocked = false;
        self.fault = false;
    }

    /// Power-on state, keeping the buffers.
    pub fn reset(&mut self) {
        self.restart();
        self.csum_ctx = Context::default();
        self.tso_ctx = Context::default();
    }
}

/// One descriptor as read from the ring.
struct Desc {
    raw: [u8; 16],
    addr: u64,
    lower: u32,
    upper: u32,
}

impl Desc {
    fn parse(raw: [u8; 16]) -> Self {
        let le32 = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        Desc {
            raw,
            addr: u64::from(le32(0)) | u64::from(le32(4)) << 32,
            lower: le32(8),
            upper: le32(12),
        }
    }

    fn cmd(&self) -> u8 {
        (self.lower >> 24) as u8
    }
}

/// What became of a descriptor.
enum Step {
    Done,
    Blocked,
}

/// Writes `frame` (with an 802.1Q tag carrying `vlan` after the MAC
/// addresses, if any) to `backend` behind the zeroed header `hdr`.
fn write_frame<B: NetBackend>(
    backend: &mut B,
    hdr: &[u8],
    frame: &[u8],
    vlan: Option<u16>,
) -> io::Result<usize> {
    match vlan {
        Some(tci) if frame.len() >= 12 => {
            let tag = [0x81, 0x00, (tci >> 8) as u8, tci as u8];
            let (macs, rest) = frame.split_at(12);
            let iov = [
                IoSlice::new(hdr),
                IoSlice::new(macs),
                IoSlice::new(&tag),
                IoSlice::new(rest),
            ];
            backend.writev(&iov)
        }
        _ => backend.writev(&[IoSlice::new(hdr), IoSlice::new(frame)]),
    }
}

impl<B: NetBackend, M: GuestMemory + Send, I: Interrupts> E1000<B, M, I> {
    /// Works the transmit ring from TDH up to TDT, at most once around.
    pub(super) fn process_tx(&mut self) {
        let t = &self.tx;
        if self.regs.tctl & tctl::EN == 0 || !self.bus_master() || t.fault || t.blocked {
            return;
        }
        let r = &self.regs;
        let ring = match Ring::new(Dir::Tx, &self.mem, r.tdbal, r.tdbah, r.tdlen, r.tdh, r.tdt) {
            Ok(ring) => ring,
            Err(e) => return self.fault(Dir::Tx, e),
        };
        let mut cause = 0;
        let mut worked = false;
        for _ in 0..ring.count {
            let head = self.regs.tdh;
            if head == self.regs.tdt {
                break;
            }
            let at = ring.desc(head);
            let mut raw = [0u8; 16];
            if self.mem.read_slice(&mut raw, at).is_err() {
                self.fault(
                    Dir::Tx,
                    Error::RingOutsideRam {
                        dir: Dir::Tx,
                        base: at.0,
                        len: 16,
                    },
                );
                break;
            }
            let desc = Desc::parse(raw);
            match self.tx_desc(head, &desc) {
                Ok(Step::Done) => {}
                Ok(Step::Blocked) => {
                    self.tx.blocked = true;
                    break;
                }
                Err(e) => {
                    self.fault(Dir::Tx, e);
                    break;
                }
            }
            if desc.cmd() & (cmd::RS | cmd::RPS) != 0 {
                // Status last, once the buffers are no longer needed.
                fence(Ordering::Release);
                let sta = desc.raw[12] & 0xf0 | STA_DD;
                let _ = self.mem.write_obj(sta, GuestAddress(at.0 + 12));
                cause |= int::TXDW;
            }
            self.regs.tdh = ring.next(head);
            worked = true;
        }
        if worked && self.regs.tdh == self.regs.tdt {
            cause |= int::TXQE;
        }
        self.raise(cause);
    }

    /// Handles descriptor `index`: records a context, or adds a buffer to
    /// the packet and sends the packet at its EOP.
    fn tx_desc(&mut self, index: u32, d: &Desc) -> Result<Step, Error> {
        if self.tx.resume.is_some() {
            // The EOP descriptor of a packet the backend refused earlier.
            return Ok(self.send_packet());
        }
        let c = d.cmd();
        let ext = c & cmd::DEXT != 0;
        let dtyp = (d.lower >> 20) & 0xf;
        if ext && dtyp == DTYP_CONTEXT {
            let ctx = Context::parse(&d.raw);
            if ctx.tse {
                self.tx.tso_ctx = ctx;
            } else {
                self.tx.csum_ctx = ctx;
            }
            return Ok(Step::Done);
        }
        if ext && dtyp != DTYP_DATA {
            self.dropped(Error::BadDescriptorType { index, dtyp });
            return Ok(Step::Done);
        }
        let t = &mut self.tx;
        if !t.started {
            t.started = true;
            t.dropping = false;
            t.buf.clear();
            t.tso = ext && c & cmd::IC_TSE != 0;
            // POPTS (data) and CSS (legacy) count in the first descriptor.
            t.popts = if ext { (d.upper >> 8) as u8 } else { 0 };
            t.css = (d.upper >> 8) as u8;
        }
        let len = if ext {
            d.lower & 0xf_ffff
        } else {
            d.lower & 0xffff
        } as usize;
        self.gather(index, d.addr, len)?;
        if c & cmd::EOP == 0 {
            return Ok(Step::Done);
        }
        self.tx.started = false;
        if self.tx.dropping {
            return Ok(Step::Done);
        }
        // VLE, IC and CSO count in the last.
        let t = &mut self.tx;
        t.vlan = (c & cmd::VLE != 0 && self.regs.ctrl & ctrl::VME != 0)
            .then_some((d.upper >> 16) as u16);
        t.legacy_sum = (!ext && c & cmd::IC_TSE != 0).then_some((t.css, (d.lower >> 16) as u8));
        if t.tso {
            if let Err(why) = offload::tso_segments(&t.tso_ctx, t.popts, t.buf.len()) {
                self.dropped(Error::BadTso(why));
                return Ok(Step::Done);
            }
        } else {
            offload::apply_checksums(&mut t.buf, t.legacy_sum, t.popts, &t.csum_ctx);
        }
        t.resume = Some(0);
        Ok(self.send_packet())
    }

    /// Appends `len` bytes at guest address `addr` to the packet.
    fn gather(&mut self, index: u32, addr: u64, len: usize) -> Result<(), Error> {
        let t = &mut self.tx;
        // A null address or length transfers no data.
        if t.dropping || len == 0 || addr == 0 {
            return Ok(());
        }
        let old = t.buf.len();
        if old + len > MAX_PACKET {
            t.dropping = true;
            self.dropped(Error::PacketTooLong { max: MAX_PACKET });
            return Ok(());
        }
        t.buf.resize(old + len, 0);
        if self
            .mem
            .read_slice(&mut t.buf[old..], GuestAddress(addr))
            .is_err()
        {
            t.dropping = true;
            return Err(Error::BadBuffer {
                dir: Dir::Tx,
                index,
                addr,
                len,
            });
        }
        Ok(())
    }

    /// Sends the ready packet's frames from the one it stopped at; keeps
    /// its place if the backend would block.
    fn send_packet(&mut self) -> Step {
        let first = self.tx.resume.take().unwrap_or(0);
        if !self.link_up {
            return Step::Done;
        }
        if !self.tx.tso {
            return match self.send_frame(false) {
                true => Step::Done,
                false => {
                    self.tx.resume = Some(first);
                    Step::Blocked
                }
            };
        }
        let t = &self.tx;
        let count = offload::tso_segments(&t.tso_ctx, t.popts, t.buf.len()).unwrap_or(0);
        for k in first..count {
            let t = &mut self.tx;
            offload::build_segment(&t.tso_ctx, t.popts, &t.buf, k, &mut t.seg);
            if !self.send_frame(true) {
                self.tx.resume = Some(k);
                return Step::Blocked;
            }
        }
        self.stats.add(stat::TSCTC, 1);
        Step::Done
    }

    /// Writes the packet (or, with `segment`, the segment) to the backend;
    /// false if it would block. Other errors drop the frame.
    fn send_frame(&mut self, segment: bool) -> bool {
        let frame = if segment { &self.tx.seg } else { &self.tx.buf };
        if frame.len() < MIN_FRAME {
            return true;
        }
        let vlan = self.tx.vlan;
        match write_frame(&mut self.backend, &self.vnet_hdr, frame, vlan) {
            Ok(_) => {
                let len = frame.len() + if vlan.is_some() { 4 } else { 0 };
                self.stats.transmitted(Cast::of(frame), len);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => {
                if self.logs.backend.hit() {
                    warn!(
                        "e1000: backend write: {e} ({} errors)",
                        self.logs.backend.count()
                    );
                }
                true
            }
        }
    }
}
