//! Messages for the guest that the frame channel could not take yet.
//!
//! libslirp sends whatever its TCP window allows in one go, and the NIC
//! process drains the channel only as fast as the guest gives it receive
//! buffers. Dropping what does not fit would make every burst cost a TCP
//! retransmission and a halved window; so, as QEMU queues packets for a NIC
//! that cannot take them, the messages (a header and a frame, which may be
//! a GSO frame of many segments) wait here (in order, ahead of any new
//! one) until the channel is writable again. The queue is bounded: past
//! [`Backlog::CAPACITY`] messages or [`Backlog::CAPACITY_BYTES`] bytes they
//! are dropped, as a full NIC ring would. Buffers are kept for reuse:
//! nothing is allocated per message once the queue has been as deep as it
//! gets.

use std::collections::VecDeque;
use std::io;

use crate::backend::frames::FrameChannel;
use crate::net_offload::VnetHdr;
use crate::virtio::net::HDR_LEN;

/// Messages waiting for the channel, oldest first.
#[derive(Debug, Default)]
pub struct Backlog {
    queued: VecDeque<Vec<u8>>,
    /// Bytes in `queued`.
    bytes: usize,
    spare: Vec<Vec<u8>>,
}

/// What happened to a message handed to [`Backlog::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// In the channel.
    Now,
    /// Queued until the channel is writable.
    Later,
    /// Dropped: the queue is full, or the channel is closed or failing.
    Dropped,
}

impl Backlog {
    /// Messages the queue holds at most.
    pub const CAPACITY: usize = 512;
    /// Bytes the queue holds at most: as many as [`Backlog::CAPACITY`]
    /// full-size wire frames (about 780 KiB), whatever the messages.
    pub const CAPACITY_BYTES: usize = Self::CAPACITY * (HDR_LEN + super::MAX_FRAME);

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Sends `frame` behind `hdr` through `channel`, or queues it behind
    /// the messages already waiting.
    pub fn send(&mut self, channel: &mut FrameChannel, hdr: &VnetHdr, frame: &[u8]) -> Sent {
        if self.queued.is_empty() {
            match channel.send_frame(hdr, frame) {
                Ok(_) => return Sent::Now,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Sent::Dropped,
            }
        }
        let len = HDR_LEN + frame.len();
        if self.queued.len() >= Self::CAPACITY || self.bytes + len > Self::CAPACITY_BYTES {
            return Sent::Dropped;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&hdr.to_bytes());
        buf.extend_from_slice(frame);
        self.queued.push_back(buf);
        self.bytes += len;
        Sent::Later
    }

    /// Sends queued messages until the channel is full again: how many
    /// went, and how many were dropped because the channel failed (then
    /// all).
    pub fn flush(&mut self, channel: &mut FrameChannel) -> (u64, u64) {
        let mut sent = 0;
        while let Some(msg) = self.queued.front() {
            match channel.send(msg) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    let dropped = self.queued.len() as u64;
                    self.spare.extend(self.queued.drain(..));
                    self.bytes = 0;
                    return (sent, dropped);
                }
            }
            if let Some(buf) = self.queued.pop_front() {
                self.bytes -= buf.len();
                self.spare.push(buf);
            }
        }
        (sent, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Vec<u8> {
        vec![n; 1514]
    }

    /// Fills `tx` until the channel refuses; returns how many went.
    fn fill(tx: &mut FrameChannel) -> usize {
        let mut n = 0;
        while tx.send(&frame(0)).is_ok() {
            n += 1;
        }
        n
    }

    #[test]
    fn frames_wait_in_order_and_follow_when_there_is_room() {
        let (mut tx, mut rx) = FrameChannel::pair().unwrap();
        let mut backlog = Backlog::default();
        assert_eq!(backlog.send(&mut tx, &VnetHdr::NONE, &frame(1)), Sent::Now);
        let filled = fill(&mut tx);
        assert_eq!(
            backlog.send(&mut tx, &VnetHdr::NONE, &frame(2)),
            Sent::Later
        );
        assert_eq!(
            backlog.send(&mut tx, &VnetHdr::NONE, &frame(3)),
            Sent::Later
        );
        assert_eq!(backlog.len(), 2);
        // Nothing moves while the channel is still full.
        assert_eq!(backlog.flush(&mut tx), (0, 0));

        let mut buf = vec![0u8; 2048];
        assert_eq!(rx.recv(&mut buf).unwrap(), HDR_LEN + 1514);
        assert_eq!(buf[HDR_LEN], 1);
        for _ in 0..filled {
            rx.recv(&mut buf).unwrap();
        }
        assert_eq!(backlog.flush(&mut tx), (2, 0));
        assert!(backlog.is_empty());
        rx.recv(&mut buf).unwrap();
        assert_eq!(buf[HDR_LEN], 2);
        rx.recv(&mut buf).unwrap();
        assert_eq!(buf[HDR_LEN], 3);
        assert_eq!(
            rx.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn a_new_frame_never_overtakes_waiting_ones() {
        let (mut tx, mut rx) = FrameChannel::pair().unwrap();
        let mut backlog = Backlog::default();
        let filled = fill(&mut tx);
        assert_eq!(
            backlog.send(&mut tx, &VnetHdr::NONE, &frame(7)),
            Sent::Later
        );
        let mut buf = vec![0u8; 2048];
        rx.recv(&mut buf).unwrap();
        // Room for one now, but frame 8 must queue behind frame 7.
        assert_eq!(
            backlog.send(&mut tx, &VnetHdr::NONE, &frame(8)),
            Sent::Later
        );
        for _ in 1..filled {
            rx.recv(&mut buf).unwrap();
        }
        assert_eq!(backlog.flush(&mut tx), (2, 0));
        rx.recv(&mut buf).unwrap();
        assert_eq!(buf[HDR_LEN], 7);
    }

    #[test]
    fn the_queue_is_bounded_and_a_closed_channel_drops_it() {
        let (mut tx, rx) = FrameChannel::pair().unwrap();
        let mut backlog = Backlog::default();
        fill(&mut tx);
        for _ in 0..Backlog::CAPACITY {
            assert_eq!(
                backlog.send(&mut tx, &VnetHdr::NONE, &frame(1)),
                Sent::Later
            );
        }
        assert_eq!(
            backlog.send(&mut tx, &VnetHdr::NONE, &frame(1)),
            Sent::Dropped
        );
        drop(rx);
        assert_eq!(backlog.flush(&mut tx), (0, Backlog::CAPACITY as u64));
        assert!(backlog.is_empty());
    }

    #[test]
    fn the_queue_holds_so_many_bytes_whatever_the_messages() {
        let (mut tx, _rx) = FrameChannel::pair().unwrap();
        let mut backlog = Backlog::default();
        fill(&mut tx);
        let big = vec![1u8; 65000];
        let fits = Backlog::CAPACITY_BYTES / (HDR_LEN + big.len());
        for _ in 0..fits {
            assert_eq!(backlog.send(&mut tx, &VnetHdr::NONE, &big), Sent::Later);
        }
        assert_eq!(backlog.send(&mut tx, &VnetHdr::NONE, &big), Sent::Dropped);
        // A smaller one still fits.
        let left = Backlog::CAPACITY_BYTES - fits * (HDR_LEN + big.len());
        let small = vec![2u8; left - HDR_LEN];
        assert_eq!(backlog.send(&mut tx, &VnetHdr::NONE, &small), Sent::Later);
        assert_eq!(backlog.send(&mut tx, &VnetHdr::NONE, &[3]), Sent::Dropped);
        assert_eq!(backlog.len(), fits + 1);
    }
}
