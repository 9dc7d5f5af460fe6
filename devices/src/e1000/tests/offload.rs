//! Checksum offload and TCP segmentation, checked with an independent
//! checksum.

use super::*;

const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 9];
const SRC4: [u8; 4] = [10, 0, 0, 1];
const DST4: [u8; 4] = [10, 0, 0, 2];
const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const SEQ: u32 = 0xfffff000;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;

/// The ones' complement sum of `data` as 16-bit big-endian words, the
/// way RFC 1071 describes it.
pub fn inet_sum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    let mut i = 0;
    while i < data.len() {
        let lo = data.get(i + 1).map_or(0, |&b| u32::from(b));
        s += u32::from(data[i]) << 8 | lo;
        i += 2;
    }
    while s > 0xffff {
        s = (s >> 16) + (s & 0xffff);
    }
    s as u16
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// TCP header with `csum` in its checksum field.
fn tcp(flags: u8, csum: u16) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(1000u16.to_be_bytes());
    t.extend(2000u16.to_be_bytes());
    t.extend(SEQ.to_be_bytes());
    t.extend(7u32.to_be_bytes());
    t.extend([5 << 4, flags]);
    t.extend(0xffffu16.to_be_bytes());
    t.extend(csum.to_be_bytes());
    t.extend([0, 0]);
    t
}

fn ipv4(tot_len: u16, proto: u8) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend(tot_len.to_be_bytes());
    ip.extend([0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    ip.extend(SRC4);
    ip.extend(DST4);
    ip
}

fn pseudo4(len: usize, proto: u8) -> Vec<u8> {
    let mut p = [SRC4, DST4].concat();
    p.extend([0, proto]);
    p.extend((len as u16).to_be_bytes());
    p
}

fn pseudo6(len: usize) -> Vec<u8> {
    let mut p = [SRC6, DST6].concat();
    p.extend((len as u32).to_be_bytes());
    p.extend([0, 0, 0, 6]);
    p
}

/// Checks an IPv4/TCP frame's lengths and checksums; returns (IP ID,
/// sequence number, flags, payload).
fn check_ipv4_tcp(f: &[u8]) -> (u16, u32, u8, Vec<u8>) {
    let ip = &f[14..34];
    assert_eq!(inet_sum(ip), 0xffff, "IP header checksum");
    assert_eq!(usize::from(be16(ip, 2)), f.len() - 14, "IP total length");
    let seg = &f[34..];
    let mut all = pseudo4(seg.len(), 6);
    all.extend_from_slice(seg);
    assert_eq!(inet_sum(&all), 0xffff, "TCP checksum");
    (be16(ip, 4), be32(seg, 4), seg[13], seg[20..].to_vec())
}

/// The context Linux's e1000_tso/e1000_tx_csum sets up for IPv4/TCP.
fn ctx4(tse: bool, paylen: u32, mss: u16) -> Ctx {
    Ctx {
        ipcss: 14,
        ipcso: 24,
        ipcse: 33,
        tucss: 34,
        tucso: 50,
        tucse: 0,
        paylen,
        tucmd: 0x03 | if tse { 0x04 } else { 0 },
        hdr_len: if tse { 54 } else { 0 },
        mss,
    }
}

/// Queues a context descriptor then `packet` in data descriptors split at
/// `cuts`, with `dcmd` (TSE) and `popts`; rings the doorbell.
fn send(h: &mut Harness, ctx: Ctx, packet: &[u8], cuts: &[usize], dcmd: u8, popts: u8) {
    let mut tail = h.read(TDT);
    h.put_tx(ctx.desc(), &mut tail);
    let mut start = 0;
    let mut ends = cuts.to_vec();
    ends.push(packet.len());
    for (i, &end) in ends.iter().enumerate() {
        let at = h.tx_buf(&packet[start..end]);
        let eop = if i + 1 == ends.len() { EOP | RS } else { 0 };
        let len = (end - start) as u32;
        h.put_tx(data_desc(at, len, dcmd | eop, popts), &mut tail);
        start = end;
    }
    h.write(TDT, tail);
}

#[test]
fn ipv4_tcp_checksums_inserted() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let payload = pattern(301, 9);
    let seg_len = 20 + payload.len();
    // As Linux leaves it: IP checksum 0, TCP checksum the pseudo-header sum.
    let mut p = ipv4((20 + seg_len) as u16, 6);
    p.extend(tcp(ACK | PSH, inet_sum(&pseudo4(seg_len, 6))));
    p.extend(&payload);
    let f = ether(PEER, MAC, 0x0800, &p);
    send(&mut h, ctx4(false, 0, 0), &f, &[54, 200], 0, 0x03);
    let sent = h.wire.sent();
    assert_eq!(sent.len(), 1);
    let (id, seq, flags, data) = check_ipv4_tcp(&sent[0]);
    assert_eq!((id, seq, flags), (0x1234, SEQ, ACK | PSH));
    assert_eq!(data, payload);
    // Only the two checksum fields changed.
    let mut masked = sent[0].clone();
    masked[24..26].fill(0);
    masked[50..52].copy_from_slice(&f[50..52]);
    assert_eq!(masked, f);
}

