//! The ACPI tables that describe the VM to the guest: a hardware-reduced
//! ACPI 6.5 platform with one PCI host bridge and COM1.
//!
//! Everything lives in `ACPI_START..ACPI_END`, in this order:
//!
//! ```text
//! RSDP  at ACPI_START, where Linux's scan of 0xE0000..0x100000 finds it
//! DSDT  \_SB.PCI0 (with _PRT), \_SB.COM1, \_S5_
//! FACP  (FADT) hardware-reduced, pointing at the DSDT and at the sleep
//!       and reset registers of platform::acpi_pm
//! APIC  (MADT) one local APIC per vCPU, one IOAPIC
//! XSDT  listing FACP and APIC
//! ```
//!
//! Hardware-reduced ACPI means no SCI, no PM1/GPE blocks, no PM timer and no
//! FACS; it also makes Linux skip the legacy PIC and the PIT, so every
//! interrupt it uses comes from the DSDT (`_CRS`, `_PRT`) or from MSI.

use acpi_tables::{
    aml,
    fadt::{FADTBuilder, Flags},
    gas::{AccessSize, AddressSpace, GAS},
    madt::{EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT},
    rsdp::Rsdp,
    sdt::Sdt,
    xsdt::XSDT,
    Aml,
};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError};

use super::layout::{self, ports};
use crate::platform::acpi_pm::S5_SLP_TYP;

/// Most vCPUs the tables describe.
pub const MAX_CPUS: u8 = 32;

const OEM_ID: [u8; 6] = *b"MOATVM";
const OEM_TABLE_ID: [u8; 8] = *b"MOATVM  ";
const OEM_REVISION: u32 = 1;
/// Tables start on 16-byte boundaries (the RSDP must; the others may as well).
const ALIGN: u64 = 16;

/// FADT IAPC_BOOT_ARCH: no VGA (bit 2) and no CMOS RTC (bit 5: nothing
/// answers ports 0x70/0x71; the guest gets wall-clock time from kvmclock).
/// The 8042 flag (bit 1) stays clear and the DSDT has no PNP0303, so Linux
/// does not probe a keyboard controller that only knows how to reset the
/// machine (probing one that never answers costs seconds of timeouts);
/// `reboot=k` still writes 0xFE to port 0x64 directly. Bit 3 (MSI not
/// supported) stays clear: NICs use MSI-X.
const IAPC_BOOT_ARCH: u16 = 1 << 2 | 1 << 5;
/// RESET_VALUE written to the reset control register: SYS_RST | RST_CPU.
const RESET_VALUE: u8 = 0x06;
/// MADT flag PCAT_COMPAT: the machine also has dual 8259s (KVM's in-kernel
/// irqchip includes them), which the OS must mask before using the IOAPIC.
const MADT_PCAT_COMPAT: u32 = 1;
/// Why the ACPI tables could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables describe 1 to [`MAX_CPUS`] vCPUs.
    #[error("cannot describe {0} vCPUs in ACPI: 1 to {MAX_CPUS} are supported")]
    CpuCount(u8),
    /// The tables would run past `layout::ACPI_END`.
    #[error("the ACPI tables end at {0:#x}, past the ACPI area's end {end:#x}", end = layout::ACPI_END)]
    TooLarge(u64),
    /// Guest memory does not cover the ACPI area.
    #[error("cannot write the ACPI tables to guest memory: {0}")]
    GuestMemory(#[from] GuestMemoryError),
}

