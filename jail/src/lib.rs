//! Confinement of moatvm's per-role processes.
//!
//! Two halves, one on each side of an `execve`:
//!
//! - [`Command::spawn`] runs in the **launcher** (the privileged process the
//!   user started). It clone(2)s a child straight into new user, pid, mount,
//!   ipc, uts and cgroup namespaces (and, unless told otherwise, a new empty
//!   network namespace), writes the child's uid/gid maps, gives it exactly the
//!   descriptors asked for and execs the program (normally moatvm's own
//!   binary in a hidden role). Because the namespaces come from clone(2), the
//!   child is PID 1 of its own pid namespace with no reaper process between it
//!   and the launcher.
//! - [`enter`] runs in the **child**, after exec and before it touches guest
//!   data: it closes every descriptor it was not told to keep, pivots into an
//!   empty read-only tmpfs, sets rlimits, drops every capability, sets
//!   `PR_SET_NO_NEW_PRIVS` and the parent-death signal. The seccomp filter
//!   (crate `seccomp`) goes on right after.
//!
//! ```no_run
//! # fn launcher(memfd: std::os::fd::BorrowedFd, tap: std::os::fd::BorrowedFd) -> Result<(), jail::Error> {
//! // Launcher: a NIC process that needs nothing but its memfd and tap.
//! let child = jail::Command::current_exe()
//!     .arg0("moatvm")
//!     .arg("__device")
//!     .fd(memfd, 3)
//!     .fd(tap, 4)
//!     .new_net(true)
//!     .spawn()?;
//! # let _ = child; Ok(()) }
//! # fn device() -> Result<(), jail::Error> {
//! // Child, first thing in its role entry point:
//! jail::enter(&jail::JailConfig { keep_fds: vec![3, 4], ..Default::default() })?;
//! # Ok(()) }
//! ```
//!
//! Which processes: every moatvm process but the launcher. Device and
//! backend processes get `new_net(true)` unless they open host sockets (a
//! slirp backend). The vCPU process too, with `new_net(true)`: after start
//! it needs only descriptors it already holds (`/dev/kvm` or the VM fd, the
//! memfd, kernel and initrd, serial output, IPC sockets), and KVM ioctls
//! need no capability. Like any jailed process it must call [`enter`] while
//! still single-threaded, so files it would open by path must come as
//! descriptors from the launcher instead.
//!
//! PID 1 of a pid namespace ignores signals it has no handler for unless
//! they come from an ancestor namespace, and then only `SIGKILL`/`SIGSTOP`
//! are sure to act (blocked signals still queue, so `sigwait` works).
//!
//! User ids: a root launcher maps the child's root to an unprivileged outside
//! id (65534, `nobody`, by default; see [`Command::outside_ids`]), so even
//! an escape from every namespace lands as an unprivileged user. A launcher
//! without `CAP_SETUID`/`CAP_SETGID` can only map its own ids, and does.

mod enter;
mod spawn;

pub use enter::{enter, JailConfig};
pub use spawn::{Child, Command, NOBODY};

use std::io;
use std::path::PathBuf;

/// Why jailing failed; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- launcher side (spawn) ---
    /// The program to run could not be opened.
    #[error("cannot open the program {path}: {source}")]
    OpenProgram {
        /// The program's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// An argument or environment string holds a NUL byte.
    #[error("an argument or environment string contains a NUL byte")]
    Nul,
    /// The same child descriptor number was given twice, or a negative one.
    #[error("child descriptor {0} is invalid or mapped twice")]
    BadFd(i32),
    /// Opening /dev/null for the child's standard input failed.
    #[error("cannot open /dev/null: {0}")]
    DevNull(nix::Error),
    /// Creating a pipe or moving a descriptor failed in the launcher.
    #[error("cannot prepare descriptors: {0}")]
    Descriptors(nix::Error),
    /// Reading the launcher's capabilities failed.
    #[error("cannot read the launcher's capabilities: {0}")]
    LauncherCaps(caps::errors::CapsError),
    /// clone(2) with the new namespaces failed.
    #[error("clone into new namespaces failed: {0}")]
    Clone(nix::Error),
    /// Writing the child's `uid_map`, `gid_map` or `setgroups` failed.
    #[error("cannot write /proc/{pid}/{file}: {source}")]
    IdMap {
        /// The child's pid.
        pid: i32,
        /// Which file.
        file: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The child reported a failure between clone and exec.
    #[error("the child could not {step}: {source}")]
    ChildSetup {
        /// The step that failed (`setresuid`, `execveat`, ...).
        step: &'static str,
        /// The errno it got.
        source: nix::Error,
    },
    /// Talking to the child between clone and exec failed.
    #[error("lost contact with the child before exec: {0}")]
    Handshake(nix::Error),
    /// waitpid failed.
    #[error("waitpid: {0}")]
    Wait(nix::Error),

    // --- child side (enter) ---
    /// The thread count could not be read from /proc.
    #[error("cannot count this process's threads: {0}")]
    CountThreads(io::Error),
    /// [`enter`] found more than one thread; capabilities are per thread, so
    /// the jail can only be entered while single-threaded.
    #[error("enter must run single-threaded, but this process has {0} threads")]
    Threads(usize),
    /// PR_SET_PDEATHSIG failed.
    #[error("cannot set the parent-death signal: {0}")]
    ParentDeathSignal(nix::Error),
    /// Closing the descriptors not kept failed.
    #[error("cannot close unneeded descriptors: {0}")]
    CloseFds(nix::Error),
    /// unshare(CLONE_NEWNS) failed (most likely: not in a user namespace of
    /// our own, i.e. not started by [`Command::spawn`]).
    #[error("cannot unshare the mount namespace: {0}")]
    Unshare(nix::Error),
    /// Making every mount private failed.
    #[error("cannot make mounts private: {0}")]
    MakePrivate(nix::Error),
    /// No directory to mount the new root on exists.
    #[error("found no directory to mount the new root on")]
    NoMountPoint,
    /// Mounting the tmpfs that becomes the root failed.
    #[error("cannot mount the tmpfs root: {0}")]
    MountTmpfs(nix::Error),
    /// chdir failed.
    #[error("chdir: {0}")]
    Chdir(nix::Error),
    /// pivot_root failed.
    #[error("pivot_root: {0}")]
    PivotRoot(nix::Error),
    /// Detaching the old root failed.
    #[error("cannot detach the old root: {0}")]
    UnmountOldRoot(nix::Error),
    /// Remounting the new root read-only failed.
    #[error("cannot make the new root read-only: {0}")]
    RemountReadOnly(nix::Error),
    /// setrlimit failed.
    #[error("cannot set {resource}: {source}")]
    Rlimit {
        /// Which limit.
        resource: &'static str,
        /// Why.
        source: nix::Error,
    },
    /// Dropping a capability set failed.
    #[error("cannot drop capabilities: {0}")]
    DropCaps(caps::errors::CapsError),
    /// Capabilities were still there after dropping them.
    #[error("capabilities remain after dropping them")]
    CapsRemain,
    /// PR_SET_NO_NEW_PRIVS failed.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
}
