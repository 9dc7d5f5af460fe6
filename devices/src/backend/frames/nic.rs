//! The NIC's end of a frame channel, as the NIC's [`NetBackend`].
//!
//! Headers pass between the NIC and the channel as they are (a virtio-net
//! NIC hands its driver's on; e1000 writes zero ones), and the channel
//! offers every offload the protocol carries. What comes from the backend
//! is checked, then handed on only as far as the NIC accepts it (the RX
//! offloads it turned on with [`NetBackend::set_offloads`]; none until
//! then, e1000 never): a GSO frame it does not take (or that does not fit
//! the buffers it gives) is cut into segments here, handed out one per
//! read behind a zero header; a checksum it does not take is completed
//! here. A NIC whose buffers take any message (virtio-net with GSO)
//! receives it straight into them, checked there and copied out only if it
//! must be cut or completed. Messages, segments and the state between
//! reads live in buffers kept for reuse: nothing is allocated per frame.

use std::io::{self, IoSlice, IoSliceMut};

use super::{recv_on, FrameChannel};
use crate::net_offload::hdr::{GSO_ECN, GSO_TCPV4};
use crate::net_offload::{complete_checksum, Error, Segments, VnetHdr};
use crate::virtio::net::features::{
    CSUM, GUEST_CSUM, GUEST_ECN, GUEST_OFFLOADS, GUEST_TSO4, GUEST_TSO6, HOST_TSO4, HOST_TSO6,
};
use crate::virtio::net::{NetBackend, HDR_LEN, MAX_FRAME};

/// The offloads a frame channel offers its NIC.
pub const OFFLOADS: u64 = CSUM | HOST_TSO4 | HOST_TSO6 | GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6;

/// The shortest frame handed on: an Ethernet header.
const MIN_FRAME: usize = 14;

/// What the NIC's end keeps between reads.
#[derive(Debug, Default)]
pub(super) struct Inbound {
    /// The RX offloads (GUEST_*) the NIC takes.
    accepted: u64,
    /// The last message received; sized for the longest on first use.
    msg: Vec<u8>,
    /// A GSO frame in `msg` (of this length) being handed out a segment
    /// at a time: how it splits, and the next segment.
    split: Option<(Segments, usize, usize)>,
    /// The segment being handed out.
    seg: Vec<u8>,
}

/// The beginning of a message looked at in place: the header and room
/// for the frame's Ethernet, IP and TCP headers with options.
const HEAD: usize = HDR_LEN + 18 + 60 + 60;

/// What became of a message.
enum Taken {
    /// It goes to the NIC as it is now.
    Whole,
    /// Its segments go, one per read.
    Split,
    /// It does not fit the NIC's buffers.
    TooLong,
}

impl Inbound {
    /// Whether the NIC takes GSO frames like the one `hdr` heads.
    fn takes_gso(&self, hdr: &VnetHdr) -> bool {
        let tso = if hdr.gso_type & !GSO_ECN == GSO_TCPV4 {
            GUEST_TSO4
        } else {
            GUEST_TSO6
        };
        let need = tso
            | if hdr.gso_type & GSO_ECN != 0 {
                GUEST_ECN
            } else {
                0
            };
        self.accepted & need == need
    }

    /// Checks the `len`-byte message in `msg` and readies it for a NIC
    /// that gives `room` bytes of buffers.
    fn take(&mut self, len: usize, room: usize) -> Result<Taken, Error> {
        let hdr = VnetHdr::parse(&self.msg[..len])?;
        if len < HDR_LEN + MIN_FRAME {
            return Err(Error::Short(len));
        }
        let frame = &mut self.msg[HDR_LEN..len];
        if hdr.is_gso() {
            let split = Segments::new(&hdr, frame)?;
            if self.takes_gso(&hdr) && len <= room {
                return Ok(Taken::Whole);
            }
            self.split = Some((split, len, 0));
            return Ok(Taken::Split);
        }
        if hdr.needs_csum() && self.accepted & GUEST_CSUM == 0 {
            complete_checksum(&hdr, frame)?;
            self.msg[..HDR_LEN].fill(0);
        } else {
            hdr.check_csum(frame.len())?;
        }
        Ok(if len <= room {
            Taken::Whole
        } else {
            Taken::TooLong
        })
    }

