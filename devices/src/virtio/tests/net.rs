//! virtio-net's data path and control queue.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::*;

/// RX without guest GSO: a frame needs 12 + 1518 bytes of buffers.
const NO_GSO: u64 = WANT & !(netf::GUEST_TSO4 | netf::GUEST_TSO6);

#[test]
fn tx_frame_reaches_backend_with_its_header() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    let f = frame(1, 60, 1);
    let head = h.transmit(&f, 3);
    assert_eq!(wire.sent(), vec![f]);
    assert_eq!(h.queues[1].take_used(&h.mem), vec![(u32::from(head), 0)]);
    assert_eq!(h.irq.take(), vec![1]);
    let s = h.dev.device().stats();
    assert_eq!((s.tx_frames, s.tx_bytes), (1, 60));
}

#[test]
fn tx_to_bare_backend_strips_the_header() {
    let (mut h, wire) = Harness::with_backend(0, 0);
    h.init(WANT);
    let f = frame(0, 100, 2);
    h.transmit(&f, 4);
    assert_eq!(wire.sent(), vec![f[12..].to_vec()]);
}

#[test]
fn tx_through_an_indirect_table() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    let f = frame(0, 80, 3);
    let (a, b) = (h.alloc(40), h.alloc(52));
    h.mem.write_slice(&f[..40], GuestAddress(a)).unwrap();
    h.mem.write_slice(&f[40..], GuestAddress(b)).unwrap();
    let table = h.alloc(32);
    let mut d = [0u8; 32];
    d[0..8].copy_from_slice(&a.to_le_bytes());
    d[8..12].copy_from_slice(&40u32.to_le_bytes());
    d[12..14].copy_from_slice(&F_NEXT.to_le_bytes());
    d[14..16].copy_from_slice(&1u16.to_le_bytes());
    d[16..24].copy_from_slice(&b.to_le_bytes());
    d[24..28].copy_from_slice(&52u32.to_le_bytes());
    h.mem.write_slice(&d, GuestAddress(table)).unwrap();
    let q = &mut h.queues[1];
    q.write_desc(&h.mem, 0, table, 32, F_INDIRECT, 0);
    q.publish(&h.mem, 0);
    h.kick(TX);
    assert_eq!(wire.sent(), vec![f]);
    assert!(!h.needs_reset());
}

#[test]
fn tx_frames_too_short_or_too_long_are_dropped() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    h.transmit(&[0u8; 8], 1);
    let big = h.alloc(70_000);
    let q = &mut h.queues[1];
    let head = q.add_chain(&h.mem, &[(big, 70_000, false)]);
    q.publish(&h.mem, head);
    h.kick(TX);
    assert!(wire.sent().is_empty());
    assert_eq!(h.queues[1].take_used(&h.mem).len(), 2);
    assert_eq!(h.dev.device().stats().tx_dropped, 2);
    assert!(!h.needs_reset());
}

#[test]
fn tx_blocked_backend_resumes_when_writable() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    wire.0.lock().unwrap().block_writes = true;
    h.transmit(&frame(0, 60, 4), 1);
    assert!(h.dev.device().tx_blocked());
    assert!(h.queues[1].take_used(&h.mem).is_empty());
    wire.0.lock().unwrap().block_writes = false;
    h.dev.backend_writable();
    assert_eq!(wire.sent(), vec![frame(0, 60, 4)]);
    assert_eq!(h.queues[1].take_used(&h.mem).len(), 1);
    assert_eq!(h.irq.take(), vec![1]);
}

#[test]
fn rx_frame_lands_in_guest_memory() {
    let (mut h, wire) = Harness::new();
    h.init(NO_GSO);
    let bufs = h.post_rx(4, 2048);
    assert!(h.kick_if_needed(RX));
    let f = frame(2, 100, 5);
    wire.push(f.clone());
    h.dev.backend_readable();
    assert_eq!(
        h.queues[0].take_used(&h.mem),
        vec![(u32::from(bufs[0].0), 112)]
    );
    let got = h.bytes(bufs[0].1, 112);
    assert_eq!(got[0], 2, "DATA_VALID passes with GUEST_CSUM");
    assert_eq!(&got[10..12], &[1, 0], "num_buffers");
    assert_eq!(&got[12..], &f[12..]);
    assert_eq!(h.irq.take(), vec![0]);
    let s = h.dev.device().stats();
    assert_eq!((s.rx_frames, s.rx_bytes), (1, 100));
    // Buffers to spare: the device wants no kicks for more.
    h.post_rx(1, 2048);
    assert!(!h.kick_if_needed(RX));
}

#[test]
fn rx_flags_cleared_without_guest_csum() {
    let (mut h, wire) = Harness::new();
    h.init(NO_GSO & !netf::GUEST_CSUM);
    let bufs = h.post_rx(2, 2048);
    wire.push(frame(2, 64, 6));
    h.dev.backend_readable();
    assert_eq!(h.bytes(bufs[0].1, 1), vec![0]);
}

