//! Transmit offloads done in software: checksum insertion (legacy
//! descriptors' CSO/CSS, and the TCP/IP context's IP and TCP/UDP fields)
//! and TCP segmentation (TSO) of one large packet into MSS-sized frames,
//! as the context descriptors describe them (the checksum helpers are
//! shared: [`crate::net_offload`]).

use crate::net_offload::tcp_flags::{FIN, PSH};
use crate::net_offload::{fold, get16, insert_checksum, put16};

/// Data descriptor POPTS bits: insert the IP / the TCP or UDP checksum.
pub const IXSM: u8 = 1 << 0;
pub const TXSM: u8 = 1 << 1;

/// A TCP/IP context descriptor, as the device remembers it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub ipcss: u8,
    pub ipcso: u8,
    pub ipcse: u16,
    pub tucss: u8,
    pub tucso: u8,
    pub tucse: u16,
    pub paylen: u32,
    pub hdr_len: u8,
    pub mss: u16,
    /// IPv4 (else IPv6).
    pub ipv4: bool,
    /// TCP (else UDP).
    pub tcp: bool,
    /// A segmentation context.
    pub tse: bool,
}

impl Context {
    /// The fields of context descriptor `d`.
    pub fn parse(d: &[u8; 16]) -> Self {
        let le16 = |i: usize| u16::from_le_bytes([d[i], d[i + 1]]);
        let cmd_len = u32::from_le_bytes([d[8], d[9], d[10], d[11]]);
        let tucmd = d[11];
        Context {
            ipcss: d[0],
            ipcso: d[1],
            ipcse: le16(2),
            tucss: d[4],
            tucso: d[5],
            tucse: le16(6),
            paylen: cmd_len & 0xf_ffff,
            hdr_len: d[13],
            mss: le16(14),
            tcp: tucmd & 0x01 != 0,
            ipv4: tucmd & 0x02 != 0,
            tse: tucmd & 0x04 != 0,
        }
    }
}

/// Inserts the checksums a non-segmented packet asks for: a legacy
/// descriptor's `(css, cso)`, or the context's TCP/UDP then IP checksums
/// as `popts` says.
pub fn apply_checksums(frame: &mut [u8], legacy: Option<(u8, u8)>, popts: u8, ctx: &Context) {
    if let Some((css, cso)) = legacy {
        insert_checksum(frame, usize::from(css), usize::from(cso), 0);
    }
    if popts & TXSM != 0 {
        let (css, cso) = (usize::from(ctx.tucss), usize::from(ctx.tucso));
        insert_checksum(frame, css, cso, usize::from(ctx.tucse));
    }
    if popts & IXSM != 0 {
        let (css, cso) = (usize::from(ctx.ipcss), usize::from(ctx.ipcso));
        insert_checksum(frame, css, cso, usize::from(ctx.ipcse));
    }
}

/// Whether `ctx` can segment a `len`-byte packet with options `popts`;
/// returns the number of segments, or what is wrong.
pub fn tso_segments(ctx: &Context, popts: u8, len: usize) -> Result<usize, &'static str> {
    let hdr = usize::from(ctx.hdr_len);
    let (ip, tu) = (usize::from(ctx.ipcss), usize::from(ctx.tucss));
    if ctx.mss == 0 {
        return Err("MSS is 0");
    }
    if hdr == 0 || hdr > len {
        return Err("header length is 0 or beyond the packet");
    }
    if ip + if ctx.ipv4 { 20 } else { 40 } > hdr {
        return Err("IP header not inside the header");
    }
    if tu + if ctx.tcp { 20 } else { 8 } > hdr {
        return Err("TCP/UDP header not inside the header");
    }
    if popts & TXSM != 0 && usize::from(ctx.tucso) + 2 > hdr
        || popts & IXSM != 0 && usize::from(ctx.ipcso) + 2 > hdr
    {
        return Err("checksum field not inside the header");
    }
    Ok((len - hdr).div_ceil(usize::from(ctx.mss)).max(1))
}

/// Builds segment `k` of `packet` into `out`: the header followed by the
/// `k`th MSS of payload, with IP length and ID, TCP sequence number and
/// flags (or UDP length) and checksums fixed up. `ctx` must have passed
/// [`tso_segments`] for this packet and `k` be below its count.
pub fn build_segment(ctx: &Context, popts: u8, packet: &[u8], k: usize, out: &mut Vec<u8>) {
    let hdr = usize::from(ctx.hdr_len);
    let mss = usize::from(ctx.mss);
    let payload = &packet[hdr..];
    let start = (k * mss).min(payload.len());
    let end = (start + mss).min(payload.len());
    let last = end == payload.len();
    out.clear();
    out.extend_from_slice(&packet[..hdr]);
    out.extend_from_slice(&payload[start..end]);
    let len = out.len();
    let ip = usize::from(ctx.ipcss);
    if ctx.ipv4 {
        put16(out, ip + 2, (len - ip) as u16);
        let id = get16(out, ip + 4);
        put16(out, ip + 4, id.wrapping_add(k as u16));
    } else {
        put16(out, ip + 4, (len - ip - 40) as u16);
    }
    let tu = usize::from(ctx.tucss);
    if ctx.tcp {
        let seq = u32::from_be_bytes([out[tu + 4], out[tu + 5], out[tu + 6], out[tu + 7]]);
        let seq = seq.wrapping_add((k * mss) as u32);
        out[tu + 4..tu + 8].copy_from_slice(&seq.to_be_bytes());
        if !last {
            out[tu + 13] &= !(FIN | PSH);
        }
    } else {
        put16(out, tu + 4, (len - tu) as u16);
    }
    if popts & TXSM != 0 {
        // The driver left the pseudo-header sum without the length there.
        let cso = usize::from(ctx.tucso);
        let partial = u64::from(get16(out, cso)) + (len - tu) as u64;
        put16(out, cso, fold(partial));
        insert_checksum(out, tu, cso, usize::from(ctx.tucse));
    }
    if popts & IXSM != 0 {
        let (cso, cse) = (usize::from(ctx.ipcso), usize::from(ctx.ipcse));
        insert_checksum(out, ip, cso, cse);
    }
}
