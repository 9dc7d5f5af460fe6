//! Receive: placement, filtering, flow control against the ring.

use super::*;
use crate::e1000::crc::fcs;
use crate::e1000::stats::reg as stat;

const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 9];
const OTHER: [u8; 6] = [0x02, 0, 0, 0, 0, 7];
const STA_DD: u8 = 1;
const STA_EOP: u8 = 2;
const STA_IXSM: u8 = 4;
const STA_VP: u8 = 8;

/// `frame` behind the 12-byte header a tap puts first.
fn tapped(frame: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 12];
    v.extend_from_slice(frame);
    v
}

#[test]
fn unicast_frame_lands_with_its_fcs() {
    let mut h = Harness::new();
    h.up();
    let f = ether(MAC, PEER, 0x0800, &pattern(200, 1));
    h.wire.push(tapped(&f));
    h.dev.backend_readable();
    let (len, status, errors, _) = h.rx_desc(0);
    assert_eq!(usize::from(len), f.len() + 4, "FCS included without SECRC");
    assert_eq!(status, STA_DD | STA_EOP | STA_IXSM);
    assert_eq!(errors, 0);
    let got = h.rx_data(0, f.len() + 4);
    assert_eq!(&got[..f.len()], &f[..]);
    assert_eq!(&got[f.len()..], &fcs(&f));
    assert_eq!(h.read(RDH), 1);
    assert_eq!(h.irq.count(), 1);
    assert_eq!(h.read(ICR), int::RXT0 | int::INT_ASSERTED);
    assert_eq!(h.read(stat::GPRC), 1);
    assert_eq!(h.read(stat::GORCL), f.len() as u32 + 4);
    assert_eq!(h.rx_desc(1).1, 0, "next descriptor untouched");
}

#[test]
fn secrc_strips_and_short_frames_are_padded() {
    let mut h = Harness::with_hdr(0);
    h.up();
    h.set_bits(RCTL, rctl::SECRC);
    let arp = ether(MAC, PEER, 0x0806, &pattern(28, 2));
    h.wire.push(arp.clone());
    h.dev.backend_readable();
    let (len, status, _, _) = h.rx_desc(0);
    assert_eq!((len, status & STA_EOP), (60, STA_EOP));
    let got = h.rx_data(0, 64);
    assert_eq!(&got[..42], &arp[..]);
    assert_eq!(&got[42..60], &[0; 18]);
}

#[test]
fn filters_unicast_broadcast_and_promiscuous() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let other = ether(OTHER, PEER, 0x0800, &pattern(60, 3));
    let bcast = ether([0xff; 6], PEER, 0x0806, &pattern(46, 4));
    h.wire.push(other.clone());
    h.wire.push(bcast.clone());
    h.dev.backend_readable();
    assert_eq!(h.wire.queued(), 0, "both read");
    assert_eq!(h.read(RDH), 1, "only the broadcast placed");
    assert_eq!(&h.rx_data(0, bcast.len()), &bcast);
    // Without BAM broadcasts are dropped.
    h.clear_bits(RCTL, rctl::BAM);
    h.wire.push(bcast.clone());
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 1);
    // A second exact address.
    h.write(RA + 8, u32::from_le_bytes([2, 0, 0, 0]));
    h.write(RA + 12, u32::from(u16::from_le_bytes([0, 7])) | RAH_AV);
    h.wire.push(other.clone());
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 2);
    h.write(RA + 12, 0);
    h.wire.push(other.clone());
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 2, "address no longer valid");
    h.set_bits(RCTL, rctl::UPE);
    h.wire.push(other.clone());
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 3, "promiscuous");
    assert_eq!(&h.rx_data(2, other.len()), &other);
}

#[test]
fn multicast_through_the_hash_table() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let group = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
    let f = ether(group, PEER, 0x0800, &pattern(60, 5));
    h.wire.push(f.clone());
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 0, "not in the table");
    // RCTL.MO = 0: bits 47:36 of the address.
    let hash = (u32::from(group[4]) >> 4 | u32::from(group[5]) << 4) & 0xfff;
    h.write(MTA + 4 * (hash >> 5), 1 << (hash & 31));
    h.wire.push(f.clone());
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 1);
    // MO = 3 looks at other bits: no longer matches.
    h.set_bits(RCTL, 3 << 12);
    h.wire.push(f.clone());
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 1);
    h.set_bits(RCTL, rctl::MPE);
    h.wire.push(f.clone());
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 2, "all multicast");
    assert_eq!(h.read(stat::MPRC), 2);
}

