//! Transmit through legacy and data descriptors.

use super::*;
use crate::e1000::stats::reg as stat;

const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 9];

#[test]
fn legacy_frame_reaches_backend_behind_a_zeroed_header() {
    let mut h = Harness::new();
    h.up();
    let f = ether(PEER, MAC, 0x0800, &pattern(86, 1));
    let last = h.send_legacy(&f, 1);
    let mut want = vec![0u8; 12];
    want.extend_from_slice(&f);
    assert_eq!(h.wire.sent(), vec![want]);
    assert_eq!(h.tx_status(last) & 1, 1, "DD written back");
    assert_eq!(h.read(TDH), h.read(TDT));
    assert_eq!(h.irq.count(), 1);
    let icr = h.read(ICR);
    assert_eq!(icr, int::TXDW | int::TXQE | int::INT_ASSERTED);
    assert_eq!(h.read(ICR), 0, "reading ICR cleared it");
    h.dev.intx_resample();
    assert_eq!(h.irq.count(), 1);
    assert_eq!(h.read(stat::GPTC), 1);
    assert_eq!(h.read(stat::GPTC), 0, "statistics clear when read");
    assert_eq!(h.read(stat::TOTL), 104);
    assert_eq!(h.read(stat::TOTL + 4), 0);
    assert_eq!(h.read(stat::TOTL), 0, "cleared with the high half");
}

#[test]
fn bare_backend_gets_bare_frames_gathered_from_pieces() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let f = ether(PEER, MAC, 0x0800, &pattern(1000, 2));
    let last = h.send_legacy(&f, 3);
    assert_eq!(last, 2);
    assert_eq!(h.wire.sent(), vec![f]);
    assert_eq!(h.tx_status(0) & 1, 0, "no RS: no write-back");
    assert_eq!(h.tx_status(2) & 1, 1);
}

#[test]
fn several_packets_in_one_doorbell_and_across_the_wrap() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let mut tail = 0;
    for round in 0..3u8 {
        let frames: Vec<Vec<u8>> = (0..12u8)
            .map(|i| {
                ether(
                    PEER,
                    MAC,
                    0x0800,
                    &pattern(60 + usize::from(i), round * 16 + i),
                )
            })
            .collect();
        for f in &frames {
            let at = h.tx_buf(f);
            h.put_tx(legacy(at, f.len() as u16, EOP | RS), &mut tail);
        }
        h.write(TDT, tail);
        assert_eq!(h.wire.sent(), frames);
        assert_eq!(h.read(TDH), tail);
    }
}

#[test]
fn legacy_checksum_insertion() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let mut f = ether(PEER, MAC, 0x0800, &pattern(41, 3));
    let (a, b) = (h.tx_buf(&f[..30]), h.tx_buf(&f[30..]));
    let mut first = legacy(a, 30, IC_TSE);
    first[13] = 14; // CSS, from the first descriptor
    let mut last = legacy(b, f.len() as u16 - 30, EOP | IC_TSE);
    last[10] = 20; // CSO, with IC from the last
    let mut tail = 0;
    h.put_tx(first, &mut tail);
    h.put_tx(last, &mut tail);
    h.write(TDT, tail);
    let sent = h.wire.sent();
    // The sum covers CSS to the end with the field as the driver left it.
    let sum = super::offload::inet_sum(&f[14..]);
    let got = u16::from_be_bytes([sent[0][20], sent[0][21]]);
    assert_eq!(got, !sum);
    f[20..22].copy_from_slice(&got.to_be_bytes());
    assert_eq!(sent[0], f);
}

#[test]
fn vlan_tag_inserted_when_asked() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let f = ether(PEER, MAC, 0x0800, &pattern(50, 4));
    let at = h.tx_buf(&f);
    let mut d = legacy(at, f.len() as u16, EOP | VLE);
    d[14..16].copy_from_slice(&0x2005u16.to_le_bytes());
    let mut tail = 0;
    h.put_tx(d, &mut tail);
    // Without CTRL.VME the tag is not inserted.
    h.write(TDT, tail);
    assert_eq!(h.wire.sent(), vec![f.clone()]);
    h.set_bits(CTRL, ctrl::VME);
    h.put_tx(d, &mut tail);
    h.write(TDT, tail);
    let mut want = f[..12].to_vec();
    want.extend_from_slice(&[0x81, 0x00, 0x20, 0x05]);
    want.extend_from_slice(&f[12..]);
    assert_eq!(h.wire.sent(), vec![want]);
}

#[test]
fn nothing_moves_until_transmit_and_bus_master_are_enabled() {
    let mut h = Harness::with_hdr(0);
    h.up();
    h.write(TCTL, 0);
    let f = ether(PEER, MAC, 0x0800, &pattern(60, 5));
    h.send_legacy(&f, 1);
    assert!(h.wire.sent().is_empty());
    assert_eq!(h.read(TDH), 0);
    h.dev.config_write(1, 0, &[0x03, 0x00]);
    h.write(TCTL, tctl::EN);
    assert!(h.wire.sent().is_empty(), "no DMA without bus mastering");
    h.enable_pci();
    assert_eq!(h.wire.sent(), vec![f]);
}

#[test]
fn link_down_drops_frames() {
    let mut h = Harness::with_hdr(0);
    h.up();
    h.dev.set_link(false);
    let last = h.send_legacy(&ether(PEER, MAC, 0x0800, &pattern(60, 6)), 1);
    assert!(h.wire.sent().is_empty());
    assert_eq!(h.tx_status(last) & 1, 1, "consumed all the same");
}

#[test]
fn blocked_backend_resumes_when_writable() {
    let mut h = Harness::new();
    h.up();
    h.wire.block_after(Some(1));
    let a = ether(PEER, MAC, 0x0800, &pattern(70, 7));
    let b = ether(PEER, MAC, 0x0800, &pattern(80, 8));
    let mut tail = 0;
    for f in [&a, &b] {
        let at = h.tx_buf(f);
        h.put_tx(legacy(at, f.len() as u16, EOP | RS), &mut tail);
    }
    h.write(TDT, tail);
    assert_eq!(h.wire.sent().len(), 1);
    assert!(h.dev.tx_blocked());
    assert_eq!(h.read(TDH), 1, "the refused packet's descriptor is kept");
    assert_eq!(h.tx_status(1) & 1, 0);
    // More doorbells change nothing while blocked.
    h.write(TDT, tail);
    assert!(h.wire.sent().is_empty());
    h.wire.block_after(None);
    h.dev.backend_writable();
    let sent = h.wire.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(&sent[0][12..], &b[..]);
    assert_eq!(h.tx_status(1) & 1, 1);
    assert_eq!(h.read(TDH), 2);
    assert!(!h.dev.tx_blocked());
}

#[test]
fn null_or_empty_descriptors_transfer_nothing() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let f = ether(PEER, MAC, 0x0800, &pattern(60, 9));
    let at = h.tx_buf(&f);
    let mut tail = 0;
    h.put_tx(legacy(0, 100, 0), &mut tail);
    h.put_tx(legacy(at, 0, 0), &mut tail);
    h.put_tx(legacy(at, f.len() as u16, 0), &mut tail);
    h.put_tx(legacy(0, 0, EOP | RS), &mut tail);
    h.write(TDT, tail);
    assert_eq!(h.wire.sent(), vec![f]);
    assert_eq!(h.tx_status(3) & 1, 1);
}