#[test]
fn rx_mergeable_frame_spans_buffers_and_rest_go_back() {
    let (mut h, wire) = Harness::new();
    h.init(NO_GSO);
    let bufs = h.post_rx(4, 1024);
    assert!(h.kick_if_needed(RX));
    let big = frame(0, 1500, 7);
    wire.push(big.clone());
    wire.push(frame(0, 100, 8));
    wire.push(frame(0, 200, 9));
    h.dev.backend_readable();
    let used = h.queues[0].take_used(&h.mem);
    let ids = |i: usize| u32::from(bufs[i].0);
    assert_eq!(used, vec![(ids(0), 1024), (ids(1), 488), (ids(2), 112)]);
    let mut got = h.bytes(bufs[0].1, 1024);
    got.extend(h.bytes(bufs[1].1, 488));
    assert_eq!(&got[10..12], &[2, 0], "num_buffers = 2");
    assert_eq!(&got[12..], &big[12..]);
    // One 1024-byte buffer left: less than a full frame needs, so the third
    // frame waits until the driver adds buffers and kicks.
    assert_eq!(wire.0.lock().unwrap().to_guest.len(), 1);
    let more = h.post_rx(1, 1024);
    assert!(
        h.kick_if_needed(RX),
        "the device asked for a kick when starved"
    );
    assert_eq!(h.queues[0].take_used(&h.mem), vec![(ids(3), 212)]);
    assert_eq!(&h.bytes(bufs[3].1, 12)[10..12], &[1, 0]);
    assert!(wire.0.lock().unwrap().to_guest.is_empty());
    // The added buffer is still there for the next frame. One buffer is
    // short of a full frame again, so the device still wants kicks.
    h.post_rx(1, 1024);
    assert!(h.kick_if_needed(RX));
    wire.push(frame(0, 10, 10));
    h.dev.backend_readable();
    assert_eq!(
        h.queues[0].take_used(&h.mem),
        vec![(u32::from(more[0].0), 22)]
    );
}

#[test]
fn rx_with_guest_gso_needs_64k_of_buffers() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    h.post_rx(16, 4096);
    assert!(h.kick_if_needed(RX));
    wire.push(frame(0, 100, 11));
    h.dev.backend_readable();
    assert!(h.queues[0].take_used(&h.mem).is_empty());
    h.post_rx(1, 4096);
    assert!(h.kick_if_needed(RX));
    assert_eq!(h.queues[0].take_used(&h.mem).len(), 1);
}

#[test]
fn rx_without_mrg_uses_one_chain() {
    let (mut h, wire) = Harness::new();
    h.init(NO_GSO & !netf::MRG_RXBUF);
    let (hdr, data) = (h.alloc(12), h.alloc(2000));
    let q = &mut h.queues[0];
    let head = q.add_chain(&h.mem, &[(hdr, 12, true), (data, 2000, true)]);
    q.publish(&h.mem, head);
    let f = frame(0, 1000, 12);
    wire.push(f.clone());
    h.dev.backend_readable();
    assert_eq!(h.queues[0].take_used(&h.mem), vec![(u32::from(head), 1012)]);
    assert_eq!(&h.bytes(hdr, 12)[10..12], &[1, 0]);
    assert_eq!(h.bytes(data, 1000), f[12..].to_vec());
}

