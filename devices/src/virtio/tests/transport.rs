//! The PCI transport: identity, capabilities, negotiation, MSI-X, INTx, reset.

use super::*;
use crate::virtio::pci::{
    BAR_SIZE, DEVICE_OFFSET, ISR_OFFSET, MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET, NOTIFY_OFFSET,
};

#[test]
fn identity_and_bar_sizing() {
    let (mut h, _) = Harness::new();
    assert_eq!(h.cfg32(0x00), 0x1041_1af4);
    assert_eq!(h.cfg32(0x08), 0x0200_0001, "class 02:00:00, revision 1");
    assert_eq!(h.cfg32(0x2c), 0x0041_1af4, "subsystem id >= 0x40");
    assert_eq!(h.cfg8(0x3d), 1, "INTA");
    // Sizing as firmware does it: all ones, read back, then an address.
    h.cfg_write(0x10, &u32::MAX.to_le_bytes());
    h.cfg_write(0x14, &u32::MAX.to_le_bytes());
    assert_eq!(h.cfg32(0x10), (!(BAR_SIZE as u32 - 1)) | 0b100);
    assert_eq!(h.cfg32(0x14), u32::MAX);
    h.cfg_write(0x10, &0xfe00_0000u32.to_le_bytes());
    h.cfg_write(0x14, &0x1u32.to_le_bytes());
    assert_eq!(h.cfg32(0x10), 0xfe00_0004);
    assert_eq!(h.cfg32(0x14), 1);
    assert_eq!(h.cfg32(0x18), 0, "no other BARs");
    let bars = h.dev.bars();
    assert_eq!(bars.len(), 1);
    assert_eq!((bars[0].index, bars[0].size), (0, BAR_SIZE));
}

#[test]
fn capabilities_describe_the_bar() {
    let (mut h, _) = Harness::new();
    let c = &h.caps;
    assert_eq!(
        (c.common, c.isr, c.device, c.notify),
        (0, ISR_OFFSET, DEVICE_OFFSET, NOTIFY_OFFSET)
    );
    assert_eq!((c.multiplier, c.notify_len, c.device_len), (4, 12, 12));
    assert_eq!(
        (c.msix_table, c.msix_pba),
        (MSIX_TABLE_OFFSET, MSIX_PBA_OFFSET)
    );
    assert_ne!(c.pci_cfg, 0);
    let msix = h.caps.msix;
    assert_eq!(h.cfg16(msix + 2) & 0x7ff, 3, "4 vectors: 3 queues + config");
    assert_eq!(h.dev.msix_vectors(), 4);
    let regions = h.dev.notify_regions();
    assert_eq!(regions.len(), 3);
    for r in regions {
        h.common_write(cc::Q_SELECT, 2, u64::from(r.queue));
        let off = h.common_read(cc::Q_NOTIFY_OFF, 2);
        assert_eq!(r.offset, h.caps.notify + off * 4);
        assert_eq!(r.bar, 0);
    }
}

#[test]
fn linux_style_init_negotiates_and_sets_offloads() {
    let (mut h, wire) = Harness::new();
    let f = h.init(WANT);
    for bit in [
        features::VERSION_1,
        features::RING_EVENT_IDX,
        netf::MRG_RXBUF,
        netf::CTRL_VQ,
        netf::GUEST_TSO4,
        netf::HOST_TSO6,
    ] {
        assert_ne!(f & bit, 0, "{bit:#x}");
    }
    assert_eq!(f & netf::GUEST_UFO, 0, "backend cannot do UFO");
    let guest = netf::GUEST_CSUM | netf::GUEST_TSO4 | netf::GUEST_TSO6;
    assert_eq!(wire.0.lock().unwrap().offload_calls.last(), Some(&guest));
    assert_eq!(h.dev.device().acked_features(), f);
    assert!(h.dev.live());
}

