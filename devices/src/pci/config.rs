//! A type-0 PCI configuration space (256 bytes) with per-bit write masks,
//! so that a guest can only change what a real device lets it change.

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
    pub const INTERRUPT_LINE: usize = 0x3c;
}

/// Size of a conventional configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;

/// Configuration space contents and which bits the guest may write.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SPACE_SIZE],
    writable: [u8; CONFIG_SPACE_SIZE],
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
