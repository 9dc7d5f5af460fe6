//! Segmentation and coalescing over realistic TCP streams, every checksum
//! checked with an independent sum; hostile headers and frames.

use super::hdr::{GSO_ECN, GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM};
use super::layout::tcp_flags::{ACK, CWR, FIN, PSH, SYN};
use super::*;

const MAC_A: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];
const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
/// TCP options: NOP, NOP, a timestamp.
const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78];

/// RFC 1071: the ones' complement sum of `data`, done 32 bits at a time
/// (so unlike the code under test).
pub(crate) fn rfc1071(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut words = data.chunks(4);
    for w in &mut words {
        let mut b = [0u8; 4];
        b[..w.len()].copy_from_slice(w);
        acc += u64::from(u32::from_be_bytes(b));
    }
    while acc >> 16 != 0 {
        acc = (acc >> 16) + (acc & 0xffff);
    }
    acc as u16
}

/// A TCP flow between two hosts, IPv4 or IPv6.
#[derive(Clone)]
pub(crate) struct Flow {
    pub v6: bool,
    pub vlan: bool,
    pub sport: u16,
    pub dport: u16,
    pub ack: u32,
    pub options: Vec<u8>,
}

impl Flow {
    pub(crate) fn v4() -> Flow {
        Flow {
            v6: false,
            vlan: false,
            sport: 5201,
            dport: 41234,
            ack: 0x1000_0000,
            options: Vec::new(),
        }
    }

    pub(crate) fn v6() -> Flow {
        Flow {
            v6: true,
            options: TIMESTAMPS.to_vec(),
            ..Flow::v4()
        }
    }

    /// The pseudo-header for `tcp_len` bytes of TCP, as bytes.
    fn pseudo(&self, tcp_len: usize) -> Vec<u8> {
        let mut p = self.addrs();
        if self.v6 {
            p.extend((tcp_len as u32).to_be_bytes());
            p.extend([0, 0, 0, 6]);
        } else {
            p.extend([0, 6]);
            p.extend((tcp_len as u16).to_be_bytes());
        }
        p
    }

