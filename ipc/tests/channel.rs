//! Channel behaviour: round trips, descriptors, truncation, hang-ups,
//! ordering, and what a hostile peer can send.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use ipc::messages::{
    ChildMessage, DeviceReply, DeviceRequest, FdKind, LauncherMessage, RegData, Role, VmReply,
    VmRequest,
};
use ipc::{Channel, Error, MAX_FDS, MAX_MESSAGE_SIZE};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};

/// Sends raw bytes (and descriptors) on a channel's socket, bypassing the
/// encoder: what a compromised peer can do.
fn send_raw(ch: &Channel, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        ch.as_raw_fd(),
        &[std::io::IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
}

fn is_cloexec(fd: &OwnedFd) -> bool {
    let flags = fcntl(fd, FcntlArg::F_GETFD).unwrap();
    FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC)
}

#[test]
fn round_trip_without_fds() {
    let (a, b) = Channel::pair().unwrap();
    let requests = [
        DeviceRequest::ConfigRead { reg: 4 },
        DeviceRequest::ConfigWrite {
            reg: 1,
            offset: 2,
            data: RegData::new(&[0x06, 0x00]).unwrap(),
        },
        DeviceRequest::BarRead {
            bar: 2,
            offset: 0x1000,
            len: 4,
        },
        DeviceRequest::BarWrite {
            bar: 0,
            offset: u64::MAX - 8,
            data: RegData::from_u64(0x1122_3344_5566_7788, 8),
        },
        DeviceRequest::Shutdown,
    ];
    for req in requests {
        a.send(&req, &[]).unwrap();
        let (got, fds) = b.recv::<DeviceRequest>().unwrap();
        assert_eq!(got, req);
        assert!(fds.is_empty());
        assert!(got.check().is_ok(), "{got:?}");
    }
    for reply in [
        DeviceReply::ConfigValue(0x1af4_1041),
        DeviceReply::BarData(RegData::from_u64(0xabcd, 2)),
    ] {
        b.send(&reply, &[]).unwrap();
        assert_eq!(a.recv::<DeviceReply>().unwrap().0, reply);
    }
    for reply in [VmReply::Ok, VmReply::Refused("BAR 3 is not yours".into())] {
        a.send(&reply, &[]).unwrap();
        assert_eq!(b.recv::<VmReply>().unwrap().0, reply);
    }
    let boot = LauncherMessage::Bootstrap {
        role: Role::Device { nic: 1 },
        config: b"[vm]\nmemory = 512\n".to_vec(),
        fds: vec![FdKind::GuestMemory, FdKind::DeviceChannel { nic: 1 }],
    };
    a.send(&boot, &[]).unwrap();
    assert_eq!(b.recv::<LauncherMessage>().unwrap().0, boot);
    b.send(&ChildMessage::Fatal("no tap".into()), &[]).unwrap();
    assert_eq!(
        a.recv::<ChildMessage>().unwrap().0,
        ChildMessage::Fatal("no tap".into())
    );
}

#[test]
fn eventfd_passed_works_on_the_other_side() {
    let (device, vcpu) = Channel::pair().unwrap();
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).unwrap();
    let req = VmRequest::RegisterIrqfd { vector: 3 };
    assert_eq!(req.expected_fds(), 1);
    device.send(&req, &[efd.as_fd()]).unwrap();

    let (got, mut fds) = vcpu.recv::<VmRequest>().unwrap();
    assert_eq!(got, req);
    assert_eq!(fds.len(), got.expected_fds());
    let theirs = fds.pop().unwrap();
    assert!(
        is_cloexec(&theirs),
        "received descriptors must be close-on-exec"
    );
    assert_ne!(theirs.as_raw_fd(), efd.as_fd().as_raw_fd());

    // Signal through the received copy; the original sees it.
    let mut f = std::fs::File::from(theirs);
    f.write_all(&5u64.to_ne_bytes()).unwrap();
    assert_eq!(efd.read().unwrap(), 5);
    vcpu.send(&VmReply::Ok, &[]).unwrap();
    assert_eq!(device.recv::<VmReply>().unwrap().0, VmReply::Ok);
}

