//! The register file and the two ways to reach it: BAR 0 (memory, the
//! registers themselves) and BAR 1 (I/O: IOADDR selects a register,
//! IODATA reads or writes it).

use log::warn;
use vm_memory::GuestMemory;

use super::regs::*;
use super::{E1000, IO_SIZE, MMIO_SIZE};
use crate::pci::Interrupts;
use crate::virtio::net::NetBackend;

/// MAC registers with state of their own (the EEPROM, PHY and statistics
/// keep theirs).
#[derive(Clone, Debug)]
pub struct Regs {
    pub ctrl: u32,
    pub icr: u32,
    pub ims: u32,
    pub rctl: u32,
    pub tctl: u32,
    pub rdbal: u32,
    pub rdbah: u32,
    pub rdlen: u32,
    pub rdh: u32,
    pub rdt: u32,
    pub tdbal: u32,
    pub tdbah: u32,
    pub tdlen: u32,
    pub tdh: u32,
    pub tdt: u32,
    pub plain: [u32; PLAIN.len()],
    /// RAL/RAH pairs.
    pub ra: [u32; 32],
    pub mta: [u32; 128],
    pub vfta: [u32; 128],
}

impl Regs {
    /// Values after reset, receive address 0 being `mac`.
    pub fn new(mac: &[u8; 6]) -> Self {
        let mut ra = [0u32; 32];
        ra[0] = u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
        ra[1] = u32::from(u16::from_le_bytes([mac[4], mac[5]])) | RAH_AV;
        Regs {
            ctrl: ctrl::INIT,
            icr: 0,
            ims: 0,
            rctl: 0,
            tctl: 0,
            rdbal: 0,
            rdbah: 0,
            rdlen: 0,
            rdh: 0,
            rdt: 0,
            tdbal: 0,
            tdbah: 0,
            tdlen: 0,
            tdh: 0,
            tdt: 0,
            plain: PLAIN.map(|(_, _, reset)| reset),
            ra,
            mta: [0; 128],
            vfta: [0; 128],
        }
    }
}

fn plain_index(off: u32) -> Option<usize> {
    PLAIN.binary_search_by_key(&off, |p| p.0).ok()
}

fn ignored(off: u32) -> bool {
    IGNORED
        .iter()
        .any(|&(start, end)| (start..end).contains(&off))
}

/// Index into a register array of `len` dwords at `base`.
fn in_array(off: u32, base: u32, len: u32) -> Option<usize> {
    (base..base + 4 * len)
        .contains(&off)
        .then(|| ((off - base) / 4) as usize)
}

/// Where an access of `len` bytes at `offset` lands: the register's
/// offset and the byte within it, if the access stays inside one register.
fn split(offset: u64, len: usize, size: u64) -> Option<(u32, usize)> {
    let shift = (offset & 3) as usize;
    (matches!(len, 1 | 2 | 4) && shift + len <= 4 && offset < size)
        .then_some(((offset & !3) as u32, shift))
}

impl<B: NetBackend, M: GuestMemory + Send, I: Interrupts> E1000<B, M, I> {
    /// The value of register `off`; with `side_effects`, as a driver's
    /// read (clearing ICR and statistics), else a peek.
    pub(super) fn read_reg(&mut self, off: u32, side_effects: bool) -> u32 {
        let r = &mut self.regs;
        match off {
            CTRL => r.ctrl,
            STATUS => self.status(),
            EECD => self.eeprom.read_eecd(),
            EERD => self.eeprom.read_eerd(),
            MDIC => self.phy.read_mdic(),
            ICR => {
                let v = r.icr
                    | if r.icr & r.ims != 0 {
                        int::INT_ASSERTED
                    } else {
                        0
                    };
                if side_effects {
                    r.icr = 0;
                }
                v
            }
            // Reads as ICR does, without clearing (VxWorks relies on it).
            ICS => r.icr,
            IMS => r.ims,
            RCTL => r.rctl,
            TCTL => r.tctl,
            RDBAL => r.rdbal,
            RDBAH => r.rdbah,
            RDLEN => r.rdlen,
            RDH => r.rdh,
            RDT => r.rdt,
            TDBAL => r.tdbal,
            TDBAH => r.tdbah,
            TDLEN => r.tdlen,
            TDH => r.tdh,
            TDT => r.tdt,
            STATS_START..STATS_END => self.stats.read(off, side_effects),
            _ => {
                if let Some(i) = in_array(off, MTA, 128) {
                    r.mta[i]
                } else if let Some(i) = in_array(off, RA, 32) {
                    r.ra[i]
                } else if let Some(i) = in_array(off, VFTA, 128) {
                    r.vfta[i]
                } else if let Some(i) = plain_index(off) {
                    r.plain[i]
                } else {
                    if side_effects && !ignored(off) {
                        self.unknown("read", off);
                    }
                    0
                }
            }
        }
    }

