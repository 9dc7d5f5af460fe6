//! Whole-guest checks shared by the test modules (and the boot benchmark).

use crate::env::LabEnv;
use crate::guest::{Event, Guest};
use crate::process::Running;
use crate::vmm::Vmm;
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// From VMM start to the init's first line (nested virtualization under
/// TCG is slow, and variable).
/// A guest under QEMU in an idle lab prints its first line ~20 s after
/// the start; the margin is for a busy host.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// For any later line, and for the exit after the last step.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits for the next `MOAT <name> ...` event.
pub fn wait_event(vm: &mut Running, name: &str, timeout: Duration) -> Result<Event> {
    let line = vm.wait_for(&format!("`MOAT {name}` line"), timeout, |l| {
        Event::parse(l).is_some_and(|e| e.name == name)
    })?;
    Ok(Event::parse(&line).expect("matched above"))
}

/// How a guest is meant to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Reboot,
    Poweroff,
}

impl Ending {
    fn action(self) -> &'static str {
        match self {
            Ending::Reboot => "reboot",
            Ending::Poweroff => "poweroff",
        }
    }

    /// What the guest kernel prints last (at KERN_EMERG: shown even with
    /// `quiet`).
    fn kernel_line(self) -> &'static str {
        match self {
            Ending::Reboot => "reboot: Restarting system",
            Ending::Poweroff => "reboot: Power down",
        }
    }
}

/// Boots a guest with `cpus` vCPUs under `vmm`, checks that its init starts,
/// sees exactly `cpus` CPUs, ends the way asked, that the kernel got there
/// without panicking, and that the VMM then exits with status 0.
pub fn boot_count_cpus_and_end(vmm: Vmm, cpus: u32, ending: Ending, log: &str) -> Result<()> {
    let env = LabEnv::from_env()?;
    let guest = Guest::quiet().cpus(cpus).action(ending.action());
    let mut vm = vmm.boot(&env, &guest, log)?;
    wait_event(&mut vm, "start", BOOT_TIMEOUT)?;
    let seen = wait_event(&mut vm, "cpus", STEP_TIMEOUT)?;
    ensure!(
        seen.number("online")? == f64::from(cpus),
        "guest sees {:?} CPUs online, expected {cpus}\n{}",
        seen.get("online"),
        vm.report()
    );
    ensure!(
        seen.number("cpuinfo")? == f64::from(cpus),
        "guest's /proc/cpuinfo lists {:?} CPUs, expected {cpus}\n{}",
        seen.get("cpuinfo"),
        vm.report()
    );
    wait_event(&mut vm, "action", STEP_TIMEOUT)?;
    vm.wait_for_text(ending.kernel_line(), STEP_TIMEOUT)?;
    vm.expect_success(STEP_TIMEOUT)?;
    let panic = vm
        .lines()
        .iter()
        .find(|l| l.contains("Kernel panic"))
        .cloned();
    if let Some(panic) = panic {
        bail!(
            "guest kernel panicked on the way out: {panic}\n{}",
            vm.report()
        );
    }
    Ok(())
}

/// The bridge in L1 that networked guests join, and L1's address on it.
pub const BRIDGE: &str = "br0";
pub const BRIDGE_IP: &str = "10.0.0.1";

/// Runs a shell command in L1; fails unless it succeeds.
pub fn sh(cmd: &str) -> Result<()> {
    let status = Command::new("sh").arg("-c").arg(cmd).status()?;
    ensure!(status.success(), "`{cmd}` failed: {status}");
    Ok(())
}

/// Makes [`BRIDGE`] with [`BRIDGE_IP`]/24 once per L1 boot, and an `iperf3`
/// server bound to that address whenever none listens there.
pub fn bridge_with_iperf_server() -> Result<()> {
    if !Path::new(&format!("/sys/class/net/{BRIDGE}")).exists() {
        sh(&format!(
            "ip link add {BRIDGE} type bridge && ip addr add {BRIDGE_IP}/24 dev {BRIDGE} && ip link set {BRIDGE} up"
        ))?;
    }
    iperf_server_on(BRIDGE_IP, 5201)
}