#[test]
fn pipe_ends_passed_in_order() {
    let (a, b) = Channel::pair().unwrap();
    let (r1, w1) = std::io::pipe().unwrap();
    let (r2, w2) = std::io::pipe().unwrap();
    let req = VmRequest::RegisterIntx { resample: true };
    assert_eq!(req.expected_fds(), 2);
    a.send(&req, &[w1.as_fd(), w2.as_fd()]).unwrap();
    drop((w1, w2));
    let (_, fds) = b.recv::<VmRequest>().unwrap();
    assert_eq!(fds.len(), 2);
    let mut it = fds.into_iter();
    std::fs::File::from(it.next().unwrap())
        .write_all(b"one")
        .unwrap();
    std::fs::File::from(it.next().unwrap())
        .write_all(b"two")
        .unwrap();
    // Every write end is now closed, so the reads end.
    let (mut s1, mut s2) = (String::new(), String::new());
    { r1 }.read_to_string(&mut s1).unwrap();
    { r2 }.read_to_string(&mut s2).unwrap();
    assert_eq!((s1.as_str(), s2.as_str()), ("one", "two"));
}

#[test]
fn oversized_message_is_rejected_and_channel_recovers() {
    let (a, b) = Channel::pair().unwrap();
    let big = vec![0x55u8; MAX_MESSAGE_SIZE + 1];
    send_raw(&a, &big, &[]);
    match b.recv::<DeviceRequest>() {
        Err(Error::Truncated { max }) => assert_eq!(max, MAX_MESSAGE_SIZE),
        other => panic!("expected truncation, got {other:?}"),
    }
    a.send(&DeviceRequest::Shutdown, &[]).unwrap();
    assert_eq!(
        b.recv::<DeviceRequest>().unwrap().0,
        DeviceRequest::Shutdown
    );
}

#[test]
fn truncated_message_closes_its_descriptors() {
    let (a, b) = Channel::pair().unwrap();
    let (mut r, w) = std::io::pipe().unwrap();
    let big = vec![0u8; MAX_MESSAGE_SIZE + 100];
    send_raw(&a, &big, &[w.as_fd()]);
    drop(w);
    assert!(matches!(
        b.recv::<DeviceRequest>(),
        Err(Error::Truncated { .. })
    ));
    // If the receiver had leaked the write end, this would block forever.
    let mut s = Vec::new();
    r.read_to_end(&mut s).unwrap();
    assert!(s.is_empty());
}

#[test]
fn too_many_descriptors_are_rejected_and_closed() {
    let (a, b) = Channel::pair().unwrap();
    let (mut r, w) = std::io::pipe().unwrap();
    let copies: Vec<_> = (0..MAX_FDS + 5).map(|_| w.as_fd()).collect();

    // Our own sender refuses.
    match a.send(&DeviceRequest::Shutdown, &copies) {
        Err(Error::TooManyFds { count, max }) => {
            assert_eq!((count, max), (MAX_FDS + 5, MAX_FDS))
        }
        other => panic!("expected TooManyFds, got {other:?}"),
    }

    // A hostile sender doesn't: the receiver drops the message and closes
    // every descriptor that did arrive.
    let mut bytes = Vec::new();
    bytes.extend(bincode::serde::encode_to_vec(DeviceRequest::Shutdown, ipc::config()).unwrap());
    send_raw(&a, &bytes, &copies);
    drop(copies);
    drop(w);
    match b.recv::<DeviceRequest>() {
        Err(Error::ControlTruncated { max }) => assert_eq!(max, MAX_FDS),
        other => panic!("expected ControlTruncated, got {other:?}"),
    }
    let mut s = Vec::new();
    r.read_to_end(&mut s).unwrap();

    // And carries on.
    a.send(&DeviceRequest::ConfigRead { reg: 0 }, &[]).unwrap();
    assert_eq!(
        b.recv::<DeviceRequest>().unwrap().0,
        DeviceRequest::ConfigRead { reg: 0 }
    );
}

#[test]
fn exactly_max_fds_pass() {
    let (a, b) = Channel::pair().unwrap();
    let (_r, w) = std::io::pipe().unwrap();
    let copies: Vec<_> = (0..MAX_FDS).map(|_| w.as_fd()).collect();
    a.send(&LauncherMessage::Shutdown, &copies).unwrap();
    let (_, fds) = b.recv::<LauncherMessage>().unwrap();
    assert_eq!(fds.len(), MAX_FDS);
    assert!(fds.iter().all(is_cloexec));
}

