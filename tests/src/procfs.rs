//! What the e2e tests read about L1's processes from /proc: status fields,
//! namespaces, children, task names.

use anyhow::{bail, Context, Result};

/// Field `key` of `/proc/<pid>/status`.
pub fn status_field(pid: u32, key: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// The namespace `kind` (`mnt`, `net`, ...) of process `pid`.
pub fn ns(pid: u32, kind: &str) -> Result<String> {
    Ok(std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))?
        .to_string_lossy()
        .into_owned())
}

/// The processes whose parent is `parent`.
pub fn children(parent: u32) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if status_field(pid, "PPid").ok().and_then(|p| p.parse().ok()) == Some(parent) {
            out.push(pid);
        }
    }
    Ok(out)
}

/// The child of `parent` whose command line contains `role` (`__device`,
/// `__backend`, ...).
pub fn child_with(parent: u32, role: &str) -> Result<u32> {
    for pid in children(parent)? {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.contains(role) {
            return Ok(pid);
        }
    }
    bail!("no {role} process under {parent}")
}

/// Names (`comm`) of every task in L1, kernel threads included.
pub fn task_names() -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        if let Ok(comm) = std::fs::read_to_string(entry?.path().join("comm")) {
            names.push(comm.trim().to_string());
        }
    }
    Ok(names)
}