#[test]
fn rx_from_bare_backend_gets_a_header() {
    let (mut h, wire) = Harness::with_backend(0, 0);
    h.init(WANT);
    let bufs = h.post_rx(2, 2048);
    let raw: Vec<u8> = (0..60).collect();
    wire.push(raw.clone());
    // Dirty the header area to see it rewritten.
    h.mem
        .write_slice(&[0xff; 12], GuestAddress(bufs[0].1))
        .unwrap();
    h.dev.backend_readable();
    assert_eq!(
        h.queues[0].take_used(&h.mem),
        vec![(u32::from(bufs[0].0), 72)]
    );
    let got = h.bytes(bufs[0].1, 72);
    assert_eq!(&got[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(&got[12..], &raw[..]);
}

#[test]
fn rx_buffer_straddling_two_ram_regions() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    let at = REGION - 50;
    let q = &mut h.queues[0];
    let head = q.add_chain(&h.mem, &[(at, 65562, true)]);
    q.publish(&h.mem, head);
    let f = frame(0, 300, 13);
    wire.push(f.clone());
    h.dev.backend_readable();
    assert_eq!(h.queues[0].take_used(&h.mem), vec![(u32::from(head), 312)]);
    assert_eq!(&h.bytes(at + 12, 300)[..], &f[12..]);
}

#[test]
fn rx_waits_for_buffers_then_kick_delivers() {
    let (mut h, wire) = Harness::new();
    h.init(WANT);
    wire.push(frame(0, 64, 14));
    h.dev.backend_readable();
    assert_eq!(wire.0.lock().unwrap().to_guest.len(), 1);
    h.post_rx(1, 65562);
    assert!(h.kick_if_needed(RX));
    assert_eq!(h.queues[0].take_used(&h.mem).len(), 1);
    assert_eq!(h.irq.take(), vec![0]);
}

#[test]
fn ctrl_rx_mode_and_mac_commands() {
    let (mut h, _) = Harness::new();
    h.init(WANT);
    assert!(h.dev.device().rx_filter().promisc);
    assert_eq!(h.ctrl(0, 0, &[0]), 0, "PROMISC off");
    assert_eq!(h.ctrl(0, 1, &[1]), 0, "ALLMULTI on");
    let f = h.dev.device().rx_filter().clone();
    assert!(!f.promisc && f.allmulti);
    assert_eq!(h.irq.take(), vec![2, 2]);
    let mut table = 1u32.to_le_bytes().to_vec();
    table.extend([2, 0, 0, 0, 0, 9]);
    table.extend(2u32.to_le_bytes());
    table.extend([1, 0, 0x5e, 0, 0, 1, 0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(h.ctrl(1, 0, &table), 0, "MAC_TABLE_SET");
    let f = h.dev.device().rx_filter().clone();
    assert_eq!(f.unicast, vec![[2, 0, 0, 0, 0, 9]]);
    assert_eq!(f.multicast.len(), 2);
    table[0] = 3;
    assert_eq!(h.ctrl(1, 0, &table), 1, "table shorter than its count");
    assert_eq!(h.ctrl(0, 0, &[0, 0]), 1, "PROMISC with 2 bytes");
    assert_eq!(h.ctrl(0, 4, &[1]), 1, "NOUNI needs CTRL_RX_EXTRA");
    assert_eq!(h.ctrl(9, 0, &[]), 1, "unknown class");
    assert_eq!(h.ctrl(1, 1, &[2, 1, 2, 3, 4, 5]), 0, "MAC_ADDR_SET");
    assert_eq!(h.read(h.caps.device, 4), 0x0302_0102);
    assert!(!h.needs_reset());
    h.init(WANT);
    assert_eq!(
        h.dev.device().mac(),
        [2, 0, 0, 0, 0, 1],
        "reset restores the MAC"
    );
    assert!(h.dev.device().rx_filter().promisc);
}

#[test]
fn ctrl_without_ctrl_rx_feature_is_refused() {
    let (mut h, _) = Harness::new();
    h.init(WANT & !(netf::CTRL_RX | netf::CTRL_MAC_ADDR));
    assert_eq!(h.ctrl(0, 0, &[0]), 1);
    assert_eq!(h.ctrl(1, 1, &[2, 1, 2, 3, 4, 5]), 1);
}

#[test]
fn ctrl_oversized_command_is_refused() {
    let (mut h, _) = Harness::new();
    h.init(WANT);
    assert_eq!(h.ctrl(1, 0, &vec![0u8; 20_000]), 1);
    assert!(!h.needs_reset());
}

/// A backend on one end of a SOCK_SEQPACKET socketpair: real readv/writev
/// on the iovecs the model builds over guest memory.
struct SockBackend(OwnedFd);

impl NetBackend for SockBackend {
    fn readv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        // SAFETY: IoSliceMut is ABI-compatible with iovec; the kernel
        // writes at most the buffers' lengths.
        let n = unsafe { libc::readv(self.0.as_raw_fd(), iov.as_ptr().cast(), iov.len() as i32) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    fn writev(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: IoSlice is ABI-compatible with iovec; the kernel only reads.
        let n = unsafe { libc::writev(self.0.as_raw_fd(), iov.as_ptr().cast(), iov.len() as i32) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    fn vnet_hdr_len(&self) -> usize {
        0
    }
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` has room for the two descriptors socketpair returns.
    assert_eq!(
        unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) },
        0
    );
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn socketpair_backend_round_trip() {
    let (ours, theirs) = socketpair();
    let mut h = Harness::on(SockBackend(ours));
    h.init(WANT);
    // Guest to wire, from three descriptors.
    let f = frame(0, 200, 15);
    h.transmit(&f, 3);
    let mut buf = [0u8; 512];
    // SAFETY: reading into a local buffer of the given length.
    let n = unsafe { libc::read(theirs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(&buf[..n as usize], &f[12..]);
    // Wire to guest, across a region boundary.
    let at = REGION - 30;
    let q = &mut h.queues[0];
    let head = q.add_chain(&h.mem, &[(at, 65562, true)]);
    q.publish(&h.mem, head);
    let raw: Vec<u8> = (0..100u8).collect();
    // SAFETY: writing from a local buffer of the given length.
    let n = unsafe { libc::write(theirs.as_raw_fd(), raw.as_ptr().cast(), raw.len()) };
    assert_eq!(n, 100);
    h.dev.backend_readable();
    assert_eq!(h.queues[0].take_used(&h.mem), vec![(u32::from(head), 112)]);
    assert_eq!(h.bytes(at + 12, 100), raw);
    // Nothing more: the read hits EAGAIN and the device waits.
    h.dev.backend_readable();
    assert!(h.queues[0].take_used(&h.mem).is_empty());
    assert!(!h.needs_reset());
}
