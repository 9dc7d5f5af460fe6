//! The device process: one NIC model in its jail, reached by the vCPU
//! process over IPC for configuration cycles and BAR accesses, and by the
//! guest directly through ioeventfds (doorbells) and irqfds (MSI-X).
//!
//! ```text
//! moatvm __device '<DeviceRole as TOML>'
//!   fd 3  guest-RAM memfd            fd 5  vm-control channel (VmRequest →)
//!   fd 4  device channel (→ DeviceRequest)   fd 6  backend: the tap (queue 0),
//!                                                  or a frame channel to a
//!                                                  backend process
//!   fd 7  /dev/vhost-net (only with vhost=on)
//!   multiqueue (mq=on), pair p >= 1: fd 7+2p its tap queue, fd 8+2p its
//!   /dev/vhost-net (vhost=on)
//! ```
//!
//! Start-up, in this order:
//! 1. parse the role, take descriptors 3-6 (and those of further pairs);
//! 2. `jail::enter` (while single-threaded);
//! 3. map guest RAM, wrap the channels and the backend, build the model;
//! 4. on the vm-control channel, one request at a time, each awaiting its
//!    [`VmReply`]: `RegisterIrqfd { vector }` for every MSI-X vector
//!    (0..n, one eventfd each), `RegisterIntx { resample: true }` (a
//!    trigger and a resample eventfd) if the model has an interrupt pin,
//!    then `RegisterIoevent` for every doorbell
//!    the model names (BAR 0, offset 0x3000 + 4q for queue q, length 0 =
//!    any width, no datamatch). A refused irqfd is fatal; a refused
//!    doorbell is only logged (the guest's write then arrives as a
//!    `BarWrite`, which the model handles the same way, only slower);
//! 5. one epoll set over the device channel, the control queue's doorbell
//!    (all doorbells, for e1000), the INTx resample eventfd and (e1000) the
//!    backend; for virtio-net without vhost, one thread per queue pair over
//!    the pair's tap queue and doorbells (`device_process/workers.rs`);
//! 6. the seccomp filter (`virtio-net`), then serve until `Shutdown` or a
//!    hang-up.
//!
//! While serving, the only vm-control requests are `SetMsiRoute`, sent
//! (and awaited) from inside a `BarWrite` to the MSI-X table: the vCPU
//! process must answer vm-control requests on a thread that never waits for
//! this process.
//!
//! Ordering: a doorbell may ring right after a posted `BarWrite` that the
//! vCPU process has already sent (say, the guest enabled a queue, then
//! kicked it). Whenever a doorbell or the channel is ready, every queued
//! request is applied first, so the model always sees the writes in the
//! order the guest made them.
//!
//! Exit status: 0 after `Shutdown` or when either channel closes; 1 when
//! setting up fails (the reason on stderr); [`EXIT_PANIC`] on a panic; death
//! by `SIGSYS` when the seccomp filter catches a forbidden system call.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use devices::backend::frames::FrameChannel;
use devices::backend::tap::{Tap, TapBackend};
use devices::backend::NicBackend;
use devices::e1000::E1000;
use devices::pci::{BarKind, HostedPciDevice, Interrupts, MsixChange};
use devices::virtio::net::{Net, VirtioNetPci};
use ipc::messages::{DeviceReply, DeviceRequest, RegData, VmReply, VmRequest};
use ipc::Channel;
use log::{error, info, warn};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::roles::{device_fds, BackendKind, BarKindName, DeviceRole, NicKind};
use crate::vcpu::memory::map_guest_ram;

mod vhost;
mod workers;
use vhost::{VhostOffload, VhostShared};
use workers::{Forward, PairRunner};

/// Exit status after a panic (the panic hook exits with it at once, so a
/// panic is never mistaken for a seccomp kill or an orderly exit).
pub const EXIT_PANIC: i32 = 101;
/// Exit status when setting up fails.
pub const EXIT_SETUP_FAILED: i32 = 1;

/// Entries in each virtqueue.
const QUEUE_SIZE: u16 = 256;

/// epoll tokens: the device channel, the tap, the INTx resample eventfd,
/// and doorbell `i` as `DOORBELL + i`.
const TOKEN_DEVICE: u64 = 0;
const TOKEN_TAP: u64 = 1;
const TOKEN_RESAMPLE: u64 = 2;
const TOKEN_DOORBELL: u64 = 4;
/// The model's timer (e1000's interrupt throttling).
const TOKEN_TIMER: u64 = 3;
/// vhost-net's proxy call eventfd of ring `r` as `PROXY + r`.
const TOKEN_PROXY: u64 = 1 << 32;
/// Doorbells the pairs' threads hand back (see `workers::Forward`).
const TOKEN_FORWARD: u64 = 1 << 33;

