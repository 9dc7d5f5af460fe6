//! Lab scenario `e1000`: the Intel 82540EM in its jailed device process
//! (issue 5), over a tap moatvm creates in a bridge inside L1.

use std::time::Duration;

use anyhow::{ensure, Result};

use crate::checks::{
    bridge_with_iperf_server, expect_nic, expect_ping_and_iperf, expect_reload, wait_event,
    BOOT_TIMEOUT, BRIDGE, BRIDGE_IP as HOST_IP, STEP_TIMEOUT,
};
use crate::env::LabEnv;
use crate::guest::Guest;
use crate::process::Running;
use crate::procfs::{child_with, status_field};
use crate::vmm::Vmm;

const TAP: &str = "tape";
const MAC: &str = "52:54:00:00:10:00";
/// e1000 round trips are slow under nested TCG (QEMU's take seconds).
const NET_TIMEOUT: Duration = Duration::from_secs(180);

fn boot(log: &str, actions: &str) -> Result<Running> {
    bridge_with_iperf_server()?;
    let env = LabEnv::from_env()?;
    let guest = Guest::quiet()
        .moat("nic", "e1000")
        .moat("ip", "10.0.0.2/24")
        .action(actions);
    let args = Vmm::Moatvm.tap_args("e1000", TAP, BRIDGE, MAC, false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Vmm::Moatvm.boot_with(&env, &guest, log, &args)
}

/// The e1000 driver binds with the given MAC and link up, pings with no
/// loss, runs iperf3 both ways; the NIC process is jailed like virtio-net's.
#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn e1000_binds_pings_and_runs_iperf_both_ways() -> Result<()> {
    let mut vm = boot(
        "e1000-traffic",
        &format!("ping:{HOST_IP}:5,iperf:{HOST_IP}:3:tx,iperf:{HOST_IP}:3:rx,reboot"),
    )?;
    wait_event(&mut vm, "start", BOOT_TIMEOUT)?;
    let net = expect_nic(&mut vm, "e1000", MAC, STEP_TIMEOUT)?;
    ensure!(
        net.get("carrier") == Some("1"),
        "the link should be up: {net:?}\n{}",
        vm.report()
    );
    let nic = child_with(vm.pid(), "__device")?;
    for (key, want) in [
        ("Seccomp", "2"),
        ("NoNewPrivs", "1"),
        ("CapEff", "0000000000000000"),
    ] {
        let got = status_field(nic, key)?;
        ensure!(
            got == want,
            "e1000 process {nic}: {key} is {got}, expected {want}"
        );
    }
    for ns in ["mnt", "pid", "net"] {
        let theirs = std::fs::read_link(format!("/proc/{nic}/ns/{ns}"))?;
        let ours = std::fs::read_link(format!("/proc/{}/ns/{ns}", vm.pid()))?;
        ensure!(
            theirs != ours,
            "the e1000 process shares the launcher's {ns} namespace"
        );
    }
    let root = std::fs::read_dir(format!("/proc/{nic}/root"))?.count();
    ensure!(root == 0, "the e1000 process's root has {root} entries");

    expect_ping_and_iperf(&mut vm, 5, &["tx", "rx"], "", NET_TIMEOUT)?;
    vm.expect_success(STEP_TIMEOUT)?;
    Ok(())
}

/// `rmmod e1000; insmod e1000`: the driver resets the device and binds
/// again with the same MAC, and traffic resumes.
#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn e1000_driver_reload() -> Result<()> {
    let mut vm = boot(
        "e1000-reload",
        &format!("ping:{HOST_IP}:2,reload:e1000,ping:{HOST_IP}:3,reboot"),
    )?;
    wait_event(&mut vm, "net", BOOT_TIMEOUT)?;
    expect_reload(&mut vm, "e1000", MAC, NET_TIMEOUT)?;
    vm.expect_success(STEP_TIMEOUT)?;
    Ok(())
}
