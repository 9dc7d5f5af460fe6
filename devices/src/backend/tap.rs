//! Tap devices: Ethernet frames in and out of the host kernel through
//! `/dev/net/tun`.
//!
//! [`Tap::create`] (privileged, in the launcher) makes a new tap, one open
//! descriptor per queue, refusing a name that is already taken: taking over
//! someone else's interface would splice the guest into whatever it is
//! wired to. The tap is not persistent, so it disappears when the last
//! descriptor closes — when the VM ends, whatever way it ends.
//!
//! [`Tap::from_fd`] (in the device process) wraps a descriptor handed over
//! by the launcher, or given on the command line as `fd=N`, and
//! [`TapBackend`] puts it under a virtio-net device.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::{bridge, check_ifname, Error, Result};
use crate::virtio::net::NetBackend;

const TUN_PATH: &str = "/dev/net/tun";

/// The kernel's limit on queues of one multi-queue tap (MAX_TAP_QUEUES).
pub const MAX_QUEUES: u16 = 256;

/// Offload flags for [`Tap::set_offload`]: which kinds of large or
/// unchecksummed packets the guest side can take (`TUN_F_*`).
pub mod offload {
    /// Partial checksums: the guest completes them.
    pub const CSUM: u32 = libc::TUN_F_CSUM;
    /// TCP segmentation offload, IPv4.
    pub const TSO4: u32 = libc::TUN_F_TSO4;
    /// TCP segmentation offload, IPv6.
    pub const TSO6: u32 = libc::TUN_F_TSO6;
    /// TSO with ECN bits.
    pub const TSO_ECN: u32 = libc::TUN_F_TSO_ECN;
    /// UDP fragmentation offload.
    pub const UFO: u32 = libc::TUN_F_UFO;
    /// UDP segmentation offload, IPv4.
    pub const USO4: u32 = libc::TUN_F_USO4;
    /// UDP segmentation offload, IPv6.
    pub const USO6: u32 = libc::TUN_F_USO6;
}

/// `TUNSETIFF` / `TUNGETIFF` flags (`IFF_*` of `linux/if_tun.h`), as read
/// back by [`Tap::flags`].
pub mod flags {
    pub const TUN: i32 = libc::IFF_TUN;
    pub const TAP: i32 = libc::IFF_TAP;
    pub const NO_PI: i32 = libc::IFF_NO_PI;
    pub const VNET_HDR: i32 = libc::IFF_VNET_HDR;
    pub const MULTI_QUEUE: i32 = libc::IFF_MULTI_QUEUE;
    pub const PERSIST: i32 = libc::IFF_PERSIST;
    /// Fail with `EBUSY` if the interface exists, instead of attaching to it.
    pub const TUN_EXCL: i32 = libc::IFF_TUN_EXCL;
}

/// One queue of a tap device: an open, non-blocking `/dev/net/tun`
/// descriptor attached to the interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    flags: i32,
}

impl Tap {
    /// Creates a tap device with `queues` queues (one [`Tap`] each) and
    /// returns them, the first being queue 0.
    ///
    /// `name` may be a name (refused if any interface of that name exists),
    /// a kernel template such as `"moat%d"`, or `None` for `"tap%d"`.
    /// `vnet_hdr` prefixes every frame with a virtio-net header (its size
    /// set by [`Tap::set_vnet_hdr_size`]). More than one queue makes a
    /// multi-queue tap.
    pub fn create(name: Option<&str>, vnet_hdr: bool, queues: u16) -> Result<Vec<Tap>> {
        let label = name.unwrap_or("tap%d");
        if let Some(name) = name {
            check_ifname(name)?;
        }
        if queues == 0 || queues > MAX_QUEUES {
            return Err(Error::Tap {
                name: label.to_owned(),
                step: "queue count",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{queues} queues: must be 1 to {MAX_QUEUES}"),
                ),
            });
        }
        let templated = name.is_none_or(|n| n.contains('%'));
        if !templated && bridge::link_index(label)?.is_some() {
            return Err(Error::NameInUse {
                name: label.to_owned(),
            });
        }

        let mut iff = flags::TAP | flags::NO_PI;
        if vnet_hdr {
            iff |= flags::VNET_HDR;
        }
        if queues > 1 {
            iff |= flags::MULTI_QUEUE;
        }

