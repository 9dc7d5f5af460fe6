//! Register offsets (in BAR 0) and bit fields of the 82540EM, as the 8254x
//! Software Developer's Manual names them.

/// Device control.
pub const CTRL: u32 = 0x0000;
/// Device status (read-only, no side effects).
pub const STATUS: u32 = 0x0008;
/// EEPROM/flash control: Microwire bit-banging.
pub const EECD: u32 = 0x0010;
/// EEPROM read: one word per start.
pub const EERD: u32 = 0x0014;
pub const CTRL_EXT: u32 = 0x0018;
/// MDI control: access to the PHY's registers.
pub const MDIC: u32 = 0x0020;
pub const FCAL: u32 = 0x0028;
pub const FCAH: u32 = 0x002c;
pub const FCT: u32 = 0x0030;
pub const VET: u32 = 0x0038;
/// Interrupt cause read (read clears it).
pub const ICR: u32 = 0x00c0;
pub const ITR: u32 = 0x00c4;
/// Interrupt cause set.
pub const ICS: u32 = 0x00c8;
/// Interrupt mask set (and read).
pub const IMS: u32 = 0x00d0;
/// Interrupt mask clear.
pub const IMC: u32 = 0x00d8;
pub const RCTL: u32 = 0x0100;
pub const FCTTV: u32 = 0x0170;
pub const TXCW: u32 = 0x0178;
pub const RXCW: u32 = 0x0180;
pub const TCTL: u32 = 0x0400;
pub const TIPG: u32 = 0x0410;
pub const AIT: u32 = 0x0458;
pub const LEDCTL: u32 = 0x0e00;
pub const PBA: u32 = 0x1000;
pub const FCRTL: u32 = 0x2160;
pub const FCRTH: u32 = 0x2168;
pub const RDBAL: u32 = 0x2800;
pub const RDBAH: u32 = 0x2804;
pub const RDLEN: u32 = 0x2808;
pub const RDH: u32 = 0x2810;
pub const RDT: u32 = 0x2818;
pub const RDTR: u32 = 0x2820;
pub const RXDCTL: u32 = 0x2828;
pub const RADV: u32 = 0x282c;
pub const RSRPD: u32 = 0x2c00;
pub const TXDMAC: u32 = 0x3000;
pub const TDBAL: u32 = 0x3800;
pub const TDBAH: u32 = 0x3804;
pub const TDLEN: u32 = 0x3808;
pub const TDH: u32 = 0x3810;
pub const TDT: u32 = 0x3818;
pub const TIDV: u32 = 0x3820;
pub const TXDCTL: u32 = 0x3828;
pub const TADV: u32 = 0x382c;
pub const TSPMT: u32 = 0x3830;
/// Statistics counters: 0x4000..0x4100.
pub const STATS_START: u32 = 0x4000;
pub const STATS_END: u32 = 0x4100;
pub const RXCSUM: u32 = 0x5000;
/// Multicast table array: 128 dwords.
pub const MTA: u32 = 0x5200;
/// Receive addresses: 16 (low, high) pairs.
pub const RA: u32 = 0x5400;
/// VLAN filter table array: 128 dwords.
pub const VFTA: u32 = 0x5600;
pub const WUC: u32 = 0x5800;
pub const MANC: u32 = 0x5820;

/// Registers the model keeps as plain storage: (offset, writable bits,
/// value after reset). Sorted by offset.
pub const PLAIN: [(u32, u32, u32); 24] = [
    (CTRL_EXT, u32::MAX, 0),
    (FCAL, u32::MAX, 0),
    (FCAH, 0xffff, 0),
    (FCT, 0xffff, 0),
    (VET, 0xffff, 0x8100),
    (ITR, 0xffff, 0),
    (FCTTV, 0xffff, 0),
    (TXCW, u32::MAX, 0),
    (TIPG, u32::MAX, 0),
    (AIT, 0xffff, 0),
    (LEDCTL, u32::MAX, 0x0000_0602),
    (PBA, 0xffff, 0x0010_0030),
    (FCRTL, 0x8000_fff8, 0),
    (FCRTH, 0xfff8, 0),
    (RDTR, 0xffff, 0),
    (RXDCTL, u32::MAX, 0),
    (RADV, 0xffff, 0),
    (RSRPD, 0xfff, 0),
    (TXDMAC, 1, 0),
    (TIDV, 0xffff, 0),
    (TXDCTL, u32::MAX, 0),
    (TADV, 0xffff, 0),
    (TSPMT, u32::MAX, 0),
    (RXCSUM, 0x7ff, 0x300),
];

