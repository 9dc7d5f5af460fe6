//! Long TCP segments from libslirp, and the guest's MSS they must be cut
//! to.
//!
//! libslirp runs with the largest MTU it allows ([`SLIRP_MTU`]), so its
//! TCP sends segments of up to 32 KiB (its TCP_MAXSEG_MAX) where the
//! peer's MSS allows: one pass through its output path (and one checksum
//! loop, one callback) per 32 KiB instead of per 1460 bytes. The guest's
//! MSS would allow no such thing, so the guest's SYNs (and SYN-ACKs, for
//! `hostfwd` connections) reach libslirp with their MSS option raised to
//! 65535, and the MSS the guest asked for is kept here, per connection:
//! what libslirp then sends the guest goes as GSO frames of that MSS (see
//! [`Coalescer`]), which the guest's stack takes as it takes any
//! GRO-merged frame, and which the NIC's end of the frame channel cuts
//! for a NIC that takes no GSO. The guest never sees a segment longer
//! than it asked for.
//!
//! A SYN without an MSS option keeps it so (there is nothing to raise;
//! libslirp then takes the most), and the guest is held to the default
//! MSS of RFC 9293 (536 bytes for IPv4, 1220 for IPv6).
//!
//! [`Coalescer`]: crate::net_offload::Coalescer

use crate::net_offload::tcp_flags::SYN;
use crate::net_offload::{adjust_checksum, get16, put16, TcpLayout};

/// libslirp's MTU and MRU: its IF_MTU_MAX. Its IPv6 input drops packets
/// longer than this; its IPv4 output fragments them.
pub const SLIRP_MTU: usize = 65521;
/// What the guest's MSS options are raised to.
const RAISED: u16 = 65535;
/// The MSS of a peer that sent no option (RFC 9293, 3.7.1).
const DEFAULT_MSS_V4: u16 = 536;
const DEFAULT_MSS_V6: u16 = 1220;
/// The least MSS taken from a guest.
const MIN_MSS: u16 = 64;
/// Connections remembered; the oldest is forgotten first.
const FLOWS: usize = 256;
/// TCP option kinds: end of list, no-op, MSS.
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;

/// A connection, from the guest's side: its address and the peer's
/// (IPv4 addresses in the first 8 bytes), its port and the peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flow {
    v6: bool,
    addrs: [u8; 32],
    ports: [u16; 2],
}

impl Flow {
    /// The connection of `frame`; `from_guest` says which way it goes.
    fn of(frame: &[u8], l: &TcpLayout, from_guest: bool) -> Option<Flow> {
        let n = if l.ipv4 { 4 } else { 16 };
        let src = l.l3 + if l.ipv4 { 12 } else { 8 };
        let (src_addr, dst_addr) = (frame.get(src..src + n)?, frame.get(src + n..src + 2 * n)?);
        let (sport, dport) = (get16(frame, l.l4), get16(frame, l.l4 + 2));
        let (guest, peer, ports) = if from_guest {
            (src_addr, dst_addr, [sport, dport])
        } else {
            (dst_addr, src_addr, [dport, sport])
        };
        let mut addrs = [0; 32];
        addrs[..n].copy_from_slice(guest);
        addrs[n..2 * n].copy_from_slice(peer);
        Some(Flow {
            v6: !l.ipv4,
            addrs,
            ports,
        })
    }
}

/// The guest's MSS per connection.
#[derive(Debug, Default)]
pub struct GuestMss {
    flows: Vec<(Flow, u16)>,
    /// Where the next new connection goes once `flows` is full.
    next: usize,
    /// The last MSS the guest asked for, per IP version (IPv4, IPv6): for
    /// a connection forgotten.
    last: [Option<u16>; 2],
}

