//! Host-side network backends: where a NIC's frames go.
//!
//! - [`tap`]: tap devices (`/dev/net/tun`), one descriptor per queue.
//! - [`vhost_net`]: the kernel's virtio-net data path over a tap.
//! - [`frames`]: the frame channel, a `SOCK_SEQPACKET` socketpair between a
//!   NIC process and a backend process that is not a tap (user-mode
//!   networking), one Ethernet frame behind a virtio-net header (checksum
//!   and TCP segmentation offloads) per message.
//! - [`slirp`]: user-mode networking (libslirp) on a frame channel, run by
//!   a backend process of its own in the host's network namespace.
//! - [`bridge`]: the few rtnetlink operations the launcher needs to put a
//!   tap on a bridge (create, bring up, enslave, delete, query), over a
//!   synchronous netlink socket; no `ip` binary is run.
//!
//! Creating taps and bridges is privileged and happens in the launcher; a
//! device process only ever receives an already open tap descriptor
//! ([`tap::Tap::from_fd`]).

pub mod bridge;
pub mod frames;
pub mod slirp;
pub mod tap;
pub mod vhost_net;

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd};

use crate::virtio::net::NetBackend;

/// What went wrong in a backend, naming the interface and the step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interface name cannot be used as given.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// An interface of that name already exists (and is not ours to take).
    #[error("interface {name} already exists")]
    NameInUse { name: String },

    /// No interface of that name exists.
    #[error("no interface named {name}")]
    NoSuchLink { name: String },

    /// The interface exists but is not of the kind the operation needs.
    #[error("interface {name} is not a {expected}")]
    WrongKind {
        name: String,
        expected: &'static str,
    },

    /// A request for the tap driver (`/dev/net/tun`) was refused.
    #[error("tap {name}: {step}: {source}")]
    Tap {
        name: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },

    /// A netlink request failed, or its answer made no sense.
    #[error("netlink: {name}: {step}: {source}")]
    Netlink {
        name: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },

    /// User-mode networking cannot be set up as configured.
    #[error("user networking: {0}")]
    Slirp(String),
}

/// Result with the backend [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The kernel's limit on an interface name, in bytes, not counting the
/// terminating NUL (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Checks an interface name as the kernel would (`dev_valid_name`), so that
/// errors say what is wrong before any request is made.
pub fn check_ifname(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return bad("contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

/// What a NIC process moves its frames through: the tap the launcher made,
/// or a frame channel to a backend process.
#[derive(Debug)]
pub enum NicBackend {
    Tap(tap::TapBackend),
    Frames(frames::FrameChannel),
}

impl NetBackend for NicBackend {
    fn readv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        match self {
            NicBackend::Tap(b) => b.readv(iov),
            NicBackend::Frames(b) => b.readv(iov),
        }
    }

    fn writev(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            NicBackend::Tap(b) => b.writev(iov),
            NicBackend::Frames(b) => b.writev(iov),
        }
    }

    fn vnet_hdr_len(&self) -> usize {
        match self {
            NicBackend::Tap(b) => b.vnet_hdr_len(),
            NicBackend::Frames(b) => b.vnet_hdr_len(),
        }
    }

    fn offloads(&self) -> u64 {
        match self {
            NicBackend::Tap(b) => b.offloads(),
            NicBackend::Frames(b) => b.offloads(),
        }
    }

    fn set_offloads(&mut self, acked: u64) -> io::Result<()> {
        match self {
            NicBackend::Tap(b) => b.set_offloads(acked),
            NicBackend::Frames(b) => b.set_offloads(acked),
        }
    }

    fn set_attached(&mut self, attached: bool) -> io::Result<()> {
        match self {
            NicBackend::Tap(b) => b.set_attached(attached),
            NicBackend::Frames(b) => b.set_attached(attached),
        }
    }
}

impl AsFd for NicBackend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            NicBackend::Tap(b) => b.as_fd(),
            NicBackend::Frames(b) => b.as_fd(),
        }
    }
}

/// Runs tests inside a network namespace of their own, so that no tap or
/// bridge they make ever appears on the host.
#[cfg(test)]
pub(crate) mod test_netns {
    use nix::sched::{unshare, CloneFlags};

    /// Runs `f` on a new thread that first moves into a fresh network
    /// namespace (a namespace is per thread, so the rest of the test process
    /// stays where it was). When the thread ends the namespace goes, and with
    /// it anything left inside. Skips, saying so, where namespaces or
    /// `/dev/net/tun` are not available.
    pub(crate) fn in_fresh_netns<F: FnOnce() + Send + 'static>(f: F) {
        let outcome = std::thread::spawn(move || {
            let before = std::fs::read_link("/proc/thread-self/ns/net").ok();
            if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
                eprintln!("SKIPPED: cannot create a network namespace: {e}");
                return;
            }
            let after = std::fs::read_link("/proc/thread-self/ns/net").ok();
            // Never run network-changing code in the host's namespace.
            assert!(
                after.is_some() && after != before,
                "not in a new network namespace ({before:?} -> {after:?})"
            );
            if !std::path::Path::new("/dev/net/tun").exists() {
                eprintln!("SKIPPED: no /dev/net/tun");
                return;
            }
            f()
        })
        .join();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for ok in ["tap0", "br-moat", "a", "fifteen_chars_x", "tap%d"] {
            assert!(check_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "sixteen_chars_xx",
            "a/b",
            "a b",
            "eth0:1",
            "a\0",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
