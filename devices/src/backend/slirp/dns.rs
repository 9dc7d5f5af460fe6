//! DNS for the guest: its queries to the DNS alias (10.0.2.3 by default)
//! go to the host's resolver, which the launcher read from the host's
//! `/etc/resolv.conf`.
//!
//! libslirp would read that file itself, from inside the jail, where there
//! is none (and where the filter refuses the attempt). Instead, before a
//! guest frame reaches libslirp, a query to the alias on port 53 (UDP or
//! TCP) gets the resolver's address and port as its destination; libslirp
//! then carries it like any other traffic to a host outside the guest's
//! network. On the way back, frames from the resolver to a guest port that
//! asked the alias get the alias's address and port 53 as their source
//! again. Only addresses and ports change, and the IPv4 header and
//! UDP/TCP checksums are adjusted for exactly those changes (RFC 1624), so
//! a frame's checksums stay as right or as wrong as the guest made them;
//! libslirp checks them as usual.
//!
//! Everything else addressed to the alias that libslirp would not answer
//! itself is dropped here: other ports and protocols, fragments, and with
//! no resolver known, queries too. ICMP (ping) to the alias passes:
//! libslirp answers it. The IPv6 alias (`fec0::3`) gets the same treatment
//! minus the redirect: only ICMPv6 passes, so IPv6 DNS is not served.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use crate::net_offload::adjust_checksum as adjust;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const DNS_PORT: u16 = 53;

/// Guest ports remembered as having asked the alias.
const FLOWS: usize = 256;
/// Fragmented answers remembered (by IP id) for their later fragments.
const FRAGMENTED: usize = 8;

/// What to do with a guest frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not for the alias, or for libslirp to answer: hand it on unchanged.
    Pass,
    /// A query, now addressed to the host's resolver: hand it on.
    Redirected,
    /// For the alias, and nothing would answer it: drop it.
    Drop,
}

/// The redirect of one slirp instance.
#[derive(Debug)]
pub struct DnsRedirect {
    alias: Ipv4Addr,
    alias6: Option<Ipv6Addr>,
    upstream: Option<SocketAddrV4>,
    /// (protocol << 16 | guest port) of recent queries; 0 = free.
    flows: [u32; FLOWS],
    next_flow: usize,
    /// IP ids of answers whose first fragment was rewritten.
    fragmented: [Option<u16>; FRAGMENTED],
    next_fragmented: usize,
}

/// Where the IPv4 packet of a frame is, once its header checks out.
struct Ipv4<'a> {
    /// The IP header and payload, cut to the header's total length.
    ip: &'a [u8],
    header_len: usize,
}