#[test]
fn udp_checksum_inserted() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let payload = pattern(77, 10);
    let len = 8 + payload.len();
    let mut p = ipv4((20 + len) as u16, 17);
    p.extend(5353u16.to_be_bytes());
    p.extend(53u16.to_be_bytes());
    p.extend((len as u16).to_be_bytes());
    p.extend(inet_sum(&pseudo4(len, 17)).to_be_bytes());
    p.extend(&payload);
    let f = ether(PEER, MAC, 0x0800, &p);
    let ctx = Ctx {
        tucmd: 0x02,
        tucso: 40,
        ..ctx4(false, 0, 0)
    };
    send(&mut h, ctx, &f, &[], 0, 0x02);
    let sent = h.wire.sent();
    let mut all = pseudo4(len, 17);
    all.extend_from_slice(&sent[0][34..]);
    assert_eq!(inet_sum(&all), 0xffff);
    assert_eq!(be16(&sent[0], 24), 0, "IP checksum not asked for");
}

/// A 4000-byte TSO packet as Linux builds it: IP length and checksum 0,
/// TCP checksum over the pseudo-header without length.
fn tso4_packet(payload: &[u8], flags: u8) -> Vec<u8> {
    let mut p = ipv4(0, 6);
    p.extend(tcp(flags, inet_sum(&pseudo4(0, 6))));
    p.extend(payload);
    ether(PEER, MAC, 0x0800, &p)
}

fn check_tso4(sent: &[Vec<u8>], payload: &[u8], mss: usize) {
    let count = payload.len().div_ceil(mss);
    assert_eq!(sent.len(), count);
    let mut data = Vec::new();
    for (k, f) in sent.iter().enumerate() {
        let last = k + 1 == count;
        let want = if last { payload.len() - k * mss } else { mss };
        assert_eq!(f.len(), 54 + want, "segment {k} length");
        let (id, seq, flags, d) = check_ipv4_tcp(f);
        assert_eq!(id, 0x1234 + k as u16);
        assert_eq!(seq, SEQ.wrapping_add((k * mss) as u32), "wraps past 2^32");
        let want_flags = if last { ACK | PSH | FIN } else { ACK };
        assert_eq!(flags, want_flags, "segment {k} flags");
        assert_eq!(&f[..14], &sent[0][..14]);
        data.extend(d);
    }
    assert_eq!(data, payload);
}

