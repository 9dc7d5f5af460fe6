//! IPv6 through libslirp: a test guest on fec0::/64 that does neighbour
//! discovery by hand, then TCP to a listener on the host's `::1` (which
//! libslirp's host address fec0::2 stands for). The same offloads as over
//! IPv4: libslirp's long segments reach the guest as GSO frames of the
//! MSS the guest asked for, and a guest's GSO frame reaches libslirp
//! whole.

use std::net::Ipv6Addr;

use super::*;
use crate::net_offload::hdr::GSO_TCPV6;

/// The guest's address: the prefix and the EUI-64 of [`GUEST_MAC`].
const GUEST6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0x5054, 0x00ff, 0xfe12, 0x3456);
const HOST6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 2);
/// The MSS the guest's SYN asks for (an MTU of 1500).
const MSS6: u16 = 1440;
const ICMPV6: u8 = 58;
const TCP: u8 = 6;

/// RFC 8200's pseudo-header of an upper-layer packet of `len` bytes.
fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: usize) -> Vec<u8> {
    let mut p = [src.octets(), dst.octets()].concat();
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, next]);
    p
}

/// An Ethernet frame with an IPv6 packet from the guest.
fn ip6(dst_mac: [u8; 6], dst: Ipv6Addr, next: u8, hops: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, hops]);
    p.extend_from_slice(&GUEST6.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(l4);
    eth(dst_mac, 0x86dd, &p)
}

/// A neighbour solicitation for `target` to its solicited-node group,
/// with the guest's link-layer address.
fn neighbour_solicitation(target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let mut g = [0u8; 16];
    g[..2].copy_from_slice(&[0xff, 0x02]);
    g[11..13].copy_from_slice(&[1, 0xff]);
    g[13..].copy_from_slice(&t[13..]);
    let group = Ipv6Addr::from(g);
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&t);
    m.extend_from_slice(&[1, 1]);
    m.extend_from_slice(&GUEST_MAC);
    let c = csum(&[pseudo6(GUEST6, group, ICMPV6, m.len()), m.clone()].concat());
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip6(
        [0x33, 0x33, g[12], g[13], g[14], g[15]],
        group,
        ICMPV6,
        255,
        &m,
    )
}

/// A TCP segment from the guest to fec0::2 (as `tcp_frame` over IPv4).
fn tcp6_frame(
    ports: (u16, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
    partial: bool,
) -> Vec<u8> {
    let mut options = Vec::new();
    if flags & SYN != 0 {
        options.extend_from_slice(&[2, 4]);
        options.extend_from_slice(&MSS6.to_be_bytes());
    }
    let mut t = Vec::new();
    t.extend_from_slice(&ports.0.to_be_bytes());
    t.extend_from_slice(&ports.1.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    let offset = ((20 + options.len()) as u8 / 4) << 4;
    t.extend_from_slice(&[offset, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(&options);
    t.extend_from_slice(payload);
    let pseudo = pseudo6(GUEST6, HOST6, TCP, t.len());
    let c = if partial {
        !csum(&pseudo)
    } else {
        csum(&[pseudo, t.clone()].concat())
    };
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ip6(SLIRP_MAC, HOST6, TCP, 64, &t)
}

/// A TCP segment's (sequence number, ACK number, flags, payload) if `f`
/// is an IPv6 one from fec0::2 to the guest's port `port`; checks its
/// checksum.
fn tcp6_to(f: &[u8], port: u16) -> Option<Segment<'_>> {
    if f.len() < 14 + 40 + 20 || f[12..14] != [0x86, 0xdd] || f[20] != TCP {
        return None;
    }
    let t = &f[54..];
    if u16::from_be_bytes([t[2], t[3]]) != port {
        return None;
    }
    let (src, dst) = (&f[22..38], &f[38..54]);
    assert_eq!((src, dst), (&HOST6.octets()[..], &GUEST6.octets()[..]));
    let pseudo = pseudo6(HOST6, GUEST6, TCP, t.len());
    assert_eq!(csum(&[pseudo, t.to_vec()].concat()), 0, "TCP checksum");
    Some(segment(t))
}

#[test]
fn tcp_over_ipv6_both_ways_with_offloads() {
    let (listener, port) = listen("[::1]:0");
    let ports = (40001, port);
    let mut g = Guest::new(Config::default());
    // libslirp learns the guest's link-layer address from its
    // solicitation, and advertises its own.
    g.send(&neighbour_solicitation(HOST6));
    g.until(|f| f[12..14] == [0x86, 0xdd] && f[20] == ICMPV6 && f[54] == 136);
    let tcp = GuestTcp {
        to_guest: &move |f| tcp6_to(f, ports.0),
        from_guest: &move |seq, ack, flags, payload, partial| {
            tcp6_frame(ports, seq, ack, flags, payload, partial)
        },
        mss: MSS6,
        gso_type: GSO_TCPV6,
    };
    tcp.both_ways(&mut g, &listener, 7000, 200_000, 20_000);
}
