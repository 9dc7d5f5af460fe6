//! The child's half: what a spawned process does to itself after exec and
//! before it touches guest data.

use std::os::fd::RawFd;
use std::path::Path;

use caps::CapSet;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::Signal;
use nix::unistd::{chdir, pivot_root};

use crate::Error;

/// What [`enter`] keeps and limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailConfig {
    /// Descriptors to keep open besides 0, 1 and 2 (always kept, so that a
    /// later descriptor never takes their number and receives stray log or
    /// panic output; [`crate::Command`] points stdin at `/dev/null`).
    /// Every other descriptor is closed.
    pub keep_fds: Vec<RawFd>,
    /// `RLIMIT_NOFILE`, soft and hard: one more than the highest descriptor
    /// number the process may open.
    pub max_open_files: u64,
    /// `RLIMIT_NPROC`, soft and hard: threads (and processes) the jailed user
    /// may have. Counted per user namespace and uid, so it must cover every
    /// thread the process runs, the main one included.
    pub max_processes: u64,
    /// `RLIMIT_CORE`, soft and hard, in bytes: 0 (the default) writes no core
    /// dump, which would hold guest memory.
    pub max_core_size: u64,
}

impl Default for JailConfig {
    /// Sized for a NIC process: a handful of descriptors (memfd, tap, IPC
    /// socket, epoll, a few eventfds per queue) and a few threads.
    fn default() -> Self {
        JailConfig {
            keep_fds: Vec::new(),
            max_open_files: 64,
            max_processes: 8,
            max_core_size: 0,
        }
    }
}

/// Directories to mount the new root's tmpfs on, first existing one wins.
/// Any directory will do (the mount is private to our mount namespace and
/// the directory's contents are never touched); these exist on any Linux.
const MOUNT_POINTS: [&str; 4] = ["/tmp", "/mnt", "/run", "/proc"];

/// Jails the calling process, which must be single-threaded and should have
/// been started by [`crate::Command::spawn`] (so it is root of its own user
/// namespace with full capabilities there, and PID 1 of its own pid
/// namespace). In order:
///
/// 1. sets `SIGKILL` as parent-death signal (again: exec can clear it);
/// 2. closes every descriptor but 0, 1, 2 and `keep_fds`, before anything
///    else, so that no inherited directory descriptor survives the pivot;
/// 3. unshares a fresh mount namespace (so that even a mistaken call outside
///    a jail cannot pivot the caller's original mount namespace), makes every
///    mount private, pivots into an empty tmpfs, detaches the old root and
///    remounts the new one read-only, nosuid, nodev, noexec;
/// 4. sets `RLIMIT_NOFILE`, `RLIMIT_NPROC`, `RLIMIT_CORE`;
/// 5. clears the bounding, ambient, inheritable, effective and permitted
///    capability sets, and checks that none is left;
/// 6. sets `PR_SET_NO_NEW_PRIVS`.
///
/// After it returns the process sees an empty root with no /proc or /dev: it
/// lives off the descriptors it kept. Install the seccomp filter next.
///
/// Descriptors owned by Rust objects other than the kept ones must not exist
/// when this is called (they get closed underneath their owners).
pub fn enter(cfg: &JailConfig) -> Result<(), Error> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(Error::CountThreads)?
        .count();
    if threads != 1 {
        return Err(Error::Threads(threads));
    }
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(Error::ParentDeathSignal)?;
    close_fds_except(&cfg.keep_fds).map_err(Error::CloseFds)?;
    pivot_into_empty_root()?;
    set_rlimits(cfg)?;
    drop_capabilities()?;
    prctl::set_no_new_privs().map_err(Error::NoNewPrivs)?;
    Ok(())
}

/// Closes every descriptor but 0, 1, 2 and `keep`.
fn close_fds_except(keep: &[RawFd]) -> Result<(), Errno> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .chain(0..=2)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 0u32;
    for k in keep {
        if k > first {
            close_range(first, k - 1)?;
        }
        first = k + 1;
    }
    close_range(first, u32::MAX)
}

/// Closes descriptors `first..=last`.
fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    // SAFETY: close_range takes integers only. Closing descriptors that Rust
    // objects own would break I/O safety; `enter`'s contract is that only the
    // kept ones (never passed here) are owned.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if r == 0 {
        return Ok(());
    }
    match Errno::last() {
        // Before Linux 5.9: close one by one, up to the descriptor limit.
        Errno::ENOSYS => {
            let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
            let end = u64::from(last).min(soft.saturating_sub(1));
            for fd in u64::from(first)..=end {
                // SAFETY: as above; EBADF for numbers not open is expected.
                unsafe { libc::close(fd as RawFd) };
            }
            Ok(())
        }
        e => Err(e),
    }
}

fn pivot_into_empty_root() -> Result<(), Error> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(Error::Unshare)?;
    // Nothing we mount or unmount may propagate back to the launcher's
    // namespace (mounts copied into a less privileged namespace are slaves
    // already; this makes sure).
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(Error::MakePrivate)?;

    let dir = MOUNT_POINTS
        .iter()
        .find(|d| Path::new(d).is_dir())
        .ok_or(Error::NoMountPoint)?;
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("moatvm-jail"),
        *dir,
        Some("tmpfs"),
        hardened,
        Some("mode=0555,size=4k,nr_inodes=1"),
    )
    .map_err(Error::MountTmpfs)?;
    // pivot_root(".", "."): the tmpfs becomes the root and the old root is
    // stacked on top of it, from where it is detached (pivot_root(2)).
    chdir(*dir).map_err(Error::Chdir)?;
    pivot_root(".", ".").map_err(Error::PivotRoot)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(Error::UnmountOldRoot)?;
    chdir("/").map_err(Error::Chdir)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | hardened,
        None::<&str>,
    )
    .map_err(Error::RemountReadOnly)
}

fn set_rlimits(cfg: &JailConfig) -> Result<(), Error> {
    let limits = [
        (Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE", cfg.max_open_files),
        (Resource::RLIMIT_NPROC, "RLIMIT_NPROC", cfg.max_processes),
        (Resource::RLIMIT_CORE, "RLIMIT_CORE", cfg.max_core_size),
    ];
    for (resource, name, value) in limits {
        setrlimit(resource, value, value).map_err(|source| Error::Rlimit {
            resource: name,
            source,
        })?;
    }
    Ok(())
}

fn drop_capabilities() -> Result<(), Error> {
    // The bounding set first: dropping from it needs CAP_SETPCAP, which the
    // effective set still holds. With it empty, not even an exec as uid 0
    // could regain anything.
    for set in [
        CapSet::Bounding,
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(Error::DropCaps)?;
    }
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Bounding] {
        if !caps::read(None, set).map_err(Error::DropCaps)?.is_empty() {
            return Err(Error::CapsRemain);
        }
    }
    Ok(())
}
