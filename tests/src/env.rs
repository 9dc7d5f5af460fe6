//! Where the lab put things: paths read from environment variables that
//! `cargo xtask lab` (and `bench`) set inside L1.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// The moatvm binary to test.
pub const MOATVM: &str = "MOAT_E2E_MOATVM";
/// The guest kernel (bzImage).
pub const KERNEL: &str = "MOAT_E2E_KERNEL";
/// The guest initramfs (its /init is `xtask/lab/guest-init.sh`).
pub const INITRD: &str = "MOAT_E2E_INITRD";
/// The QEMU binary used as the comparison VMM.
pub const QEMU: &str = "MOAT_E2E_QEMU";
/// A writable directory for serial logs and other artefacts (the lab's
/// results share: the host sees it after the run).
pub const OUT: &str = "MOAT_E2E_OUT";

/// If set (to anything), test guests boot without `quiet`: slower (every
/// byte on the serial port is a VM exit, and nested ones are expensive),
/// but the whole kernel log is in the serial logs.
pub const VERBOSE: &str = "MOAT_E2E_VERBOSE";

/// The lab's paths.
#[derive(Debug, Clone)]
pub struct LabEnv {
    pub moatvm: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub qemu: PathBuf,
    pub out: PathBuf,
}

impl LabEnv {
    /// Reads every variable; fails naming the first one missing.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| -> Result<PathBuf> {
            std::env::var_os(name)
                .map(PathBuf::from)
                .with_context(|| format!("{name} is not set: run this through `cargo xtask lab`"))
        };
        let env = LabEnv {
            moatvm: var(MOATVM)?,
            kernel: var(KERNEL)?,
            initrd: var(INITRD)?,
            qemu: var(QEMU)?,
            out: var(OUT)?,
        };
        std::fs::create_dir_all(&env.out)
            .with_context(|| format!("creating {}", env.out.display()))?;
        Ok(env)
    }

    /// A path in the output directory.
    pub fn out_file(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }
}
