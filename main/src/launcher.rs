//! The launcher: the process the user starts. It checks what it can, opens
//! /dev/kvm, puts guest RAM in a memfd and the kernel into it, creates taps
//! and bridges, spawns the jailed vCPU process, one jailed process per NIC
//! and one per user-mode network, and supervises them until the VM ends.
//! Then it removes what it created and says which process ended the VM,
//! and why.
//!
//! A `user` netdev needs nothing of the launcher but a frame channel (a
//! socketpair) and a backend process, spawned in the host's network
//! namespace: no tap, no bridge, no privilege. A VM whose NICs all use
//! `user` networking needs only /dev/kvm.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;

use devices::backend::frames::FrameChannel;
use devices::backend::{bridge, tap::Tap};
use ipc::Channel;

use crate::config::{SerialConfig, VmConfig};
use crate::netspec::{Backend, Nic, NicModel};
use crate::roles::{
    self, AssignedBar, BackendKind, BackendRole, BackendSpec, BarKindName, DeviceRole, NicKind,
    RemoteDevice, VcpuRole,
};
use crate::vcpu::{boot, layout, memory};

/// Debugging and testing switches that are not part of the VM's description.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `kill` or `log`.
    pub seccomp: String,
    /// The NIC (by id or index) or user-mode netdev (by id) whose process
    /// should break its seccomp policy once running: how the tests show
    /// the jail works.
    pub violate_seccomp: Option<String>,
}

/// One spawned process and what it is, for messages.
struct Supervised {
    what: String,
    child: jail::Child,
}

/// What the launcher created and must remove.
#[derive(Default)]
struct Created {
    bridges: Vec<String>,
}

impl Created {
    fn remove(&self) {
        for br in &self.bridges {
            match bridge::bridge_has_ports(br) {
                Ok(false) => match bridge::delete_link(br) {
                    Ok(_) => log::debug!("removed bridge {br}"),
                    Err(e) => log::warn!("cannot remove bridge {br}: {e}"),
                },
                Ok(true) => log::debug!("bridge {br} still has ports; left in place"),
                Err(e) => log::warn!("bridge {br}: {e}"),
            }
        }
    }
}

/// A NIC ready to be spawned: its process's role and descriptors.
struct NicPlan {
    role: DeviceRole,
    /// The tap (a queue per queue pair), or the NIC's end of a frame channel.
    backends: Vec<OwnedFd>,
    /// `/dev/vhost-net` (or `vhostfd=`), one per queue pair, with `vhost=on`.
    vhost: Vec<OwnedFd>,
    layout: RemoteDevice,
    /// The backend process on the other end of the frame channel.
    backend_process: Option<BackendPlan>,
}

/// A backend process ready to be spawned.
struct BackendPlan {
    role: BackendRole,
    /// The backend's end of the frame channel.
    frames: OwnedFd,
}

/// Runs the VM `cfg` describes to its end; returns the exit code.
pub fn run(cfg: &VmConfig, opts: &Options) -> i32 {
    // Stop signals and SIGCHLD are taken synchronously below; blocking them
    // first means none is lost while children start.
    let mut signals = SigSet::empty();
    for s in crate::STOP_SIGNALS.into_iter().chain([Signal::SIGCHLD]) {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("moatvm: cannot block signals: {e}");
        return 1;
    }
    let mut created = Created::default();
    let code = match start(cfg, opts, &mut created) {
        Ok(mut children) => {
            crate::footprint::setup_done();
            supervise(&mut children, &signals)
        }
        Err(e) => {
            eprintln!("moatvm: {e:#}");
            1
        }
    };
    created.remove();
    code
}

