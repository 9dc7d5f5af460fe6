//! Lab scenario `boot`: moatvm boots the lab's Linux guest, which counts its
//! CPUs and reboots or powers off; moatvm must then exit with status 0.

use crate::checks::{boot_count_cpus_and_end, Ending};
use crate::vmm::Vmm;
use anyhow::Result;

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn one_cpu_reboot() -> Result<()> {
    boot_count_cpus_and_end(Vmm::Moatvm, 1, Ending::Reboot, "boot-1cpu")
}

#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn two_cpus_reboot() -> Result<()> {
    boot_count_cpus_and_end(Vmm::Moatvm, 2, Ending::Reboot, "boot-2cpus")
}

/// Needs ACPI: without it `poweroff -f` ends in "Attempted to kill init".
#[test]
#[ignore = "runs inside the nested lab (cargo xtask lab)"]
fn poweroff() -> Result<()> {
    boot_count_cpus_and_end(Vmm::Moatvm, 1, Ending::Poweroff, "boot-poweroff")
}
