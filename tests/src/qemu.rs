//! Lab scenario `qemu`: QEMU (`-accel kvm -M q35`) boots the same guest
//! image in L1. This validates the lab itself (L1's KVM, the guest kernel,
//! the initramfs and its init) independently of moatvm.

use crate::checks::{boot_count_cpus_and_end, wait_event, Ending, BOOT_TIMEOUT, STEP_TIMEOUT};
use crate::env::LabEnv;
use crate::guest::Guest;
use crate::process::Running;
use crate::vmm::Vmm;
use anyhow::{ensure, Context, Result};
use std::net::TcpListener;
use std::process::Command;

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn two_cpus_reboot() -> Result<()> {
    boot_count_cpus_and_end(Vmm::Qemu, 2, Ending::Reboot, "qemu-2cpus")
}

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn poweroff() -> Result<()> {
    boot_count_cpus_and_end(Vmm::Qemu, 1, Ending::Poweroff, "qemu-poweroff")
}

/// Every NIC driver in the image loads (catches a module missing a
/// dependency in the initramfs).
#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn all_nic_modules_load() -> Result<()> {
    let env = LabEnv::from_env()?;
    let guest = Guest::quiet().moat("nic", "all").action("reboot");
    let mut vm = Vmm::Qemu.boot(&env, &guest, "qemu-nics")?;
    let modules = wait_event(&mut vm, "modules", BOOT_TIMEOUT)?;
    ensure!(
        modules.get("failed") == Some(""),
        "NIC modules failed to load: {:?}\n{}",
        modules.get("failed"),
        vm.report()
    );
    let loaded = modules.get("loaded").unwrap_or_default();
    for nic in [
        "virtio_net",
        "e1000",
        "8139cp",
        "8139too",
        "ne2k-pci",
        "pcnet32",
    ] {
        ensure!(
            loaded.split(',').any(|n| n == nic),
            "{nic} not among the loaded NICs {loaded:?}"
        );
    }
    vm.expect_success(STEP_TIMEOUT)
}

/// The guest's network path: virtio-net with QEMU's user-mode backend, the
/// guest's iperf3 client sending to an iperf3 server on L1's loopback.
#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn iperf_over_user_net() -> Result<()> {
    let env = LabEnv::from_env()?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut server = Command::new("iperf3");
    server.args([
        "-s",
        "-1",
        "--forceflush",
        "-B",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ]);
    let mut server = Running::spawn("iperf3 -s", server, &env.out_file("qemu-iperf-server"))?;
    server.wait_for_text("Server listening", STEP_TIMEOUT)?;

    let guest = Guest::quiet()
        .moat("nic", "virtio_net")
        .moat("ip", "10.0.2.15/24")
        .moat("gw", "10.0.2.2")
        .action(&format!("iperf:10.0.2.2:2:tx:{port},reboot"));
    let nic = [
        "-netdev",
        "user,id=net0",
        "-device",
        "virtio-net-pci,netdev=net0,romfile=",
    ];
    let mut vm = Vmm::Qemu.boot_with(&env, &guest, "qemu-iperf", &nic)?;
    let net = wait_event(&mut vm, "net", BOOT_TIMEOUT)?;
    ensure!(net.get("driver") == Some("virtio_net"), "{net:?}");
    let result = wait_event(&mut vm, "iperf", STEP_TIMEOUT)?;
    let mbits = result
        .number("mbits")
        .with_context(|| format!("iperf failed in the guest\n{}", vm.report()))?;
    ensure!(mbits > 0.0, "iperf3 measured {mbits} Mbit/s");
    vm.expect_success(STEP_TIMEOUT)?;
    server.expect_success(STEP_TIMEOUT)
}