/// Creates everything and spawns the processes.
fn start(cfg: &VmConfig, opts: &Options, created: &mut Created) -> Result<Vec<Supervised>> {
    let kvm = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .context("cannot open /dev/kvm")?;
    let mem_size = cfg.memory_mib << 20;
    let ram = memory::create_guest_ram(mem_size)?;
    let entry = boot::prepare_linux(
        &ram.memory,
        cfg.cpus,
        &cfg.kernel,
        cfg.initrd.as_deref(),
        &cfg.cmdline,
    )?;

    let mut next_bar = BarAllocator::default();
    let mut nics = Vec::new();
    for (index, nic) in cfg.net.nics.iter().enumerate() {
        nics.push(plan_nic(
            cfg,
            opts,
            index,
            nic,
            mem_size,
            &mut next_bar,
            created,
        )?);
    }
    if nics.is_empty() {
        log::debug!("no NIC: no tap, bridge or device process is needed");
    } else if nics.iter().all(|n| n.role.backend == BackendKind::Frames) {
        log::debug!(
            "user-mode networking only: no tap or bridge, no privilege beyond /dev/kvm is needed"
        );
    }

    let mut children = Vec::new();
    for plan in nics.iter().filter_map(|n| n.backend_process.as_ref()) {
        let spawned = jail::Command::current_exe()
            .arg0("moatvm")
            .arg(roles::BACKEND)
            .arg(plan.role.to_arg())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .fd(plan.frames.as_fd(), roles::backend_fds::FRAMES)
            // Its sockets are the host's: it stays in the host's network
            // namespace.
            .new_net(false)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                kill_all(&children);
                return Err(e)
                    .with_context(|| format!("cannot start the process of {}", plan.role.name));
            }
        };
        log::debug!("backend {} runs as pid {}", plan.role.name, child.id());
        children.push(Supervised {
            what: format!("backend {}", plan.role.name),
            child,
        });
    }
    let mut vcpu_channels = Vec::new();
    for nic in &nics {
        let (dev_here, dev_there) = Channel::pair()?;
        let (ctl_here, ctl_there) = Channel::pair()?;
        let dev_there = dev_there.into_fd();
        let ctl_there = ctl_there.into_fd();
        let mut command = jail::Command::current_exe();
        for (p, fd) in nic.backends.iter().enumerate() {
            command = command.fd(fd.as_fd(), roles::device_fds::tap_queue(p as u16));
        }
        for (p, fd) in nic.vhost.iter().enumerate() {
            command = command.fd(fd.as_fd(), roles::device_fds::vhost(p as u16));
        }
        // The register mirror: the device writes it, the vCPU process reads.
        let mirror = if nic.layout.mirrored.is_empty() {
            None
        } else {
            let (_, fd) =
                ipc::RegisterMirror::create().context("cannot create a register mirror")?;
            Some(fd)
        };
        if let Some(fd) = &mirror {
            command = command.fd(fd.as_fd(), roles::device_fds::MIRROR);
        }
        let child = command
            .arg0("moatvm")
            .arg(roles::DEVICE)
            .arg(nic.role.to_arg())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .fd(ram.file.as_fd(), roles::device_fds::GUEST_RAM)
            .fd(dev_there.as_fd(), roles::device_fds::DEVICE_CHANNEL)
            .fd(ctl_there.as_fd(), roles::device_fds::VM_CONTROL)
            .new_net(true)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                kill_all(&children);
                return Err(e)
                    .with_context(|| format!("cannot start the process of {}", nic.role.name));
            }
        };
        log::debug!("{} runs as pid {}", nic.role.name, child.id());
        children.push(Supervised {
            what: format!("device {}", nic.role.name),
            child,
        });
        vcpu_channels.push((dev_here.into_fd(), ctl_here.into_fd(), mirror));
    }

    let (serial_fd, interactive): (OwnedFd, bool) = match &cfg.serial {
        SerialConfig::Stdio => {
            use std::io::IsTerminal;
            let out = std::io::stdout();
            (out.as_fd().try_clone_to_owned()?, out.is_terminal())
        }
        SerialConfig::File(path) => (
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("--serial: cannot open {}", path.display()))?
                .into(),
            false,
        ),
        SerialConfig::None => (File::create("/dev/null")?.into(), false),
    };
    let role = VcpuRole {
        mem_size,
        cpus: cfg.cpus,
        entry,
        serial_interactive: interactive,
        serial_stdin: cfg.serial == SerialConfig::Stdio,
        seccomp: opts.seccomp.clone(),
        devices: nics.iter().map(|n| n.layout.clone()).collect(),
    };
    let stdin = std::io::stdin();
    let mut cmd = jail::Command::current_exe()
        .arg0("moatvm")
        .arg(roles::VCPU)
        .arg(role.to_arg())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .fd(kvm.as_fd(), roles::vcpu_fds::KVM)
        .fd(ram.file.as_fd(), roles::vcpu_fds::GUEST_RAM)
        .fd(serial_fd.as_fd(), roles::vcpu_fds::SERIAL)
        .new_net(true);
    if role.serial_stdin {
        cmd = cmd.fd(stdin.as_fd(), 0);
    }
    for (i, (dev, ctl, mirror)) in vcpu_channels.iter().enumerate() {
        cmd = cmd
            .fd(dev.as_fd(), roles::vcpu_fds::device_channel(i))
            .fd(ctl.as_fd(), roles::vcpu_fds::vm_control(i));
        if let Some(fd) = mirror {
            cmd = cmd.fd(fd.as_fd(), roles::vcpu_fds::mirror(i));
        }
    }
    match cmd.spawn() {
        Ok(child) => {
            log::debug!("the vCPU process runs as pid {}", child.id());
            children.insert(
                0,
                Supervised {
                    what: "the vCPU process".into(),
                    child,
                },
            );
        }
        Err(e) => {
            kill_all(&children);
            return Err(e).context("cannot start the vCPU process");
        }
    }
    // The launcher's copies of taps, channels and guest RAM close here: each
    // tap now lives exactly as long as its device process.
    Ok(children)
}

