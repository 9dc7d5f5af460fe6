//! A KVM virtual machine: its memory, in-kernel irqchip and PIT, platform
//! devices, and the vCPU threads that run it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::runner::{self, Buses, VmEnd};
use super::{boot, cpuid, memory, regs};
use crate::platform;

/// Where KVM keeps the TSS and identity page it needs on Intel hosts: just
/// below the BIOS area at the top of the 32-bit hole, clear of everything.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// What a VM is made of, before it is created.
pub struct VmSpec {
    /// An open /dev/kvm.
    pub kvm: Kvm,
    /// Guest RAM (possibly already holding the kernel).
    pub ram: memory::GuestRam,
    /// Number of vCPUs (1 to 32).
    pub cpus: u8,
    /// Where COM1's output goes.
    pub serial_out: crate::platform::serial::SerialOutput,
    /// Whether moatvm's standard input feeds COM1.
    pub serial_stdin: bool,
    /// PCI devices beyond the host bridge, in slot order from slot 1.
    pub pci_devices: Vec<Box<dyn devices::pci::PciDevice>>,
}

/// A VM: created, then loaded, then run.
pub struct Vm {
    // Field order is drop order: vCPUs and the VM go before the memory they map.
    vcpus: Vec<VcpuFd>,
    vm: Arc<VmFd>,
    buses: Buses,
    ram: memory::GuestRam,
}

impl Vm {
    /// Creates the VM with its memory, irqchip, PIT, platform devices and
    /// vCPUs (CPUID, MSRs, FPU, LAPIC set; registers at reset state).
    pub fn create(spec: VmSpec) -> Result<Vm> {
        let kvm = spec.kvm;
        let vm = Arc::new(kvm.create_vm().context("cannot create a KVM VM")?);
        let ram = spec.ram;
        register_memory(&vm, &ram)?;

        vm.set_tss_address(KVM_TSS_ADDRESS)
            .context("KVM_SET_TSS_ADDR")?;
        vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
            .context("KVM_SET_IDENTITY_MAP_ADDR")?;
        vm.create_irq_chip()
            .context("cannot create the in-kernel irqchip")?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit)
            .context("cannot create the in-kernel PIT")?;
        let buses = platform::create(&vm, spec.serial_out, spec.serial_stdin, spec.pci_devices)?;

        let mut supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .context("KVM_GET_SUPPORTED_CPUID")?;
        // KVM emulates the TSC-deadline timer but leaves its CPUID bit to
        // the VMM; without it the guest programs one-shot APIC timers, one
        // more exit per timer.
        if kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer) {
            cpuid::enable_tsc_deadline(&mut supported);
        }
        let mut vcpus = Vec::new();
        for index in 0..spec.cpus {
            let vcpu = vm
                .create_vcpu(u64::from(index))
                .with_context(|| format!("cannot create vCPU {index}"))?;
            let mut cpuid = supported.clone();
            cpuid::patch(&mut cpuid, index, spec.cpus);
            vcpu.set_cpuid2(&cpuid)
                .with_context(|| format!("KVM refused the CPUID of vCPU {index}"))?;
            regs::setup_cpu_state(&vcpu)?;
            vcpus.push(vcpu);
        }
        Ok(Vm {
            vcpus,
            vm,
            buses,
            ram,
        })
    }

    /// Points the boot vCPU at `entry`, a kernel already in guest RAM. The
    /// other vCPUs wait for INIT/SIPI in the in-kernel LAPIC.
    pub fn start_at(&mut self, entry: &boot::BootEntry) -> Result<()> {
        regs::setup_long_mode(&self.vcpus[0], entry)?;
        Ok(())
    }

    /// The VM fd, shared with the vm-control server threads.
    pub fn vm_fd(&self) -> Arc<VmFd> {
        self.vm.clone()
    }

    /// Guest RAM.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.ram.memory
    }

    /// The memfd behind guest RAM.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn guest_ram_file(&self) -> &std::fs::File {
        &self.ram.file
    }

    /// vCPU `index`, to set its registers before the VM runs.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn vcpu(&self, index: usize) -> &VcpuFd {
        &self.vcpus[index]
    }

    /// The buses, to add devices before the VM runs.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn buses_mut(&mut self) -> &mut Buses {
        &mut self.buses
    }

    /// Runs the VM until the guest resets or powers off, a vCPU fails, or
    /// an end arrives on `ends` from elsewhere (a signal to moatvm). `ends`
    /// is the receiving side of `end_sender`, which the vCPUs report on.
    pub fn run(
        self,
        ends: mpsc::Receiver<VmEnd>,
        end_sender: mpsc::Sender<VmEnd>,
    ) -> Result<VmEnd> {
        runner::install_kick_handler().context("cannot install the vCPU kick handler")?;
        let done = Arc::new(AtomicBool::new(false));
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        for (index, vcpu) in self.vcpus.into_iter().enumerate() {
            let ctx = runner::VcpuContext {
                index,
                buses: self.buses.clone(),
                done: done.clone(),
                end: end_sender.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || runner::run_vcpu(vcpu, ctx))
                .context("cannot start a vCPU thread")?;
            threads.push(handle);
        }
        drop(end_sender);
        // Every sender gone without a word can only mean every vCPU thread
        // died; `run_vcpu` always reports, so treat it as a failure.
        let end = ends.recv().unwrap_or_else(|_| VmEnd::VcpuFailed {
            index: 0,
            reason: "every vCPU thread ended without a report".into(),
            registers: String::new(),
        });
        done.store(true, Ordering::SeqCst);
        // A vCPU thread may sit in KVM_RUN for a long time (a halted guest);
        // kick until every thread has seen `done`. A kick that lands just
        // before KVM_RUN is entered is lost, hence the repetition; later ends
        // (another vCPU seeing the same reset) are drained and ignored. The
        // kicks stay 10 ms apart even once every vCPU has dropped its
        // sender (the wait then returns at once): a thread on its way out
        // that is signalled without pause spends all its time in signal
        // delivery and never gets out (seen: a test that hung for good).
        while threads.iter().any(|t| !t.is_finished()) {
            for t in threads.iter().filter(|t| !t.is_finished()) {
                runner::kick(t);
            }
            if let Err(mpsc::RecvTimeoutError::Disconnected) =
                ends.recv_timeout(Duration::from_millis(10))
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(end)
    }
}

fn register_memory(vm: &VmFd, ram: &memory::GuestRam) -> Result<()> {
    for (slot, region) in ram.memory.iter().enumerate() {
        let host = ram
            .memory
            .get_host_address(region.start_addr())
            .context("guest RAM region has no host mapping")?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: `host..host+len` is a live mapping owned by `ram`, which the
        // `Vm` drops only after the VM fd (field order); the slots come from
        // disjoint regions, so they do not overlap.
        unsafe { vm.set_user_memory_region(desc) }.with_context(|| {
            format!("cannot register guest RAM at {:#x}", region.start_addr().0)
        })?;
    }
    Ok(())
}