impl GuestMss {
    /// Raises the MSS option of a guest's SYN in `frame` (its checksum
    /// complete) and remembers what it was; other frames pass untouched.
    pub fn from_guest(&mut self, frame: &mut [u8]) {
        let Ok(l) = TcpLayout::parse(frame) else {
            return;
        };
        if frame[l.flags()] & SYN == 0 {
            return;
        }
        let Some(flow) = Flow::of(frame, &l, true) else {
            return;
        };
        let mss = match find_mss(frame, &l) {
            Some(at) => {
                let asked = get16(frame, at);
                // The checksum's 16-bit words the value lies in (two if
                // the option list put it at an odd offset).
                let words = l.l4 + ((at - l.l4) & !1)..(at + 2 + (at - l.l4) % 2);
                let old: [u8; 4] = frame_words(frame, words.clone());
                put16(frame, at, RAISED);
                let new: [u8; 4] = frame_words(frame, words.clone());
                let n = words.len();
                let sum = adjust_checksum(get16(frame, l.tcp_csum()), &old[..n], &new[..n]);
                put16(frame, l.tcp_csum(), sum);
                // A floor keeps a hostile MSS from making GSO frames of
                // thousands of tiny segments.
                asked.max(MIN_MSS)
            }
            None if l.ipv4 => DEFAULT_MSS_V4,
            None => DEFAULT_MSS_V6,
        };
        self.remember(flow, mss);
    }

    /// The MSS the guest asked for on the connection of `frame` (a TCP
    /// frame for the guest, laid out as `l`).
    pub fn to_guest(&self, frame: &[u8], l: &TcpLayout) -> u16 {
        let known = Flow::of(frame, l, false)
            .and_then(|flow| self.flows.iter().find(|(f, _)| *f == flow))
            .map(|(_, mss)| *mss);
        let (default, last) = if l.ipv4 {
            (DEFAULT_MSS_V4, self.last[0])
        } else {
            (DEFAULT_MSS_V6, self.last[1])
        };
        known.or(last).unwrap_or(default)
    }

    fn remember(&mut self, flow: Flow, mss: u16) {
        self.last[usize::from(flow.v6)] = Some(mss);
        if let Some(entry) = self.flows.iter_mut().find(|(f, _)| *f == flow) {
            entry.1 = mss;
        } else if self.flows.len() < FLOWS {
            self.flows.push((flow, mss));
        } else {
            self.flows[self.next] = (flow, mss);
            self.next = (self.next + 1) % FLOWS;
        }
    }
}

/// The bytes of `frame` in `at` (at most 4), zero-padded.
fn frame_words(frame: &[u8], at: std::ops::Range<usize>) -> [u8; 4] {
    let mut w = [0; 4];
    let bytes = frame.get(at).unwrap_or_default();
    w[..bytes.len().min(4)].copy_from_slice(&bytes[..bytes.len().min(4)]);
    w
}

