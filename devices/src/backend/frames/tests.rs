//! The channel as a transport (messages whole, in order, bounded), and its
//! NIC end as a backend that does for the NIC the offloads it did not
//! accept.

use super::*;

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

#[test]
fn frames_round_trip_whole_and_in_order() {
    let (mut a, mut b) = FrameChannel::pair().unwrap();
    let frames: Vec<Vec<u8>> = [14, 60, 1514, 9018]
        .iter()
        .enumerate()
        .map(|(i, &len)| frame(len, i as u8))
        .collect();
    for f in &frames {
        assert_eq!(a.send(f).unwrap(), f.len());
    }
    let mut buf = vec![0u8; 65536];
    for f in &frames {
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &f[..]);
    }
    assert_eq!(
        b.recv(&mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert_eq!(a.stats().sent, 4);
    assert_eq!(b.stats().received, 4);

    // The other way, in pieces on both sides: still one message each.
    let f = frame(1000, 9);
    let (head, tail) = f.split_at(14);
    assert_eq!(
        b.send_vectored(&[IoSlice::new(head), IoSlice::new(tail)])
            .unwrap(),
        1000
    );
    let (mut x, mut y) = (vec![0u8; 100], vec![0u8; 2000]);
    let n = a
        .recv_vectored(&mut [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)])
        .unwrap();
    assert_eq!(n, 1000);
    assert_eq!(&x[..], &f[..100]);
    assert_eq!(&y[..900], &f[100..]);
}