#[test]
fn feature_negotiation_rejects_invalid_sets() {
    let (mut h, _) = Harness::new();
    let base = status::ACKNOWLEDGE | status::DRIVER;
    let cases = [
        features::VERSION_1 | 1 << 60,
        netf::MAC,
        features::VERSION_1 | netf::GUEST_TSO4,
        features::VERSION_1 | netf::CTRL_RX,
    ];
    for f in cases {
        h.set_status(0);
        h.set_status(base);
        h.write_features(f);
        h.set_status(base | status::FEATURES_OK);
        assert_eq!(h.status(), base, "features {f:#x} must be refused");
        h.set_status(base | status::FEATURES_OK | status::DRIVER_OK);
        assert_eq!(h.status() & status::DRIVER_OK, 0);
    }
    // Accepted, and then frozen.
    h.set_status(0);
    h.set_status(base);
    h.write_features(features::VERSION_1 | netf::MAC);
    h.set_status(base | status::FEATURES_OK);
    h.write_features(features::VERSION_1 | netf::MAC | netf::STATUS);
    h.common_write(cc::GF_SELECT, 4, 0);
    assert_eq!(h.common_read(cc::GF, 4), netf::MAC);
}

#[test]
fn offered_offloads_follow_the_backend() {
    let offered = |hdr, off| Harness::with_backend(hdr, off).0.device_features();
    let f = offered(
        12,
        netf::CSUM | netf::HOST_TSO4 | netf::GUEST_TSO4 | netf::GUEST_ECN,
    );
    assert_eq!(f & netf::OFFLOADS, netf::CSUM | netf::HOST_TSO4);
    let f = offered(12, netf::OFFLOADS);
    assert_eq!(f & netf::OFFLOADS, netf::OFFLOADS);
    assert_eq!(
        offered(0, netf::OFFLOADS) & netf::OFFLOADS,
        0,
        "bare frames: no offloads"
    );
    assert_ne!(offered(0, 0) & features::VERSION_1, 0);
}

#[test]
fn reset_returns_to_power_on_but_keeps_msix() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    h.transmit(&frame(0, 60, 1), 1);
    assert_eq!(wire.sent().len(), 1);
    h.set_status(0);
    assert_eq!(h.status(), 0);
    h.common_write(cc::GF_SELECT, 4, 0);
    assert_eq!(h.common_read(cc::GF, 4), 0);
    assert_eq!(h.common_read(cc::MSIX_CONFIG, 2), u64::from(NONE));
    for q in 0..3 {
        h.common_write(cc::Q_SELECT, 2, q);
        assert_eq!(h.common_read(cc::Q_SIZE, 2), 256);
        assert_eq!(h.common_read(cc::Q_ENABLE, 2), 0);
        assert_eq!(h.common_read(cc::Q_MSIX, 2), u64::from(NONE));
        assert_eq!(h.common_read(cc::Q_DESC, 4), 0);
    }
    assert_eq!(wire.0.lock().unwrap().offload_calls.last(), Some(&0));
    assert_eq!(
        h.read(h.caps.msix_table + 8, 4),
        0x40,
        "MSI-X table survives"
    );
    assert!(!h.dev.live());
    // A kick after reset does nothing; a reload works.
    h.write(h.caps.notify + 4, 2, 1);
    h.init(WANT);
    h.transmit(&frame(0, 60, 2), 2);
    assert_eq!(wire.sent(), vec![frame(0, 60, 2)]);
}

#[test]
fn masked_vector_sets_pending_and_fires_on_unmask() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    let tx_ctrl = h.caps.msix_table + 16 * u64::from(TX) + 12;
    h.write(tx_ctrl, 4, 1);
    let change = h.irq.0.lock().unwrap().changes.last().copied().unwrap();
    assert_eq!((change.vector, change.masked, change.data), (1, true, 0x41));
    h.transmit(&frame(0, 60, 3), 1);
    assert_eq!(wire.sent().len(), 1);
    assert_eq!(h.irq.take(), Vec::<u16>::new());
    assert_eq!(h.read(h.caps.msix_pba, 8), 0b10);
    h.write(tx_ctrl, 4, 0);
    assert_eq!(h.irq.take(), vec![1]);
    assert_eq!(h.read(h.caps.msix_pba, 8), 0);
    assert!(!h.irq.0.lock().unwrap().changes.last().unwrap().masked);
}