/// Write the ACPI tables for a VM with `cpus` vCPUs into `mem` and return the
/// address of the RSDP (`layout::ACPI_START`), for boot_params.acpi_rsdp_addr.
pub fn create_acpi_tables<M: GuestMemory>(mem: &M, cpus: u8) -> Result<GuestAddress, AcpiError> {
    if !(1..=MAX_CPUS).contains(&cpus) {
        return Err(AcpiError::CpuCount(cpus));
    }
    let rsdp_addr = layout::ACPI_START;
    let mut area = Area {
        next: align_up(rsdp_addr + Rsdp::len() as u64),
        tables: Vec::new(),
    };

    let dsdt_addr = area.place(dsdt())?;
    let facp_addr = area.place(fadt(dsdt_addr))?;
    let apic_addr = area.place(madt(cpus))?;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(facp_addr);
    xsdt.add_entry(apic_addr);
    let xsdt_addr = area.place(to_bytes(&xsdt))?;
    area.tables
        .push((rsdp_addr, to_bytes(&Rsdp::new(OEM_ID, xsdt_addr))));

    for (addr, bytes) in &area.tables {
        mem.write_slice(bytes, GuestAddress(*addr))?;
    }
    Ok(GuestAddress(rsdp_addr))
}

/// Hands out consecutive, aligned addresses in the ACPI area.
struct Area {
    next: u64,
    tables: Vec<(u64, Vec<u8>)>,
}

impl Area {
    /// Reserve room for `table` and return its address.
    fn place(&mut self, table: Vec<u8>) -> Result<u64, AcpiError> {
        let addr = self.next;
        let end = addr + table.len() as u64;
        if end > layout::ACPI_END {
            return Err(AcpiError::TooLarge(end));
        }
        self.next = align_up(end);
        self.tables.push((addr, table));
        Ok(addr)
    }
}

fn align_up(addr: u64) -> u64 {
    addr.next_multiple_of(ALIGN)
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// An 8-bit register in I/O port space, as the FADT's generic addresses say it.
fn io_byte(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        port.into(),
    )
}

/// The FADT: hardware-reduced, so only X_DSDT, the reset register, the sleep
/// registers and the boot flags matter.
fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // No fixed-feature power or sleep button.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    fadt.reset_reg = io_byte(ports::RESET_CONTROL);
    fadt.reset_value = RESET_VALUE;
    fadt.sleep_control_reg = io_byte(ports::ACPI_SLEEP_CONTROL);
    fadt.sleep_status_reg = io_byte(ports::ACPI_SLEEP_STATUS);
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"MoatVM\0\0").into();
    to_bytes(&fadt.finalize())
}

/// The MADT: local APIC `n` (processor UID and APIC ID `n`) for vCPU `n`, and
/// the IOAPIC with its 24 pins at GSIs 0-23.
///
/// There is no interrupt source override. KVM's default GSI routing wires ISA
/// IRQ n to IOAPIC pin n (GSI n), IRQ 0 included, which is what the absence
/// of overrides tells the OS. An IRQ0->GSI2 override would be wrong without
/// custom routing (and Linux starts no PIT in hardware-reduced mode anyway),
/// and there is no SCI to override.
fn madt(cpus: u8) -> Vec<u8> {
    let lapic = LocalInterruptController::Address(layout::LAPIC_START as u32);
    let mut madt = MADT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION, lapic);
    for id in 0..cpus {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(0, layout::IOAPIC_START as u32, 0));
    // The crate offers no way to set the MADT flags: patch them in.
    let mut bytes = to_bytes(&madt);
    bytes[40..44].copy_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    bytes[9] = 0;
    bytes[9] = 0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)));
    bytes
}

/// The DSDT (revision 2: 64-bit integers).
fn dsdt() -> Vec<u8> {
    let mut sb = Vec::new();
    pci_host_bridge(&mut sb);
    com1(&mut sb);
    let mut body = aml::Scope::raw("\\_SB_".into(), sb);
    // Soft-off: SLP_TYPa (the only one hardware-reduced ACPI uses), SLP_TYPb,
    // two reserved.
    let s5 = aml::Package::new(vec![&S5_SLP_TYP, &aml::ZERO, &aml::ZERO, &aml::ZERO]);
    aml::Name::new("_S5_".into(), &s5).to_aml_bytes(&mut body);

    let mut dsdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}

