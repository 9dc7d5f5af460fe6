//! PCI identity, EEPROM, PHY, link, interrupts and the register file.

use super::*;
use crate::e1000::eeprom::eecd;
use crate::e1000::phy::mdic;
use crate::e1000::{EEPROM_CHECKSUM_SUM, IO_BAR, PHY_ID};
use crate::pci::{BarInfo, BarKind};

#[test]
fn pci_identity_and_bars() {
    let mut h = Harness::new();
    let d = &mut h.dev;
    assert_eq!(d.config_read(0), 0x100e_8086);
    assert_eq!(d.config_read(2), 0x0200_0003, "class 02:00:00, revision 3");
    assert_eq!(d.config_read(11), 0x1100_1af4, "subsystem as QEMU's");
    assert_eq!(d.config_read(15) >> 8 & 0xff, 1, "INTA");
    assert_eq!(d.config_read(1) >> 16 & 0x10, 0, "no capabilities");
    assert_eq!(d.msix_vectors(), 0);
    assert!(d.notify_regions().is_empty());
    let bar = |index, size, kind| BarInfo {
        index,
        size,
        kind,
        prefetchable: false,
    };
    assert_eq!(
        d.bars(),
        vec![
            bar(0, 0x2_0000, BarKind::Memory32),
            bar(1, 0x40, BarKind::Io)
        ]
    );
    // Sizing as firmware does.
    d.config_write(4, 0, &[0xff; 4]);
    d.config_write(5, 0, &[0xff; 4]);
    assert_eq!(d.config_read(4), 0xfffe_0000);
    assert_eq!(d.config_read(5), 0x0000_ffc1);
    d.config_write(4, 0, &0xfebc_0000u32.to_le_bytes());
    assert_eq!(d.config_space().bar_address(0), Some(0xfebc_0000));
}

/// Reads EEPROM word `addr` through EERD as FreeBSD's em does.
fn eerd_read(h: &mut Harness, addr: u32) -> u16 {
    h.write(EERD, addr << 8 | 1);
    let v = h.read(EERD);
    assert_eq!(v & 0x10, 0x10, "done");
    assert_eq!(v >> 8 & 0xff, addr);
    (v >> 16) as u16
}

#[test]
fn eeprom_through_eerd_holds_mac_ids_and_checksum() {
    let mut h = Harness::new();
    let words: Vec<u16> = (0..64).map(|a| eerd_read(&mut h, a)).collect();
    assert_eq!(words[0..3], [0x5452, 0x1200, 0x5634]);
    assert_eq!(words[0x0d], 0x100e);
    assert_eq!(words[0x0e], 0x8086);
    let sum = words.iter().fold(0u16, |a, &w| a.wrapping_add(w));
    assert_eq!(sum, EEPROM_CHECKSUM_SUM);
    assert_eq!(&words[..], &h.dev.eeprom()[..]);
    // Past the end: done, no data.
    assert_eq!(eerd_read(&mut h, 200), 0);
}

/// Linux's e1000 Microwire routines, over EECD.
struct Microwire<'a>(&'a mut Harness, u32);

impl Microwire<'_> {
    fn set(&mut self, v: u32) {
        self.1 = v;
        self.0.write(EECD, v);
    }
    fn clock(&mut self) {
        self.set(self.1 | eecd::SK);
        self.set(self.1 & !eecd::SK);
    }
    fn shift_out(&mut self, data: u32, count: u32) {
        for bit in (0..count).rev() {
            let di = if data >> bit & 1 == 1 { eecd::DI } else { 0 };
            self.set(self.1 & !eecd::DI | di);
            self.clock();
        }
        self.set(self.1 & !eecd::DI);
    }
    fn shift_in(&mut self) -> u16 {
        let mut data = 0u16;
        for _ in 0..16 {
            self.set(self.1 | eecd::SK);
            let v = self.0.read(EECD);
            data = data << 1 | u16::from(v & eecd::DO != 0);
            self.set(self.1 & !eecd::SK);
        }
        data
    }
    fn standby(&mut self) {
        self.set(self.1 & !(eecd::CS | eecd::SK));
        self.set(self.1 | eecd::SK);
        self.set(self.1 | eecd::CS);
        self.set(self.1 & !eecd::SK);
    }
}

