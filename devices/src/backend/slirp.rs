//! User-mode networking: libslirp (Debian's 4.7, through the `libslirp`
//! crate) between a frame channel to a NIC process and real sockets of the
//! host.
//!
//! libslirp is the whole TCP/IP stack: it answers ARP, DHCP, ICMP echo and
//! router solicitations for the virtual network (QEMU's 10.0.2.0/24 and
//! fec0::/64 by default), and carries the guest's TCP and UDP over host
//! sockets it opens itself, as if the host's own programs had opened them.
//! `hostfwd` rules are listening sockets on the host whose connections
//! reach the guest.
//!
//! What this module adds around it, all before a guest frame reaches
//! libslirp (which parses it, and is not to be trusted with nonsense):
//!
//! - frames shorter than an Ethernet header, longer than a header and the
//!   MTU (1514 bytes), or of any type but IPv4, ARP and IPv6 are dropped
//!   and counted (libslirp also speaks NC-SI, which no guest needs);
//! - DNS: see [`dns`]. libslirp would read `/etc/resolv.conf` for its DNS
//!   alias, and cannot in the jail; its own DNS handling is turned off
//!   (`disable_dns`), and queries to the alias are redirected to the
//!   resolver the launcher found;
//! - glib's log messages (libslirp's warnings) go to the `log` crate, rate
//!   limited, instead of glib's default writer (which may probe stderr and
//!   open a journald socket).
//!
//! Offloads, both ways over the frame channel (see [`super::frames`]): a
//! guest's frame whose checksum was left to do has it completed, and a GSO
//! frame becomes one TCP segment as long as the whole (libslirp's TCP
//! takes it as it takes a reassembled datagram; cut into wire frames only
//! if longer than libslirp's MTU); checksums are computed afresh, and the
//! result is checked
//! as above and handed to libslirp, which verifies every checksum; a
//! header that cannot be used drops the frame, counted. libslirp's
//! frames for the guest are gathered over one turn of the event loop and
//! coalesced (consecutive segments of one TCP flow into GSO frames of the
//! guest's MSS, the rest as they are, after the DNS rewriting), one
//! message each.
//!
//! libslirp itself runs with a 64 KiB MTU, so that its TCP moves 32 KiB
//! per segment where the guest's would be 1460 bytes: see [`mss`] for how
//! the guest is kept from noticing. An IPv4 packet for the guest longer
//! than its MTU (UDP, ICMP) is fragmented here, as libslirp would have.
//!
//! One [`Slirp`] runs on one thread (libslirp is not thread-safe, and the
//! crate's context is not `Send`); [`Slirp::run`] is its whole event loop:
//! poll(2) over the frame channel and libslirp's sockets, libslirp's
//! timers, nothing allocated per frame. Messages for the guest that do not
//! fit in the channel wait in a bounded [`backlog`] until it has room.

pub mod backlog;
pub mod dns;
pub mod mss;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CString};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libslirp::{Context, Handler, PollEvents};
use libslirp_sys::SlirpConfig;
use serde::{Deserialize, Serialize};

use super::frames::FrameChannel;
use super::{Error, Result};
use crate::net_offload::{
    self as offload, complete_checksum, Coalescer, Fragments, Segments, VnetHdr,
};
use crate::virtio::net::HDR_LEN;
use backlog::{Backlog, Sent};
use dns::{DnsRedirect, Verdict};
use mss::{GuestMss, SLIRP_MTU};

/// Ethernet header.
const ETH_HLEN: usize = 14;
/// The guest's link MTU: the longest IP packet taken from the guest or
/// sent to it, but for TCP (see [`mss`]). libslirp's own is far larger
/// ([`SLIRP_MTU`]).
pub const MTU: usize = 1500;
/// The longest frame handed to libslirp.
pub const MAX_FRAME: usize = ETH_HLEN + MTU;
/// The longest frame handed to libslirp whole: a guest's TCP GSO frame
/// made one segment (see [`Segments::whole`]).
const MAX_WHOLE: usize = ETH_HLEN + SLIRP_MTU;
/// Guest frames handled per loop turn before sockets get their turn.
const BATCH: usize = 64;
/// The receive buffer: a header and the longest GSO frame (a longer
/// message is dropped as oversize).
const RECV_BUF: usize = HDR_LEN + crate::virtio::net::MAX_FRAME;
/// libslirp's `bootp_filename` must fit `struct bootp_t`'s 128-byte field.
const MAX_BOOTFILE: usize = 127;