#[test]
fn large_message_within_limit_round_trips_and_over_limit_is_refused() {
    let (a, b) = Channel::pair().unwrap();
    let msg = LauncherMessage::Bootstrap {
        role: Role::Vcpu,
        config: vec![0xa5; MAX_MESSAGE_SIZE - 64],
        fds: vec![],
    };
    a.send(&msg, &[]).unwrap();
    assert_eq!(b.recv::<LauncherMessage>().unwrap().0, msg);

    let too_big = LauncherMessage::Bootstrap {
        role: Role::Vcpu,
        config: vec![0; MAX_MESSAGE_SIZE],
        fds: vec![],
    };
    assert!(matches!(a.send(&too_big, &[]), Err(Error::TooLarge { .. })));
    // Nothing was sent.
    assert!(b.try_recv::<LauncherMessage>().unwrap().is_none());
}

#[test]
fn closed_peer_is_detected() {
    let (a, b) = Channel::pair().unwrap();
    a.send(&DeviceRequest::Shutdown, &[]).unwrap();
    drop(a);
    // What was queued before the hang-up is still delivered...
    assert_eq!(
        b.recv::<DeviceRequest>().unwrap().0,
        DeviceRequest::Shutdown
    );
    // ...then the hang-up, every time.
    assert!(matches!(b.recv::<DeviceRequest>(), Err(Error::Closed)));
    assert!(matches!(b.try_recv::<DeviceRequest>(), Err(Error::Closed)));
    assert!(matches!(
        b.recv_timeout::<DeviceRequest>(Duration::from_secs(5)),
        Err(Error::Closed)
    ));
    assert!(matches!(
        b.send(&DeviceReply::ConfigValue(0), &[]),
        Err(Error::Closed)
    ));
}

#[test]
fn peer_dying_wakes_a_blocked_receiver() {
    let (a, b) = Channel::pair().unwrap();
    let t = std::thread::spawn(move || b.recv::<DeviceReply>().map(|_| ()));
    std::thread::sleep(Duration::from_millis(50));
    drop(a);
    assert!(matches!(t.join().unwrap(), Err(Error::Closed)));
}

#[test]
fn try_recv_and_timeout_when_idle() {
    let (a, b) = Channel::pair().unwrap();
    assert!(b.try_recv::<DeviceRequest>().unwrap().is_none());
    let start = std::time::Instant::now();
    assert!(b
        .recv_timeout::<DeviceRequest>(Duration::from_millis(100))
        .unwrap()
        .is_none());
    assert!(start.elapsed() >= Duration::from_millis(100));
    a.send(&DeviceRequest::Shutdown, &[]).unwrap();
    assert!(b
        .recv_timeout::<DeviceRequest>(Duration::from_secs(5))
        .unwrap()
        .is_some());
}