/// `\_SB.PCI0`: a conventional PCI host bridge (PNP0A03; configuration through
/// ports 0xCF8-0xCFF only, there is no ECAM and so no PNP0A08/MCFG) owning
/// buses 0-255, I/O ports 0x0D00-0xFFFF and the 32-bit MMIO window. No
/// `_ADR`: a device has a `_HID` or an `_ADR`, not both (iasl warns).
fn pci_host_bridge(sink: &mut Vec<u8>) {
    let mmio_end = layout::PCI_MMIO32_START + layout::PCI_MMIO32_SIZE - 1;
    aml::Device::new(
        "PCI0".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A03")),
            &aml::Name::new("_SEG".into(), &aml::ZERO),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new("_BBN".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::AddressSpace::new_bus_number(0u16, 0xff),
                    &aml::IO::new(ports::PCI_CONFIG_ADDRESS, ports::PCI_CONFIG_ADDRESS, 1, 8),
                    &aml::AddressSpace::new_io(0x0d00u16, 0xffff, None),
                    &aml::AddressSpace::new_memory(
                        aml::AddressSpaceCacheable::NotCacheable,
                        true,
                        layout::PCI_MMIO32_START as u32,
                        mmio_end as u32,
                        None,
                    ),
                ]),
            ),
            &aml::Name::new("_PRT".into(), &pci_routing_table()),
        ],
    )
    .to_aml_bytes(sink);
}

/// `_PRT`: INTx pin `pin` of every slot on bus 0 goes to GSI
/// `pci_intx_gsi(slot, pin)` (GSI form: source 0, source index = GSI, which
/// means level-triggered, active-low, shareable).
fn pci_routing_table() -> aml::PackageBuilder {
    let mut prt = aml::PackageBuilder::new();
    for slot in 0..32u8 {
        for pin in 0..4u8 {
            // Device address: slot in the high word, 0xFFFF = any function.
            let address = u32::from(slot) << 16 | 0xffff;
            let gsi = layout::pci_intx_gsi(slot, pin);
            prt.add_element(&aml::Package::new(vec![&address, &pin, &aml::ZERO, &gsi]));
        }
    }
    prt
}