        // Queue 0 creates the interface. TUN_EXCL closes the window between
        // the check above and now: should an interface of that name have
        // appeared meanwhile, the kernel refuses instead of attaching us.
        let first = Tap::open_queue(name.unwrap_or(""), iff | flags::TUN_EXCL, label)?;
        first.set_persist(false)?;
        let actual = first.name.clone();
        let mut taps = Vec::with_capacity(usize::from(queues));
        taps.push(first);
        // The other queues attach to it by its actual name.
        for _ in 1..queues {
            taps.push(Tap::open_queue(&actual, iff, &actual)?);
        }
        Ok(taps)
    }

    /// Opens `/dev/net/tun` and attaches it with `TUNSETIFF`; `label` names
    /// the interface in errors.
    fn open_queue(name: &str, iff: i32, label: &str) -> Result<Tap> {
        let tap_err = |step, source| Error::Tap {
            name: label.to_owned(),
            step,
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(TUN_PATH)
            .map_err(|e| tap_err("open /dev/net/tun", e))?;
        let mut ifr = ifreq(name);
        // The kernel's ifr_flags is a C short; bit 15 (TUN_EXCL) is its
        // sign bit, hence the cast through u16.
        ifr.ifr_ifru.ifru_flags = iff as u16 as i16;
        if let Err(e) = ioctl_ifreq(file.as_fd(), libc::TUNSETIFF, &mut ifr) {
            if e.raw_os_error() == Some(libc::EBUSY) && !name.is_empty() && !name.contains('%') {
                return Err(Error::NameInUse {
                    name: label.to_owned(),
                });
            }
            return Err(tap_err("TUNSETIFF", e));
        }
        let actual = ifr_name(&ifr);
        let mut tap = Tap {
            file,
            name: actual,
            flags: 0,
        };
        tap.flags = tap.read_flags()?;
        Ok(tap)
    }

    /// Wraps an open tap descriptor (as from `fd=N`, or passed by the
    /// launcher), making it non-blocking. Refuses a descriptor that is not
    /// an attached tap (a tun device, or not `/dev/net/tun` at all).
    pub fn from_fd(fd: OwnedFd) -> Result<Tap> {
        let label = format!("fd {}", fd.as_raw_fd());
        let mut ifr = ifreq("");
        ioctl_ifreq(fd.as_fd(), libc::TUNGETIFF, &mut ifr).map_err(|source| Error::Tap {
            name: label.clone(),
            step: "TUNGETIFF",
            source,
        })?;
        let name = ifr_name(&ifr);
        let flags = i32::from(ifr_flags(&ifr));
        if flags & flags::TAP == 0 {
            return Err(Error::WrongKind {
                name,
                expected: "tap (it is a tun device)",
            });
        }
        let status = fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| Error::Tap {
            name: name.clone(),
            step: "F_GETFL",
            source: e.into(),
        })?;
        let status = OFlag::from_bits_truncate(status) | OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(status)).map_err(|e| Error::Tap {
            name: name.clone(),
            step: "set O_NONBLOCK",
            source: e.into(),
        })?;
        Ok(Tap {
            file: File::from(fd),
            name,
            flags,
        })
    }

    /// The interface's name (as the kernel chose it, for a template).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `IFF_*` flags the kernel reported for this tap (see [`flags`]).
    pub fn flags(&self) -> i32 {
        self.flags
    }

    /// Whether frames carry a virtio-net header.
    pub fn vnet_hdr(&self) -> bool {
        self.flags & flags::VNET_HDR != 0
    }

    /// Whether this is one queue of a multi-queue tap.
    pub fn multi_queue(&self) -> bool {
        self.flags & flags::MULTI_QUEUE != 0
    }

    /// Asks the kernel for the tap's flags again (`TUNGETIFF`).
    pub fn read_flags(&self) -> Result<i32> {
        let mut ifr = ifreq("");
        ioctl_ifreq(self.file.as_fd(), libc::TUNGETIFF, &mut ifr)
            .map_err(|e| self.err("TUNGETIFF", e))?;
        Ok(i32::from(ifr_flags(&ifr)))
    }

    /// Sets which offloads the guest side accepts (`TUNSETOFFLOAD`, an OR of
    /// [`offload`] flags; 0 for none). The kernel refuses flags it does not
    /// know.
    pub fn set_offload(&self, flags: u32) -> Result<()> {
        ioctl_value(self.file.as_fd(), libc::TUNSETOFFLOAD, flags.into())
            .map_err(|e| self.err("TUNSETOFFLOAD", e))
    }

    /// Sets the size of the virtio-net header on each frame
    /// (`TUNSETVNETHDRSZ`): 10 for a legacy header, 12 with mergeable
    /// buffers or virtio 1.0. The kernel refuses less than 10.
    pub fn set_vnet_hdr_size(&self, size: i32) -> Result<()> {
        let mut value = size;
        ioctl_int(self.file.as_fd(), libc::TUNSETVNETHDRSZ, &mut value)
            .map_err(|e| self.err("TUNSETVNETHDRSZ", e))
    }

    /// The size of the virtio-net header on each frame (`TUNGETVNETHDRSZ`).
    pub fn vnet_hdr_size(&self) -> Result<i32> {
        let mut value = 0;
        ioctl_int(self.file.as_fd(), libc::TUNGETVNETHDRSZ, &mut value)
            .map_err(|e| self.err("TUNGETVNETHDRSZ", e))?;
        Ok(value)
    }

    /// Attaches this queue to its multi-queue tap again, or detaches it
    /// (`TUNSETQUEUE`): the kernel steers no frames to a detached queue.
    /// A queue of a single-queue tap is left alone.
    pub fn set_queue_attached(&self, attached: bool) -> Result<()> {
        if !self.multi_queue() {
            return Ok(());
        }
        let mut ifr = ifreq("");
        let flag = if attached {
            libc::IFF_ATTACH_QUEUE
        } else {
            libc::IFF_DETACH_QUEUE
        };
        ifr.ifr_ifru.ifru_flags = flag as i16;
        ioctl_ifreq(self.file.as_fd(), libc::TUNSETQUEUE, &mut ifr)
            .map_err(|e| self.err("TUNSETQUEUE", e))
    }

    fn set_persist(&self, persist: bool) -> Result<()> {
        ioctl_value(self.file.as_fd(), libc::TUNSETPERSIST, persist.into())
            .map_err(|e| self.err("TUNSETPERSIST", e))
    }

    fn err(&self, step: &'static str, source: io::Error) -> Error {
        Error::Tap {
            name: self.name.clone(),
            step,
            source,
        }
    }

    /// Reads one frame (with its virtio-net header, if any). `WouldBlock`
    /// when none is waiting; a frame longer than `buf` is cut short.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Reads one frame scattered over `bufs`.
    pub fn readv(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&self.file).read_vectored(bufs)
    }

    /// Writes one frame (with its virtio-net header, if any).
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }

    /// Writes one frame gathered from `bufs`.
    pub fn writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.file).write_vectored(bufs)
    }

    /// Gives up the descriptor (to pass it to another process).
    pub fn into_fd(self) -> OwnedFd {
        self.file.into()
    }
}

