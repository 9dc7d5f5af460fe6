//! IPv4 fragmentation: fragments checked field by field against the
//! packet, every header checksum with an independent sum; hostile frames.

use super::tests::{rfc1071, rng};
use super::*;

const MF: u16 = 0x2000;
const DF: u16 = 0x4000;

/// An Ethernet frame (with a VLAN tag if `vlan`) carrying an IPv4 UDP
/// packet `total` bytes long, with `flags` (flags and offset) and a right
/// header checksum.
fn packet(total: usize, flags: u16, vlan: bool) -> Vec<u8> {
    let mut f = vec![0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x52, 0x55, 10, 0, 2, 2];
    if vlan {
        f.extend([0x81, 0x00, 0x00, 0x07]);
    }
    f.extend([0x08, 0x00]);
    let l3 = f.len();
    f.extend([0x45, 0, 0, 0, 0xbe, 0xef, 0, 0, 64, 17, 0, 0]);
    f.extend([10, 0, 2, 15, 93, 184, 216, 34]);
    put16(&mut f, l3 + 2, total as u16);
    put16(&mut f, l3 + 6, flags);
    let c = !rfc1071(&f[l3..l3 + 20]);
    put16(&mut f, l3 + 10, c);
    f.extend((0..total - 20).map(|i| (i * 7 + i / 251) as u8));
    f
}