/// The process's name for messages (`net0 (virtio-net-pci)`), once known.
static NAME: OnceLock<String> = OnceLock::new();

fn name() -> &'static str {
    NAME.get().map_or("device", String::as_str)
}

/// The `moatvm __device <arg>` entry point. Never returns.
pub fn main(arg: &str) -> ! {
    install_panic_hook();
    match run(arg) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            error!("{}: {e:#}", name());
            // Also without a logger, or with one filtered: the launcher
            // shows stderr.
            if !log::log_enabled!(log::Level::Error) {
                let _ = writeln!(io::stderr(), "moatvm: {}: {e:#}", name());
            }
            std::process::exit(EXIT_SETUP_FAILED)
        }
    }
}

/// Reports a panic on stderr and exits with [`EXIT_PANIC`] at once: no
/// unwinding, no abort (a jailed PID 1 that aborts leaves a status that is
/// easy to confuse with a seccomp kill).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let _ = writeln!(io::stderr(), "moatvm: {}: panic: {info}", name());
        // SAFETY: _exit ends the process without running anything else;
        // nothing is left in a state that needs cleaning up.
        unsafe { libc::_exit(EXIT_PANIC) }
    }));
}

/// The descriptors a device process is started with.
struct Inherited {
    ram: OwnedFd,
    device: OwnedFd,
    vm: OwnedFd,
    /// The backend of each queue pair.
    backends: Vec<OwnedFd>,
    /// With vhost=on, the vhost-net descriptor of each pair.
    vhost: Vec<OwnedFd>,
    mirror: Option<OwnedFd>,
}

/// Takes ownership of inherited descriptor `fd`, which must be open.
pub(crate) fn take_fd(fd: RawFd, what: &str) -> Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the flags of a descriptor number.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        bail!(
            "descriptor {fd} ({what}) is not open: {}",
            io::Error::last_os_error()
        );
    }
    // SAFETY: the launcher hands these descriptors to this process for this
    // purpose and nothing else in it owns them (std only uses 0-2); each is
    // taken once, here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The descriptors a role comes with.
fn role_fds(role: &DeviceRole, mirror: bool) -> Vec<RawFd> {
    let mut fds = vec![
        device_fds::GUEST_RAM,
        device_fds::DEVICE_CHANNEL,
        device_fds::VM_CONTROL,
    ];
    for p in 0..role.queue_pairs {
        fds.push(device_fds::tap_queue(p));
        if role.vhost {
            fds.push(device_fds::vhost(p));
        }
    }
    if mirror {
        fds.push(device_fds::MIRROR);
    }
    fds
}

fn take_fds(role: &DeviceRole, mirror: bool) -> Result<Inherited> {
    let pairs = 0..role.queue_pairs;
    Ok(Inherited {
        ram: take_fd(device_fds::GUEST_RAM, "guest RAM")?,
        device: take_fd(device_fds::DEVICE_CHANNEL, "device channel")?,
        vm: take_fd(device_fds::VM_CONTROL, "vm-control channel")?,
        backends: pairs
            .clone()
            .map(|p| take_fd(device_fds::tap_queue(p), "backend"))
            .collect::<Result<_>>()?,
        vhost: match role.vhost {
            true => pairs
                .map(|p| take_fd(device_fds::vhost(p), "vhost-net"))
                .collect::<Result<_>>()?,
            false => Vec::new(),
        },
        mirror: match mirror {
            true => Some(take_fd(device_fds::MIRROR, "register mirror")?),
            false => None,
        },
    })
}

