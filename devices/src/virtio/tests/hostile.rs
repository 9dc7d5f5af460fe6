//! A hostile driver: bad rings, bad chains, bad registers. The model must
//! neither panic nor spin, and must ask for a reset where the spec lets it.

use super::*;

/// Puts a raw descriptor chain on the transmit queue (descriptors written
/// by `build`, head 0) and kicks; checks the device now needs a reset, told
/// the driver on the config vector, and then recovers after a reset.
fn tx_needs_reset(build: impl FnOnce(&mut Harness<FakeBackend>)) {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    build(&mut h);
    h.queues[1].publish(&h.mem, 0);
    h.kick(TX);
    assert!(h.needs_reset(), "status {:#x}", h.status());
    assert_eq!(h.irq.take(), vec![3], "config interrupt");
    assert!(wire.sent().is_empty());
    // Dead until reset: kicks and good frames are ignored.
    h.transmit(&frame(0, 60, 1), 1);
    assert!(wire.sent().is_empty());
    let s = h.status();
    h.set_status(s & !status::DEVICE_NEEDS_RESET);
    assert!(h.needs_reset(), "the driver cannot clear the bit");
    h.init(WANT);
    assert!(!h.needs_reset());
    h.transmit(&frame(0, 60, 2), 1);
    assert_eq!(wire.sent(), vec![frame(0, 60, 2)]);
}

#[test]
fn descriptor_beyond_ram() {
    tx_needs_reset(|h| h.queues[1].write_desc(&h.mem, 0, RAM + 0x1000, 64, 0, 0));
}

#[test]
fn descriptor_straddling_the_end_of_ram() {
    tx_needs_reset(|h| h.queues[1].write_desc(&h.mem, 0, RAM - 10, 64, 0, 0));
}

#[test]
fn descriptor_with_huge_length() {
    tx_needs_reset(|h| h.queues[1].write_desc(&h.mem, 0, 0x8_0000, u32::MAX, 0, 0));
}

#[test]
fn descriptor_address_overflowing() {
    tx_needs_reset(|h| h.queues[1].write_desc(&h.mem, 0, u64::MAX - 8, 64, 0, 0));
}

#[test]
fn looping_chain() {
    tx_needs_reset(|h| {
        h.queues[1].write_desc(&h.mem, 0, 0x8_0000, 64, F_NEXT, 1);
        h.queues[1].write_desc(&h.mem, 1, 0x8_0000, 64, F_NEXT, 0);
    });
}

#[test]
fn chain_totalling_over_4_gib() {
    tx_needs_reset(|h| {
        for i in 0..3 {
            h.queues[1].write_desc(&h.mem, i, 0x8_0000, 0x7000_0000, F_NEXT, i + 1);
        }
        h.queues[1].write_desc(&h.mem, 3, 0x8_0000, 16, 0, 0);
    });
}

#[test]
fn next_outside_the_table() {
    tx_needs_reset(|h| h.queues[1].write_desc(&h.mem, 0, 0x8_0000, 64, F_NEXT, 300));
}

#[test]
fn device_writable_descriptor_on_tx() {
    tx_needs_reset(|h| h.queues[1].write_desc(&h.mem, 0, 0x8_0000, 64, F_WRITE, 0));
}

#[test]
fn indirect_table_outside_ram() {
    tx_needs_reset(|h| h.queues[1].write_desc(&h.mem, 0, RAM + 0x100, 32, F_INDIRECT, 0));
}

#[test]
fn indirect_table_that_loops() {
    tx_needs_reset(|h| {
        let t = h.alloc(32);
        for i in 0..2u64 {
            let next = (1 - i) as u16;
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&0x8_0000u64.to_le_bytes());
            d[8..12].copy_from_slice(&64u32.to_le_bytes());
            d[12..14].copy_from_slice(&F_NEXT.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            h.mem.write_slice(&d, GuestAddress(t + 16 * i)).unwrap();
        }
        h.queues[1].write_desc(&h.mem, 0, t, 32, F_INDIRECT, 0);
    });
}

#[test]
fn head_index_outside_the_ring() {
    let (mut h, _) = Harness::new();
    h.init(WANT);
    h.queues[1].publish(&h.mem, 999);
    h.kick(TX);
    assert!(h.needs_reset());
}

#[test]
fn available_index_running_ahead() {
    let (mut h, _) = Harness::new();
    h.init(WANT);
    h.queues[1].set_avail_idx(&h.mem, 300);
    h.kick(TX);
    assert!(h.needs_reset());
}

#[test]
fn rx_chain_with_a_readable_descriptor() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    let at = h.alloc(70_000);
    let q = &mut h.queues[0];
    let head = q.add_chain(&h.mem, &[(at, 70_000, false)]);
    q.publish(&h.mem, head);
    wire.push(frame(0, 60, 3));
    h.dev.backend_readable();
    assert!(h.needs_reset());
}

#[test]
fn rx_buffer_shorter_than_the_header() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    h.post_rx(1, 4);
    wire.push(frame(0, 60, 4));
    h.dev.backend_readable();
    assert!(h.needs_reset());
}

#[test]
fn ctrl_command_without_an_ack_byte() {
    let (mut h, _) = Harness::new();
    h.init(WANT);
    let at = h.alloc(3);
    h.mem.write_slice(&[0, 0, 0], GuestAddress(at)).unwrap();
    let q = &mut h.queues[2];
    let head = q.add_chain(&h.mem, &[(at, 3, false)]);
    q.publish(&h.mem, head);
    h.kick(CTRL);
    assert!(h.needs_reset());
}