/// Where the value of the MSS option of the TCP header in `frame` lies.
fn find_mss(frame: &[u8], l: &TcpLayout) -> Option<usize> {
    let mut at = l.l4 + 20;
    while at < l.payload {
        match frame[at] {
            OPT_END => return None,
            OPT_NOP => at += 1,
            kind => {
                let len = usize::from(*frame.get(at + 1)?);
                if len < 2 || at + len > l.payload {
                    return None;
                }
                if kind == OPT_MSS && len == 4 {
                    return Some(at + 2);
                }
                at += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net_offload::tests::{assert_checksums, Flow as TestFlow};

    /// A SYN of `flow` with TCP `options`, taken as coming from the guest.
    fn syn(flow: &TestFlow, options: &[u8]) -> Vec<u8> {
        let f = TestFlow {
            options: options.to_vec(),
            ..flow.clone()
        };
        f.frame(100, 1, SYN, &[], None)
    }

    /// The same frame the other way: addresses and ports swapped.
    fn reversed(frame: &[u8]) -> Vec<u8> {
        let l = TcpLayout::parse(frame).unwrap();
        let n = if l.ipv4 { 4 } else { 16 };
        let src = l.l3 + if l.ipv4 { 12 } else { 8 };
        let mut r = frame.to_vec();
        r[src..src + n].copy_from_slice(&frame[src + n..src + 2 * n]);
        r[src + n..src + 2 * n].copy_from_slice(&frame[src..src + n]);
        r[l.l4..l.l4 + 2].copy_from_slice(&frame[l.l4 + 2..l.l4 + 4]);
        r[l.l4 + 2..l.l4 + 4].copy_from_slice(&frame[l.l4..l.l4 + 2]);
        r
    }

    fn mss_to_guest(t: &GuestMss, frame: &[u8]) -> u16 {
        t.to_guest(frame, &TcpLayout::parse(frame).unwrap())
    }

    #[test]
    fn a_syns_mss_is_raised_and_remembered() {
        for flow in [TestFlow::v4(), TestFlow::v6()] {
            let mut t = GuestMss::default();
            // The MSS (1460) where Linux puts it, or after a NOP and a
            // window scale option, at an odd offset.
            let aligned = [2, 4, 0x05, 0xb4, 1, 3, 3, 7];
            let odd = [3, 3, 7, 2, 4, 0x05, 0xb4, 1, 1, 1, 1, 0];
            for (options, at) in [(&aligned[..], 22), (&odd[..], 25)] {
                let mut f = syn(&flow, options);
                let before = f.clone();
                t.from_guest(&mut f);
                let l = TcpLayout::parse(&f).unwrap();
                let at = l.l4 + at;
                assert_eq!(get16(&f, at), RAISED);
                assert_checksums(&f, "raised SYN");
                // Nothing else changed.
                let mut back = f.clone();
                back[at..at + 2].copy_from_slice(&before[at..at + 2]);
                back[l.tcp_csum()..l.tcp_csum() + 2]
                    .copy_from_slice(&before[l.tcp_csum()..l.tcp_csum() + 2]);
                assert_eq!(back, before);
                // What comes back on that connection is cut to 1460.
                assert_eq!(mss_to_guest(&t, &reversed(&before)), 1460);
            }
        }
    }

    #[test]
    fn other_frames_pass_untouched_and_unknown_flows_get_a_default() {
        let mut t = GuestMss::default();
        let flow = TestFlow::v4();
        let data = flow.frame(100, 1, 0x10, b"data", None);
        let mut f = data.clone();
        t.from_guest(&mut f);
        assert_eq!(f, data);
        assert_eq!(mss_to_guest(&t, &reversed(&f)), DEFAULT_MSS_V4);
        // A SYN without the option: nothing to raise, the default held.
        let mut s = syn(&flow, &[]);
        let before = s.clone();
        t.from_guest(&mut s);
        assert_eq!(s, before);
        assert_eq!(mss_to_guest(&t, &reversed(&s)), DEFAULT_MSS_V4);
        // Damaged option lists are left alone.
        for options in [
            &[2, 0, 0, 0][..],
            &[2, 9, 0, 0],
            &[0, 2, 4, 5],
            &[8, 6, 2, 4],
        ] {
            let mut s = syn(&flow, options);
            let before = s.clone();
            t.from_guest(&mut s);
            assert_eq!(s, before, "{options:?}");
        }
    }

    #[test]
    fn the_oldest_connection_is_forgotten_first() {
        let mut t = GuestMss::default();
        let on_port = |port: u16| TestFlow {
            sport: 1000 + port,
            ..TestFlow::v4()
        };
        for port in 0..=FLOWS as u16 {
            t.from_guest(&mut syn(&on_port(port), &[2, 4, 0x02, port as u8]));
        }
        let back = |port| reversed(&on_port(port).frame(1, 1, 0x10, b"x", None));
        assert_eq!(mss_to_guest(&t, &back(1)), 0x0201);
        assert_eq!(mss_to_guest(&t, &back(FLOWS as u16 - 1)), 0x02ff);
        // Port 0's was forgotten: the last asked for stands in.
        let last = 0x0200 | (FLOWS as u16 & 0xff);
        assert_eq!(mss_to_guest(&t, &back(FLOWS as u16)), last);
        assert_eq!(mss_to_guest(&t, &back(0)), last);
        assert_eq!(t.flows.len(), FLOWS);
    }
}
