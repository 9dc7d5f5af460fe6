//! Runs the real `moatvm __device` in its real jail, with this test playing
//! the vCPU process: it answers the device's vm-control requests, drives
//! virtio initialisation through config and BAR accesses on the device
//! channel, and moves frames through a real tap, in a network namespace the
//! test created (never the host's).
//!
//! Needs root (user namespaces with id maps, taps, packet sockets), as the
//! launcher does; skips, saying so, where namespaces or `/dev/net/tun` are
//! missing.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::backend::bridge;
use devices::backend::frames::FrameChannel;
use devices::backend::tap::Tap;
use ipc::messages::{DeviceReply, DeviceRequest, RegData, VmReply, VmRequest};
use ipc::Channel;
use serde::Serialize;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap};

const BIN: &str = env!("CARGO_BIN_EXE_moatvm");
/// How long anything the device does may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(10);
const MEM_SIZE: u64 = 64 << 20;
const MAC: [u8; 6] = [0x02, 0x6d, 0x6f, 0x61, 0x74, 0x01];
const TAP_NAME: &str = "mvtest0";

/// The role as `moatvm __device` parses it (`roles::DeviceRole`, which
/// lives in the binary crate).
#[derive(Serialize)]
struct DeviceRole<'a> {
    name: &'a str,
    kind: &'a str,
    mac: [u8; 6],
    mem_size: u64,
    seccomp: &'a str,
    violate_seccomp: bool,
    /// `Tap` or `Frames`: what descriptor 6 is.
    backend: &'a str,
}

// ---------------------------------------------------------------------------
// virtio constants (virtio 1.x, as a driver knows them)
// ---------------------------------------------------------------------------

mod cc {
    pub const DF_SELECT: u64 = 0x00;
    pub const DF: u64 = 0x04;
    pub const GF_SELECT: u64 = 0x08;
    pub const GF: u64 = 0x0c;
    pub const MSIX_CONFIG: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const STATUS: u64 = 0x14;
    pub const Q_SELECT: u64 = 0x16;
    pub const Q_SIZE: u64 = 0x18;
    pub const Q_MSIX: u64 = 0x1a;
    pub const Q_ENABLE: u64 = 0x1c;
    pub const Q_NOTIFY_OFF: u64 = 0x1e;
    pub const Q_DESC: u64 = 0x20;
    pub const Q_AVAIL: u64 = 0x28;
    pub const Q_USED: u64 = 0x30;
}

const S_ACKNOWLEDGE: u8 = 1;
const S_DRIVER: u8 = 2;
const S_DRIVER_OK: u8 = 4;
const S_FEATURES_OK: u8 = 8;
const S_NEEDS_RESET: u8 = 0x40;
/// `msix_config`/`queue_msix_vector` value for "no vector".
const NO_VECTOR: u16 = 0xffff;

const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_MAC: u64 = 1 << 5;
const F_VERSION_1: u64 = 1 << 32;

const RX: u16 = 0;
const TX: u16 = 1;
const HDR_LEN: usize = 12;
const QSIZE: u16 = 256;
const RX_BUFS: u16 = 32;
const RX_BUF_LEN: u32 = 2048;
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

// ---------------------------------------------------------------------------
// plumbing
// ---------------------------------------------------------------------------

/// Runs `f` on a thread of its own in a fresh network namespace, so that
/// the tap never appears on the host. Skips, saying so, where this
/// machine cannot.
fn in_fresh_netns<F: FnOnce() + Send + 'static>(f: F) {
    let outcome = std::thread::spawn(move || {
        let before = std::fs::read_link("/proc/thread-self/ns/net").ok();
        // SAFETY: unshare takes flags only; it affects this thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "SKIPPED: cannot create a network namespace: {}",
                std::io::Error::last_os_error()
            );
            return;
        }
        let after = std::fs::read_link("/proc/thread-self/ns/net").ok();
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

fn eventfd_wait(fd: &OwnedFd, until: Instant) -> bool {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if r == 1 {
            let mut buf = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a local buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
            if n == 8 {
                return true;
            }
        }
    }
}

fn eventfd_signal(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a local buffer.
    let n = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
    assert_eq!(n, 8, "{}", std::io::Error::last_os_error());
}

/// A field of /proc/<pid>/status.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A raw packet socket on the tap's host side: what the guest sends out
/// arrives here, and what is sent here goes to the guest.
struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    fn open(ifname: &str) -> PacketSocket {
        let ifindex = bridge::link_index(ifname).unwrap().expect("tap exists") as i32;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket takes integers only.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut sll = Self::address(ifindex);
        sll.sll_protocol = proto;
        // SAFETY: binds to a sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        PacketSocket { fd, ifindex }
    }

    fn address(ifindex: i32) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all zeroes is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex;
        sll.sll_halen = 6;
        sll
    }

    fn send(&self, frame: &[u8]) {
        let sll = Self::address(self.ifindex);
        // SAFETY: sends from a slice to a sockaddr_ll of the size given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            n,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits for an incoming frame equal to `want` (skipping others, such
    /// as the host's own outgoing frames).
    fn expect(&self, want: &[u8], until: Instant) {
        let mut buf = [0u8; 2048];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the guest's frame never left the tap");
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd, valid for the call.
            if unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) } != 1 {
                continue;
            }
            let mut sll = Self::address(0);
            let mut len = size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: receives into a local buffer and address of the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 || sll.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            if &buf[..n as usize] == want {
                return;
            }
        }
    }
}

