//! Runs the real `moatvm __backend` (user-mode networking, libslirp) in its
//! real jail and seccomp filter, with this test playing the NIC process on
//! the other end of the frame channel: it sends the guest's frames and
//! checks libslirp's answers. Everything the backend reaches on the host
//! is on the loopback interface (hostfwd listeners bound to 127.0.0.1, a
//! listener and a fake DNS resolver of the test's own).
//!
//! Skips, saying so, where this machine cannot create user namespaces.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use devices::backend::frames::FrameChannel;
use devices::backend::slirp::{Config, HostFwd};
use devices::net_offload::VnetHdr;
use serde::Serialize;

const BIN: &str = env!("CARGO_BIN_EXE_moatvm");
/// How long anything the backend does may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(10);

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const ALIAS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// libslirp's MAC for its own addresses: 52:55 and the IPv4 address.
const SLIRP_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];

/// The role as `moatvm __backend` parses it (`roles::BackendRole`, which
/// lives in the binary crate).
#[derive(Serialize)]
struct BackendRole<'a> {
    name: &'a str,
    seccomp: &'a str,
    violate_seccomp: bool,
    spec: Spec,
}

#[derive(Serialize)]
enum Spec {
    User(Config),
}

// ---------------------------------------------------------------------------
// frames
// ---------------------------------------------------------------------------

fn csum(data: &[u8]) -> u16 {
    let mut acc: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn eth(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet of `proto` carrying `l4`, whose checksum at `csum_at`
/// (if any) is filled in, in a frame to libslirp.
fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    mut l4: Vec<u8>,
    csum_at: Option<usize>,
) -> Vec<u8> {
    if let Some(at) = csum_at {
        let mut pseudo = [src.octets(), dst.octets()].concat();
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        let c = csum(&[pseudo, l4.clone()].concat());
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&l4);
    eth(SLIRP_MAC, 0x0800, &ip)
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ipv4(src, dst, 17, u, Some(6))
}

/// A TCP SYN from the guest.
fn syn(dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    ipv4(GUEST, dst, 6, t, Some(16))
}

fn arp(op: u16, sender: Ipv4Addr, target_mac: [u8; 6], target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&GUEST_MAC);
    a.extend_from_slice(&sender.octets());
    a.extend_from_slice(&target_mac);
    a.extend_from_slice(&target.octets());
    let dst = if op == 1 { [0xff; 6] } else { target_mac };
    eth(dst, 0x0806, &a)
}

fn dhcp_discover() -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&0x6d6f_6174u32.to_be_bytes());
    b[28..34].copy_from_slice(&GUEST_MAC);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[53, 1, 1, 255]);
    let mut f = udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &b);
    f[..6].copy_from_slice(&[0xff; 6]);
    f
}

/// An ICMPv6 message from the guest's link-local address, hop limit 255.
fn icmpv6(dst: [u8; 16], dst_mac: [u8; 6], mut icmp: Vec<u8>) -> Vec<u8> {
    let mut src = [0u8; 16];
    src[..2].copy_from_slice(&[0xfe, 0x80]);
    src[8..].copy_from_slice(&[0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56]);
    let mut pseudo = [src, dst].concat();
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    let c = csum(&[pseudo, icmp.clone()].concat());
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[58, 255]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(&icmp);
    eth(dst_mac, 0x86dd, &ip)
}

fn router_solicitation() -> Vec<u8> {
    let mut all_routers = [0u8; 16];
    all_routers[..2].copy_from_slice(&[0xff, 0x02]);
    all_routers[15] = 2;
    let mut icmp = vec![133, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    icmp.extend_from_slice(&GUEST_MAC);
    icmpv6(all_routers, [0x33, 0x33, 0, 0, 0, 2], icmp)
}

/// An ICMPv6 echo request to an address outside the virtual network, which
/// libslirp 4.7 does not forward: it complains through glib's log.
fn external_ping6() -> Vec<u8> {
    let dst: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    icmpv6(dst.octets(), SLIRP_MAC, vec![128, 0, 0, 0, 0, 1, 0, 1])
}

fn is_arp_reply_from(f: &[u8], ip: Ipv4Addr) -> bool {
    f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2] && f[28..32] == ip.octets()
}

