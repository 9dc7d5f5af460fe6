//! The PCI host bridge: configuration mechanism #1 on ports 0xCF8 (address)
//! and 0xCFC-0xCFF (data), bus 0 only, and the host bridge itself at 00:00.0.

use devices::pci::{ConfigSpace, PciDevice};

use crate::vcpu::bus::{BusDevice, DeviceRequest};

/// Slots on bus 0.
pub const SLOTS: usize = 32;
/// Offset of the data window from 0xCF8.
const DATA_OFFSET: u64 = 4;
/// Enable bit of the configuration address register.
const ENABLE: u32 = 1 << 31;

/// The host bridge's own function: a generic PCIe host bridge identity.
struct HostBridge(ConfigSpace);

impl PciDevice for HostBridge {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.0.read_reg(reg)
    }
    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.0.write_reg(reg, offset, data)
    }
}

/// Bus 0 and the 0xCF8 address latch. Registered at 0xCF8 with length 8;
/// 0xCF9, the reset control register, shares that decoder and is forwarded.
pub struct PciRoot {
    address: u32,
    slots: Vec<Option<Box<dyn PciDevice>>>,
    reset_control: Box<dyn BusDevice>,
}

impl PciRoot {
    /// Bus 0 with only the host bridge on it; byte accesses to 0xCF9 go to
    /// `reset_control`.
    pub fn new(reset_control: Box<dyn BusDevice>) -> Self {
        let mut slots: Vec<Option<Box<dyn PciDevice>>> = (0..SLOTS).map(|_| None).collect();
        // Red Hat's generic PCIe host bridge id: Linux applies no quirks to it.
        slots[0] = Some(Box::new(HostBridge(ConfigSpace::new(
            0x1b36, 0x0008, 0x06, 0x00, 0x00, 0,
        ))));
        PciRoot {
            address: 0,
            slots,
            reset_control,
        }
    }

    /// Puts `device` in the first free slot and returns the slot number.
    pub fn add(&mut self, device: Box<dyn PciDevice>) -> Option<u8> {
        let slot = self.slots.iter().position(Option::is_none)?;
        self.slots[slot] = Some(device);
        Some(slot as u8)
    }

    /// The device and register the address latch selects; function 0 of bus 0 only.
    fn selected(&mut self) -> Option<(&mut Box<dyn PciDevice>, usize)> {
        let a = self.address;
        let (bus, slot, function, reg) = (
            (a >> 16) & 0xff,
            (a >> 11) & 0x1f,
            (a >> 8) & 0x7,
            (a >> 2) & 0x3f,
        );
        if a & ENABLE == 0 || bus != 0 || function != 0 {
            return None;
        }
        Some((self.slots[slot as usize].as_mut()?, reg as usize))
    }
}

impl BusDevice for PciRoot {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (1, 1) => self.reset_control.read(0, data),
            (DATA_OFFSET..=7, 1 | 2 | 4) if offset - DATA_OFFSET + data.len() as u64 <= 4 => {
                let byte = (offset - DATA_OFFSET) as usize;
                let value = match self.selected() {
                    Some((dev, reg)) => dev.config_read(reg),
                    None => u32::MAX,
                };
                data.copy_from_slice(&value.to_le_bytes()[byte..byte + data.len()]);
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceRequest {
        match (offset, data.len()) {
            (0, 4) => {
                self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            (1, 1) => return self.reset_control.write(0, data),
            (DATA_OFFSET..=7, 1 | 2 | 4) if offset - DATA_OFFSET + data.len() as u64 <= 4 => {
                if let Some((dev, reg)) = self.selected() {
                    dev.config_write(reg, (offset - DATA_OFFSET) as usize, data);
                }
            }
            _ => {}
        }
        DeviceRequest::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoReset;
    impl BusDevice for NoReset {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) -> DeviceRequest {
            DeviceRequest::Reset
        }
    }

    fn cfg_read(root: &mut PciRoot, slot: u32, reg: u32) -> u32 {
        root.write(0, &(ENABLE | (slot << 11) | (reg << 2)).to_le_bytes());
        let mut b = [0u8; 4];
        root.read(4, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn host_bridge_is_at_slot_0_and_others_are_absent() {
        let mut root = PciRoot::new(Box::new(NoReset));
        assert_eq!(cfg_read(&mut root, 0, 0), 0x0008_1b36);
        assert_eq!(cfg_read(&mut root, 0, 2) >> 8, 0x06_00_00);
        assert_eq!(cfg_read(&mut root, 1, 0), u32::MAX);
        assert_eq!(cfg_read(&mut root, 31, 0), u32::MAX);
    }

    #[test]
    fn address_latch_reads_back_and_needs_enable() {
        let mut root = PciRoot::new(Box::new(NoReset));
        root.write(0, &0x8000_0000u32.to_le_bytes());
        let mut b = [0u8; 4];
        root.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x8000_0000);
        root.write(0, &0u32.to_le_bytes());
        root.read(4, &mut b);
        assert_eq!(b, [0xff; 4]);
    }

    #[test]
    fn byte_reads_of_the_data_window() {
        let mut root = PciRoot::new(Box::new(NoReset));
        root.write(0, &ENABLE.to_le_bytes());
        let mut b = [0u8; 2];
        root.read(6, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0x0008);
        let mut wide = [0u8; 4];
        root.read(6, &mut wide);
        assert_eq!(wide, [0xff; 4], "a dword access must be aligned");
    }

    #[test]
    fn reset_control_is_forwarded() {
        let mut root = PciRoot::new(Box::new(NoReset));
        assert_eq!(root.write(1, &[6]), DeviceRequest::Reset);
        assert_eq!(root.write(1, &[6, 0]), DeviceRequest::None);
    }
}
