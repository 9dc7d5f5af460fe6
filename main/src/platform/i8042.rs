//! The i8042 keyboard controller, as far as a guest needs it to reset the
//! machine: a write of 0xFE to the command port ends the VM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use crate::vcpu::bus::{BusDevice, DeviceRequest};

/// Remembers that the controller pulsed the reset line.
#[derive(Default, Clone)]
pub struct ResetLine(Arc<AtomicBool>);

impl Trigger for ResetLine {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Ports 0x60 (data) to 0x64 (command); 0x61 is KVM's, not ours.
pub struct I8042 {
    device: I8042Device<ResetLine>,
    reset: ResetLine,
}

impl Default for I8042 {
    fn default() -> Self {
        let reset = ResetLine::default();
        I8042 {
            device: I8042Device::new(reset.clone()),
            reset,
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Ok(off), [byte]) = (u8::try_from(offset), data) {
            *byte = self.device.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceRequest {
        if let (Ok(off), [byte]) = (u8::try_from(offset), data) {
            let _ = self.device.write(off, *byte);
        }
        if self.reset.0.swap(false, Ordering::SeqCst) {
            DeviceRequest::Reset
        } else {
            DeviceRequest::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_0xfe_resets() {
        let mut kbd = I8042::default();
        assert_eq!(kbd.write(4, &[0xd1]), DeviceRequest::None);
        assert_eq!(kbd.write(0, &[0xfe]), DeviceRequest::None);
        assert_eq!(kbd.write(4, &[0xfe]), DeviceRequest::Reset);
        assert_eq!(kbd.write(4, &[0xfe, 0xfe]), DeviceRequest::None);
    }
}
