//! The backend process: a NIC's network when it is not a tap. Today that
//! is user-mode networking, libslirp (`devices::backend::slirp`), whose
//! sockets are real sockets of the host.
//!
//! ```text
//! moatvm __backend '<BackendRole as TOML>'
//!   fd 3  the backend's end of the frame channel (the NIC process has the other)
//! ```
//!
//! Unlike the other jailed processes it stays in the host's network
//! namespace (the launcher spawns it with `new_net(false)`): its sockets
//! are how the guest reaches the world, and its `hostfwd` listeners how the
//! world reaches the guest. The rest of the jail is the same: its own user,
//! pid, mount, ipc, uts and cgroup namespaces, an empty read-only root, no
//! capabilities, `no_new_privs`, rlimits, and its seccomp filter (`slirp`).
//!
//! Start-up, in this order:
//! 1. parse the role, take descriptor 3, check it is a frame channel;
//! 2. create the libslirp instance (no socket yet; glib seeds libslirp's
//!    random numbers from /dev/urandom, which is still there);
//! 3. `jail::enter`;
//! 4. open the `hostfwd` listeners (so the filter need not allow `bind`
//!    or `listen`); a port that cannot be bound ends the process;
//! 5. the seccomp filter (`slirp`), then serve until the NIC's end of the
//!    channel closes.
//!
//! The host's DNS resolver comes in the role (the launcher read the host's
//! /etc/resolv.conf): the jail has no files.
//!
//! Exit status: 0 when the frame channel closes; 1 when setting up fails
//! (the reason on stderr); 101 on a panic; death by `SIGSYS` when the
//! filter catches a forbidden system call.

use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use devices::backend::frames::FrameChannel;
use devices::backend::slirp::Slirp;
use log::{error, info, warn};

use crate::device_process::{take_fd, EXIT_PANIC, EXIT_SETUP_FAILED};
use crate::roles::{backend_fds, BackendRole, BackendSpec};

/// Descriptors a backend may hold: libslirp opens one host socket per
/// guest connection and per UDP peer.
const MAX_OPEN_FILES: u64 = 4096;

/// The process's name for messages (`n0 (user)`), once known.
static NAME: OnceLock<String> = OnceLock::new();

fn name() -> &'static str {
    NAME.get().map_or("backend", String::as_str)
}

/// The `moatvm __backend <arg>` entry point. Never returns.
pub fn main(arg: &str) -> ! {
    std::panic::set_hook(Box::new(|info| {
        let _ = writeln!(io::stderr(), "moatvm: {}: panic: {info}", name());
        // SAFETY: _exit ends the process at once; nothing needs cleaning up.
        unsafe { libc::_exit(EXIT_PANIC) }
    }));
    match run(arg) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            error!("{}: {e:#}", name());
            if !log::log_enabled!(log::Level::Error) {
                let _ = writeln!(io::stderr(), "moatvm: {}: {e:#}", name());
            }
            std::process::exit(EXIT_SETUP_FAILED)
        }
    }
}

fn run(arg: &str) -> Result<()> {
    let role = BackendRole::from_arg(arg).context("cannot parse the backend role")?;
    let _ = NAME.set(role.name.clone());
    let mode: seccomp::Mode = role.seccomp.parse()?;
    let frames = take_fd(backend_fds::FRAMES, "frame channel")?;
    let channel = FrameChannel::from_fd(frames).context("frame channel")?;
    let BackendSpec::User(cfg) = &role.spec;
    let mut slirp = Slirp::new(cfg, channel)?;

    jail::enter(&jail::JailConfig {
        keep_fds: vec![backend_fds::FRAMES],
        max_open_files: MAX_OPEN_FILES,
        // One thread, and the filter forbids starting another.
        max_processes: 1,
        max_core_size: 0,
    })
    .context("cannot enter the jail")?;

    slirp.add_hostfwds()?;
    seccomp::install(seccomp::ProcessKind::Slirp, mode)?;
    if role.violate_seccomp {
        violate_seccomp();
    }
    crate::footprint::setup_done();
    info!("{}: jailed and serving", name());
    let served = slirp.run();
    info!("{}: {:?}", name(), slirp.stats());
    served.context("event loop")
}

/// Makes a system call the filter forbids (a Unix socket: only Internet
/// sockets are allowed), as the jail tests ask.
fn violate_seccomp() {
    // SAFETY: socket takes integers only; the descriptor it may return
    // (log mode) is closed right away.
    let fd = unsafe { libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    warn!(
        "{}: a forbidden socket(AF_UNIX) returned {fd}: seccomp is only logging",
        name()
    );
    if fd >= 0 {
        // SAFETY: `fd` was just opened here and is owned by nothing else.
        drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
}