impl Read for &Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Tap::read(self, buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        Tap::readv(self, bufs)
    }
}

impl Write for &Tap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Tap::write(self, buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Tap::writev(self, bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A tap as the backend of a virtio-net device ([`NetBackend`]).
///
/// With `IFF_VNET_HDR`, [`TapBackend::new`] sets the header size to the 12
/// bytes of `virtio_net_hdr_v1`, so headers pass between the guest and the
/// tap unchanged, and finds which receive offloads the kernel takes; the
/// tap accepts the transmit ones (checksum, TSO, ECN) on any kernel with
/// vnet headers. Without it, frames are bare and no offload is offered.
/// Everything that needs an ioctl the device process's seccomp filter does
/// not allow happens here, before the filter: afterwards only `readv`,
/// `writev` and `TUNSETOFFLOAD` are made.
#[derive(Debug)]
pub struct TapBackend {
    tap: Tap,
    hdr_len: usize,
    offloads: u64,
}

impl TapBackend {
    /// Prepares `tap` (non-blocking already, as [`Tap::from_fd`] and
    /// [`Tap::create`] leave it) for a virtio-net device.
    pub fn new(tap: Tap) -> Result<TapBackend> {
        use crate::virtio::net::{features as f, HDR_LEN};
        if !tap.vnet_hdr() {
            return Ok(TapBackend {
                tap,
                hdr_len: 0,
                offloads: 0,
            });
        }
        tap.set_vnet_hdr_size(HDR_LEN as i32)?;
        // Transmit offloads: the tap takes GSO frames with a vnet header.
        let mut offloads = f::CSUM | f::HOST_TSO4 | f::HOST_TSO6 | f::HOST_ECN;
        // Receive offloads: what TUNSETOFFLOAD accepts (UFO only on kernels
        // that kept or restored it); then all off until the driver asks.
        if tap
            .set_offload(offload::CSUM | offload::TSO4 | offload::TSO6 | offload::TSO_ECN)
            .is_ok()
        {
            offloads |= f::GUEST_CSUM | f::GUEST_TSO4 | f::GUEST_TSO6 | f::GUEST_ECN;
        }
        if tap.set_offload(offload::CSUM | offload::UFO).is_ok() {
            offloads |= f::GUEST_UFO | f::HOST_UFO;
        }
        tap.set_offload(0)?;
        Ok(TapBackend {
            tap,
            hdr_len: HDR_LEN,
            offloads,
        })
    }

    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    /// The `TUN_F_*` flags for the virtio-net receive offloads in `acked`.
    pub fn tun_offload_flags(acked: u64) -> u32 {
        use crate::virtio::net::features as f;
        [
            (f::GUEST_CSUM, offload::CSUM),
            (f::GUEST_TSO4, offload::TSO4),
            (f::GUEST_TSO6, offload::TSO6),
            (f::GUEST_ECN, offload::TSO_ECN),
            (f::GUEST_UFO, offload::UFO),
        ]
        .iter()
        .filter(|(bit, _)| acked & bit != 0)
        .fold(0, |flags, (_, tun)| flags | tun)
    }
}

impl NetBackend for TapBackend {
    fn readv(&mut self, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.tap.readv(iov)
    }

    fn writev(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        self.tap.writev(iov)
    }

    fn vnet_hdr_len(&self) -> usize {
        self.hdr_len
    }

    fn offloads(&self) -> u64 {
        self.offloads
    }

    fn set_attached(&mut self, attached: bool) -> io::Result<()> {
        self.tap.set_queue_attached(attached).map_err(|e| match e {
            Error::Tap { source, .. } => source,
            e => io::Error::other(e),
        })
    }

    fn set_offloads(&mut self, acked: u64) -> io::Result<()> {
        if self.hdr_len == 0 {
            return Ok(());
        }
        let flags = Self::tun_offload_flags(acked & self.offloads);
        self.tap.set_offload(flags).map_err(|e| match e {
            Error::Tap { source, .. } => source,
            e => io::Error::other(e),
        })
    }
}

impl AsFd for TapBackend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tap.as_fd()
    }
}

