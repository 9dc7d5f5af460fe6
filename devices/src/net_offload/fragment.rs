//! IPv4 fragmentation (RFC 791): an Ethernet frame carrying an IPv4 packet
//! longer than the MTU cut into fragments of at most `mtu` IP bytes each,
//! one at a time into a buffer the caller reuses.
//!
//! Every fragment is the Ethernet header (one VLAN tag at most), the
//! 20-byte IP header with its total length, MF, fragment offset (added to
//! the packet's own, if it already was a fragment) and header checksum
//! computed afresh, and a slice of the payload, a multiple of 8 bytes long
//! but for the last, which keeps the packet's MF. A packet to be cut may
//! not have IP options (libslirp, the only sender, never sends any), nor
//! DF. Bytes past the IP total length (Ethernet padding) are trimmed; a
//! packet that fits is its own only fragment, the frame so trimmed.

use super::layout::{link_header, ETH_P_IPV4, IPV4_HLEN};
use super::{add_words, fold, get16, put16, Error, Result};

/// The least MTU an IPv4 link may have (RFC 791).
const MIN_MTU: usize = 68;
const DF: u16 = 0x4000;
const MF: u16 = 0x2000;
const OFFSET: u16 = 0x1fff;

/// How an IPv4 frame splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragments {
    /// The IP header.
    l3: usize,
    /// The payload.
    data: usize,
    /// The end of the IP packet.
    end: usize,
    /// The frame's length, to know it again.
    len: usize,
    /// Payload bytes per fragment, a multiple of 8.
    chunk: usize,
    count: usize,
}

impl Fragments {
    /// Checks the IPv4 `frame` and finds how it splits into fragments of
    /// at most `mtu` IP bytes.
    pub fn new(frame: &[u8], mtu: usize) -> Result<Fragments> {
        let bad = |why| Err(Error::Packet(why));
        let len = frame.len();
        if mtu < MIN_MTU {
            return bad("MTU below 68");
        }
        let (l3, ethertype) = link_header(frame)?;
        if ethertype != ETH_P_IPV4 {
            return bad("not IPv4");
        }
        if len < l3 + IPV4_HLEN {
            return bad("truncated IPv4 header");
        }
        let ihl = usize::from(frame[l3] & 0xf) * 4;
        if frame[l3] >> 4 != 4 || ihl < IPV4_HLEN {
            return bad("bad IPv4 version or header length");
        }
        let total = usize::from(get16(frame, l3 + 2));
        if total < ihl {
            return bad("IPv4 total length shorter than its header");
        }
        let end = l3 + total;
        if len < end {
            return bad("IPv4 packet truncated");
        }
        let data = l3 + ihl;
        if total <= mtu {
            let chunk = total - ihl;
            return Ok(Fragments {
                l3,
                data,
                end,
                len,
                chunk,
                count: 1,
            });
        }
        let flags = get16(frame, l3 + 6);
        if flags & DF != 0 {
            return bad("longer than the MTU, with DF");
        }
        if ihl != IPV4_HLEN {
            return bad("IPv4 options in a packet to fragment");
        }
        let payload = total - ihl;
        if usize::from(flags & OFFSET) * 8 + payload > usize::from(u16::MAX) {
            return bad("fragment offset beyond 65535");
        }
        let chunk = (mtu - IPV4_HLEN) & !7;
        let count = payload.div_ceil(chunk);
        Ok(Fragments {
            l3,
            data,
            end,
            len,
            chunk,
            count,
        })
    }

    /// How many fragments (at least one).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Puts fragment `k` of `frame` (the frame [`Fragments::new`] saw) in
    /// `out`.
    pub fn build(&self, frame: &[u8], k: usize, out: &mut Vec<u8>) -> Result<()> {
        if frame.len() != self.len || k >= self.count {
            return Err(Error::Packet("no such fragment"));
        }
        out.clear();
        if self.count == 1 {
            let Some(whole) = frame.get(..self.end) else {
                return Err(Error::Packet("no such fragment"));
            };
            out.extend_from_slice(whole);
            return Ok(());
        }
        let l3 = self.l3;
        let start = k.saturating_mul(self.chunk).saturating_add(self.data);
        let stop = start.saturating_add(self.chunk).min(self.end);
        let (Some(headers), Some(payload)) = (frame.get(..self.data), frame.get(start..stop))
        else {
            return Err(Error::Packet("no such fragment"));
        };
        out.extend_from_slice(headers);
        out.extend_from_slice(payload);
        put16(out, l3 + 2, (IPV4_HLEN + payload.len()) as u16);
        let flags = get16(frame, l3 + 6);
        let more = if k + 1 < self.count { MF } else { flags & MF };
        // new() saw the last offset fit in 13 bits.
        let offset = (flags & OFFSET) + (k * self.chunk / 8) as u16;
        put16(out, l3 + 6, (flags & !(MF | OFFSET)) | more | offset);
        put16(out, l3 + 10, 0);
        let sum = !fold(add_words(0, &out[l3..self.data]));
        put16(out, l3 + 10, sum);
        Ok(())
    }
}