fn run(arg: &str) -> Result<()> {
    let role = DeviceRole::from_arg(arg).context("cannot parse the device role")?;
    let _ = NAME.set(role.name.clone());
    let mode: seccomp::Mode = role.seccomp.parse()?;
    let mirrored = role.kind.mirrored();
    if role.queue_pairs == 0 || role.queue_pairs > devices::virtio::net::MAX_PAIRS {
        bail!("{} queue pairs in the role", role.queue_pairs);
    }
    if role.queue_pairs > 1 && !role.mq {
        bail!("more than one queue pair needs multiqueue");
    }
    let fds = take_fds(&role, !mirrored.is_empty())?;
    let pairs = u64::from(role.queue_pairs);

    jail::enter(&jail::JailConfig {
        keep_fds: role_fds(&role, !mirrored.is_empty()),
        // 0-8, one memfd duplicate per RAM region, per pair its tap queue,
        // vhost-net, epoll and four eventfds (doorbells and their copies),
        // an eventfd per MSI-X vector and per proxy: about 20 + 12 per pair.
        max_open_files: 48 + 16 * pairs,
        // The main thread and one data-path thread per queue pair, all
        // started before the seccomp filter (which forbids clone).
        max_processes: 1 + pairs,
        max_core_size: 0,
    })
    .context("cannot enter the jail")?;

    let ram = File::from(fds.ram);
    let ram_len = ram
        .metadata()
        .context("cannot stat the guest-RAM memfd")?
        .len();
    if role.mem_size == 0 || ram_len < role.mem_size {
        bail!(
            "the guest-RAM memfd holds {ram_len} bytes, the role says {}",
            role.mem_size
        );
    }
    let mem = map_guest_ram(&ram, role.mem_size).context("cannot map guest RAM")?;
    drop(ram);
    let device = Channel::from_fd(fds.device).context("device channel")?;
    let vm = Arc::new(Channel::from_fd(fds.vm).context("vm-control channel")?);
    if role.backend == BackendKind::Frames && role.queue_pairs > 1 {
        bail!("a frame channel carries one queue pair only");
    }
    let mut backends = Vec::new();
    for (p, fd) in fds.backends.into_iter().enumerate() {
        backends.push(match role.backend {
            BackendKind::Tap => {
                let tap = Tap::from_fd(fd).with_context(|| format!("tap queue {p}"))?;
                NicBackend::Tap(TapBackend::new(tap).with_context(|| format!("tap queue {p}"))?)
            }
            BackendKind::Frames => {
                NicBackend::Frames(FrameChannel::from_fd(fd).context("frame channel")?)
            }
        });
    }
    let tap_fds: Vec<RawFd> = backends.iter().map(|b| b.as_fd().as_raw_fd()).collect();
    if !fds.vhost.is_empty() && role.backend != BackendKind::Tap {
        bail!("vhost-net needs a tap backend");
    }

    // vhost-net: this process becomes the owner of each instance (it maps
    // guest RAM).
    let vhost = if fds.vhost.is_empty() {
        None
    } else {
        let mut handles = Vec::new();
        let mut features = u64::MAX;
        for fd in fds.vhost {
            let (handle, f) = devices::backend::vhost_net::VhostNet::new(fd, mem.clone())?;
            handles.push(handle);
            features &= f;
        }
        Some((VhostShared::new(handles).context("vhost-net")?, features))
    };
    let mirror = match &fds.mirror {
        Some(fd) => Some(ipc::RegisterMirror::map(fd).context("register mirror")?),
        None => None,
    };
    let start = Start {
        role: &role,
        mode,
        device,
        vm: vm.clone(),
        tap_fds: tap_fds.clone(),
        mirror: mirror.map(|m| (m, mirrored)),
    };
    match role.kind {
        NicKind::VirtioNet => {
            let net = match role.mq {
                true => Net::multiqueue(backends, Some(role.mac), QUEUE_SIZE),
                false => Net::new(backends.remove(0), Some(role.mac), QUEUE_SIZE),
            };
            let mut net = net.map_err(|e| anyhow!("cannot create the virtio-net device: {e}"))?;
            if let Some((shared, features)) = &vhost {
                net = net.with_offload(Box::new(VhostOffload::new(
                    shared.clone(),
                    *features,
                    tap_fds,
                )));
            }
            let irq = Irqfds::new(vm, vhost.as_ref().map(|(s, _)| s.clone()));
            let model = VirtioNetPci::new(net, mem, irq)
                .map_err(|e| anyhow!("cannot create the virtio-net device: {e}"))?;
            start.serve(
                model,
                seccomp::ProcessKind::VirtioNet,
                vhost.map(|(s, _)| s),
            )
        }
        NicKind::E1000 => {
            if vhost.is_some() {
                bail!("vhost-net serves only virtio-net-pci");
            }
            let model = E1000::new(backends.remove(0), role.mac, mem, Irqfds::new(vm, None));
            start.serve(model, seccomp::ProcessKind::E1000, None)
        }
    }
}

/// What every model's process needs once the model exists.
struct Start<'a> {
    role: &'a DeviceRole,
    mode: seccomp::Mode,
    device: Channel,
    vm: Arc<Channel>,
    /// The backend of each queue pair.
    tap_fds: Vec<RawFd>,
    /// The register mirror and the (BAR, offset) of each slot.
    mirror: Option<(ipc::RegisterMirror, Vec<(u8, u64)>)>,
}

impl Start<'_> {
    /// Checks the model's layout, registers its eventfds, installs the
    /// `kind` filter and serves until the end.
    fn serve<D: NicModel>(
        self,
        model: D,
        kind: seccomp::ProcessKind,
        vhost: Option<Arc<VhostShared>>,
    ) -> Result<()> {
        check_layout(self.role, &model)?;
        let mut server = Server::start(model, self.device, self.vm, self.tap_fds, vhost)?;
        server.mirror = self.mirror;
        server.publish_mirror();
        seccomp::install(kind, self.mode)?;
        if self.role.violate_seccomp {
            violate_seccomp();
        }
        crate::footprint::setup_done();
        info!("{}: jailed and serving", name());
        server.serve()
    }
}