impl<'a> Ipv4<'a> {
    fn parse(frame: &'a [u8]) -> Option<Ipv4<'a>> {
        if frame.len() < ETH_HLEN + 20 || be16(frame, 12) != ETH_P_IP {
            return None;
        }
        let ip = &frame[ETH_HLEN..];
        let header_len = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(be16(ip, 2));
        if ip[0] >> 4 != 4 || header_len < 20 || total < header_len || total > ip.len() {
            return None;
        }
        Some(Ipv4 {
            ip: &ip[..total],
            header_len,
        })
    }

    fn proto(&self) -> u8 {
        self.ip[9]
    }
    fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.ip[12], self.ip[13], self.ip[14], self.ip[15])
    }
    fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.ip[16], self.ip[17], self.ip[18], self.ip[19])
    }
    fn id(&self) -> u16 {
        be16(self.ip, 4)
    }
    fn more_fragments(&self) -> bool {
        self.ip[6] & 0x20 != 0
    }
    fn fragment_offset(&self) -> u16 {
        be16(self.ip, 6) & 0x1fff
    }
    /// Where the checksum of a UDP or TCP header lies in it, if the header
    /// is all there (ports and checksum, that is).
    fn l4_checksum_at(&self) -> Option<usize> {
        let (at, need) = match self.proto() {
            PROTO_UDP => (6, 8),
            PROTO_TCP => (16, 20),
            _ => return None,
        };
        (self.ip.len() >= self.header_len + need).then_some(at)
    }
    fn port(&self, which: usize) -> u16 {
        be16(self.ip, self.header_len + which)
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Replaces one address and (with a UDP/TCP header) one port of the IPv4
/// packet in `frame`, fixing both checksums. `addr_at`/`port_at`: offsets
/// in the IP header and the UDP/TCP header.
fn rewrite(frame: &mut [u8], addr_at: usize, addr: Ipv4Addr, port: Option<(usize, u16)>) {
    let ip = &mut frame[ETH_HLEN..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let old_addr: [u8; 4] = ip[addr_at..addr_at + 4].try_into().unwrap_or_default();
    let new_addr = addr.octets();
    ip[addr_at..addr_at + 4].copy_from_slice(&new_addr);
    let sum = adjust(be16(ip, 10), &old_addr, &new_addr);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let Some((port_at, new_port)) = port else {
        return;
    };
    let proto = ip[9];
    let l4 = &mut ip[header_len..];
    let old_port = [l4[port_at], l4[port_at + 1]];
    let new_port = new_port.to_be_bytes();
    l4[port_at..port_at + 2].copy_from_slice(&new_port);
    let at = if proto == PROTO_UDP { 6 } else { 16 };
    let old_sum = be16(l4, at);
    if proto == PROTO_UDP && old_sum == 0 {
        // A UDP datagram sent without a checksum stays without one.
        return;
    }
    // The pseudo-header's address and the port: three 16-bit words.
    let words =
        |addr: [u8; 4], port: [u8; 2]| [addr[0], addr[1], addr[2], addr[3], port[0], port[1]];
    let mut sum = adjust(
        old_sum,
        &words(old_addr, old_port),
        &words(new_addr, new_port),
    );
    if proto == PROTO_UDP && sum == 0 {
        sum = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

impl DnsRedirect {
    /// Queries to `alias` (and, with IPv6, ICMPv6 only to `alias6`) go to
    /// `upstream`; with none, they are dropped.
    pub fn new(alias: Ipv4Addr, alias6: Option<Ipv6Addr>, upstream: Option<SocketAddrV4>) -> Self {
        DnsRedirect {
            alias,
            alias6,
            upstream,
            flows: [0; FLOWS],
            next_flow: 0,
            fragmented: [None; FRAGMENTED],
            next_fragmented: 0,
        }
    }

    /// Looks at a frame from the guest, redirecting a DNS query to the
    /// host's resolver; says what to do with it.
    pub fn from_guest(&mut self, frame: &mut [u8]) -> Verdict {
        if let Some(alias6) = self.alias6 {
            if frame.len() >= ETH_HLEN + 40 && be16(frame, 12) == ETH_P_IPV6 {
                let dst: [u8; 16] = frame[ETH_HLEN + 24..ETH_HLEN + 40]
                    .try_into()
                    .unwrap_or_default();
                if Ipv6Addr::from(dst) != alias6 || frame[ETH_HLEN + 6] == PROTO_ICMPV6 {
                    return Verdict::Pass;
                }
                return Verdict::Drop;
            }
        }
        let Some(ip) = Ipv4::parse(frame) else {
            return Verdict::Pass;
        };
        if ip.dst() != self.alias || ip.proto() == PROTO_ICMP {
            return Verdict::Pass;
        }
        let Some(upstream) = self.upstream else {
            return Verdict::Drop;
        };
        if ip.more_fragments() || ip.fragment_offset() != 0 {
            return Verdict::Drop;
        }
        if ip.l4_checksum_at().is_none() || ip.port(2) != DNS_PORT {
            return Verdict::Drop;
        }
        let flow = u32::from(ip.proto()) << 16 | u32::from(ip.port(0));
        if !self.flows.contains(&flow) {
            self.flows[self.next_flow] = flow;
            self.next_flow = (self.next_flow + 1) % FLOWS;
        }
        rewrite(frame, 16, *upstream.ip(), Some((2, upstream.port())));
        Verdict::Redirected
    }

    /// Whether a frame for the guest may be an answer from the resolver
    /// (cheap; [`DnsRedirect::to_guest`] decides).
    pub fn may_answer(&self, frame: &[u8]) -> bool {
        self.upstream.is_some_and(|u| {
            frame.len() >= ETH_HLEN + 20
                && be16(frame, 12) == ETH_P_IP
                && frame[ETH_HLEN + 12..ETH_HLEN + 16] == u.ip().octets()
        })
    }

    /// Gives an answer from the resolver to a guest port that asked the
    /// alias the alias's address and port 53 again. Returns whether it did.
    pub fn to_guest(&mut self, frame: &mut [u8]) -> bool {
        let Some(upstream) = self.upstream else {
            return false;
        };
        let Some(ip) = Ipv4::parse(frame) else {
            return false;
        };
        if ip.src() != *upstream.ip() {
            return false;
        }
        if ip.fragment_offset() != 0 {
            // A later fragment of an answer: only the address, if its
            // first fragment was rewritten.
            let id = ip.id();
            if ip.proto() != PROTO_UDP || !self.fragmented.contains(&Some(id)) {
                return false;
            }
            rewrite(frame, 12, self.alias, None);
            return true;
        }
        if ip.l4_checksum_at().is_none() || ip.port(0) != upstream.port() {
            return false;
        }
        let flow = u32::from(ip.proto()) << 16 | u32::from(ip.port(2));
        if !self.flows.contains(&flow) {
            return false;
        }
        if ip.more_fragments() {
            self.fragmented[self.next_fragmented] = Some(ip.id());
            self.next_fragmented = (self.next_fragmented + 1) % FRAGMENTED;
        }
        rewrite(frame, 12, self.alias, Some((0, DNS_PORT)));
        true
    }
}

/// The first IPv4 `nameserver` of a resolv.conf: where the guest's DNS
/// queries go. Scoped (`%`) and IPv6 entries are skipped.
pub fn nameserver_from_resolv_conf(text: &str) -> Option<Ipv4Addr> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.parse::<Ipv4Addr>().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIAS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
    const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    const RESOLVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

    /// The one's complement sum of `data`, folded.
    fn sum(data: &[u8]) -> u32 {
        let mut acc: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc
    }

    /// An Ethernet frame with an IPv4 packet of `proto` carrying `l4`
    /// (whose checksum field, if any, is filled in), both checksums right.
    fn packet(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, mut l4: Vec<u8>, frag: u16) -> Vec<u8> {
        let total = 20 + l4.len();
        let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, proto, 0, 0];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        let csum = !(sum(&ip) as u16);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        let at = match proto {
            PROTO_UDP => Some(6),
            PROTO_TCP => Some(16),
            _ => None,
        };
        // Only a first fragment has a UDP/TCP header.
        if let Some(at) = at.filter(|&at| l4.len() >= at + 2 && frag & 0x1fff == 0) {
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            l4[at..at + 2].copy_from_slice(&[0, 0]);
            let mut c = !(sum(&[pseudo, l4.clone()].concat()) as u16);
            if proto == PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        let mut f = vec![
            0x52, 0x55, 10, 0, 2, 2, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 8, 0,
        ];
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    fn tcp(sport: u16, dport: u16) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x02; // SYN
        t
    }

    fn redirect() -> DnsRedirect {
        DnsRedirect::new(
            ALIAS,
            Some("fec0::3".parse().unwrap()),
            Some(SocketAddrV4::new(RESOLVER, 5353)),
        )
    }

    #[test]
    fn checksum_adjustment_matches_a_full_computation() {
        for payload in [&b"q"[..], b"\xff\xff\xff", b"", &[0u8; 300]] {
            for proto in [PROTO_UDP, PROTO_TCP] {
                let l4 = |dport| match proto {
                    PROTO_UDP => udp(40000, dport, payload),
                    _ => tcp(40000, dport),
                };
                let mut f = packet(GUEST, ALIAS, proto, l4(53), 0);
                assert_eq!(redirect().from_guest(&mut f), Verdict::Redirected);
                assert_eq!(f, packet(GUEST, RESOLVER, proto, l4(5353), 0));
            }
        }
    }

    #[test]
    fn queries_go_to_the_resolver_and_answers_come_from_the_alias() {
        let mut r = redirect();
        let mut q = packet(GUEST, ALIAS, PROTO_UDP, udp(40000, 53, b"query"), 0);
        assert_eq!(r.from_guest(&mut q), Verdict::Redirected);

        let answer = packet(RESOLVER, GUEST, PROTO_UDP, udp(5353, 40000, b"answer"), 0);
        let mut a = answer.clone();
        assert!(r.may_answer(&a));
        assert!(r.to_guest(&mut a));
        assert_eq!(
            a,
            packet(ALIAS, GUEST, PROTO_UDP, udp(53, 40000, b"answer"), 0)
        );

        // To a port that never asked the alias (the guest asked the
        // resolver directly), or from another port: untouched.
        for other in [
            packet(RESOLVER, GUEST, PROTO_UDP, udp(5353, 40001, b"x"), 0),
            packet(RESOLVER, GUEST, PROTO_UDP, udp(53, 40000, b"x"), 0),
            packet(RESOLVER, GUEST, PROTO_TCP, tcp(5353, 40000), 0),
            packet(ALIAS, GUEST, PROTO_UDP, udp(5353, 40000, b"x"), 0),
        ] {
            let mut f = other.clone();
            assert!(!r.to_guest(&mut f));
            assert_eq!(f, other);
        }
        assert!(!r.may_answer(&packet(ALIAS, GUEST, PROTO_UDP, udp(5353, 40000, b"x"), 0)));

        // TCP works the same way.
        let mut syn = packet(GUEST, ALIAS, PROTO_TCP, tcp(40002, 53), 0);
        assert_eq!(r.from_guest(&mut syn), Verdict::Redirected);
        let mut synack = packet(RESOLVER, GUEST, PROTO_TCP, tcp(5353, 40002), 0);
        assert!(r.to_guest(&mut synack));
        assert_eq!(synack, packet(ALIAS, GUEST, PROTO_TCP, tcp(53, 40002), 0));
    }

    #[test]
    fn udp_without_a_checksum_stays_without() {
        let mut q = packet(GUEST, ALIAS, PROTO_UDP, udp(40000, 53, b"q"), 0);
        q[ETH_HLEN + 20 + 6..ETH_HLEN + 20 + 8].copy_from_slice(&[0, 0]);
        assert_eq!(redirect().from_guest(&mut q), Verdict::Redirected);
        assert_eq!(&q[ETH_HLEN + 20 + 6..ETH_HLEN + 20 + 8], &[0, 0]);
        assert_eq!(be16(&q, ETH_HLEN + 20 + 2), 5353);
    }

    #[test]
    fn a_fragmented_answer_is_rewritten_whole() {
        let mut r = redirect();
        let mut q = packet(GUEST, ALIAS, PROTO_UDP, udp(40000, 53, b"q"), 0);
        r.from_guest(&mut q);
        // First fragment (MF), with the UDP header; then the rest.
        let mut first = packet(
            RESOLVER,
            GUEST,
            PROTO_UDP,
            udp(5353, 40000, &[7; 64]),
            0x2000,
        );
        assert!(r.to_guest(&mut first));
        assert_eq!(Ipv4::parse(&first).unwrap().src(), ALIAS);
        let rest = packet(RESOLVER, GUEST, PROTO_UDP, vec![9; 64], 9);
        let mut f = rest.clone();
        assert!(r.to_guest(&mut f));
        assert_eq!(f, packet(ALIAS, GUEST, PROTO_UDP, vec![9; 64], 9));
        // A fragment of some other datagram from the resolver: untouched.
        let mut other = rest.clone();
        other[ETH_HLEN + 4] = 0x99;
        let copy = other.clone();
        assert!(!r.to_guest(&mut other));
        assert_eq!(other, copy);
    }

    #[test]
    fn what_nothing_would_answer_is_dropped() {
        let mut r = redirect();
        for (what, mut f) in [
            (
                "another port",
                packet(GUEST, ALIAS, PROTO_UDP, udp(40000, 54, b"q"), 0),
            ),
            (
                "a fragment",
                packet(GUEST, ALIAS, PROTO_UDP, udp(40000, 53, b"q"), 0x2000),
            ),
            (
                "a later fragment",
                packet(GUEST, ALIAS, PROTO_UDP, vec![1; 16], 3),
            ),
            (
                "a short UDP header",
                packet(GUEST, ALIAS, PROTO_UDP, vec![0x9c, 0x40, 0, 53], 0),
            ),
            (
                "a short TCP header",
                packet(GUEST, ALIAS, PROTO_TCP, tcp(40000, 53)[..16].to_vec(), 0),
            ),
            ("SCTP", packet(GUEST, ALIAS, 132, vec![0; 16], 0)),
        ] {
            assert_eq!(r.from_guest(&mut f), Verdict::Drop, "{what}");
        }
        // No resolver: queries too.
        let mut none = DnsRedirect::new(ALIAS, None, None);
        let mut q = packet(GUEST, ALIAS, PROTO_UDP, udp(40000, 53, b"q"), 0);
        assert_eq!(none.from_guest(&mut q), Verdict::Drop);
        assert!(!none.may_answer(&q));
    }

    #[test]
    fn the_rest_passes_untouched() {
        let mut r = redirect();
        let mut frames = vec![
            // Ping to the alias: libslirp answers it.
            packet(GUEST, ALIAS, PROTO_ICMP, vec![8, 0, 0, 0, 0, 1, 0, 1], 0),
            // Anything not for the alias.
            packet(GUEST, RESOLVER, PROTO_UDP, udp(40000, 53, b"q"), 0),
            packet(GUEST, Ipv4Addr::new(10, 0, 2, 2), PROTO_TCP, tcp(1, 53), 0),
            // ARP, and frames too short or malformed to be IPv4 at all.
            vec![0xff; 42],
            packet(GUEST, ALIAS, PROTO_UDP, udp(40000, 53, b"q"), 0)[..30].to_vec(),
        ];
        // A header claiming more bytes than the frame has.
        let mut long = packet(GUEST, ALIAS, PROTO_UDP, udp(40000, 53, b"q"), 0);
        long[ETH_HLEN + 2] = 0x05;
        frames.push(long);
        for f in &mut frames {
            let copy = f.clone();
            assert_eq!(r.from_guest(f), Verdict::Pass);
            assert_eq!(*f, copy);
        }
    }

    #[test]
    fn ipv6_to_the_alias_only_icmp() {
        let mut r = redirect();
        let frame = |next: u8, dst: &str| {
            let mut f = vec![0u8; ETH_HLEN + 40 + 8];
            f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
            f[ETH_HLEN] = 0x60;
            f[ETH_HLEN + 6] = next;
            let dst: Ipv6Addr = dst.parse().unwrap();
            f[ETH_HLEN + 24..ETH_HLEN + 40].copy_from_slice(&dst.octets());
            f
        };
        assert_eq!(
            r.from_guest(&mut frame(PROTO_UDP, "fec0::3")),
            Verdict::Drop
        );
        assert_eq!(
            r.from_guest(&mut frame(PROTO_TCP, "fec0::3")),
            Verdict::Drop
        );
        assert_eq!(
            r.from_guest(&mut frame(PROTO_ICMPV6, "fec0::3")),
            Verdict::Pass
        );
        assert_eq!(
            r.from_guest(&mut frame(PROTO_UDP, "fec0::2")),
            Verdict::Pass
        );
    }

    #[test]
    fn resolv_conf() {
        let text = "# comment\nsearch example.org\nnameserver fe80::1%eth0\n\
                    nameserver ::1\nnameserver   127.0.0.53 # systemd\nnameserver 1.1.1.1\n";
        assert_eq!(
            nameserver_from_resolv_conf(text),
            Some(Ipv4Addr::new(127, 0, 0, 53))
        );
        assert_eq!(nameserver_from_resolv_conf("nameserver\n"), None);
        assert_eq!(nameserver_from_resolv_conf("nameservers 1.2.3.4\n"), None);
        assert_eq!(nameserver_from_resolv_conf(""), None);
    }
}
