//! The benchmark cases (a table: one entry per case) and their measurement,
//! which runs inside L1 (`xtask bench-inner`, started by `bench`). Cases
//! measured in the same guest share a [`Probe`]: one boot per VMM and run
//! gives all their figures. Each run of a case is one line in the results
//! file: `RUN<TAB>case<TAB>vmm<TAB>ok<TAB>value` or `...<TAB>error<TAB>message`.

use crate::bench_proc::{measure_mem, mount_debugfs, Tasks};
use anyhow::{ensure, Context, Result};
use e2e::checks::{
    bridge_with_iperf_server, wait_event, BridgedTap, BOOT_TIMEOUT, BRIDGE, BRIDGE_IP, STEP_TIMEOUT,
};
use e2e::env::LabEnv;
use e2e::guest::{Event, Guest};
use e2e::process::Running;
use e2e::vmm::Vmm;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The unit of a case's figure, and which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Mbits,
    Millis,
    Mib,
}

impl Unit {
    pub const ALL: [Unit; 4] = [Unit::Seconds, Unit::Mbits, Unit::Millis, Unit::Mib];

    pub fn label(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::Mbits => "Mbit/s",
            Unit::Millis => "ms",
            Unit::Mib => "MiB",
        }
    }

    pub fn higher_is_better(self) -> bool {
        self == Unit::Mbits
    }
}

/// One run's figures, each named by its case; a case's figure may fail on
/// its own (e.g. one iperf3 direction) while the others count.
pub type Figures = Vec<(&'static str, Result<f64>)>;

/// Measures one run under a VMM (inside L1): one boot giving the figures of
/// the cases named (those of the probe's cases that were asked for).
pub type Measure = fn(&LabEnv, Vmm, usize, &[&str]) -> Result<Figures>;

/// A measurement shared by one or more cases.
pub struct Probe {
    pub name: &'static str,
    pub measure: Measure,
}

/// A benchmark case; `probe: None` is not implemented yet.
pub struct Case {
    pub name: &'static str,
    pub unit: Unit,
    pub probe: Option<&'static Probe>,
    /// Measured by a full run (or a `--filter` naming it), left out of
    /// `--quick`.
    pub full_only: bool,
}

const fn case(name: &'static str, unit: Unit, probe: Option<&'static Probe>) -> Case {
    Case {
        name,
        unit,
        probe,
        full_only: false,
    }
}

/// A case `--quick` leaves out unless `--filter` names it.
const fn full_only(name: &'static str, unit: Unit, probe: &'static Probe) -> Case {
    Case {
        full_only: true,
        ..case(name, unit, Some(probe))
    }
}

const BOOT: Probe = Probe {
    name: "boot",
    measure: boot,
};
const VIRTIO_TAP: Probe = Probe {
    name: "virtio-tap",
    measure: |env, vmm, run, cases| nics_on_bridge(env, vmm, run, cases, &[&VIRTIO_NIC]),
};
const VHOST: Probe = Probe {
    name: "vhost",
    measure: |env, vmm, run, cases| nics_on_bridge(env, vmm, run, cases, &[&VHOST_NIC]),
};
const VHOST_2PAIRS: Probe = Probe {
    name: "vhost-2pairs",
    measure: |env, vmm, run, cases| nics_on_bridge(env, vmm, run, cases, &[&VHOST_2PAIRS_NIC]),
};
const E1000: Probe = Probe {
    name: "e1000",
    measure: |env, vmm, run, cases| nics_on_bridge(env, vmm, run, cases, &[&E1000_NIC]),
};
const USER: Probe = Probe {
    name: "user",
    measure: user,
};

/// Every case, in report order.
pub const CASES: &[Case] = &[
    case("boot", Unit::Seconds, Some(&BOOT)),
    case("virtio-tap-tx", Unit::Mbits, Some(&VIRTIO_TAP)),
    case("virtio-tap-rx", Unit::Mbits, Some(&VIRTIO_TAP)),
    case("vhost-tx", Unit::Mbits, Some(&VHOST)),
    case("vhost-rx", Unit::Mbits, Some(&VHOST)),
    // Two vCPUs in L2 are where the emulated SVM of L1 fails most (hangs,
    // soft lockups): a quick run leaves them out.
    full_only("vhost-2pairs-tx", Unit::Mbits, &VHOST_2PAIRS),
    full_only("vhost-2pairs-rx", Unit::Mbits, &VHOST_2PAIRS),
    case("e1000-tx", Unit::Mbits, Some(&E1000)),
    case("e1000-rx", Unit::Mbits, Some(&E1000)),
    case("user-tx", Unit::Mbits, Some(&USER)),
    case("user-rx", Unit::Mbits, Some(&USER)),
    case("ping-virtio", Unit::Millis, Some(&VIRTIO_TAP)),
    case("ping-e1000", Unit::Millis, Some(&E1000)),
    case("mem", Unit::Mib, Some(&VIRTIO_TAP)),
];

/// `boot`: wall seconds from the VMM's start to its exit, for a guest whose
/// init reboots at once. The run counts only if the guest's init started,
/// it rebooted and the VMM exited with status 0.
fn boot(env: &LabEnv, vmm: Vmm, run: usize, _cases: &[&str]) -> Result<Figures> {
    let guest = Guest::new().word("quiet").action("reboot");
    let log = format!("bench-boot-{}-{run}", vmm.name());
    let start = Instant::now();
    let mut vm = vmm.boot(env, &guest, &log)?;
    vm.expect_success(BOOT_TIMEOUT)?;
    let seconds = start.elapsed().as_secs_f64();
    let lines = vm.lines();
    ensure!(
        lines.iter().any(|l| l.contains("MOAT start")),
        "the guest's init never started\n{}",
        vm.report()
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("reboot: Restarting system")),
        "the guest did not reboot\n{}",
        vm.report()
    );
    Ok(vec![("boot", Ok(seconds))])
}