/// One `hostfwd` rule, addresses resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFwd {
    pub udp: bool,
    /// 0.0.0.0: every address of the host.
    pub host_addr: Ipv4Addr,
    pub host_port: u16,
    pub guest_addr: Ipv4Addr,
    pub guest_port: u16,
}

impl std::fmt::Display for HostFwd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}-{}:{}",
            if self.udp { "udp" } else { "tcp" },
            self.host_addr,
            self.host_port,
            self.guest_addr,
            self.guest_port
        )
    }
}

/// A virtual network, every default resolved (QEMU's `-netdev user`
/// meanings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub ipv4: bool,
    /// The network address and prefix length (10.0.2.0/24).
    pub net: Ipv4Addr,
    pub prefix_len: u8,
    /// The host's (gateway's) address in it (.2).
    pub host: Ipv4Addr,
    /// The first address DHCP gives out (.15).
    pub dhcp_start: Ipv4Addr,
    /// The DNS alias (.3).
    pub dns: Ipv4Addr,
    pub ipv6: bool,
    pub ipv6_prefix: Ipv6Addr,
    pub ipv6_prefix_len: u8,
    pub ipv6_host: Ipv6Addr,
    pub ipv6_dns: Ipv6Addr,
    /// DHCP: the client's host name, its domain, the search list.
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub dnssearch: Vec<String>,
    /// DHCP: the boot file name (BOOTP `file`).
    pub bootfile: Option<String>,
    /// The guest reaches nothing outside; `hostfwd` still reaches it.
    pub restrict: bool,
    pub hostfwd: Vec<HostFwd>,
    /// Where DNS queries to the alias go (the host's resolver); none: they
    /// are dropped.
    pub dns_upstream: Option<SocketAddrV4>,
}

impl Default for Config {
    /// QEMU's defaults: 10.0.2.0/24, host .2, DNS .3, DHCP from .15,
    /// fec0::/64 with host ::2 and DNS ::3, no resolver.
    fn default() -> Self {
        Config {
            ipv4: true,
            net: Ipv4Addr::new(10, 0, 2, 0),
            prefix_len: 24,
            host: Ipv4Addr::new(10, 0, 2, 2),
            dhcp_start: Ipv4Addr::new(10, 0, 2, 15),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            ipv6: true,
            ipv6_prefix: Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
            ipv6_prefix_len: 64,
            ipv6_host: Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 2),
            ipv6_dns: Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 3),
            hostname: None,
            domainname: None,
            dnssearch: Vec::new(),
            bootfile: None,
            restrict: false,
            hostfwd: Vec::new(),
            dns_upstream: None,
        }
    }
}

impl Config {
    /// Checks what libslirp would otherwise refuse (by returning no context
    /// at all).
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Slirp(what));
        if !(1..=30).contains(&self.prefix_len) {
            return bad(format!("prefix length {} (1 to 30)", self.prefix_len));
        }
        if self.ipv6_prefix_len > 126 {
            return bad(format!(
                "IPv6 prefix length {} (at most 126)",
                self.ipv6_prefix_len
            ));
        }
        if self
            .bootfile
            .as_ref()
            .is_some_and(|b| b.len() > MAX_BOOTFILE)
        {
            return bad(format!("bootfile longer than {MAX_BOOTFILE} bytes"));
        }
        let strings = self
            .hostname
            .iter()
            .chain(&self.domainname)
            .chain(&self.bootfile)
            .chain(&self.dnssearch);
        for s in strings {
            if s.contains('\0') {
                return bad(format!("{s:?} contains a NUL byte"));
            }
        }
        Ok(())
    }

    fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix_len)))
    }
}