/// Builds every fragment of `frame`.
fn fragments(frame: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>> {
    let f = Fragments::new(frame, mtu)?;
    let mut out = Vec::new();
    (0..f.count())
        .map(|k| {
            f.build(frame, k, &mut out)?;
            Ok(out.clone())
        })
        .collect()
}

/// Checks `frags` as the fragments of `frame` (an IP header of 20 bytes
/// at `l3`) and returns each one's (offset, MF).
fn check(frame: &[u8], l3: usize, mtu: usize, frags: &[Vec<u8>]) -> Vec<(u16, bool)> {
    let mut payload = Vec::new();
    let mut marks = Vec::new();
    for (k, g) in frags.iter().enumerate() {
        assert!(
            g.len() <= l3.saturating_add(mtu),
            "fragment {k}: {} bytes",
            g.len()
        );
        assert_eq!(g[..l3], frame[..l3], "link header");
        assert_eq!(rfc1071(&g[l3..l3 + 20]), 0xffff, "fragment {k} checksum");
        assert_eq!(usize::from(get16(g, l3 + 2)), g.len() - l3, "total length");
        // Everything but the length, flags, offset and checksum is kept.
        for i in [0, 1, 4, 5, 8, 9, 12, 13, 14, 15, 16, 17, 18, 19] {
            assert_eq!(g[l3 + i], frame[l3 + i], "header byte {i}");
        }
        let flags = get16(g, l3 + 6);
        assert_eq!(flags & DF, 0);
        let base = get16(frame, l3 + 6) & 0x1fff;
        assert_eq!(
            usize::from((flags & 0x1fff) - base) * 8,
            payload.len(),
            "offset"
        );
        if k + 1 < frags.len() {
            assert_eq!((g.len() - l3 - 20) % 8, 0, "fragment {k} payload");
        }
        marks.push((flags & 0x1fff, flags & MF != 0));
        payload.extend_from_slice(&g[l3 + 20..]);
    }
    let end = l3 + usize::from(get16(frame, l3 + 2));
    assert_eq!(payload, frame[l3 + 20..end], "payloads put back together");
    marks
}

#[test]
fn udp_4000_makes_three_fragments() {
    let frame = packet(4000, 0, false);
    let frags = fragments(&frame, 1500).unwrap();
    assert_eq!(frags.len(), 3);
    let lens: Vec<usize> = frags.iter().map(Vec::len).collect();
    assert_eq!(lens, [14 + 1500, 14 + 1500, 14 + 20 + 1020]);
    let marks = check(&frame, 14, 1500, &frags);
    assert_eq!(marks, [(0, true), (185, true), (370, false)]);
}

#[test]
fn a_fragment_keeps_its_offset_and_mf() {
    let frame = packet(3000, MF | 100, false);
    let frags = fragments(&frame, 1000).unwrap();
    let marks = check(&frame, 14, 1000, &frags);
    assert_eq!(marks, [(100, true), (222, true), (344, true), (466, true)]);
    // The last fragment of a packet: the last piece clears MF.
    let frame = packet(3000, 100, false);
    let marks = check(&frame, 14, 1000, &fragments(&frame, 1000).unwrap());
    assert_eq!(marks.last(), Some(&(466, false)));
}

#[test]
fn every_mtu_puts_back_together() {
    for vlan in [false, true] {
        let l3 = if vlan { 18 } else { 14 };
        for total in [21, 68, 69, 1500, 1501, 4000, 65535] {
            let frame = packet(total, 0, vlan);
            for mtu in (68..300).chain([1499, 1500, 9000, 65535, usize::MAX]) {
                let frags = fragments(&frame, mtu).unwrap();
                let n = if total <= mtu {
                    1
                } else {
                    (total - 20).div_ceil((mtu - 20) & !7)
                };
                assert_eq!(frags.len(), n, "{total} bytes at MTU {mtu}");
                check(&frame, l3, mtu, &frags);
            }
        }
    }
}

#[test]
fn df_and_too_long_is_refused() {
    let frame = packet(1501, DF, false);
    assert!(Fragments::new(&frame, 1500).is_err());
    assert_eq!(fragments(&frame, 1501).unwrap(), [frame]);
}

#[test]
fn a_packet_that_fits_is_its_only_fragment() {
    let frame = packet(1500, DF, false);
    assert_eq!(fragments(&frame, 1500).unwrap(), [frame]);
    // Options are let through when there is nothing to cut.
    let mut opts = packet(1500, 0, false);
    opts[14] = 0x46;
    assert_eq!(fragments(&opts, 1500).unwrap(), [opts.clone()]);
    assert!(Fragments::new(&opts, 1499).is_err());
}

#[test]
fn bytes_past_the_ip_length_are_trimmed() {
    // A short packet with Ethernet padding to 60 bytes.
    let frame = packet(28, 0, false);
    let padded = [&frame[..], &[0; 18]].concat();
    assert_eq!(fragments(&padded, 1500).unwrap(), [frame]);
    let frame = packet(4000, 0, false);
    let padded = [&frame[..], &[0xaa; 100]].concat();
    assert_eq!(fragments(&padded, 1500), fragments(&frame, 1500));
}

#[test]
fn bad_frames_are_refused() {
    let good = packet(4000, 0, false);
    let with = |at: usize, byte: u8| {
        let mut f = good.clone();
        f[at] = byte;
        f
    };
    let refused = |f: &[u8], mtu: usize| Fragments::new(f, mtu).is_err();
    assert!(refused(&good, 67));
    assert!(refused(&with(12, 0x86), 1500), "not IPv4");
    assert!(refused(&with(14, 0x44), 1500), "IHL 4");
    assert!(refused(&with(14, 0x65), 1500), "version 6");
    let mut short = good.clone();
    put16(&mut short, 16, 19);
    assert!(refused(&short, 1500), "total shorter than the header");
    assert!(refused(&with(16, 0xff), 1500), "total past the frame");
    for len in [0, 13, 14, 33, 3999 + 14] {
        assert!(refused(&good[..len], 1500), "truncated to {len}");
    }
    let vlan = packet(100, 0, true);
    assert!(refused(&vlan[..17], 1500), "truncated tag");
    // The last fragment's end past 65535.
    assert!(refused(&packet(4000, 7700, false), 1500));
    assert!(Fragments::new(&packet(4000, 7690, false), 1500).is_ok());
    // build asked for what is not there.
    let f = Fragments::new(&good, 1500).unwrap();
    let mut out = Vec::new();
    assert!(f.build(&good, 3, &mut out).is_err());
    assert!(f.build(&good[..100], 0, &mut out).is_err());
}

#[test]
fn random_damage_never_panics() {
    let goods = [packet(4000, 0, false), packet(3000, MF | 9, true)];
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::new();
    let mut cut = 0;
    for i in 0..20_000 {
        let mut frame = goods[i % 2].clone();
        for _ in 0..rng(&mut seed) % 6 {
            let at = (rng(&mut seed) % 44) as usize;
            frame[at] = rng(&mut seed) as u8;
        }
        if rng(&mut seed).is_multiple_of(2) {
            frame.truncate((rng(&mut seed) % frame.len() as u64) as usize);
        }
        let mtu = (rng(&mut seed) % 1600) as usize;
        let l3 = if get16(&frame, 12) == 0x8100 { 18 } else { 14 };
        if let Ok(f) = Fragments::new(&frame, mtu) {
            assert!(f.count() <= frame.len());
            for k in 0..f.count() {
                f.build(&frame, k, &mut out).unwrap();
                assert!(out.len() <= l3 + mtu, "{} bytes at MTU {mtu}", out.len());
                if f.count() > 1 {
                    assert_eq!(rfc1071(&out[l3..l3 + 20]), 0xffff);
                }
            }
            cut += usize::from(f.count() > 1);
        }
    }
    // Not everything was refused.
    assert!(cut > 1000, "{cut}");
}