/// The guest's address on [`BRIDGE`].
const GUEST_IP: &str = "10.0.0.2/24";
/// iperf3 seconds per direction, and pings per run and their interval.
const IPERF_SECS: u32 = 5;
const PINGS: u32 = 10;
const PING_INTERVAL: &str = "0.2";
/// The port of the second iperf3 server a two-client step needs.
const SECOND_IPERF_PORT: u16 = 5202;
/// For one iperf3 or ping step (slow under nested TCG).
const NET_TIMEOUT: Duration = Duration::from_secs(120);

/// The tap (moatvm makes its own; QEMU's is made by [`BridgedTap`]) and MAC
/// of each VMM's NIC (the first NIC of a guest with several).
fn tap_and_mac(vmm: Vmm) -> (&'static str, &'static str) {
    match vmm {
        Vmm::Moatvm => ("tapb", "52:54:00:12:34:56"),
        Vmm::Qemu => ("tapq", "52:54:00:12:34:57"),
    }
}

/// Where NIC `i` of a guest lives: its tap, MAC, the guest's interface and
/// address, and L1's address on the same subnet (NIC `i` has 10.0.`i`.0/24,
/// all on [`BRIDGE`]).
struct NicPlace {
    tap: String,
    mac: String,
    dev: String,
    guest_ip: String,
    host_ip: String,
}

fn nic_place(vmm: Vmm, i: usize) -> NicPlace {
    let (tap, mac) = tap_and_mac(vmm);
    if i == 0 {
        return NicPlace {
            tap: tap.into(),
            mac: mac.into(),
            dev: "eth0".into(),
            guest_ip: GUEST_IP.into(),
            host_ip: BRIDGE_IP.into(),
        };
    }
    NicPlace {
        tap: format!("{tap}{i}"),
        // 52:54:00:12:34:56 -> 52:54:00:12:35:56 for the second NIC.
        mac: format!("{}{:02x}{}", &mac[..12], 0x34 + i, &mac[14..]),
        dev: format!("eth{i}"),
        guest_ip: format!("10.0.{i}.2/24"),
        host_ip: format!("10.0.{i}.1"),
    }
}

/// Gives [`BRIDGE`] L1's address on subnet `i` (> 0), once.
fn host_on_subnet(place: &NicPlace) -> Result<()> {
    let has = Command::new("ip")
        .args(["-4", "addr", "show", "dev", BRIDGE])
        .output()
        .context("running ip")?;
    if !String::from_utf8_lossy(&has.stdout).contains(&format!("inet {}/", place.host_ip)) {
        e2e::checks::sh(&format!("ip addr add {}/24 dev {BRIDGE}", place.host_ip))?;
    }
    Ok(())
}