/// Counters of one slirp instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlirpStats {
    /// Guest frames handed to libslirp (each segment of a GSO frame).
    pub from_guest: u64,
    /// Guest messages dropped: a virtio-net header or GSO frame that cannot
    /// be used as it says.
    pub bad_headers: u64,
    /// GSO frames from the guest.
    pub gso_from_guest: u64,
    /// Guest frames dropped: shorter than an Ethernet header.
    pub runts: u64,
    /// Longer than [`MAX_FRAME`] (or than the channel's buffer).
    pub oversize: u64,
    /// Not IPv4, ARP or IPv6.
    pub other_types: u64,
    /// For the DNS alias, with nothing to answer them.
    pub dns_dropped: u64,
    /// DNS queries redirected to the host's resolver.
    pub dns_redirected: u64,
    /// Messages to the guest sent (a GSO frame counts once).
    pub to_guest: u64,
    /// Messages to the guest that waited for room in the channel.
    pub to_guest_queued: u64,
    /// Messages to the guest dropped (the backlog full, or the channel
    /// closed).
    pub to_guest_dropped: u64,
    /// GSO frames made for the guest (of libslirp's frames coalesced).
    pub gso_to_guest: u64,
    /// IPv4 packets for the guest longer than [`MTU`], sent in fragments.
    pub fragmented: u64,
    /// IPv4 packets for the guest longer than [`MTU`] that could not be
    /// fragmented (DF set), dropped.
    pub too_long: u64,
}

/// A timer libslirp made: its deadline (ms on libslirp's clock) and what to
/// call then. The function is out of its slot while it runs.
struct TimerSlot {
    expire_ms: Option<i64>,
    func: Option<Box<dyn FnMut()>>,
}

/// What libslirp's callbacks reach (behind `Rc<RefCell<>>`, as the crate
/// wants): never borrowed while libslirp runs, only inside its callbacks.
struct Shared {
    channel: FrameChannel,
    /// Frames for the guest, merged over a turn of the event loop.
    coalescer: Coalescer,
    /// The MSS the guest asked for, per connection.
    mss: GuestMss,
    /// A fragment of a packet for the guest.
    fragment: Vec<u8>,
    /// Messages for the guest waiting for room in the channel.
    backlog: Backlog,
    dns: DnsRedirect,
    timers: Vec<Option<TimerSlot>>,
    /// A frame for the guest being rewritten (DNS answers only).
    scratch: Vec<u8>,
    stats: SlirpStats,
    guest_errors: u64,
}

/// libslirp's clock, in nanoseconds: monotonic, from one second before the
/// process first asked. libslirp keeps the time in milliseconds in an
/// unsigned 32-bit global, so a clock that started at boot would wrap
/// after 49 days of uptime, not of running; and it takes a time of 0 for
/// "no timer set", so the clock never reads 0.
fn now_ns() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    1_000_000_000 + start.elapsed().as_nanos() as i64
}

impl Handler for Shared {
    type Timer = usize;

    fn clock_get_ns(&mut self) -> i64 {
        now_ns()
    }

    fn send_packet(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Shared {
            channel,
            coalescer,
            mss,
            fragment,
            backlog,
            dns,
            scratch,
            stats,
            ..
        } = self;
        let frame = if dns.may_answer(buf) {
            scratch.clear();
            scratch.extend_from_slice(buf);
            dns.to_guest(scratch);
            &scratch[..]
        } else {
            buf
        };
        let mss = |l: &offload::TcpLayout, f: &[u8]| usize::from(mss.to_guest(f, l));
        coalescer.push(frame, mss, &mut |hdr, frame| {
            to_guest(backlog, channel, stats, fragment, hdr, frame)
        });
        // libslirp is told it went even if it is dropped later, or it
        // would complain on stderr for each one.
        Ok(buf.len())
    }

    fn register_poll_fd(&mut self, _fd: RawFd) {}

    fn unregister_poll_fd(&mut self, _fd: RawFd) {}