#[test]
fn eeprom_through_eecd_bit_banging() {
    let mut h = Harness::new();
    let v = h.read(EECD);
    assert_ne!(v & eecd::PRES, 0);
    assert_eq!(v & 0x200, 0, "64-word part");
    let mut m = Microwire(&mut h, v & !(eecd::DO | eecd::GNT | eecd::PRES));
    m.set(m.1 | eecd::REQ);
    assert_ne!(m.0.read(EECD) & eecd::GNT, 0, "granted");
    m.set(m.1 & !(eecd::DI | eecd::SK));
    m.set(m.1 | eecd::CS);
    let mut words = Vec::new();
    for addr in 0..64 {
        m.shift_out(0b110, 3);
        m.shift_out(addr, 6);
        words.push(m.shift_in());
        m.standby();
    }
    m.set(m.1 & !(eecd::CS | eecd::DI | eecd::SK | eecd::REQ));
    assert_eq!(words[0..3], [0x5452, 0x1200, 0x5634]);
    let sum = words.iter().fold(0u16, |a, &w| a.wrapping_add(w));
    assert_eq!(sum, EEPROM_CHECKSUM_SUM);
    assert_eq!(&words[..], &h.dev.eeprom()[..]);
    // A different opcode (EWEN, 10011xxxx) reads nothing but ones.
    let mut m = Microwire(&mut h, eecd::CS);
    m.shift_out(0b10011, 5);
    m.shift_out(0, 4);
    assert_eq!(m.shift_in(), 0xffff);
}

fn mdic_op(h: &mut Harness, op: u32, phy: u32, reg: u32, data: u16) -> u32 {
    h.write(MDIC, op | phy << 21 | reg << 16 | u32::from(data));
    let v = h.read(MDIC);
    assert_ne!(v & mdic::READY, 0);
    v
}

fn phy_read(h: &mut Harness, reg: u32) -> u16 {
    let v = mdic_op(h, mdic::OP_READ, 1, reg, 0);
    assert_eq!(v & mdic::ERROR, 0);
    v as u16
}

#[test]
fn phy_reports_its_id_and_a_negotiated_link() {
    let mut h = Harness::new();
    assert_eq!((phy_read(&mut h, 2), phy_read(&mut h, 3)), PHY_ID);
    let bmsr = phy_read(&mut h, 1);
    assert_eq!(bmsr & 0x24, 0x24, "link up, autoneg complete");
    assert_eq!(phy_read(&mut h, 10) & 0x0800, 0x0800, "partner 1000FD");
    // Writable registers keep what the driver writes; others ignore it.
    mdic_op(&mut h, mdic::OP_WRITE, 1, 4, 0x0de1 & !0x20);
    assert_eq!(phy_read(&mut h, 4), 0x0dc1);
    mdic_op(&mut h, mdic::OP_WRITE, 1, 1, 0);
    assert_eq!(phy_read(&mut h, 1), bmsr);
    mdic_op(&mut h, mdic::OP_WRITE, 1, 0x1d, 3);
    assert_eq!(phy_read(&mut h, 0x1d), 0);
    // Reset and restart bits clear themselves.
    mdic_op(&mut h, mdic::OP_WRITE, 1, 0, 0x9340);
    assert_eq!(phy_read(&mut h, 0), 0x1140);
    // No PHY at address 2.
    let v = mdic_op(&mut h, mdic::OP_READ, 2, 1, 0);
    assert_ne!(v & mdic::ERROR, 0);
}

#[test]
fn mdic_interrupt_and_autoneg_restart() {
    let mut h = Harness::new();
    h.enable_pci();
    h.write(IMS, int::MDAC | int::LSC);
    mdic_op(&mut h, mdic::OP_READ | mdic::INT_EN, 1, 1, 0);
    assert_eq!(h.read(ICR), int::MDAC | int::INT_ASSERTED);
    assert_eq!(h.irq.count(), 1);
    mdic_op(&mut h, mdic::OP_WRITE, 1, 0, 0x1340);
    assert_eq!(h.read(ICR) & int::LSC, int::LSC, "autoneg done again");
}

#[test]
fn status_follows_the_link() {
    let mut h = Harness::new();
    h.enable_pci();
    let up = h.read(STATUS);
    assert_eq!(up & 0xc3, 0x83, "link up, full duplex, 1000 Mb/s");
    assert_eq!(h.read(STATUS), up, "no side effects");
    h.write(IMS, int::LSC);
    h.dev.set_link(false);
    assert_eq!(h.read(STATUS) & 2, 0);
    assert_eq!(phy_read(&mut h, 1) & 0x24, 0);
    assert_eq!(h.read(ICR), int::LSC | int::INT_ASSERTED);
    assert_eq!(h.irq.count(), 1);
    h.dev.set_link(false);
    assert_eq!(h.read(ICR), 0, "no change, no LSC");
    h.dev.set_link(true);
    assert_eq!(h.read(STATUS), up);
    assert_eq!(phy_read(&mut h, 1) & 0x24, 0x24);
}

