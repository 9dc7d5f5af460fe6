//! Debian's generic kernel (`linux-image-amd64` → `linux-image-VERSION`),
//! downloaded with `apt-get download`, unpacked with `dpkg-deb -x` and
//! indexed with `depmod`, cached in `target/lab/kernel/VERSION/`.

use crate::cmd;
use crate::paths;
use crate::setup::Apt;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// The metapackage that names the current generic kernel.
const META: &str = "linux-image-amd64";
/// Written after a kernel is completely unpacked and indexed.
const READY: &str = ".ready";

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// e.g. `6.1.0-56-amd64`
    pub version: String,
    /// Where the package is unpacked.
    pub root: PathBuf,
}

impl Kernel {
    /// The bzImage.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.version))
    }

    /// `lib/modules/VERSION` (with modules.dep).
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.version)
    }
}

fn cache_dir(version: &str) -> PathBuf {
    paths::lab().join("kernel").join(version)
}

/// The current generic kernel, downloading and unpacking it unless cached.
/// If the download fails with package lists that were not refreshed in this
/// run (stale lists may name a kernel the archive no longer has), refreshes
/// them and tries once more.
pub fn ensure(apt: &mut Apt) -> Result<Kernel> {
    match fetch(apt) {
        Err(e) if !apt.updated() => {
            eprintln!("lab: {e:#}; refreshing the package lists and retrying");
            apt.update_once()?;
            fetch(apt)
        }
        result => result,
    }
}

fn fetch(apt: &mut Apt) -> Result<Kernel> {
    let version = match current_version(apt) {
        Ok(v) => v,
        Err(e) => match newest_cached() {
            Some(v) => {
                eprintln!("warning: {e:#}; using the cached kernel {v}");
                v
            }
            None => return Err(e),
        },
    };
    let dir = cache_dir(&version);
    let kernel = Kernel {
        version: version.clone(),
        root: dir.join("root"),
    };
    if dir.join(READY).exists() {
        return Ok(kernel);
    }
    eprintln!("lab: fetching kernel {version}");
    let _ = fs::remove_dir_all(&dir);
    let download = dir.join("download");
    fs::create_dir_all(&download)?;
    let package = format!("linux-image-{version}");
    cmd::run(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", &package])
            .current_dir(&download),
    )?;
    let deb = fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    cmd::run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&kernel.root),
    )?;
    if !kernel.vmlinuz().is_file() || !kernel.modules_dir().is_dir() {
        bail!(
            "{} has no {} or no modules",
            deb.display(),
            kernel.vmlinuz().display()
        );
    }
    cmd::run(
        Command::new("depmod")
            .arg("-b")
            .arg(&kernel.root)
            .arg(&version),
    )?;
    fs::remove_dir_all(&download)?;
    fs::write(dir.join(READY), "")?;
    Ok(kernel)
}

/// The version `linux-image-amd64` depends on today.
fn current_version(apt: &mut Apt) -> Result<String> {
    let deps = apt.depends(META)?;
    deps.iter()
        .filter_map(|d| d.strip_prefix("linux-image-"))
        .find(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
        .with_context(|| format!("`apt-cache depends {META}` names no kernel: {deps:?}"))
}

/// The newest completely unpacked kernel in the cache (offline fallback).
fn newest_cached() -> Option<String> {
    let mut versions: Vec<(std::time::SystemTime, String)> =
        fs::read_dir(paths::lab().join("kernel"))
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(READY).exists())
            .filter_map(|e| {
                let time = e.metadata().ok()?.modified().ok()?;
                Some((time, e.file_name().to_string_lossy().into_owned()))
            })
            .collect();
    versions.sort();
    versions.pop().map(|(_, v)| v)
}
