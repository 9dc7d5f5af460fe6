//! The validated description of a VM. (Contract; being filled in.)

use std::path::PathBuf;

/// Where the guest's COM1 goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialConfig {
    /// moatvm's standard input and output.
    Stdio,
    /// Appended to a file (created if missing).
    File(PathBuf),
    /// Discarded.
    None,
}

/// Everything needed to start a VM, checked.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub memory_mib: u64,
    pub cpus: u8,
    pub serial: SerialConfig,
}
