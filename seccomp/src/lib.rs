//! One seccomp allowlist per moatvm process kind, each system call with the
//! reason it is there.
//!
//! A process installs its kind's filter with [`install`] after
//! `jail::enter` and before it touches guest data. The filter is applied
//! with TSYNC, so every thread of the process is covered, including those
//! started earlier. Anything not on the list kills the whole process
//! (`SECCOMP_RET_KILL_PROCESS`: it dies as if by SIGSYS), or, in
//! [`Mode::Log`] (`--seccomp log`, for debugging), is logged by the kernel
//! (audit / dmesg, `type=1326 ... syscall=N`) and allowed.
//!
//! Adding a process kind: a module beside `virtio_net.rs` with its `NAME`
//! and `policy()`, and a variant plus three match arms in [`ProcessKind`].
//! Lists start from the Rust runtime part in `common.rs` (23 calls).
//!
//! A kind may also *refuse* calls: they fail with an errno and never reach
//! the kernel proper (a second, stacked filter; see `Policy::refuse`). Only
//! the slirp backend does, for the files libslirp looks for on its own.
//!
//! The lists are for x86_64 (system call and ioctl numbers, KVM structs).

#[cfg(not(target_arch = "x86_64"))]
compile_error!("moatvm's seccomp lists are written for x86_64");

mod common;
mod e1000;
pub mod ioctls;
mod policy;
mod slirp;
mod syscall_names;
mod vcpu;
mod virtio_net;

use std::fmt;
use std::str::FromStr;

pub use seccompiler::BpfProgram;
pub use syscall_names::syscall_name;

/// Why a filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The list did not compile to BPF.
    #[error("cannot build the {kind} seccomp filter: {source}")]
    Build {
        /// The process kind.
        kind: &'static str,
        /// Why.
        source: seccompiler::BackendError,
    },
    /// The kernel refused the filter (or TSYNC failed for some thread).
    #[error("cannot install the {kind} seccomp filter: {source}")]
    Install {
        /// The process kind.
        kind: &'static str,
        /// Why.
        source: seccompiler::Error,
    },
    /// No process kind has this name.
    #[error("unknown process kind {0:?}")]
    UnknownKind(String),
    /// No mode has this name.
    #[error("unknown seccomp mode {0:?} (expected kill or log)")]
    UnknownMode(String),
}

/// The kinds of moatvm process that get a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessKind {
    /// The vCPU process (see `vcpu.rs`).
    Vcpu,
    /// A virtio-net device process (see `virtio_net.rs`).
    VirtioNet,
    /// An e1000 device process (see `e1000.rs`).
    E1000,
    /// A user-mode networking (libslirp) backend process (see `slirp.rs`).
    Slirp,
}

impl ProcessKind {
    /// Every kind.
    pub const ALL: [ProcessKind; 4] = [
        ProcessKind::Vcpu,
        ProcessKind::VirtioNet,
        ProcessKind::E1000,
        ProcessKind::Slirp,
    ];

    /// The kind's name (`vcpu`, `virtio-net`).
    pub fn name(self) -> &'static str {
        match self {
            ProcessKind::Vcpu => vcpu::NAME,
            ProcessKind::VirtioNet => virtio_net::NAME,
            ProcessKind::E1000 => e1000::NAME,
            ProcessKind::Slirp => slirp::NAME,
        }
    }

    fn policy(self) -> policy::Policy {
        match self {
            ProcessKind::Vcpu => vcpu::policy(),
            ProcessKind::VirtioNet => virtio_net::policy(),
            ProcessKind::E1000 => e1000::policy(),
            ProcessKind::Slirp => slirp::policy(),
        }
    }

    /// The names of the system calls the kind may make (some only with
    /// certain arguments), in system call number order.
    pub fn syscalls(self) -> Vec<&'static str> {
        self.policy().names()
    }

    /// The names of the system calls the kind refuses (they fail with an
    /// errno instead of running), in system call number order.
    pub fn refused_syscalls(self) -> Vec<&'static str> {
        self.policy().refused_names()
    }
}

impl fmt::Display for ProcessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProcessKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        ProcessKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::UnknownKind(s.to_string()))
    }
}