#[test]
fn full_ring_leaves_frames_in_the_backend_until_rdt_moves() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let frames: Vec<Vec<u8>> = (0..34u8)
        .map(|i| ether(MAC, PEER, 0x0800, &pattern(100, i)))
        .collect();
    for f in &frames {
        h.wire.push(f.clone());
    }
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 31, "every free descriptor filled");
    assert_eq!(h.wire.queued(), 3, "the rest wait in the backend");
    assert_eq!(h.read(ICR) & (int::RXO | int::RXDMT0), int::RXDMT0);
    assert_eq!(h.read(stat::MPC), 0, "nothing dropped");
    // The driver cleans two descriptors and gives them back.
    h.post_rx(31);
    h.post_rx(0);
    h.write(RDT, 1);
    assert_eq!(h.read(RDH), 1);
    assert_eq!(h.wire.queued(), 1);
    assert_eq!(&h.rx_data(31, 114), &frames[31][..]);
    assert_eq!(&h.rx_data(0, 114), &frames[32][..]);
    // The next readable event is not needed: the next RDT write goes on.
    h.post_rx(1);
    h.write(RDT, 2);
    assert_eq!(h.wire.queued(), 0);
    assert_eq!(&h.rx_data(1, 114), &frames[33][..]);
}

#[test]
fn large_frame_spans_descriptors_and_waits_for_enough() {
    let mut h = Harness::with_hdr(0);
    h.up();
    // 256-byte buffers, long packets allowed.
    h.write(RCTL, rctl::EN | rctl::LPE | 3 << 16);
    let f = ether(MAC, PEER, 0x0800, &pattern(986, 6));
    h.write(RDT, 2);
    h.wire.push(f.clone());
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 0, "4 descriptors needed, 2 free: held");
    assert_eq!(h.wire.queued(), 0);
    h.write(RDT, 10);
    assert_eq!(h.read(RDH), 4);
    let mut got = Vec::new();
    for i in 0..4 {
        let (len, status, _, _) = h.rx_desc(i);
        let last = i == 3;
        assert_eq!(len, if last { 1004 - 768 } else { 256 });
        assert_eq!(status & STA_EOP != 0, last, "EOP on the last only");
        assert_eq!(status & STA_DD, STA_DD);
        got.extend(h.rx_data(i, usize::from(len)));
    }
    assert_eq!(&got[..1000], &f[..]);
    assert_eq!(&got[1000..], &fcs(&f));
}

#[test]
fn oversize_frames_dropped_without_lpe() {
    let mut h = Harness::with_hdr(0);
    h.up();
    h.wire.push(ether(MAC, PEER, 0x0800, &pattern(1505, 7)));
    h.wire.push(ether(MAC, PEER, 0x0800, &pattern(1500, 8)));
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 1);
    assert_eq!(h.rx_desc(0).0, 1518);
    assert_eq!(h.read(stat::ROC), 1);
}

#[test]
fn frame_too_big_for_the_whole_ring_is_dropped_with_rxo() {
    let mut h = Harness::with_hdr(0);
    h.up();
    h.write(RCTL, rctl::EN | rctl::LPE | 3 << 16);
    h.write(RDLEN, 128);
    h.write(RDH, 0);
    h.write(RDT, 7);
    h.wire.push(ether(MAC, PEER, 0x0800, &pattern(3000, 9)));
    h.wire.push(ether(MAC, PEER, 0x0800, &pattern(100, 10)));
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 1, "the small one placed");
    assert_eq!(h.read(ICR) & int::RXO, int::RXO);
    assert_eq!(h.read(stat::MPC), 1);
}

