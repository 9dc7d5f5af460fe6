//! Fast tests against this machine's /dev/kvm with guests of a few
//! hand-assembled bytes: memory slots, port-I/O and MMIO dispatch, COM1,
//! the reset and power-off paths, vCPU failure, and stopping from outside.
//! They need /dev/kvm and fail without it.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress};

use super::bus::{BusDevice, DeviceRequest};
use super::runner::VmEnd;
use super::vm::{Vm, VmSpec};
use crate::platform::acpi_pm::S5_SLP_TYP;
use crate::platform::serial::{SerialOutput, Sink};

/// Where test code is placed and starts.
const CODE: u64 = 0x1000;
/// A VM that has not ended by then is a failed test, not a hang.
const DEADLINE: Duration = Duration::from_secs(60);

/// A few x86 instructions in 32-bit protected mode, encoded by hand.
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    fn mov_dx(mut self, v: u16) -> Self {
        self.0.extend([0x66, 0xba]);
        self.0.extend(v.to_le_bytes());
        self
    }
    fn mov_al(mut self, v: u8) -> Self {
        self.0.extend([0xb0, v]);
        self
    }
    fn mov_eax(mut self, v: u32) -> Self {
        self.0.push(0xb8);
        self.0.extend(v.to_le_bytes());
        self
    }
    fn out_dx_al(mut self) -> Self {
        self.0.push(0xee);
        self
    }
    fn out_dx_eax(mut self) -> Self {
        self.0.push(0xef);
        self
    }
    fn in_eax_dx(mut self) -> Self {
        self.0.push(0xed);
        self
    }
    /// mov al, [addr]
    fn load_al(mut self, addr: u32) -> Self {
        self.0.push(0xa0);
        self.0.extend(addr.to_le_bytes());
        self
    }
    /// mov eax, [addr]
    fn load_eax(mut self, addr: u32) -> Self {
        self.0.push(0xa1);
        self.0.extend(addr.to_le_bytes());
        self
    }
    /// mov [addr], eax
    fn store_eax(mut self, addr: u32) -> Self {
        self.0.push(0xa3);
        self.0.extend(addr.to_le_bytes());
        self
    }
    fn serial_byte(self, b: u8) -> Self {
        self.mov_dx(0x3f8).mov_al(b).out_dx_al()
    }
    fn serial_al(self) -> Self {
        self.mov_dx(0x3f8).out_dx_al()
    }
    /// The i8042 reset: out 0x64, 0xfe.
    fn i8042_reset(mut self) -> Self {
        self.0.extend([0xb0, 0xfe, 0xe6, 0x64]);
        self
    }
    fn spin(mut self) -> Self {
        self.0.extend([0xeb, 0xfe]);
        self
    }
    fn int3(mut self) -> Self {
        self.0.push(0xcc);
        self
    }
}

fn flat_segment(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        s: 1,
        db: 1,
        g: 1,
        ..Default::default()
    }
}

/// A VM of `mem_size` bytes and `cpus` vCPUs whose boot vCPU runs `code`
/// in flat 32-bit protected mode; also returns its serial output.
fn vm_running(code: Asm, mem_size: u64, cpus: u8) -> (Vm, Sink) {
    let sink = Sink::default();
    let vm = Vm::create(VmSpec {
        kvm: kvm_ioctls::Kvm::new().expect("this test needs /dev/kvm"),
        ram: crate::vcpu::memory::create_guest_ram(mem_size).unwrap(),
        cpus,
        serial_out: SerialOutput::new(Box::new(sink.clone()), true),
        serial_stdin: false,
        pci_devices: Vec::new(),
    })
    .expect("this test needs a working /dev/kvm");
    vm.memory()
        .write_slice(&code.0, GuestAddress(CODE))
        .unwrap();
    let vcpu = vm.vcpu(0);
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs = flat_segment(0x8, 0xb);
    let data = flat_segment(0x10, 0x3);
    (sregs.ds, sregs.es, sregs.ss) = (data, data, data);
    sregs.cr0 |= 0x11; // PE | ET
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = CODE;
    regs.rflags = 0x2;
    regs.rsp = 0x8000;
    vcpu.set_regs(&regs).unwrap();
    (vm, sink)
}

/// Runs `vm` to its end; a watchdog ends it as `Signal(-1)` after DEADLINE.
fn run(vm: Vm) -> VmEnd {
    let (tx, rx) = mpsc::channel();
    let watchdog = tx.clone();
    std::thread::spawn(move || {
        std::thread::sleep(DEADLINE);
        let _ = watchdog.send(VmEnd::Signal(-1));
    });
    vm.run(rx, tx).unwrap()
}

fn output(sink: &Sink) -> String {
    String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned()
}

const MIB: u64 = 1 << 20;

#[test]
fn serial_output_then_i8042_reset_ends_the_vm() {
    let code = Asm::default()
        .serial_byte(b'h')
        .serial_byte(b'i')
        .i8042_reset()
        .spin();
    let (vm, sink) = vm_running(code, 16 * MIB, 1);
    assert_eq!(run(vm), VmEnd::Reset);
    assert_eq!(output(&sink), "hi");
}

