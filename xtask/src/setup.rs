//! `cargo xtask setup`: the Debian packages the lab needs (installed only
//! when `dpkg -s` says they are missing), then the kernel and the two
//! initramfs images.

use crate::cmd;
use crate::image::{self, LabImage};
use crate::kernel;
use anyhow::{Context, Result};
use std::process::Command;

/// What the lab and the build need. libslirp-dev and libglib2.0-dev are for
/// the libslirp crate (user-mode networking); ipxe-qemu has the NIC option
/// ROMs QEMU loads when a guest gets a NIC.
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "ipxe-qemu",
    "cpio",
    "gzip",
    "kmod",
    "busybox-static",
    "iperf3",
    "iproute2",
    "libslirp-dev",
    "libglib2.0-dev",
    "pkg-config",
];

/// apt, with `apt-get update` run at most once per xtask run.
#[derive(Default)]
pub struct Apt {
    updated: bool,
}

impl Apt {
    /// Whether the package lists were refreshed in this run.
    pub fn updated(&self) -> bool {
        self.updated
    }

    pub fn update_once(&mut self) -> Result<()> {
        if !self.updated {
            cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
            self.updated = true;
        }
        Ok(())
    }

    /// Installs those of `packages` that are not installed.
    pub fn install_missing(&mut self, packages: &[&str]) -> Result<()> {
        let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.update_once()?;
        cmd::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                // QEMU's recommends (its GTK front end, gstreamer, ffmpeg:
                // 350 packages) are of no use to the lab and cost minutes.
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing),
        )
        .context("installing the lab's packages (needs root)")
    }

    /// The packages `package` depends on (`apt-cache depends`); refreshes
    /// the package lists once if apt knows nothing yet.
    pub fn depends(&mut self, package: &str) -> Result<Vec<String>> {
        let query = || -> Vec<String> {
            let out = Command::new("apt-cache")
                .args(["depends", package])
                .output();
            let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            text.unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .map(|d| d.trim().to_string())
                .collect()
        };
        let mut deps = query();
        if deps.is_empty() {
            self.update_once()?;
            deps = query();
        }
        Ok(deps)
    }
}

/// Whether dpkg has the package installed.
fn installed(package: &str) -> bool {
    Command::new("dpkg")
        .args(["-s", package])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("Status: install ok installed")
        })
        .unwrap_or(false)
}

/// Just the packages (the build needs some of them too).
pub fn packages() -> Result<()> {
    Apt::default().install_missing(PACKAGES)
}

/// Packages, kernel, images: everything a lab run needs.
pub fn run() -> Result<LabImage> {
    let mut apt = Apt::default();
    apt.install_missing(PACKAGES)?;
    let kernel = kernel::ensure(&mut apt)?;
    image::build(&kernel)
}