/// iperf3's own port, where each subnet's first server listens.
const IPERF_PORT: u16 = 5201;

/// A NIC configuration the throughput cases measure, named as the cases
/// are (`PREFIX-tx`, `PREFIX-rx`).
struct NicBench {
    prefix: &'static str,
    tx: &'static str,
    rx: &'static str,
    /// The ping case measured in the same guest, if any.
    ping: Option<&'static str>,
    /// QEMU's (and moatvm's) device name, the guest's driver.
    model: &'static str,
    driver: &'static str,
    vhost: bool,
    /// Queue pairs: above 1, `queues=N`, `mq=on` and a guest with a vCPU
    /// per pair, and `tx`/`rx` are two pinned iperf3 clients at once, one
    /// per pair (the sum of their rates); with 1, a single stream.
    queues: u16,
}

const VIRTIO_NIC: NicBench = NicBench {
    prefix: "virtio-tap",
    tx: "virtio-tap-tx",
    rx: "virtio-tap-rx",
    ping: Some("ping-virtio"),
    model: "virtio-net-pci",
    driver: "virtio_net",
    vhost: false,
    queues: 1,
};
const E1000_NIC: NicBench = NicBench {
    prefix: "e1000",
    tx: "e1000-tx",
    rx: "e1000-rx",
    ping: Some("ping-e1000"),
    model: "e1000",
    driver: "e1000",
    vhost: false,
    queues: 1,
};
const VHOST_NIC: NicBench = NicBench {
    prefix: "vhost",
    tx: "vhost-tx",
    rx: "vhost-rx",
    ping: None,
    model: "virtio-net-pci",
    driver: "virtio_net",
    vhost: true,
    queues: 1,
};
/// Against [`VHOST_NIC`]: what a second pair (and vCPU) adds.
const VHOST_2PAIRS_NIC: NicBench = NicBench {
    prefix: "vhost-2pairs",
    tx: "vhost-2pairs-tx",
    rx: "vhost-2pairs-rx",
    queues: 2,
    ..VHOST_NIC
};

/// Boots a 512 MiB, one-vCPU guest with one NIC per entry of `nics`, each
/// over a tap in [`BRIDGE`] on a subnet of its own ([`nic_place`]), running
/// `steps` once all are up. The guest loads the drivers in the order of
/// `nics`, so NIC `i` is `eth<i>`. The taps QEMU needs live as long as the
/// returned guards.
fn boot_nics_on_bridge(
    env: &LabEnv,
    vmm: Vmm,
    log: &str,
    steps: &str,
    nics: &[&NicBench],
) -> Result<(Running, Vec<BridgedTap>)> {
    bridge_with_iperf_server()?;
    let mut taps = Vec::new();
    let mut args = Vec::new();
    let mut drivers: Vec<&str> = Vec::new();
    let mut first_steps = Vec::new();
    for (i, nic) in nics.iter().enumerate() {
        let place = nic_place(vmm, i);
        if i > 0 {
            host_on_subnet(&place)?;
            first_steps.push(format!("net:{}:{}", place.dev, place.guest_ip));
        }
        e2e::checks::iperf_server_on(&place.host_ip, IPERF_PORT)?;
        // A pair of clients needs a server each; only now that the bridge
        // has the address can the second bind it (in a fresh L1 whose first
        // case this is, it did not before).
        if nic.queues > 1 {
            e2e::checks::iperf_server_on(&place.host_ip, SECOND_IPERF_PORT)?;
        }
        if vmm == Vmm::Qemu {
            taps.push(BridgedTap::create_with_queues(&place.tap, nic.queues)?);
        }
        let id = format!("n{i}");
        args.extend(vmm.tap_args_for(
            &id, nic.model, &place.tap, BRIDGE, &place.mac, nic.vhost, nic.queues,
        ));
        if !drivers.contains(&nic.driver) {
            drivers.push(nic.driver);
        }
    }
    first_steps.push(steps.to_string());
    // A queue pair per vCPU, as the driver maps them.
    let cpus = nics.iter().map(|n| n.queues).max().unwrap_or(1);
    let guest = Guest::new()
        .cpus(u32::from(cpus))
        .word("quiet")
        .moat("nic", &drivers.join(","))
        .moat("ip", GUEST_IP)
        .action(&first_steps.join(","));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vm = vmm.boot_with(env, &guest, log, &args)?;
    wait_event(&mut vm, "start", BOOT_TIMEOUT)?;
    for (i, nic) in nics.iter().enumerate() {
        let place = nic_place(vmm, i);
        let net = wait_event(&mut vm, "net", STEP_TIMEOUT)?;
        ensure!(
            net.get("dev") == Some(place.dev.as_str())
                && net.get("driver") == Some(nic.driver)
                && net.get("mac") == Some(place.mac.as_str()),
            "the guest's {} should be {} with {}: {net:?}\n{}",
            place.dev,
            nic.driver,
            place.mac,
            vm.report()
        );
    }
    Ok((vm, taps))
}

