//! Descriptors and frames as a driver builds them.

/// Transmit command bits.
pub const EOP: u8 = 0x01;
pub const IFCS: u8 = 0x02;
pub const IC_TSE: u8 = 0x04;
pub const RS: u8 = 0x08;
pub const DEXT: u8 = 0x20;
pub const VLE: u8 = 0x40;

/// A legacy transmit descriptor.
pub fn legacy(addr: u64, len: u16, cmd: u8) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    d[8..10].copy_from_slice(&len.to_le_bytes());
    d[11] = cmd;
    d
}

/// A data descriptor (DEXT, DTYP 1) with options `popts`.
pub fn data_desc(addr: u64, len: u32, dcmd: u8, popts: u8) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    let lower = (len & 0xf_ffff) | 1 << 20 | u32::from(dcmd | DEXT) << 24;
    d[8..12].copy_from_slice(&lower.to_le_bytes());
    d[13] = popts;
    d
}

/// A TCP/IP context descriptor.
#[derive(Clone, Copy, Default)]
pub struct Ctx {
    pub ipcss: u8,
    pub ipcso: u8,
    pub ipcse: u16,
    pub tucss: u8,
    pub tucso: u8,
    pub tucse: u16,
    pub paylen: u32,
    /// TUCMD: TCP 1, IP 2, TSE 4 (DEXT and RS added).
    pub tucmd: u8,
    pub hdr_len: u8,
    pub mss: u16,
}

impl Ctx {
    pub fn desc(&self) -> [u8; 16] {
        let mut d = [0u8; 16];
        d[0] = self.ipcss;
        d[1] = self.ipcso;
        d[2..4].copy_from_slice(&self.ipcse.to_le_bytes());
        d[4] = self.tucss;
        d[5] = self.tucso;
        d[6..8].copy_from_slice(&self.tucse.to_le_bytes());
        let cmd_len = (self.paylen & 0xf_ffff) | u32::from(self.tucmd | DEXT | RS) << 24;
        d[8..12].copy_from_slice(&cmd_len.to_le_bytes());
        d[13] = self.hdr_len;
        d[14..16].copy_from_slice(&self.mss.to_le_bytes());
        d
    }
}

/// An Ethernet frame to `dst` from `src` of type `ethertype` with `payload`.
pub fn ether(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Filler bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
