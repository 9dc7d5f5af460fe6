//! A type-0 PCI configuration space (256 bytes) with per-bit write masks,
//! so that a guest can only change what a real device lets it change.
//! BARs and the capability list are laid out with the same masks: a BAR's
//! address bits below its size are read-only, which is all that sizing needs.

use super::{BarInfo, BarKind};

/// Byte offsets of the standard header fields.
pub mod offset {
    pub const VENDOR_ID: usize = 0x00;
    pub const DEVICE_ID: usize = 0x02;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const REVISION: usize = 0x08;
    pub const CLASS_CODE: usize = 0x09;
    pub const HEADER_TYPE: usize = 0x0e;
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
    pub const SUBSYSTEM_ID: usize = 0x2e;
    pub const BAR0: usize = 0x10;
    pub const CAPABILITIES: usize = 0x34;
    pub const INTERRUPT_LINE: usize = 0x3c;
    pub const INTERRUPT_PIN: usize = 0x3d;
}

/// Status register bit: a capability list starts at `offset::CAPABILITIES`.
pub const STATUS_CAP_LIST: u16 = 1 << 4;
/// First byte after the standard header, where capabilities go.
const CAPS_START: usize = 0x40;

/// Size of a conventional configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;

/// Configuration space contents and which bits the guest may write.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SPACE_SIZE],
    writable: [u8; CONFIG_SPACE_SIZE],
    /// Where the next capability goes; the last one added is `last_cap`.
    next_cap: usize,
    last_cap: Option<usize>,
}

impl ConfigSpace {
    /// A header for `vendor:device` of class `class:subclass:prog_if`, with
    /// the command register's I/O, memory, bus-master and INTx-disable bits
    /// and the interrupt-line register writable.
    pub fn new(
        vendor: u16,
        device: u16,
        class: u8,
        subclass: u8,
        prog_if: u8,
        revision: u8,
    ) -> Self {
        let mut cs = ConfigSpace {
            bytes: [0; CONFIG_SPACE_SIZE],
            writable: [0; CONFIG_SPACE_SIZE],
            next_cap: CAPS_START,
            last_cap: None,
        };
        cs.set_u16(offset::VENDOR_ID, vendor);
        cs.set_u16(offset::DEVICE_ID, device);
        cs.bytes[offset::REVISION] = revision;
        cs.bytes[offset::CLASS_CODE] = prog_if;
        cs.bytes[offset::CLASS_CODE + 1] = subclass;
        cs.bytes[offset::CLASS_CODE + 2] = class;
        // Command: I/O space (0), memory space (1), bus master (2), INTx disable (10).
        cs.set_writable_u16(offset::COMMAND, 0x0407);
        cs.writable[offset::INTERRUPT_LINE] = 0xff;
        cs
    }

    /// Sets a 16-bit field as the device presents it (not guest-writable by itself).
    pub fn set_u16(&mut self, at: usize, value: u16) {
        self.bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }

    /// Marks the bits of `mask` in the 16-bit field at `at` guest-writable.
    pub fn set_writable_u16(&mut self, at: usize, mask: u16) {
        self.writable[at..at + 2].copy_from_slice(&mask.to_le_bytes());
    }

    /// Sets a byte as the device presents it.
    pub fn set_u8(&mut self, at: usize, value: u8) {
        self.bytes[at] = value;
    }