/// Sets up queue 1 with `size` and ring addresses and tries to enable it.
fn enable_with(size: u16, desc: u64, avail: u64, used: u64) -> Harness<FakeBackend> {
    let (mut h, _) = Harness::new();
    h.set_status(status::ACKNOWLEDGE | status::DRIVER);
    h.write_features(features::VERSION_1);
    h.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    h.common_write(cc::Q_SELECT, 2, 1);
    h.common_write(cc::Q_SIZE, 2, u64::from(size));
    for (field, addr) in [(cc::Q_DESC, desc), (cc::Q_AVAIL, avail), (cc::Q_USED, used)] {
        h.common_write(field, 4, addr & 0xffff_ffff);
        h.common_write(field + 4, 4, addr >> 32);
    }
    h.common_write(cc::Q_ENABLE, 2, 1);
    h
}

#[test]
fn bad_queue_configurations_are_refused() {
    let cases = [
        (100, 0x1000, 0x2000, 0x3000),
        (0, 0x1000, 0x2000, 0x3000),
        (512, 0x1000, 0x2000, 0x3000),
        (256, RAM - 16, 0x2000, 0x3000),
        (256, 0x1000, RAM + 0x1000, 0x3000),
        (256, 0x1000, 0x2000, RAM - 8),
        (256, 0x1008, 0x2000, 0x3000),
        (256, 0x1000, 0x2001, 0x3000),
        (256, 0x1000, 0x2000, 0x3002),
        (256, 0x1000, 0x2000, u64::MAX - 0x100),
    ];
    for (size, desc, avail, used) in cases {
        let mut h = enable_with(size, desc, avail, used);
        assert_eq!(
            h.common_read(cc::Q_ENABLE, 2),
            0,
            "{size} {desc:#x} {avail:#x} {used:#x}"
        );
        assert!(h.needs_reset());
    }
    let mut h = enable_with(128, 0x1000, 0x2000, 0x3000);
    assert_eq!(h.common_read(cc::Q_ENABLE, 2), 1);
    assert!(!h.needs_reset());
    // Registers of an enabled queue are frozen.
    h.common_write(cc::Q_SIZE, 2, 64);
    assert_eq!(h.common_read(cc::Q_SIZE, 2), 128);
}

#[test]
fn notifies_of_missing_or_disabled_queues_are_ignored() {
    let (mut h, wire) = Harness::new();
    h.init(WANT & !(netf::CTRL_VQ | netf::CTRL_RX | netf::CTRL_MAC_ADDR));
    h.kick(CTRL);
    h.dev.queue_notify(2);
    h.dev.queue_notify(100);
    h.dev.queue_notify(u16::MAX);
    h.write(h.caps.notify + 4 * 50, 2, 50);
    h.write(h.caps.notify + 1, 2, 0);
    h.write(h.caps.notify + 0xffe, 2, 0);
    assert!(!h.needs_reset());
    assert!(h.irq.take().is_empty());
    h.transmit(&frame(0, 60, 5), 1);
    assert_eq!(wire.sent().len(), 1);
}

#[test]
fn vector_numbers_beyond_the_table_read_back_as_none() {
    let (mut h, _) = Harness::new();
    h.common_write(cc::MSIX_CONFIG, 2, 4);
    assert_eq!(h.common_read(cc::MSIX_CONFIG, 2), u64::from(NONE));
    h.common_write(cc::Q_SELECT, 2, 0);
    h.common_write(cc::Q_MSIX, 2, 0x7ff);
    assert_eq!(h.common_read(cc::Q_MSIX, 2), u64::from(NONE));
    h.common_write(cc::Q_SELECT, 2, 9);
    assert_eq!(h.common_read(cc::Q_SIZE, 2), 0, "no such queue");
    h.common_write(cc::Q_ENABLE, 2, 1);
    h.common_write(cc::Q_SIZE, 2, 8);
    assert!(!h.needs_reset());
}

/// xorshift64: deterministic noise.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

#[test]
fn random_register_accesses_never_panic() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    h.post_rx(8, 4096);
    let mut n = Noise(0x9e37_79b9_7f4a_7c15);
    let offsets = [
        0u64, 0x10, 0x14, 0x1c, 0x1000, 0x2000, 0x2008, 0x3000, 0x3004, 0x4000, 0x4030, 0x5000,
        0x7ffc, 0x8000,
    ];
    for _ in 0..50_000 {
        let base = n.pick(&offsets);
        let off = match n.next() % 8 {
            0 => u64::MAX - n.next() % 16,
            1 => n.next(),
            _ => base + n.next() % 0x40,
        };
        let len = n.pick(&[0usize, 1, 2, 3, 4, 5, 7, 8, 16]);
        let bar = n.pick(&[0u8, 0, 0, 1, 2, 5, 6, 255]);
        let mut data = vec![0u8; len];
        data.iter_mut().for_each(|b| *b = n.next() as u8);
        match n.next() % 6 {
            0 | 1 => h.dev.bar_read(bar, off, &mut data),
            2 | 3 => h.dev.bar_write(bar, off, &data),
            4 => {
                let reg = (n.next() % 80) as usize;
                let at = (n.next() % 6) as usize;
                if n.next().is_multiple_of(2) {
                    h.dev.config_read(reg);
                } else {
                    h.dev.config_write(reg, at, &data);
                }
            }
            _ => {
                wire.push(frame(0, (n.next() % 2000) as usize, 0));
                h.dev.backend_readable();
                h.dev.queue_notify((n.next() % 5) as u16);
            }
        }
    }
    // Whatever state that left, a driver reload brings the device back.
    wire.0.lock().unwrap().to_guest.clear();
    wire.sent();
    h.cfg_write(0x04, &0x0006u16.to_le_bytes());
    h.init(WANT);
    h.transmit(&frame(0, 60, 6), 2);
    assert_eq!(wire.sent(), vec![frame(0, 60, 6)]);
}
