//! The virtio-net header (`virtio_net_hdr_v1`, virtio 1.x 5.1.6): twelve
//! little-endian bytes before a frame, saying what the sender left to do
//! (a checksum, a segmentation) or, to a receiver, what was done.

use super::{insert_checksum, Error, Result, TcpLayout};
use crate::virtio::net::{HDR_LEN, MAX_FRAME};

/// The checksum from `csum_start` to the end of the frame is left to do;
/// the field at `csum_start + csum_offset` holds the pseudo-header's sum.
pub const NEEDS_CSUM: u8 = 1;
/// (To a receiver) the checksums were verified.
pub const DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
/// With a TCP GSO type: the first segment carries CWR.
pub const GSO_ECN: u8 = 0x80;

/// One `virtio_net_hdr_v1`, its fields as they are on the wire (in host
/// order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

impl VnetHdr {
    /// The header of a wire frame: nothing left to do.
    pub const NONE: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
        num_buffers: 0,
    };

    /// The header at the start of `msg` (a header and a frame): the flags
    /// and GSO type must be among those known (NEEDS_CSUM, DATA_VALID;
    /// none, TCPv4 or TCPv6, the latter two possibly with ECN). Offsets
    /// are checked against the frame when they are used.
    pub fn parse(msg: &[u8]) -> Result<VnetHdr> {
        let Some(b) = msg.get(..HDR_LEN) else {
            return Err(Error::Short(msg.len()));
        };
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let hdr = VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
            num_buffers: le(10),
        };
        if hdr.flags & !(NEEDS_CSUM | DATA_VALID) != 0 {
            return Err(Error::Flags(hdr.flags));
        }
        match hdr.gso_type & !GSO_ECN {
            GSO_TCPV4 | GSO_TCPV6 => {}
            GSO_NONE if hdr.gso_type == GSO_NONE => {}
            _ => return Err(Error::GsoType(hdr.gso_type)),
        }
        Ok(hdr)
    }

    /// The header as it goes on the wire.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            self.num_buffers,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// The header of a TCP GSO frame laid out as `layout` says, its
    /// checksum left to do: what [`super::Coalescer`] makes.
    pub fn tcp_gso(layout: &TcpLayout, gso_size: u16) -> VnetHdr {
        VnetHdr {
            flags: NEEDS_CSUM,
            gso_type: if layout.ipv4 { GSO_TCPV4 } else { GSO_TCPV6 },
            // Offsets inside a frame of at most MAX_FRAME bytes.
            hdr_len: layout.payload as u16,
            gso_size,
            csum_start: layout.l4 as u16,
            csum_offset: 16,
            num_buffers: 0,
        }
    }

    pub fn needs_csum(&self) -> bool {
        self.flags & NEEDS_CSUM != 0
    }

    /// A GSO frame (TCPv4 or TCPv6).
    pub fn is_gso(&self) -> bool {
        self.gso_type != GSO_NONE
    }

    /// Checks that the checksum NEEDS_CSUM asks for lies inside a frame of
    /// `len` bytes (true of any header without NEEDS_CSUM).
    pub fn check_csum(&self, len: usize) -> Result<()> {
        let (start, offset) = (usize::from(self.csum_start), usize::from(self.csum_offset));
        if self.needs_csum() && (start >= len || start + offset + 2 > len) {
            return Err(Error::Checksum {
                start: self.csum_start,
                offset: self.csum_offset,
                len,
            });
        }
        Ok(())
    }
}

/// Does what NEEDS_CSUM in `hdr` asks of `frame`, which is no GSO frame:
/// the ones' complement sum from `csum_start` to the end (the field at
/// `csum_start + csum_offset` holding the pseudo-header's sum, as the
/// sender leaves it) goes, complemented, into that field. Nothing to do
/// without NEEDS_CSUM.
pub fn complete_checksum(hdr: &VnetHdr, frame: &mut [u8]) -> Result<()> {
    if frame.len() > MAX_FRAME {
        return Err(Error::TooLong(frame.len()));
    }
    if hdr.is_gso() {
        return Err(Error::Packet("a GSO frame is segmented, not checksummed"));
    }
    hdr.check_csum(frame.len())?;
    if hdr.needs_csum() {
        let start = usize::from(hdr.csum_start);
        insert_checksum(frame, start, start + usize::from(hdr.csum_offset), 0);
    }
    Ok(())
}
