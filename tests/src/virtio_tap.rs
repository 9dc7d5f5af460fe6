//! Lab scenario `virtio_tap`: moatvm's virtio-net-pci over a tap it creates
//! and enslaves to a bridge, in its jailed device process (issue 3). The
//! bridge and its address live inside L1; no traffic leaves it.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::checks::{
    bridge_with_iperf_server, expect_nic, expect_ping_and_iperf, expect_reload, sh, wait_event,
    BOOT_TIMEOUT, BRIDGE, BRIDGE_IP as HOST_IP, STEP_TIMEOUT,
};
use crate::env::LabEnv;
use crate::guest::Guest;
use crate::process::Running;
use crate::procfs::{children, ns, status_field};
use crate::vmm::Vmm;

const TAP: &str = "tapm";
const MAC: &str = "52:54:00:12:34:56";
/// iperf3 runs take a few seconds each; a ping round trip is slow here.
const NET_TIMEOUT: Duration = Duration::from_secs(120);

fn boot(log: &str, actions: &str, extra: &[&str]) -> Result<(LabEnv, Running)> {
    bridge_with_iperf_server()?;
    let env = LabEnv::from_env()?;
    let guest = Guest::quiet()
        .moat("nic", "virtio_net")
        .moat("ip", "10.0.0.2/24")
        .action(actions);
    let mut args = Vmm::Moatvm.virtio_tap_args(TAP, BRIDGE, MAC);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vm = Vmm::Moatvm.boot_with(&env, &guest, log, &args)?;
    Ok((env, vm))
}

fn tap_exists() -> bool {
    Path::new(&format!("/sys/class/net/{TAP}")).exists()
}

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn ping_and_iperf_both_ways() -> Result<()> {
    let (_env, mut vm) = boot(
        "virtio-tap-traffic",
        &format!("ping:{HOST_IP}:5,iperf:{HOST_IP}:3:tx,iperf:{HOST_IP}:3:rx,reboot"),
        &[],
    )?;
    wait_event(&mut vm, "start", BOOT_TIMEOUT)?;
    expect_nic(&mut vm, "virtio_net", MAC, STEP_TIMEOUT)?;
    ensure!(tap_exists(), "{TAP} should exist while the VM runs");
    expect_ping_and_iperf(&mut vm, 5, &["tx", "rx"], "", NET_TIMEOUT)?;
    vm.expect_success(STEP_TIMEOUT)?;
    ensure!(!tap_exists(), "{TAP} should be gone after moatvm exits");
    Ok(())
}

/// `rmmod virtio_net; insmod virtio_net` resets the device (the driver
/// writes status 0 on removal and renegotiates on probe): the interface
/// comes back with the same MAC and carries traffic again.
#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn driver_reload_resets_the_device_and_traffic_resumes() -> Result<()> {
    let (_env, mut vm) = boot(
        "virtio-tap-reload",
        &format!("ping:{HOST_IP}:2,reload:virtio_net,ping:{HOST_IP}:3,iperf:{HOST_IP}:2:rx,reboot"),
        &[],
    )?;
    wait_event(&mut vm, "net", BOOT_TIMEOUT)?;
    expect_reload(&mut vm, "virtio_net", MAC, NET_TIMEOUT)?;
    let iperf = wait_event(&mut vm, "iperf", NET_TIMEOUT)?;
    ensure!(
        iperf.number("mbits")? > 0.0,
        "iperf3 after the reload failed: {iperf:?}\n{}",
        vm.report()
    );
    vm.expect_success(STEP_TIMEOUT)?;
    Ok(())
}

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn every_process_but_the_launcher_is_jailed() -> Result<()> {
    let (_env, mut vm) = boot("virtio-tap-jail", "sleep:600", &[])?;
    wait_event(&mut vm, "net", BOOT_TIMEOUT)?;
    wait_event(&mut vm, "action", STEP_TIMEOUT)?;
    let launcher = vm.pid();
    let kids = children(launcher)?;
    ensure!(
        kids.len() >= 2,
        "expected a vCPU and a NIC process under the launcher, found {kids:?}"
    );
    let mut nic = None;
    for &pid in &kids {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))?;
        for (key, want) in [
            ("Seccomp", "2"),
            ("NoNewPrivs", "1"),
            ("CapEff", "0000000000000000"),
        ] {
            let got = status_field(pid, key)?;
            ensure!(
                got == want,
                "pid {pid} ({cmdline:.40}): {key} is {got}, expected {want}"
            );
        }
        for kind in ["mnt", "pid", "net"] {
            ensure!(
                ns(pid, kind)? != ns(launcher, kind)?,
                "pid {pid} shares the launcher's {kind} namespace"
            );
        }
        if cmdline.contains("__device") {
            nic = Some(pid);
        }
    }
    let nic = nic.context("no NIC process found")?;
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{nic}/root"))?.collect();
    ensure!(
        root.is_empty(),
        "the NIC process's root is not empty: {} entries",
        root.len()
    );
    // SIGTERM to the launcher ends the VM cleanly and removes the tap.
    sh(&format!("kill -TERM {launcher}"))?;
    vm.expect_success(STEP_TIMEOUT)?;
    ensure!(!tap_exists(), "{TAP} should be gone after moatvm exits");
    Ok(())
}

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn a_forbidden_syscall_kills_the_device_and_ends_the_vm() -> Result<()> {
    let (env, mut vm) = boot(
        "virtio-tap-sigsys",
        "sleep:600",
        &["--x-violate-seccomp", "net0"],
    )?;
    let status = vm.wait_exit(BOOT_TIMEOUT)?;
    if status.success() {
        bail!(
            "moatvm should fail when a device process breaks its policy\n{}",
            vm.report()
        );
    }
    let stderr = std::fs::read_to_string(
        env.out_file("virtio-tap-sigsys")
            .with_extension("stderr.log"),
    )?;
    for needle in ["net0 (virtio-net-pci)", "SIGSYS", "openat"] {
        ensure!(
            stderr.contains(needle),
            "moatvm's message should name {needle:?}:\n{stderr}"
        );
    }
    ensure!(!tap_exists(), "{TAP} should be gone after moatvm exits");
    Ok(())
}
