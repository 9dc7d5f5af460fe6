//! A hostile driver: rings and buffers outside RAM, heads and tails beyond
//! rings, endless and oversized packets, nonsense segmentation. The model
//! must neither panic nor spin, touch nothing outside guest RAM, and
//! recover once the driver behaves.

use super::*;
use crate::e1000::offload::{tso_segments, Context, IXSM, TXSM};
use crate::e1000::tx::MAX_PACKET;

const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 9];

fn good_frame(seed: u8) -> Vec<u8> {
    ether(PEER, MAC, 0x0800, &pattern(60, seed))
}

/// After `spoil` breaks the transmit ring and a doorbell finds it broken,
/// nothing is sent; `fix` then makes the next packet go out.
fn tx_recovers(spoil: impl FnOnce(&mut Harness), fix: impl FnOnce(&mut Harness)) {
    let mut h = Harness::with_hdr(0);
    h.up();
    spoil(&mut h);
    assert!(h.wire.sent().is_empty());
    fix(&mut h);
    let f = good_frame(1);
    h.send_legacy(&f, 1);
    assert_eq!(h.wire.sent().last(), Some(&f));
}

#[test]
fn tx_ring_outside_ram() {
    tx_recovers(
        |h| {
            h.write(TDBAL, 0xfff0_0000);
            h.send_legacy(&good_frame(2), 1);
            h.write(TDBAH, 0xffff_ffff);
            h.write(TDT, 1);
        },
        |h| {
            h.write(TDBAH, 0);
            h.write(TDBAL, TX_RING as u32);
            h.write(TDH, 0);
            h.write(TDT, 0);
        },
    );
}

#[test]
fn tx_ring_straddling_the_end_of_ram() {
    tx_recovers(
        |h| {
            h.write(TDBAL, (RAM - 256) as u32);
            h.send_legacy(&good_frame(3), 1);
        },
        |h| {
            h.write(TDBAL, TX_RING as u32);
            h.write(TDH, 0);
            h.write(TDT, 0);
        },
    );
}

#[test]
fn tx_ring_of_length_zero_or_tail_beyond_it() {
    tx_recovers(
        |h| {
            h.write(TDLEN, 0x7f);
            assert_eq!(h.read(TDLEN), 0);
            h.write(TDT, 1);
            h.write(TDLEN, RING_LEN);
            h.write(TDT, 40);
            h.write(TDT, 0xffff);
        },
        |h| h.write(TDT, 0),
    );
}

#[test]
fn tx_head_beyond_the_ring() {
    tx_recovers(
        |h| {
            h.write(TDH, 33);
            h.write(TDT, 2);
        },
        |h| {
            h.write(TDH, 0);
            h.write(TDT, 0);
        },
    );
}

#[test]
fn tx_buffer_outside_ram_stops_the_ring_then_the_packet_is_skipped() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let mut tail = 0;
    h.put_tx(legacy(RAM - 8, 64, EOP | RS), &mut tail);
    h.put_tx(legacy(u64::MAX - 4, 64, EOP | RS), &mut tail);
    h.write(TDT, tail);
    assert!(h.wire.sent().is_empty());
    assert_eq!(h.read(TDH), 0, "stopped at the bad descriptor");
    // A later doorbell goes on past the bad packets.
    let f = good_frame(4);
    let at = h.tx_buf(&f);
    h.put_tx(legacy(at, f.len() as u16, EOP | RS), &mut tail);
    h.write(TDT, tail);
    h.write(TDT, tail);
    h.write(TDT, tail);
    assert_eq!(h.wire.sent(), vec![f]);
    assert_eq!(h.read(TDH), tail);
}

#[test]
fn tx_huge_and_endless_packets_are_capped_and_dropped() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let mut tail = 0;
    // One data descriptor of a megabyte.
    h.put_tx(data_desc(0x1000, 0xf_ffff, EOP, 0), &mut tail);
    h.write(TDT, tail);
    assert!(h.wire.sent().is_empty());
    // A packet without end: 16 KiB pieces, around the ring ten times.
    for _ in 0..10 {
        for _ in 0..16 {
            h.put_tx(legacy(0x1000, 0x4000, 0), &mut tail);
        }
        h.write(TDT, tail);
        assert!(h.dev.tx.gathered() <= MAX_PACKET);
    }
    assert!(h.wire.sent().is_empty());
    h.put_tx(legacy(0x1000, 0x4000, EOP), &mut tail);
    h.write(TDT, tail);
    assert!(h.wire.sent().is_empty(), "the capped packet is dropped");
    let f = good_frame(5);
    h.send_legacy(&f, 2);
    assert_eq!(h.wire.sent(), vec![f]);
}

#[test]
fn tso_nonsense_is_dropped() {
    let base = Context {
        ipcss: 14,
        ipcso: 24,
        tucss: 34,
        tucso: 50,
        hdr_len: 54,
        mss: 1448,
        ipv4: true,
        tcp: true,
        tse: true,
        ..Context::default()
    };
    assert_eq!(tso_segments(&base, IXSM | TXSM, 54 + 3000), Ok(3));
    assert_eq!(tso_segments(&base, IXSM | TXSM, 54), Ok(1));
    assert!(
        tso_segments(&base, IXSM | TXSM, 53).is_err(),
        "header beyond the packet"
    );
    for bad in [
        Context { mss: 0, ..base },
        Context { hdr_len: 0, ..base },
        Context { ipcss: 40, ..base },
        Context { tucss: 40, ..base },
        Context { tucso: 53, ..base },
        Context { ipcso: 200, ..base },
        Context {
            ipv4: false,
            hdr_len: 50,
            ..base
        },
    ] {
        assert!(tso_segments(&bad, IXSM | TXSM, 1000).is_err(), "{bad:?}");
    }
    // Through the device: the packet is dropped, the ring goes on.
    let mut h = Harness::with_hdr(0);
    h.up();
    let mut tail = 0;
    for (mss, hdr_len) in [(0u16, 54u8), (1448, 0), (1448, 255), (1, 200)] {
        let ctx = Ctx {
            ipcss: 14,
            ipcso: 24,
            tucss: 34,
            tucso: 50,
            tucmd: 0x07,
            hdr_len,
            mss,
            ..Ctx::default()
        };
        h.put_tx(ctx.desc(), &mut tail);
        let at = h.tx_buf(&pattern(100, 6));
        h.put_tx(data_desc(at, 100, EOP | IC_TSE | RS, 3), &mut tail);
    }
    h.write(TDT, tail);
    assert!(h.wire.sent().is_empty());
    assert_eq!(h.read(TDH), tail);
}

