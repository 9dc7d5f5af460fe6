//! Lab scenario `vhost`: virtio-net-pci with `vhost=on` (issue 4). The
//! kernel's vhost worker moves the frames; the bridge and its address live
//! inside L1.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::checks::{
    bridge_with_iperf_server, expect_nic, expect_ping_and_iperf, wait_event, BOOT_TIMEOUT, BRIDGE,
    BRIDGE_IP as HOST_IP, STEP_TIMEOUT,
};
use crate::env::LabEnv;
use crate::guest::Guest;
use crate::process::Running;
use crate::procfs::{children, task_names};
use crate::vmm::Vmm;

const TAP: &str = "tapv";
const MAC: &str = "52:54:00:12:34:58";
const NET_TIMEOUT: Duration = Duration::from_secs(120);

/// Boots a virtio-net-pci guest with `vhost=on` on [`BRIDGE`], running
/// `actions`.
fn boot(log: &str, actions: &str) -> Result<Running> {
    bridge_with_iperf_server()?;
    let env = LabEnv::from_env()?;
    let guest = Guest::quiet()
        .moat("nic", "virtio_net")
        .moat("ip", "10.0.0.2/24")
        .action(actions);
    let args = Vmm::Moatvm.tap_args("virtio-net-pci", TAP, BRIDGE, MAC, true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Vmm::Moatvm.boot_with(&env, &guest, log, &args)
}

/// With `vhost=on` the NIC process owns a vhost-net instance (a
/// `vhost-<pid>` kernel worker exists while the guest runs), and the guest
/// pings with no loss and runs iperf3 both ways through it.
#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn vhost_net_carries_the_traffic() -> Result<()> {
    let mut vm = boot(
        "vhost-traffic",
        &format!("sleep:1,ping:{HOST_IP}:5,iperf:{HOST_IP}:3:tx,iperf:{HOST_IP}:3:rx,reboot"),
    )?;
    wait_event(&mut vm, "start", BOOT_TIMEOUT)?;
    expect_nic(&mut vm, "virtio_net", MAC, STEP_TIMEOUT)?;
    // The driver is up (DRIVER_OK came before the interface did): the
    // device process's vhost worker exists.
    let kids = children(vm.pid())?;
    let names = task_names()?;
    let worker = kids
        .iter()
        .map(|pid| format!("vhost-{pid}"))
        .find(|w| names.contains(w))
        .with_context(|| {
            format!(
                "no vhost-<pid> worker for any of {kids:?}; vhost tasks: {:?}\n{}",
                names
                    .iter()
                    .filter(|n| n.starts_with("vhost"))
                    .collect::<Vec<_>>(),
                vm.report()
            )
        })?;
    let via = format!(" through {worker}");
    expect_ping_and_iperf(&mut vm, 5, &["tx", "rx"], &via, NET_TIMEOUT)?;
    vm.expect_success(STEP_TIMEOUT)?;
    Ok(())
}

/// A driver reload resets the device: vhost stops, and starts again on the
/// new rings.
#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn vhost_restarts_after_a_driver_reload() -> Result<()> {
    let mut vm = boot(
        "vhost-reload",
        &format!("ping:{HOST_IP}:2,reload:virtio_net,ping:{HOST_IP}:3,reboot"),
    )?;
    wait_event(&mut vm, "net", BOOT_TIMEOUT)?;
    for (when, count) in [("before", 2.0), ("after", 3.0)] {
        let ping = wait_event(&mut vm, "ping", NET_TIMEOUT)?;
        ensure!(
            ping.number("received")? == count,
            "ping {when} the reload lost packets: {ping:?}\n{}",
            vm.report()
        );
    }
    vm.expect_success(STEP_TIMEOUT)?;
    Ok(())
}
