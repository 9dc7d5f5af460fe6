//! Merging a run of wire frames into TCP GSO frames, the inverse of
//! [`super::Segments`]: a receive offload done by the sender, so that a
//! NIC takes one large frame where it would have taken dozens.
//!
//! Consecutive frames merge when they are in-order segments of one TCP
//! flow: the same Ethernet and IP headers but for the IP length, ID and
//! checksum (IPv4 without options, not a fragment, the ID one more each
//! time), the same TCP header but for the sequence number (contiguous),
//! the flags and the checksum (the same ports, ACK number, window and
//! options), the flags ACK (PSH or FIN end the merge, as does a segment
//! shorter than the receiver's MSS), at most 64 KiB in all. The merged
//! frame is a GSO frame of the receiver's MSS, given by the caller per
//! flow; so is a single segment longer than that MSS (the sender's MSS
//! may exceed the receiver's, see the slirp backend). When every segment
//! but the last is exactly one MSS long, [`super::Segments`] gives the
//! segments back byte for byte. Any other frame passes through unchanged,
//! as does a frame that found nothing to merge with, each behind a zero
//! header.

use super::layout::tcp_flags::{ACK, FIN, PSH};
use super::{fold, get16, put16, TcpLayout, VnetHdr};
use crate::virtio::net::MAX_FRAME;

/// The frame being merged into.
#[derive(Clone, Copy, Debug)]
struct Open {
    layout: TcpLayout,
    /// The receiver's MSS: the GSO size.
    mss: usize,
    segs: usize,
    next_seq: u32,
    first_id: u16,
}

/// Merges the frames given to [`Coalescer::push`] as they come; finished
/// frames go, in order, to the caller's `out` with their headers. Holds
/// at most one frame; its buffer is reused.
#[derive(Debug, Default)]
pub struct Coalescer {
    buf: Vec<u8>,
    open: Option<Open>,
}

/// A frame that may merge: its headers, payload length and whether it
/// ends a merge (PSH or FIN).
struct Candidate {
    layout: TcpLayout,
    payload: usize,
    last: bool,
}

impl Coalescer {
    /// Takes the next frame of the run: merges it into the frame held, or
    /// hands that one to `out` and holds this one (or hands it on too if
    /// it cannot merge). `mss` gives the receiver's MSS for a TCP frame's
    /// flow (called once per frame held).
    pub fn push<M, F>(&mut self, frame: &[u8], mss: M, out: &mut F)
    where
        M: FnOnce(&TcpLayout, &[u8]) -> usize,
        F: FnMut(&VnetHdr, &[u8]),
    {
        let Some(c) = candidate(frame) else {
            self.flush(out);
            return out(&VnetHdr::NONE, frame);
        };
        if let Some(open) = self
            .open
            .as_mut()
            .filter(|o| joins(o, &self.buf, frame, &c))
        {
            self.buf.extend_from_slice(&frame[c.layout.payload..]);
            open.segs += 1;
            open.next_seq = open.next_seq.wrapping_add(c.payload as u32);
            // The last segment's flags stand for the merged frame's end.
            self.buf[c.layout.flags()] = frame[c.layout.flags()];
            if c.last || c.payload < open.mss {
                self.flush(out);
            }
            return;
        }
        self.flush(out);
        let mss = mss(&c.layout, frame).clamp(1, usize::from(u16::MAX));
        if c.payload <= mss && (c.last || c.payload < mss) {
            // Nothing may follow it, and it needs no cutting.
            return out(&VnetHdr::NONE, frame);
        }
        self.buf.clear();
        self.buf.extend_from_slice(frame);
        self.open = Some(Open {
            layout: c.layout,
            mss,
            segs: 1,
            next_seq: seq(frame, &c.layout).wrapping_add(c.payload as u32),
            first_id: get16(frame, c.layout.l3 + 4),
        });
        // Longer than the MSS (else it went above): a GSO frame of one.
        if c.last {
            self.flush(out);
        }
    }