#[test]
fn tso_with_mss_one_stays_bounded() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let ctx = Ctx {
        ipcss: 14,
        ipcso: 24,
        tucss: 34,
        tucso: 50,
        tucmd: 0x07,
        hdr_len: 54,
        mss: 1,
        ..Ctx::default()
    };
    let mut tail = 0;
    h.put_tx(ctx.desc(), &mut tail);
    let at = h.tx_buf(&pattern(54 + 300, 7));
    h.put_tx(data_desc(at, 354, EOP | IC_TSE, 3), &mut tail);
    h.write(TDT, tail);
    assert_eq!(h.wire.sent().len(), 300);
}

#[test]
fn unknown_descriptor_type_is_skipped() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let mut tail = 0;
    let mut d = data_desc(0, 64, EOP | RS, 0);
    d[10] = 0x70; // DTYP 7
    h.put_tx(d, &mut tail);
    h.write(TDT, tail);
    assert!(h.wire.sent().is_empty());
    assert_eq!(h.read(TDH), 1);
    let f = good_frame(8);
    h.send_legacy(&f, 1);
    assert_eq!(h.wire.sent(), vec![f]);
}

#[test]
fn rx_ring_outside_ram_leaves_frames_in_the_backend() {
    let mut h = Harness::with_hdr(0);
    h.up();
    h.write(RDBAL, (RAM - 128) as u32);
    h.wire.push(ether(MAC, PEER, 0x0800, &pattern(60, 9)));
    h.dev.backend_readable();
    h.dev.backend_readable();
    assert_eq!(h.wire.queued(), 1);
    h.write(RDBAH, 0xffff_ffff);
    h.write(RDBAL, 0xffff_ff00);
    h.dev.backend_readable();
    assert_eq!(h.wire.queued(), 1);
    h.write(RDBAH, 0);
    h.write(RDBAL, RX_RING as u32);
    assert_eq!(h.wire.queued(), 0);
    assert_eq!(h.read(RDH), 1);
}

#[test]
fn rx_buffer_outside_ram_stops_the_ring() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&(RAM - 100).to_le_bytes());
    h.mem.write_slice(&d, GuestAddress(RX_RING)).unwrap();
    h.wire.push(ether(MAC, PEER, 0x0800, &pattern(200, 10)));
    h.wire.push(ether(MAC, PEER, 0x0800, &pattern(200, 11)));
    h.dev.backend_readable();
    assert_eq!(h.read(RDH), 0);
    assert_eq!(h.wire.queued(), 1, "one frame lost, the other waits");
    h.dev.backend_readable();
    assert_eq!(h.wire.queued(), 1, "stopped until reprogrammed");
    h.post_rx(0);
    h.write(RDT, 31);
    assert_eq!(h.wire.queued(), 0);
    assert_eq!(h.read(RDH), 1);
}

#[test]
fn rx_ring_overlapping_itself_stays_bounded() {
    let mut h = Harness::with_hdr(0);
    h.up();
    // Every descriptor's buffer is the ring itself.
    for i in 0..32u64 {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&RX_RING.to_le_bytes());
        h.mem
            .write_slice(&d, GuestAddress(RX_RING + 16 * i))
            .unwrap();
    }
    for i in 0..40u8 {
        // Frames whose bytes read as descriptors pointing all over.
        let mut payload = Vec::new();
        for _ in 0..40 {
            payload.extend_from_slice(&(u64::from(i) << 56 | 0x1234).to_le_bytes());
        }
        h.wire.push(ether(MAC, PEER, 0x0800, &payload));
    }
    h.dev.backend_readable();
    let head = h.read(RDH);
    h.write(RDT, head);
    h.dev.backend_readable();
    assert!(h.wire.0.lock().unwrap().reads <= 80);
}

#[test]
fn rx_head_or_tail_beyond_the_ring() {
    let mut h = Harness::with_hdr(0);
    h.up();
    h.wire.push(ether(MAC, PEER, 0x0800, &pattern(60, 12)));
    h.write(RDT, 32);
    h.dev.backend_readable();
    assert_eq!(h.wire.queued(), 1);
    h.write(RDH, 1000);
    h.write(RDT, 5);
    assert_eq!(h.wire.queued(), 1);
    h.write(RDH, 0);
    assert_eq!(h.wire.queued(), 0);
}

#[test]
fn failing_backend_does_not_spin() {
    let mut h = Harness::with_hdr(0);
    h.up();
    h.wire.0.lock().unwrap().read_error = Some(io::ErrorKind::Interrupted);
    h.dev.backend_readable();
    let reads = h.wire.0.lock().unwrap().reads;
    assert!(reads <= 1100, "{reads} reads");
    h.wire.0.lock().unwrap().read_error = Some(io::ErrorKind::Other);
    h.wire.0.lock().unwrap().reads = 0;
    h.dev.backend_readable();
    assert_eq!(h.wire.0.lock().unwrap().reads, 1);
}
