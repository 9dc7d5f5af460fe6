//! The frame channel: how a NIC process and a backend process that is not a
//! tap (user-mode networking today; socket and hub backends later) exchange
//! Ethernet frames.
//!
//! It is one `SOCK_SEQPACKET` socketpair, made by the launcher, one end in
//! each process. Every message is exactly one Ethernet frame, starting at
//! its destination address, with no header before it and no frame check
//! sequence after it; empty messages are never sent. Messages carry no
//! descriptors (any that come are discarded by the kernel, as no control
//! buffer is given).
//!
//! Both ends are non-blocking. A receiver gives a buffer as large as the
//! largest frame it accepts; a longer message is dropped whole (the kernel
//! reports `MSG_TRUNC`) and counted, never handed on cut short. Both
//! processes treat what comes over the channel as hostile.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::virtio::net::NetBackend;

/// What went through one end of a channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames received whole.
    pub received: u64,
    /// Frames sent.
    pub sent: u64,
    /// Messages longer than the buffer given: dropped.
    pub truncated: u64,
}

/// One end of a frame channel.
#[derive(Debug)]
pub struct FrameChannel {
    fd: OwnedFd,
    stats: FrameStats,
}

impl FrameChannel {
    /// A connected pair, both ends non-blocking and close-on-exec.
    pub fn pair() -> io::Result<(FrameChannel, FrameChannel)> {
        let mut fds = [-1; 2];
        // SAFETY: socketpair writes two descriptors into `fds`.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: two fresh descriptors that nothing else owns.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((Self::wrap(a), Self::wrap(b)))
    }

    fn wrap(fd: OwnedFd) -> FrameChannel {
        FrameChannel {
            fd,
            stats: FrameStats::default(),
        }
    }

    /// Wraps an inherited end: checks that it is a `SOCK_SEQPACKET` socket
    /// and makes it non-blocking.
    pub fn from_fd(fd: OwnedFd) -> io::Result<FrameChannel> {
        let mut kind: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `kind`.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut kind as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        if kind != libc::SOCK_SEQPACKET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a frame channel must be a SOCK_SEQPACKET socket",
            ));
        }
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Self::wrap(fd))
    }

    /// Receives one frame into `buf`: its length; `WouldBlock` when none is
    /// waiting. `Ok(0)` means the other end has closed (or sent an empty
    /// message, which it must not): stop reading until the descriptor is
    /// readable again. Messages longer than `buf` are dropped and counted.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_vectored(&mut [IoSliceMut::new(buf)])
    }

    /// [`FrameChannel::recv`] into several buffers, filled in order.
    pub fn recv_vectored(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        loop {
            // SAFETY: msghdr is plain data; all zeroes is a valid (empty)
            // value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            // IoSliceMut is ABI-compatible with iovec on Unix.
            msg.msg_iov = iov.as_mut_ptr().cast();
            msg.msg_iovlen = iov.len();
            // SAFETY: the iovecs point into live buffers borrowed mutably
            // for the call; no control buffer is given.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if msg.msg_flags & libc::MSG_TRUNC != 0 {
                self.stats.truncated += 1;
                continue;
            }
            if n > 0 {
                self.stats.received += 1;
            }
            return Ok(n as usize);
        }
    }

    /// Sends `frame` as one message; `WouldBlock` when the channel is full
    /// (the frame is then not sent), `BrokenPipe` when the other end has
    /// closed. An empty frame is refused.
    pub fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.send_vectored(&[IoSlice::new(frame)])
    }

    /// [`FrameChannel::send`] of a frame in several pieces.
    pub fn send_vectored(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        if iov.iter().all(|s| s.is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty frame is never sent",
            ));
        }
        // SAFETY: as in recv_vectored.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        // SAFETY: the kernel only reads the iovecs, which point into live
        // buffers. MSG_NOSIGNAL: a closed peer is EPIPE, not SIGPIPE.
        let n = unsafe {
            libc::sendmsg(
                self.fd.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.stats.sent += 1;
        Ok(n as usize)
    }

    /// Counters so far.
    pub fn stats(&self) -> FrameStats {
        self.stats
    }

    /// The descriptor, to hand to another process.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// Bare frames, no offloads: the guest's driver computes every checksum and
/// segments every frame itself.
impl NetBackend for FrameChannel {
    fn readv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.recv_vectored(iov)
    }

    fn writev(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_vectored(iov)
    }

    fn vnet_hdr_len(&self) -> usize {
        0
    }
}

impl AsFd for FrameChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for FrameChannel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
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
    fn as_a_net_backend() {
        let (a, mut b) = FrameChannel::pair().unwrap();
        let mut a: Box<dyn NetBackend> = Box::new(a);
        assert_eq!((a.vnet_hdr_len(), a.offloads()), (0, 0));
        a.set_offloads(u64::MAX).unwrap();
        let f = frame(60, 4);
        assert_eq!(a.writev(&[IoSlice::new(&f)]).unwrap(), 60);
        let mut buf = [0u8; 1514];
        assert_eq!(b.recv(&mut buf).unwrap(), 60);
        b.send(&f).unwrap();
        assert_eq!(a.readv(&mut [IoSliceMut::new(&mut buf)]).unwrap(), 60);
        assert_eq!(&buf[..60], &f[..]);
        assert_eq!(
            a.readv(&mut [IoSliceMut::new(&mut buf)])
                .unwrap_err()
                .kind(),
            io::ErrorKind::WouldBlock
        );
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
}