    /// Hands the frame held, if any, to `out`: unchanged if nothing merged
    /// with it, else as a GSO frame.
    pub fn flush<F: FnMut(&VnetHdr, &[u8])>(&mut self, out: &mut F) {
        let Some(open) = self.open.take() else {
            return;
        };
        let l = &open.layout;
        if self.buf.len() - l.payload <= open.mss {
            return out(&VnetHdr::NONE, &self.buf);
        }
        let len = self.buf.len();
        put16(&mut self.buf, l.ip_len_at(), l.ip_len(len).unwrap_or(0));
        l.fix_ipv4_csum(&mut self.buf);
        // The checksum is left to the receiver (NEEDS_CSUM), which finds in
        // the field the pseudo-header's sum, folded and not complemented,
        // over the length of the whole merged TCP segment: Linux's
        // virtio_net_hdr_to_skb makes a CHECKSUM_PARTIAL skb of it (csum
        // offset 16 for TCP, as it insists), skb_checksum_help completes
        // such a sum as it is, and tcp_gso_segment, should the guest
        // segment the frame again, takes the whole length out of it and
        // each segment's length in.
        let pseudo = fold(l.pseudo_sum(&self.buf, len - l.l4));
        put16(&mut self.buf, l.tcp_csum(), pseudo);
        // mss: below the frame's payload, so below MAX_FRAME.
        out(&VnetHdr::tcp_gso(l, open.mss as u16), &self.buf);
    }
}

fn seq(frame: &[u8], l: &TcpLayout) -> u32 {
    u32::from(get16(frame, l.seq())) << 16 | u32::from(get16(frame, l.seq() + 2))
}

/// `frame` if it may merge: TCP with flags ACK and maybe PSH and FIN,
/// some payload, IPv4 without options, its IP length what the frame
/// holds.
fn candidate(frame: &[u8]) -> Option<Candidate> {
    if frame.len() > MAX_FRAME {
        return None;
    }
    let layout = TcpLayout::parse(frame).ok()?;
    let flags = frame[layout.flags()];
    let fits = (!layout.ipv4 || layout.l4 == layout.l3 + 20)
        && layout.ip_len(frame.len()) == Some(get16(frame, layout.ip_len_at()))
        && flags & !(PSH | FIN) == ACK
        && frame.len() > layout.payload;
    fits.then_some(Candidate {
        layout,
        payload: frame.len() - layout.payload,
        last: flags & (PSH | FIN) != 0,
    })
}

/// Whether `frame` (a candidate `c`) continues the frame held in `buf`.
fn joins(open: &Open, buf: &[u8], frame: &[u8], c: &Candidate) -> bool {
    let l = &open.layout;
    c.layout == *l
        && seq(frame, l) == open.next_seq
        && (!l.ipv4 || get16(frame, l.l3 + 4) == open.first_id.wrapping_add(open.segs as u16))
        && buf.len() + c.payload <= MAX_FRAME
        && l.ip_len(buf.len() + c.payload).is_some()
        && same_headers(buf, frame, l)
}

/// Whether the headers of `a` and `b` are the same but for the fields a
/// segment changes: IP length (and the IPv4 ID and checksum), sequence
/// number, flags and TCP checksum.
fn same_headers(a: &[u8], b: &[u8], l: &TcpLayout) -> bool {
    let (l3, l4) = (l.l3, l.l4);
    let ip: [(usize, usize); 2] = if l.ipv4 {
        [(l3 + 2, l3 + 6), (l3 + 10, l3 + 12)]
    } else {
        [(l3 + 4, l3 + 6), (l3 + 6, l3 + 6)]
    };
    let tcp = [(l4 + 4, l4 + 8), (l4 + 13, l4 + 14), (l4 + 16, l4 + 18)];
    let mut at = 0;
    for (skip_from, skip_to) in ip.into_iter().chain(tcp) {
        if a.get(at..skip_from) != b.get(at..skip_from) {
            return false;
        }
        at = skip_to;
    }
    a.get(at..l.payload) == b.get(at..l.payload)
}
