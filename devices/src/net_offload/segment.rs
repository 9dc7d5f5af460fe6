//! TCP segmentation: a GSO frame (TCPv4 or TCPv6) cut into wire frames of
//! at most `gso_size` bytes of payload each, one at a time into a buffer
//! the caller reuses.
//!
//! The headers are found from the frame (the header's `hdr_len` is only
//! checked to lie inside it), and every field a segment changes is
//! computed afresh: the IP length, the IPv4 ID (+k) and header checksum,
//! the sequence number (+k·MSS), the flags (FIN and PSH only on the last
//! segment, CWR only on the first) and the TCP checksum, from the
//! pseudo-header and the segment, whatever the sender left in the field.
//!
//! [`Segments::whole`] instead makes the frame one segment as long as the
//! whole, for a receiver that takes segments longer than the MSS it
//! offered (libslirp, a BSD stack, does).

use super::layout::tcp_flags::{CWR, FIN, PSH};
use super::{get16, put16, Error, Result, TcpLayout, VnetHdr};
use crate::virtio::net::MAX_FRAME;

/// How a GSO frame splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    layout: TcpLayout,
    /// The frame's length, to know it again.
    len: usize,
    mss: usize,
    count: usize,
}

impl Segments {
    /// Checks `hdr` and the GSO `frame` it came with, and finds how the
    /// frame splits.
    pub fn new(hdr: &VnetHdr, frame: &[u8]) -> Result<Segments> {
        Self::of_headers(hdr, frame, frame.len())
    }

    /// [`Segments::new`] for a frame of `len` bytes of which `head` is the
    /// beginning (at least its headers: Ethernet, IP and TCP).
    pub fn of_headers(hdr: &VnetHdr, head: &[u8], len: usize) -> Result<Segments> {
        if head.len() > len {
            return Err(Error::Packet("more headers than frame"));
        }
        if len > MAX_FRAME {
            return Err(Error::TooLong(len));
        }
        if !hdr.is_gso() {
            return Err(Error::Packet("not a GSO frame"));
        }
        if hdr.gso_size == 0 {
            return Err(Error::GsoSize);
        }
        if usize::from(hdr.hdr_len) > len {
            return Err(Error::HdrLen {
                hdr_len: hdr.hdr_len,
                len,
            });
        }
        hdr.check_csum(len)?;
        let layout = TcpLayout::parse(head)?;
        let v4 = hdr.gso_type & !super::hdr::GSO_ECN == super::hdr::GSO_TCPV4;
        if v4 != layout.ipv4 {
            return Err(Error::GsoMismatch(hdr.gso_type));
        }
        let payload = len - layout.payload;
        let mss = usize::from(hdr.gso_size);
        // The longest segment's IP length must fit its field.
        if layout.ip_len(layout.payload + mss.min(payload)).is_none() {
            return Err(Error::Packet("segments too long for the IP length field"));
        }
        Ok(Segments {
            layout,
            len,
            mss,
            count: payload.div_ceil(mss).max(1),
        })
    }

    /// How many segments (at least one: a frame without payload is its
    /// own only segment).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Puts segment `k` of `frame` (the frame [`Segments::new`] saw) in
    /// `out`.
    pub fn build(&self, frame: &[u8], k: usize, out: &mut Vec<u8>) -> Result<()> {
        let l = &self.layout;
        if frame.len() != self.len || k >= self.count {
            return Err(Error::Packet("no such segment"));
        }
        let start = k.saturating_mul(self.mss).saturating_add(l.payload);
        let end = start.saturating_add(self.mss).min(self.len);
        let (Some(headers), Some(payload)) = (frame.get(..l.payload), frame.get(start..end)) else {
            return Err(Error::Packet("no such segment"));
        };
        out.clear();
        out.extend_from_slice(headers);
        out.extend_from_slice(payload);
        let len = out.len();
        put16(out, l.ip_len_at(), l.ip_len(len).unwrap_or(0));
        if l.ipv4 {
            let id = get16(out, l.l3 + 4).wrapping_add(k as u16);
            put16(out, l.l3 + 4, id);
            l.fix_ipv4_csum(out);
        }
        let seq = u32::from_be_bytes([
            out[l.seq()],
            out[l.seq() + 1],
            out[l.seq() + 2],
            out[l.seq() + 3],
        ]);
        let seq = seq.wrapping_add((k * self.mss) as u32);
        out[l.seq()..l.seq() + 4].copy_from_slice(&seq.to_be_bytes());
        if k + 1 < self.count {
            out[l.flags()] &= !(FIN | PSH);
        }
        if k > 0 {
            out[l.flags()] &= !CWR;
        }
        l.fix_tcp_csum(out);
        Ok(())
    }

    /// Makes `frame` (the frame [`Segments::new`] saw) one segment, in
    /// place: the IP length of the whole (an error if it does not fit the
    /// field), the IPv4 header checksum and the TCP checksum computed
    /// afresh; the ID, sequence number and flags stay the first
    /// segment's, which with the last one's FIN and PSH is what the
    /// segments say together.
    pub fn whole(&self, frame: &mut [u8]) -> Result<()> {
        let l = &self.layout;
        if frame.len() != self.len {
            return Err(Error::Packet("not the frame that was checked"));
        }
        let Some(ip_len) = l.ip_len(self.len) else {
            return Err(Error::Packet("too long for one IP packet"));
        };
        put16(frame, l.ip_len_at(), ip_len);
        l.fix_ipv4_csum(frame);
        l.fix_tcp_csum(frame);
        Ok(())
    }
}
