//! Linux 6.1's virtio_net bring-up, step for step as the nested lab's guest
//! does it: the features it acks (EVENT_IDX and INDIRECT_DESC among them),
//! its ring layout high in a 512 MiB guest, the receive refill, and then
//! `virtnet_set_rx_mode`'s control commands, each through an indirect
//! table, kicked only when `vring_need_event` says so, and busy-polled.

use super::*;

/// Guest RAM of the lab's VM.
const LAB_RAM: u64 = 0x2000_0000;
/// Where the test's buffers go (well away from the rings).
const BUFFERS: u64 = 0x1000_0000;

/// The virtio_net 6.1 driver's feature table (plus the transport's bits);
/// the device offers a subset.
const LINUX_6_1: u64 = WANT
    | netf::GUEST_ECN
    | netf::GUEST_UFO
    | netf::HOST_ECN
    | netf::HOST_UFO
    | 1 << 2 // CTRL_GUEST_OFFLOADS
    | 1 << 3 // MTU
    | 1 << 19 // CTRL_VLAN
    | 1 << 21 // GUEST_ANNOUNCE
    | 1 << 22; // MQ

/// Control command classes and commands.
const CLASS_RX: u8 = 0;
const RX_PROMISC: u8 = 0;
const RX_ALLMULTI: u8 = 1;
const CLASS_MAC: u8 = 1;
const MAC_TABLE_SET: u8 = 0;
const MAC_ADDR_SET: u8 = 1;

struct Lab {
    h: Harness<FakeBackend>,
    wire: Wire,
    next_buf: u64,
}