    fn addrs(&self) -> Vec<u8> {
        if self.v6 {
            let mut a = vec![0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
            a.extend([
                0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0, 0x56,
            ]);
            a
        } else {
            vec![10, 0, 2, 2, 10, 0, 2, 15]
        }
    }

    /// A frame of this flow, every checksum right. What goes
    /// in the TCP checksum field: the checksum, or (`partial`: Some(len)) the
    /// pseudo-header's sum over `len` bytes of TCP, as a sender leaves it
    /// for NEEDS_CSUM.
    pub(crate) fn frame(
        &self,
        seq: u32,
        id: u16,
        flags: u8,
        payload: &[u8],
        partial: Option<usize>,
    ) -> Vec<u8> {
        let mut tcp = Vec::new();
        tcp.extend(self.sport.to_be_bytes());
        tcp.extend(self.dport.to_be_bytes());
        tcp.extend(seq.to_be_bytes());
        tcp.extend(self.ack.to_be_bytes());
        tcp.push((((20 + self.options.len()) / 4) << 4) as u8);
        tcp.push(flags);
        tcp.extend(29200u16.to_be_bytes());
        tcp.extend([0, 0, 0, 0]);
        tcp.extend(&self.options);
        tcp.extend(payload);
        let sum = match partial {
            Some(len) => rfc1071(&self.pseudo(len)),
            None => !rfc1071(&[self.pseudo(tcp.len()), tcp.clone()].concat()),
        };
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        let mut f = MAC_B.to_vec();
        f.extend(MAC_A);
        if self.vlan {
            f.extend([0x81, 0x00, 0x00, 0x07]);
        }
        if self.v6 {
            f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend((tcp.len() as u16).to_be_bytes());
            f.extend([6, 64]);
            f.extend(self.addrs());
        } else {
            f.extend([0x08, 0x00]);
            let mut ip = vec![0x45, 0];
            ip.extend(((20 + tcp.len()) as u16).to_be_bytes());
            ip.extend(id.to_be_bytes());
            ip.extend([0x40, 0, 64, 6, 0, 0]);
            ip.extend(self.addrs());
            let c = !rfc1071(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend(ip);
        }
        f.extend(tcp);
        f
    }

    /// `n` segments of `mss` bytes from `seq` on (IDs from `id`), the
    /// last `last` bytes long and with PSH.
    pub(crate) fn burst(
        &self,
        seq: u32,
        id: u16,
        n: usize,
        mss: usize,
        last: usize,
    ) -> Vec<Vec<u8>> {
        (0..n)
            .map(|k| {
                let len = if k + 1 == n { last } else { mss };
                let payload: Vec<u8> = (0..len).map(|i| (i * 7 + k * 13) as u8).collect();
                let flags = if k + 1 == n { ACK | PSH } else { ACK };
                let seq = seq.wrapping_add((k * mss) as u32);
                self.frame(seq, id.wrapping_add(k as u16), flags, &payload, None)
            })
            .collect()
    }
}

/// Checks a wire frame's IPv4 header checksum and TCP checksum.
pub(crate) fn assert_checksums(f: &[u8], what: &str) {
    let l = TcpLayout::parse(f).unwrap();
    if l.ipv4 {
        assert_eq!(
            rfc1071(&f[l.l3..l.l4]),
            0xffff,
            "{what}: IPv4 header checksum"
        );
    }
    let flow = Flow {
        v6: !l.ipv4,
        ..Flow::v4()
    };
    let tcp = &f[l.l4..];
    let sum = rfc1071(&[flow.pseudo(tcp.len()), tcp.to_vec()].concat());
    assert_eq!(sum, 0xffff, "{what}: TCP checksum");
}

/// A receiver's MSS as the first segment held shows it: its payload.
pub(crate) fn own_payload(l: &TcpLayout, f: &[u8]) -> usize {
    f.len() - l.payload
}

/// Everything `Coalescer` makes of `frames` (flushed at the end), the MSS
/// as `own_payload` says.
pub(crate) fn coalesce(frames: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
    coalesce_to(frames, own_payload)
}

/// Everything `Coalescer` makes of `frames` for a receiver of MSS `mss`.
fn coalesce_to(
    frames: &[Vec<u8>],
    mss: impl Fn(&TcpLayout, &[u8]) -> usize,
) -> Vec<(VnetHdr, Vec<u8>)> {
    let mut c = Coalescer::default();
    let mut out = Vec::new();
    let mut emit = |h: &VnetHdr, f: &[u8]| out.push((*h, f.to_vec()));
    for f in frames {
        c.push(f, &mss, &mut emit);
    }
    c.flush(&mut emit);
    out
}

/// The wire frames of `messages`: GSO frames segmented, others as they are.
fn segment(messages: &[(VnetHdr, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (h, f) in messages {
        if !h.is_gso() {
            out.push(f.clone());
            continue;
        }
        let s = Segments::new(h, f).unwrap();
        for k in 0..s.count() {
            let mut seg = Vec::new();
            s.build(f, k, &mut seg).unwrap();
            out.push(seg);
        }
    }
    out
}

/// Checks a GSO frame the coalescer made: its header, its IP header, and
/// the partial checksum a receiver completes.
fn assert_gso(h: &VnetHdr, f: &[u8]) {
    let l = TcpLayout::parse(f).unwrap();
    assert_eq!(h.flags, NEEDS_CSUM);
    assert_eq!(h.gso_type, if l.ipv4 { GSO_TCPV4 } else { GSO_TCPV6 });
    assert_eq!(
        (h.hdr_len, h.csum_start, h.csum_offset),
        (l.payload as u16, l.l4 as u16, 16)
    );
    assert!(f.len() <= crate::virtio::net::MAX_FRAME);
    assert_eq!(
        usize::from(get16(f, l.ip_len_at())),
        f.len() - l.l3 - if l.ipv4 { 0 } else { 40 }
    );
    let flow = Flow {
        v6: !l.ipv4,
        ..Flow::v4()
    };
    let tcp_len = f.len() - l.l4;
    assert_eq!(
        get16(f, l.tcp_csum()),
        rfc1071(&flow.pseudo(tcp_len)),
        "partial sum"
    );
    // Completed the way a receiver would, the checksum verifies.
    let mut done = f.to_vec();
    insert_checksum(&mut done, l.l4, l.tcp_csum(), 0);
    assert_checksums(&done, "completed GSO frame");
}

/// A run as libslirp might send it: bulk data of two flows, a pure ACK,
/// an ARP reply, a FIN, short segments.
fn mixed_run(flow: &Flow) -> Vec<Vec<u8>> {
    let other = Flow {
        sport: 22,
        ..flow.clone()
    };
    let mut run = Vec::new();
    run.extend(flow.burst(1000, 100, 10, 1448, 1448));
    run.push(other.frame(7, 500, ACK, &[], None));
    run.extend(flow.burst(1000 + 10 * 1448, 110, 30, 1448, 300));
    run.push([&MAC_B[..], &MAC_A, &[8, 6], &[0; 28]].concat());
    run.extend(other.burst(7, 501, 3, 1000, 1000));
    run.extend(flow.burst(1000 + 40 * 1448 - 1148, 140, 2, 1448, 1448));
    run.push(flow.frame(1000 + 42 * 1448 - 1148, 142, ACK | FIN, b"bye", None));
    run.extend(flow.burst(1000 + 42 * 1448 - 1145, 143, 1, 1448, 20));
    run
}

#[test]
fn segment_undoes_coalesce_byte_for_byte() {
    let vlan = Flow {
        vlan: true,
        ..Flow::v4()
    };
    let options = Flow {
        options: TIMESTAMPS.to_vec(),
        ..Flow::v4()
    };
    for flow in [Flow::v4(), Flow::v6(), vlan, options] {
        let run = mixed_run(&flow);
        for f in &run {
            if f[12..14] != [8, 6] {
                assert_checksums(f, "input");
            }
        }
        let messages = coalesce(&run);
        let gso: Vec<_> = messages.iter().filter(|(h, _)| h.is_gso()).collect();
        // 10 + 30 (the last short) + 3 + 2 merge; the rest pass.
        assert_eq!(gso.len(), 4, "v6 {} vlan {}", flow.v6, flow.vlan);
        assert_eq!(messages.len(), 4 + 4);
        for (h, f) in &gso {
            assert_gso(h, f);
        }
        for (h, f) in &messages {
            if !h.is_gso() {
                assert_eq!(*h, VnetHdr::NONE);
                assert!(run.contains(f));
            }
        }
        let again = segment(&messages);
        for f in again.iter().filter(|f| f[12..14] != [8, 6]) {
            assert_checksums(f, "segment");
        }
        assert!(again == run, "v6 {} vlan {}", flow.v6, flow.vlan);
    }
}

#[test]
fn coalesced_frames_stay_within_64k() {
    for flow in [Flow::v4(), Flow::v6()] {
        let run = flow.burst(0xffff_f000, 0xfff0, 200, 1448, 1448);
        let messages = coalesce(&run);
        assert!(messages.len() >= 5, "{}", messages.len());
        for (h, f) in &messages {
            assert!(h.is_gso());
            assert!(f.len() - 14 <= 65535, "{}", f.len());
            assert_gso(h, f);
        }
        // Sequence numbers and IDs wrap on the way.
        assert!(segment(&messages) == run);
    }
}

#[test]
fn what_may_not_merge_does_not() {
    let flow = Flow::v4();
    let two = |seq: u32, id: u16| {
        vec![
            flow.frame(0, 1, ACK, &[1; 1000], None),
            flow.frame(seq, id, ACK, &[1; 1000], None),
        ]
    };
    assert!(coalesce(&two(1000, 2))[0].0.is_gso());
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("a gap in sequence", two(1001, 2)),
        ("a step back in sequence", two(999, 2)),
        ("IDs not consecutive", two(1000, 3)),
        (
            "after PSH",
            vec![
                flow.frame(0, 1, ACK | PSH, &[1; 1000], None),
                flow.frame(1000, 2, ACK, &[1; 1000], None),
            ],
        ),
        ("another ACK number", {
            let mut acked = flow.clone();
            acked.ack += 1;
            vec![
                flow.frame(0, 1, ACK, &[1; 1000], None),
                acked.frame(1000, 2, ACK, &[1; 1000], None),
            ]
        }),
        ("other options", {
            let ts = Flow {
                options: TIMESTAMPS.to_vec(),
                ..flow.clone()
            };
            let mut later = ts.clone();
            later.options[11] += 1;
            vec![
                ts.frame(0, 1, ACK, &[1; 1000], None),
                later.frame(1000, 2, ACK, &[1; 1000], None),
            ]
        }),
        (
            "CWR, SYN, after FIN",
            vec![
                flow.frame(0, 1, ACK | CWR, &[1; 1000], None),
                flow.frame(1000, 2, ACK | SYN, &[1; 1000], None),
                flow.frame(2000, 3, ACK | FIN, &[1; 1000], None),
                flow.frame(3000, 4, ACK, &[1; 1000], None),
            ],
        ),
    ];
    for (what, run) in cases {
        let messages = coalesce(&run);
        assert!(messages.iter().all(|(h, _)| !h.is_gso()), "{what}");
        assert!(segment(&messages) == run, "{what}");
    }
    // A short segment ends the merge.
    let run = vec![
        flow.frame(0, 1, ACK, &[1; 1000], None),
        flow.frame(1000, 2, ACK, &[1; 500], None),
        flow.frame(1500, 3, ACK, &[1; 500], None),
    ];
    let messages = coalesce(&run);
    assert_eq!(messages.len(), 2);
    assert!(messages[0].0.is_gso() && !messages[1].0.is_gso());
    assert!(segment(&messages) == run);
    // IPv4 options, a fragment, a padded frame.
    let mut with_options = flow.frame(0, 1, ACK, &[1; 1000], None);
    with_options[14] = 0x46;
    let mut fragment = flow.frame(1000, 2, ACK, &[1; 1000], None);
    fragment[20] = 0x20;
    let mut padded = flow.frame(2000, 3, ACK, &[1; 1000], None);
    padded.push(0);
    let run = vec![
        with_options,
        fragment,
        padded,
        flow.frame(3000, 4, ACK, &[1; 1000], None),
    ];
    let messages = coalesce(&run);
    assert!(messages.iter().all(|(h, _)| !h.is_gso()));
}

/// libslirp with a large MTU: segments far longer than the guest's MSS,
/// which go as GSO frames of that MSS, merged while they fit.
#[test]
fn segments_longer_than_the_mss_become_gso_frames_of_it() {
    for flow in [Flow::v4(), Flow::v6()] {
        let mut run = flow.burst(5, 9, 4, 20000, 5000);
        let fin = flow.frame(5 + 65000, 13, ACK | FIN | PSH, &[3; 30000], None);
        run.push(fin.clone());
        // A segment that fits the MSS passes as it is.
        let short = flow.frame(5 + 95000, 14, ACK, &[4; 1000], None);
        run.push(short.clone());
        let messages = coalesce_to(&run, |_, _| 1460);
        assert_eq!(messages.len(), 3);
        for (h, f) in &messages[..2] {
            assert_eq!(h.gso_size, 1460);
            assert_gso(h, f);
        }
        assert_eq!(messages[0].1.len(), run[0].len() + 45000);
        assert_eq!(messages[1].1.len(), fin.len());
        assert_eq!(messages[2], (VnetHdr::NONE, short));
        let wire = segment(&messages);
        assert_eq!(
            wire.len(),
            65000usize.div_ceil(1460) + 30000usize.div_ceil(1460) + 1
        );
        let (mut data, mut want) = (Vec::new(), Vec::new());
        for f in &run {
            want.extend_from_slice(&f[TcpLayout::parse(f).unwrap().payload..]);
        }
        for (k, w) in wire.iter().enumerate() {
            assert_checksums(w, "segment");
            let l = TcpLayout::parse(w).unwrap();
            assert!(w.len() - l.payload <= 1460);
            let flags = w[l.flags()];
            assert_eq!(flags & FIN != 0, k == wire.len() - 2, "FIN on {k}");
            data.extend_from_slice(&w[l.payload..]);
        }
        assert!(data == want);
    }
}

#[test]
fn a_senders_gso_frame_becomes_right_wire_frames() {
    for flow in [Flow::v4(), Flow::v6()] {
        let payload: Vec<u8> = (0..60000u32).map(|i| (i % 251) as u8).collect();
        let hl = 14 + if flow.v6 { 40 } else { 20 } + 20 + flow.options.len();
        let tcp_len = hl - 14 - if flow.v6 { 40 } else { 20 } + payload.len();
        // As Linux leaves it: the pseudo-header sum over the whole length.
        let f = flow.frame(
            0x7fff_ffff,
            0xfffe,
            ACK | PSH | FIN | CWR,
            &payload,
            Some(tcp_len),
        );
        let h = VnetHdr {
            flags: NEEDS_CSUM,
            gso_type: if flow.v6 { GSO_TCPV6 } else { GSO_TCPV4 } | GSO_ECN,
            hdr_len: hl as u16,
            gso_size: 1448,
            csum_start: (hl - 20 - flow.options.len()) as u16,
            csum_offset: 16,
            num_buffers: 0,
        };
        let wire = segment(&[(h, f.clone())]);
        assert_eq!(wire.len(), 60000usize.div_ceil(1448));
        // Or one segment of it all, the headers as they were but for the
        // lengths and checksums.
        let mut whole = f.clone();
        Segments::new(&h, &f).unwrap().whole(&mut whole).unwrap();
        assert_checksums(&whole, "whole");
        let l = TcpLayout::parse(&whole).unwrap();
        assert_eq!(whole[l.payload..], payload[..]);
        assert_eq!(
            usize::from(get16(&whole, l.ip_len_at())),
            whole.len() - l.l3 - if flow.v6 { 40 } else { 0 }
        );
        let unchanged =
            |b: &[u8]| [&b[..l.ip_len_at()], &b[l.ip_len_at() + 2..l.tcp_csum()]].concat();
        if flow.v6 {
            assert_eq!(unchanged(&whole), unchanged(&f));
        } else {
            assert_eq!(whole[..l.l3 + 2], f[..l.l3 + 2]);
            assert_eq!(whole[l.l3 + 4..l.l3 + 10], f[l.l3 + 4..l.l3 + 10]);
            assert_eq!(whole[l.l3 + 12..l.tcp_csum()], f[l.l3 + 12..l.tcp_csum()]);
        }
        let mut data = Vec::new();
        for (k, s) in wire.iter().enumerate() {
            assert_checksums(s, "segment");
            let l = TcpLayout::parse(s).unwrap();
            let seq = u32::from_be_bytes(s[l.seq()..l.seq() + 4].try_into().unwrap());
            assert_eq!(seq, 0x7fff_ffffu32.wrapping_add(k as u32 * 1448));
            let last = k + 1 == wire.len();
            let want = ACK | if last { PSH | FIN } else { 0 } | if k == 0 { CWR } else { 0 };
            assert_eq!(s[l.flags()], want, "segment {k}");
            if !flow.v6 {
                assert_eq!(get16(s, l.l3 + 4), 0xfffeu16.wrapping_add(k as u16));
            }
            assert!(s.len() <= hl + 1448);
            data.extend_from_slice(&s[l.payload..]);
        }
        assert!(data == payload);
    }
}

#[test]
fn complete_checksum_fills_in_the_field() {
    let flow = Flow::v4();
    let mut f = flow.frame(1, 2, ACK, b"some data, odd length", Some(20 + 21));
    let h = VnetHdr {
        flags: NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..VnetHdr::NONE
    };
    complete_checksum(&h, &mut f).unwrap();
    assert_checksums(&f, "completed");
    // Without NEEDS_CSUM nothing changes.
    let before = f.clone();
    complete_checksum(&VnetHdr::NONE, &mut f).unwrap();
    assert_eq!(f, before);
}

#[test]
fn the_header_round_trips() {
    let h = VnetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV6 | GSO_ECN,
        hdr_len: 0x1234,
        gso_size: 1448,
        csum_start: 54,
        csum_offset: 16,
        num_buffers: 3,
    };
    let b = h.to_bytes();
    assert_eq!(b, [1, 0x84, 0x34, 0x12, 0xa8, 5, 54, 0, 16, 0, 3, 0]);
    assert_eq!(VnetHdr::parse(&b), Ok(h));
    assert_eq!(VnetHdr::parse(&b[..11]), Err(Error::Short(11)));
    for (flags, gso) in [(4, 0), (0x80, 0), (0, 3), (0, 5), (0, 0x80), (0, 2)] {
        let mut bad = b;
        bad[0] = flags;
        bad[1] = gso;
        assert!(VnetHdr::parse(&bad).is_err(), "{flags} {gso}");
    }
}

/// A guest's GSO frame and its header, all fine.
fn good_gso() -> (VnetHdr, Vec<u8>) {
    let flow = Flow::v4();
    let f = flow.frame(1, 1, ACK, &[7; 5000], Some(5020));
    let h = VnetHdr::tcp_gso(&TcpLayout::parse(&f).unwrap(), 1448);
    assert_eq!((h.hdr_len, h.csum_start), (54, 34));
    (h, f)
}

#[test]
fn hostile_headers_are_refused() {
    let (h, f) = good_gso();
    assert_eq!(Segments::new(&h, &f).unwrap().count(), 4);
    let refused = |h: VnetHdr, f: &[u8]| Segments::new(&h, f).unwrap_err();
    assert_eq!(refused(VnetHdr { gso_size: 0, ..h }, &f), Error::GsoSize);
    assert!(matches!(
        refused(VnetHdr { hdr_len: 5055, ..h }, &f),
        Error::HdrLen { .. }
    ));
    for (start, offset) in [(5054, 0), (5053, 0), (34, 5019), (0xffff, 0xffff)] {
        let bad = VnetHdr {
            csum_start: start,
            csum_offset: offset,
            ..h
        };
        assert!(matches!(refused(bad, &f), Error::Checksum { .. }));
        let plain = VnetHdr { gso_type: 0, ..bad };
        let mut f = f.clone();
        assert!(matches!(
            complete_checksum(&plain, &mut f),
            Err(Error::Checksum { .. })
        ));
    }
    assert_eq!(
        refused(
            VnetHdr {
                gso_type: GSO_TCPV6,
                ..h
            },
            &f
        ),
        Error::GsoMismatch(GSO_TCPV6)
    );
    // IHL below 5, IPv6 behind an IPv4 ethertype, not TCP.
    for (at, value) in [(14, 0x44), (14, 0x65), (23, 17)] {
        let mut bad = f.clone();
        bad[at] = value;
        assert!(matches!(refused(h, &bad), Error::Packet(_)), "{at}");
    }
    // TCP data offset below 5 or beyond the frame.
    for doff in [0x40, 0xf0] {
        let mut bad = f[..60].to_vec();
        bad[46] = doff;
        assert!(matches!(
            refused(VnetHdr { hdr_len: 0, ..h }, &bad),
            Error::Packet(_)
        ));
    }
    // Every truncation of the headers.
    for len in 0..54 {
        let h = VnetHdr {
            hdr_len: 0,
            csum_start: 0,
            csum_offset: 0,
            ..h
        };
        assert!(Segments::new(&h, &f[..len]).is_err(), "{len}");
    }
    // 100 KiB.
    let big = Flow::v4().frame(1, 1, ACK, &[1; 100 * 1024], Some(0));
    assert_eq!(refused(h, &big), Error::TooLong(big.len()));
    let mut big = big;
    let plain = VnetHdr { gso_type: 0, ..h };
    assert_eq!(
        complete_checksum(&plain, &mut big),
        Err(Error::TooLong(big.len()))
    );
    // A segment the IPv4 length field cannot hold.
    let huge = Flow::v4().frame(1, 1, ACK, &[1; 65535 - 40], Some(0));
    let whole = VnetHdr {
        gso_size: 65535,
        ..h
    };
    assert!(Segments::new(&whole, &huge).is_ok());
    let mut over = huge.clone();
    over.extend([0; 10]);
    assert!(Segments::new(&whole, &over).is_err());
    // build asked for what is not there.
    let s = Segments::new(&h, &f).unwrap();
    let mut out = Vec::new();
    assert!(s.build(&f, 4, &mut out).is_err());
    assert!(s.build(&f[..100], 0, &mut out).is_err());
}

/// A tiny deterministic generator (xorshift).
pub(crate) fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn random_damage_never_panics() {
    let (h, f) = good_gso();
    let hb = h.to_bytes();
    let run = mixed_run(&Flow::v6());
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let mut seg = Vec::new();
    for _ in 0..20_000 {
        let mut msg = [&hb[..], &f].concat();
        for _ in 0..rng(&mut seed) % 6 {
            let at = (rng(&mut seed) % 80) as usize;
            msg[at] = rng(&mut seed) as u8;
        }
        msg.truncate((rng(&mut seed) % msg.len() as u64) as usize + 1);
        if let Ok(h) = VnetHdr::parse(&msg) {
            let frame = &mut msg[12..];
            if let Ok(s) = Segments::new(&h, frame) {
                assert!(s.count() <= frame.len());
                for k in 0..s.count() {
                    s.build(frame, k, &mut seg).unwrap();
                }
                // Made whole, or refused as too long for one packet.
                let mut whole = frame.to_vec();
                if s.whole(&mut whole).is_ok() {
                    assert_eq!(whole.len(), frame.len());
                }
                assert!(s.whole(&mut whole[1..]).is_err());
            }
            let _ = complete_checksum(&h, frame);
        }
        // The coalescer takes damaged frames among good ones.
        let mut c = Coalescer::default();
        let mut n = 0;
        let mut count = |_: &VnetHdr, f: &[u8]| {
            assert!(f.len() <= crate::virtio::net::MAX_FRAME);
            n += 1;
        };
        let pick = (rng(&mut seed) % run.len() as u64) as usize;
        for (i, good) in run.iter().enumerate() {
            if i == pick {
                c.push(&msg[12.min(msg.len())..], |_, _| 1, &mut count);
            }
            c.push(good, own_payload, &mut count);
        }
        c.flush(&mut count);
        assert!(n <= run.len() + 1);
    }
}

#[test]
fn add_words_folds_to_the_plain_sum() {
    let plain = |sum: u64, data: &[u8]| {
        let mut sum = sum;
        for (i, b) in data.iter().enumerate() {
            sum += u64::from(*b) << if i % 2 == 0 { 8 } else { 0 };
        }
        fold(sum)
    };
    let mut seed = 0x2545_f491_4f6c_dd1d;
    let noise: Vec<u8> = (0..70_000).map(|_| rng(&mut seed) as u8).collect();
    let ones = vec![0xffu8; 70_000];
    let zeros = vec![0u8; 100];
    for data in [&noise, &ones, &zeros] {
        for len in (0..40).chain([1499, 1500, 65535, 65536, 70_000]) {
            for start in [0, 1, 3] {
                let d = &data[start..start + len.min(data.len() - start)];
                for sum in [0, 0xffff, 0x1_2345_6789] {
                    assert_eq!(fold(add_words(sum, d)), plain(sum, d), "{len} {start}");
                }
            }
        }
    }
}
