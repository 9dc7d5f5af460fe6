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
