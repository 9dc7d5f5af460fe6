//! A message channel: one end of a `SOCK_SEQPACKET` Unix socketpair.
//!
//! One message is one datagram: the bincode encoding of one value, with any
//! file descriptors attached as `SCM_RIGHTS` control data. Sequenced packets
//! keep message boundaries and order, and a send either delivers the whole
//! message or fails, so there is no framing to get wrong and nothing for a
//! hostile peer to desynchronise.

use std::fmt;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bincode::error::EncodeError;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    getsockopt, sendmsg, socketpair, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag,
    SockType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// The largest message, in bytes, that a channel sends or accepts.
///
/// Every message moatvm sends is far smaller (a register access is a few
/// dozen bytes); the bound is there so that a hostile peer cannot make the
/// receiver allocate or decode without limit.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// The most file descriptors one message may carry.
pub const MAX_FDS: usize = 32;

/// The bincode configuration of every message: little-endian, variable-length
/// integers, and a decode limit of [`MAX_MESSAGE_SIZE`] so that no length
/// prefix from a peer can claim more memory than a message can hold.
pub type WireConfig = Configuration<LittleEndian, Varint, Limit<MAX_MESSAGE_SIZE>>;

/// The one bincode configuration used on every channel.
pub const fn config() -> WireConfig {
    bincode::config::standard().with_limit::<MAX_MESSAGE_SIZE>()
}

/// Bytes of control buffer for [`MAX_FDS`] descriptors in one `SCM_RIGHTS`
/// message.
// SAFETY: CMSG_SPACE is pure arithmetic on its argument (alignment rounding);
// it touches no memory.
const CMSG_BUFFER_LEN: usize =
    unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<RawFd>()) as u32) } as usize;

/// A control buffer aligned for `cmsghdr` (whose alignment is that of
/// `size_t`).
#[repr(C, align(8))]
struct CmsgBuffer([u8; CMSG_BUFFER_LEN]);

/// One end of a message channel.
///
/// All methods take `&self`, so a channel can be shared between threads:
/// each send and each receive is atomic (whole messages, never interleaved).
/// A request/reply exchange from several threads must go through
/// [`Channel::call`], which keeps each reply with its request; on an end
/// used that way, no other thread may receive (it could take a reply).
///
/// The send and receive buffers are allocated once, on first use, and reused.
///
/// With a deadline ([`Channel::with_deadline`]) neither a send nor a
/// [`Channel::call`] waits longer than that for an unresponsive peer: the
/// first one that would is [`Error::TimedOut`], and from then on the
/// channel is given up (every send and call fails at once with
/// [`Error::GivenUp`]), so that a late
/// reply is never taken for the answer to a later request.
pub struct Channel {
    fd: OwnedFd,
    tx: Mutex<Vec<u8>>,
    rx: Mutex<Vec<u8>>,
    call: Mutex<()>,
    deadline: Option<Duration>,
    given_up: AtomicBool,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

/// Locks a mutex whose data has no invariant a panic could break (a scratch
/// buffer, or nothing), so a poisoned lock is as good as a healthy one.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Empties `buf` and makes room for a whole message in it. The room is
/// allocated once and never written here: pages nobody writes stay out of
/// the process's memory, and messages are mostly a few dozen bytes.
fn room(buf: &mut Vec<u8>) {
    buf.clear();
    buf.reserve_exact(MAX_MESSAGE_SIZE);
}

impl Channel {
    /// A connected pair of channel ends, both close-on-exec.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::io("socketpair", e.into()))?;
        Ok((Channel::wrap(a), Channel::wrap(b)))
    }