impl Lab {
    fn new() -> Self {
        let wire = Wire::default();
        let backend = FakeBackend {
            wire: wire.clone(),
            hdr_len: 12,
            offloads: netf::OFFLOADS,
        };
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), LAB_RAM as usize)]).unwrap();
        Lab {
            h: Harness::on_memory(backend, mem),
            wire,
            next_buf: BUFFERS,
        }
    }

    fn alloc(&mut self, len: u64) -> u64 {
        let at = self.next_buf;
        self.next_buf += (len + 63) & !63;
        assert!(self.next_buf < 0x1fe0_0000);
        at
    }

    /// virtio_pci_modern probe and virtnet_probe up to DRIVER_OK, with the
    /// queue addresses the lab's guest wrote.
    fn init(&mut self) -> u64 {
        let h = &mut self.h;
        h.set_status(0);
        h.set_status(status::ACKNOWLEDGE);
        h.set_status(status::ACKNOWLEDGE | status::DRIVER);
        let f = h.device_features() & LINUX_6_1;
        assert_ne!(f & features::RING_EVENT_IDX, 0);
        assert_ne!(f & features::RING_INDIRECT_DESC, 0);
        assert_ne!(f & netf::CTRL_RX, 0);
        h.write_features(f);
        h.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        assert_ne!(h.status() & status::FEATURES_OK, 0);
        h.features = f;
        h.enable_msix();
        h.common_write(cc::MSIX_CONFIG, 2, 3);
        h.queues.clear();
        // vring_size(256, SMP_CACHE_BYTES): avail right after the table,
        // used (with used_event before it) on the next 64-byte boundary.
        for (q, desc) in [(0u16, 0x1fe0_c000u64), (1, 0x1ffc_4000), (2, 0x1ffc_c000)] {
            let avail = desc + 16 * 256;
            let used = (avail + 2 * (3 + 256) + 63) & !63;
            assert_eq!(used, avail + 0x240);
            h.common_write(cc::Q_SELECT, 2, u64::from(q));
            assert_eq!(h.common_read(cc::Q_SIZE, 2), 256);
            h.common_write(cc::Q_SIZE, 2, 256);
            for (field, addr) in [(cc::Q_DESC, desc), (cc::Q_AVAIL, avail), (cc::Q_USED, used)] {
                h.common_write(field, 4, addr & 0xffff_ffff);
                h.common_write(field + 4, 4, addr >> 32);
            }
            h.common_write(cc::Q_MSIX, 2, u64::from(q));
            h.queues.push(DriverQueue {
                size: 256,
                desc,
                avail,
                used,
                event_idx: true,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
                kicked_at: 0,
            });
        }
        // find_vqs enables the queues once all are set up.
        for q in 0..3u64 {
            h.common_write(cc::Q_SELECT, 2, q);
            h.common_write(cc::Q_ENABLE, 2, 1);
        }
        h.set_status(
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert_eq!(h.status(), 0xf);
        h.irq.take();
        f
    }

    /// try_fill_recv: `n` mergeable buffers, then virtqueue_kick.
    fn refill(&mut self, n: usize) -> bool {
        for _ in 0..n {
            let at = self.alloc(1536);
            let q = &mut self.h.queues[usize::from(RX)];
            let head = q.add_chain(&self.h.mem, &[(at, 1536, true)]);
            q.publish(&self.h.mem, head);
        }
        self.h.kick_if_needed(RX)
    }

    /// start_xmit: one frame in two pieces, kicked only if needed.
    fn xmit(&mut self, frame: &[u8]) {
        let (a, b) = (self.alloc(12), self.alloc(frame.len() as u64 - 12));
        self.h
            .mem
            .write_slice(&frame[..12], GuestAddress(a))
            .unwrap();
        self.h
            .mem
            .write_slice(&frame[12..], GuestAddress(b))
            .unwrap();
        let q = &mut self.h.queues[usize::from(TX)];
        let head = q.add_chain(
            &self.h.mem,
            &[(a, 12, false), (b, frame.len() as u32 - 12, false)],
        );
        q.publish(&self.h.mem, head);
        self.h.kick_if_needed(TX);
    }

    /// virtnet_send_command: header, `out` buffers and the status byte
    /// through one indirect descriptor, kicked if the device asked for it,
    /// then virtqueue_get_buf busy-polled. Returns the status.
    fn command(&mut self, class: u8, cmd: u8, out: &[&[u8]]) -> u8 {
        let hdr = self.alloc(2);
        self.h
            .mem
            .write_slice(&[class, cmd], GuestAddress(hdr))
            .unwrap();
        let status_at = self.alloc(1);
        self.h
            .mem
            .write_obj(0xffu8, GuestAddress(status_at))
            .unwrap();
        let mut bufs = vec![(hdr, 2u32, false)];
        for data in out {
            let at = self.alloc(data.len() as u64);
            self.h.mem.write_slice(data, GuestAddress(at)).unwrap();
            bufs.push((at, data.len() as u32, false));
        }
        bufs.push((status_at, 1, true));
        let n = bufs.len();
        let table = self.alloc(16 * n as u64);
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let last = i + 1 == n;
            let flags = if write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&(if last { 0 } else { i as u16 + 1 }).to_le_bytes());
            self.h
                .mem
                .write_slice(&d, GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
        let mem = &self.h.mem;
        let q = &mut self.h.queues[usize::from(CTRL)];
        let head = q.next_desc;
        q.write_desc(mem, head, table, 16 * n as u32, F_INDIRECT, 0);
        q.next_desc = (head + 1) % q.size;
        q.publish(mem, head);
        let kicked = self.h.kick_if_needed(CTRL);
        // The poll: the device is synchronous here, so what is not in the
        // used ring now never will be (no further doorbell is coming).
        let q = &mut self.h.queues[usize::from(CTRL)];
        let idx: u16 = self.h.mem.read_obj(GuestAddress(q.used + 2)).unwrap();
        assert_eq!(
            idx,
            q.used_seen.wrapping_add(1),
            "command {class}/{cmd} (kicked: {kicked}): no used buffer; \
             virtnet_send_command would spin forever"
        );
        let at = q.used + 4 + 8 * u64::from(q.used_seen % q.size);
        let id: u32 = self.h.mem.read_obj(GuestAddress(at)).unwrap();
        assert_eq!(id, u32::from(head));
        q.used_seen = idx;
        assert!(!self.h.needs_reset());
        self.h.mem.read_obj(GuestAddress(status_at)).unwrap()
    }

    /// virtnet_set_rx_mode.
    fn set_rx_mode(&mut self, promisc: bool, allmulti: bool, mc: &[[u8; 6]]) {
        assert_eq!(
            self.command(CLASS_RX, RX_PROMISC, &[&[u8::from(promisc)]]),
            0
        );
        assert_eq!(
            self.command(CLASS_RX, RX_ALLMULTI, &[&[u8::from(allmulti)]]),
            0
        );
        let uc = 0u32.to_le_bytes().to_vec();
        let mut mct = (mc.len() as u32).to_le_bytes().to_vec();
        mct.extend(mc.iter().flatten());
        assert_eq!(self.command(CLASS_MAC, MAC_TABLE_SET, &[&uc, &mct]), 0);
        let filter = self.h.dev.device().rx_filter();
        assert_eq!((filter.promisc, filter.allmulti), (promisc, allmulti));
        assert_eq!(filter.multicast, mc);
    }
}

#[test]
fn linux_6_1_bring_up_and_rx_mode_commands() {
    let mut lab = Lab::new();
    lab.init();
    assert!(lab.refill(256), "the first refill kicks");
    let mc1 = [0x33, 0x33, 0, 0, 0, 1];
    let mc2 = [0x01, 0x00, 0x5e, 0, 0, 1];
    lab.set_rx_mode(false, false, &[mc1]);
    lab.set_rx_mode(false, false, &[mc1, mc2]);
    assert_eq!(
        lab.command(CLASS_MAC, MAC_ADDR_SET, &[&[2, 0, 0, 0, 0, 9]]),
        0
    );
    lab.set_rx_mode(true, true, &[mc1, mc2]);
    // The control queue wraps its 256 entries and keeps answering.
    for i in 0..300 {
        let on = u8::from(i % 2 == 0);
        assert_eq!(
            lab.command(CLASS_RX, RX_PROMISC, &[&[on]]),
            0,
            "command {i}"
        );
    }

    // Traffic still flows both ways, with kicks only when asked for.
    for i in 0..40u8 {
        lab.xmit(&frame(0, 60, i));
    }
    assert_eq!(lab.wire.sent().len(), 40);
    for i in 0..5u8 {
        lab.wire.push(frame(0, 100, i));
    }
    lab.h.dev.backend_readable();
    assert_eq!(lab.h.queues[usize::from(RX)].take_used(&lab.h.mem).len(), 5);
    assert!(!lab.h.needs_reset());
}