    /// Whether the `len`-byte message that `iov` holds may go to the NIC
    /// as it is, checked as [`Inbound::take`] does; if not, it is copied
    /// to `msg` for `take` to deal with.
    fn take_in_place(&mut self, iov: &[IoSliceMut<'_>], len: usize) -> bool {
        let mut buf = [0u8; HEAD];
        let n = gather(iov, &mut buf[..len.min(HEAD)]);
        let head = &buf[..n];
        let fits = match VnetHdr::parse(head) {
            Ok(_) if len < HDR_LEN + MIN_FRAME => false,
            Ok(hdr) if hdr.is_gso() => {
                self.takes_gso(&hdr)
                    && Segments::of_headers(&hdr, &head[HDR_LEN..], len - HDR_LEN).is_ok()
            }
            Ok(hdr) => {
                (!hdr.needs_csum() || self.accepted & GUEST_CSUM != 0)
                    && hdr.check_csum(len - HDR_LEN).is_ok()
            }
            Err(_) => false,
        };
        if !fits {
            let n = gather(iov, &mut self.msg[..len]);
            debug_assert_eq!(n, len);
        }
        fits
    }

    /// The next segment of the frame being split, behind a zero header,
    /// into `iov` (`room` bytes): its length, or None when there is none
    /// left. Segments too long for the buffers are dropped and counted in
    /// `truncated`.
    fn next_segment(
        &mut self,
        iov: &mut [IoSliceMut<'_>],
        room: usize,
        truncated: &mut u64,
    ) -> Option<usize> {
        while let Some((split, len, k)) = self.split.as_mut() {
            if *k >= split.count() {
                break;
            }
            let built = split.build(&self.msg[HDR_LEN..*len], *k, &mut self.seg);
            *k += 1;
            if built.is_err() {
                break;
            }
            if HDR_LEN + self.seg.len() > room {
                *truncated += 1;
                continue;
            }
            return Some(scatter(iov, &[&[0; HDR_LEN], &self.seg]));
        }
        self.split = None;
        None
    }
}

/// Copies the beginning of what the buffers of `iov` hold into `out`: how
/// many bytes went.
fn gather(iov: &[IoSliceMut<'_>], out: &mut [u8]) -> usize {
    let mut copied = 0;
    for buf in iov {
        let n = buf.len().min(out.len() - copied);
        out[copied..copied + n].copy_from_slice(&buf[..n]);
        copied += n;
        if copied == out.len() {
            break;
        }
    }
    copied
}

/// Copies `parts`, one after the other, into the buffers of `iov`: how
/// many bytes went.
fn scatter(iov: &mut [IoSliceMut<'_>], parts: &[&[u8]]) -> usize {
    let mut bufs = iov.iter_mut();
    let mut dst: &mut [u8] = &mut [];
    let mut copied = 0;
    for &part in parts {
        let mut src = part;
        while !src.is_empty() {
            if dst.is_empty() {
                match bufs.next() {
                    Some(buf) => dst = &mut buf[..],
                    None => return copied,
                }
            }
            let n = dst.len().min(src.len());
            let (head, rest) = std::mem::take(&mut dst).split_at_mut(n);
            head.copy_from_slice(&src[..n]);
            dst = rest;
            src = &src[n..];
            copied += n;
        }
    }
    copied
}

impl NetBackend for FrameChannel {
    fn readv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let room = iov.iter().map(|b| b.len()).sum();
        let FrameChannel { fd, stats, inbound } = self;
        inbound.msg.resize(HDR_LEN + MAX_FRAME, 0);
        loop {
            if let Some(n) = inbound.next_segment(iov, room, &mut stats.truncated) {
                return Ok(n);
            }
            // Room for any message: received straight into the NIC's
            // buffers, and copied out only if it cannot stay there as it
            // is. Else received here first.
            let direct = room >= HDR_LEN + MAX_FRAME;
            let len = if direct {
                recv_on(fd, stats, iov)?
            } else {
                recv_on(fd, stats, &mut [IoSliceMut::new(&mut inbound.msg)])?
            };
            if len == 0 {
                return Ok(0);
            }
            if direct && inbound.take_in_place(iov, len) {
                return Ok(len);
            }
            match inbound.take(len, room) {
                Ok(Taken::Whole) => return Ok(scatter(iov, &[&inbound.msg[..len]])),
                Ok(Taken::Split) => stats.segmented += 1,
                Ok(Taken::TooLong) => stats.truncated += 1,
                Err(e) => {
                    stats.bad_headers += 1;
                    if stats.bad_headers.is_power_of_two() {
                        log::warn!(
                            "frame channel: from the backend: {e}; dropped ({} such)",
                            stats.bad_headers
                        );
                    }
                }
            }
        }
    }

    fn writev(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_vectored(iov)
    }

    fn vnet_hdr_len(&self) -> usize {
        HDR_LEN
    }

    fn offloads(&self) -> u64 {
        OFFLOADS
    }

    fn set_offloads(&mut self, acked: u64) -> io::Result<()> {
        self.inbound.accepted = acked & GUEST_OFFLOADS;
        Ok(())
    }
}