#[test]
fn posted_writes_stay_ordered_before_a_read() {
    let (vcpu, device) = Channel::pair().unwrap();
    const N: u64 = 2000;
    let dev = std::thread::spawn(move || {
        let mut last = None;
        let mut writes = 0u64;
        loop {
            let (req, _) = device.recv::<DeviceRequest>().unwrap();
            req.check().unwrap();
            match req {
                DeviceRequest::BarWrite { offset, data, .. } => {
                    assert_eq!(offset, writes * 4, "writes arrived out of order");
                    assert_eq!(data.to_u64(), writes);
                    last = Some(writes);
                    writes += 1;
                }
                DeviceRequest::BarRead { .. } => {
                    // The read is answered after every earlier write.
                    let v = last.map_or(u32::MAX, |l| l as u32);
                    device
                        .send(&DeviceReply::BarData(RegData::from_u64(v.into(), 4)), &[])
                        .unwrap();
                }
                DeviceRequest::Shutdown => return writes,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    for i in 0..N {
        vcpu.send(
            &DeviceRequest::BarWrite {
                bar: 0,
                offset: i * 4,
                data: RegData::from_u64(i, 4),
            },
            &[],
        )
        .unwrap();
    }
    let (reply, _) = vcpu
        .call::<_, DeviceReply>(
            &DeviceRequest::BarRead {
                bar: 0,
                offset: 0,
                len: 4,
            },
            &[],
        )
        .unwrap();
    assert_eq!(reply, DeviceReply::BarData(RegData::from_u64(N - 1, 4)));
    vcpu.send(&DeviceRequest::Shutdown, &[]).unwrap();
    assert_eq!(dev.join().unwrap(), N);
}

#[test]
fn concurrent_calls_each_get_their_own_reply() {
    let (vcpu, device) = Channel::pair().unwrap();
    let dev = std::thread::spawn(move || loop {
        match device.recv::<DeviceRequest>() {
            Ok((DeviceRequest::ConfigRead { reg }, _)) => device
                .send(&DeviceReply::ConfigValue(u32::from(reg) * 3), &[])
                .unwrap(),
            Ok((DeviceRequest::Shutdown, _)) | Err(Error::Closed) => return,
            other => panic!("unexpected {other:?}"),
        }
    });
    std::thread::scope(|s| {
        for t in 0..4u16 {
            let vcpu = &vcpu;
            s.spawn(move || {
                for i in 0..200u16 {
                    let reg = t * 200 + i;
                    let (r, _) = vcpu
                        .call::<_, DeviceReply>(&DeviceRequest::ConfigRead { reg }, &[])
                        .unwrap();
                    assert_eq!(r, DeviceReply::ConfigValue(u32::from(reg) * 3));
                }
            });
        }
    });
    vcpu.send(&DeviceRequest::Shutdown, &[]).unwrap();
    dev.join().unwrap();
}

/// A small deterministic generator, so the garbage is the same every run.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_from_a_hostile_peer_is_an_error_not_a_panic() {
    let (evil, victim) = Channel::pair().unwrap();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut decoded = 0;
    for i in 0..3000 {
        let len = 1 + (rng.next() % 96) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        send_raw(&evil, &bytes, &[]);
        // Whatever decodes must be a valid value; whatever doesn't must be
        // a clean error. Either way the next message still gets through.
        let ok = match i % 5 {
            0 => victim.recv::<DeviceRequest>().map(|(m, _)| drop(m.check())),
            1 => victim.recv::<DeviceReply>().map(drop),
            2 => victim.recv::<VmRequest>().map(|(m, _)| drop(m.check())),
            3 => victim.recv::<LauncherMessage>().map(drop),
            _ => victim.recv::<VmReply>().map(drop),
        };
        match ok {
            Ok(()) => decoded += 1,
            Err(Error::Decode(_) | Error::TrailingBytes { .. }) => {}
            Err(e) => panic!("unexpected error kind for garbage: {e}"),
        }
    }
    // Mostly errors; the point is that nothing panicked.
    assert!(decoded < 3000);
    evil.send(&DeviceRequest::Shutdown, &[]).unwrap();
    assert_eq!(
        victim.recv::<DeviceRequest>().unwrap().0,
        DeviceRequest::Shutdown
    );
}

#[test]
fn hostile_lengths_are_bounded() {
    let (evil, victim) = Channel::pair().unwrap();

    // RegData claiming 200 bytes.
    let mut bytes =
        bincode::serde::encode_to_vec(DeviceReply::BarData(RegData::from_u64(1, 4)), ipc::config())
            .unwrap();
    bytes[1] = 200; // variant 1, then len
    send_raw(&evil, &bytes, &[]);
    match victim.recv::<DeviceReply>() {
        Err(Error::Decode(e)) => assert!(e.to_string().contains("200"), "{e}"),
        other => panic!("expected a decode error, got {other:?}"),
    }

    // A Vec claiming 2^60 elements: refused by the limit, not allocated.
    let mut bytes = vec![0u8, 0u8]; // Bootstrap, Role::Vcpu
    bytes.push(0xfd); // varint: u64 follows
    bytes.extend((1u64 << 60).to_le_bytes());
    send_raw(&evil, &bytes, &[]);
    assert!(matches!(
        victim.recv::<LauncherMessage>(),
        Err(Error::Decode(_))
    ));

    // A valid message followed by junk.
    let mut bytes = bincode::serde::encode_to_vec(DeviceRequest::Shutdown, ipc::config()).unwrap();
    bytes.extend([1, 2, 3]);
    send_raw(&evil, &bytes, &[]);
    assert!(matches!(
        victim.recv::<DeviceRequest>(),
        Err(Error::TrailingBytes { extra: 3, .. })
    ));

    // An unknown variant.
    send_raw(&evil, &[42], &[]);
    assert!(matches!(
        victim.recv::<DeviceRequest>(),
        Err(Error::Decode(_))
    ));

    // Descriptors on a message that fails to decode are closed.
    let (mut r, w) = std::io::pipe().unwrap();
    send_raw(&evil, &[42], &[w.as_fd()]);
    drop(w);
    assert!(victim.recv::<DeviceRequest>().is_err());
    let mut s = Vec::new();
    r.read_to_end(&mut s).unwrap();
}

#[test]
fn from_fd_accepts_seqpacket_only() {
    let (a, _b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let ch = Channel::from_fd(a).unwrap();
    let fd = ch.into_fd();
    let ch = Channel::from_fd(fd).unwrap();
    drop(ch);

    let (s, _t) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    assert!(Channel::from_fd(s).is_err());
    let (r, _w) = std::io::pipe().unwrap();
    assert!(Channel::from_fd(OwnedFd::from(r)).is_err());
}

#[test]
fn channel_end_travels_over_a_channel() {
    // How the launcher hands a device its channels: a channel end is itself
    // a descriptor.
    let (launcher, child) = Channel::pair().unwrap();
    let (dev_end, vcpu_end) = Channel::pair().unwrap();
    launcher
        .send(
            &LauncherMessage::Bootstrap {
                role: Role::Device { nic: 0 },
                config: vec![],
                fds: vec![FdKind::DeviceChannel { nic: 0 }],
            },
            &[dev_end.as_fd()],
        )
        .unwrap();
    drop(dev_end);
    let (msg, mut fds) = child.recv::<LauncherMessage>().unwrap();
    assert!(matches!(msg, LauncherMessage::Bootstrap { .. }));
    let dev = Channel::from_fd(fds.pop().unwrap()).unwrap();
    vcpu_end
        .send(&DeviceRequest::ConfigRead { reg: 0 }, &[])
        .unwrap();
    assert_eq!(
        dev.recv::<DeviceRequest>().unwrap().0,
        DeviceRequest::ConfigRead { reg: 0 }
    );
}

/// A peer that never answers cannot hold a caller with a deadline: the
/// call times out, and the channel is given up so that a late reply is
/// never taken for the answer to the next request.
#[test]
fn a_call_with_a_deadline_gives_up_on_a_silent_peer() {
    let (a, b) = Channel::pair().unwrap();
    let a = a.with_deadline(Duration::from_millis(100));
    let started = std::time::Instant::now();
    let err = a
        .call::<_, DeviceReply>(&DeviceRequest::ConfigRead { reg: 0 }, &[])
        .unwrap_err();
    assert!(matches!(err, Error::TimedOut { .. }), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(a.given_up());
    // The request did arrive; a late answer is left unread.
    let (req, _) = b.recv::<DeviceRequest>().unwrap();
    assert_eq!(req, DeviceRequest::ConfigRead { reg: 0 });
    b.send(&DeviceReply::ConfigValue(7), &[]).unwrap();
    let err = a
        .call::<_, DeviceReply>(&DeviceRequest::ConfigRead { reg: 1 }, &[])
        .unwrap_err();
    assert!(matches!(err, Error::GivenUp), "{err}");
    assert!(matches!(
        a.send(&DeviceRequest::Shutdown, &[]),
        Err(Error::GivenUp)
    ));
}

/// Posted messages to a peer that stops reading fill its queue; with a
/// deadline the sender then gives up instead of blocking for ever.
#[test]
fn a_send_with_a_deadline_gives_up_when_the_peer_stops_reading() {
    let (a, _b) = Channel::pair().unwrap();
    let a = a.with_deadline(Duration::from_millis(100));
    let write = DeviceRequest::BarWrite {
        bar: 0,
        offset: 0,
        data: RegData::from_u64(1, 4),
    };
    let mut sent = 0u32;
    let err = loop {
        match a.send(&write, &[]) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 1_000_000, "the queue never filled");
    };
    assert!(matches!(err, Error::TimedOut { .. }), "{err}");
    assert!(sent > 0);
    assert!(a.given_up());
}

/// Without a deadline nothing changes: a call waits for its answer.
#[test]
fn a_call_without_a_deadline_waits() {
    let (a, b) = Channel::pair().unwrap();
    let peer = std::thread::spawn(move || {
        let (req, _) = b.recv::<DeviceRequest>().unwrap();
        assert_eq!(req, DeviceRequest::ConfigRead { reg: 3 });
        b.send(&DeviceReply::ConfigValue(3), &[]).unwrap();
    });
    let (reply, _) = a
        .call::<_, DeviceReply>(&DeviceRequest::ConfigRead { reg: 3 }, &[])
        .unwrap();
    assert_eq!(reply, DeviceReply::ConfigValue(3));
    assert!(!a.given_up());
    peer.join().unwrap();
}