/// Registers a driver may touch that the model has no use for: they read
/// 0 and ignore writes, without a log line. (start, end exclusive)
pub const IGNORED: [(u32, u32); 12] = [
    (RXCW, RXCW + 4),
    (0x2410, 0x2434),    // RDFH..RDFPC: receive FIFO
    (0x3410, 0x3434),    // TDFH..TDFPC: transmit FIFO
    (STATS_END, 0x4128), // interrupt counters of later parts
    (WUC, 0x5814),       // WUC, WUFC, WUS
    (MANC, MANC + 4),
    (0x5838, 0x5890),   // IPAV, IP4AT, IP6AT
    (0x5900, 0x5904),   // WUPL
    (0x5a00, 0x5a80),   // WUPM
    (0x5f00, 0x5f20),   // FFLT
    (0x9000, 0x9c00),   // FFMT, FFVT
    (0x10000, 0x20000), // PBM: packet buffer memory
];

/// CTRL bits.
pub mod ctrl {
    pub const FD: u32 = 1 << 0;
    pub const SLU: u32 = 1 << 6;
    pub const SPD_1000: u32 = 2 << 8;
    pub const SWDPIN0: u32 = 1 << 18;
    pub const SWDPIN2: u32 = 1 << 20;
    pub const RST: u32 = 1 << 26;
    pub const VME: u32 = 1 << 30;
    pub const PHY_RST: u32 = 1 << 31;
    /// After reset, as QEMU presents it.
    pub const INIT: u32 = SWDPIN2 | SWDPIN0 | SPD_1000 | SLU;
}

/// STATUS bits.
pub mod status {
    pub const FD: u32 = 1 << 0;
    pub const LU: u32 = 1 << 1;
    pub const SPEED_1000: u32 = 2 << 6;
    /// Auto-speed detection value: 1000 Mb/s.
    pub const ASDV_1000: u32 = 2 << 8;
    pub const MTXCKOK: u32 = 1 << 10;
}

/// Interrupt causes (ICR, ICS, IMS, IMC).
pub mod int {
    pub const TXDW: u32 = 1 << 0;
    pub const TXQE: u32 = 1 << 1;
    pub const LSC: u32 = 1 << 2;
    pub const RXDMT0: u32 = 1 << 4;
    pub const RXO: u32 = 1 << 6;
    pub const RXT0: u32 = 1 << 7;
    pub const MDAC: u32 = 1 << 9;
    /// ICR only: an unmasked cause is pending.
    pub const INT_ASSERTED: u32 = 1 << 31;
    /// Causes the 82540EM can have (bits 0..=16).
    pub const ALL: u32 = 0x0001_ffff;
}

/// RCTL bits.
pub mod rctl {
    pub const EN: u32 = 1 << 1;
    pub const SBP: u32 = 1 << 2;
    pub const UPE: u32 = 1 << 3;
    pub const MPE: u32 = 1 << 4;
    pub const LPE: u32 = 1 << 5;
    pub const RDMTS_SHIFT: u32 = 8;
    pub const MO_SHIFT: u32 = 12;
    pub const BAM: u32 = 1 << 15;
    pub const BSIZE_SHIFT: u32 = 16;
    pub const VFE: u32 = 1 << 18;
    pub const BSEX: u32 = 1 << 25;
    pub const SECRC: u32 = 1 << 26;
}

/// TCTL bits.
pub mod tctl {
    pub const EN: u32 = 1 << 1;
}

/// RAH bit: the address is valid.
pub const RAH_AV: u32 = 1 << 31;

/// Writable bits of the ring registers.
pub const DLEN_MASK: u32 = 0x000f_ff80;
pub const DBAL_MASK: u32 = !0xf;
pub const HEAD_TAIL_MASK: u32 = 0xffff;