/// A test frame: broadcast, from `src`, a local-experimental EtherType and
/// a recognisable payload; 60 bytes.
fn frame(src: [u8; 6], text: &str) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(text.as_bytes());
    f.resize(60.max(f.len()), 0);
    f
}

// ---------------------------------------------------------------------------
// the device process and the test's side of its channels
// ---------------------------------------------------------------------------

/// What the device asked for at start-up.
struct Startup {
    /// Index = MSI-X vector.
    irqfds: Vec<OwnedFd>,
    /// INTA: the trigger the device signals, the resample fd KVM would.
    intx: OwnedFd,
    resample: OwnedFd,
    /// (BAR offset, eventfd).
    doorbells: Vec<(u64, OwnedFd)>,
}

struct Device {
    child: jail::Child,
    dev: Channel,
    vm_requests: mpsc::Receiver<(VmRequest, Vec<OwnedFd>)>,
    server: Option<JoinHandle<()>>,
    mem: GuestMemoryMmap,
    /// The tap, kept open; none on a frame channel.
    _tap: Option<Tap>,
}

impl Device {
    /// Creates the tap (in the calling thread's network namespace, which
    /// must be the test's own), guest RAM and the channels, and spawns the
    /// device process in its jail.
    fn spawn(seccomp: &str, violate_seccomp: bool) -> Device {
        let tap = Tap::create(Some(TAP_NAME), true, 1).unwrap().remove(0);
        // Fewer stray frames from the host side (IPv6 autoconfiguration);
        // best effort: the test copes with them anyway.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{TAP_NAME}/disable_ipv6"),
            "1",
        );
        bridge::link_up(TAP_NAME).unwrap();
        let backend = tap.as_fd().try_clone_to_owned().unwrap();
        let mut d = Self::spawn_on(seccomp, violate_seccomp, backend, "Tap");
        d._tap = Some(tap);
        d
    }

    /// The same on a frame channel, whose other end is returned.
    fn spawn_on_frames(seccomp: &str) -> (Device, FrameChannel) {
        let (ours, theirs) = FrameChannel::pair().unwrap();
        (
            Self::spawn_on(seccomp, false, theirs.into_fd(), "Frames"),
            ours,
        )
    }

    fn spawn_on(seccomp: &str, violate_seccomp: bool, backend: OwnedFd, kind: &str) -> Device {
        let ram = nix::sys::memfd::memfd_create(
            "device-process-test",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .unwrap();
        let ram = File::from(ram);
        ram.set_len(MEM_SIZE).unwrap();
        let mem = GuestMemoryMmap::from_ranges_with_files(vec![(
            GuestAddress(0),
            MEM_SIZE as usize,
            Some(FileOffset::new(ram.try_clone().unwrap(), 0)),
        )])
        .unwrap();

        let (dev, dev_theirs) = Channel::pair().unwrap();
        let (vm, vm_theirs) = Channel::pair().unwrap();
        let role = DeviceRole {
            name: "net0 (virtio-net-pci)",
            kind: "VirtioNet",
            mac: MAC,
            mem_size: MEM_SIZE,
            seccomp,
            violate_seccomp,
            backend: kind,
        };
        let child = jail::Command::new(BIN)
            .arg0("moatvm")
            .arg("__device")
            .arg(toml::to_string(&role).unwrap())
            .fd(ram.as_fd(), 3)
            .fd(dev_theirs.as_fd(), 4)
            .fd(vm_theirs.as_fd(), 5)
            .fd(backend.as_fd(), 6)
            .spawn()
            .unwrap();
        drop((dev_theirs, vm_theirs, ram, backend));

        // The vCPU process's vm-control thread: answers everything, and
        // tells the test what it was asked.
        let (tx, vm_requests) = mpsc::channel();
        let server = std::thread::spawn(move || loop {
            match vm.recv::<VmRequest>() {
                Ok((request, fds)) => {
                    let reply = if request.check().is_ok() && fds.len() == request.expected_fds() {
                        VmReply::Ok
                    } else {
                        VmReply::Refused(format!("{request:?} with {} fds", fds.len()))
                    };
                    let _ = tx.send((request, fds));
                    if vm.send(&reply, &[]).is_err() {
                        return;
                    }
                }
                Err(ipc::Error::Closed) => return,
                Err(e) => panic!("vm-control channel: {e}"),
            }
        });
        Device {
            child,
            dev,
            vm_requests,
            server: Some(server),
            mem,
            _tap: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn vm_request(&self) -> (VmRequest, Vec<OwnedFd>) {
        self.vm_requests
            .recv_timeout(DEADLINE)
            .expect("the device asked nothing of the vCPU process in time")
    }

    /// The start-up requests, exactly as the device process documents them.
    fn startup(&self) -> Startup {
        let mut irqfds = Vec::new();
        for vector in 0..4 {
            let (request, mut fds) = self.vm_request();
            assert_eq!(request, VmRequest::RegisterIrqfd { vector });
            assert_eq!(fds.len(), 1);
            irqfds.push(fds.remove(0));
        }
        let (request, mut fds) = self.vm_request();
        assert_eq!(request, VmRequest::RegisterIntx { resample: true });
        assert_eq!(fds.len(), 2);
        let intx = fds.remove(0);
        let resample = fds.remove(0);
        let mut doorbells = Vec::new();
        for queue in 0..3u64 {
            let (request, mut fds) = self.vm_request();
            let offset = 0x3000 + 4 * queue;
            assert_eq!(
                request,
                VmRequest::RegisterIoevent {
                    bar: 0,
                    offset,
                    len: 0,
                    datamatch: None
                }
            );
            assert_eq!(fds.len(), 1);
            doorbells.push((offset, fds.remove(0)));
        }
        Startup {
            irqfds,
            intx,
            resample,
            doorbells,
        }
    }

    /// Waits for the device process to end.
    fn wait_exit(&mut self) -> ExitStatus {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(server) = self.server.take() {
                    server.join().unwrap();
                }
                return status;
            }
            assert!(Instant::now() < until, "the device process did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn call(&self, request: DeviceRequest) -> DeviceReply {
        self.dev.send(&request, &[]).unwrap();
        match self.dev.recv_timeout::<DeviceReply>(DEADLINE).unwrap() {
            Some((reply, fds)) => {
                assert!(fds.is_empty());
                reply
            }
            None => panic!("no reply to {request:?}"),
        }
    }

    fn post(&self, request: DeviceRequest) {
        self.dev.send(&request, &[]).unwrap();
    }

    fn cfg32(&self, at: usize) -> u32 {
        match self.call(DeviceRequest::ConfigRead {
            reg: (at / 4) as u16,
        }) {
            DeviceReply::ConfigValue(v) => v >> (8 * (at % 4)),
            r => panic!("{r:?}"),
        }
    }

    fn cfg8(&self, at: usize) -> u8 {
        self.cfg32(at) as u8
    }

    fn cfg_write(&self, at: usize, data: &[u8]) {
        self.post(DeviceRequest::ConfigWrite {
            reg: (at / 4) as u16,
            offset: (at % 4) as u8,
            data: RegData::new(data).unwrap(),
        });
    }

    fn bar_read(&self, offset: u64, len: u8) -> u64 {
        match self.call(DeviceRequest::BarRead {
            bar: 0,
            offset,
            len,
        }) {
            DeviceReply::BarData(d) => {
                assert_eq!(d.len(), usize::from(len));
                d.to_u64()
            }
            r => panic!("{r:?}"),
        }
    }

    fn bar_write(&self, offset: u64, len: usize, value: u64) {
        self.post(DeviceRequest::BarWrite {
            bar: 0,
            offset,
            data: RegData::from_u64(value, len),
        });
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the driver found the virtio structures in BAR 0.
#[derive(Debug, Default)]
struct Caps {
    common: u64,
    notify: u64,
    multiplier: u32,
    device: u64,
    isr: u64,
    msix: usize,
    msix_table: u64,
}

/// Walks the capability list as Linux's virtio_pci_modern does.
fn probe(d: &Device) -> Caps {
    assert_ne!(d.cfg32(0x04) >> 16 & 0x10, 0, "no capability list");
    let mut caps = Caps::default();
    let mut at = usize::from(d.cfg8(0x34));
    let mut seen = 0;
    while at != 0 {
        seen += 1;
        assert!(seen < 16, "capability list loops");
        match d.cfg8(at) {
            0x11 => {
                caps.msix = at;
                let table = d.cfg32(at + 4);
                assert_eq!(table & 7, 0, "MSI-X table in BAR 0");
                caps.msix_table = u64::from(table & !7);
            }
            0x09 => {
                let off = u64::from(d.cfg32(at + 8));
                match d.cfg8(at + 3) {
                    1 => caps.common = off,
                    2 => {
                        caps.notify = off;
                        caps.multiplier = d.cfg32(at + 16);
                    }
                    3 => caps.isr = off,
                    4 => caps.device = off,
                    _ => {}
                }
            }
            _ => {}
        }
        at = usize::from(d.cfg8(at + 1));
    }
    caps
}

/// A split virtqueue as the driver keeps it.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    used_seen: u16,
}

impl Ring {
    fn at(base: u64) -> Ring {
        Ring {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// Puts a one-descriptor chain in slot `i` and makes it available.
    fn offer(&mut self, mem: &GuestMemoryMmap, i: u16, addr: u64, len: u32, writable: bool) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&(if writable { 2u16 } else { 0 }).to_le_bytes());
        mem.write_slice(&d, GuestAddress(self.desc + 16 * u64::from(i)))
            .unwrap();
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        mem.write_obj(i.to_le(), GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx.to_le(), GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Used entries (id, len) since the last call.
    fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u32, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let at = self.used + 4 + 8 * u64::from(self.used_seen % QSIZE);
            let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((id, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// Initialises the device as Linux's virtio_net does (MSI-X, RX and TX
/// queues, no control queue); returns the negotiated features and rings.
/// Brings the device up as Linux's driver does; with `msix` false the
/// queues have no vector and interrupt through INTx.
fn init(d: &Device, caps: &Caps, msix: bool) -> (u64, Ring, Ring) {
    let common = |field: u64| caps.common + field;
    d.bar_write(common(cc::STATUS), 1, 0);
    assert_eq!(d.bar_read(common(cc::STATUS), 1), 0);
    d.bar_write(common(cc::STATUS), 1, u64::from(S_ACKNOWLEDGE));
    d.bar_write(common(cc::STATUS), 1, u64::from(S_ACKNOWLEDGE | S_DRIVER));
    d.bar_write(common(cc::DF_SELECT), 4, 0);
    let lo = d.bar_read(common(cc::DF), 4);
    d.bar_write(common(cc::DF_SELECT), 4, 1);
    let offered = lo | d.bar_read(common(cc::DF), 4) << 32;
    assert_ne!(offered & F_VERSION_1, 0, "{offered:#x}");
    let features = offered & (F_VERSION_1 | F_MAC | F_CSUM | F_GUEST_CSUM);
    d.bar_write(common(cc::GF_SELECT), 4, 0);
    d.bar_write(common(cc::GF), 4, features & 0xffff_ffff);
    d.bar_write(common(cc::GF_SELECT), 4, 1);
    d.bar_write(common(cc::GF), 4, features >> 32);
    let s = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK;
    d.bar_write(common(cc::STATUS), 1, u64::from(s));
    assert_eq!(d.bar_read(common(cc::STATUS), 1) as u8, s);

    // MSI-X as the PCI core enables it: function-masked while the table is
    // programmed, then every vector live.
    if msix {
        let control = caps.msix + 2;
        d.cfg_write(control, &0xc000u16.to_le_bytes());
        for v in 0..4u64 {
            let e = caps.msix_table + 16 * v;
            d.bar_write(e, 4, 0xfee0_0000);
            d.bar_write(e + 4, 4, 0);
            d.bar_write(e + 8, 4, 0x40 + v);
            d.bar_write(e + 12, 4, 0);
        }
        d.cfg_write(control, &0x8000u16.to_le_bytes());
        assert_eq!(d.cfg32(control) & 0xc000, 0x8000);
    }
    let vector = |v: u16| if msix { v } else { NO_VECTOR };

    assert_eq!(d.bar_read(common(cc::NUM_QUEUES), 2), 3);
    d.bar_write(common(cc::MSIX_CONFIG), 2, u64::from(vector(3)));
    let mut rings = Vec::new();
    for q in [RX, TX] {
        d.bar_write(common(cc::Q_SELECT), 2, u64::from(q));
        assert_eq!(d.bar_read(common(cc::Q_SIZE), 2), u64::from(QSIZE));
        let ring = Ring::at(0x10_0000 + 0x1_0000 * u64::from(q));
        for (field, addr) in [
            (cc::Q_DESC, ring.desc),
            (cc::Q_AVAIL, ring.avail),
            (cc::Q_USED, ring.used),
        ] {
            d.bar_write(common(field), 4, addr);
            d.bar_write(common(field) + 4, 4, 0);
        }
        d.bar_write(common(cc::Q_MSIX), 2, u64::from(vector(q)));
        assert_eq!(d.bar_read(common(cc::Q_MSIX), 2), u64::from(vector(q)));
        d.bar_write(common(cc::Q_ENABLE), 2, 1);
        assert_eq!(d.bar_read(common(cc::Q_ENABLE), 2), 1);
        rings.push(ring);
    }
    let s = s | S_DRIVER_OK;
    d.bar_write(common(cc::STATUS), 1, u64::from(s));
    assert_eq!(d.bar_read(common(cc::STATUS), 1) as u8, s);
    let tx = rings.pop().unwrap();
    let rx = rings.pop().unwrap();
    (features, rx, tx)
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

/// Config space, virtio initialisation, MSI routes, a frame each way
/// through the tap, the jail as /proc shows it, and an orderly shutdown.
#[test]
fn virtio_net_device_process_end_to_end() {
    in_fresh_netns(|| {
        let mut d = Device::spawn("kill", false);
        let startup = d.startup();
        let packets = PacketSocket::open(TAP_NAME);

        // Identity: a modern virtio-net function.
        assert_eq!(d.cfg32(0x00), 0x1041_1af4);
        assert_eq!(d.cfg32(0x08) >> 8, 0x02_00_00, "class: Ethernet controller");
        // Bad requests are refused, reads still answered, and the device
        // goes on.
        assert_eq!(
            d.call(DeviceRequest::ConfigRead { reg: 4096 }),
            DeviceReply::ConfigValue(u32::MAX)
        );
        assert_eq!(
            d.call(DeviceRequest::BarRead {
                bar: 0,
                offset: 0,
                len: 3
            }),
            DeviceReply::BarData(RegData::new(&[0xff; 3]).unwrap())
        );
        d.post(DeviceRequest::BarWrite {
            bar: 9,
            offset: 0,
            data: RegData::from_u64(1, 4),
        });
        assert_eq!(d.cfg32(0x00), 0x1041_1af4);

        let caps = probe(&d);
        let mac: Vec<u8> = (0..6)
            .map(|i| d.bar_read(caps.device + i, 1) as u8)
            .collect();
        assert_eq!(mac, MAC);
        let (features, mut rx, mut tx) = init(&d, &caps, true);
        assert_eq!(features & F_MAC, F_MAC);
        assert_ne!(features & F_CSUM, 0, "the tap's offloads: {features:#x}");

        // The MSI-X table as the guest left it reached the vCPU process.
        let mut routes = [None; 4];
        while let Ok((request, fds)) = d.vm_requests.try_recv() {
            assert!(fds.is_empty());
            match request {
                VmRequest::SetMsiRoute {
                    vector,
                    address,
                    data,
                    masked,
                } => routes[usize::from(vector)] = Some((address, data, masked)),
                r => panic!("unexpected {r:?}"),
            }
        }
        for (v, route) in routes.iter().enumerate() {
            assert_eq!(*route, Some((0xfee0_0000, 0x40 + v as u32, false)), "{v}");
        }

        // Jailed and filtered, as /proc shows it.
        assert_eq!(status_field(d.pid(), "Seccomp"), "2");
        assert_eq!(status_field(d.pid(), "NoNewPrivs"), "1");
        assert_eq!(status_field(d.pid(), "CapEff"), "0000000000000000");

        // Guest to tap: one frame on TX, kicked through its ioeventfd.
        let notify = |q: u16| {
            d.bar_write(caps.common + cc::Q_SELECT, 2, u64::from(q));
            caps.notify + d.bar_read(caps.common + cc::Q_NOTIFY_OFF, 2) * u64::from(caps.multiplier)
        };
        let tx_bell = notify(TX);
        let rx_bell = notify(RX);
        let doorbell = |offset: u64| {
            &startup
                .doorbells
                .iter()
                .find(|(o, _)| *o == offset)
                .expect("a doorbell for the queue")
                .1
        };
        let out = frame(MAC, "moatvm: from the guest");
        let buf = 0x30_0000;
        d.mem
            .write_slice(&[0u8; HDR_LEN], GuestAddress(buf))
            .unwrap();
        d.mem
            .write_slice(&out, GuestAddress(buf + HDR_LEN as u64))
            .unwrap();
        tx.offer(&d.mem, 0, buf, (HDR_LEN + out.len()) as u32, false);
        eventfd_signal(doorbell(tx_bell));
        let until = Instant::now() + DEADLINE;
        packets.expect(&out, until);
        assert!(
            eventfd_wait(&startup.irqfds[usize::from(TX)], until),
            "no TX interrupt"
        );
        assert_eq!(tx.take_used(&d.mem), vec![(0, 0)]);

        // Tap to guest: RX buffers offered, the queue kicked by a plain BAR
        // write (the path when no ioeventfd is registered), then a frame
        // from the host side.
        let rx_buf = |i: u32| 0x20_0000 + u64::from(i) * u64::from(RX_BUF_LEN);
        for i in 0..RX_BUFS {
            rx.offer(&d.mem, i, rx_buf(u32::from(i)), RX_BUF_LEN, true);
        }
        d.bar_write(rx_bell, 2, u64::from(RX));
        let inbound = frame([0x02, 0, 0, 0, 0, 0x99], "moatvm: to the guest");
        packets.send(&inbound);
        let until = Instant::now() + DEADLINE;
        let mut found = false;
        while !found {
            assert!(
                eventfd_wait(&startup.irqfds[usize::from(RX)], until),
                "no RX interrupt with the frame"
            );
            for (id, len) in rx.take_used(&d.mem) {
                assert!(id < u32::from(RX_BUFS) && len <= RX_BUF_LEN, "{id} {len}");
                let mut got = vec![0u8; len as usize];
                d.mem
                    .read_slice(&mut got, GuestAddress(rx_buf(id)))
                    .unwrap();
                found |= got.get(HDR_LEN..) == Some(&inbound[..]);
            }
        }
        // Still healthy.
        assert_eq!(
            d.bar_read(caps.common + cc::STATUS, 1) as u8 & S_NEEDS_RESET,
            0
        );

        d.post(DeviceRequest::Shutdown);
        let status = d.wait_exit();
        assert_eq!(status.code(), Some(0), "{status:?}");
    });
}

/// Without MSI-X the device interrupts through INTA, level-triggered by
/// resampling: asserted when a used buffer arrives, asserted again at each
/// acknowledgement (resample) while the ISR is unread, and no more once
/// the driver read (and so cleared) it.
#[test]
fn intx_is_level_triggered_through_resample() {
    in_fresh_netns(|| {
        let mut d = Device::spawn("kill", false);
        let startup = d.startup();
        assert_eq!(d.cfg32(0x3c) >> 8 & 0xff, 1, "interrupt pin INTA");
        let packets = PacketSocket::open(TAP_NAME);
        let caps = probe(&d);
        let (_, _rx, mut tx) = init(&d, &caps, false);

        let out = frame(MAC, "moatvm: INTx");
        let buf = 0x30_0000;
        d.mem
            .write_slice(&[0u8; HDR_LEN], GuestAddress(buf))
            .unwrap();
        d.mem
            .write_slice(&out, GuestAddress(buf + HDR_LEN as u64))
            .unwrap();
        tx.offer(&d.mem, 0, buf, (HDR_LEN + out.len()) as u32, false);
        d.bar_write(caps.common + cc::Q_SELECT, 2, u64::from(TX));
        let bell = caps.notify
            + d.bar_read(caps.common + cc::Q_NOTIFY_OFF, 2) * u64::from(caps.multiplier);
        d.bar_write(bell, 2, u64::from(TX));
        let until = Instant::now() + DEADLINE;
        packets.expect(&out, until);
        assert!(
            eventfd_wait(&startup.intx, until),
            "no INTx for the used buffer"
        );
        assert!(
            !eventfd_wait(
                &startup.irqfds[usize::from(TX)],
                Instant::now() + Duration::from_millis(50)
            ),
            "an MSI-X irqfd fired although MSI-X is off"
        );

        // The guest acknowledged at the IOAPIC but has not read the ISR yet:
        // the line goes up again.
        eventfd_signal(&startup.resample);
        assert!(
            eventfd_wait(&startup.intx, Instant::now() + DEADLINE),
            "no re-assertion while the ISR is set"
        );
        // Reading the ISR returns the queue bit and clears it; the next
        // acknowledgement leaves the line down.
        assert_eq!(d.bar_read(caps.isr, 1) & 1, 1, "ISR queue bit");
        eventfd_signal(&startup.resample);
        // A round trip on the device channel proves the resample was
        // handled (requests and events are served by one loop).
        assert_eq!(d.bar_read(caps.isr, 1), 0);
        assert!(
            !eventfd_wait(&startup.intx, Instant::now() + Duration::from_millis(200)),
            "INTx asserted again after the ISR was read"
        );
        assert_eq!(tx.take_used(&d.mem), vec![(0, 0)]);

        d.post(DeviceRequest::Shutdown);
        assert_eq!(d.wait_exit().code(), Some(0));
    });
}

/// On a frame channel (the backend a user-mode network's process holds the
/// other end of): checksum and TSO offloads offered, a virtio-net header
/// and a frame each way, one per message, under the same filter; a GSO
/// frame reaches a driver that took no TSO as segments.
#[test]
fn virtio_net_over_a_frame_channel() {
    in_fresh_netns(|| {
        let (mut d, mut peer) = Device::spawn_on_frames("kill");
        let startup = d.startup();
        let caps = probe(&d);
        d.bar_write(caps.common + cc::DF_SELECT, 4, 0);
        let offered = d.bar_read(caps.common + cc::DF, 4);
        let offloads = F_CSUM | F_GUEST_CSUM | 1 << 7 | 1 << 8 | 1 << 11 | 1 << 12;
        assert_eq!(offered & offloads, offloads, "{offered:#x}");
        let (_, mut rx, mut tx) = init(&d, &caps, true);
        let notify = |q: u16| {
            d.bar_write(caps.common + cc::Q_SELECT, 2, u64::from(q));
            caps.notify + d.bar_read(caps.common + cc::Q_NOTIFY_OFF, 2) * u64::from(caps.multiplier)
        };
        let (tx_bell, rx_bell) = (notify(TX), notify(RX));
        let doorbell = |offset: u64| {
            &startup
                .doorbells
                .iter()
                .find(|(o, _)| *o == offset)
                .expect("a doorbell for the queue")
                .1
        };

        // Guest to channel: the frame behind its virtio-net header, as the
        // driver wrote it.
        let out = frame(MAC, "moatvm: over the frame channel");
        let buf = 0x30_0000;
        let csum_hdr = [1, 0, 0, 0, 0, 0, 14, 0, 6, 0, 0, 0];
        d.mem.write_slice(&csum_hdr, GuestAddress(buf)).unwrap();
        d.mem
            .write_slice(&out, GuestAddress(buf + HDR_LEN as u64))
            .unwrap();
        tx.offer(&d.mem, 0, buf, (HDR_LEN + out.len()) as u32, false);
        eventfd_signal(doorbell(tx_bell));
        let until = Instant::now() + DEADLINE;
        let mut got = [0u8; 2048];
        let n = loop {
            match peer.recv(&mut got) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < until, "no frame on the channel");
                    let mut pfd = libc::pollfd {
                        fd: peer.as_fd().as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd, valid for the call.
                    unsafe { libc::poll(&mut pfd, 1, 100) };
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(&got[..n], &[&csum_hdr[..], &out].concat()[..]);
        assert!(eventfd_wait(&startup.irqfds[usize::from(TX)], until));

        // Channel to guest: the header before the frame. A message too
        // long for any buffer goes first and is dropped on the way; a GSO
        // frame (3000 bytes of TCP payload, MSS 1000) is cut for a driver
        // that took no TSO.
        let rx_buf = |i: u32| 0x20_0000 + u64::from(i) * u64::from(RX_BUF_LEN);
        for i in 0..RX_BUFS {
            rx.offer(&d.mem, i, rx_buf(u32::from(i)), RX_BUF_LEN, true);
        }
        d.bar_write(rx_bell, 2, u64::from(RX));
        peer.send(&[0; 4000]).unwrap();
        let inbound = frame([0x02, 0, 0, 0, 0, 0x99], "moatvm: from the backend");
        peer.send(&[&[0; HDR_LEN][..], &inbound].concat()).unwrap();
        // NEEDS_CSUM, TCPv4, hdr_len 54, gso_size 1000, csum at 34 + 16.
        let mut gso = vec![1, 1, 54, 0, 0xe8, 3, 34, 0, 16, 0, 0, 0];
        gso.extend_from_slice(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 8, 0, // Ethernet
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 2, 10, 0, 2, 15, // IPv4
            0, 80, 0x9c, 0x40, 0, 0, 0x10, 0, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        gso.extend_from_slice(&[0x5a; 3000]);
        peer.send(&gso).unwrap();
        let until = Instant::now() + DEADLINE;
        let mut used = Vec::new();
        while used.len() < 4 {
            assert!(
                eventfd_wait(&startup.irqfds[usize::from(RX)], until),
                "no RX interrupt; {used:?}"
            );
            used.extend(rx.take_used(&d.mem));
        }
        assert_eq!(used.len(), 4, "{used:?}");
        let mut frames = Vec::new();
        for &(id, len) in &used {
            let mut got = vec![0u8; len as usize];
            d.mem
                .read_slice(&mut got, GuestAddress(rx_buf(id)))
                .unwrap();
            assert_eq!(&got[..10], &[0; 10], "header");
            frames.push(got.split_off(HDR_LEN));
        }
        assert_eq!(frames[0], inbound);
        for (k, seg) in frames[1..].iter().enumerate() {
            assert_eq!(seg.len(), 54 + 1000);
            // The sequence number, and PSH on the last only.
            assert_eq!(&seg[38..42], &(0x1000 + 1000 * k as u32).to_be_bytes());
            assert_eq!(seg[47], if k == 2 { 0x18 } else { 0x10 });
        }

        // The backend going away unplugs the cable; the device lives on.
        drop(peer);
        assert_eq!(d.cfg32(0x00), 0x1041_1af4);
        d.post(DeviceRequest::Shutdown);
        let status = d.wait_exit();
        assert_eq!(status.code(), Some(0), "{status:?}");
    });
}

/// The two jailed processes of a NIC on user-mode networking, as the
/// launcher starts them: the device process on one end of a frame channel,
/// the backend (libslirp) on the other. The guest's ARP request for the
/// gateway goes out through the TX queue and libslirp's reply comes back
/// on the RX queue.
#[test]
fn virtio_net_to_a_user_network_backend() {
    #[derive(Serialize)]
    struct BackendRole {
        name: &'static str,
        seccomp: &'static str,
        spec: Spec,
    }
    #[derive(Serialize)]
    enum Spec {
        User(devices::backend::slirp::Config),
    }
    in_fresh_netns(|| {
        let (d, peer) = Device::spawn_on_frames("kill");
        let role = BackendRole {
            name: "n0 (user)",
            seccomp: "kill",
            spec: Spec::User(Default::default()),
        };
        let peer = peer.into_fd();
        let mut backend = jail::Command::new(BIN)
            .arg0("moatvm")
            .arg("__backend")
            .arg(toml::to_string(&role).unwrap())
            .fd(peer.as_fd(), 3)
            .new_net(false)
            .spawn()
            .unwrap();
        drop(peer);
        let startup = d.startup();
        let caps = probe(&d);
        let (_, mut rx, mut tx) = init(&d, &caps, true);
        let rx_buf = |i: u32| 0x20_0000 + u64::from(i) * u64::from(RX_BUF_LEN);
        for i in 0..RX_BUFS {
            rx.offer(&d.mem, i, rx_buf(u32::from(i)), RX_BUF_LEN, true);
        }
        d.bar_write(caps.common + cc::Q_SELECT, 2, u64::from(RX));
        let rx_bell = caps.notify
            + d.bar_read(caps.common + cc::Q_NOTIFY_OFF, 2) * u64::from(caps.multiplier);
        d.bar_write(rx_bell, 2, u64::from(RX));

        // Who has 10.0.2.2? Tell 10.0.2.15.
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&MAC);
        arp.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&MAC);
        arp.extend_from_slice(&[10, 0, 2, 15, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2]);
        let buf = 0x30_0000;
        d.mem
            .write_slice(&[0u8; HDR_LEN], GuestAddress(buf))
            .unwrap();
        d.mem
            .write_slice(&arp, GuestAddress(buf + HDR_LEN as u64))
            .unwrap();
        tx.offer(&d.mem, 0, buf, (HDR_LEN + arp.len()) as u32, false);
        d.bar_write(caps.common + cc::Q_SELECT, 2, u64::from(TX));
        let tx_bell = caps.notify
            + d.bar_read(caps.common + cc::Q_NOTIFY_OFF, 2) * u64::from(caps.multiplier);
        d.bar_write(tx_bell, 2, u64::from(TX));

        let until = Instant::now() + DEADLINE;
        let mut reply = None;
        while reply.is_none() {
            assert!(
                eventfd_wait(&startup.irqfds[usize::from(RX)], until),
                "no ARP reply from the backend; it: {:?}",
                backend.try_wait()
            );
            for (id, len) in rx.take_used(&d.mem) {
                let mut got = vec![0u8; len as usize];
                d.mem
                    .read_slice(&mut got, GuestAddress(rx_buf(id)))
                    .unwrap();
                let f = &got[HDR_LEN..];
                if f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2] {
                    reply = Some(f.to_vec());
                }
            }
        }
        let reply = reply.unwrap();
        assert_eq!(&reply[0..6], &MAC);
        assert_eq!(&reply[28..32], &[10, 0, 2, 2], "the gateway answers");
        assert_eq!(&reply[38..42], &[10, 0, 2, 15]);

        // The NIC going away ends the backend cleanly.
        let mut d = d;
        d.post(DeviceRequest::Shutdown);
        assert_eq!(d.wait_exit().code(), Some(0));
        let until = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = backend.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < until, "the backend did not exit");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(status.code(), Some(0), "{status:?}");
    });
}

/// With `violate_seccomp`, the device process makes a forbidden system call
/// once set up and dies by SIGSYS.
#[test]
fn forbidden_system_call_kills_the_device_process() {
    in_fresh_netns(|| {
        let mut d = Device::spawn("kill", true);
        let _startup = d.startup();
        let status = d.wait_exit();
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}");
    });
}

/// In `log` mode the same forbidden call is only logged (by the kernel):
/// the device process goes on serving.
#[test]
fn log_mode_lets_the_device_process_live() {
    in_fresh_netns(|| {
        let mut d = Device::spawn("log", true);
        let _startup = d.startup();
        assert_eq!(d.cfg32(0x00), 0x1041_1af4);
        assert_eq!(status_field(d.pid(), "Seccomp"), "2");
        d.post(DeviceRequest::Shutdown);
        let status = d.wait_exit();
        assert_eq!(status.code(), Some(0), "{status:?}");
    });
}

/// The vCPU process going away (its end of the device channel closing)
/// ends the device process cleanly.
#[test]
fn device_channel_hang_up_ends_the_device_process() {
    in_fresh_netns(|| {
        let mut d = Device::spawn("kill", false);
        let _startup = d.startup();
        assert_eq!(d.cfg32(0x00), 0x1041_1af4);
        let (closed, _) = Channel::pair().unwrap();
        drop(std::mem::replace(&mut d.dev, closed));
        let status = d.wait_exit();
        assert_eq!(status.code(), Some(0), "{status:?}");
    });
}

/// A role that does not parse is refused before anything else happens.
#[test]
fn bad_role_is_refused() {
    let out = std::process::Command::new(BIN)
        .args(["__device", "kind = 'e1000'"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("role"), "{stderr}");
}