    fn guest_error(&mut self, msg: &str) {
        self.guest_errors += 1;
        if self.guest_errors.is_power_of_two() {
            log::warn!(
                "slirp: the guest: {msg} ({} such errors)",
                self.guest_errors
            );
        }
    }

    fn notify(&mut self) {}

    fn timer_new(&mut self, func: Box<dyn FnMut()>) -> Box<usize> {
        let slot = TimerSlot {
            expire_ms: None,
            func: Some(func),
        };
        let id = match self.timers.iter().position(Option::is_none) {
            Some(id) => {
                self.timers[id] = Some(slot);
                id
            }
            None => {
                self.timers.push(Some(slot));
                self.timers.len() - 1
            }
        };
        Box::new(id)
    }

    fn timer_mod(&mut self, timer: &mut Box<usize>, expire_time: i64) {
        if let Some(Some(t)) = self.timers.get_mut(**timer) {
            t.expire_ms = Some(expire_time);
        }
    }

    fn timer_free(&mut self, timer: Box<usize>) {
        if let Some(t) = self.timers.get_mut(*timer) {
            *t = None;
        }
    }
}

/// Whether the event loop goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Go,
    /// The NIC's end of the frame channel closed.
    Stop,
}

/// One libslirp instance on a frame channel.
pub struct Slirp {
    ctx: Context<Rc<RefCell<Shared>>>,
    shared: Rc<RefCell<Shared>>,
    hostfwd: Vec<HostFwd>,
    /// The channel first, then libslirp's sockets, rebuilt every turn.
    pollfds: Vec<libc::pollfd>,
    buf: Vec<u8>,
    /// A segment of a guest's GSO frame.
    seg: Vec<u8>,
    channel_fd: RawFd,
}

impl Slirp {
    /// Makes the libslirp instance for `cfg` on `channel`. It opens no
    /// socket yet (see [`Slirp::add_hostfwds`]); glib seeds libslirp's
    /// random numbers from /dev/urandom here if it can, so this may come
    /// before the jail.
    pub fn new(cfg: &Config, channel: FrameChannel) -> Result<Slirp> {
        cfg.check()?;
        route_glib_logs();
        let cstring = |s: &Option<String>| s.as_deref().and_then(|s| CString::new(s).ok());
        let hostname = cstring(&cfg.hostname);
        let domainname = cstring(&cfg.domainname);
        let bootfile = cstring(&cfg.bootfile);
        let search: Vec<CString> = cfg
            .dnssearch
            .iter()
            .filter_map(|s| CString::new(s.as_str()).ok())
            .collect();
        let mut search_ptrs: Vec<*const c_char> = search.iter().map(|s| s.as_ptr()).collect();
        search_ptrs.push(std::ptr::null());
        let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        // libslirp copies every string and the search list.
        let config = SlirpConfig {
            // 3: disable_dns is the newest field used; version 4 would make
            // libslirp look for callbacks the crate's SlirpCb lacks.
            version: 3,
            restricted: c_int::from(cfg.restrict),
            in_enabled: cfg.ipv4,
            vnetwork: cfg.net.into(),
            vnetmask: cfg.netmask().into(),
            vhost: cfg.host.into(),
            in6_enabled: cfg.ipv6,
            vprefix_addr6: cfg.ipv6_prefix.into(),
            vprefix_len: cfg.ipv6_prefix_len,
            vhost6: cfg.ipv6_host.into(),
            vhostname: ptr(&hostname),
            tftp_server_name: std::ptr::null(),
            tftp_path: std::ptr::null(),
            bootfile: ptr(&bootfile),
            vdhcp_start: cfg.dhcp_start.into(),
            vnameserver: cfg.dns.into(),
            vnameserver6: cfg.ipv6_dns.into(),
            vdnssearch: if cfg.dnssearch.is_empty() {
                std::ptr::null_mut()
            } else {
                search_ptrs.as_mut_ptr()
            },
            vdomainname: ptr(&domainname),
            // TCP segments of up to 32 KiB, and IPv6 GSO frames taken whole:
            // see `mss`.
            if_mtu: SLIRP_MTU,
            if_mru: SLIRP_MTU,
            disable_host_loopback: false,
            enable_emu: false,
            outbound_addr: std::ptr::null(),
            outbound_addr6: std::ptr::null(),
            // DNS is ours (see `dns`): libslirp must not go looking for
            // /etc/resolv.conf.
            disable_dns: true,
            disable_dhcp: false,
        };
        let channel_fd = channel.as_raw_fd();
        let shared = Rc::new(RefCell::new(Shared {
            channel,
            coalescer: Coalescer::default(),
            mss: GuestMss::default(),
            fragment: Vec::with_capacity(MAX_FRAME),
            backlog: Backlog::default(),
            dns: DnsRedirect::new(cfg.dns, cfg.ipv6.then_some(cfg.ipv6_dns), cfg.dns_upstream),
            timers: Vec::new(),
            scratch: Vec::with_capacity(MAX_FRAME),
            stats: SlirpStats::default(),
            guest_errors: 0,
        }));
        let ctx = Context::new_with_config(&config, shared.clone());
        Ok(Slirp {
            ctx,
            shared,
            hostfwd: cfg.hostfwd.clone(),
            pollfds: Vec::with_capacity(64),
            buf: vec![0; RECV_BUF],
            seg: Vec::with_capacity(MAX_FRAME),
            channel_fd,
        })
    }