/// `\_SB.COM1`: a 16550 UART.
fn com1(sink: &mut Vec<u8>) {
    aml::Device::new(
        "COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::IO::new(ports::COM1, ports::COM1, 1, 8),
                    &aml::Interrupt::new(true, true, false, false, ports::COM1_IRQ),
                ]),
            ),
        ],
    )
    .to_aml_bytes(sink);
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
    }

    fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        assert!(addr >= layout::ACPI_START && addr + len as u64 <= layout::ACPI_END);
        let mut bytes = vec![0; len];
        mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        bytes
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0, |sum, b| sum.wrapping_add(*b))
    }

    /// The table at `addr`, whole, after checking its checksum.
    fn table(mem: &GuestMemoryMmap, addr: u64, signature: &[u8; 4]) -> Vec<u8> {
        let header = read(mem, addr, 36);
        assert_eq!(&header[..4], signature);
        let bytes = read(mem, addr, u32_at(&header, 4) as usize);
        assert_eq!(
            sum(&bytes),
            0,
            "{} checksum",
            String::from_utf8_lossy(signature)
        );
        bytes
    }

    /// Tables by signature, found through the RSDP and XSDT like an OS does.
    fn tables(mem: &GuestMemoryMmap) -> Vec<(u64, Vec<u8>)> {
        let rsdp = read(mem, layout::ACPI_START, 36);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp[15], 2, "revision");
        assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
        assert_eq!(sum(&rsdp), 0, "RSDP extended checksum");
        assert_eq!(u32_at(&rsdp, 20), 36, "RSDP length");
        let xsdt = table(mem, u64_at(&rsdp, 24), b"XSDT");
        xsdt[36..]
            .chunks(8)
            .map(|e| u64::from_le_bytes(e.try_into().unwrap()))
            .map(|a| (a, read(mem, a, 4)))
            .collect()
    }

    fn find(mem: &GuestMemoryMmap, signature: &[u8; 4]) -> Vec<u8> {
        let found: Vec<_> = tables(mem)
            .into_iter()
            .filter(|(_, s)| s == signature)
            .collect();
        assert_eq!(found.len(), 1);
        table(mem, found[0].0, signature)
    }

    #[test]
    fn acpi_rsdp_and_xsdt() {
        let mem = memory();
        assert_eq!(create_acpi_tables(&mem, 2).unwrap(), GuestAddress(0xe0000));
        let mut signatures: Vec<_> = tables(&mem).into_iter().map(|(_, s)| s).collect();
        signatures.sort();
        assert_eq!(signatures, [b"APIC", b"FACP"]);
    }

    #[test]
    fn acpi_madt_has_one_lapic_per_cpu_and_one_ioapic() {
        for cpus in [1, 2, 7, MAX_CPUS] {
            let mem = memory();
            create_acpi_tables(&mem, cpus).unwrap();
            let madt = find(&mem, b"APIC");
            assert_eq!(u32_at(&madt, 36), 0xfee0_0000);
            assert_eq!(u32_at(&madt, 40), MADT_PCAT_COMPAT);
            let (mut lapics, mut ioapics) = (Vec::new(), Vec::new());
            let mut at = 44;
            while at < madt.len() {
                let entry = &madt[at..at + madt[at + 1] as usize];
                match entry[0] {
                    0 => lapics.push((entry[2], entry[3], u32_at(entry, 4))),
                    1 => ioapics.push((entry[2], u32_at(entry, 4), u32_at(entry, 8))),
                    other => panic!("unexpected MADT entry type {other}"),
                }
                at += entry.len();
            }
            assert_eq!(at, madt.len());
            let expected: Vec<_> = (0..cpus).map(|id| (id, id, 1)).collect();
            assert_eq!(lapics, expected);
            assert_eq!(ioapics, [(0, 0xfec0_0000, 0)]);
        }
    }

    #[test]
    fn acpi_fadt_is_hardware_reduced() {
        let mem = memory();
        create_acpi_tables(&mem, 1).unwrap();
        let fadt = find(&mem, b"FACP");
        assert_eq!(
            (fadt.len(), fadt[8], fadt[131]),
            (276, 6, 5),
            "length, ACPI 6.5"
        );
        let flags = u32_at(&fadt, 112);
        assert_ne!(flags & 1 << 20, 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & 1 << 10, 0, "RESET_REG_SUP");
        let boot_arch = u16::from_le_bytes([fadt[109], fadt[110]]);
        assert_eq!(
            boot_arch & 0b10_1110,
            0b10_0100,
            "no 8042, no VGA, MSI allowed, no RTC"
        );
        // Generic addresses: space 1 (I/O), 8 bits wide, offset 0, byte access.
        let io_byte = |port: u16| [&[1, 8, 0, 1][..], &u64::from(port).to_le_bytes()].concat();
        assert_eq!(fadt[116..128], io_byte(0xcf9), "RESET_REG");
        assert_eq!(fadt[128], 0x06, "RESET_VALUE");
        assert_eq!(
            fadt[244..256],
            io_byte(ports::ACPI_SLEEP_CONTROL),
            "SLEEP_CONTROL_REG"
        );
        assert_eq!(
            fadt[256..268],
            io_byte(ports::ACPI_SLEEP_STATUS),
            "SLEEP_STATUS_REG"
        );
        assert_eq!(u32_at(&fadt, 40), 0, "32-bit DSDT unused");
        let dsdt = table(&mem, u64_at(&fadt, 140), b"DSDT");
        assert_eq!(dsdt[8], 2, "DSDT revision");
    }

    #[test]
    fn acpi_dsdt_has_the_expected_objects() {
        let mem = memory();
        create_acpi_tables(&mem, 1).unwrap();
        let fadt = find(&mem, b"FACP");
        let dsdt = table(&mem, u64_at(&fadt, 140), b"DSDT");
        let contains = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        for name in [&b"_SB_"[..], b"PCI0", b"_PRT", b"_CRS", b"COM1", b"_S5_"] {
            assert!(contains(name), "{}", String::from_utf8_lossy(name));
        }
        assert!(
            !contains(b"PNP0303") && !contains(b"KBD_"),
            "no keyboard controller is declared"
        );
        // Name(_S5_, Package(4) { S5_SLP_TYP, 0, 0, 0 })
        assert!(contains(&[
            b'_', b'S', b'5', b'_', 0x12, 7, 4, 0x0a, S5_SLP_TYP, 0, 0, 0
        ]));
        // The last _PRT entry: Package(4) { 0x1FFFFF, 3, 0, GSI }
        let gsi = layout::pci_intx_gsi(31, 3) as u8;
        assert!(contains(&[
            0x12, 0x0c, 4, 0x0c, 0xff, 0xff, 0x1f, 0, 0x0a, 3, 0, 0x0a, gsi
        ]));
    }

    #[test]
    fn acpi_tables_stay_in_the_acpi_area() {
        let mem = memory();
        create_acpi_tables(&mem, MAX_CPUS).unwrap();
        let fadt = find(&mem, b"FACP");
        // `table` (through `read`) asserts each one lies inside the area.
        let dsdt = table(&mem, u64_at(&fadt, 140), b"DSDT");
        assert!(dsdt.len() < 4096);
    }

    #[test]
    fn acpi_rejects_bad_cpu_counts_and_missing_memory() {
        let mem = memory();
        assert!(matches!(
            create_acpi_tables(&mem, 0),
            Err(AcpiError::CpuCount(0))
        ));
        assert!(matches!(
            create_acpi_tables(&mem, 33),
            Err(AcpiError::CpuCount(33))
        ));
        let small: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0xa0000)]).unwrap();
        assert!(matches!(
            create_acpi_tables(&small, 1),
            Err(AcpiError::GuestMemory(_))
        ));
    }

    #[test]
    fn acpi_area_overflow_is_an_error() {
        let mut area = Area {
            next: layout::ACPI_END - 8,
            tables: Vec::new(),
        };
        assert!(area.place(vec![0; 8]).is_ok());
        assert!(matches!(
            area.place(vec![0; 1]),
            Err(AcpiError::TooLarge(_))
        ));
    }

    /// Writes each table to $TMPDIR/moatvm-acpi/<SIG>.dat for `iasl -d`.
    #[test]
    #[ignore = "dumps files for manual inspection with iasl"]
    fn acpi_dump_tables() {
        let mem = memory();
        create_acpi_tables(&mem, 4).unwrap();
        let dir = std::env::temp_dir().join("moatvm-acpi");
        std::fs::create_dir_all(&dir).unwrap();
        let rsdp = read(&mem, layout::ACPI_START, 36);
        std::fs::write(dir.join("RSDP.dat"), &rsdp).unwrap();
        let xsdt_addr = u64_at(&rsdp, 24);
        let fadt = find(&mem, b"FACP");
        let mut all = tables(&mem);
        all.push((xsdt_addr, b"XSDT".to_vec()));
        all.push((u64_at(&fadt, 140), b"DSDT".to_vec()));
        for (addr, signature) in all {
            let signature: [u8; 4] = signature.try_into().unwrap();
            let bytes = table(&mem, addr, &signature);
            println!(
                "{} at {addr:#x}, {} bytes",
                String::from_utf8_lossy(&signature),
                bytes.len()
            );
            std::fs::write(
                dir.join(format!("{}.dat", String::from_utf8_lossy(&signature))),
                bytes,
            )
            .unwrap();
        }
    }
}