#[test]
fn tso_ipv4_splits_4000_bytes_into_three_segments() {
    let mut h = Harness::new();
    h.up();
    let payload = pattern(4000, 11);
    let f = tso4_packet(&payload, ACK | PSH | FIN);
    send(
        &mut h,
        ctx4(true, 4000, 1448),
        &f,
        &[54, 1054, 3054],
        IC_TSE,
        0x03,
    );
    let sent: Vec<Vec<u8>> = h
        .wire
        .sent()
        .into_iter()
        .map(|f| {
            assert_eq!(&f[..12], &[0; 12], "zeroed header");
            f[12..].to_vec()
        })
        .collect();
    check_tso4(&sent, &payload, 1448);
    assert_eq!(h.read(crate::e1000::stats::reg::TSCTC), 1);
    assert_eq!(h.read(crate::e1000::stats::reg::GPTC), 3);
}

#[test]
fn tso_header_split_across_descriptors() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let payload = pattern(2896, 12);
    let f = tso4_packet(&payload, ACK);
    send(
        &mut h,
        ctx4(true, 2896, 1448),
        &f,
        &[10, 40, 1500],
        IC_TSE,
        0x03,
    );
    let sent = h.wire.sent();
    assert_eq!(sent.len(), 2);
    for f in &sent {
        assert_eq!(check_ipv4_tcp(f).2, ACK);
    }
}

#[test]
fn tso_resumes_mid_packet_after_the_backend_blocks() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let payload = pattern(4000, 13);
    let f = tso4_packet(&payload, ACK | PSH);
    h.wire.block_after(Some(1));
    send(&mut h, ctx4(true, 4000, 1000), &f, &[54], IC_TSE, 0x03);
    let mut sent = h.wire.sent();
    assert_eq!(sent.len(), 1);
    assert!(h.dev.tx_blocked());
    h.wire.block_after(Some(1));
    h.dev.backend_writable();
    sent.extend(h.wire.sent());
    assert_eq!(sent.len(), 2);
    h.wire.block_after(None);
    h.dev.backend_writable();
    sent.extend(h.wire.sent());
    let flags: Vec<u8> = sent.iter().map(|f| check_ipv4_tcp(f).2).collect();
    assert_eq!(flags, [ACK, ACK, ACK, ACK | PSH]);
    let mut data = Vec::new();
    for f in &sent {
        data.extend_from_slice(&f[54..]);
    }
    assert_eq!(data, payload);
    assert_eq!(h.read(TDH), h.read(TDT));
}

#[test]
fn tso_ipv6_tcp() {
    let mut h = Harness::with_hdr(0);
    h.up();
    let payload = pattern(2500, 14);
    let mut p = vec![0x60, 0, 0, 0, 0, 0, 6, 64];
    p.extend(SRC6);
    p.extend(DST6);
    p.extend(tcp(ACK | FIN, inet_sum(&pseudo6(0))));
    p.extend(&payload);
    let f = ether(PEER, MAC, 0x86dd, &p);
    let ctx = Ctx {
        ipcss: 14,
        ipcso: 0,
        ipcse: 0,
        tucss: 54,
        tucso: 70,
        tucse: 0,
        paylen: 2500,
        tucmd: 0x05,
        hdr_len: 74,
        mss: 1000,
    };
    send(&mut h, ctx, &f, &[74], IC_TSE, 0x02);
    let sent = h.wire.sent();
    assert_eq!(sent.len(), 3);
    let mut data = Vec::new();
    for (k, s) in sent.iter().enumerate() {
        let seg = &s[54..];
        assert_eq!(usize::from(be16(s, 18)), seg.len(), "IPv6 payload length");
        let mut all = pseudo6(seg.len());
        all.extend_from_slice(seg);
        assert_eq!(inet_sum(&all), 0xffff, "segment {k} TCP checksum");
        assert_eq!(be32(seg, 4), SEQ.wrapping_add(1000 * k as u32));
        assert_eq!(seg[13], if k == 2 { ACK | FIN } else { ACK });
        data.extend_from_slice(&seg[20..]);
    }
    assert_eq!(data, payload);
    assert_eq!(sent[2].len(), 74 + 500);
}
