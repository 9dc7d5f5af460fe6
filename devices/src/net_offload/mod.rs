//! Network offloads done in software, shared by the NIC models and the
//! frame channel: the Internet checksum, the virtio-net header
//! (`virtio_net_hdr_v1`) that carries a frame's offload requests, TCP
//! segmentation of a GSO frame ([`Segments`]) and its inverse, the merging
//! of a run of wire frames into GSO frames ([`Coalescer`]), IPv4
//! fragmentation ([`Fragments`]).
//!
//! Everything here takes its input for hostile: every offset is checked,
//! no loop runs longer than the frame is long, nothing panics; what cannot
//! be handled is an [`Error`] for the caller to count before dropping the
//! frame.

mod coalesce;
mod fragment;
#[cfg(test)]
mod fragment_tests;
pub mod hdr;
mod layout;
mod segment;
#[cfg(test)]
pub(crate) mod tests;

pub use coalesce::Coalescer;
pub use fragment::Fragments;
pub use hdr::{complete_checksum, VnetHdr};
pub use layout::{tcp_flags, TcpLayout};
pub use segment::Segments;

/// What is wrong with a frame or its virtio-net header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("a message of {0} bytes is shorter than a virtio-net header")]
    Short(usize),
    #[error("a frame of {0} bytes is longer than 65550")]
    TooLong(usize),
    #[error("unknown header flags {0:#04x}")]
    Flags(u8),
    #[error("GSO type {0:#04x}: only TCPv4 and TCPv6 are done")]
    GsoType(u8),
    #[error("GSO size 0")]
    GsoSize,
    #[error("header length {hdr_len} is beyond the {len}-byte frame")]
    HdrLen { hdr_len: u16, len: usize },
    #[error("checksum at {start}+{offset} lies outside the {len}-byte frame")]
    Checksum { start: u16, offset: u16, len: usize },
    #[error("GSO type {0:#04x} does not match the packet's IP version")]
    GsoMismatch(u8),
    #[error("{0}")]
    Packet(&'static str),
}

/// Result with the offload [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Adds the big-endian 16-bit words of `data` (odd last byte padded with
/// zero) to `sum`, without folding. The result is congruent to the plain
/// sum modulo 0xffff, which is all [`fold`] looks at, and not always equal
/// to it: eight bytes at a time are added in the machine's byte order and
/// the order of the folded total put right once (the ones' complement sum
/// does not depend on byte order, RFC 1071 section 2), because the frames
/// summed are up to 64 KiB and two bytes at a time is four times slower.
pub fn add_words(sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    let (mut lanes, mut carries) = (0u64, 0u64);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let (next, carried) = lanes.overflowing_add(u64::from_ne_bytes(word));
        lanes = next;
        carries += u64::from(carried);
    }
    // A carry out of bit 63 is worth 2^64, which is 1 modulo 0xffff.
    let native = (lanes >> 48) + (lanes >> 32 & 0xffff) + (lanes >> 16 & 0xffff) + (lanes & 0xffff);
    let native = fold(native + carries);
    // The folded sum's bytes as they would lie in memory, read big-endian.
    let mut sum = sum + u64::from(u16::from_be_bytes(native.to_ne_bytes()));
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for c in &mut pairs {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// RFC 1624 (eqn. 3): the checksum `sum` of data in which the 16-bit words
/// `old` became `new` (of the same length).
pub fn adjust_checksum(sum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    let mut acc = u64::from(!sum);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += u64::from(!u16::from_be_bytes([o[0], o[1]]));
        acc += u64::from(u16::from_be_bytes([n[0], n[1]]));
    }
    !fold(acc)
}

/// Folds a sum to 16 bits, ones' complement.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The big-endian 16-bit word at `at`; 0 outside `b`.
pub fn get16(b: &[u8], at: usize) -> u16 {
    match b.get(at..).and_then(|s| s.get(..2)) {
        Some(w) => u16::from_be_bytes([w[0], w[1]]),
        None => 0,
    }
}

/// Stores `v` big-endian at `at`; nothing outside `b`.
pub fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(w) = b.get_mut(at..).and_then(|s| s.get_mut(..2)) {
        w.copy_from_slice(&v.to_be_bytes());
    }
}

/// Computes the Internet checksum of `frame[css..=cse]` (to the end when
/// `cse` is 0) with the checksum field as it is, and stores it at `cso`;
/// a 0 result goes out as 0xffff, as UDP needs. Offsets out of range make
/// it do nothing, as the hardware ignores them.
pub fn insert_checksum(frame: &mut [u8], css: usize, cso: usize, cse: usize) {
    let end = if cse == 0 {
        frame.len()
    } else {
        frame.len().min(cse.saturating_add(1))
    };
    if css >= end || cso.saturating_add(2) > frame.len() {
        return;
    }
    let sum = !fold(add_words(0, &frame[css..end]));
    put16(frame, cso, if sum == 0 { 0xffff } else { sum });
}
