//! Kernel module dependencies from `modules.dep`: which `.ko` files to put
//! in an initramfs, in an order `insmod` can load them.

use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

/// The modules of one kernel: name → (path relative to the modules
/// directory, names of its dependencies).
pub struct ModuleDb {
    modules: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
}

/// A module's name from its path: `kernel/x/ne2k-pci.ko` → `ne2k_pci`.
pub fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleDb {
    /// Reads `modules.dep` and `modules.builtin` of a modules directory.
    pub fn load(dir: &Path) -> Result<ModuleDb> {
        let dep = fs::read_to_string(dir.join("modules.dep"))
            .with_context(|| format!("reading {}/modules.dep", dir.display()))?;
        let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        Ok(Self::parse(&dep, &builtin))
    }

    /// Parses the two files' contents.
    pub fn parse(dep: &str, builtin: &str) -> ModuleDb {
        let modules = dep
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(path, deps)| {
                let deps = deps.split_whitespace().map(name_of).collect();
                (name_of(path), (path.to_string(), deps))
            })
            .collect();
        let builtin = builtin.lines().map(name_of).collect();
        ModuleDb { modules, builtin }
    }

    /// The paths of `roots` and everything they depend on, each once,
    /// dependencies before their users. Built-in modules are left out; a
    /// module the kernel has neither as a module nor built in is an error.
    pub fn resolve(&self, roots: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for root in roots {
            self.visit(&name_of(root), &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(&self, name: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) -> Result<()> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        match self.modules.get(name) {
            Some((path, deps)) => {
                for dep in deps {
                    self.visit(dep, seen, order)?;
                }
                order.push(path.clone());
                Ok(())
            }
            None if self.builtin.contains(name) => Ok(()),
            None => bail!("kernel module {name} is neither in modules.dep nor built in"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/arch/x86/kvm/kvm-amd.ko: kernel/drivers/crypto/ccp/ccp.ko kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/crypto/ccp/ccp.ko:
kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko
kernel/virt/lib/irqbypass.ko:
kernel/drivers/net/ethernet/8390/ne2k-pci.ko: kernel/drivers/net/ethernet/8390/8390.ko
kernel/drivers/net/ethernet/8390/8390.ko:
";

    #[test]
    fn names_modules_like_the_kernel() {
        assert_eq!(name_of("kernel/drivers/x/ne2k-pci.ko"), "ne2k_pci");
        assert_eq!(name_of("kernel/fs/9p/9p.ko.xz"), "9p");
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let db = ModuleDb::parse(DEP, "kernel/drivers/virtio/virtio.ko\n");
        let order = db
            .resolve(&["kvm_amd", "kvm", "ne2k-pci", "virtio"])
            .unwrap();
        let pos = |m: &str| order.iter().position(|p| p.contains(m)).unwrap();
        assert_eq!(order.len(), 6);
        assert!(pos("irqbypass") < pos("/kvm.ko"));
        assert!(pos("/kvm.ko") < pos("kvm-amd"));
        assert!(pos("ccp") < pos("kvm-amd"));
        assert!(pos("/8390.ko") < pos("ne2k-pci"));
    }

    #[test]
    fn unknown_module_is_an_error() {
        let db = ModuleDb::parse(DEP, "");
        assert!(db.resolve(&["e1000"]).is_err());
    }
}
