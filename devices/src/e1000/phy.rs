//! The PHY behind MDIC: a Marvell 88E1011 (the 82540EM's), at MDIO address
//! 1, with the registers Linux's e1000 reads and writes. Auto-negotiation
//! completes at once: the link partner is an ideal 1000BASE-T full-duplex
//! peer whenever the host says the link is up.

/// MII register numbers.
pub mod reg {
    pub const BMCR: usize = 0;
    pub const BMSR: usize = 1;
    pub const ID1: usize = 2;
    pub const ID2: usize = 3;
    pub const ANAR: usize = 4;
    pub const ANLPAR: usize = 5;
    pub const ANER: usize = 6;
    pub const CTRL1000: usize = 9;
    pub const STAT1000: usize = 10;
    /// Marvell specific.
    pub const M88_SPEC_CTRL: usize = 0x10;
    pub const M88_SPEC_STATUS: usize = 0x11;
    pub const M88_EXT_SPEC_CTRL: usize = 0x14;
    pub const M88_RX_ERR_CNTR: usize = 0x15;
}

/// The 88E1011's identifier (PHY_ID1, PHY_ID2).
pub const PHY_ID: (u16, u16) = (0x0141, 0x0c20);
/// The PHY's MDIO address.
pub const ADDRESS: u32 = 1;

/// BMCR bits.
pub mod bmcr {
    pub const SPEED1000: u16 = 1 << 6;
    pub const FD: u16 = 1 << 8;
    pub const ANRESTART: u16 = 1 << 9;
    pub const AUTOEN: u16 = 1 << 12;
    pub const RESET: u16 = 1 << 15;
}

/// BMSR bits.
pub mod bmsr {
    pub const LINK: u16 = 1 << 2;
    pub const AN_COMPLETE: u16 = 1 << 5;
    /// Extended capabilities, autoneg ability, preamble suppression,
    /// extended status, 10/100 half and full duplex.
    pub const ABILITIES: u16 = 0x794d & !LINK;
}

/// M88 specific status: 1000 Mb/s, full duplex, resolved, link.
const M88_STATUS_UP: u16 = 0xac00;
const M88_STATUS_LINK: u16 = 1 << 10;
/// Link partner: 10/100 half and full duplex, acknowledged.
const ANLPAR_UP: u16 = 0x41e0;

/// MDIC fields.
pub mod mdic {
    pub const DATA: u32 = 0xffff;
    pub const REG_SHIFT: u32 = 16;
    pub const PHY_SHIFT: u32 = 21;
    pub const OP_WRITE: u32 = 1 << 26;
    pub const OP_READ: u32 = 2 << 26;
    pub const READY: u32 = 1 << 28;
    pub const INT_EN: u32 = 1 << 29;
    pub const ERROR: u32 = 1 << 30;
}

/// What an MDIC write asks of the device besides the PHY access.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MdicOutcome {
    /// MDIC.I was set: raise MDAC.
    pub interrupt: bool,
    /// Auto-negotiation restarted (and, the link being ideal, completed).
    pub autoneg: bool,
}

/// PHY registers and the MDIC register in front of them.
#[derive(Clone, Debug)]
pub struct Phy {
    regs: [u16; 32],
    mdic: u32,
}

impl Phy {
    pub fn new(link_up: bool) -> Self {
        let mut regs = [0u16; 32];
        regs[reg::BMCR] = bmcr::SPEED1000 | bmcr::FD | bmcr::AUTOEN;
        regs[reg::ID1] = PHY_ID.0;
        regs[reg::ID2] = PHY_ID.1;
        // 10/100 half and full duplex, CSMA, symmetric and asymmetric pause.
        regs[reg::ANAR] = 0x0de1;
        // 1000BASE-T full duplex, multi-port, manual master.
        regs[reg::CTRL1000] = 0x0e00;
        // Partner 1000BASE-T half and full duplex, receivers OK.
        regs[reg::STAT1000] = 0x3c00;
        regs[reg::M88_SPEC_CTRL] = 0x0360;
        regs[reg::M88_EXT_SPEC_CTRL] = 0x0d60;
        let mut phy = Phy { regs, mdic: 0 };
        phy.set_link(link_up);
        phy
    }

    /// Reflects the host's link state in the status registers.
    pub fn set_link(&mut self, up: bool) {
        let r = &mut self.regs;
        r[reg::BMSR] = bmsr::ABILITIES;
        if up {
            r[reg::BMSR] |= bmsr::LINK | bmsr::AN_COMPLETE;
            r[reg::ANLPAR] = ANLPAR_UP;
            r[reg::M88_SPEC_STATUS] = M88_STATUS_UP;
        } else {
            r[reg::ANLPAR] = 0;
            r[reg::M88_SPEC_STATUS] = M88_STATUS_UP & !M88_STATUS_LINK;
        }
    }

    /// The value of PHY register `r` (0 for those the model lacks).
    pub fn reg(&self, r: usize) -> u16 {
        match r {
            reg::BMCR
            | reg::BMSR
            | reg::ID1
            | reg::ID2
            | reg::ANAR
            | reg::ANLPAR
            | reg::ANER
            | reg::CTRL1000
            | reg::STAT1000
            | reg::M88_SPEC_CTRL
            | reg::M88_SPEC_STATUS
            | reg::M88_EXT_SPEC_CTRL
            | reg::M88_RX_ERR_CNTR => self.regs[r],
            _ => 0,
        }
    }

    pub fn read_mdic(&self) -> u32 {
        self.mdic
    }

    /// A driver write of MDIC: performs the access at once (READY is set
    /// right away). Another PHY address answers with ERROR; writes to
    /// read-only or unknown registers are ignored.
    pub fn write_mdic(&mut self, value: u32) -> MdicOutcome {
        let mut out = MdicOutcome {
            interrupt: value & mdic::INT_EN != 0,
            autoneg: false,
        };
        let r = ((value >> mdic::REG_SHIFT) & 0x1f) as usize;
        let data = (value & mdic::DATA) as u16;
        let op = value & (mdic::OP_READ | mdic::OP_WRITE);
        let mut result = value & !(mdic::READY | mdic::ERROR);
        if (value >> mdic::PHY_SHIFT) & 0x1f != ADDRESS {
            result |= mdic::ERROR;
        } else if op == mdic::OP_READ {
            result = result & !mdic::DATA | u32::from(self.reg(r));
        } else if op == mdic::OP_WRITE {
            match r {
                reg::BMCR => {
                    // RESET and ANRESTART clear themselves.
                    self.regs[r] = data & !(bmcr::RESET | bmcr::ANRESTART | 0x3f);
                    out.autoneg = data & bmcr::ANRESTART != 0 && data & bmcr::AUTOEN != 0;
                }
                reg::ANAR | reg::CTRL1000 | reg::M88_SPEC_CTRL | reg::M88_EXT_SPEC_CTRL => {
                    self.regs[r] = data;
                }
                _ => {}
            }
        }
        self.mdic = result | mdic::READY;
        out
    }
}