/// What happens on a system call that is not on the list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The process is killed (the default).
    #[default]
    Kill,
    /// The kernel logs the call and lets it through: for finding what a
    /// list lacks, never for production.
    Log,
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "kill" => Ok(Mode::Kill),
            "log" => Ok(Mode::Log),
            _ => Err(Error::UnknownMode(s.to_string())),
        }
    }
}

/// The compiled filter for `kind` in `mode`, without installing it.
pub fn filter(kind: ProcessKind, mode: Mode) -> Result<BpfProgram, Error> {
    kind.policy().compile(kind.name(), mode)
}

/// Installs `kind`'s filter on every thread of the calling process (TSYNC),
/// setting `PR_SET_NO_NEW_PRIVS` first. There is no way back.
pub fn install(kind: ProcessKind, mode: Mode) -> Result<(), Error> {
    let policy = kind.policy();
    let program = policy.compile(kind.name(), mode)?;
    let install = |program: &BpfProgram| {
        seccompiler::apply_filter_all_threads(program).map_err(|source| Error::Install {
            kind: kind.name(),
            source,
        })
    };
    // The refusals first: the allowlist does not allow seccomp(2) itself.
    if let Some(refusals) = policy.compile_refusals(kind.name())? {
        install(&refusals)?;
    }
    install(&program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_compiles_in_both_modes() {
        for kind in ProcessKind::ALL {
            for mode in [Mode::Kill, Mode::Log] {
                let program = filter(kind, mode).unwrap();
                assert!(!program.is_empty());
            }
            kind.policy().compile_refusals(kind.name()).unwrap();
        }
    }

    #[test]
    fn nic_list_stays_small() {
        let names = ProcessKind::VirtioNet.syscalls();
        assert!(names.len() <= 40, "{} calls: {names:?}", names.len());
    }

    #[test]
    fn no_kind_allows_what_no_device_needs() {
        for kind in ProcessKind::ALL {
            let names = kind.syscalls();
            // The slirp backend's job is host sockets (of two domains
            // only); no other process opens any.
            let sockets: &[&str] = if kind == ProcessKind::Slirp {
                &[]
            } else {
                &["socket", "connect", "bind"]
            };
            for forbidden in sockets.iter().copied().chain([
                "open",
                "openat",
                "execve",
                "execveat",
                "fork",
                "vfork",
                "ptrace",
                "mount",
                "unshare",
                "setns",
                "kill",
                "bpf",
                "seccomp",
                "process_vm_writev",
                "init_module",
                "userfaultfd",
                "memfd_create",
            ]) {
                assert!(!names.contains(&forbidden), "{kind} allows {forbidden}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in ProcessKind::ALL {
            assert_eq!(kind.name().parse::<ProcessKind>().unwrap(), kind);
        }
        assert!("rtl8139".parse::<ProcessKind>().is_err());
        assert_eq!("log".parse::<Mode>().unwrap(), Mode::Log);
        assert_eq!("kill".parse::<Mode>().unwrap(), Mode::Kill);
        assert!("trap".parse::<Mode>().is_err());
    }

    /// `cargo test -p seccomp -- --nocapture lists` prints every list.
    #[test]
    fn lists() {
        for kind in ProcessKind::ALL {
            let names = kind.syscalls();
            println!("{kind} ({}): {}", names.len(), names.join(" "));
            let refused = kind.refused_syscalls();
            if !refused.is_empty() {
                println!("{kind} refuses: {}", refused.join(" "));
            }
        }
    }

    #[test]
    fn only_slirp_refuses_and_only_file_lookups() {
        for kind in ProcessKind::ALL {
            let refused = kind.refused_syscalls();
            if kind != ProcessKind::Slirp {
                assert!(refused.is_empty(), "{kind} refuses {refused:?}");
                continue;
            }
            assert!(refused.contains(&"openat") && refused.contains(&"newfstatat"));
            for r in refused {
                assert!(
                    [
                        "open",
                        "openat",
                        "openat2",
                        "stat",
                        "lstat",
                        "newfstatat",
                        "statx"
                    ]
                    .contains(&r),
                    "slirp refuses {r}"
                );
            }
        }
    }
}