#[test]
fn function_mask_holds_interrupts() {
    let (mut h, _) = Harness::new();
    h.init(WANT);
    let ctrl = h.caps.msix + 2;
    h.cfg_write(ctrl, &0xc000u16.to_le_bytes());
    h.transmit(&frame(0, 60, 4), 1);
    assert!(h.irq.take().is_empty());
    h.cfg_write(ctrl, &0x8000u16.to_le_bytes());
    assert_eq!(h.irq.take(), vec![1]);
}

#[test]
fn intx_when_msix_is_off() {
    let (mut h, _) = Harness::new();
    h.init(WANT);
    h.cfg_write(h.caps.msix + 2, &0u16.to_le_bytes());
    h.transmit(&frame(0, 60, 5), 1);
    assert!(h.irq.take().is_empty());
    assert_eq!(h.irq.0.lock().unwrap().intx, 1);
    h.dev.intx_resample();
    assert_eq!(
        h.irq.0.lock().unwrap().intx,
        2,
        "still pending: asserted again"
    );
    assert_eq!(h.read(h.caps.isr, 1), 1);
    assert_eq!(h.read(h.caps.isr, 1), 0, "reading clears");
    h.dev.intx_resample();
    assert_eq!(h.irq.0.lock().unwrap().intx, 2);
    // INTx disabled in the command register.
    let cmd = h.cfg16(0x04) | 1 << 10;
    h.cfg_write(0x04, &cmd.to_le_bytes());
    h.transmit(&frame(0, 60, 6), 1);
    assert_eq!(h.irq.0.lock().unwrap().intx, 2);
}

#[test]
fn pci_cfg_window_reaches_the_bar() {
    let (mut h, _) = Harness::new();
    let at = h.caps.pci_cfg;
    h.cfg_write(at + 4, &[0]);
    h.cfg_write(at + 8, &(cc::NUM_QUEUES as u32).to_le_bytes());
    h.cfg_write(at + 12, &2u32.to_le_bytes());
    assert_eq!(h.cfg32(at + 16), 3);
    // Writes go through too: select queue 2 via the window.
    h.cfg_write(at + 8, &(cc::Q_SELECT as u32).to_le_bytes());
    h.cfg_write(at + 16, &[2, 0]);
    assert_eq!(h.common_read(cc::Q_SELECT, 2), 2);
    // A misaligned window reads zeros.
    h.cfg_write(at + 8, &0x13u32.to_le_bytes());
    assert_eq!(h.cfg32(at + 16), 0);
}

#[test]
fn device_config_and_link_changes() {
    let (mut h, _) = Harness::new();
    h.init(WANT);
    let dev = h.caps.device;
    assert_eq!(h.read(dev, 4), 0x0000_0002);
    assert_eq!(h.read(dev + 4, 2), 0x0100);
    assert_eq!(h.read(dev + 6, 2), 1, "link up");
    assert_eq!(h.read(dev + 8, 2), 1, "one queue pair");
    assert_eq!(h.read(dev + 10, 2), 1500);
    assert_eq!(h.read(dev + 12, 4), 0, "outside the structure");
    let gen = h.common_read(cc::GENERATION, 1);
    h.dev.set_link_up(false);
    assert_eq!(h.irq.take(), vec![3]);
    assert_eq!(h.read(dev + 6, 2), 0);
    assert_eq!(h.common_read(cc::GENERATION, 1), gen + 1);
    assert_eq!(h.read(h.caps.isr, 1), 2, "config bit set even with MSI-X");
}

#[test]
fn event_idx_suppresses_interrupts() {
    let (mut h, _) = Harness::new();
    h.init(WANT);
    h.queues[1].set_used_event(&h.mem, 10);
    h.transmit(&frame(0, 60, 7), 1);
    assert!(h.irq.take().is_empty());
    h.queues[1].set_used_event(&h.mem, 1);
    h.transmit(&frame(0, 60, 8), 1);
    assert_eq!(h.irq.take(), vec![1]);
}