#[test]
fn slu_raises_link_status_change() {
    let mut h = Harness::new();
    h.write(CTRL, 0);
    assert_eq!(h.read(ICR), 0);
    h.write(CTRL, ctrl::SLU);
    assert_eq!(h.read(ICR), int::LSC);
}

#[test]
fn interrupts_are_level_and_resampled() {
    let mut h = Harness::new();
    h.enable_pci();
    h.write(ICS, int::TXDW);
    assert_eq!(h.irq.count(), 0, "masked");
    assert_eq!(h.read(ICS), int::TXDW, "ICS reads ICR without clearing");
    h.write(IMS, int::TXDW | int::RXT0);
    assert_eq!(h.read(IMS), int::TXDW | int::RXT0);
    assert_eq!(h.irq.count(), 1);
    // Still pending at EOI: asserted again.
    h.dev.intx_resample();
    assert_eq!(h.irq.count(), 2);
    // A new cause while the line is up needs no new assertion.
    h.write(ICS, int::RXT0);
    assert_eq!(h.irq.count(), 2);
    assert_eq!(h.read(ICR), int::TXDW | int::RXT0 | int::INT_ASSERTED);
    assert_eq!(h.read(ICR), 0, "read clears");
    h.dev.intx_resample();
    assert_eq!(h.irq.count(), 2, "nothing pending: not re-asserted");
    // Masked causes stay in ICR but do not interrupt.
    h.write(IMC, int::TXDW);
    h.write(ICS, int::TXDW);
    assert_eq!(h.irq.count(), 2);
    assert_eq!(h.read(ICR), int::TXDW, "no INT_ASSERTED when masked");
    // Writing ICR clears the bits written.
    h.write(ICS, int::RXT0 | int::TXDW);
    h.write(ICR, int::RXT0);
    assert_eq!(h.read(ICR), int::TXDW);
    // INTx disabled in the command register: no assertion until enabled.
    h.dev.intx_resample();
    h.dev.config_write(1, 0, &[0x07, 0x04]);
    h.write(ICS, int::RXT0);
    assert_eq!(h.irq.count(), 3);
    h.read(ICR);
    h.dev.intx_resample();
    h.write(ICS, int::RXT0);
    assert_eq!(h.irq.count(), 3);
    h.dev.config_write(1, 0, &[0x07, 0x00]);
    assert_eq!(h.irq.count(), 4);
}

#[test]
fn registers_read_back_and_unknown_ones_read_zero() {
    let mut h = Harness::new();
    for (off, v, want) in [
        (RDLEN, 0x1234_5fff, 0x0004_5f80),
        (TDLEN, 0x1f0, 0x180),
        (RDBAL, 0x1234_5678, 0x1234_5670),
        (TDH, 0x1_0003, 3),
        (RDTR, 0x12_3456, 0x3456),
        (ITR, 0x0000_00fa, 0xfa),
        (VFTA + 8, 0xdead_beef, 0xdead_beef),
        (RA + 8, 0x1122_3344, 0x1122_3344),
        (MANC, 0xffff_ffff, 0),
        (0x0ff0, 0xffff_ffff, 0),
        (0x1_fffc, 0xffff_ffff, 0),
    ] {
        h.write(off, v);
        assert_eq!(h.read(off), want, "register {off:#x}");
    }
    assert_eq!(h.read(VET), 0x8100);
    assert_eq!(h.read(RA), 0x1200_5452);
    assert_eq!(h.read(RA + 4), 0x8000_5634, "address valid");
}

#[test]
fn reset_restores_power_on_values() {
    let mut h = Harness::new();
    h.up();
    h.write(RA, 0);
    h.write(MTA, 5);
    h.set_bits(CTRL, ctrl::RST);
    assert_eq!(h.read(CTRL) & ctrl::RST, 0, "self-clearing");
    for off in [IMS, RCTL, TCTL, RDLEN, TDLEN, RDT, TDT, MTA, ICR] {
        assert_eq!(h.read(off), 0, "register {off:#x}");
    }
    assert_eq!(h.read(RA), 0x1200_5452);
}