#[test]
fn vlan_tag_stripped_with_vme_and_filtered_with_vfe() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let inner = ether(MAC, PEER, 0x0800, &pattern(100, 11));
    let mut tagged = inner[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    tagged.extend_from_slice(&inner[12..]);
    h.set_bits(CTRL, ctrl::VME);
    h.set_bits(RCTL, rctl::VFE);
    h.wire.push(tagged.clone());
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 0, "VLAN 5 not in the filter");
    h.write(VFTA, 1 << 5);
    h.wire.push(tagged.clone());
    h.dev.backend_readable();
    let (len, status, _, special) = h.rx_desc(0);
    assert_eq!(usize::from(len), inner.len() + 4);
    assert_eq!(status & STA_VP, STA_VP);
    assert_eq!(special, 5);
    assert_eq!(&h.rx_data(0, inner.len()), &inner);
    // Without VME the tag stays in the frame.
    h.clear_bits(CTRL, ctrl::VME);
    h.wire.push(tagged.clone());
    h.dev.backend_readable();
    assert_eq!(usize::from(h.rx_desc(1).0), tagged.len() + 4);
    assert_eq!(h.rx_desc(1).1 & STA_VP, 0);
}

#[test]
fn nothing_read_while_the_receiver_is_off() {
    let mut h = Harness::with_hdr(0);
    h.up();
    h.write(RCTL, 0);
    h.wire.push(ether(MAC, PEER, 0x0800, &pattern(60, 12)));
    h.dev.backend_readable();
    assert_eq!(h.wire.queued(), 1);
    h.dev.set_link(false);
    h.write(RCTL, rctl::EN);
    assert_eq!(h.wire.queued(), 1, "nor while the link is down");
    h.dev.set_link(true);
    assert_eq!(h.wire.queued(), 0);
    assert_eq!(h.read(RDH), 1);
}

#[test]
fn partial_checksum_from_the_backend_is_completed() {
    let mut h = Harness::new();
    h.up();
    // UDP over IPv4 with the checksum left partial (virtio NEEDS_CSUM).
    let mut ip = vec![
        0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
    ];
    let sum = super::offload::inet_sum(&[10, 0, 0, 2, 10, 0, 0, 1, 0, 17, 0, 16]);
    ip.extend([0, 53, 0, 53, 0, 16]);
    ip.extend(sum.to_be_bytes());
    ip.extend(pattern(8, 13));
    let f = ether(MAC, PEER, 0x0800, &ip);
    let mut hdr = vec![1, 0, 0, 0, 0, 0];
    hdr.extend(34u16.to_le_bytes());
    hdr.extend(6u16.to_le_bytes());
    hdr.extend([0, 0]);
    hdr.extend(&f);
    h.wire.push(hdr);
    h.dev.backend_readable();
    let got = h.rx_data(0, f.len());
    let mut all = vec![10, 0, 0, 2, 10, 0, 0, 1, 0, 17, 0, 16];
    all.extend_from_slice(&got[34..]);
    assert_eq!(super::offload::inet_sum(&all), 0xffff);
}

/// Linux's interrupt handler reads ICR and masks everything (IMC) for
/// NAPI; the poll unmasks (IMS) when done. Frames arriving meanwhile
/// interrupt then, whether the host's resample came before or after.
#[test]
fn napi_style_masking_interrupts_again_on_unmask() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let frame = |i| ether(MAC, PEER, 0x0800, &pattern(100, i));
    h.wire.push(frame(1));
    h.dev.backend_readable();
    assert_eq!(h.irq.count(), 1);
    for round in 0..2u32 {
        // The handler.
        assert_eq!(h.read(ICR) & int::RXT0, int::RXT0);
        h.write(IMC, u32::MAX);
        let late_resample = round == 1;
        if !late_resample {
            h.dev.intx_resample();
        }
        // The poll: another frame comes in while masked.
        h.wire.push(frame(2 + round as u8));
        h.dev.backend_readable();
        assert_eq!(h.irq.count(), 1 + round);
        h.write(IMS, IMS_LINUX);
        if late_resample {
            assert_eq!(h.irq.count(), 2, "the line is still up");
            h.dev.intx_resample();
        }
        assert_eq!(h.irq.count(), 2 + round);
    }
    assert_eq!(h.read(RDH), 3);
}

#[test]
fn gso_frames_from_a_misconfigured_backend_are_dropped() {
    let mut h = Harness::new();
    h.up();
    let big = ether(MAC, PEER, 0x0800, &pattern(1400, 14));
    let mut gso = vec![0, 1, 0, 0, 0x5c, 0x05, 0, 0, 0, 0, 0, 0];
    gso.extend(&big);
    h.wire.push(gso);
    h.wire.push(tapped(&big));
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 1);
    assert_eq!(&h.rx_data(0, big.len()), &big);
}
