//! Platform devices the vCPU process emulates itself: COM1, the i8042, the
//! PCI host bridge, ACPI's power-off register, and the firmware tables.

pub mod acpi_pm;
pub mod i8042;
pub mod pci_host;
pub mod remote_pci;
pub mod serial;

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::vcpu::layout::ports;
use crate::vcpu::runner::Buses;

/// Creates the platform devices and puts them on their buses. COM1 writes
/// to `serial_out` and, with `serial_stdin`, reads moatvm's standard input.
pub fn create(
    vm: &VmFd,
    serial_out: serial::SerialOutput,
    serial_stdin: bool,
    pci_devices: Vec<Box<dyn devices::pci::PciDevice>>,
) -> Result<Buses> {
    let mut buses = Buses::default();

    let irq = EventFd::new(libc::EFD_NONBLOCK).context("cannot create the serial irqfd")?;
    vm.register_irqfd(&irq, ports::COM1_IRQ)
        .context("cannot register the serial irqfd")?;
    let com1 = Arc::new(Mutex::new(serial::SerialPort::new(irq, serial_out)));
    if serial_stdin {
        serial::spawn_stdin_reader(com1.clone()).context("cannot start the serial input thread")?;
    }
    buses.pio.insert(u64::from(ports::COM1), 8, com1)?;
    let mut pci_root = pci_host::PciRoot::new(Box::new(acpi_pm::ResetControl::new()));
    for device in pci_devices {
        pci_root.add(device).context("no PCI slot left")?;
    }
    buses.pio.insert(
        u64::from(ports::I8042_DATA),
        u64::from(ports::I8042_COMMAND - ports::I8042_DATA) + 1,
        Arc::new(Mutex::new(i8042::I8042::default())),
    )?;
    buses.pio.insert(
        u64::from(ports::PCI_CONFIG_ADDRESS),
        8,
        Arc::new(Mutex::new(pci_root)),
    )?;
    buses.pio.insert(
        u64::from(ports::ACPI_SLEEP_CONTROL),
        2,
        Arc::new(Mutex::new(acpi_pm::AcpiPm::new())),
    )?;
    Ok(buses)
}

/// Writes the firmware tables that describe the platform (ACPI: CPUs,
/// IOAPIC, PCI routing, power-off) and returns where the RSDP is.
pub fn write_firmware_tables(mem: &GuestMemoryMmap, cpus: u8) -> Result<Option<GuestAddress>> {
    let rsdp =
        crate::vcpu::acpi::create_acpi_tables(mem, cpus).context("cannot write the ACPI tables")?;
    Ok(Some(rsdp))
}
