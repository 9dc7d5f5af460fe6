//! The lab's two initramfs images, built from the unpacked kernel and the
//! host's busybox-static and iperf3:
//! - L1 (`l1.cpio.gz`): busybox, the modules L1 needs, `/init` =
//!   `xtask/lab/l1-init.sh`.
//! - L2 guest (`guest.cpio.gz`): busybox, every NIC driver the project
//!   supports, iperf3 with its libraries, `/init` = `xtask/lab/guest-init.sh`.

use crate::cmd;
use crate::cpio::Archive;
use crate::kernel::Kernel;
use crate::modules::{name_of, ModuleDb};
use crate::paths;
use anyhow::{bail, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Modules L1 loads at boot (their dependencies come from modules.dep):
/// KVM, the host side of the NIC backends, and the 9p root.
const L1_MODULES: &[&str] = &[
    "kvm_amd",
    "tun",
    "vhost_net",
    "bridge",
    "veth",
    "virtio_pci",
    "9pnet_virtio",
    "9p",
];

/// The guest's NIC drivers: `moat.nic=NAME` loads the modules of NAME.
pub const GUEST_NICS: &[(&str, &[&str])] = &[
    ("virtio_net", &["virtio_pci", "virtio_mmio", "virtio_net"]),
    ("e1000", &["e1000"]),
    ("8139cp", &["8139cp"]),
    ("8139too", &["8139too"]),
    ("ne2k-pci", &["ne2k-pci"]),
    ("pcnet32", &["pcnet32"]),
];

const BUSYBOX: &str = "/bin/busybox";
const IPERF3: &str = "/usr/bin/iperf3";

/// What a lab run boots.
#[derive(Debug, Clone)]
pub struct LabImage {
    pub kernel_version: String,
    /// The bzImage, for L1 and for the L2 guest alike.
    pub kernel: PathBuf,
    pub l1_initrd: PathBuf,
    pub guest_initrd: PathBuf,
}

/// Builds both images into `target/lab/VERSION/`.
pub fn build(kernel: &Kernel) -> Result<LabImage> {
    let db = ModuleDb::load(&kernel.modules_dir())?;
    let dir = paths::lab().join(&kernel.version);
    fs::create_dir_all(&dir)?;
    let image = LabImage {
        kernel_version: kernel.version.clone(),
        kernel: kernel.vmlinuz(),
        l1_initrd: dir.join("l1.cpio.gz"),
        guest_initrd: dir.join("guest.cpio.gz"),
    };
    l1_archive(kernel, &db)?.write_gz(&image.l1_initrd)?;
    guest_archive(kernel, &db)?.write_gz(&image.guest_initrd)?;
    Ok(image)
}

fn l1_archive(kernel: &Kernel, db: &ModuleDb) -> Result<Archive> {
    let mut a = base(&paths::script("l1-init.sh"))?;
    let list = add_modules(&mut a, kernel, db, L1_MODULES)?;
    a.file("etc/lab/modules", 0o644, lines(&list));
    a.dir("host");
    Ok(a)
}

fn guest_archive(kernel: &Kernel, db: &ModuleDb) -> Result<Archive> {
    let mut a = base(&paths::script("guest-init.sh"))?;
    for (nic, roots) in GUEST_NICS {
        let list = add_modules(&mut a, kernel, db, roots)?;
        a.file(&format!("etc/moat/nic/{nic}"), 0o644, lines(&list));
    }
    add_with_libraries(&mut a, Path::new(IPERF3))?;
    a.dir("tmp");
    a.dir("root");
    Ok(a)
}

/// busybox (static) with a link per applet, the basic directories and
/// device nodes, and `init` as `/init`.
fn base(init: &Path) -> Result<Archive> {
    let ldd = Command::new("ldd").arg(BUSYBOX).output()?;
    if ldd.status.success() {
        bail!("{BUSYBOX} is dynamically linked: install busybox-static");
    }
    let mut a = Archive::default();
    a.copy("bin/busybox", Path::new(BUSYBOX))?;
    for applet in cmd::output(Command::new(BUSYBOX).arg("--list-full"))?.lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "bin/busybox" {
            let depth = applet.matches('/').count();
            a.symlink(applet, &format!("{}bin/busybox", "../".repeat(depth)));
        }
    }
    for dir in ["proc", "sys", "dev", "etc", "run", "tmp"] {
        a.dir(dir);
    }
    a.char_dev("dev/console", 5, 1);
    a.char_dev("dev/null", 1, 3);
    a.copy("init", init)?;
    Ok(a)
}

/// Adds `roots` and their dependencies under `lib/modules/VERSION/`;
/// returns their paths (relative to that directory) in load order.
fn add_modules(
    a: &mut Archive,
    kernel: &Kernel,
    db: &ModuleDb,
    roots: &[&str],
) -> Result<Vec<String>> {
    let list = db.resolve(roots)?;
    for rel in &list {
        if !rel.ends_with(".ko") {
            bail!(
                "{rel}: compressed modules are not supported ({})",
                name_of(rel)
            );
        }
        let dest = format!("lib/modules/{}/{rel}", kernel.version);
        a.copy(&dest, &kernel.modules_dir().join(rel))?;
    }
    Ok(list)
}

/// Adds a dynamically linked program and the shared libraries `ldd` lists,
/// each at the path the dynamic loader will look for it.
fn add_with_libraries(a: &mut Archive, program: &Path) -> Result<()> {
    let path = program.to_string_lossy();
    a.copy(path.trim_start_matches('/'), program)?;
    let ldd = cmd::output(Command::new("ldd").arg(program))?;
    for line in ldd.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
        let file = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(file) = file.filter(|f| f.starts_with('/')) {
            a.copy(file.trim_start_matches('/'), Path::new(file))?;
        }
    }
    Ok(())
}

fn lines(items: &[String]) -> String {
    items.iter().map(|i| format!("{i}\n")).collect()
}
