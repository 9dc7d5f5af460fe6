//! `cargo xtask demo`: boots the lab's Linux guest under moatvm and streams
//! its serial console to the terminal. Runs the VMM directly when the host
//! has hardware virtualization, otherwise inside L1 (whose console, carrying
//! the guest's, is echoed line by line).

use crate::artifacts;
use crate::cmd;
use crate::image::LabImage;
use crate::lab::{self, Job, Verdict};
use crate::paths;
use crate::setup;
use crate::suite;
use anyhow::{bail, Result};
use e2e::checks::{BRIDGE, BRIDGE_IP};
use e2e::env::LabEnv;
use e2e::guest::Guest;
use e2e::vmm::Vmm;
use std::fmt::Write as _;
use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Options {
    /// The guest's VMM: moatvm or qemu.
    #[arg(long, default_value = "moatvm")]
    vmm: String,
    /// vCPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// The guest init's steps (`moat.action=`), e.g. `sleep:3,poweroff`.
    #[arg(long, default_value = "ping:10.0.0.1:3,reboot")]
    action: String,
    /// Kill L1 after this many minutes.
    #[arg(long, default_value_t = 10)]
    timeout_mins: u64,
}

/// The demo guest: a virtio-net NIC at 10.0.0.2 that pings the host side.
fn demo_guest(opts: &Options) -> Guest {
    Guest::new()
        .cpus(opts.cpus)
        .moat("nic", "virtio_net")
        .moat("ip", "10.0.0.2/24")
        .action(&opts.action)
}

/// Options added to the VMM's command line (devices, backends).
fn vmm_extra_args(vmm: Vmm) -> Vec<String> {
    match vmm {
        Vmm::Moatvm => vmm.virtio_tap_args("tapdemo", BRIDGE, "52:54:00:12:34:56"),
        Vmm::Qemu => vec![],
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let vmm = match opts.vmm.as_str() {
        "moatvm" => Vmm::Moatvm,
        "qemu" => Vmm::Qemu,
        other => bail!("--vmm {other}: moatvm or qemu"),
    };
    let image = setup::run()?;
    let moatvm = artifacts::moatvm()?;
    let guest = demo_guest(opts);
    if host_has_virtualization() {
        direct(&image, &moatvm, vmm, &guest)
    } else {
        println!(
            "demo: no svm/vmx on this host: running {} inside L1",
            vmm.name()
        );
        in_l1(&image, &moatvm, vmm, &guest, opts)
    }
}

/// Whether /dev/kvm is backed by hardware (svm or vmx in the CPU flags).
fn host_has_virtualization() -> bool {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    let hw = flags.split_whitespace().any(|f| f == "svm" || f == "vmx");
    hw && std::path::Path::new("/dev/kvm").exists()
}

fn command(env: &LabEnv, vmm: Vmm, guest: &Guest) -> Command {
    let mut cmd = vmm.command(env, guest);
    cmd.args(vmm_extra_args(vmm));
    cmd
}

fn direct(image: &LabImage, moatvm: &std::path::Path, vmm: Vmm, guest: &Guest) -> Result<()> {
    let out = paths::lab().join("runs/demo-direct");
    fs::create_dir_all(&out)?;
    let env = LabEnv {
        moatvm: moatvm.to_path_buf(),
        kernel: image.kernel.clone(),
        initrd: image.guest_initrd.clone(),
        qemu: cmd::which("qemu-system-x86_64")?,
        out,
    };
    // On a host with hardware virtualization the demo does not touch the
    // host's network: no NIC.
    let mut cmd = vmm.command(&env, guest);
    println!("$ {}", cmd::display(&cmd));
    let status = cmd.stdin(Stdio::null()).status()?;
    println!("demo: {} exited: {status}", vmm.name());
    if !status.success() {
        bail!("{} failed", vmm.name());
    }
    Ok(())
}

fn in_l1(
    image: &LabImage,
    moatvm: &std::path::Path,
    vmm: Vmm,
    guest: &Guest,
    opts: &Options,
) -> Result<()> {
    // Paths are the same in L1 (it sees the host root); `out` is unused.
    let env = LabEnv {
        moatvm: moatvm.to_path_buf(),
        kernel: image.kernel.clone(),
        initrd: image.guest_initrd.clone(),
        qemu: cmd::which("qemu-system-x86_64")?,
        out: "/tmp".into(),
    };
    let line = cmd::display(&command(&env, vmm, guest));
    let mut script = suite::exports(image, moatvm, "\"$LAB_OUT/vms\"")?;
    writeln!(
        script,
        "ip link add {BRIDGE} type bridge && ip addr add {BRIDGE_IP}/24 dev {BRIDGE} && ip link set {BRIDGE} up"
    )?;
    writeln!(script, "echo {}", cmd::quote(format!("LAB-DEMO $ {line}")))?;
    writeln!(script, "{line} < /dev/null")?;
    writeln!(script, "status=$?")?;
    writeln!(
        script,
        "echo \"LAB-DEMO {} exited with status $status\"",
        vmm.name()
    )?;
    writeln!(script, "exit $status")?;
    let job = Job {
        name: "demo".into(),
        script,
        timeout: Duration::from_secs(opts.timeout_mins * 60),
        echo: Some(""),
    };
    let outcome = lab::run(image, &job, "demo")?;
    println!("demo: {}", outcome.describe());
    if outcome.verdict != Verdict::Done(0) {
        bail!("the demo failed ({})", outcome.console_log.display());
    }
    Ok(())
}