    /// Opens the `hostfwd` listeners (sockets in the calling process's
    /// network namespace). Fails on the first that cannot be bound.
    pub fn add_hostfwds(&mut self) -> Result<()> {
        for rule in &self.hostfwd {
            // SAFETY: the context is live; the addresses are plain values.
            let r = unsafe {
                libslirp_sys::slirp_add_hostfwd(
                    self.ctx.inner.context,
                    c_int::from(rule.udp),
                    rule.host_addr.into(),
                    c_int::from(rule.host_port),
                    rule.guest_addr.into(),
                    c_int::from(rule.guest_port),
                )
            };
            if r != 0 {
                let why = io::Error::last_os_error();
                return Err(Error::Slirp(format!(
                    "hostfwd={rule}: cannot listen on the host ({why})"
                )));
            }
        }
        Ok(())
    }

    /// Counters so far (the channel's truncated messages count as
    /// oversize).
    pub fn stats(&self) -> SlirpStats {
        let shared = self.shared.borrow();
        let mut stats = shared.stats;
        stats.oversize += shared.channel.stats().truncated;
        stats
    }

    /// Serves until the NIC's end of the frame channel closes.
    pub fn run(&mut self) -> io::Result<()> {
        while self.run_once(Duration::from_secs(1))? == Flow::Go {}
        Ok(())
    }