    /// Sets a 32-bit field as the device presents it.
    pub fn set_u32(&mut self, at: usize, value: u32) {
        self.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// The byte at `at`; 0xff beyond the space.
    pub fn u8_at(&self, at: usize) -> u8 {
        self.bytes.get(at).copied().unwrap_or(0xff)
    }

    /// The 16-bit field at `at`; all ones beyond the space.
    pub fn u16_at(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.u8_at(at), self.u8_at(at.saturating_add(1))])
    }

    /// The 32-bit field at `at`; all ones beyond the space.
    pub fn u32_at(&self, at: usize) -> u32 {
        let b = |i: usize| self.u8_at(at.saturating_add(i));
        u32::from_le_bytes([b(0), b(1), b(2), b(3)])
    }

    /// Marks the bits of `mask` in the 32-bit field at `at` guest-writable.
    pub fn set_writable_u32(&mut self, at: usize, mask: u32) {
        self.writable[at..at + 4].copy_from_slice(&mask.to_le_bytes());
    }

    /// Marks the bits of `mask` in the byte at `at` guest-writable.
    pub fn set_writable_u8(&mut self, at: usize, mask: u8) {
        self.writable[at] = mask;
    }

    /// Appends a capability with ID `id` whose bytes after the ID and next
    /// pointer are `body`, links it into the list and returns its offset;
    /// `None` if it does not fit. Its bytes start read-only.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Option<usize> {
        let at = self.next_cap;
        let end = at.checked_add(2 + body.len())?;
        if end > CONFIG_SPACE_SIZE {
            return None;
        }
        self.bytes[at] = id;
        self.bytes[at + 1] = 0;
        self.bytes[at + 2..end].copy_from_slice(body);
        match self.last_cap {
            Some(prev) => self.bytes[prev + 1] = at as u8,
            None => {
                self.bytes[offset::CAPABILITIES] = at as u8;
                let status = self.u16_at(offset::STATUS) | STATUS_CAP_LIST;
                self.set_u16(offset::STATUS, status);
            }
        }
        self.last_cap = Some(at);
        self.next_cap = (end + 3) & !3;
        Some(at)
    }

    /// The capabilities as (offset, id), following the list as a driver
    /// would, at most 48 of them so that a loop cannot hang the walk.
    pub fn capabilities(&self) -> Vec<(usize, u8)> {
        let mut caps = Vec::new();
        if self.u16_at(offset::STATUS) & STATUS_CAP_LIST == 0 {
            return caps;
        }
        let mut at = usize::from(self.bytes[offset::CAPABILITIES] & !3);
        while at >= CAPS_START && caps.len() < 48 {
            caps.push((at, self.bytes[at]));
            at = usize::from(self.bytes[at + 1] & !3);
        }
        caps
    }

    /// Declares BAR `bar.index` (and the next one too for a 64-bit BAR):
    /// its type bits, and address bits writable down to its size. `false`
    /// if the index, kind or size is not one a BAR can have.
    pub fn add_bar(&mut self, bar: &BarInfo) -> bool {
        let index = usize::from(bar.index);
        let wide = bar.kind == BarKind::Memory64;
        let min = if bar.kind == BarKind::Io { 4 } else { 16 };
        if index + usize::from(wide) > 5
            || !bar.size.is_power_of_two()
            || bar.size < min
            || (!wide && bar.size > 1 << 31)
        {
            return false;
        }
        let at = offset::BAR0 + index * 4;
        let mask = !(bar.size - 1);
        let flags: u32 = match bar.kind {
            BarKind::Io => 1,
            BarKind::Memory32 => 0,
            BarKind::Memory64 => 0b100,
        } | if bar.prefetchable && bar.kind != BarKind::Io {
            0b1000
        } else {
            0
        };
        self.set_u32(at, flags);
        // I/O BARs decode 16 bits (x86 ports); the upper half reads 0.
        let writable = match bar.kind {
            BarKind::Io => mask as u32 & 0xfffc,
            _ => mask as u32 & !15,
        };
        self.set_writable_u32(at, writable);
        if wide {
            self.set_u32(at + 4, 0);
            self.set_writable_u32(at + 4, (mask >> 32) as u32);
        }
        true
    }

    /// The address the guest gave BAR `index`, as declared by `add_bar` (a
    /// 64-bit BAR's two dwords joined); `None` for a slot with no BAR.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        if index > 5 {
            return None;
        }
        let at = offset::BAR0 + index * 4;
        if self.writable_u32(at) == 0 {
            return None;
        }
        let low = self.u32_at(at);
        if low & 1 == 1 {
            return Some(u64::from(low & !3));
        }
        let high = if low & 0b110 == 0b100 && index < 5 {
            u64::from(self.u32_at(at + 4))
        } else {
            0
        };
        Some(high << 32 | u64::from(low & !15))
    }

    fn writable_u32(&self, at: usize) -> u32 {
        u32::from_le_bytes([
            self.writable[at],
            self.writable[at + 1],
            self.writable[at + 2],
            self.writable[at + 3],
        ])
    }

    /// The dword register `reg`; all ones beyond the space.
    pub fn read_reg(&self, reg: usize) -> u32 {
        match self.bytes.get(reg * 4..reg * 4 + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => u32::MAX,
        }
    }

    /// A guest write of `data` at byte `offset` of register `reg`: only the
    /// writable bits change; anything out of range is ignored.
    pub fn write_reg(&mut self, reg: usize, offset: usize, data: &[u8]) {
        let Some(start) = reg.checked_mul(4).and_then(|r| r.checked_add(offset)) else {
            return;
        };
        if offset + data.len() > 4 {
            return;
        }
        for (i, &value) in data.iter().enumerate() {
            let Some(mask) = self.writable.get(start + i).copied() else {
                return;
            };
            let old = self.bytes[start + i];
            self.bytes[start + i] = (old & !mask) | (value & mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_reads_back() {
        let cs = ConfigSpace::new(0x1b36, 0x0008, 0x06, 0x00, 0x00, 1);
        assert_eq!(cs.read_reg(0), 0x0008_1b36);
        assert_eq!(cs.read_reg(2), 0x0600_0001);
        assert_eq!(cs.read_reg(64), u32::MAX);
    }

    #[test]
    fn only_writable_bits_change() {
        let mut cs = ConfigSpace::new(0x1b36, 0x0008, 0x06, 0x00, 0x00, 0);
        cs.write_reg(0, 0, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(cs.read_reg(0), 0x0008_1b36);
        cs.write_reg(1, 0, &[0xff, 0xff]);
        assert_eq!(cs.read_reg(1) & 0xffff, 0x0407);
        cs.write_reg(15, 0, &[0x0b]);
        assert_eq!(cs.read_reg(15) & 0xff, 0x0b);
    }

    #[test]
    fn capabilities_are_linked() {
        let mut cs = ConfigSpace::new(1, 2, 3, 4, 5, 6);
        assert!(cs.capabilities().is_empty());
        let a = cs
            .add_capability(0x09, &[16, 1, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
            .unwrap();
        let b = cs.add_capability(0x11, &[0; 10]).unwrap();
        assert_eq!((a, b), (0x40, 0x50));
        assert_eq!(cs.u16_at(offset::STATUS) & STATUS_CAP_LIST, STATUS_CAP_LIST);
        assert_eq!(cs.u8_at(offset::CAPABILITIES), 0x40);
        assert_eq!(cs.capabilities(), vec![(0x40, 0x09), (0x50, 0x11)]);
        assert_eq!(cs.u32_at(0x48), 0x0403_0201);
        // Read-only unless marked.
        cs.write_reg(0x48 / 4, 0, &[0xff; 4]);
        assert_eq!(cs.u32_at(0x48), 0x0403_0201);
        assert_eq!(cs.add_capability(0x09, &[0; 250]), None);
    }

    #[test]
    fn bars_size_like_hardware() {
        let mut cs = ConfigSpace::new(1, 2, 3, 4, 5, 6);
        let bar = |index, size, kind| BarInfo {
            index,
            size,
            kind,
            prefetchable: false,
        };
        assert!(cs.add_bar(&bar(0, 0x4000, BarKind::Memory64)));
        assert!(cs.add_bar(&bar(2, 0x1000, BarKind::Memory32)));
        assert!(cs.add_bar(&bar(3, 0x20, BarKind::Io)));
        assert!(!cs.add_bar(&bar(5, 0x4000, BarKind::Memory64)));
        assert!(!cs.add_bar(&bar(4, 0x3000, BarKind::Memory32)));
        assert!(!cs.add_bar(&bar(4, 8, BarKind::Memory32)));
        for reg in 4..8 {
            cs.write_reg(reg, 0, &[0xff; 4]);
        }
        assert_eq!(cs.read_reg(4), 0xffff_c004);
        assert_eq!(cs.read_reg(5), 0xffff_ffff);
        assert_eq!(cs.read_reg(6), 0xffff_f000);
        assert_eq!(cs.read_reg(7), 0x0000_ffe1);
        cs.write_reg(4, 0, &0xe000_0000u32.to_le_bytes());
        cs.write_reg(5, 0, &2u32.to_le_bytes());
        assert_eq!(cs.bar_address(0), Some(0x2_e000_0000));
        assert_eq!(cs.bar_address(3), Some(0xffe0));
        assert_eq!(cs.bar_address(4), None);
        assert_eq!(cs.bar_address(9), None);
    }

    #[test]
    fn hostile_writes_are_ignored() {
        let mut cs = ConfigSpace::new(1, 2, 3, 4, 5, 6);
        let before = cs.read_reg(1);
        cs.write_reg(63, 3, &[1, 2]);
        cs.write_reg(64, 0, &[1]);
        cs.write_reg(usize::MAX, 0, &[1]);
        cs.write_reg(1, 2, &[0xff; 8]);
        assert_eq!(cs.read_reg(1), before);
    }
}