/// Ends the processes started so far, when a later one cannot start.
fn kill_all(children: &[Supervised]) {
    for c in children {
        let _ = c.child.kill();
    }
}

/// Creates NIC `index`'s backend and says how its process will look.
fn plan_nic(
    cfg: &VmConfig,
    opts: &Options,
    index: usize,
    nic: &Nic,
    mem_size: u64,
    next_bar: &mut BarAllocator,
    created: &mut Created,
) -> Result<NicPlan> {
    let kind = match nic.model {
        NicModel::VirtioNetPci => NicKind::VirtioNet,
        NicModel::E1000 => NicKind::E1000,
        other => bail!(
            "{}: NIC model '{}' is not implemented yet",
            nic.origin,
            other.name()
        ),
    };
    let id = nic.id.clone().unwrap_or_else(|| format!("net{index}"));
    let name = format!("{id} ({})", nic.model.name());
    let netdev = nic
        .netdev
        .as_ref()
        .and_then(|n| cfg.net.netdevs.iter().find(|d| &d.id == n))
        .with_context(|| {
            format!(
                "{}: a NIC without a netdev is not implemented yet",
                nic.origin
            )
        })?;
    let violate = |v: &str| opts.violate_seccomp.as_deref() == Some(v);
    // Multiqueue (checked by the configuration: mq=on on a virtio-net-pci,
    // queues= on its tap): one tap queue, and vhost-net instance, per pair.
    let mq = nic.mq == Some(true) && kind == NicKind::VirtioNet;
    let queue_pairs = match &netdev.backend {
        Backend::Tap(t) if mq => t.queues.unwrap_or(1),
        _ => 1,
    };
    // Before the tap, so that a missing /dev/vhost-net leaves nothing behind.
    let vhost = match &netdev.backend {
        Backend::Tap(t) => open_vhost(t, &netdev.origin, queue_pairs)?,
        _ => Vec::new(),
    };
    let (backends, backend_kind, backend_process) = match &netdev.backend {
        Backend::Tap(t) => (
            tap_backend(netdev, t, &name, queue_pairs, created)?,
            BackendKind::Tap,
            None,
        ),
        Backend::User(u) => {
            let resolver = crate::user_net::host_resolver();
            if resolver.is_none() {
                log::warn!(
                    "{}: no IPv4 nameserver in {}: the guest's DNS queries will go unanswered",
                    netdev.origin,
                    crate::user_net::RESOLV_CONF
                );
            }
            let config = crate::user_net::config(u, resolver);
            config.check().with_context(|| netdev.origin.clone())?;
            let (nic_end, backend_end) =
                FrameChannel::pair().context("cannot create a frame channel")?;
            let backend_name = format!("{} (user)", netdev.id);
            log::debug!(
                "{name}: user-mode networking in backend {backend_name}, DNS to {resolver:?}"
            );
            let plan = BackendPlan {
                role: BackendRole {
                    name: backend_name,
                    seccomp: opts.seccomp.clone(),
                    // By the netdev's id only (the index names NICs).
                    violate_seccomp: violate(&netdev.id),
                    spec: BackendSpec::User(config),
                },
                frames: backend_end.into_fd(),
            };
            (vec![nic_end.into_fd()], BackendKind::Frames, Some(plan))
        }
        other => bail!(
            "{}: netdev type '{}' is not implemented yet",
            netdev.origin,
            other.type_name()
        ),
    };

    let (bar_shapes, msix_vectors) = kind.layout(queue_pairs);
    let mut bars = Vec::new();
    for (index, kind, prefetchable, size) in bar_shapes {
        let address = next_bar.place(kind, size)?;
        bars.push(AssignedBar {
            index,
            kind,
            prefetchable,
            size,
            address,
        });
    }
    Ok(NicPlan {
        role: DeviceRole {
            name: name.clone(),
            kind,
            mac: nic
                .mac
                .map(|m| m.0)
                .unwrap_or_else(|| stable_mac(index, &id)),
            mem_size,
            seccomp: opts.seccomp.clone(),
            violate_seccomp: violate(&id) || violate(&index.to_string()),
            backend: backend_kind,
            vhost: !vhost.is_empty(),
            mq,
            queue_pairs,
        },
        backends,
        vhost,
        layout: RemoteDevice {
            name,
            bars,
            msix_vectors,
            mirrored: kind.mirrored(),
        },
        backend_process,
    })
}

