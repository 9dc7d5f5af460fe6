//! The architectural state a vCPU starts in: long mode with an identity map
//! of the first GiB, the boot GDT, MSRs, FPU and local APIC.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::boot::BootEntry;
use super::layout;

/// What went wrong while setting a vCPU's starting state.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("KVM refused the vCPU's {what}: {err}")]
    Kvm {
        what: &'static str,
        err: kvm_ioctls::Error,
    },
    #[error("KVM set {set} of {wanted} MSRs")]
    Msrs { set: usize, wanted: usize },
    #[error("cannot write boot page tables or GDT: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |err| RegsError::Kvm { what, err }
}

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// GDT descriptors: (access byte | flags nibble << 12, base, limit).
const GDT: [(u16, u32, u32); 4] = [
    (0, 0, 0),            // null
    (0xa09b, 0, 0xfffff), // 0x08: 64-bit code
    (0xc093, 0, 0xfffff), // 0x10: data
    (0x808b, 0, 0xfffff), // 0x18: TSS
];
const CODE_SELECTOR: usize = 1;
const DATA_SELECTOR: usize = 2;
const TSS_SELECTOR: usize = 3;

fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
        | ((limit & 0xf_0000) << 32)
        | ((flags & 0xf0ff) << 40)
}

fn segment(index: usize) -> kvm_segment {
    let (flags, base, limit) = GDT[index];
    let g = (flags >> 15) & 1;
    kvm_segment {
        base: u64::from(base),
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector: (index * 8) as u16,
        type_: (flags & 0xf) as u8,
        s: ((flags >> 4) & 1) as u8,
        dpl: ((flags >> 5) & 3) as u8,
        present: ((flags >> 7) & 1) as u8,
        avl: ((flags >> 12) & 1) as u8,
        l: ((flags >> 13) & 1) as u8,
        db: ((flags >> 14) & 1) as u8,
        g: g as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Writes the boot GDT, an empty IDT and the identity page tables (2 MiB
/// pages over the first GiB) into guest memory. Done once per VM.
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    for (i, &(flags, base, limit)) in GDT.iter().enumerate() {
        mem.write_obj(
            gdt_entry(flags, base, limit),
            GuestAddress(layout::BOOT_GDT_START + 8 * i as u64),
        )?;
    }
    mem.write_obj(0u64, GuestAddress(layout::BOOT_IDT_START))?;
    // Present | writable; PS (bit 7) makes a PD entry a 2 MiB page.
    mem.write_obj(layout::PDPTE_START | 0x03, GuestAddress(layout::PML4_START))?;
    mem.write_obj(layout::PDE_START | 0x03, GuestAddress(layout::PDPTE_START))?;
    for i in 0..512u64 {
        mem.write_obj((i << 21) | 0x83, GuestAddress(layout::PDE_START + i * 8))?;
    }
    Ok(())
}

/// Puts a vCPU in 64-bit mode at the kernel's entry point.
pub fn setup_long_mode(vcpu: &VcpuFd, boot: &BootEntry) -> Result<(), RegsError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm("special registers"))?;
    sregs.gdt.base = layout::BOOT_GDT_START;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = layout::BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = segment(CODE_SELECTOR);
    let data = segment(DATA_SELECTOR);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = segment(TSS_SELECTOR);
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.cr3 = layout::PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(kvm("special registers"))?;

    let regs = kvm_regs {
        rflags: 0x2,
        rip: boot.entry,
        rsp: layout::BOOT_STACK_POINTER,
        rbp: layout::BOOT_STACK_POINTER,
        rsi: boot.zero_page,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm("registers"))
}

/// FPU, MSRs and LAPIC, as every vCPU needs them before its first run.
pub fn setup_cpu_state(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("FPU state"))?;

    // (index, value): SYSENTER, SYSCALL and GS-swap MSRs zeroed, TSC at 0,
    // fast strings on, MTRRs enabled with write-back as the default type.
    const MSRS: [(u32, u64); 11] = [
        (0x174, 0),             // IA32_SYSENTER_CS
        (0x175, 0),             // IA32_SYSENTER_ESP
        (0x176, 0),             // IA32_SYSENTER_EIP
        (0xc000_0081, 0),       // STAR
        (0xc000_0082, 0),       // LSTAR
        (0xc000_0083, 0),       // CSTAR
        (0xc000_0084, 0),       // SYSCALL_MASK
        (0xc000_0102, 0),       // KERNEL_GS_BASE
        (0x10, 0),              // IA32_TSC
        (0x1a0, 1),             // IA32_MISC_ENABLE: fast strings
        (0x2ff, (1 << 11) | 6), // MTRRdefType: enabled, write-back
    ];
    let entries: Vec<kvm_msr_entry> = MSRS
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).expect("fewer MSRs than KVM_MAX_MSR_ENTRIES");
    let set = vcpu.set_msrs(&msrs).map_err(kvm("MSRs"))?;
    if set != entries.len() {
        return Err(RegsError::Msrs {
            set,
            wanted: entries.len(),
        });
    }

    // LINT0 delivers ExtINT (the PIC), LINT1 delivers NMI, as firmware leaves them.
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const MODE_EXTINT: u32 = 0x7;
    const MODE_NMI: u32 = 0x4;
    let mut lapic = vcpu.get_lapic().map_err(kvm("local APIC"))?;
    for (reg, mode) in [(APIC_LVT0, MODE_EXTINT), (APIC_LVT1, MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
        let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm("local APIC"))
}

/// One line with the registers that tell where a failed vCPU was.
pub fn describe(vcpu: &VcpuFd) -> String {
    let regs = match vcpu.get_regs() {
        Ok(r) => r,
        Err(e) => return format!("(registers unavailable: {e})"),
    };
    let mut s = format!(
        "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        regs.rip, regs.rsp, regs.rflags, regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp
    );
    if let Ok(sr) = vcpu.get_sregs() {
        s += &format!(
            " cs={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
            sr.cs.selector, sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_match_the_usual_encodings() {
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(0x808b, 0, 0xfffff), 0x008f_8b00_0000_ffff);
    }

    #[test]
    fn code_segment_is_64_bit() {
        let cs = segment(CODE_SELECTOR);
        assert_eq!(
            (cs.l, cs.db, cs.g, cs.present, cs.type_, cs.selector),
            (1, 0, 1, 1, 0xb, 8)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
    }
}