#[test]
fn partial_and_indirect_accesses() {
    let mut h = Harness::new();
    let mut b = [0u8; 2];
    h.dev.bar_read(MMIO_BAR, u64::from(STATUS), &mut b);
    assert_eq!(u16::from_le_bytes(b), h.read(STATUS) as u16);
    h.write(RDTR, 0x1234);
    h.dev.bar_write(MMIO_BAR, u64::from(RDTR) + 1, &[0xab]);
    assert_eq!(h.read(RDTR), 0xab34);
    // A partial read of ICR does not clear it.
    h.write(ICS, int::RXT0);
    let mut one = [0u8; 1];
    h.dev.bar_read(MMIO_BAR, u64::from(ICR), &mut one);
    assert_eq!(one[0], int::RXT0 as u8);
    assert_eq!(h.read(ICR), int::RXT0);
    // Misaligned or odd-sized: ignored, reads zeros.
    let mut four = [0xffu8; 4];
    h.dev.bar_read(MMIO_BAR, u64::from(STATUS) + 2, &mut four);
    assert_eq!(four, [0; 4]);
    let mut eight = [0xffu8; 8];
    h.dev.bar_read(MMIO_BAR, u64::from(STATUS), &mut eight);
    assert_eq!(eight, [0; 8]);
    h.dev.bar_write(MMIO_BAR, u64::from(RDTR) + 3, &[1, 2]);
    assert_eq!(h.read(RDTR), 0xab34);
    h.dev.bar_read(7, 0, &mut four);
    assert_eq!(four, [0; 4]);
    // IOADDR selects, IODATA reads and writes.
    h.dev.bar_write(IO_BAR, 0, &STATUS.to_le_bytes());
    h.dev.bar_read(IO_BAR, 0, &mut four);
    assert_eq!(u32::from_le_bytes(four), STATUS);
    h.dev.bar_read(IO_BAR, 4, &mut four);
    assert_eq!(u32::from_le_bytes(four), h.read(STATUS));
    h.dev.bar_write(IO_BAR, 0, &TIPG.to_le_bytes());
    h.dev.bar_write(IO_BAR, 4, &0x0060_200au32.to_le_bytes());
    assert_eq!(h.read(TIPG), 0x0060_200a);
    h.dev.bar_read(IO_BAR, 8, &mut four);
    assert_eq!(four, [0; 4]);
}

#[test]
fn register_tables_are_sorted_and_disjoint() {
    assert!(PLAIN.windows(2).all(|w| w[0].0 < w[1].0), "binary search");
    for &(off, _, _) in &PLAIN {
        assert!(!IGNORED.iter().any(|&(s, e)| (s..e).contains(&off)));
        assert!(!(STATS_START..STATS_END).contains(&off));
    }
}

/// ITR: an interrupt sooner than ITR × 256 ns after the last one waits for
/// the host's timer; one after a quiet spell is raised at once.
#[test]
fn itr_holds_back_interrupts_that_come_too_soon() {
    use std::time::{Duration, Instant};
    let mut h = Harness::new();
    let base = Instant::now();
    let now = Arc::new(Mutex::new(base));
    let clock = now.clone();
    h.dev.set_clock(Box::new(move || *clock.lock().unwrap()));
    let at = |us: u64| {
        *now.lock().unwrap() = base + Duration::from_micros(us);
    };
    h.enable_pci();
    h.write(crate::e1000::regs::ITR, 1000); // 256 µs
    h.write(IMS, int::TXDW | int::RXT0);
    h.write(ICS, int::TXDW);
    assert_eq!(h.irq.count(), 1, "idle: at once");
    assert_eq!(h.dev.irq_deadline(), None);
    assert_eq!(h.read(ICR) & int::TXDW, int::TXDW);
    h.dev.intx_resample();

    at(100);
    h.write(ICS, int::RXT0);
    assert_eq!(h.irq.count(), 1, "100 µs after the last: held back");
    assert_eq!(
        h.dev.irq_deadline(),
        Some(base + Duration::from_micros(256))
    );
    // A resample or another cause in the meantime changes nothing.
    h.dev.intx_resample();
    h.write(ICS, int::TXDW);
    assert_eq!(h.irq.count(), 1);

    at(300);
    h.dev.irq_timer();
    assert_eq!(h.irq.count(), 2, "raised when the interval passed");
    assert_eq!(h.dev.irq_deadline(), None);
    assert_eq!(h.read(ICR) & (int::TXDW | int::RXT0), int::TXDW | int::RXT0);
    h.dev.intx_resample();

    // A quiet spell: the next one goes at once.
    at(2000);
    h.write(ICS, int::RXT0);
    assert_eq!(h.irq.count(), 3);
    // The guest turning ITR off releases a held-back interrupt at once.
    h.read(ICR);
    h.dev.intx_resample();
    at(2010);
    h.write(ICS, int::RXT0);
    assert_eq!(h.irq.count(), 3);
    h.write(crate::e1000::regs::ITR, 0);
    assert!(h
        .dev
        .irq_deadline()
        .is_some_and(|d| d <= base + Duration::from_micros(2010)));
    h.dev.irq_timer();
    assert_eq!(h.irq.count(), 4);
}
