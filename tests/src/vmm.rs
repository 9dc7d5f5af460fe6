//! The VMMs a lab guest can run under, and their command lines. This is the
//! one place that knows moatvm's and QEMU's options.

use crate::env::LabEnv;
use crate::guest::Guest;
use crate::process::Running;
use anyhow::Result;
use std::process::Command;

/// A VMM for the L2 guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    Moatvm,
    Qemu,
}

impl Vmm {
    /// Both, moatvm first.
    pub const ALL: [Vmm; 2] = [Vmm::Moatvm, Vmm::Qemu];

    pub fn name(self) -> &'static str {
        match self {
            Vmm::Moatvm => "moatvm",
            Vmm::Qemu => "qemu",
        }
    }

    /// The command that boots `guest` with the serial console on stdout and
    /// exits when the guest reboots or powers off. Tests may append options
    /// (e.g. NICs) before spawning it.
    pub fn command(self, env: &LabEnv, guest: &Guest) -> Command {
        match self {
            Vmm::Moatvm => {
                // Contract: moatvm run --kernel PATH [--initrd PATH]
                // [--cmdline STR] [--memory SIZE] [--cpus N]
                // [--serial stdio|file:PATH|none]
                let mut cmd = Command::new(&env.moatvm);
                cmd.arg("run")
                    .arg("--kernel")
                    .arg(&env.kernel)
                    .arg("--initrd")
                    .arg(&env.initrd)
                    .arg("--cmdline")
                    .arg(guest.cmdline())
                    .arg("--memory")
                    .arg(format!("{}M", guest.memory_mib))
                    .arg("--cpus")
                    .arg(guest.cpus.to_string())
                    .arg("--serial")
                    .arg("stdio");
                cmd
            }
            Vmm::Qemu => {
                let mut cmd = Command::new(&env.qemu);
                cmd.args(["-accel", "kvm", "-cpu", "host", "-M", "q35"])
                    .args(["-m", &guest.memory_mib.to_string()])
                    .args(["-smp", &guest.cpus.to_string()])
                    .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
                    .args(["-no-reboot", "-nic", "none"])
                    // Threads named for what they run (`CPU 0/KVM`), as
                    // the bench's CPU accounting shows them.
                    .args(["-name", "moat,debug-threads=on"])
                    .arg("-kernel")
                    .arg(&env.kernel)
                    .arg("-initrd")
                    .arg(&env.initrd)
                    .arg("-append")
                    .arg(guest.cmdline());
                cmd
            }
        }
    }

    /// Options that give the VM one virtio-net-pci NIC with `mac` over the
    /// tap `tap` in `bridge`. moatvm creates the tap, enslaves it and
    /// removes it itself; QEMU (userspace virtio-net: `vhost=off`) opens a
    /// tap that must already exist in the bridge (see
    /// [`crate::checks::BridgedTap`]).
    pub fn virtio_tap_args(self, tap: &str, bridge: &str, mac: &str) -> Vec<String> {
        self.tap_args("virtio-net-pci", tap, bridge, mac, false)
    }

    /// Like [`Vmm::virtio_tap_args`] for any NIC `model` (QEMU's names),
    /// with vhost-net on or off.
    pub fn tap_args(
        self,
        model: &str,
        tap: &str,
        bridge: &str,
        mac: &str,
        vhost: bool,
    ) -> Vec<String> {
        self.tap_args_for("n0", model, tap, bridge, mac, vhost, 1)
    }

    /// [`Vmm::tap_args`] with the netdev named `id` (for a VM with more
    /// than one NIC) and `queues` queue pairs (above 1: `mq=on`).
    #[allow(clippy::too_many_arguments)]
    pub fn tap_args_for(
        self,
        id: &str,
        model: &str,
        tap: &str,
        bridge: &str,
        mac: &str,
        vhost: bool,
        queues: u16,
    ) -> Vec<String> {
        let vhost = if vhost { "on" } else { "off" };
        let (queues, mq) = if queues > 1 {
            (format!(",queues={queues}"), ",mq=on")
        } else {
            (String::new(), "")
        };
        match self {
            Vmm::Moatvm => vec![
                "--netdev".into(),
                format!("tap,id={id},ifname={tap},br={bridge},vhost={vhost}{queues}"),
                "--device".into(),
                format!("{model},netdev={id},mac={mac}{mq}"),
            ],
            Vmm::Qemu => vec![
                "-netdev".into(),
                format!("tap,id={id},ifname={tap},script=no,downscript=no,vhost={vhost}{queues}"),
                "-device".into(),
                format!("{model},netdev={id},mac={mac}{mq}"),
            ],
        }
    }

    /// Options that give the VM one NIC `model` with `mac` on user-mode
    /// networking: a `user` netdev and the NIC on it, spelled alike by
    /// both. Not QEMU's `-nic user,model=` shorthand: QEMU 7.2 (Debian 12)
    /// creates that NIC with no MSI-X vectors, so its virtio-net falls back
    /// to a shared INTx line (the guest's /proc/interrupts shows
    /// `IO-APIC ... virtio0`, and every interrupt costs an ISR read), which
    /// is not the device a QEMU user configures with `-device`.
    pub fn user_args(self, model: &str, mac: &str) -> Vec<String> {
        let dash = match self {
            Vmm::Moatvm => "--",
            Vmm::Qemu => "-",
        };
        vec![
            format!("{dash}netdev"),
            "user,id=u0".into(),
            format!("{dash}device"),
            format!("{model},netdev=u0,mac={mac}"),
        ]
    }

    /// Boots `guest`; logs go to `OUT/<log>.serial.log` and `.stderr.log`.
    pub fn boot(self, env: &LabEnv, guest: &Guest, log: &str) -> Result<Running> {
        self.boot_with(env, guest, log, &[])
    }

    /// Like [`Vmm::boot`] with extra VMM options appended.
    pub fn boot_with(
        self,
        env: &LabEnv,
        guest: &Guest,
        log: &str,
        extra: &[&str],
    ) -> Result<Running> {
        let mut cmd = self.command(env, guest);
        cmd.args(extra);
        Running::spawn(self.name(), cmd, &env.out_file(log))
    }
}