    /// A driver's write of `v` to register `off`.
    pub(super) fn write_reg(&mut self, off: u32, v: u32) {
        let r = &mut self.regs;
        match off {
            CTRL => self.write_ctrl(v),
            EECD => self.eeprom.write_eecd(v),
            EERD => self.eeprom.write_eerd(v),
            MDIC => self.write_mdic(v),
            ICR => {
                r.icr &= !v;
                self.update_irq();
            }
            ICS => self.raise(v & int::ALL),
            IMS => {
                r.ims |= v & int::ALL;
                self.update_irq();
            }
            IMC => r.ims &= !v,
            RCTL => {
                r.rctl = v;
                self.process_rx();
            }
            TCTL => {
                r.tctl = v;
                self.process_tx();
            }
            RDBAL | RDBAH | RDLEN | RDH | RDT => {
                match off {
                    RDBAL => r.rdbal = v & DBAL_MASK,
                    RDBAH => r.rdbah = v,
                    RDLEN => r.rdlen = v & DLEN_MASK,
                    RDH => r.rdh = v & HEAD_TAIL_MASK,
                    _ => r.rdt = v & HEAD_TAIL_MASK,
                }
                self.rx.fault = false;
                self.process_rx();
            }
            TDBAL | TDBAH | TDLEN | TDH => {
                match off {
                    TDBAL => r.tdbal = v & DBAL_MASK,
                    TDBAH => r.tdbah = v,
                    TDLEN => r.tdlen = v & DLEN_MASK,
                    _ => r.tdh = v & HEAD_TAIL_MASK,
                }
                // A moved ring starts afresh: no half-gathered packet.
                self.tx.restart();
            }
            TDT => {
                r.tdt = v & HEAD_TAIL_MASK;
                self.tx.fault = false;
                self.process_tx();
            }
            STATUS | STATS_START..STATS_END => {}
            _ => {
                if let Some(i) = in_array(off, MTA, 128) {
                    r.mta[i] = v;
                } else if let Some(i) = in_array(off, RA, 32) {
                    r.ra[i] = v;
                } else if let Some(i) = in_array(off, VFTA, 128) {
                    r.vfta[i] = v;
                } else if let Some(i) = plain_index(off) {
                    let mask = PLAIN[i].1;
                    r.plain[i] = r.plain[i] & !mask | v & mask;
                } else if !ignored(off) {
                    self.unknown("write", off);
                }
            }
        }
    }

    fn write_ctrl(&mut self, v: u32) {
        if v & ctrl::RST != 0 {
            self.reset();
            return;
        }
        let old = self.regs.ctrl;
        if v & ctrl::PHY_RST != 0 && old & ctrl::PHY_RST == 0 {
            self.phy = super::phy::Phy::new(self.link_up);
        }
        self.regs.ctrl = v;
        if v & ctrl::SLU != 0 && old & ctrl::SLU == 0 && self.link_up {
            self.raise(int::LSC);
        }
    }

    fn write_mdic(&mut self, v: u32) {
        let out = self.phy.write_mdic(v);
        let mut cause = 0;
        if out.interrupt {
            cause |= int::MDAC;
        }
        if out.autoneg && self.link_up {
            cause |= int::LSC;
        }
        self.raise(cause);
    }

    fn unknown(&mut self, what: &str, off: u32) {
        if self.logs.unknown.hit() {
            warn!(
                "e1000: {what} of unknown register {off:#07x} ignored ({} so far)",
                self.logs.unknown.count()
            );
        }
    }

    /// A read of BAR 0 (registers): 4-byte reads with the register's side
    /// effects, 1- or 2-byte ones as peeks; anything else reads zeros.
    pub(super) fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((off, shift)) = split(offset, data.len(), MMIO_SIZE) else {
            return self.unknown("odd-sized read", offset as u32);
        };
        let v = self.read_reg(off, data.len() == 4);
        data.copy_from_slice(&v.to_le_bytes()[shift..shift + data.len()]);
    }

    /// A write to BAR 0. A 1- or 2-byte write replaces those bytes of the
    /// register's current value (of zero for the set/clear registers).
    pub(super) fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        let Some((off, shift)) = split(offset, data.len(), MMIO_SIZE) else {
            return self.unknown("odd-sized write", offset as u32);
        };
        let mut b = if data.len() == 4 || matches!(off, ICR | ICS | IMS | IMC) {
            [0; 4]
        } else {
            self.read_reg(off, false).to_le_bytes()
        };
        b[shift..shift + data.len()].copy_from_slice(data);
        self.write_reg(off, u32::from_le_bytes(b));
    }

    /// A read of BAR 1: IOADDR at 0, IODATA (the register IOADDR names)
    /// at 4; 32-bit accesses only.
    pub(super) fn io_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() != 4 || offset >= IO_SIZE {
            return;
        }
        let v = match offset {
            0 => self.io_addr,
            4 => self.read_reg(self.io_addr, true),
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    pub(super) fn io_write(&mut self, offset: u64, data: &[u8]) {
        let Ok(b) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let v = u32::from_le_bytes(b);
        match offset {
            0 => self.io_addr = v & (MMIO_SIZE as u32 - 1) & !3,
            4 => self.write_reg(self.io_addr, v),
            _ => {}
        }
    }
}