/// Checks that the model has the BARs and MSI-X vectors the launcher
/// planned for (`NicKind::layout`): it placed the BARs, and the vCPU
/// process routes only those vectors, before the model existed.
fn check_layout(role: &DeviceRole, model: &impl HostedPciDevice) -> Result<()> {
    let (planned, vectors) = role.kind.layout(role.queue_pairs);
    let actual: Vec<_> = model
        .bars()
        .iter()
        .map(|b| {
            let kind = match b.kind {
                BarKind::Io => BarKindName::Io,
                BarKind::Memory32 => BarKindName::Memory32,
                BarKind::Memory64 => BarKindName::Memory64,
            };
            (b.index, kind, b.prefetchable, b.size)
        })
        .collect();
    if actual != planned || model.msix_vectors() != vectors {
        bail!(
            "the model has BARs {actual:?} and {} MSI-X vectors, the launcher planned \
             {planned:?} and {vectors}",
            model.msix_vectors()
        );
    }
    Ok(())
}

/// Makes a system call that no filter allows, as the lab's jail test asks:
/// in `kill` mode the process dies here by `SIGSYS`; in `log` mode the
/// kernel logs it and the process goes on.
fn violate_seccomp() {
    // SAFETY: openat with a valid NUL-terminated path and flags; the
    // descriptor it may return (log mode) is closed right away.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    warn!(
        "{}: a forbidden openat returned {fd}: seccomp is only logging",
        name()
    );
    if fd >= 0 {
        // SAFETY: `fd` was just opened here and is owned by nothing else.
        drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
}

/// An eventfd: a doorbell the kernel rings for us (ioeventfd) or an
/// interrupt we ring for the kernel (irqfd).
struct EventFd(OwnedFd);