/// `ping-virtio`, `virtio-tap-tx`, `virtio-tap-rx` (and likewise for the
/// other NICs): in one guest with the NICs `nics` on the bridge, for each
/// NIC whose cases are asked for, in turn: the average of [`PINGS`]
/// guest→L1 pings (ms), then iperf3 guest→L1 and L1→guest (`-R`) for
/// [`IPERF_SECS`] s each (receiver's Mbit/s), over that NIC's subnet.
/// moatvm: its device process (or vhost-net); QEMU: the same device model
/// and vhost setting on a tap of its own in the same bridge.
fn nics_on_bridge(
    env: &LabEnv,
    vmm: Vmm,
    run: usize,
    cases: &[&str],
    all: &[&NicBench],
) -> Result<Figures> {
    let asked = |nic: &&NicBench| {
        [Some(nic.tx), Some(nic.rx), nic.ping]
            .iter()
            .flatten()
            .any(|c| cases.contains(c))
            || (nic.prefix == VIRTIO_NIC.prefix && cases.contains(&"mem"))
    };
    let nics: Vec<&NicBench> = all.iter().copied().filter(asked).collect();
    // `mem` is measured in the virtio-net guest (its definition: one
    // virtio-net NIC), while it idles after booting.
    let mem = nics.len() == 1 && nics[0].prefix == VIRTIO_NIC.prefix && cases.contains(&"mem");
    let mut steps = Vec::new();
    if mem {
        steps.push(format!("sleep:{}", IDLE.as_secs()));
    }
    // What each step gives: (case, what the guest says, iperf direction).
    let mut expect: Vec<(&'static str, &'static str, &'static str)> = Vec::new();
    for (i, nic) in nics.iter().enumerate() {
        let host = nic_place(vmm, i).host_ip;
        if let Some(ping) = nic.ping.filter(|p| cases.contains(p)) {
            steps.push(format!("ping:{host}:{PINGS}:{PING_INTERVAL}"));
            expect.push((ping, "ping", ""));
        }
        for (case, dir) in [(nic.tx, "tx"), (nic.rx, "rx")] {
            if !cases.contains(&case) {
                continue;
            }
            if nic.queues > 1 {
                steps.push(format!(
                    "iperf2:{host}:{IPERF_SECS}:{dir}:{IPERF_PORT}:{SECOND_IPERF_PORT}"
                ));
                expect.push((case, "iperf2", dir));
            } else {
                // The queues' interrupt counts before the first run and
                // after each, for the `LAB-BENCH-NIC` lines.
                if !expect.iter().any(|e| e.1 == "queues") {
                    steps.push("queues".into());
                    expect.push(("", "queues", ""));
                }
                steps.push(format!("iperf:{host}:{IPERF_SECS}:{dir}"));
                expect.push((case, "iperf", dir));
                steps.push("queues".into());
                expect.push((case, "queues", ""));
            }
        }
    }
    steps.push("reboot".into());
    let prefixes: Vec<&str> = nics.iter().map(|n| n.prefix).collect();
    let log = format!("bench-{}-{}-{run}", prefixes.join("+"), vmm.name());
    let (mut vm, _taps) = boot_nics_on_bridge(env, vmm, &log, &steps.join(","), &nics)?;
    let mut figures: Figures = Vec::new();
    if mem {
        figures.push(("mem", measure_mem(&mut vm, vmm, run)));
    }
    let mut cpu = Tasks::now();
    let mut queues: Option<Event> = None;
    for (case, what, dir) in expect {
        let event = wait_event(&mut vm, what, NET_TIMEOUT)?;
        if what == "queues" {
            if let Some(line) = queues
                .as_ref()
                .and_then(|q| nic_line(case, vmm, run, q, &event))
            {
                println!("{line}");
            }
            queues = Some(event);
            continue;
        }
        cpu_line(&mut cpu, case, vmm, run);
        let figure = if what == "ping" {
            (|| {
                ensure!(event.number("received")? > 0.0, "no ping reply: {event:?}");
                event.number("avg_ms")
            })()
        } else if what == "iperf2" {
            ensure!(
                event.get("dir") == Some(dir),
                "expected the two-client iperf3 {dir} result, got {event:?}"
            );
            (|| -> Result<f64> { Ok(event.number("mbits0")? + event.number("mbits1")?) })()
                .with_context(|| format!("both clients should report a rate: {event:?}"))
        } else {
            ensure!(
                event.get("dir") == Some(dir),
                "expected the iperf3 {dir} result, got {event:?}"
            );
            match event.get("error") {
                Some(error) => Err(anyhow::anyhow!("iperf3 {dir} failed: {error}")),
                None => event.number("mbits"),
            }
        };
        figures.push((case, figure));
    }
    vm.expect_success(STEP_TIMEOUT)?;
    Ok(figures)
}

/// `user-tx`, `user-rx`: a virtio-net-pci guest on user-mode networking
/// (DHCP), iperf3 to and from a server on L1's loopback through the gateway
/// 10.0.2.2, [`IPERF_SECS`] s each way (receiver's Mbit/s). moatvm: its
/// libslirp backend process; QEMU: its built-in one (`-netdev user`, see
/// [`Vmm::user_args`]).
fn user(env: &LabEnv, vmm: Vmm, run: usize, cases: &[&str]) -> Result<Figures> {
    e2e::checks::loopback_iperf_server()?;
    let port = e2e::checks::LOOPBACK_IPERF_PORT;
    let dirs: Vec<(&'static str, &str)> = [("user-tx", "tx"), ("user-rx", "rx")]
        .into_iter()
        .filter(|(case, _)| cases.contains(case))
        .collect();
    let mut steps: Vec<String> = dirs
        .iter()
        .map(|(_, dir)| format!("iperf:10.0.2.2:{IPERF_SECS}:{dir}:{port}"))
        .collect();
    steps.push("reboot".into());
    let (_, mac) = tap_and_mac(vmm);
    let guest = Guest::new()
        .word("quiet")
        .moat("nic", "virtio_net")
        .moat("ip", "dhcp")
        .action(&steps.join(","));
    let args = vmm.user_args("virtio-net-pci", mac);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = format!("bench-user-{}-{run}", vmm.name());
    let mut vm = vmm.boot_with(env, &guest, &log, &args)?;
    let net = wait_event(&mut vm, "net", BOOT_TIMEOUT)?;
    ensure!(
        net.get("addr") == Some("10.0.2.15/24"),
        "DHCP should give 10.0.2.15/24: {net:?}\n{}",
        vm.report()
    );
    let mut figures: Figures = Vec::new();
    let mut cpu = Tasks::now();
    for (case, dir) in dirs {
        let event = wait_event(&mut vm, "iperf", NET_TIMEOUT)?;
        cpu_line(&mut cpu, case, vmm, run);
        ensure!(
            event.get("dir") == Some(dir),
            "expected the iperf3 {dir} result, got {event:?}"
        );
        let figure = match event.get("error") {
            Some(error) => Err(anyhow::anyhow!("iperf3 {dir} failed: {error}")),
            None => event.number("mbits"),
        };
        figures.push((case, figure));
    }
    vm.expect_success(STEP_TIMEOUT)?;
    Ok(figures)
}

/// Prints where L1's CPU time went since `since` (the step of `case` just
/// ended), and starts the next interval.
fn cpu_line(since: &mut Tasks, case: &str, vmm: Vmm, run: usize) {
    let now = Tasks::now();
    println!(
        "{}",
        now.since(since, &format!("{case} {} run={}", vmm.name(), run + 1))
    );
    *since = now;
}

/// A `LAB-BENCH-NIC` line: what the guest's NIC saw between two `queues`
/// events: the interrupts of each virtio queue (`input.0=N output.0=N`),
/// and the packets each way with their mean size in bytes (a GSO frame is
/// one packet); none when the counters are missing.
fn nic_line(case: &str, vmm: Vmm, run: usize, before: &Event, after: &Event) -> Option<String> {
    let delta = |key: &str| Some(after.number(key).ok()? - before.number(key).ok()?);
    let mut fields: Vec<String> = after
        .fields
        .iter()
        .filter(|(key, _)| key.starts_with("input.") || key.starts_with("output."))
        .filter_map(|(key, _)| Some(format!("{key}={}", delta(key)?)))
        .collect();
    for dir in ["rx", "tx"] {
        let packets = delta(&format!("{dir}_packets"))?;
        let bytes = delta(&format!("{dir}_bytes"))?;
        let mean = if packets > 0.0 { bytes / packets } else { 0.0 };
        fields.push(format!(
            "{dir}_packets={packets} {dir}_mean_bytes={mean:.0}"
        ));
    }
    Some(format!(
        "LAB-BENCH-NIC {case} {} run={} {}",
        vmm.name(),
        run + 1,
        fields.join(" ")
    ))
}

/// How long the guest idles (a `sleep` step) before its first step when
/// `mem` is measured.
const IDLE: Duration = Duration::from_secs(5);

/// Options of `xtask bench-inner`.
#[derive(clap::Args)]
pub struct InnerOptions {
    /// Runs per VMM and case.
    #[arg(long)]
    runs: usize,
    /// Comma-separated case names.
    #[arg(long)]
    cases: String,
    /// Where the result lines go.
    #[arg(long)]
    results: PathBuf,
}

/// Ends L1's iperf3 servers, so that the next run starts its own: a guest
/// that died mid-test leaves its server busy with the test for a long
/// while, and every client after it would be turned away.
fn fresh_iperf_servers() {
    let _ = Command::new("pkill").args(["-x", "iperf3"]).status();
    // Until they are gone, their sockets still listen, and the next run
    // would take them for its own servers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let left = Command::new("pgrep").args(["-x", "iperf3"]).output();
        if left.is_ok_and(|o| !o.status.success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("LAB-BENCH iperf3 servers still running 10 s after pkill");
}

/// How many times a failed run is tried again.
const RUN_RETRIES: usize = 2;

/// Runs the cases, alternating the VMMs (and which goes first) run by run;
/// cases sharing a probe are measured in the same boots. A failed run is
/// tried again (the nested lab fails now and then: a guest that resets by
/// itself or never starts, for either VMM); a VMM whose run failed every
/// try is not run again for that probe's cases.
pub fn inner(opts: &InnerOptions) -> Result<()> {
    let env = LabEnv::from_env()?;
    mount_debugfs();
    crate::exit_cost::report();
    let mut results = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.results)?;
    let wanted: Vec<&Case> = opts
        .cases
        .split(',')
        .filter_map(|name| CASES.iter().find(|c| c.name == name))
        .collect();
    let mut probes: Vec<&Probe> = Vec::new();
    for probe in wanted.iter().filter_map(|c| c.probe) {
        if !probes.iter().any(|p| p.name == probe.name) {
            probes.push(probe);
        }
    }
    for probe in probes {
        let names: Vec<&str> = wanted
            .iter()
            .filter(|c| c.probe.is_some_and(|p| p.name == probe.name))
            .map(|c| c.name)
            .collect();
        let mut failed = Vec::new();
        for run in 0..opts.runs {
            let mut order = Vmm::ALL;
            if run % 2 == 1 {
                order.reverse();
            }
            for vmm in order {
                if failed.contains(&vmm) {
                    continue;
                }
                let mut outcome = (probe.measure)(&env, vmm, run, &names);
                for _ in 0..RUN_RETRIES {
                    let Err(e) = &outcome else {
                        break;
                    };
                    let short: String = e.root_cause().to_string().chars().take(120).collect();
                    println!(
                        "LAB-BENCH {} {} run {}: failed ({short}); once more",
                        probe.name,
                        vmm.name(),
                        run + 1
                    );
                    fresh_iperf_servers();
                    outcome = (probe.measure)(&env, vmm, run, &names);
                }
                if outcome.is_err() {
                    fresh_iperf_servers();
                }
                let lines: Vec<(&str, String)> = match outcome {
                    Ok(figures) => names
                        .iter()
                        .map(|&name| {
                            let line = match figures.iter().find(|(case, _)| *case == name) {
                                Some((_, Ok(value))) => format!("ok\t{value}"),
                                Some((_, Err(e))) => error_field(e),
                                None => "error\tthe run gave no figure".to_string(),
                            };
                            (name, line)
                        })
                        .collect(),
                    Err(e) => {
                        failed.push(vmm);
                        let line = error_field(&e);
                        names.iter().map(|&name| (name, line.clone())).collect()
                    }
                };
                for (name, line) in lines {
                    let short: String = line.replace('\t', " ").chars().take(160).collect();
                    println!("LAB-BENCH {name} {} run {}: {short}", vmm.name(), run + 1);
                    writeln!(results, "RUN\t{name}\t{}\t{line}", vmm.name())?;
                }
                results.flush()?;
            }
        }
    }
    Ok(())
}

/// `error<TAB>message`, the root cause first (the report shows the start),
/// on one line.
fn error_field(e: &anyhow::Error) -> String {
    let msg = format!("{} ({e:#})", e.root_cause());
    format!("error\t{}", msg.replace(['\n', '\t'], " | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_lines_give_interrupts_and_frames_between_two_looks() {
        let look = |line: &str| Event::parse(line).unwrap();
        let before = look(
            "MOAT queues dev=eth0 list=rx-0,tx-0 input.0=789 output.0=1933 \
             rx_packets=100 rx_bytes=6000 tx_packets=10 tx_bytes=1000",
        );
        let after = look(
            "MOAT queues dev=eth0 list=rx-0,tx-0 input.0=1655 output.0=3191 \
             rx_packets=300 rx_bytes=6006000 tx_packets=10 tx_bytes=1000",
        );
        assert_eq!(
            nic_line("virtio-tap-rx", Vmm::Qemu, 1, &before, &after).as_deref(),
            Some(
                "LAB-BENCH-NIC virtio-tap-rx qemu run=2 input.0=866 output.0=1258 \
                 rx_packets=200 rx_mean_bytes=30000 tx_packets=0 tx_mean_bytes=0"
            )
        );
        // An e1000 guest has no virtio queues, only the counters.
        let e1000 = look("MOAT queues dev=eth0 list=rx-0,tx-0 rx_packets=1 rx_bytes=60 tx_packets=2 tx_bytes=120");
        assert_eq!(
            nic_line("e1000-tx", Vmm::Moatvm, 0, &e1000, &e1000).as_deref(),
            Some("LAB-BENCH-NIC e1000-tx moatvm run=1 rx_packets=0 rx_mean_bytes=0 tx_packets=0 tx_mean_bytes=0")
        );
        // An older guest image without them: no line.
        let bare = look("MOAT queues dev=eth0 list=rx-0,tx-0 input.0=1");
        assert_eq!(
            nic_line("virtio-tap-tx", Vmm::Moatvm, 0, &bare, &bare),
            None
        );
    }

    #[test]
    fn each_nic_has_its_own_tap_mac_and_subnet() {
        let first = nic_place(Vmm::Moatvm, 0);
        assert_eq!(
            (first.tap.as_str(), first.mac.as_str(), first.dev.as_str()),
            ("tapb", "52:54:00:12:34:56", "eth0")
        );
        let second = nic_place(Vmm::Qemu, 1);
        assert_eq!(
            (
                second.tap.as_str(),
                second.mac.as_str(),
                second.dev.as_str()
            ),
            ("tapq1", "52:54:00:12:35:57", "eth1")
        );
        assert_eq!(
            (second.guest_ip.as_str(), second.host_ip.as_str()),
            ("10.0.1.2/24", "10.0.1.1")
        );
    }
}