/// Creates (or takes, with `fd=`) the tap of `netdev`, with `queues`
/// queues, and puts it on its bridge; returns its queues.
fn tap_backend(
    netdev: &crate::netspec::Netdev,
    t: &crate::netspec::TapOpts,
    name: &str,
    queues: u16,
    created: &mut Created,
) -> Result<Vec<OwnedFd>> {
    let taps = match t.fd {
        Some(fd) => {
            // SAFETY: `fd=N` names a descriptor the caller opened for us and
            // hands over; it is taken once.
            let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            vec![Tap::from_fd(owned).with_context(|| format!("{}: fd={fd}", netdev.origin))?]
        }
        None => Tap::create(t.ifname.as_deref(), t.vnet_hdr.unwrap_or(true), queues)
            .with_context(|| format!("{}: cannot create the tap", netdev.origin))?,
    };
    let tap = &taps[0];
    if let Some(br) = &t.br {
        if bridge::create_bridge(br).with_context(|| format!("{}: bridge {br}", netdev.origin))? {
            log::debug!("created bridge {br}");
            created.bridges.push(br.clone());
        }
        bridge::enslave(tap.name(), br)
            .with_context(|| format!("{}: cannot add {} to {br}", netdev.origin, tap.name()))?;
    }
    bridge::link_up(tap.name())
        .with_context(|| format!("{}: cannot bring {} up", netdev.origin, tap.name()))?;
    log::debug!("{name}: tap {} ({} queues)", tap.name(), taps.len());
    Ok(taps.into_iter().map(Tap::into_fd).collect())
}

/// The vhost-net descriptors a tap netdev asks for, one per queue pair:
/// `vhostfd=N` as given (one pair only; the configuration checks), or
/// `/dev/vhost-net` opened here (before any jail) with `vhost=on` or
/// `vhostforce=on`; none otherwise.
fn open_vhost(t: &crate::netspec::TapOpts, origin: &str, pairs: u16) -> Result<Vec<OwnedFd>> {
    const PATH: &str = "/dev/vhost-net";
    if let Some(fd) = t.vhostfd {
        if pairs != 1 {
            bail!("{origin}: vhostfd= gives one vhost-net descriptor for {pairs} queue pairs");
        }
        // SAFETY: `vhostfd=N` names a descriptor the caller opened for us
        // and hands over; it is taken once.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        return Ok(vec![owned]);
    }
    if t.vhost != Some(true) && t.vhostforce != Some(true) {
        return Ok(Vec::new());
    }
    let mut fds = Vec::new();
    for _ in 0..pairs {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(PATH)
            .with_context(|| format!("{origin}: vhost=on needs {PATH}"))?;
        fds.push(file.into());
    }
    log::debug!("{origin}: opened {PATH} {pairs} times");
    Ok(fds)
}

/// Places BARs: memory BARs in the 32-bit PCI window, I/O BARs in the PCI
/// I/O port window, each aligned to its size.
struct BarAllocator {
    next_mmio: u64,
    next_io: u64,
}

impl Default for BarAllocator {
    fn default() -> Self {
        BarAllocator {
            next_mmio: layout::PCI_MMIO32_START,
            next_io: layout::PCI_IO_START,
        }
    }
}

impl BarAllocator {
    fn place(&mut self, kind: BarKindName, size: u64) -> Result<u64> {
        let (next, end) = match kind {
            BarKindName::Io => (&mut self.next_io, layout::PCI_IO_END),
            BarKindName::Memory32 | BarKindName::Memory64 => (
                &mut self.next_mmio,
                layout::PCI_MMIO32_START + layout::PCI_MMIO32_SIZE,
            ),
        };
        let address = next.next_multiple_of(size);
        if address + size > end {
            bail!("no room for a {size:#x}-byte {kind:?} BAR: too many NICs");
        }
        *next = address + size;
        Ok(address)
    }
}