    /// One turn of the event loop, waiting at most `max_wait`: frames from
    /// the guest, libslirp's sockets, its timers.
    pub fn run_once(&mut self, max_wait: Duration) -> io::Result<Flow> {
        // Writable matters only while frames wait for room.
        let waiting = !self.shared.borrow().backlog.is_empty();
        let Slirp {
            ctx,
            pollfds,
            channel_fd,
            ..
        } = self;
        pollfds.clear();
        pollfds.push(libc::pollfd {
            fd: *channel_fd,
            events: libc::POLLIN | if waiting { libc::POLLOUT } else { 0 },
            revents: 0,
        });
        let mut timeout = u32::MAX;
        ctx.pollfds_fill(&mut timeout, |fd, events| {
            pollfds.push(libc::pollfd {
                fd,
                events: to_poll(events),
                revents: 0,
            });
            (pollfds.len() - 1) as i32
        });
        let mut timeout = u64::from(timeout).min(max_wait.as_millis() as u64);
        if let Some(due) = self.next_timer_ms() {
            timeout = timeout.min(due.saturating_sub(now_ns() / 1_000_000).max(0) as u64);
        }
        // SAFETY: the pollfds are a live, correctly sized array.
        let n = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout as c_int,
            )
        };
        let failed = n < 0;
        if failed {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        // libslirp's sockets first: this also sets libslirp's idea of the
        // time, which the guest's frames must not see stale (a socket
        // opened for one would expire at once).
        let Slirp { ctx, pollfds, .. } = self;
        ctx.pollfds_poll(failed, |idx| {
            pollfds
                .get(idx as usize)
                .map_or(PollEvents::empty(), |p| from_poll(p.revents))
        });
        let channel = if failed { 0 } else { self.pollfds[0].revents };
        if channel & libc::POLLOUT != 0 {
            self.shared.borrow_mut().flush_backlog();
        }
        if channel & !libc::POLLOUT != 0 {
            self.guest_frames();
        }
        self.run_timers();
        // What libslirp sent the guest this turn.
        self.shared.borrow_mut().flush_coalesced();
        if channel & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return Ok(Flow::Stop);
        }
        Ok(Flow::Go)
    }

    /// Hands up to [`BATCH`] waiting guest messages to libslirp: the
    /// frame, its checksum completed, or a GSO frame's segments.
    fn guest_frames(&mut self) {
        let Slirp {
            ctx,
            shared,
            buf,
            seg,
            ..
        } = self;
        for _ in 0..BATCH {
            let n = match shared.borrow_mut().channel.recv(buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: all read. Other errors show up as POLLERR.
                Err(_) => return,
            };
            let msg = &mut buf[..n];
            let hdr = match VnetHdr::parse(msg) {
                Ok(hdr) => hdr,
                Err(e) => {
                    shared.borrow_mut().bad_header(e);
                    continue;
                }
            };
            let frame = &mut msg[HDR_LEN..];
            if !hdr.is_gso() {
                match complete_checksum(&hdr, frame) {
                    Ok(()) => input(ctx, shared, frame, MAX_FRAME),
                    Err(e) => shared.borrow_mut().bad_header(e),
                }
                continue;
            }
            let split = match Segments::new(&hdr, frame) {
                Ok(split) => split,
                Err(e) => {
                    shared.borrow_mut().bad_header(e);
                    continue;
                }
            };
            shared.borrow_mut().stats.gso_from_guest += 1;
            // libslirp takes a TCP segment as long as its MTU, so one
            // segment of the whole frame is one pass through its TCP input,
            // one write to the host socket and one ACK where the wire
            // frames would be dozens.
            if frame.len() <= MAX_WHOLE && split.whole(frame).is_ok() {
                input(ctx, shared, frame, MAX_WHOLE);
                continue;
            }
            for k in 0..split.count() {
                if split.build(frame, k, seg).is_err() {
                    break;
                }
                input(ctx, shared, seg, MAX_FRAME);
            }
        }
    }

    /// The earliest timer deadline, in ms on libslirp's clock.
    fn next_timer_ms(&self) -> Option<i64> {
        self.shared
            .borrow()
            .timers
            .iter()
            .flatten()
            .filter_map(|t| t.expire_ms)
            .min()
    }

    /// Runs the timers that are due. Each runs with nothing borrowed: it
    /// calls into libslirp, which calls back.
    fn run_timers(&mut self) {
        let now_ms = now_ns() / 1_000_000;
        let count = self.shared.borrow().timers.len();
        for id in 0..count {
            let due = {
                let mut shared = self.shared.borrow_mut();
                match shared.timers.get_mut(id) {
                    Some(Some(t)) if t.expire_ms.is_some_and(|e| e <= now_ms) => {
                        t.expire_ms = None;
                        t.func.take()
                    }
                    _ => None,
                }
            };
            if let Some(mut func) = due {
                func();
                // Put back unless the timer was freed (or its slot reused).
                if let Some(Some(t)) = self.shared.borrow_mut().timers.get_mut(id) {
                    if t.func.is_none() {
                        t.func = Some(func);
                    }
                }
            }
        }
    }
}

/// Checks a frame from the guest of at most `max_len` bytes and, unless
/// it is dropped, hands it to libslirp (with nothing borrowed: libslirp
/// calls back).
fn input(
    ctx: &Context<Rc<RefCell<Shared>>>,
    shared: &RefCell<Shared>,
    frame: &mut [u8],
    max_len: usize,
) {
    let verdict = shared.borrow_mut().check_guest_frame(frame, max_len);
    if verdict != Verdict::Drop {
        ctx.input(frame);
    }
}

