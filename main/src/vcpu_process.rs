//! The vCPU process: `moatvm __vcpu`. It owns the VM fd and the vCPU
//! threads, emulates the platform devices, forwards PCI accesses to the
//! device processes and serves their vm-control requests. It is jailed like
//! a device (no files, no capabilities, its own namespaces) and runs under
//! the vCPU seccomp policy; /dev/kvm and guest RAM arrive as descriptors.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};

use anyhow::{Context, Result};
use kvm_ioctls::Kvm;
use nix::sys::signal::SigSet;

use ipc::Channel;

use crate::platform::remote_pci::{RemoteBar, RemotePci};
use crate::platform::serial::SerialOutput;
use crate::roles::{vcpu_fds, BarKindName, VcpuRole};
use crate::vcpu::runner::VmEnd;
use crate::vcpu::vm::{Vm, VmSpec};
use crate::vcpu::{memory, vm_control};

/// Runs the vCPU process described by `arg`; returns its exit code.
pub fn main(arg: &str) -> i32 {
    match run(arg) {
        Ok(end) => {
            if let VmEnd::VcpuFailed {
                index,
                reason,
                registers,
            } = &end
            {
                eprintln!("moatvm: vCPU {index} failed: {reason}; registers: {registers}");
            }
            end.exit_code()
        }
        Err(e) => {
            eprintln!("moatvm: vCPU process: {e:#}");
            1
        }
    }
}

/// Takes descriptor `fd`, which the launcher placed for this process.
fn take(fd: i32) -> OwnedFd {
    // SAFETY: the launcher mapped these numbers for this process alone and
    // nothing else in it has taken them; each is taken exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn run(arg: &str) -> Result<VmEnd> {
    let role = VcpuRole::from_arg(arg).context("bad vCPU role")?;
    let mut keep = vec![vcpu_fds::KVM, vcpu_fds::GUEST_RAM, vcpu_fds::SERIAL];
    for (i, dev) in role.devices.iter().enumerate() {
        keep.extend([vcpu_fds::device_channel(i), vcpu_fds::vm_control(i)]);
        if !dev.mirrored.is_empty() {
            keep.push(vcpu_fds::mirror(i));
        }
    }
    jail::enter(&jail::JailConfig {
        keep_fds: keep,
        max_open_files: 256 + 16 * role.devices.len() as u64,
        // vCPUs, serial input, signals, one vm-control server per device.
        max_processes: u64::from(role.cpus) + 4 + role.devices.len() as u64,
        max_core_size: 0,
    })
    .context("cannot enter the jail")?;

    // Block the stop signals before any thread exists, so that every thread
    // inherits the mask and only the signal thread receives them.
    let mut stop_set = SigSet::empty();
    for s in crate::STOP_SIGNALS {
        stop_set.add(s);
    }
    stop_set.thread_block().context("cannot block signals")?;

    // SAFETY: the launcher passed an open /dev/kvm at this number.
    let kvm = unsafe { Kvm::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(take(vcpu_fds::KVM))) };
    let memfd = File::from(take(vcpu_fds::GUEST_RAM));
    let memory = memory::map_guest_ram(&memfd, role.mem_size)?;
    let ram = memory::GuestRam {
        memory,
        file: memfd,
    };
    let serial = SerialOutput::new(
        Box::new(File::from(take(vcpu_fds::SERIAL))),
        role.serial_interactive,
    );

    let mut pci_devices: Vec<Box<dyn devices::pci::PciDevice>> = Vec::new();
    let mut bars = Vec::new();
    let mut controls = Vec::new();
    for (i, dev) in role.devices.iter().enumerate() {
        let channel = Arc::new(
            Channel::from_fd(take(vcpu_fds::device_channel(i)))?
                .with_deadline(crate::platform::remote_pci::DEVICE_DEADLINE),
        );
        controls.push(Channel::from_fd(take(vcpu_fds::vm_control(i)))?);
        let mirror = if dev.mirrored.is_empty() {
            None
        } else {
            let fd = take(vcpu_fds::mirror(i));
            Some(Arc::new(
                ipc::RegisterMirror::map(&fd)
                    .with_context(|| format!("{}: register mirror", dev.name))?,
            ))
        };
        for bar in &dev.bars {
            let remote = RemoteBar {
                name: dev.name.clone(),
                channel: channel.clone(),
                bar: bar.index,
                mirror: mirror.as_ref().map(|m| {
                    let offsets = dev
                        .mirrored
                        .iter()
                        .map(|&(b, off)| (b == bar.index).then_some(off))
                        .collect();
                    (m.clone(), offsets)
                }),
            };
            bars.push((bar.address, bar.size, bar.kind, remote));
        }
        pci_devices.push(Box::new(RemotePci::new(
            dev.name.clone(),
            channel,
            dev.bars.clone(),
        )));
    }

    let mut vm = Vm::create(VmSpec {
        kvm,
        ram,
        cpus: role.cpus,
        serial_out: serial,
        serial_stdin: role.serial_stdin,
        pci_devices,
    })?;
    for (address, size, kind, remote) in bars {
        let buses = vm.buses_mut();
        let bus = match kind {
            BarKindName::Io => &mut buses.pio,
            BarKindName::Memory32 | BarKindName::Memory64 => &mut buses.mmio,
        };
        bus.insert(address, size, Arc::new(Mutex::new(remote)))?;
    }
    let routes = Arc::new(Mutex::new(vm_control::GsiRoutes::default()));
    for (i, channel) in controls.into_iter().enumerate() {
        let vm_fd = vm.vm_fd();
        let (device, routes) = (role.devices[i].clone(), routes.clone());
        std::thread::Builder::new()
            .name(format!("vm-control{i}"))
            .spawn(move || vm_control::serve(i, device, channel, vm_fd, routes))
            .context("cannot start a vm-control thread")?;
    }
    vm.start_at(&role.entry)?;

    let (end_tx, end_rx) = mpsc::channel();
    let signal_tx = end_tx.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = stop_set.wait() {
                let _ = signal_tx.send(VmEnd::Signal(sig as i32));
            }
        })
        .context("cannot start the signal thread")?;

    let mode: seccomp::Mode = role.seccomp.parse()?;
    seccomp::install(seccomp::ProcessKind::Vcpu, mode)
        .context("cannot install the seccomp filter")?;
    crate::footprint::setup_done();
    vm.run(end_rx, end_tx)
}