/// Starts an iperf3 server bound to `ip`:`port` in L1 unless one listens
/// there already (one server serves one client at a time: parallel
/// clients need one each).
pub fn iperf_server_on(ip: &str, port: u16) -> Result<()> {
    let addr: std::net::Ipv4Addr = ip.parse().with_context(|| format!("address {ip}"))?;
    // /proc/net/tcp's local address: the IPv4 address as a little-endian
    // word, then the port, in hex.
    let local = format!("{:08X}:{port:04X}", u32::from_le_bytes(addr.octets()));
    let listening = || {
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        tcp.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")
        })
    };
    if listening() {
        return Ok(());
    }
    sh(&format!("iperf3 -s -D -B {ip} -p {port} >/dev/null 2>&1"))?;
    // The daemon binds after it has detached: wait until it listens.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !listening() {
        ensure!(
            std::time::Instant::now() < deadline,
            "the iperf3 server for {ip}:{port} is not listening 10 s after it started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Follows a guest running `ping:HOST:2,reload:DRIVER,ping:HOST:3` after
/// its first `net` line: no ping lost before or after, the interface gone
/// after `rmmod`, and `driver` bound again with `mac`.
pub fn expect_reload(vm: &mut Running, driver: &str, mac: &str, timeout: Duration) -> Result<()> {
    let before = wait_event(vm, "ping", timeout)?;
    ensure!(
        before.number("received")? == 2.0,
        "ping before the reload lost packets: {before:?}\n{}",
        vm.report()
    );
    let reload = wait_event(vm, "reload", STEP_TIMEOUT)?;
    ensure!(
        reload.get("unloaded") == Some("1") && reload.get("error").is_none(),
        "rmmod {driver} should remove the interface: {reload:?}\n{}",
        vm.report()
    );
    let net = wait_event(vm, "net", STEP_TIMEOUT)?;
    ensure!(
        net.get("driver") == Some(driver) && net.get("mac") == Some(mac),
        "{driver} should bind again with {mac}: {net:?}\n{}",
        vm.report()
    );
    let after = wait_event(vm, "ping", timeout)?;
    ensure!(
        after.number("received")? == 3.0,
        "ping after the reload lost packets: {after:?}\n{}",
        vm.report()
    );
    Ok(())
}

/// Waits for the guest's `net` line and checks that `driver` bound with
/// `mac`; returns the line.
pub fn expect_nic(vm: &mut Running, driver: &str, mac: &str, timeout: Duration) -> Result<Event> {
    let net = wait_event(vm, "net", timeout)?;
    anyhow::ensure!(
        net.get("driver") == Some(driver) && net.get("mac") == Some(mac),
        "{driver} should bind with {mac}: {net:?}\n{}",
        vm.report()
    );
    Ok(net)
}

/// Waits for the guest's `ping` line, which must show all `count` echoes
/// answered, then for its iperf3 lines in the order of `dirs` (`tx`, `rx`),
/// each with a positive rate; `via` names the path in the messages.
pub fn expect_ping_and_iperf(
    vm: &mut Running,
    count: u32,
    dirs: &[&str],
    via: &str,
    timeout: Duration,
) -> Result<()> {
    let ping = wait_event(vm, "ping", timeout)?;
    anyhow::ensure!(
        ping.number("received")? == f64::from(count),
        "ping lost packets{via}: {ping:?}\n{}",
        vm.report()
    );
    for dir in dirs {
        let iperf = wait_event(vm, "iperf", timeout)?;
        anyhow::ensure!(
            iperf.get("dir") == Some(*dir) && iperf.number("mbits")? > 0.0,
            "iperf3 {dir}{via} failed: {iperf:?}\n{}",
            vm.report()
        );
    }
    Ok(())
}

/// The port of the iperf3 server on L1's loopback, which a guest on
/// user-mode networking reaches as 10.0.2.2.
pub const LOOPBACK_IPERF_PORT: u16 = 5202;

/// Starts an iperf3 server daemon on L1's loopback at
/// [`LOOPBACK_IPERF_PORT`] unless one listens there.
pub fn loopback_iperf_server() -> Result<()> {
    iperf_server_on("127.0.0.1", LOOPBACK_IPERF_PORT)
}

/// A tap made in L1 and enslaved to [`BRIDGE`], for a VMM that opens an
/// existing tap (QEMU with `script=no`); deleted on drop.
pub struct BridgedTap {
    pub name: String,
}

impl BridgedTap {
    /// Creates `name` (deleting a leftover of that name first).
    pub fn create(name: &str) -> Result<BridgedTap> {
        Self::create_with_queues(name, 1)
    }

    /// Like [`BridgedTap::create`]; a tap for more than one queue is made
    /// `multi_queue`, as a VMM with `queues=N` opens it.
    pub fn create_with_queues(name: &str, queues: u16) -> Result<BridgedTap> {
        if Path::new(&format!("/sys/class/net/{name}")).exists() {
            sh(&format!("ip link del {name}"))?;
        }
        let mq = if queues > 1 { " multi_queue" } else { "" };
        sh(&format!(
            "ip tuntap add {name} mode tap{mq} && ip link set {name} master {BRIDGE} up"
        ))?;
        Ok(BridgedTap {
            name: name.to_string(),
        })
    }
}

impl Drop for BridgedTap {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .status();
    }
}