#[test]
fn truncated_frames_are_dropped_and_counted() {
    let (mut a, mut b) = FrameChannel::pair().unwrap();
    let big = frame(2000, 1);
    let small = frame(100, 2);
    a.send(&big).unwrap();
    a.send(&big).unwrap();
    a.send(&small).unwrap();
    let mut buf = vec![0u8; 1514];
    // Both long ones go, the short one comes whole.
    let n = b.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &small[..]);
    assert_eq!(b.stats().truncated, 2);
    assert_eq!(b.stats().received, 1);
    // A message of exactly the buffer's size is not truncated.
    a.send(&big[..1514]).unwrap();
    assert_eq!(b.recv(&mut buf).unwrap(), 1514);
    assert_eq!(b.stats().truncated, 2);
    // Only long ones waiting: nothing to hand on.
    a.send(&big).unwrap();
    assert_eq!(
        b.recv(&mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert_eq!(b.stats().truncated, 3);
}

#[test]
fn empty_frames_are_never_sent_and_a_closed_peer_reads_as_zero() {
    let (mut a, mut b) = FrameChannel::pair().unwrap();
    assert_eq!(a.send(&[]).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    a.send(&[1; 60]).unwrap();
    drop(a);
    let mut buf = [0u8; 64];
    // What was sent before the close still arrives, then the end.
    assert_eq!(b.recv(&mut buf).unwrap(), 60);
    assert_eq!(b.recv(&mut buf).unwrap(), 0);
    assert_eq!(
        b.send(&[1; 60]).unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );
}

#[test]
fn a_full_channel_would_block() {
    let (mut a, _b) = FrameChannel::pair().unwrap();
    let f = frame(1514, 3);
    let mut sent = 0;
    let err = loop {
        match a.send(&f) {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100_000, "the channel never filled up");
    };
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(sent > 0);
}

#[test]
fn from_fd_takes_only_seqpacket_sockets() {
    let (a, mut b) = FrameChannel::pair().unwrap();
    let mut a = FrameChannel::from_fd(a.into_fd()).unwrap();
    a.send(&[5; 20]).unwrap();
    assert_eq!(b.recv(&mut [0; 20]).unwrap(), 20);

    let (r, _w) = std::io::pipe().unwrap();
    assert!(FrameChannel::from_fd(OwnedFd::from(r)).is_err());
    let dgram = std::os::unix::net::UnixDatagram::pair().unwrap().0;
    let e = FrameChannel::from_fd(OwnedFd::from(dgram)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

// ------------------------------------------------------------ the NIC's end

use crate::net_offload::hdr::{GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM};
use crate::net_offload::tests::{assert_checksums, coalesce, Flow};
use crate::virtio::net::features::{GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, MRG_RXBUF};
use crate::virtio::net::{NetBackend, HDR_LEN};

/// e1000's buffers: the header, then 16 KiB.
const E1000_ROOM: usize = HDR_LEN + 16384;

/// Reads one message from the NIC's end into a header and `room - 12`
/// bytes of buffer, as e1000 does.
fn read(nic: &mut FrameChannel, room: usize) -> io::Result<Vec<u8>> {
    let mut hdr = [0u8; HDR_LEN];
    let mut buf = vec![0u8; room - HDR_LEN];
    let n = nic.readv(&mut [IoSliceMut::new(&mut hdr), IoSliceMut::new(&mut buf)])?;
    assert!(n >= HDR_LEN, "{n}");
    Ok([&hdr[..], &buf[..n - HDR_LEN]].concat())
}

/// `run` coalesced, which must make one GSO frame.
fn one_gso(run: &[Vec<u8>]) -> (VnetHdr, Vec<u8>) {
    let mut out = coalesce(run);
    assert_eq!(out.len(), 1);
    assert!(out[0].0.is_gso());
    out.remove(0)
}

#[test]
fn as_a_net_backend() {
    let (a, mut b) = FrameChannel::pair().unwrap();
    let mut a: Box<dyn NetBackend> = Box::new(a);
    assert_eq!((a.vnet_hdr_len(), a.offloads()), (HDR_LEN, OFFLOADS));
    // The NIC's header goes on as it is.
    let f = Flow::v4().frame(1, 1, 0x10, b"data", None);
    let hdr = [1, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0, 0, 0];
    let n = a.writev(&[IoSlice::new(&hdr), IoSlice::new(&f)]).unwrap();
    assert_eq!(n, HDR_LEN + f.len());
    let mut buf = [0u8; 1600];
    assert_eq!(b.recv(&mut buf).unwrap(), n);
    assert_eq!(&buf[..n], &[&hdr[..], &f].concat()[..]);
    // A wire frame comes with its zero header.
    b.send_frame(&VnetHdr::NONE, &f).unwrap();
    assert_eq!(a.readv(&mut [IoSliceMut::new(&mut buf)]).unwrap(), n);
    assert_eq!(&buf[..n], &[&[0; HDR_LEN][..], &f].concat()[..]);
    assert_eq!(
        a.readv(&mut [IoSliceMut::new(&mut buf)])
            .unwrap_err()
            .kind(),
        io::ErrorKind::WouldBlock
    );
}

#[test]
fn gso_frames_are_cut_for_a_nic_that_does_not_take_them() {
    for flow in [Flow::v4(), Flow::v6()] {
        let run = flow.burst(1, 1, 20, 1448, 700);
        let (hdr, gso) = one_gso(&run);
        let (mut nic, mut backend) = FrameChannel::pair().unwrap();
        backend.send_frame(&hdr, &gso).unwrap();
        let after = flow.frame(9, 9, 0x10, &[], None);
        backend.send_frame(&VnetHdr::NONE, &after).unwrap();
        // e1000: never accepts an offload.
        for want in run.iter().chain([&after]) {
            let got = read(&mut nic, E1000_ROOM).unwrap();
            assert_eq!(&got[..HDR_LEN], &[0; HDR_LEN]);
            assert!(got[HDR_LEN..] == want[..]);
            assert_checksums(&got[HDR_LEN..], "segment");
        }
        let e = read(&mut nic, E1000_ROOM).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let stats = nic.stats();
        assert_eq!((stats.received, stats.segmented), (2, 1));
    }
}

#[test]
fn gso_frames_go_whole_to_a_nic_that_takes_them() {
    let run4 = Flow::v4().burst(1, 1, 10, 1448, 1448);
    let run6 = Flow::v6().burst(1, 1, 10, 1428, 1428);
    let (h4, f4) = one_gso(&run4);
    let (h6, f6) = one_gso(&run6);
    let (mut nic, mut backend) = FrameChannel::pair().unwrap();
    nic.set_offloads(GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | MRG_RXBUF)
        .unwrap();
    let room = HDR_LEN + crate::virtio::net::MAX_FRAME;
    for (h, f) in [(h4, &f4), (h6, &f6)] {
        backend.send_frame(&h, f).unwrap();
        let got = read(&mut nic, room).unwrap();
        assert_eq!(&got[..HDR_LEN], &h.to_bytes());
        assert!(got[HDR_LEN..] == f[..]);
    }
    // Buffers too small for it: cut after all.
    backend.send_frame(&h4, &f4).unwrap();
    for want in &run4 {
        let got = read(&mut nic, HDR_LEN + 1514).unwrap();
        assert!(got[HDR_LEN..] == want[..]);
    }
    // TCPv4 taken, TCPv6 not.
    nic.set_offloads(GUEST_CSUM | GUEST_TSO4).unwrap();
    backend.send_frame(&h6, &f6).unwrap();
    backend.send_frame(&h4, &f4).unwrap();
    for want in &run6 {
        let got = read(&mut nic, room).unwrap();
        assert!(got[HDR_LEN..] == want[..]);
    }
    assert!(read(&mut nic, room).unwrap()[HDR_LEN..] == f4[..]);
    assert_eq!(nic.stats().segmented, 2);
}

#[test]
fn checksums_are_completed_unless_the_nic_takes_them() {
    let flow = Flow::v4();
    let f = flow.frame(1, 1, 0x18, b"hello", Some(25));
    let hdr = VnetHdr {
        flags: NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..VnetHdr::NONE
    };
    let (mut nic, mut backend) = FrameChannel::pair().unwrap();
    backend.send_frame(&hdr, &f).unwrap();
    let got = read(&mut nic, E1000_ROOM).unwrap();
    assert_eq!(&got[..HDR_LEN], &[0; HDR_LEN]);
    assert_checksums(&got[HDR_LEN..], "completed");
    nic.set_offloads(GUEST_CSUM).unwrap();
    backend.send_frame(&hdr, &f).unwrap();
    let got = read(&mut nic, E1000_ROOM).unwrap();
    assert_eq!(&got[..HDR_LEN], &hdr.to_bytes());
    assert!(got[HDR_LEN..] == f[..]);
}

#[test]
fn bad_messages_are_dropped_and_counted() {
    // e1000-like buffers (the message received here first), and
    // virtio-net's with GSO (received straight into them).
    for room in [HDR_LEN + 1514, HDR_LEN + crate::virtio::net::MAX_FRAME] {
        bad_messages_for(room);
    }
}

fn bad_messages_for(room: usize) {
    let (hdr, gso) = one_gso(&Flow::v4().burst(1, 1, 4, 1000, 1000));
    let good = Flow::v6().frame(1, 1, 0x10, b"good", None);
    let zero = VnetHdr::NONE;
    let (mut nic, mut backend) = FrameChannel::pair().unwrap();
    backend.send(&[0; 5]).unwrap();
    backend.send(&[0; HDR_LEN]).unwrap();
    backend
        .send_frame(
            &VnetHdr {
                flags: 0x20,
                ..zero
            },
            &good,
        )
        .unwrap();
    backend
        .send_frame(&VnetHdr { gso_type: 3, ..hdr }, &gso)
        .unwrap();
    backend
        .send_frame(
            &VnetHdr {
                gso_type: GSO_TCPV6,
                ..hdr
            },
            &gso,
        )
        .unwrap();
    let far = VnetHdr {
        csum_start: 4050,
        ..hdr
    };
    backend.send_frame(&far, &gso).unwrap();
    backend.send_frame(&hdr, &gso[..40]).unwrap();
    backend
        .send_frame(&VnetHdr { gso_size: 0, ..hdr }, &gso)
        .unwrap();
    backend
        .send_frame(
            &VnetHdr {
                gso_type: GSO_TCPV4,
                ..zero
            },
            &good,
        )
        .unwrap();
    // Fine, but longer than e1000's buffers.
    let long = [good.clone(), vec![0; 2000]].concat();
    backend.send_frame(&zero, &long).unwrap();
    backend.send_frame(&zero, &good).unwrap();
    let fits = room > long.len() + HDR_LEN;
    if fits {
        assert!(read(&mut nic, room).unwrap()[HDR_LEN..] == long[..]);
    }
    let got = read(&mut nic, room).unwrap();
    assert!(got[HDR_LEN..] == good[..]);
    let stats = nic.stats();
    assert_eq!(
        (stats.bad_headers, stats.truncated),
        (9, u64::from(!fits)),
        "{stats:?}"
    );
}