    /// Takes over a descriptor that must be a `SOCK_SEQPACKET` socket (for
    /// example one end of [`Channel::pair`] inherited across exec).
    pub fn from_fd(fd: OwnedFd) -> Result<Channel> {
        let ty = getsockopt(&fd, sockopt::SockType)
            .map_err(|e| Error::io("getsockopt(SO_TYPE)", e.into()))?;
        if ty != SockType::SeqPacket {
            return Err(Error::io(
                "from_fd",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("descriptor is a {ty:?} socket, not SOCK_SEQPACKET"),
                ),
            ));
        }
        Ok(Channel::wrap(fd))
    }

    fn wrap(fd: OwnedFd) -> Channel {
        Channel {
            fd,
            tx: Mutex::new(Vec::new()),
            rx: Mutex::new(Vec::new()),
            call: Mutex::new(()),
            deadline: None,
            given_up: AtomicBool::new(false),
        }
    }

    /// Bounds how long a send or a call waits for the peer (see the type's
    /// documentation).
    pub fn with_deadline(mut self, deadline: Duration) -> Channel {
        self.deadline = Some(deadline);
        self
    }

    /// Whether a deadline passed and the channel was given up.
    pub fn given_up(&self) -> bool {
        self.given_up.load(Ordering::Relaxed)
    }

    fn check_given_up(&self) -> Result<()> {
        if self.given_up() {
            return Err(Error::GivenUp);
        }
        Ok(())
    }

    fn give_up(&self, after: Duration) -> Error {
        self.given_up.store(true, Ordering::Relaxed);
        Error::TimedOut { after }
    }

    /// Gives the socket back.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Sends one message, with `fds` attached (the peer receives duplicates;
    /// the caller keeps its own). Blocks while the peer's queue is full.
    pub fn send<T: Serialize + ?Sized>(&self, msg: &T, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.check_given_up()?;
        if fds.len() > MAX_FDS {
            return Err(Error::TooManyFds {
                count: fds.len(),
                max: MAX_FDS,
            });
        }
        let mut tx = lock(&self.tx);
        // Encoded into the Vec as it grows (only as far as the message
        // reaches), then checked against the limit.
        tx.clear();
        let len = bincode::serde::encode_into_std_write(msg, &mut *tx, config())
            .map_err(Error::Encode)?;
        if len > MAX_MESSAGE_SIZE {
            return Err(Error::TooLarge {
                max: MAX_MESSAGE_SIZE,
            });
        }
        let buf = &tx[..];
        if len == 0 {
            // An empty datagram reads as a hang-up on the other side.
            return Err(Error::Encode(EncodeError::Other(
                "a message must encode to at least one byte",
            )));
        }

        let mut raw = [0 as RawFd; MAX_FDS];
        for (slot, fd) in raw.iter_mut().zip(fds) {
            *slot = fd.as_raw_fd();
        }
        let rights = [ControlMessage::ScmRights(&raw[..fds.len()])];
        let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
        let iov = [IoSlice::new(&buf[..len])];
        let (flags, until) = match self.deadline {
            Some(d) => (
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                Some(std::time::Instant::now() + d),
            ),
            None => (MsgFlags::MSG_NOSIGNAL, None),
        };
        loop {
            match sendmsg::<()>(self.fd.as_raw_fd(), &iov, cmsgs, flags, None) {
                Ok(sent) if sent == len => return Ok(()),
                Ok(sent) => {
                    return Err(Error::io(
                        "sendmsg",
                        io::Error::other(format!("sent {sent} of {len} bytes")),
                    ))
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    // Only with a deadline (MSG_DONTWAIT): wait for room.
                    let (Some(until), Some(after)) = (until, self.deadline) else {
                        return Err(Error::io("sendmsg", Errno::EAGAIN.into()));
                    };
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(self.give_up(after));
                    }
                    let ms =
                        PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
                    let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLOUT)];
                    match poll(&mut fds, ms) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(e) => return Err(Error::io("poll", e.into())),
                    }
                }
                Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => {
                    return Err(Error::Closed)
                }
                Err(Errno::EMSGSIZE) => {
                    return Err(Error::TooLarge {
                        max: MAX_MESSAGE_SIZE,
                    })
                }
                Err(e) => return Err(Error::io("sendmsg", e.into())),
            }
        }
    }

    /// Receives one message and the descriptors that came with it (each
    /// close-on-exec). Blocks until a message or a hang-up arrives.
    ///
    /// The peer hanging up is [`Error::Closed`]. A message that cannot be
    /// decoded as a `T` is an error and is dropped whole, its descriptors
    /// closed; the channel stays usable for the next message.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<(T, Vec<OwnedFd>)> {
        loop {
            if let Some(msg) = self.recv_inner(false)? {
                return Ok(msg);
            }
        }
    }

    /// Like [`Channel::recv`], but returns `Ok(None)` at once when no message
    /// is waiting. Pair it with the descriptor ([`AsFd`]) in an epoll set.
    pub fn try_recv<T: DeserializeOwned>(&self) -> Result<Option<(T, Vec<OwnedFd>)>> {
        self.recv_inner(true)
    }

    /// Like [`Channel::recv`], but gives up with `Ok(None)` after `timeout`.
    pub fn recv_timeout<T: DeserializeOwned>(
        &self,
        timeout: Duration,
    ) -> Result<Option<(T, Vec<OwnedFd>)>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(msg) = self.recv_inner(true)? {
                return Ok(Some(msg));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ms = PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::io("poll", e.into())),
            }
        }
    }

    /// Sends a request and waits for its reply, holding the channel for the
    /// whole exchange so that concurrent callers each get their own reply.
    pub fn call<Q: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        request: &Q,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(R, Vec<OwnedFd>)> {
        let _exchange = lock(&self.call);
        self.send(request, fds)?;
        match self.deadline {
            None => self.recv(),
            Some(after) => match self.recv_timeout(after)? {
                Some(reply) => Ok(reply),
                None => Err(self.give_up(after)),
            },
        }
    }

    fn recv_inner<T: DeserializeOwned>(&self, dontwait: bool) -> Result<Option<(T, Vec<OwnedFd>)>> {
        let mut rx = lock(&self.rx);
        room(&mut rx);
        let Some((len, fds)) = self.recv_raw(&mut rx, dontwait)? else {
            return Ok(None);
        };
        let (msg, used) = bincode::serde::decode_from_slice::<T, _>(&rx[..len], config())
            .map_err(Error::Decode)?;
        if used != len {
            return Err(Error::TrailingBytes {
                used,
                extra: len - used,
            });
        }
        Ok(Some((msg, fds)))
    }

    /// One `recvmsg` into the spare capacity of the empty `buf`, which then
    /// holds the datagram: its length and its descriptors, or `None` when
    /// `dontwait` and nothing is queued.
    fn recv_raw(&self, buf: &mut Vec<u8>, dontwait: bool) -> Result<Option<(usize, Vec<OwnedFd>)>> {
        debug_assert!(buf.is_empty());
        let mut control = CmsgBuffer([0; CMSG_BUFFER_LEN]);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.capacity(),
        };
        // SAFETY: msghdr is a plain C struct for which all zeroes is a valid
        // value (no address, no buffers).
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.0.as_mut_ptr().cast();
        hdr.msg_controllen = CMSG_BUFFER_LEN as _;
        let flags = libc::MSG_CMSG_CLOEXEC | if dontwait { libc::MSG_DONTWAIT } else { 0 };

        let len = loop {
            // SAFETY: `hdr` points at `iov`, which describes `buf`'s
            // allocation (valid for `buf.capacity()` writable bytes), and at
            // `control` (valid for
            // CMSG_BUFFER_LEN writable bytes); all three outlive the call and
            // nothing else uses them meanwhile.
            let r = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut hdr, flags) };
            if r >= 0 {
                let len = r as usize;
                // SAFETY: the kernel wrote `len` bytes at the start of the
                // allocation (`len <= capacity`: recvmsg without MSG_TRUNC
                // in its flags returns at most the buffer's length), so they
                // are initialised.
                unsafe { buf.set_len(len) };
                break len;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) if dontwait => return Ok(None),
                Some(libc::ECONNRESET) => return Err(Error::Closed),
                _ => return Err(Error::io("recvmsg", err)),
            }
        };

        // Take ownership of every descriptor before looking at anything else,
        // so that whatever error follows closes them instead of leaking them.
        let mut fds = Vec::new();
        let mut unexpected = None;
        // SAFETY: after a successful recvmsg, `hdr.msg_control` and
        // `hdr.msg_controllen` describe control messages the kernel wrote
        // into `control`; CMSG_FIRSTHDR/CMSG_NXTHDR only return headers that
        // lie wholly inside that length, or null.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
        while !cmsg.is_null() {
            // SAFETY: non-null, so it points at a complete, aligned cmsghdr
            // inside `control` (see above).
            let (level, kind, cmsg_len) = unsafe {
                (
                    (*cmsg).cmsg_level,
                    (*cmsg).cmsg_type,
                    (*cmsg).cmsg_len as usize,
                )
            };
            if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                // SAFETY: CMSG_LEN is arithmetic only.
                let header = unsafe { libc::CMSG_LEN(0) } as usize;
                let count = cmsg_len.saturating_sub(header) / size_of::<RawFd>();
                // SAFETY: the data of this control message starts at
                // CMSG_DATA and holds `count` descriptors, all within
                // `cmsg_len` bytes of the header, inside `control`.
                let data = unsafe { libc::CMSG_DATA(cmsg) } as *const RawFd;
                for i in 0..count {
                    // SAFETY: `i < count`, so the read stays inside this
                    // message's data; read_unaligned makes no alignment
                    // assumption about CMSG_DATA.
                    let raw = unsafe { data.add(i).read_unaligned() };
                    // SAFETY: the kernel has just installed `raw` in this
                    // process's descriptor table for this message alone;
                    // nothing else owns or will close it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            } else {
                unexpected = Some((level, kind));
            }
            // SAFETY: as for CMSG_FIRSTHDR; `cmsg` is a header returned by it
            // or by a previous CMSG_NXTHDR on the same `hdr`.
            cmsg = unsafe { libc::CMSG_NXTHDR(&hdr, cmsg) };
        }

        if hdr.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(Error::ControlTruncated { max: MAX_FDS });
        }
        if hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(Error::Truncated {
                max: MAX_MESSAGE_SIZE,
            });
        }
        if let Some((level, kind)) = unexpected {
            return Err(Error::UnexpectedControl { level, kind });
        }
        if len == 0 {
            // End of stream: the peer is gone. (We never send empty
            // messages, so an empty datagram is only ever a hang-up.)
            return Err(Error::Closed);
        }
        Ok(Some((len, fds)))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl IntoRawFd for Channel {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}
