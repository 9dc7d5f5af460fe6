//! The frame channel: how a NIC process and a backend process that is not a
//! tap (user-mode networking today; socket and hub backends later) exchange
//! Ethernet frames.
//!
//! It is one `SOCK_SEQPACKET` socketpair, made by the launcher, one end in
//! each process. Every message is a 12-byte `virtio_net_hdr_v1` (virtio
//! 1.x, 5.1.6: flags, gso_type, hdr_len, gso_size, csum_start,
//! csum_offset, num_buffers, little-endian) followed by one Ethernet
//! frame, starting at its destination address, with no frame check
//! sequence after it. The header says what the sender left undone:
//!
//! - nothing (all zero): a frame as it goes on a wire;
//! - NEEDS_CSUM: the ones' complement sum from `csum_start` to the end of
//!   the frame, complemented, goes at `csum_start + csum_offset`, where
//!   the sum of the pseudo-header already is;
//! - gso_type TCPV4 or TCPV6 (with or without the ECN bit): a GSO frame,
//!   one TCP segment with up to 64 KiB of payload, to cut into segments
//!   of `gso_size` bytes of payload; with NEEDS_CSUM at the TCP checksum
//!   (`csum_offset` 16), the field holding the pseudo-header's sum over
//!   the whole TCP length. No other GSO type (no UDP) is sent.
//!
//! `hdr_len` is a hint (the receiver finds the headers in the frame),
//! `num_buffers` is 0 and ignored, DATA_VALID may be set and means
//! nothing. A message is at most 12 + 65550 bytes; empty messages are
//! never sent. Messages carry no descriptors (any that come are discarded
//! by the kernel, as no control buffer is given).
//!
//! Both ends treat what comes over the channel as hostile: a message
//! whose header or frame cannot be used as the header says ([`net_offload`]
//! checks every offset) is dropped and counted. The NIC's end, as the
//! NIC's [`NetBackend`] (`nic`), offers the NIC these offloads and does
//! what the NIC did not accept: it segments GSO frames and completes
//! checksums, so a NIC never sees what it cannot take. A backend without a
//! use for offloads (the socket and hub backends to come) segments and
//! completes checksums before its frames go on its own wire, and may send
//! only zero headers.
//!
//! Both ends are non-blocking. A receiver gives a buffer as large as the
//! largest message it accepts; a longer message is dropped whole (the
//! kernel reports `MSG_TRUNC`) and counted, never handed on cut short.
//!
//! [`net_offload`]: crate::net_offload
//! [`NetBackend`]: crate::virtio::net::NetBackend

mod nic;
#[cfg(test)]
mod tests;

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::net_offload::VnetHdr;
pub use nic::OFFLOADS;

/// What went through one end of a channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Messages received whole.
    pub received: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages longer than the buffer given: dropped.
    pub truncated: u64,
    /// (The NIC's end) messages dropped for a header or frame that cannot
    /// be used as the header says.
    pub bad_headers: u64,
    /// (The NIC's end) GSO frames cut into segments for the NIC.
    pub segmented: u64,
}

/// One end of a frame channel.
#[derive(Debug)]
pub struct FrameChannel {
    fd: OwnedFd,
    stats: FrameStats,
    /// What the NIC's end keeps between reads.
    inbound: nic::Inbound,
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
            inbound: nic::Inbound::default(),
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

    /// Receives one message (a header and a frame) into `buf`: its length;
    /// `WouldBlock` when none is waiting. `Ok(0)` means the other end has
    /// closed (or sent an empty message, which it must not): stop reading
    /// until the descriptor is readable again. Messages longer than `buf`
    /// are dropped and counted.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_vectored(&mut [IoSliceMut::new(buf)])
    }

    /// [`FrameChannel::recv`] into several buffers, filled in order.
    pub fn recv_vectored(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        recv_on(&self.fd, &mut self.stats, iov)
    }

    /// Sends `msg` (a header and a frame) as one message; `WouldBlock` when
    /// the channel is full (the message is then not sent), `BrokenPipe`
    /// when the other end has closed. An empty message is refused.
    pub fn send(&mut self, msg: &[u8]) -> io::Result<usize> {
        self.send_vectored(&[IoSlice::new(msg)])
    }

    /// Sends `frame` behind `hdr`, as one message.
    pub fn send_frame(&mut self, hdr: &VnetHdr, frame: &[u8]) -> io::Result<usize> {
        self.send_vectored(&[IoSlice::new(&hdr.to_bytes()), IoSlice::new(frame)])
    }

    /// [`FrameChannel::send`] of a message in several pieces.
    pub fn send_vectored(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        if iov.iter().all(|s| s.is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty message is never sent",
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

/// One recvmsg on `fd` into `iov`, counted in `stats`; messages cut short
/// are dropped and the next one read.
fn recv_on(fd: &OwnedFd, stats: &mut FrameStats, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
    loop {
        // SAFETY: msghdr is plain data; all zeroes is a valid (empty)
        // value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSliceMut is ABI-compatible with iovec on Unix.
        msg.msg_iov = iov.as_mut_ptr().cast();
        msg.msg_iovlen = iov.len();
        // SAFETY: the iovecs point into live buffers borrowed mutably for
        // the call; no control buffer is given.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            stats.truncated += 1;
            continue;
        }
        if n > 0 {
            stats.received += 1;
        }
        return Ok(n as usize);
    }
}