/// An IPv4 frame's protocol, addresses and (for UDP/TCP) ports and
/// payload start.
struct Ip<'a> {
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    l4: &'a [u8],
}

fn parse_ipv4(f: &[u8]) -> Option<Ip<'_>> {
    if f.len() < 34 || f[12..14] != [8, 0] {
        return None;
    }
    let ip = &f[14..];
    let hl = usize::from(ip[0] & 15) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let a = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    Some(Ip {
        proto: ip[9],
        src: a(12),
        dst: a(16),
        l4: &ip[hl..total],
    })
}

fn ports(l4: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}

// ---------------------------------------------------------------------------
// the backend process
// ---------------------------------------------------------------------------

/// A field of /proc/<pid>/status.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

struct Backend {
    child: jail::Child,
    chan: FrameChannel,
    /// The read end of the process's stderr.
    stderr: OwnedFd,
}

impl Backend {
    /// Starts `moatvm __backend` for `cfg`; None (having said SKIPPED)
    /// where user namespaces cannot be created.
    fn spawn(cfg: Config, seccomp: &str, violate_seccomp: bool) -> Option<Backend> {
        let (ours, theirs) = FrameChannel::pair().unwrap();
        let role = BackendRole {
            name: "n0 (user)",
            seccomp,
            violate_seccomp,
            spec: Spec::User(cfg),
        };
        let (err_r, err_w) = std::io::pipe().unwrap();
        let theirs = theirs.into_fd();
        let spawned = jail::Command::new(BIN)
            .arg0("moatvm")
            .arg("__backend")
            .arg(toml::to_string(&role).unwrap())
            .env("RUST_LOG", "warn")
            .fd(theirs.as_fd(), 3)
            .fd(err_w.as_fd(), 2)
            .new_net(false)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(jail::Error::Clone(e)) => {
                eprintln!("SKIPPED: cannot create user namespaces: {e}");
                return None;
            }
            Err(e) => panic!("spawn: {e}"),
        };
        Some(Backend {
            child,
            chan: ours,
            stderr: OwnedFd::from(err_r),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a wire frame (behind a zero virtio-net header).
    fn send(&mut self, frame: &[u8]) {
        self.chan.send_frame(&VnetHdr::NONE, frame).unwrap();
    }

    /// Waits for a frame for the guest that satisfies `want` (its header
    /// must parse), answering libslirp's ARP requests for the guest on the
    /// way.
    fn expect(&mut self, what: &str, mut want: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
        let until = Instant::now() + DEADLINE;
        let mut buf = vec![0u8; 12 + 65550];
        loop {
            match self.chan.recv(&mut buf) {
                Ok(0) => panic!("{what}: the backend hung up: {:?}", self.child.try_wait()),
                Ok(n) => {
                    VnetHdr::parse(&buf[..n]).unwrap();
                    let f = &buf[12..n];
                    if want(f) {
                        return f.to_vec();
                    }
                    if f.len() >= 42
                        && f[12..14] == [8, 6]
                        && f[21] == 1
                        && f[38..42] == GUEST.octets()
                    {
                        let who: [u8; 6] = f[22..28].try_into().unwrap();
                        let ip = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
                        let reply = arp(2, GUEST, who, ip);
                        self.send(&reply);
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{what}: {e}; the backend: {:?}", self.child.try_wait()),
            }
            let left = until.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{what}: nothing came in time");
            let mut pfd = libc::pollfd {
                fd: self.chan.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd, valid for the call.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        }
    }

    /// ARP for the host alias, which also tells libslirp the guest's MAC.
    /// Its answer shows the backend is set up and serving.
    fn arp_host(&mut self) {
        self.send(&arp(1, GUEST, [0; 6], HOST));
        let reply = self.expect("ARP reply", |f| is_arp_reply_from(f, HOST));
        assert_eq!(&reply[0..6], &GUEST_MAC);
        assert_eq!(&reply[22..28], &SLIRP_MAC, "sender MAC");
        assert_eq!(&reply[32..38], &GUEST_MAC, "target MAC");
        assert_eq!(&reply[38..42], &GUEST.octets(), "target IP");
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < until, "the backend did not exit");
            // Nothing to wait on but the child itself; SIGCHLD would need
            // the whole test process's signal mask.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What the process wrote on stderr (once it has exited).
    fn stderr(&mut self) -> String {
        let mut s = String::new();
        let mut f = std::fs::File::from(self.stderr.try_clone().unwrap());
        // SAFETY: F_SETFL on a descriptor we own.
        unsafe {
            libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
        }
        let _ = f.read_to_string(&mut s);
        s
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn link(path: String) -> std::path::PathBuf {
    std::fs::read_link(path).unwrap()
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

/// ARP and DHCP from libslirp, through the jail: and the jail itself (no
/// capabilities, a seccomp filter, the host's network namespace but no
/// other of the host's namespaces).
#[test]
fn arp_dhcp_and_the_jail() {
    let Some(mut b) = Backend::spawn(Config::default(), "kill", false) else {
        return;
    };
    b.arp_host();

    b.send(&dhcp_discover());
    let offer = b.expect("DHCP offer", |f| {
        parse_ipv4(f).is_some_and(|ip| ip.proto == 17 && ports(ip.l4) == (67, 68))
    });
    let ip = parse_ipv4(&offer).unwrap();
    assert_eq!(ip.src, HOST);
    let bootp = &ip.l4[8..];
    assert_eq!(bootp[0], 2, "BOOTREPLY");
    assert_eq!(&bootp[4..8], &0x6d6f_6174u32.to_be_bytes(), "xid");
    assert_eq!(&bootp[16..20], &GUEST.octets(), "yiaddr");
    let options = &bootp[240..];
    let option = |code: u8| {
        let mut at = 0;
        while at + 1 < options.len() && options[at] != 255 {
            if options[at] == code {
                return options[at + 2..at + 2 + usize::from(options[at + 1])].to_vec();
            }
            at += 2 + usize::from(options[at + 1]);
        }
        panic!("no option {code}")
    };
    assert_eq!(option(53), [2], "DHCPOFFER");
    assert_eq!(option(54), HOST.octets(), "server identifier");
    assert_eq!(option(3), HOST.octets(), "router");
    assert_eq!(option(6), ALIAS.octets(), "DNS server");

    let pid = b.pid();
    assert_eq!(status_field(pid, "Seccomp"), "2");
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "CapPrm"), "0000000000000000");
    assert_eq!(status_field(pid, "CapBnd"), "0000000000000000");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let ns = |pid: &str, which: &str| link(format!("/proc/{pid}/ns/{which}"));
    let pid_s = pid.to_string();
    assert_eq!(
        ns(&pid_s, "net"),
        ns("self", "net"),
        "not in the host's netns"
    );
    for other in ["user", "mnt", "pid", "ipc", "uts"] {
        assert_ne!(
            ns(&pid_s, other),
            ns("self", other),
            "{other} namespace shared"
        );
    }
    // An empty root: the process sees none of the host's files.
    assert_eq!(
        std::fs::read_dir(format!("/proc/{pid}/root"))
            .unwrap()
            .count(),
        0
    );
}

/// `hostfwd=tcp:127.0.0.1:PORT-:80`: a connection to that port on the
/// host's loopback becomes a SYN to the guest's port 80; and the guest
/// reaches a listener on the host's loopback through 10.0.2.2.
#[test]
fn hostfwd_and_the_host_alias() {
    let port = free_port();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let host_port = listener.local_addr().unwrap().port();
    let cfg = Config {
        hostfwd: vec![HostFwd {
            udp: false,
            host_addr: Ipv4Addr::LOCALHOST,
            host_port: port,
            guest_addr: GUEST,
            guest_port: 80,
        }],
        ..Config::default()
    };
    let Some(mut b) = Backend::spawn(cfg, "kill", false) else {
        return;
    };
    // Served means the listeners are up (they come before the loop).
    b.arp_host();
    let _client = TcpStream::connect(("127.0.0.1", port)).expect("hostfwd listener");
    let forwarded = b.expect("the forwarded SYN", |f| {
        parse_ipv4(f).is_some_and(|ip| ip.proto == 6 && ports(ip.l4).1 == 80)
    });
    let ip = parse_ipv4(&forwarded).unwrap();
    assert_eq!(&forwarded[0..6], &GUEST_MAC);
    assert_eq!((ip.src, ip.dst), (HOST, GUEST));
    assert_eq!(ip.l4[13] & 0x12, 0x02, "a SYN without ACK");

    // The guest connects to the host alias: the test's listener on
    // 127.0.0.1 gets the connection, and the guest a SYN-ACK.
    b.send(&syn(HOST, 40001, host_port));
    let synack = b.expect("SYN-ACK from 10.0.2.2", |f| {
        parse_ipv4(f).is_some_and(|ip| ip.proto == 6 && ports(ip.l4) == (host_port, 40001))
    });
    let ip = parse_ipv4(&synack).unwrap();
    assert_eq!(ip.l4[13] & 0x12, 0x12, "SYN-ACK");
    let until = Instant::now() + DEADLINE;
    let (conn, peer) = loop {
        match listener.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < until, "no connection on the host");
                let mut pfd = libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd, valid for the call.
                unsafe { libc::poll(&mut pfd, 1, 100) };
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    assert!(peer.ip().is_loopback());
    drop(conn);
}

/// `restrict=on`: the guest reaches nothing (its SYN to the host alias is
/// reset, and no connection arrives), but hostfwd still reaches the guest.
#[test]
fn restrict_isolates_the_guest_but_serves_hostfwd() {
    let port = free_port();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let host_port = listener.local_addr().unwrap().port();
    let cfg = Config {
        restrict: true,
        hostfwd: vec![HostFwd {
            udp: false,
            host_addr: Ipv4Addr::LOCALHOST,
            host_port: port,
            guest_addr: GUEST,
            guest_port: 22,
        }],
        ..Config::default()
    };
    let Some(mut b) = Backend::spawn(cfg, "kill", false) else {
        return;
    };
    b.arp_host();
    b.send(&syn(HOST, 40002, host_port));
    let rst = b.expect("RST from 10.0.2.2", |f| {
        parse_ipv4(f).is_some_and(|ip| ip.proto == 6 && ports(ip.l4) == (host_port, 40002))
    });
    assert_ne!(parse_ipv4(&rst).unwrap().l4[13] & 0x04, 0, "not a RST");
    // libslirp answered the SYN without connecting: nothing is pending.
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );

    let _client = TcpStream::connect(("127.0.0.1", port)).expect("hostfwd listener");
    b.expect("the forwarded SYN", |f| {
        parse_ipv4(f).is_some_and(|ip| ip.proto == 6 && ports(ip.l4).1 == 22 && ip.dst == GUEST)
    });
}

/// DNS to 10.0.2.3 goes to the resolver the role names (here a socket of
/// the test's on 127.0.0.1), and its answer comes back from 10.0.2.3:53.
#[test]
fn dns_to_the_alias_reaches_the_host_resolver() {
    let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let SocketAddr::V4(addr) = resolver.local_addr().unwrap() else {
        unreachable!()
    };
    resolver.set_read_timeout(Some(DEADLINE)).unwrap();
    let cfg = Config {
        dns_upstream: Some(addr),
        ..Config::default()
    };
    let Some(mut b) = Backend::spawn(cfg, "kill", false) else {
        return;
    };
    b.arp_host();
    b.send(&udp(GUEST, ALIAS, 40053, 53, b"\x12\x34 a query"));
    let mut buf = [0u8; 512];
    let (n, from) = resolver.recv_from(&mut buf).expect("the query");
    assert_eq!(&buf[..n], b"\x12\x34 a query");
    assert!(from.ip().is_loopback());
    resolver.send_to(b"\x12\x34 an answer", from).unwrap();
    let answer = b.expect("the answer", |f| {
        parse_ipv4(f).is_some_and(|ip| ip.proto == 17 && ip.l4.ends_with(b"an answer"))
    });
    let ip = parse_ipv4(&answer).unwrap();
    assert_eq!((ip.src, ports(ip.l4).0), (ALIAS, 53));
    assert_eq!((ip.dst, ports(ip.l4).1), (GUEST, 40053));
    // Its UDP checksum holds.
    let mut pseudo = [ip.src.octets(), ip.dst.octets()].concat();
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(ip.l4.len() as u16).to_be_bytes());
    assert_eq!(csum(&[pseudo, ip.l4.to_vec()].concat()), 0);
}

/// Under the filter, what makes libslirp look for /etc/resolv.conf (a
/// router solicitation: its advertisement names a DNS server only if the
/// host has an IPv6 one) or complain through glib (a ping to an outside
/// IPv6 address) leaves the process alive and serving; so do frames it
/// must not see.
#[test]
fn libslirp_side_trips_and_bad_frames_do_not_kill_it() {
    let Some(mut b) = Backend::spawn(Config::default(), "kill", false) else {
        return;
    };
    b.arp_host();
    b.send(&router_solicitation());
    let ra = b.expect("router advertisement", |f| {
        f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 134
    });
    // The advertised prefix is fec0::/64.
    assert!(ra.windows(8).any(|w| w == [0xfe, 0xc0, 0, 0, 0, 0, 0, 0]));
    b.send(&external_ping6());
    // A header with unknown flags.
    b.chan.send(&[0xff; 60]).unwrap();
    for bad in [
        vec![0xff; 10],
        eth(SLIRP_MAC, 0x0800, &[0x45; 3000]),
        vec![0x45; 70000],
        eth(SLIRP_MAC, 0x88f8, &[0; 60]),
        // Claims to be IPv4 with a header longer than the frame.
        eth(SLIRP_MAC, 0x0800, &[0x4f, 0, 0xff, 0xff]),
    ] {
        b.send(&bad);
    }
    b.arp_host();
    assert!(b.alive());
}

/// With `violate_seccomp`, the backend makes a forbidden system call once
/// set up and dies by SIGSYS.
#[test]
fn forbidden_system_call_kills_the_backend() {
    let Some(mut b) = Backend::spawn(Config::default(), "kill", true) else {
        return;
    };
    let status = b.wait_exit();
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}");
}

/// The NIC's end of the channel closing ends the backend cleanly.
#[test]
fn hang_up_ends_the_backend() {
    let Some(mut b) = Backend::spawn(Config::default(), "kill", false) else {
        return;
    };
    b.arp_host();
    let (closed, _) = FrameChannel::pair().unwrap();
    drop(std::mem::replace(&mut b.chan, closed));
    let status = b.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// A hostfwd port that is taken ends start-up with exit status 1 and a
/// message naming the rule.
#[test]
fn hostfwd_on_a_taken_port_fails_start_up() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = Config {
        hostfwd: vec![HostFwd {
            udp: false,
            host_addr: Ipv4Addr::LOCALHOST,
            host_port: port,
            guest_addr: GUEST,
            guest_port: 22,
        }],
        ..Config::default()
    };
    let Some(mut b) = Backend::spawn(cfg, "kill", false) else {
        return;
    };
    let status = b.wait_exit();
    assert_eq!(status.code(), Some(1), "{status:?}");
    let stderr = b.stderr();
    assert!(
        stderr.contains(&format!("hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:22")),
        "{stderr}"
    );
}

/// A role that does not parse is refused before anything else happens.
#[test]
fn bad_role_is_refused() {
    let out = std::process::Command::new(BIN)
        .args(["__backend", "spec = 'tap'"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("role"), "{stderr}");
}