/// A MAC for a NIC that was given none: 52:54:00 and three bytes that
/// depend only on the NIC's place and id, so it is the same every run.
fn stable_mac(index: usize, id: &str) -> [u8; 6] {
    // FNV-1a over the index and id.
    let mut h: u32 = 0x811c_9dc5;
    for b in index.to_le_bytes().iter().chain(id.as_bytes()) {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    let b = h.to_le_bytes();
    [0x52, 0x54, 0x00, b[0], b[1], b[2]]
}

/// Waits until the vCPU process ends (the VM is over) or a device or
/// backend process dies (the VM cannot go on); forwards stop signals.
/// Returns the exit code.
fn supervise(children: &mut [Supervised], signals: &SigSet) -> i32 {
    let vcpu_pid = Pid::from_raw(children[0].child.id() as i32);
    let code = loop {
        let mut ended = None;
        for (i, c) in children.iter_mut().enumerate() {
            match c.child.try_wait() {
                Ok(Some(status)) => {
                    ended = Some((i, status));
                    break;
                }
                Ok(None) => {}
                Err(e) => log::warn!("{}: {e}", c.what),
            }
        }
        if let Some((mut i, mut status)) = ended {
            // A device or backend process exits 0 only once a channel of its
            // closes: when the vCPU process is already ending (its
            // descriptors close before it can be reaped), or when the process
            // on the other end of its frame channel died. Let that one's end
            // decide.
            if i != 0 && status.code() == Some(0) {
                if let Some(cause) = wait_for_cause(children, i, VCPU_EXIT_GRACE) {
                    (i, status) = cause;
                }
            }
            let c = &children[i];
            if i == 0 && status.code() == Some(0) {
                log::debug!("the VM ended");
                break 0;
            }
            if i == 0 && status.code().is_some() {
                // The vCPU process said why itself.
                break status.code().unwrap_or(1);
            }
            eprintln!(
                "moatvm: {} ended the VM: {}",
                c.what,
                describe(status, c.child.id())
            );
            break 1;
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                log::debug!("{sig}: stopping the VM");
                let _ = kill(vcpu_pid, Signal::SIGTERM);
            }
            Err(e) => log::warn!("sigwait: {e}"),
        }
    };
    for c in children.iter_mut() {
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
    code
}

/// How long the vCPU process may take to be reaped after a device process
/// saw its channels close.
const VCPU_EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits up to `grace` for the vCPU process to end, or for a process other
/// than `quiet` (which exited 0) to fail; which one and how, if one did.
fn wait_for_cause(
    children: &mut [Supervised],
    quiet: usize,
    grace: std::time::Duration,
) -> Option<(usize, ExitStatus)> {
    let deadline = std::time::Instant::now() + grace;
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if i == quiet {
                continue;
            }
            if let Ok(Some(status)) = c.child.try_wait() {
                if i == 0 || status.code() != Some(0) {
                    return Some((i, status));
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// How a process ended, in words; for a seccomp kill, the system call that
/// broke the policy, read from the kernel's audit record.
fn describe(status: ExitStatus, pid: u32) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    let Some(sig) = status.signal() else {
        return format!("{status}");
    };
    let name = Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("an unknown signal");
    if sig == libc::SIGSYS {
        let call = crate::seccomp_report::killed_syscall(pid)
            .map(|nr| match seccomp::syscall_name(nr) {
                Some(n) => format!("{n} (system call {nr})"),
                None => format!("system call {nr}"),
            })
            .unwrap_or_else(|| "a system call (not found in the kernel log)".into());
        return format!("killed by {name}: seccomp policy forbids {call}");
    }
    format!("killed by {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_aligned_and_io_bars_get_ports() {
        let mut a = BarAllocator::default();
        let m = a.place(BarKindName::Memory64, 0x8000).unwrap();
        let io = a.place(BarKindName::Io, 0x40).unwrap();
        let m32 = a.place(BarKindName::Memory32, 0x2_0000).unwrap();
        let io2 = a.place(BarKindName::Io, 0x40).unwrap();
        assert_eq!(m, layout::PCI_MMIO32_START);
        assert_eq!(m32 % 0x2_0000, 0);
        assert!(m32 >= m + 0x8000);
        assert_eq!((io, io2), (0xc000, 0xc040));
        // The I/O window runs out long before the memory window.
        let mut a = BarAllocator::default();
        let fits = (layout::PCI_IO_END - layout::PCI_IO_START) / 0x40;
        for _ in 0..fits {
            a.place(BarKindName::Io, 0x40).unwrap();
        }
        assert!(a.place(BarKindName::Io, 0x40).is_err());
    }
}