#[test]
fn no_interrupt_flag_without_event_idx() {
    let (mut h, _) = Harness::new();
    h.init(WANT & !features::RING_EVENT_IDX);
    let avail = h.queues[1].avail;
    h.mem.write_obj(1u16, GuestAddress(avail)).unwrap();
    h.transmit(&frame(0, 60, 9), 1);
    assert!(h.irq.take().is_empty());
    h.mem.write_obj(0u16, GuestAddress(avail)).unwrap();
    h.transmit(&frame(0, 60, 10), 1);
    assert_eq!(h.irq.take(), vec![1]);
}

#[test]
fn notify_before_driver_ok_is_deferred() {
    let (mut h, wire) = Harness::new();
    // Set everything up but DRIVER_OK, queue a frame, kick, then DRIVER_OK.
    h.set_status(status::ACKNOWLEDGE | status::DRIVER);
    let f = h.device_features() & WANT;
    h.write_features(f);
    h.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    h.enable_msix();
    for q in 0..3 {
        h.setup_queue(q, 256);
    }
    h.transmit(&frame(0, 60, 11), 1);
    assert!(wire.sent().is_empty());
    h.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    assert_eq!(wire.sent().len(), 1);
}

#[test]
fn odd_sized_common_accesses() {
    let (mut h, _) = Harness::new();
    h.init(WANT);
    h.common_write(cc::Q_SELECT, 2, 1);
    // A wide read sees the fields it covers, byte by byte.
    let status = u64::from(h.status());
    let gen = h.common_read(cc::GENERATION, 1);
    assert_eq!(h.common_read(cc::STATUS, 4), status | gen << 8 | 1 << 16);
    assert_eq!(h.common_read(cc::Q_SIZE + 1, 1), 1, "high byte of 256");
    // Writes must match a field exactly; anything else is dropped.
    h.common_write(cc::Q_SELECT + 1, 1, 2);
    h.common_write(cc::Q_SELECT, 4, 2);
    h.common_write(cc::STATUS, 2, 0);
    assert_eq!(h.common_read(cc::Q_SELECT, 2), 1);
    assert!(h.dev.live());
    let desc = h.common_read(cc::Q_DESC, 4);
    h.common_write(cc::Q_DESC, 8, 0x1234_5678_0000);
    assert_eq!(h.common_read(cc::Q_DESC, 4), desc);
    // Reads past the structure, across pages, or of odd widths are zeros.
    assert_eq!(h.common_read(0x40, 4), 0);
    assert_eq!(h.read(0xffe, 4), 0);
    assert_eq!(h.read(h.caps.isr + 1, 1), 0);
    let mut wide = [0xffu8; 16];
    h.dev.bar_read(0, 0, &mut wide);
    assert_eq!(wide, [0; 16]);
    h.dev.bar_read(0, 0, &mut []);
    h.dev.bar_write(0, 0, &[]);
    h.dev.bar_read(3, 0, &mut wide[..4]);
    assert_eq!(&wide[..4], &[0; 4]);
    assert!(!h.needs_reset());
}

#[test]
fn receive_works_after_a_driver_reload() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    h.post_rx(2, 65562);
    h.kick_if_needed(RX);
    wire.push(frame(0, 64, 1));
    h.dev.backend_readable();
    assert_eq!(h.queues[0].take_used(&h.mem).len(), 1);
    wire.push(frame(0, 64, 2));
    h.set_status(0);
    h.dev.backend_readable();
    h.init(WANT & !(netf::GUEST_TSO4 | netf::GUEST_TSO6));
    let bufs = h.post_rx(1, 2048);
    assert!(h.kick_if_needed(RX));
    assert_eq!(
        h.queues[0].take_used(&h.mem),
        vec![(u32::from(bufs[0].0), 76)]
    );
    assert_eq!(h.bytes(bufs[0].1 + 12, 64), frame(0, 64, 2)[12..].to_vec());
}