/// A zeroed `ifreq` carrying `name` (which the caller has checked is
/// shorter than IFNAMSIZ, or is empty).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is a C struct of a byte array and a union of plain
    // integers, addresses and a pointer; all zeroes is a valid value of each.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    ifr
}

fn ifr_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The `ifr_flags` member of an `ifreq` the kernel filled in, as unsigned.
fn ifr_flags(ifr: &libc::ifreq) -> u16 {
    // SAFETY: every member of the union is plain data and the struct was
    // zero-initialised, so reading the 16-bit flags member is always
    // defined; TUNGETIFF writes the flags there.
    unsafe { ifr.ifr_ifru.ifru_flags as u16 }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An ioctl whose argument is a pointer to an `ifreq`: only `TUNSETIFF` and
/// `TUNGETIFF`.
fn ioctl_ifreq(fd: BorrowedFd<'_>, request: libc::Ioctl, ifr: &mut libc::ifreq) -> io::Result<()> {
    debug_assert!(
        request == libc::TUNSETIFF || request == libc::TUNGETIFF || request == libc::TUNSETQUEUE
    );
    // SAFETY: for these three requests the kernel reads and writes at most
    // one `struct ifreq` at the pointer, which is valid and exclusively
    // borrowed for the call; `fd` is open for its duration.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request, ifr as *mut libc::ifreq) })
}

/// An ioctl whose argument is a pointer to an `int`: only
/// `TUNSETVNETHDRSZ` and `TUNGETVNETHDRSZ`.
fn ioctl_int(fd: BorrowedFd<'_>, request: libc::Ioctl, value: &mut libc::c_int) -> io::Result<()> {
    debug_assert!(request == libc::TUNSETVNETHDRSZ || request == libc::TUNGETVNETHDRSZ);
    // SAFETY: for these requests the kernel reads or writes exactly one
    // `int` at the pointer, which is valid and exclusively borrowed.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request, value as *mut libc::c_int) })
}

/// An ioctl whose argument is a plain value, not a pointer: only
/// `TUNSETOFFLOAD` and `TUNSETPERSIST`.
fn ioctl_value(fd: BorrowedFd<'_>, request: libc::Ioctl, value: libc::c_ulong) -> io::Result<()> {
    debug_assert!(request == libc::TUNSETOFFLOAD || request == libc::TUNSETPERSIST);
    // SAFETY: these requests take their argument by value; the kernel
    // dereferences nothing.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request, value) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_netns::in_fresh_netns;

    #[test]
    fn create_named_tap_with_vnet_hdr() {
        in_fresh_netns(|| {
            let taps = Tap::create(Some("mt0"), true, 1).unwrap();
            assert_eq!(taps.len(), 1);
            let tap = &taps[0];
            assert_eq!(tap.name(), "mt0");
            let f = tap.read_flags().unwrap();
            assert_eq!(f, tap.flags());
            assert_ne!(f & flags::TAP, 0);
            assert_ne!(f & flags::NO_PI, 0);
            assert_ne!(f & flags::VNET_HDR, 0);
            assert_eq!(f & flags::MULTI_QUEUE, 0);
            assert_eq!(f & flags::PERSIST, 0, "must not outlive its descriptors");
            assert_eq!(f & flags::TUN, 0);
            assert!(tap.vnet_hdr() && !tap.multi_queue());

            let link = bridge::link("mt0").unwrap().expect("interface exists");
            assert_eq!(link.kind.as_deref(), Some("tun"));

            tap.set_vnet_hdr_size(12).unwrap();
            assert_eq!(tap.vnet_hdr_size().unwrap(), 12);
            let e = tap.set_vnet_hdr_size(4).unwrap_err();
            assert!(e.to_string().contains("mt0") && e.to_string().contains("TUNSETVNETHDRSZ"));
            tap.set_offload(offload::CSUM | offload::TSO4 | offload::TSO6 | offload::TSO_ECN)
                .unwrap();
            tap.set_offload(0).unwrap();
            assert!(tap.set_offload(1 << 30).is_err());
        });
    }

    #[test]
    fn create_without_vnet_hdr_and_with_kernel_name() {
        in_fresh_netns(|| {
            let a = Tap::create(None, false, 1).unwrap().remove(0);
            assert!(a.name().starts_with("tap"), "{}", a.name());
            assert_eq!(a.flags() & flags::VNET_HDR, 0);
            let b = Tap::create(Some("moat%d"), false, 1).unwrap().remove(0);
            assert!(b.name().starts_with("moat"), "{}", b.name());
            assert!(!b.name().contains('%'));
        });
    }

    #[test]
    fn multi_queue() {
        in_fresh_netns(|| {
            let taps = Tap::create(Some("mtq"), true, 4).unwrap();
            assert_eq!(taps.len(), 4);
            for t in &taps {
                assert_eq!(t.name(), "mtq");
                assert_ne!(t.read_flags().unwrap() & flags::MULTI_QUEUE, 0);
            }
            let fds: std::collections::HashSet<_> = taps.iter().map(|t| t.as_raw_fd()).collect();
            assert_eq!(fds.len(), 4);
            assert!(Tap::create(Some("mtz"), true, 0).is_err());
            assert!(Tap::create(Some("mtz"), true, MAX_QUEUES + 1).is_err());
        });
    }

    #[test]
    fn name_in_use_is_refused() {
        in_fresh_netns(|| {
            let _taps = Tap::create(Some("busy0"), true, 1).unwrap();
            let e = Tap::create(Some("busy0"), true, 1).unwrap_err();
            assert!(
                matches!(&e, Error::NameInUse { name } if name == "busy0"),
                "{e}"
            );
            assert!(e.to_string().contains("busy0"));

            // An interface of another kind ("lo" exists in every namespace).
            let e = Tap::create(Some("lo"), false, 1).unwrap_err();
            assert!(
                matches!(&e, Error::NameInUse { name } if name == "lo"),
                "{e}"
            );

            // The race the pre-check can't see: TUN_EXCL makes the kernel
            // refuse instead of attaching us to the existing tap.
            let e = Tap::open_queue(
                "busy0",
                flags::TAP | flags::NO_PI | flags::TUN_EXCL,
                "busy0",
            )
            .unwrap_err();
            assert!(
                matches!(&e, Error::NameInUse { name } if name == "busy0"),
                "{e}"
            );

            // A persistent tap someone left behind is no different.
            let other = Tap::open_queue("left0", flags::TAP | flags::NO_PI, "left0").unwrap();
            other.set_persist(true).unwrap();
            drop(other);
            let e = Tap::create(Some("left0"), false, 1).unwrap_err();
            assert!(matches!(&e, Error::NameInUse { .. }), "{e}");
            // Clean up: take it back and make it non-persistent.
            let other = Tap::open_queue("left0", flags::TAP | flags::NO_PI, "left0").unwrap();
            other.set_persist(false).unwrap();
            drop(other);
            assert_eq!(bridge::link("left0").unwrap(), None);

            assert!(matches!(
                Tap::create(Some("much_too_long_name"), false, 1),
                Err(Error::InvalidName { .. })
            ));
        });
    }

    #[test]
    fn tap_disappears_when_closed() {
        in_fresh_netns(|| {
            let taps = Tap::create(Some("gone0"), false, 2).unwrap();
            assert!(bridge::link_index("gone0").unwrap().is_some());
            let mut taps = taps.into_iter();
            drop(taps.next());
            // One queue left: still there.
            assert!(bridge::link_index("gone0").unwrap().is_some());
            drop(taps);
            assert_eq!(bridge::link_index("gone0").unwrap(), None);
        });
    }

    #[test]
    fn tap_backend_speaks_virtio_net_hdr_v1() {
        use crate::virtio::net::features as f;
        in_fresh_netns(|| {
            let tap = Tap::create(Some("mtb0"), true, 1).unwrap().remove(0);
            assert_eq!(tap.vnet_hdr_size().unwrap(), 10, "the kernel's default");
            let b = TapBackend::new(tap).unwrap();
            assert_eq!(b.vnet_hdr_len(), 12);
            assert_eq!(b.tap().vnet_hdr_size().unwrap(), 12);
            let want = f::CSUM | f::HOST_TSO4 | f::GUEST_CSUM | f::GUEST_TSO4;
            assert_eq!(b.offloads() & want, want, "{:#x}", b.offloads());
            let mut b = b;
            b.set_offloads(f::GUEST_CSUM | f::GUEST_TSO4 | f::GUEST_TSO6)
                .unwrap();
            b.set_offloads(0).unwrap();

            let bare = Tap::create(Some("mtb1"), false, 1).unwrap().remove(0);
            let mut b = TapBackend::new(bare).unwrap();
            assert_eq!((b.vnet_hdr_len(), b.offloads()), (0, 0));
            b.set_offloads(f::GUEST_CSUM).unwrap();
        });
        assert_eq!(
            TapBackend::tun_offload_flags(
                crate::virtio::net::features::GUEST_OFFLOADS | crate::virtio::net::features::CSUM
            ),
            offload::CSUM | offload::TSO4 | offload::TSO6 | offload::TSO_ECN | offload::UFO
        );
        assert_eq!(TapBackend::tun_offload_flags(0), 0);
    }

    #[test]
    fn from_fd_and_io() {
        in_fresh_netns(|| {
            let tap = Tap::create(Some("mfd0"), false, 1).unwrap().remove(0);
            let dup = tap.as_fd().try_clone_to_owned().unwrap();
            let again = Tap::from_fd(dup).unwrap();
            assert_eq!(again.name(), "mfd0");
            assert_eq!(again.flags(), tap.flags());

            // Nothing to read yet: non-blocking.
            let mut buf = [0u8; 64];
            assert_eq!(
                again.read(&mut buf).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            // Frames written go to the host side whole.
            bridge::link_up("mfd0").unwrap();
            let frame = [0xffu8; 60];
            assert_eq!(again.write(&frame).unwrap(), 60);
            let (h, t) = frame.split_at(14);
            assert_eq!(
                again.writev(&[IoSlice::new(h), IoSlice::new(t)]).unwrap(),
                60
            );

            let (r, _w) = std::io::pipe().unwrap();
            let e = Tap::from_fd(OwnedFd::from(r)).unwrap_err();
            assert!(e.to_string().contains("TUNGETIFF"), "{e}");
        });
    }
}