impl EventFd {
    fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes integers only.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds 1 to the counter. Only fails if the counter is about to
    /// overflow, and then the reader has a signal pending anyway.
    fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a local buffer.
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Resets the counter (non-blocking: nothing happens when it is 0).
    fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local buffer.
        unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A one-shot timerfd on the monotonic clock (the clock `Instant` reads).
struct Timer(OwnedFd);

impl Timer {
    fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create takes integers only.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        Ok(Timer(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Fires once after `after` (at least 1 ns: zero would disarm), or
    /// never (`None`).
    fn set(&self, after: Option<std::time::Duration>) -> io::Result<()> {
        let value = after.map_or(
            libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            |d| {
                let d = d.max(std::time::Duration::from_nanos(1));
                libc::timespec {
                    tv_sec: d.as_secs() as libc::time_t,
                    tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
                }
            },
        );
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        // SAFETY: passes a valid itimerspec; the old value is not asked for.
        let r =
            unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local buffer.
        unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

/// Lets a message through at the 1st, 2nd, 4th, 8th... occurrence (like
/// `devices::virtio::LogLimiter`, but usable through `&self`).
#[derive(Default)]
struct Limiter(AtomicU64);

impl Limiter {
    fn hit(&self) -> Option<u64> {
        let n = self.0.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        n.is_power_of_two().then_some(n)
    }
}

/// How the model raises interrupts here: one irqfd per MSI-X vector, and
/// MSI routes set by the vCPU process on request.
struct Irqfds {
    vm: Arc<Channel>,
    /// Filled once the vCPU process took every vector's eventfd.
    vectors: OnceLock<Vec<EventFd>>,
    /// The vm-control channel closed: the VM is going away.
    vm_gone: AtomicBool,
    faults: Limiter,
    /// The INTx irqfd, if the device has an interrupt pin.
    intx: OnceLock<EventFd>,
    /// vhost-net, whose interrupts follow the vectors' masks.
    vhost: Option<Arc<VhostShared>>,
    intx_logged: AtomicBool,
}

impl Irqfds {
    fn new(vm: Arc<Channel>, vhost: Option<Arc<VhostShared>>) -> Self {
        Irqfds {
            vm,
            vectors: OnceLock::new(),
            vm_gone: AtomicBool::new(false),
            faults: Limiter::default(),
            intx: OnceLock::new(),
            vhost,
            intx_logged: AtomicBool::new(false),
        }
    }

    fn fault(&self, what: std::fmt::Arguments<'_>) {
        if let Some(n) = self.faults.hit() {
            warn!("{}: {what} ({n} interrupt faults)", name());
        }
    }
}

impl Interrupts for Irqfds {
    fn signal_vector(&self, vector: u16) {
        match self.vectors.get().and_then(|v| v.get(usize::from(vector))) {
            Some(fd) => fd.signal(),
            None => self.fault(format_args!("no irqfd for MSI-X vector {vector}")),
        }
    }

    fn msix_changed(&self, c: &MsixChange) {
        let request = VmRequest::SetMsiRoute {
            vector: c.vector,
            address: c.address,
            data: c.data,
            masked: c.masked,
        };
        match self.vm.call::<_, VmReply>(&request, &[]) {
            Ok((VmReply::Ok, _)) => {}
            Ok((VmReply::Refused(why), _)) => self.fault(format_args!(
                "MSI route for vector {} refused: {why}",
                c.vector
            )),
            Err(ipc::Error::Closed) => self.vm_gone.store(true, Ordering::Relaxed),
            Err(e) => self.fault(format_args!("MSI route for vector {}: {e}", c.vector)),
        }
        if let Some(vhost) = &self.vhost {
            vhost.vector_masked(c.vector, c.masked);
        }
    }

    fn assert_intx(&self) {
        match self.intx.get() {
            Some(fd) => fd.signal(),
            None if !self.intx_logged.swap(true, Ordering::Relaxed) => {
                warn!(
                    "{}: INTx asserted, but the device has no INTx irqfd",
                    name()
                )
            }
            None => {}
        }
    }
}

/// What a device model needs from the host beyond [`HostedPciDevice`]: the
/// backend's readiness.
trait NicModel: HostedPciDevice {
    fn backend_readable(&mut self);
    fn backend_writable(&mut self);
    fn interrupts(&self) -> &Irqfds;
    /// A kernel data path's interrupt for queue `queue` reached this
    /// process (its vector masked, or INTx).
    fn raise_queue_interrupt(&mut self, queue: u16);
    /// When the model wants [`NicModel::timer_expired`] called, if ever.
    fn timer_deadline(&mut self) -> Option<Instant> {
        None
    }
    fn timer_expired(&mut self) {}
    /// Whether the model waits for room in its backend (served by the main
    /// thread, which then watches the backend's writability).
    fn tx_blocked(&self) -> bool {
        false
    }
    /// The model's queue pairs, for data-path threads (none: the main
    /// thread serves the backend).
    fn pair_runners(&self) -> Vec<Arc<dyn PairRunner>> {
        Vec::new()
    }
}

impl NicModel for VirtioNetPci<NicBackend, GuestMemoryMmap, Irqfds> {
    fn pair_runners(&self) -> Vec<Arc<dyn PairRunner>> {
        self.pair_workers()
            .into_iter()
            .map(|w| Arc::new(w) as Arc<dyn PairRunner>)
            .collect()
    }
    fn backend_readable(&mut self) {
        VirtioNetPci::backend_readable(self);
    }
    fn backend_writable(&mut self) {
        VirtioNetPci::backend_writable(self);
    }
    fn interrupts(&self) -> &Irqfds {
        VirtioNetPci::interrupts(self)
    }
    fn raise_queue_interrupt(&mut self, queue: u16) {
        VirtioNetPci::raise_queue_interrupt(self, queue);
    }
}

impl NicModel for E1000<NicBackend, GuestMemoryMmap, Irqfds> {
    fn backend_readable(&mut self) {
        E1000::backend_readable(self);
    }
    fn backend_writable(&mut self) {
        E1000::backend_writable(self);
    }
    fn interrupts(&self) -> &Irqfds {
        E1000::interrupts(self)
    }
    fn raise_queue_interrupt(&mut self, _queue: u16) {}
    fn timer_deadline(&mut self) -> Option<Instant> {
        self.irq_deadline()
    }
    fn timer_expired(&mut self) {
        self.irq_timer();
    }
    fn tx_blocked(&self) -> bool {
        E1000::tx_blocked(self)
    }
}

/// Asks the vCPU process for `request` with `fd` attached, and waits for
/// the answer.
fn vm_call(vm: &Channel, request: &VmRequest, fd: Option<BorrowedFd<'_>>) -> Result<VmReply> {
    let fds: &[BorrowedFd<'_>] = match &fd {
        Some(fd) => std::slice::from_ref(fd),
        None => &[],
    };
    let (reply, extra) = vm
        .call::<_, VmReply>(request, fds)
        .with_context(|| format!("vm-control request {request:?}"))?;
    if !extra.is_empty() {
        warn!(
            "{}: the vCPU process sent {} stray descriptors with a reply",
            name(),
            extra.len()
        );
    }
    Ok(reply)
}

/// Whether to go on serving.
#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

/// The serving half: the model, its channels, doorbells and epoll set.
struct Server<D> {
    model: D,
    device: Channel,
    /// Doorbell `i` rings queue `doorbells[i].1`.
    doorbells: Vec<(EventFd, u16)>,
    /// Signalled by KVM when the guest acknowledged the INTx interrupt.
    resample: Option<EventFd>,
    /// vhost-net's proxy call eventfds are polled here.
    vhost: Option<Arc<VhostShared>>,
    /// Registers published for the vCPU process to answer reads from.
    mirror: Option<(ipc::RegisterMirror, Vec<(u8, u64)>)>,
    /// The model's timer, and the deadline it is armed for.
    timer: Timer,
    armed: Option<Instant>,
    epoll: Epoll,
    /// The backend the main thread serves (e1000), if any.
    tap_fd: Option<RawFd>,
    tap_attached: bool,
    /// The backend's writability is in the epoll set (only while the
    /// model waits for room).
    tap_out: bool,
    /// Doorbells the pairs' threads hand back.
    forward: Option<Arc<Forward>>,
    bad_requests: Limiter,
}

impl<D: NicModel> Server<D> {
    /// Hands the model's interrupt and doorbell eventfds to the vCPU
    /// process and builds the epoll set. Runs before the seccomp filter.
    fn start(
        mut model: D,
        device: Channel,
        vm: Arc<Channel>,
        tap_fds: Vec<RawFd>,
        vhost: Option<Arc<VhostShared>>,
    ) -> Result<Self> {
        // Data-path threads, one per pair, unless vhost-net moves the frames.
        let runners = match vhost {
            None => model.pair_runners(),
            Some(_) => Vec::new(),
        };
        let pairs = tap_fds.len() as u16;
        let vectors = model.msix_vectors();
        let mut irqfds = Vec::with_capacity(usize::from(vectors));
        for vector in 0..vectors {
            let fd = EventFd::new().context("eventfd")?;
            let request = VmRequest::RegisterIrqfd { vector };
            match vm_call(&vm, &request, Some(fd.as_fd()))? {
                VmReply::Ok => irqfds.push(fd),
                VmReply::Refused(why) => bail!("irqfd for MSI-X vector {vector} refused: {why}"),
            }
        }
        if model.interrupts().vectors.set(irqfds).is_err() {
            bail!("irqfds set twice");
        }

        // Configuration register 0x3C: byte 1 is the interrupt pin (0: none).
        let resample = if (model.config_read(0x3c / 4) >> 8) & 0xff != 0 {
            let trigger = EventFd::new().context("eventfd")?;
            let resample = EventFd::new().context("eventfd")?;
            let request = VmRequest::RegisterIntx { resample: true };
            let fds = [trigger.as_fd(), resample.as_fd()];
            match vm.call::<_, VmReply>(&request, &fds) {
                Ok((VmReply::Ok, _)) => {}
                Ok((VmReply::Refused(why), _)) => bail!("INTx irqfd refused: {why}"),
                Err(e) => return Err(e).context("vm-control request RegisterIntx"),
            }
            if model.interrupts().intx.set(trigger).is_err() {
                bail!("INTx irqfd set twice");
            }
            Some(resample)
        } else {
            None
        };

        let mut doorbells = Vec::new();
        for region in model.notify_regions() {
            let Ok(len) = u8::try_from(region.len) else {
                warn!("{}: doorbell {region:?} has an impossible width", name());
                continue;
            };
            let fd = EventFd::new().context("eventfd")?;
            let request = VmRequest::RegisterIoevent {
                bar: region.bar,
                offset: region.offset,
                len,
                datamatch: None,
            };
            match vm_call(&vm, &request, Some(fd.as_fd()))? {
                VmReply::Ok => doorbells.push((fd, region.queue)),
                VmReply::Refused(why) => warn!(
                    "{}: doorbell of queue {} refused ({why}); its writes will come as BAR writes",
                    name(),
                    region.queue
                ),
            }
        }

        // With vhost-net the kernel takes the RX and TX doorbells and the
        // taps; this process keeps the control queue and the proxies.
        let offloaded = |queue: u16| vhost.is_some() && queue < 2 * pairs;
        if let Some(vhost) = &vhost {
            let mut kicks: Vec<Option<&EventFd>> = vec![None; 2 * usize::from(pairs)];
            for (fd, queue) in &doorbells {
                if let Some(k) = kicks.get_mut(usize::from(*queue)) {
                    *k = Some(fd);
                }
            }
            let irqfds = model
                .interrupts()
                .vectors
                .get()
                .map_or(&[][..], Vec::as_slice);
            vhost
                .set_fds(kicks, irqfds)
                .context("vhost-net descriptors")?;
        }

        let epoll = Epoll::new().context("epoll_create")?;
        let add = |fd: RawFd, events: EventSet, token: u64| {
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
                .context("epoll_ctl")
        };
        add(device.as_raw_fd(), EventSet::IN, TOKEN_DEVICE)?;
        let timer = Timer::new().context("timerfd_create")?;
        add(timer.0.as_raw_fd(), EventSet::IN, TOKEN_TIMER)?;
        let mut tap_fd = None;
        let mut forward = None;
        match &vhost {
            None if !runners.is_empty() => {
                // Each pair's thread takes its tap queue and doorbells.
                let (mine, theirs): (Vec<_>, Vec<_>) = doorbells
                    .into_iter()
                    .partition(|(_, q)| *q >= 2 * runners.len() as u16);
                doorbells = mine;
                let mut per_pair: Vec<Vec<(EventFd, u16)>> =
                    (0..runners.len()).map(|_| Vec::new()).collect();
                for (fd, q) in theirs {
                    per_pair[usize::from(q / 2)].push((fd, q));
                }
                let fwd = Forward::new().context("eventfd")?;
                add(fwd.fd.0.as_raw_fd(), EventSet::IN, TOKEN_FORWARD)?;
                for (p, (runner, bells)) in runners.into_iter().zip(per_pair).enumerate() {
                    let tap = *tap_fds.get(p).context("a queue pair without a backend")?;
                    workers::spawn(p as u16, runner, tap, bells, fwd.clone())?;
                }
                forward = Some(fwd);
            }
            None => {
                let fd = *tap_fds.first().context("no backend")?;
                add(fd, workers::tap_events(false), TOKEN_TAP)?;
                tap_fd = Some(fd);
            }
            Some(vhost) => {
                for (ring, fd) in vhost.proxies() {
                    add(
                        fd.0.as_raw_fd(),
                        EventSet::IN,
                        TOKEN_PROXY + u64::from(ring),
                    )?;
                }
            }
        }
        if let Some(fd) = &resample {
            add(fd.0.as_raw_fd(), EventSet::IN, TOKEN_RESAMPLE)?;
        }
        for (i, (fd, queue)) in doorbells.iter().enumerate() {
            if !offloaded(*queue) {
                add(fd.0.as_raw_fd(), EventSet::IN, TOKEN_DOORBELL + i as u64)?;
            }
        }
        Ok(Server {
            model,
            device,
            doorbells,
            resample,
            vhost,
            mirror: None,
            timer,
            armed: None,
            epoll,
            tap_fd,
            tap_attached: true,
            tap_out: false,
            forward,
            bad_requests: Limiter::default(),
        })
    }

    fn serve(&mut self) -> Result<()> {
        let mut events = [EpollEvent::default(); 16];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("epoll_wait"),
            };
            let ready = &events[..n];
            // Requests first: a doorbell may follow a posted write that is
            // already queued on the channel.
            if ready.iter().any(|e| e.data() != TOKEN_TAP) && self.drain_requests()? == Flow::Stop {
                return Ok(());
            }
            for event in ready {
                match event.data() {
                    TOKEN_DEVICE => {}
                    TOKEN_TAP => self.tap_ready(event.event_set()),
                    TOKEN_TIMER => {
                        self.timer.drain();
                        self.armed = None;
                        self.model.timer_expired();
                    }
                    TOKEN_RESAMPLE => {
                        if let Some(fd) = &self.resample {
                            fd.drain();
                            self.model.intx_resample();
                        }
                    }
                    TOKEN_FORWARD => {
                        let queues = self.forward.as_ref().map_or(0, |f| f.take());
                        for q in (0..64).filter(|q| queues & (1 << q) != 0) {
                            self.model.queue_notify(q);
                        }
                    }
                    token if token >= TOKEN_PROXY => {
                        let ring = (token - TOKEN_PROXY) as u16;
                        if let Some((_, fd)) = self
                            .vhost
                            .as_ref()
                            .and_then(|v| v.proxies().find(|(r, _)| *r == ring))
                        {
                            fd.drain();
                            self.model.raise_queue_interrupt(ring);
                        }
                    }
                    token => {
                        let i = (token - TOKEN_DOORBELL) as usize;
                        if let Some((fd, queue)) = self.doorbells.get(i) {
                            fd.drain();
                            log::trace!("doorbell of queue {queue}");
                            self.model.queue_notify(*queue);
                        }
                    }
                }
            }
            self.publish_mirror();
            self.arm_timer();
            self.watch_tap_out();
            if self.model.interrupts().vm_gone.load(Ordering::Relaxed) {
                info!("{}: the vm-control channel closed", name());
                return Ok(());
            }
        }
    }

    /// Watches the backend's writability while the model waits for room,
    /// and only then (see `workers::tap_events`).
    fn watch_tap_out(&mut self) {
        let Some(tap_fd) = self.tap_fd else {
            return;
        };
        let blocked = self.tap_attached && self.model.tx_blocked();
        if blocked != self.tap_out {
            let event = EpollEvent::new(workers::tap_events(blocked), TOKEN_TAP);
            match self.epoll.ctl(ControlOperation::Modify, tap_fd, event) {
                Ok(()) => self.tap_out = blocked,
                Err(e) => warn!("{}: epoll_ctl: {e}", name()),
            }
        }
    }

    /// Arms (or disarms) the timer for the model's deadline.
    fn arm_timer(&mut self) {
        let deadline = self.model.timer_deadline();
        if deadline == self.armed {
            return;
        }
        let after = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if let Err(e) = self.timer.set(after) {
            self.bad(format_args!("timerfd_settime: {e}"));
        }
        self.armed = deadline;
    }

    /// Publishes the mirrored registers' current values.
    fn publish_mirror(&mut self) {
        if let Some((mirror, regs)) = &self.mirror {
            for (slot, &(bar, offset)) in regs.iter().enumerate() {
                if let Some(value) = self.model.bar_peek(bar, offset) {
                    mirror.publish(slot, value);
                }
            }
        }
    }

    fn tap_ready(&mut self, set: EventSet) {
        if set.contains(EventSet::IN) {
            self.model.backend_readable();
        }
        if set.contains(EventSet::OUT) {
            self.model.backend_writable();
        }
        let Some(tap_fd) = self.tap_fd else {
            return;
        };
        if set.intersects(EventSet::ERROR | EventSet::HANG_UP) && self.tap_attached {
            // The tap went away under us (its interface was deleted), or
            // the backend process did: the cable is unplugged, but the
            // guest keeps its device.
            error!("{}: the backend reports an error; no more frames", name());
            self.tap_attached = false;
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, tap_fd, EpollEvent::default());
        }
    }

    /// Applies every request waiting on the device channel.
    fn drain_requests(&mut self) -> Result<Flow> {
        loop {
            match self.device.try_recv::<DeviceRequest>() {
                Ok(None) => return Ok(Flow::Go),
                Ok(Some((request, fds))) => {
                    if !fds.is_empty() {
                        self.bad(format_args!("descriptors came with {request:?}"));
                    }
                    if self.handle(request)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
                Err(ipc::Error::Closed) => {
                    info!("{}: the device channel closed", name());
                    return Ok(Flow::Stop);
                }
                Err(ipc::Error::Io { op, source }) => {
                    return Err(anyhow!("device channel: {op}: {source}"))
                }
                // A message that does not decode is dropped whole.
                Err(e) => self.bad(format_args!("{e}")),
            }
        }
    }

    fn bad(&self, what: std::fmt::Arguments<'_>) {
        if let Some(n) = self.bad_requests.hit() {
            warn!("{}: bad request: {what} ({n} so far)", name());
        }
    }

    fn reply(&self, reply: DeviceReply) -> Result<Flow> {
        match self.device.send(&reply, &[]) {
            Ok(()) => Ok(Flow::Go),
            Err(ipc::Error::Closed) => Ok(Flow::Stop),
            Err(e) => Err(e).context("device channel reply"),
        }
    }

    fn handle(&mut self, request: DeviceRequest) -> Result<Flow> {
        if let Err(e) = request.check() {
            self.bad(format_args!("{e}"));
            // A read still gets an answer, so the vCPU never waits forever.
            return match request {
                DeviceRequest::ConfigRead { .. } => self.reply(DeviceReply::ConfigValue(u32::MAX)),
                DeviceRequest::BarRead { len, .. } => {
                    let len = usize::from(len).min(RegData::MAX);
                    self.reply(DeviceReply::BarData(
                        RegData::new(&[0xff; RegData::MAX][..len]).unwrap_or_default(),
                    ))
                }
                _ => Ok(Flow::Go),
            };
        }
        match request {
            DeviceRequest::ConfigRead { reg } => {
                let value = self.model.config_read(usize::from(reg));
                self.reply(DeviceReply::ConfigValue(value))
            }
            DeviceRequest::ConfigWrite { reg, offset, data } => {
                self.model
                    .config_write(usize::from(reg), usize::from(offset), data.as_slice());
                Ok(Flow::Go)
            }
            DeviceRequest::BarRead { bar, offset, len } => {
                let mut buf = [0u8; RegData::MAX];
                let buf = &mut buf[..usize::from(len)];
                self.model.bar_read(bar, offset, buf);
                self.reply(DeviceReply::BarData(RegData::new(buf).unwrap_or_default()))
            }
            DeviceRequest::BarWrite { bar, offset, data } => {
                log::trace!("BAR {bar} write {offset:#x} {:x?}", data.as_slice());
                self.model.bar_write(bar, offset, data.as_slice());
                Ok(Flow::Go)
            }
            DeviceRequest::Shutdown => {
                info!("{}: shutting down", name());
                Ok(Flow::Stop)
            }
        }
    }
}
