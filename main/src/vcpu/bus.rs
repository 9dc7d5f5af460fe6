//! Dispatch of port-I/O and MMIO exits to the devices that own the ranges.

use std::sync::{Arc, Mutex};

/// What a device asks of the VM as a result of a guest access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// Nothing: carry on.
    None,
    /// The guest asked for a reset (i8042 0xFE, reset control register).
    Reset,
    /// The guest asked to power off (ACPI S5).
    PowerOff,
}

/// A device reachable through port I/O or MMIO. `offset` is relative to the
/// start of the range the device was registered at.
pub trait BusDevice: Send {
    /// Fill `data` with what the guest reads at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceRequest;
}

/// A device shared between vCPU threads.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Why a device could not be placed on a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus range {start:#x}+{len:#x} overlaps a device already there")]
    Overlap { start: u64, len: u64 },
    #[error("bus range {start:#x}+{len:#x} is empty or wraps around")]
    BadRange { start: u64, len: u64 },
}

/// An address space (port I/O or MMIO) divided among devices.
#[derive(Default, Clone)]
pub struct Bus {
    /// start → (length, device); ranges never overlap.
    ranges: std::collections::BTreeMap<u64, (u64, SharedDevice)>,
}

impl Bus {
    /// Places `device` at `start..start+len`.
    pub fn insert(&mut self, start: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        let end = start
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { start, len })?;
        let before = self.ranges.range(..end).next_back();
        if let Some((&s, &(l, _))) = before {
            if s + l > start {
                return Err(BusError::Overlap { start, len });
            }
        }
        self.ranges.insert(start, (len, device));
        Ok(())
    }

    /// The device covering `addr`, and the offset of `addr` within its range.
    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (&start, (len, dev)) = self.ranges.range(..=addr).next_back()?;
        (addr - start < *len).then_some((addr - start, dev))
    }

    /// Reads from the device at `addr`; false (and `data` untouched) if none.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                lock(dev).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; `None` if no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<DeviceRequest> {
        let (offset, dev) = self.find(addr)?;
        let request = lock(dev).write(offset, data);
        Some(request)
    }
}

/// Locks a device, carrying on past a poisoned lock: a device's state is
/// plain data, and one vCPU thread's panic must not wedge the others.
fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u8);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0 + offset as u8);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) -> DeviceRequest {
            self.0 = data[0];
            DeviceRequest::None
        }
    }

    fn dev(v: u8) -> SharedDevice {
        Arc::new(Mutex::new(Echo(v)))
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let mut bus = Bus::default();
        bus.insert(0x10, 4, dev(1)).unwrap();
        bus.insert(0x20, 2, dev(9)).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x12, &mut b));
        assert_eq!(b[0], 3);
        assert!(bus.read(0x21, &mut b));
        assert_eq!(b[0], 10);
        assert!(!bus.read(0x14, &mut b));
        assert!(!bus.read(0x0f, &mut b));
        assert_eq!(bus.write(0x10, &[7]), Some(DeviceRequest::None));
        assert_eq!(bus.write(0x30, &[7]), None);
    }

    #[test]
    fn rejects_overlaps_and_empty_ranges() {
        let mut bus = Bus::default();
        bus.insert(0x10, 0x10, dev(0)).unwrap();
        assert!(bus.insert(0x1f, 1, dev(0)).is_err());
        assert!(bus.insert(0x08, 0x09, dev(0)).is_err());
        assert!(bus.insert(0x08, 0x08, dev(0)).is_ok());
        assert!(bus.insert(0x40, 0, dev(0)).is_err());
        assert!(bus.insert(u64::MAX, 2, dev(0)).is_err());
    }
}
