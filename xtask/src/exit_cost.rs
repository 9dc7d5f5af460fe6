//! What one guest exit costs in L1 (run by `bench-inner` before the cases):
//! a 16-bit guest of a few bytes writes a doorbell N times, once by port
//! I/O and once by MMIO, each answered in L1's kernel by an ioeventfd (as
//! virtio doorbells are), and once does the same loop without the write.
//! The difference per write is the round trip of an exit: at least what a
//! VMM saves its guest for each exit it avoids (a real guest also refills
//! its TLB afterwards, which this loop of a few bytes barely needs).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit};
use vmm_sys_util::eventfd::EventFd;

/// Where the guest's code sits (one 64 KiB slot, code at its start).
const CODE: u64 = 0x1_0000;
const SLOT: usize = 0x1_0000;
/// The doorbells: an address outside every slot, and a port.
const MMIO_DOORBELL: u64 = 0xd_0000;
const PIO_DOORBELL: u16 = 0x5000;
/// Writes per measurement.
const WRITES: u16 = 20_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Doorbell {
    None,
    Pio,
    Mmio,
}

/// The guest: `ds = 0xd000; dx = port; cx = WRITES; again: <write>; loop
/// again; hlt` in real mode.
fn guest(doorbell: Doorbell) -> Vec<u8> {
    let seg = (MMIO_DOORBELL >> 4) as u16;
    let mut code = vec![0xb8]; // mov ax, seg
    code.extend_from_slice(&seg.to_le_bytes());
    code.extend_from_slice(&[0x8e, 0xd8, 0xba]); // mov ds, ax; mov dx, port
    code.extend_from_slice(&PIO_DOORBELL.to_le_bytes());
    code.push(0xb9); // mov cx, WRITES
    code.extend_from_slice(&WRITES.to_le_bytes());
    let body: &[u8] = match doorbell {
        Doorbell::None => &[],
        Doorbell::Pio => &[0xee],              // out dx, al
        Doorbell::Mmio => &[0xa2, 0x00, 0x00], // mov [0], al
    };
    code.extend_from_slice(body);
    // loop back over the body (rel8 from the end of the 2-byte loop).
    code.extend_from_slice(&[0xe2, (-(body.len() as i8) - 2) as u8, 0xf4]);
    code
}

/// Seconds the guest takes to run with `doorbell`.
fn time(kvm: &Kvm, doorbell: Doorbell) -> Result<Duration> {
    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
    let mut ram = vec![0u8; SLOT + 4096];
    // KVM wants the slot's host address page-aligned.
    let skip = ram.as_ptr().align_offset(4096);
    let code = guest(doorbell);
    ram[skip..skip + code.len()].copy_from_slice(&code);
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: CODE,
        memory_size: SLOT as u64,
        userspace_addr: ram[skip..].as_ptr() as u64,
        flags: 0,
    };
    // SAFETY: the region is `ram`, which outlives the VM (dropped at the
    // end of this function, after `vm`), and nothing else maps it.
    unsafe { vm.set_user_memory_region(region) }.context("KVM_SET_USER_MEMORY_REGION")?;
    let bell = EventFd::new(libc::EFD_NONBLOCK).context("eventfd")?;
    let address = match doorbell {
        Doorbell::Mmio => IoEventAddress::Mmio(MMIO_DOORBELL),
        _ => IoEventAddress::Pio(u64::from(PIO_DOORBELL)),
    };
    vm.register_ioevent(&bell, &address, NoDatamatch)
        .context("KVM_IOEVENTFD")?;
    let mut vcpu = vm.create_vcpu(0).context("KVM_CREATE_VCPU")?;
    let mut sregs = vcpu.get_sregs()?;
    sregs.cs.base = CODE;
    sregs.cs.selector = (CODE >> 4) as u16;
    vcpu.set_sregs(&sregs)?;
    let mut regs = vcpu.get_regs()?;
    regs.rip = 0;
    regs.rflags = 2;
    vcpu.set_regs(&regs)?;
    let start = Instant::now();
    match vcpu.run().context("KVM_RUN")? {
        VcpuExit::Hlt => {}
        other => bail!("exit-cost guest ({doorbell:?}) stopped with {other:?}"),
    }
    let took = start.elapsed();
    drop(vcpu);
    drop(vm);
    drop(ram);
    Ok(took)
}

/// Microseconds per exit for a port and an MMIO doorbell, best of three.
pub fn measure() -> Result<(f64, f64)> {
    let kvm = Kvm::new().context("/dev/kvm")?;
    let best = |d| -> Result<Duration> {
        (0..3)
            .map(|_| time(&kvm, d))
            .collect::<Result<Vec<_>>>()
            .map(|t| t.into_iter().min().unwrap_or_default())
    };
    let bare = best(Doorbell::None)?;
    let per = |t: Duration| t.saturating_sub(bare).as_secs_f64() * 1e6 / f64::from(WRITES);
    Ok((per(best(Doorbell::Pio)?), per(best(Doorbell::Mmio)?)))
}

/// Prints the `LAB-BENCH-EXIT` line (or why there is none).
pub fn report() {
    match measure() {
        Ok((pio, mmio)) => println!(
            "LAB-BENCH-EXIT one guest exit, round trip through L1's KVM to an ioeventfd: \
             port write {pio:.1} us, MMIO write {mmio:.1} us"
        ),
        Err(e) => println!("LAB-BENCH-EXIT not measured: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_loops_back_over_its_write() {
        for (d, body) in [(Doorbell::None, 0), (Doorbell::Pio, 1), (Doorbell::Mmio, 3)] {
            let code = guest(d);
            assert_eq!(code.len(), 11 + body + 3, "{d:?}");
            assert_eq!(code[11 + body], 0xe2, "loop");
            // The loop's target is the first byte of the body.
            let target = (11 + body + 2) as isize + isize::from(code[12 + body] as i8);
            assert_eq!(target, 11, "{d:?}");
            assert_eq!(*code.last().unwrap(), 0xf4, "hlt");
        }
    }

    /// On any /dev/kvm (this host's emulating one too): the guest ends on its HLT with no exit to userspace, so every write
    /// reached the ioeventfd.
    #[test]
    fn every_doorbell_is_answered_in_the_kernel() {
        let kvm = Kvm::new().expect("this test needs /dev/kvm");
        for d in [Doorbell::None, Doorbell::Pio, Doorbell::Mmio] {
            time(&kvm, d).unwrap();
        }
    }
}
