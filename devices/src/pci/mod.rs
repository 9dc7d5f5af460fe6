//! PCI plumbing shared by every PCI device model: the configuration space
//! and the trait a device implements to be reached through it.

mod config;

pub use config::{offset, ConfigSpace, CONFIG_SPACE_SIZE};

/// A function on the PCI bus, reached through configuration cycles.
pub trait PciDevice: Send {
    /// Reads the 32-bit configuration register `reg` (a dword index, 0..64).
    fn config_read(&mut self, reg: usize) -> u32;
    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` of configuration register `reg`.
    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]);
}