#[test]
fn guest_reads_and_writes_ram_shared_with_the_memfd() {
    use std::os::unix::fs::FileExt;
    // Read a byte the host put in RAM, echo it, store a dword, reset.
    let code = Asm::default()
        .load_al(0x3000)
        .serial_al()
        .mov_eax(0xfeed_f00d)
        .store_eax(0x0020_0000)
        .i8042_reset()
        .spin();
    let (vm, sink) = vm_running(code, 16 * MIB, 1);
    vm.memory().write_obj(b'Q', GuestAddress(0x3000)).unwrap();
    let memfd = vm.guest_ram_file().try_clone().unwrap();
    assert_eq!(run(vm), VmEnd::Reset);
    assert_eq!(output(&sink), "Q");
    let mut word = [0u8; 4];
    memfd.read_exact_at(&mut word, 0x0020_0000).unwrap();
    assert_eq!(u32::from_le_bytes(word), 0xfeed_f00d);
}

#[test]
fn ram_beyond_the_32_bit_hole_gets_a_second_slot() {
    let code = Asm::default().serial_byte(b'k').i8042_reset().spin();
    let (vm, sink) = vm_running(code, (3 << 30) + 64 * MIB, 1);
    let regions: Vec<u64> = {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        vm.memory().iter().map(|r| r.start_addr().0).collect()
    };
    assert_eq!(regions, vec![0, 1 << 32]);
    assert_eq!(run(vm), VmEnd::Reset);
    assert_eq!(output(&sink), "k");
}

/// (offset, bytes) of each write a device saw.
type WriteLog = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// Records MMIO writes and answers reads with a value made from the offset.
struct Recorder(WriteLog);

impl BusDevice for Recorder {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = 0x1234_5600u32 | offset as u32;
        data.copy_from_slice(&v.to_le_bytes()[..data.len()]);
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceRequest {
        self.0.lock().unwrap().push((offset, data.to_vec()));
        DeviceRequest::None
    }
}

#[test]
fn mmio_exits_reach_their_device_with_offsets() {
    const BASE: u32 = 0xd000_0000;
    // Read offset 0x20 and write what came back to offset 0x10.
    let code = Asm::default()
        .load_eax(BASE + 0x20)
        .store_eax(BASE + 0x10)
        .i8042_reset()
        .spin();
    let (mut vm, _) = vm_running(code, 16 * MIB, 1);
    let log = Arc::new(Mutex::new(Vec::new()));
    vm.buses_mut()
        .mmio
        .insert(
            u64::from(BASE),
            0x1000,
            Arc::new(Mutex::new(Recorder(log.clone()))),
        )
        .unwrap();
    assert_eq!(run(vm), VmEnd::Reset);
    assert_eq!(
        *log.lock().unwrap(),
        vec![(0x10, 0x1234_5620u32.to_le_bytes().to_vec())]
    );
}

#[test]
fn pci_host_bridge_answers_configuration_reads() {
    let code = Asm::default()
        .mov_dx(0xcf8)
        .mov_eax(0x8000_0000)
        .out_dx_eax()
        .mov_dx(0xcfc)
        .in_eax_dx()
        .store_eax(0x4000)
        .i8042_reset()
        .spin();
    let (vm, _) = vm_running(code, 16 * MIB, 1);
    let memfd = vm.guest_ram_file().try_clone().unwrap();
    assert_eq!(run(vm), VmEnd::Reset);
    let mut word = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(&memfd, &mut word, 0x4000).unwrap();
    assert_eq!(u32::from_le_bytes(word), 0x0008_1b36);
}

#[test]
fn reset_control_register_ends_the_vm() {
    let code = Asm::default().mov_dx(0xcf9).mov_al(0x06).out_dx_al().spin();
    let (vm, _) = vm_running(code, 16 * MIB, 1);
    assert_eq!(run(vm), VmEnd::Reset);
}

#[test]
fn acpi_sleep_to_s5_powers_off() {
    let code = Asm::default()
        .mov_dx(0x600)
        .mov_al((S5_SLP_TYP << 2) | 0x20)
        .out_dx_al()
        .spin();
    let (vm, _) = vm_running(code, 16 * MIB, 1);
    assert_eq!(run(vm), VmEnd::PowerOff);
}

#[test]
fn a_faulting_vcpu_is_a_failure_with_registers() {
    let code = Asm::default().int3();
    let (vm, _) = vm_running(code, 16 * MIB, 1);
    // With an empty IDT, int3 faults, then double-faults, then shuts down.
    let vcpu = vm.vcpu(0);
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.idt.limit = 0;
    vcpu.set_sregs(&sregs).unwrap();
    match run(vm) {
        VmEnd::VcpuFailed {
            index,
            reason,
            registers,
        } => {
            assert_eq!(index, 0);
            // Real KVM reports a shutdown (triple fault); emulating modules
            // may report an internal error instead. Either is a failure.
            assert!(
                reason.contains("triple fault") || reason.contains("internal error"),
                "{reason}"
            );
            assert!(registers.contains("rip="), "{registers}");
        }
        other => panic!("expected a vCPU failure, got {other:?}"),
    }
}

#[test]
fn an_end_from_outside_stops_spinning_and_waiting_vcpus() {
    let code = Asm::default().serial_byte(b'.').spin();
    let (vm, sink) = vm_running(code, 16 * MIB, 2);
    let (tx, rx) = mpsc::channel();
    let outside = tx.clone();
    let watch = sink.clone();
    std::thread::spawn(move || {
        // Send the end only once the guest has shown it is running.
        while output(&watch).is_empty() {
            std::thread::yield_now();
        }
        let _ = outside.send(VmEnd::Signal(15));
    });
    assert_eq!(vm.run(rx, tx).unwrap(), VmEnd::Signal(15));
    assert_eq!(output(&sink), ".");
}
