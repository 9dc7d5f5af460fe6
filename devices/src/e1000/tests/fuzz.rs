//! Random register writes, descriptors and host events.

use super::*;

const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 9];

/// Every register written with assorted values (mostly plausible ones for
/// the rings, so that they get walked), random descriptors, traffic and
/// host events interleaved: nothing panics, and the device still works
/// after a reset and a fresh bring-up.
#[test]
fn register_fuzz() {
    let mut h = Harness::with_hdr(12);
    h.up();
    h.mem
        .write_slice(&pattern(0x1_0000, 3), GuestAddress(TX_BUFS))
        .unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let hot = [
        CTRL, EECD, EERD, MDIC, ICR, ICS, IMS, IMC, RCTL, TCTL, RDBAL, RDBAH, RDLEN, RDH, RDT,
        TDBAL, TDBAH, TDLEN, TDH, TDT, TDT, TDT, RDT, RA, MTA, VFTA,
    ];
    let (mut sent, mut received) = (0, 0);
    for round in 0..20_000u32 {
        let r = next();
        let off = if r & 7 == 0 {
            (r >> 8) as u32 & 0x1_fffc
        } else {
            hot[(r >> 8) as usize % hot.len()]
        };
        let wild = (r >> 40) & 3 == 0;
        let n = next();
        let v = match off {
            _ if wild => n as u32,
            TDBAL => TX_RING as u32,
            RDBAL => RX_RING as u32,
            TDBAH | RDBAH => 0,
            TDLEN | RDLEN => 128 * (1 + n as u32 % 4),
            TDH | TDT | RDH | RDT => n as u32 % 34,
            TCTL => tctl::EN,
            RCTL => n as u32 & 0x0603_f03c | rctl::EN,
            CTRL if n % 16 != 0 => n as u32 & !ctrl::RST,
            _ => n as u32,
        };
        h.write(off, v);
        match round % 5 {
            0 => h
                .wire
                .push(ether(MAC, PEER, 0x0800, &pattern((n % 2000) as usize, 1))),
            1 => h.dev.backend_readable(),
            2 => h.dev.backend_writable(),
            3 => h.dev.intx_resample(),
            _ => {
                // A random descriptor, data in RAM more often than not.
                let i = next() % 32;
                let mut d = next().to_le_bytes().repeat(2);
                if n & 1 == 0 {
                    d[..8].copy_from_slice(&(TX_BUFS + n % 0xf000).to_le_bytes());
                    d[8..10].copy_from_slice(&((n >> 16) as u16 % 3000).to_le_bytes());
                }
                if n & 2 == 0 {
                    d[11] |= EOP;
                }
                h.mem
                    .write_slice(&d, GuestAddress(TX_RING + 16 * i))
                    .unwrap();
            }
        }
        let mut b = [0u8; 4];
        h.dev.bar_read(MMIO_BAR, next() & 0x1_fffc, &mut b);
        sent += h.wire.sent().len();
        received = received.max(h.read(RDH));
    }
    assert!(sent > 100, "transmit walked: {sent} frames");
    assert!(received > 0, "receive walked");
    h.wire.0.lock().unwrap().to_guest.clear();
    h.up();
    let f = ether(PEER, MAC, 0x0800, &pattern(60, 13));
    h.send_legacy(&f, 1);
    assert_eq!(h.wire.sent().last().map(|s| &s[12..]), Some(&f[..]));
}
