//! Where the headers of an Ethernet frame carrying TCP lie, found from the
//! frame itself.

use super::{add_words, get16, Error, Result};

/// Ethernet header, and the same with one 802.1Q tag.
const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 18;
pub(super) const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
pub(super) const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
/// IPv4 flags and fragment offset: MF and the offset (DF may be set).
const IPV4_FRAGMENT: u16 = 0x3fff;

/// TCP header flags (byte 13).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const CWR: u8 = 0x80;
}

/// Where the network header of an Ethernet `frame` (one VLAN tag at most)
/// starts, and its ethertype.
pub(super) fn link_header(frame: &[u8]) -> Result<(usize, u16)> {
    if frame.len() < ETH_HLEN {
        return Err(Error::Packet("shorter than an Ethernet header"));
    }
    match get16(frame, 12) {
        ETH_P_8021Q if frame.len() >= VLAN_HLEN => Ok((VLAN_HLEN, get16(frame, 16))),
        ETH_P_8021Q => Err(Error::Packet("truncated VLAN tag")),
        t => Ok((ETH_HLEN, t)),
    }
}

/// Offsets of a TCP frame's headers: Ethernet (one VLAN tag at most), IPv4
/// (options allowed, not a fragment) or IPv6 (no extension headers), TCP
/// (options allowed). Every offset lies inside the frame it was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLayout {
    /// The IP header.
    pub l3: usize,
    pub ipv4: bool,
    /// The TCP header.
    pub l4: usize,
    /// The payload (the end of the TCP header).
    pub payload: usize,
}

impl TcpLayout {
    /// Finds the headers of `frame`, or says why it is no TCP frame this
    /// module handles. The IP length fields are not looked at.
    pub fn parse(frame: &[u8]) -> Result<TcpLayout> {
        let bad = |why| Err(Error::Packet(why));
        let (l3, ethertype) = link_header(frame)?;
        let (ipv4, l4) = match ethertype {
            ETH_P_IPV4 => {
                if frame.len() < l3 + IPV4_HLEN {
                    return bad("truncated IPv4 header");
                }
                let (version, ihl) = (frame[l3] >> 4, usize::from(frame[l3] & 0xf) * 4);
                if version != 4 || ihl < IPV4_HLEN {
                    return bad("bad IPv4 version or header length");
                }
                if frame.len() < l3 + ihl {
                    return bad("truncated IPv4 options");
                }
                if frame[l3 + 9] != IPPROTO_TCP {
                    return bad("not TCP");
                }
                if get16(frame, l3 + 6) & IPV4_FRAGMENT != 0 {
                    return bad("an IPv4 fragment");
                }
                (true, l3 + ihl)
            }
            ETH_P_IPV6 => {
                if frame.len() < l3 + IPV6_HLEN {
                    return bad("truncated IPv6 header");
                }
                if frame[l3] >> 4 != 6 {
                    return bad("bad IPv6 version");
                }
                if frame[l3 + 6] != IPPROTO_TCP {
                    return bad("not TCP right after the IPv6 header");
                }
                (false, l3 + IPV6_HLEN)
            }
            _ => return bad("neither IPv4 nor IPv6"),
        };
        if frame.len() < l4 + TCP_HLEN {
            return bad("truncated TCP header");
        }
        let doff = usize::from(frame[l4 + 12] >> 4) * 4;
        if doff < TCP_HLEN {
            return bad("TCP data offset below 5");
        }
        if frame.len() < l4 + doff {
            return bad("truncated TCP options");
        }
        Ok(TcpLayout {
            l3,
            ipv4,
            l4,
            payload: l4 + doff,
        })
    }

    /// Offset of the TCP flags byte.
    pub fn flags(&self) -> usize {
        self.l4 + 13
    }

    /// Offset of the TCP checksum field.
    pub fn tcp_csum(&self) -> usize {
        self.l4 + 16
    }

    /// Offset of the TCP sequence number.
    pub fn seq(&self) -> usize {
        self.l4 + 4
    }

    /// The IP length field's value for a frame of `len` bytes: the IPv4
    /// total length, or the IPv6 payload length; None if it does not fit.
    pub fn ip_len(&self, len: usize) -> Option<u16> {
        let header = if self.ipv4 { 0 } else { IPV6_HLEN };
        len.checked_sub(self.l3 + header)
            .and_then(|n| u16::try_from(n).ok())
    }

    /// Offset of the IP length field.
    pub fn ip_len_at(&self) -> usize {
        self.l3 + if self.ipv4 { 2 } else { 4 }
    }

    /// The sum (unfolded) of the TCP pseudo-header for a TCP segment of
    /// `tcp_len` bytes (header and payload) with the addresses in `frame`.
    pub fn pseudo_sum(&self, frame: &[u8], tcp_len: usize) -> u64 {
        let addrs = if self.ipv4 {
            self.l3 + 12..self.l3 + 20
        } else {
            self.l3 + 8..self.l3 + 40
        };
        let words = frame.get(addrs).map_or(0, |a| add_words(0, a));
        words + u64::from(IPPROTO_TCP) + tcp_len as u64
    }

    /// Stores the TCP checksum computed from scratch over the pseudo-header
    /// and everything from the TCP header to the end of `frame`.
    pub fn fix_tcp_csum(&self, frame: &mut [u8]) {
        super::put16(frame, self.tcp_csum(), 0);
        let Some(tcp) = frame.get(self.l4..) else {
            return;
        };
        let sum = self.pseudo_sum(frame, tcp.len()) + add_words(0, tcp);
        super::put16(frame, self.tcp_csum(), !super::fold(sum));
    }

    /// Stores the IPv4 header checksum computed from scratch (nothing for
    /// IPv6).
    pub fn fix_ipv4_csum(&self, frame: &mut [u8]) {
        if !self.ipv4 {
            return;
        }
        super::put16(frame, self.l3 + 10, 0);
        if let Some(h) = frame.get(self.l3..self.l4) {
            let sum = !super::fold(add_words(0, h));
            super::put16(frame, self.l3 + 10, sum);
        }
    }
}