/// Sends `frame` behind `hdr` to the guest, or queues it, or drops it (the
/// backlog full or the NIC gone, as on a wire), counted. An IPv4 packet
/// longer than the guest's MTU goes in fragments, built in `fragment`.
fn to_guest(
    backlog: &mut Backlog,
    channel: &mut FrameChannel,
    stats: &mut SlirpStats,
    fragment: &mut Vec<u8>,
    hdr: &VnetHdr,
    frame: &[u8],
) {
    if hdr.is_gso() {
        stats.gso_to_guest += 1;
    } else if frame.len() > MAX_FRAME && u16::from_be_bytes([frame[12], frame[13]]) == 0x0800 {
        let Ok(split) = Fragments::new(frame, MTU) else {
            stats.too_long += 1;
            return;
        };
        stats.fragmented += 1;
        for k in 0..split.count() {
            if split.build(frame, k, fragment).is_ok() {
                send_to_guest(backlog, channel, stats, hdr, fragment);
            }
        }
        return;
    }
    send_to_guest(backlog, channel, stats, hdr, frame);
}

fn send_to_guest(
    backlog: &mut Backlog,
    channel: &mut FrameChannel,
    stats: &mut SlirpStats,
    hdr: &VnetHdr,
    frame: &[u8],
) {
    match backlog.send(channel, hdr, frame) {
        Sent::Now => stats.to_guest += 1,
        Sent::Later => stats.to_guest_queued += 1,
        Sent::Dropped => stats.to_guest_dropped += 1,
    }
}

impl Shared {
    /// Sends what the coalescer holds (at the end of a turn).
    fn flush_coalesced(&mut self) {
        let Shared {
            channel,
            coalescer,
            fragment,
            backlog,
            stats,
            ..
        } = self;
        coalescer.flush(&mut |hdr, frame| to_guest(backlog, channel, stats, fragment, hdr, frame));
    }

    /// Counts (and now and then logs) a guest message dropped for its
    /// header.
    fn bad_header(&mut self, e: offload::Error) {
        self.stats.bad_headers += 1;
        if self.stats.bad_headers.is_power_of_two() {
            log::warn!(
                "slirp: from the guest: {e}; dropped ({} such)",
                self.stats.bad_headers
            );
        }
    }

    /// Sends the frames that waited, as far as the channel takes them.
    fn flush_backlog(&mut self) {
        let (sent, dropped) = self.backlog.flush(&mut self.channel);
        self.stats.to_guest += sent;
        self.stats.to_guest_dropped += dropped;
    }

    /// Checks a frame from the guest, of at most `max_len` bytes, before
    /// libslirp sees it.
    fn check_guest_frame(&mut self, frame: &mut [u8], max_len: usize) -> Verdict {
        let stats = &mut self.stats;
        if frame.len() < ETH_HLEN {
            stats.runts += 1;
            return Verdict::Drop;
        }
        if frame.len() > max_len {
            stats.oversize += 1;
            return Verdict::Drop;
        }
        if ![0x0800, 0x0806, 0x86dd].contains(&u16::from_be_bytes([frame[12], frame[13]])) {
            stats.other_types += 1;
            return Verdict::Drop;
        }
        let verdict = self.dns.from_guest(frame);
        match verdict {
            Verdict::Drop => stats.dns_dropped += 1,
            Verdict::Redirected => stats.dns_redirected += 1,
            Verdict::Pass => {}
        }
        if verdict != Verdict::Drop {
            stats.from_guest += 1;
            self.mss.from_guest(frame);
        }
        verdict
    }
}

fn to_poll(events: PollEvents) -> libc::c_short {
    let mut out = 0;
    for (has, bit) in [
        (events.has_in(), libc::POLLIN),
        (events.has_out(), libc::POLLOUT),
        (events.has_pri(), libc::POLLPRI),
        (events.has_err(), libc::POLLERR),
        (events.has_hup(), libc::POLLHUP),
    ] {
        if has {
            out |= bit;
        }
    }
    out
}

