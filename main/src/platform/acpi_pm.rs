//! The two power registers a hardware-reduced ACPI guest uses to leave: the
//! sleep control/status pair the FADT points at (power-off through `\_S5_`)
//! and the PIIX-style reset control register at port 0xCF9 (FADT RESET_REG).

use crate::vcpu::bus::{BusDevice, DeviceRequest};

/// SLP_TYP of the soft-off state: the DSDT's `\_S5_` package declares it and
/// [`AcpiPm`] powers off when the guest writes it with SLP_EN.
pub const S5_SLP_TYP: u8 = 5;

/// Sleep control register: SLP_TYP is bits 2-4.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111 << SLP_TYP_SHIFT;
/// Sleep control register: SLP_EN, "enter the sleep state now".
const SLP_EN: u8 = 1 << 5;
/// Reset control register: RST_CPU; the reset happens when it is written as 1.
const RST_CPU: u8 = 1 << 2;

/// The ACPI sleep control register (offset 0) and sleep status register
/// (offset 1), registered at `ports::ACPI_SLEEP_CONTROL` with length 2.
///
/// Only soft-off is implemented: writing `S5_SLP_TYP << 2 | SLP_EN` as one
/// byte to the control register powers the VM off. Everything reads as 0: the
/// status register's WAK_STS never sets because the VM never sleeps and wakes.
#[derive(Debug, Default)]
pub struct AcpiPm;

impl AcpiPm {
    /// A new sleep register pair.
    pub fn new() -> Self {
        Self
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceRequest {
        match (offset, data) {
            (0, &[value])
                if value & SLP_EN != 0 && (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT == S5_SLP_TYP =>
            {
                log::info!("guest entered ACPI S5: powering off");
                DeviceRequest::PowerOff
            }
            _ => {
                // Includes the WAK_STS clear Linux writes to the status
                // register before sleeping: there is nothing to clear.
                log::debug!("acpi pm: ignored write {data:x?} at offset {offset}");
                DeviceRequest::None
            }
        }
    }
}

/// The reset control register at `ports::RESET_CONTROL` (one byte): writing
/// a value with RST_CPU (bit 2) set, like the FADT's RESET_VALUE 0x06, resets
/// the VM. Reads return the last value written, RST_CPU cleared.
#[derive(Debug, Default)]
pub struct ResetControl {
    value: u8,
}

impl ResetControl {
    /// A new reset control register, reading as 0.
    pub fn new() -> Self {
        Self::default()
    }
}

impl BusDevice for ResetControl {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (0, [byte]) = (offset, data) {
            *byte = self.value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceRequest {
        let (0, &[value]) = (offset, data) else {
            log::debug!("reset control: ignored write {data:x?} at offset {offset}");
            return DeviceRequest::None;
        };
        self.value = value & !RST_CPU;
        if value & RST_CPU != 0 {
            log::info!("guest wrote {value:#04x} to the reset control register: resetting");
            DeviceRequest::Reset
        } else {
            DeviceRequest::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POWER_OFF: u8 = S5_SLP_TYP << 2 | SLP_EN;

    #[test]
    fn acpi_pm_powers_off_on_s5() {
        let mut pm = AcpiPm::new();
        // What Linux does: clear WAK_STS, then write SLP_TYP | SLP_EN.
        assert_eq!(pm.write(1, &[0x80]), DeviceRequest::None);
        assert_eq!(pm.write(0, &[POWER_OFF]), DeviceRequest::PowerOff);
        // Bits outside SLP_TYP and SLP_EN don't matter.
        assert_eq!(pm.write(0, &[POWER_OFF | 0xc3]), DeviceRequest::PowerOff);
    }

    #[test]
    fn acpi_pm_ignores_everything_else() {
        let mut pm = AcpiPm::new();
        let other_typ = (S5_SLP_TYP ^ 1) << 2 | SLP_EN;
        for (offset, data) in [
            (0, &[S5_SLP_TYP << 2][..]), // SLP_EN clear
            (0, &[other_typ]),           // another sleep state
            (0, &[SLP_EN]),
            (0, &[]),
            (0, &[POWER_OFF, 0]), // wrong width
            (0, &[POWER_OFF, 0, 0, 0]),
            (1, &[POWER_OFF]), // the status register
            (2, &[POWER_OFF]),
            (u64::MAX, &[POWER_OFF]),
        ] {
            assert_eq!(
                pm.write(offset, data),
                DeviceRequest::None,
                "{offset} {data:?}"
            );
        }
    }

    #[test]
    fn acpi_pm_reads_zero() {
        let mut pm = AcpiPm::new();
        pm.write(0, &[0xff]);
        for (offset, len) in [
            (0, 1),
            (1, 1),
            (0, 2),
            (0, 4),
            (7, 8),
            (u64::MAX, 3),
            (0, 0),
        ] {
            let mut data = vec![0xaa; len];
            pm.read(offset, &mut data);
            assert!(data.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn reset_control_resets_on_rst_cpu() {
        let mut rc = ResetControl::new();
        // Linux's "reboot=pci": SYS_RST first, then SYS_RST | RST_CPU.
        assert_eq!(rc.write(0, &[0x02]), DeviceRequest::None);
        let mut data = [0];
        rc.read(0, &mut data);
        assert_eq!(data, [0x02]);
        assert_eq!(rc.write(0, &[0x06]), DeviceRequest::Reset);
        assert_eq!(rc.write(0, &[0x0e]), DeviceRequest::Reset);
        rc.read(0, &mut data);
        assert_eq!(data, [0x0a]);
    }

    #[test]
    fn reset_control_ignores_odd_accesses() {
        let mut rc = ResetControl::new();
        for (offset, data) in [
            (0, &[][..]),
            (0, &[0x06, 0x06]),
            (1, &[0x06]),
            (u64::MAX, &[0x06]),
        ] {
            assert_eq!(rc.write(offset, data), DeviceRequest::None);
        }
        for (offset, len) in [(0, 2), (0, 4), (1, 1), (u64::MAX, 1), (0, 0)] {
            let mut data = vec![0xaa; len];
            rc.read(offset, &mut data);
            assert!(data.iter().all(|&b| b == 0));
        }
    }
}
