//! The guest-physical address map moatvm gives every VM, in one place.
//!
//! ```text
//! 0x0000_0000  real-mode IVT and BIOS data area (RAM)
//! 0x0000_0500  boot GDT, then IDT
//! 0x0000_7000  zero page (struct boot_params)
//! 0x0000_9000  identity page tables (PML4, PDPT, PD) for 64-bit entry
//! 0x0002_0000  kernel command line
//! 0x0009_FC00  end of usable low RAM (EBDA and legacy area above: reserved)
//! 0x000E_0000  ACPI tables (RSDP first), inside the reserved BIOS area
//! 0x0010_0000  kernel (HIMEM_START), then RAM up to the 32-bit hole
//! 0xC000_0000  32-bit hole: PCI MMIO window, IOAPIC, LAPIC
//! 0x1_0000_0000 RAM beyond 3 GiB continues here
//! ```

/// Start of the boot GDT.
pub const BOOT_GDT_START: u64 = 0x500;
/// Start of the boot IDT (empty; the kernel installs its own).
pub const BOOT_IDT_START: u64 = 0x520;
/// The zero page handed to the kernel in %rsi.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Top of the boot stack (grows down, below the zero page).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level-4 page table for the identity map used at 64-bit entry.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory: 2 MiB pages covering the first 1 GiB.
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line we accept, terminating NUL included.
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// End of usable RAM below 1 MiB: the EBDA and the legacy area follow.
pub const EBDA_START: u64 = 0x9fc00;
/// Where ACPI tables are written, RSDP first; the kernel scans 0xE0000..0x100000 for it.
pub const ACPI_START: u64 = 0xe0000;
/// End of the area reserved for ACPI tables.
pub const ACPI_END: u64 = 0x100000;
/// Where the kernel is loaded; RAM from here on is usable.
pub const HIMEM_START: u64 = 0x100000;

/// Start of the 32-bit hole that lies below 4 GiB; RAM never covers it.
pub const MMIO32_START: u64 = 0xc000_0000;
/// Window of the 32-bit hole that PCI BARs are allocated from.
pub const PCI_MMIO32_START: u64 = 0xc000_0000;
/// Size of that window (up to the IOAPIC and LAPIC area).
pub const PCI_MMIO32_SIZE: u64 = 0x3c00_0000;
/// I/O port window that PCI I/O BARs are allocated from (inside the
/// 0x0D00-0xFFFF window the DSDT gives the host bridge).
pub const PCI_IO_START: u64 = 0xc000;
pub const PCI_IO_END: u64 = 0x1_0000;
/// IOAPIC registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC registers.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// Where RAM resumes above the hole.
pub const RAM_64BIT_START: u64 = 0x1_0000_0000;

/// First GSI given to PCI INTx lines (0-15 are the ISA IRQs).
pub const PCI_INTX_GSI_BASE: u32 = 16;
/// How many GSIs PCI INTx lines are spread over.
pub const PCI_INTX_GSI_COUNT: u32 = 8;

/// I/O ports of the legacy devices.
pub mod ports {
    /// i8042 keyboard controller data port.
    pub const I8042_DATA: u16 = 0x60;
    /// i8042 status/command port; a write of 0xFE resets the machine.
    pub const I8042_COMMAND: u16 = 0x64;
    /// First UART (COM1), eight registers.
    pub const COM1: u16 = 0x3f8;
    /// IRQ (ISA, GSI) of COM1.
    pub const COM1_IRQ: u32 = 4;
    /// ACPI hardware-reduced sleep control register (one byte), then sleep status.
    pub const ACPI_SLEEP_CONTROL: u16 = 0x600;
    /// ACPI hardware-reduced sleep status register.
    pub const ACPI_SLEEP_STATUS: u16 = 0x601;
    /// PCI configuration address register (mechanism #1).
    pub const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
    /// Reset control register (as on PIIX/ICH); writing 0x06 resets.
    pub const RESET_CONTROL: u16 = 0xcf9;
}

/// Regions of guest RAM for a VM of `mem_size` bytes: all of it below the
/// 32-bit hole if it fits, the rest above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO32_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO32_START),
            (RAM_64BIT_START, mem_size - MMIO32_START),
        ]
    }
}

/// The GSI that INTx pin `pin` (0 = INTA .. 3 = INTD) of PCI slot `slot` is
/// wired to: the usual swizzle over the PCI GSIs, as the DSDT's `_PRT` says.
pub fn pci_intx_gsi(slot: u8, pin: u8) -> u32 {
    PCI_INTX_GSI_BASE + (u32::from(slot) + u32::from(pin)) % PCI_INTX_GSI_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_vm_has_one_region() {
        assert_eq!(ram_regions(512 << 20), vec![(0, 512 << 20)]);
    }

    #[test]
    fn large_vm_skips_the_hole() {
        let r = ram_regions(4 << 30);
        assert_eq!(
            r,
            vec![
                (0, MMIO32_START),
                (RAM_64BIT_START, (4 << 30) - MMIO32_START)
            ]
        );
        assert_eq!(r.iter().map(|(_, s)| s).sum::<u64>(), 4 << 30);
    }
}