fn from_poll(revents: libc::c_short) -> PollEvents {
    let mut out = PollEvents::empty();
    for (bit, event) in [
        (libc::POLLIN, PollEvents::poll_in()),
        (libc::POLLOUT, PollEvents::poll_out()),
        (libc::POLLPRI, PollEvents::poll_pri()),
        (libc::POLLERR, PollEvents::poll_err()),
        (libc::POLLHUP, PollEvents::poll_hup()),
    ] {
        if revents & bit != 0 {
            out |= event;
        }
    }
    out
}

// ------------------------------------------------------------ glib's log

/// `GLogField` (glib/gmessages.h).
#[repr(C)]
struct GLogField {
    key: *const c_char,
    value: *const c_void,
    length: isize,
}

type GLogWriterFunc = unsafe extern "C" fn(
    log_level: c_int,
    fields: *const GLogField,
    n_fields: usize,
    user_data: *mut c_void,
) -> c_int;

#[link(name = "glib-2.0")]
extern "C" {
    fn g_log_set_writer_func(
        func: Option<GLogWriterFunc>,
        user_data: *mut c_void,
        user_data_free: Option<unsafe extern "C" fn(*mut c_void)>,
    );
}

/// Messages from glib's writer so far (for rate limiting).
static GLIB_MESSAGES: AtomicU64 = AtomicU64::new(0);

/// glib's log writer, replaced: the message goes to the `log` crate, at the
/// 1st, 2nd, 4th, 8th... message (a guest can make libslirp warn at will).
unsafe extern "C" fn glib_writer(
    log_level: c_int,
    fields: *const GLogField,
    n_fields: usize,
    _user_data: *mut c_void,
) -> c_int {
    const HANDLED: c_int = 1;
    let n = GLIB_MESSAGES.fetch_add(1, Ordering::Relaxed) + 1;
    if !n.is_power_of_two() || fields.is_null() {
        return HANDLED;
    }
    // SAFETY: glib passes `n_fields` valid fields.
    let fields = unsafe { std::slice::from_raw_parts(fields, n_fields) };
    let mut message = String::new();
    for f in fields {
        if f.key.is_null() || f.value.is_null() {
            continue;
        }
        // SAFETY: keys are NUL-terminated strings.
        if unsafe { std::ffi::CStr::from_ptr(f.key) }.to_bytes() != b"MESSAGE" {
            continue;
        }
        let bytes = if f.length < 0 {
            // SAFETY: a length of -1 means a NUL-terminated string.
            unsafe { std::ffi::CStr::from_ptr(f.value.cast()) }.to_bytes()
        } else {
            // SAFETY: otherwise `length` bytes at `value`.
            unsafe { std::slice::from_raw_parts(f.value.cast::<u8>(), f.length as usize) }
        };
        message = String::from_utf8_lossy(bytes).trim_end().to_owned();
    }
    // G_LOG_LEVEL_ERROR 1<<2, CRITICAL 1<<3, WARNING 1<<4, MESSAGE 1<<5,
    // INFO 1<<6, DEBUG 1<<7.
    let level = if log_level & (1 << 2 | 1 << 3) != 0 {
        log::Level::Error
    } else if log_level & (1 << 4 | 1 << 5) != 0 {
        log::Level::Warn
    } else if log_level & (1 << 6) != 0 {
        log::Level::Info
    } else {
        log::Level::Debug
    };
    log::log!(level, "libslirp: {message} ({n} messages)");
    HANDLED
}

/// Routes glib's (and so libslirp's) log messages to [`glib_writer`], once
/// per process (glib aborts on a second call).
fn route_glib_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: glib_writer has the GLogWriterFunc signature and needs no
    // user data.
    ONCE.call_once(|| unsafe {
        g_log_set_writer_func(Some(glib_writer), std::ptr::null_mut(), None)
    });
}

#[cfg(test)]
mod tests;
