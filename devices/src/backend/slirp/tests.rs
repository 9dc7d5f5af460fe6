//! libslirp behind [`Slirp`], in this process (no jail, no filter: that is
//! main/tests/slirp_process.rs): a test "guest" on the other end of the
//! frame channel. All traffic stays on the loopback interface.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Instant;

use super::*;
use crate::net_offload::hdr::{GSO_TCPV4, NEEDS_CSUM};
use crate::net_offload::tests::assert_checksums;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const ALIAS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
const DEADLINE: Duration = Duration::from_secs(5);

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

/// A UDP datagram in an IPv4 packet in a frame, checksums right.
fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = [src.octets(), dst.octets()].concat();
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    let c = csum(&[pseudo, udp.clone()].concat());
    udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&udp);
    eth([0xff; 6], 0x0800, &ip)
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&GUEST_MAC);
    a.extend_from_slice(&GUEST.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    eth([0xff; 6], 0x0806, &a)
}

/// A DHCPDISCOVER from the guest's MAC.
fn dhcp_discover() -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = 1; // BOOTREQUEST
    b[1] = 1; // Ethernet
    b[2] = 6;
    b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    b[28..34].copy_from_slice(&GUEST_MAC);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[53, 1, 1, 255]);
    udp_frame(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &b)
}

/// An IPv4 UDP frame's (source, destination, source port, destination
/// port, payload), if it is one.
fn parse_udp(f: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u16, u16, &[u8])> {
    if f.len() < 42 || f[12..14] != [8, 0] || f[23] != 17 {
        return None;
    }
    let ip = &f[14..];
    let hl = usize::from(ip[0] & 15) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let udp = &ip[hl..total];
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    // The UDP checksum must verify.
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    assert_eq!(
        csum(&[pseudo, udp.to_vec()].concat()),
        0,
        "bad UDP checksum"
    );
    Some((
        addr(12),
        addr(16),
        u16::from_be_bytes([udp[0], udp[1]]),
        u16::from_be_bytes([udp[2], udp[3]]),
        &udp[8..],
    ))
}

struct Guest {
    chan: FrameChannel,
    slirp: Slirp,
}

impl Guest {
    fn new(cfg: Config) -> Guest {
        let (ours, theirs) = FrameChannel::pair().unwrap();
        Guest {
            chan: ours,
            slirp: Slirp::new(&cfg, theirs).unwrap(),
        }
    }

    /// Sends a wire frame, behind a zero header.
    fn send(&mut self, frame: &[u8]) {
        self.chan.send_frame(&VnetHdr::NONE, frame).unwrap();
    }

    /// Runs one turn of slirp, then hands every message for the guest
    /// (header, frame) to `each`.
    fn turn(&mut self, mut each: impl FnMut(&VnetHdr, &[u8])) {
        assert_eq!(
            self.slirp.run_once(Duration::from_millis(20)).unwrap(),
            Flow::Go
        );
        let mut buf = vec![0u8; RECV_BUF];
        while let Ok(n) = self.chan.recv(&mut buf) {
            let hdr = VnetHdr::parse(&buf[..n]).unwrap();
            each(&hdr, &buf[HDR_LEN..n]);
        }
    }

    /// Runs slirp until a frame for the guest satisfies `want`.
    fn until(&mut self, mut want: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + DEADLINE;
        let mut found = None;
        while found.is_none() {
            assert!(Instant::now() < deadline, "nothing came in time");
            self.turn(|_, f| {
                if found.is_none() && want(f) {
                    found = Some(f.to_vec());
                }
            });
        }
        found.unwrap()
    }
}

#[test]
fn arp_and_dhcp() {
    let mut g = Guest::new(Config::default());
    g.send(&arp_request(HOST));
    let reply = g.until(|f| f[12..14] == [8, 6]);
    assert_eq!(&reply[0..6], &GUEST_MAC);
    assert_eq!(&reply[20..22], &[0, 2], "not an ARP reply");
    assert_eq!(&reply[22..28], &[0x52, 0x55, 10, 0, 2, 2]);
    assert_eq!(&reply[28..32], &HOST.octets());

    g.send(&dhcp_discover());
    let offer = g.until(|f| parse_udp(f).is_some_and(|u| u.2 == 67));
    let (src, _, _, dport, bootp) = parse_udp(&offer).unwrap();
    assert_eq!((src, dport), (HOST, 68));
    assert_eq!(bootp[0], 2, "not a BOOTREPLY");
    assert_eq!(&bootp[16..20], &GUEST.octets(), "yiaddr");
    let options = &bootp[240..];
    let find = |code: u8| {
        let mut at = 0;
        while at + 1 < options.len() && options[at] != 255 {
            if options[at] == code {
                return Some(&options[at + 2..at + 2 + usize::from(options[at + 1])]);
            }
            at += 2 + usize::from(options[at + 1]);
        }
        None
    };
    assert_eq!(find(53), Some(&[2u8][..]), "DHCPOFFER");
    assert_eq!(find(54), Some(&HOST.octets()[..]), "server");
    assert_eq!(find(6), Some(&ALIAS.octets()[..]), "DNS server");
    assert_eq!(g.slirp.stats().from_guest, 2);
}

#[test]
fn dns_to_the_alias_reaches_the_resolver_and_back() {
    let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
    resolver.set_nonblocking(true).unwrap();
    let std::net::SocketAddr::V4(addr) = resolver.local_addr().unwrap() else {
        unreachable!()
    };
    let mut g = Guest::new(Config {
        dns_upstream: Some(addr),
        ..Config::default()
    });
    // Both before the first turn of the loop: the socket for the query
    // must not be taken for expired (libslirp's clock is set then).
    g.send(&arp_request(HOST));
    g.send(&udp_frame(GUEST, ALIAS, 40000, 53, b"a query"));
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + DEADLINE;
    let (n, from) = loop {
        g.slirp.run_once(Duration::from_millis(20)).unwrap();
        if let Ok(got) = resolver.recv_from(&mut buf) {
            break got;
        }
        assert!(Instant::now() < deadline, "the query never arrived");
    };
    assert_eq!(&buf[..n], b"a query");
    resolver.send_to(b"an answer", from).unwrap();
    let answer = g.until(|f| parse_udp(f).is_some_and(|u| u.4 == b"an answer"));
    let (src, dst, sport, dport, _) = parse_udp(&answer).unwrap();
    assert_eq!((src, sport, dst, dport), (ALIAS, 53, GUEST, 40000));
    assert_eq!(g.slirp.stats().dns_redirected, 1);

    // Another port of the alias: dropped here, never reaches the host.
    g.send(&udp_frame(GUEST, ALIAS, 40000, 54, b"no"));
    g.slirp.run_once(Duration::from_millis(20)).unwrap();
    assert_eq!(g.slirp.stats().dns_dropped, 1);
}

/// libslirp's MTU is far larger than the guest's: a long UDP datagram
/// from the host reaches the guest in fragments that fit its MTU.
#[test]
fn a_long_datagram_reaches_the_guest_in_fragments() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_nonblocking(true).unwrap();
    let port = peer.local_addr().unwrap().port();
    let mut g = Guest::new(Config::default());
    g.send(&arp_request(HOST));
    g.send(&udp_frame(GUEST, HOST, 40000, port, b"hello"));
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + DEADLINE;
    let from = loop {
        g.slirp.run_once(Duration::from_millis(20)).unwrap();
        if let Ok((_, from)) = peer.recv_from(&mut buf) {
            break from;
        }
        assert!(Instant::now() < deadline, "the datagram never arrived");
    };
    let answer: Vec<u8> = (0..4000u32).map(|i| (i * 13 % 255) as u8).collect();
    peer.send_to(&answer, from).unwrap();
    // (offset in bytes, more fragments, IP payload) of each fragment.
    let mut fragments = Vec::new();
    while fragments
        .last()
        .is_none_or(|f: &(usize, bool, Vec<u8>)| f.1)
    {
        assert!(Instant::now() < deadline, "{} fragments", fragments.len());
        g.turn(|hdr, f| {
            if f[12..14] != [8, 0] || f[23] != 17 {
                return;
            }
            assert_eq!(*hdr, VnetHdr::NONE);
            assert!(f.len() <= MAX_FRAME, "{} bytes", f.len());
            assert_eq!(csum(&f[14..34]), 0, "IPv4 header checksum");
            let off = u16::from_be_bytes([f[20], f[21]]);
            let len = usize::from(u16::from_be_bytes([f[16], f[17]]));
            fragments.push((
                usize::from(off & 0x1fff) * 8,
                off & 0x2000 != 0,
                f[34..14 + len].to_vec(),
            ));
        });
    }
    let mut datagram = Vec::new();
    for (off, _, data) in &fragments {
        assert_eq!(*off, datagram.len());
        datagram.extend_from_slice(data);
    }
    assert_eq!(fragments.len(), 3);
    assert_eq!(&datagram[2..4], &40000u16.to_be_bytes());
    assert!(datagram[8..] == answer[..]);
    assert_eq!(g.slirp.stats().fragmented, 1);
}

#[test]
fn frames_libslirp_should_not_see_are_dropped() {
    let mut g = Guest::new(Config::default());
    g.send(&[0xff; 13]);
    g.send(&eth([0xff; 6], 0x0800, &[0x45; MAX_FRAME - 14 + 1]));
    g.send(&vec![0xff; RECV_BUF + 100]);
    g.send(&eth([0xff; 6], 0x88f8, &[0; 50])); // NC-SI
    g.send(&eth([0xff; 6], 0x8100, &[0; 50])); // VLAN
                                               // Headers: unknown flags, UDP GSO, a checksum beyond the frame, a GSO
                                               // frame that is no TCP; a message too short for a header.
    let arp = arp_request(HOST);
    let none = VnetHdr::NONE;
    for hdr in [
        VnetHdr {
            flags: 0x40,
            ..none
        },
        VnetHdr {
            gso_type: 3,
            gso_size: 1000,
            ..none
        },
        VnetHdr {
            flags: NEEDS_CSUM,
            csum_start: 40,
            csum_offset: 6,
            ..none
        },
        VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1000,
            ..none
        },
    ] {
        g.chan.send_frame(&hdr, &arp).unwrap();
    }
    g.chan.send(&[0; HDR_LEN - 1]).unwrap();
    g.slirp.run_once(Duration::from_millis(20)).unwrap();
    let stats = g.slirp.stats();
    assert_eq!(
        (
            stats.runts,
            stats.oversize,
            stats.other_types,
            stats.bad_headers,
            stats.from_guest
        ),
        (1, 2, 2, 5, 0),
        "{stats:?}"
    );
    // And the instance still works.
    g.send(&arp_request(HOST));
    g.until(|f| f[12..14] == [8, 6]);
}

#[test]
fn the_guest_hanging_up_stops_the_loop() {
    let (ours, theirs) = FrameChannel::pair().unwrap();
    let mut slirp = Slirp::new(&Config::default(), theirs).unwrap();
    assert_eq!(slirp.run_once(Duration::ZERO).unwrap(), Flow::Go);
    drop(ours);
    let started = Instant::now();
    slirp.run().unwrap();
    assert!(started.elapsed() < DEADLINE);
}

#[test]
fn timers_fire_once_when_due_and_not_when_freed() {
    let (_ours, theirs) = FrameChannel::pair().unwrap();
    let mut slirp = Slirp::new(&Config::default(), theirs).unwrap();
    let fired = Rc::new(Cell::new(0));
    let count = |fired: &Rc<Cell<i32>>| {
        let fired = fired.clone();
        Box::new(move || fired.set(fired.get() + 1)) as Box<dyn FnMut()>
    };
    let mut due = slirp.shared.borrow_mut().timer_new(count(&fired));
    let mut later = slirp.shared.borrow_mut().timer_new(count(&fired));
    let freed = slirp.shared.borrow_mut().timer_new(count(&fired));
    let now_ms = now_ns() / 1_000_000;
    slirp.shared.borrow_mut().timer_mod(&mut due, now_ms - 1);
    slirp
        .shared
        .borrow_mut()
        .timer_mod(&mut later, now_ms + 60_000);
    slirp.shared.borrow_mut().timer_free(freed);
    assert_eq!(slirp.next_timer_ms(), Some(now_ms - 1));
    slirp.run_timers();
    assert_eq!(fired.get(), 1);
    slirp.run_timers();
    assert_eq!(fired.get(), 1, "fired twice");
    assert_eq!(slirp.next_timer_ms(), Some(now_ms + 60_000));
    // Due again after another timer_mod.
    slirp.shared.borrow_mut().timer_mod(&mut due, now_ms);
    slirp.run_timers();
    assert_eq!(fired.get(), 2);
}

#[test]
fn config_check() {
    assert!(Config::default().check().is_ok());
    let long = Config {
        bootfile: Some("x".repeat(128)),
        ..Config::default()
    };
    assert!(long.check().unwrap_err().to_string().contains("bootfile"));
    let nul = Config {
        hostname: Some("a\0b".into()),
        ..Config::default()
    };
    assert!(nul.check().is_err());
    let wide = Config {
        prefix_len: 31,
        ..Config::default()
    };
    assert!(wide.check().is_err());
    assert_eq!(Config::default().netmask(), Ipv4Addr::new(255, 255, 255, 0));
}

#[test]
fn hostfwd_in_use_is_an_error_naming_the_rule() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (_ours, theirs) = FrameChannel::pair().unwrap();
    let rule = HostFwd {
        udp: false,
        host_addr: Ipv4Addr::LOCALHOST,
        host_port: port,
        guest_addr: GUEST,
        guest_port: 22,
    };
    let mut slirp = Slirp::new(
        &Config {
            hostfwd: vec![rule],
            ..Config::default()
        },
        theirs,
    )
    .unwrap();
    let e = slirp.add_hostfwds().unwrap_err().to_string();
    assert!(
        e.contains(&format!("hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:22")),
        "{e}"
    );
}

/// libslirp's MAC for the host alias.
const SLIRP_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// A TCP segment from the guest to the host alias. With `partial`, the
/// checksum field holds only the pseudo-header's sum, as a guest leaves it
/// for NEEDS_CSUM.
fn tcp_frame(
    ports: (u16, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
    partial: bool,
) -> Vec<u8> {
    // An MSS option on the SYN.
    let options: &[u8] = if flags & SYN != 0 {
        &[2, 4, 0x05, 0xb4]
    } else {
        &[]
    };
    let mut t = Vec::new();
    t.extend_from_slice(&ports.0.to_be_bytes());
    t.extend_from_slice(&ports.1.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[
        ((20 + options.len()) as u8 / 4) << 4,
        flags,
        0xff,
        0xff,
        0,
        0,
        0,
        0,
    ]);
    t.extend_from_slice(options);
    t.extend_from_slice(payload);
    let mut pseudo = [GUEST.octets(), HOST.octets()].concat();
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    let c = if partial {
        !csum(&pseudo)
    } else {
        csum(&[pseudo, t.clone()].concat())
    };
    t[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 7, 0x40, 0, 64, 6, 0, 0];
    ip[2..4].copy_from_slice(&((20 + t.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&GUEST.octets());
    ip.extend_from_slice(&HOST.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&t);
    eth(SLIRP_MAC, 0x0800, &ip)
}

/// A listener on `addr` (port 0: any), not blocking, and its port.
fn listen(addr: &str) -> (TcpListener, u16) {
    let listener = TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Turns slirp until the host's `listener` has a connection, and takes it.
fn accept_on_host(g: &mut Guest, listener: &TcpListener) -> TcpStream {
    let deadline = Instant::now() + DEADLINE;
    loop {
        g.turn(|_, _| {});
        if let Ok((s, _)) = listener.accept() {
            return s;
        }
        assert!(Instant::now() < deadline, "no connection on the host");
    }
}

/// A TCP segment's (sequence number, ACK number, flags, payload).
type Segment<'f> = (u32, u32, u8, &'f [u8]);
/// Reads a frame to the guest's port as a [`Segment`], its checksums
/// checked; None for any other frame.
type ToGuest = dyn for<'f> Fn(&'f [u8]) -> Option<Segment<'f>>;
/// Makes a segment from the guest: (seq, ack, flags, payload, partial
/// checksum), as `tcp_frame`.
type FromGuest = dyn Fn(u32, u32, u8, &[u8], bool) -> Vec<u8>;

/// A TCP flow as the test guest sees it: which frames are its segments,
/// and how it makes its own.
struct GuestTcp<'a> {
    to_guest: &'a ToGuest,
    from_guest: &'a FromGuest,
    /// The guest's MSS, the GSO type its GSO frames have.
    mss: u16,
    gso_type: u8,
}

impl GuestTcp<'_> {
    /// The handshake, `down` bytes from the host to the guest, then `up`
    /// bytes the other way in one GSO frame.
    fn both_ways(&self, g: &mut Guest, listener: &TcpListener, isn: u32, down: u32, up: u32) {
        let (mut host, next) = self.connect(g, listener, isn);
        let data: Vec<u8> = (0..down).map(|i| (i * 31 % 251) as u8).collect();
        let next = self.receive(g, &host, &data, isn + 1, next);
        let payload: Vec<u8> = (0..up).map(|i| (i * 7 % 253) as u8).collect();
        self.send_gso(g, &mut host, &payload, isn + 1, next);
    }

    /// The handshake from the guest's side with initial sequence number
    /// `isn`; the host's connection, and the sequence number it goes on
    /// from.
    fn connect(&self, g: &mut Guest, listener: &TcpListener, isn: u32) -> (TcpStream, u32) {
        g.send(&(self.from_guest)(isn, 0, SYN, &[], false));
        let synack = g.until(|f| (self.to_guest)(f).is_some_and(|t| t.2 == SYN | ACK));
        let next = (self.to_guest)(&synack).unwrap().0.wrapping_add(1);
        g.send(&(self.from_guest)(isn + 1, next, ACK, &[], false));
        (accept_on_host(g, listener), next)
    }

    /// `data` written on the host's end arrives in order, GSO frames cut
    /// back into segments no longer than the guest's MSS; the guest ACKs
    /// as it goes (its sequence number `seq`). Returns the sequence number
    /// after the data (`next` is the one before).
    fn receive(
        &self,
        g: &mut Guest,
        host: &TcpStream,
        data: &[u8],
        seq: u32,
        mut next: u32,
    ) -> u32 {
        let writer = {
            let (data, mut host) = (data.to_vec(), host.try_clone().unwrap());
            std::thread::spawn(move || host.write_all(&data).unwrap())
        };
        let deadline = Instant::now() + DEADLINE;
        let mut got = Vec::new();
        let mut seg = Vec::new();
        while got.len() < data.len() {
            assert!(
                Instant::now() < deadline,
                "{} of {} bytes",
                got.len(),
                data.len()
            );
            let before = got.len();
            g.turn(|hdr, f| {
                let mut wire = vec![f.to_vec()];
                if hdr.is_gso() {
                    assert_eq!(hdr.gso_type, self.gso_type);
                    let split = Segments::new(hdr, f).unwrap();
                    wire = (0..split.count())
                        .map(|k| {
                            split.build(f, k, &mut seg).unwrap();
                            seg.clone()
                        })
                        .collect();
                }
                for w in &wire {
                    if let Some((s, _, _, payload)) = (self.to_guest)(w) {
                        // libslirp's segments are longer; the guest's are
                        // the MSS it asked for.
                        assert!(payload.len() <= usize::from(self.mss), "{}", payload.len());
                        if s == next {
                            got.extend_from_slice(payload);
                            next = next.wrapping_add(payload.len() as u32);
                        }
                    }
                }
            });
            if got.len() > before {
                g.send(&(self.from_guest)(seq, next, ACK, &[], false));
            }
        }
        writer.join().unwrap();
        assert!(got == data);
        assert!(g.slirp.stats().gso_to_guest > 0, "{:?}", g.slirp.stats());
        next
    }

    /// `payload` sent as one GSO frame (sequence number `seq`, ACKing
    /// `ack`) arrives on the host, and libslirp, which took it whole (it
    /// checks every checksum), ACKs it once.
    fn send_gso(&self, g: &mut Guest, host: &mut TcpStream, payload: &[u8], seq: u32, ack: u32) {
        let frame = (self.from_guest)(seq, ack, ACK | PSH, payload, true);
        let layout = crate::net_offload::TcpLayout::parse(&frame).unwrap();
        let hdr = VnetHdr::tcp_gso(&layout, self.mss - 12);
        g.chan.send_frame(&hdr, &frame).unwrap();
        host.set_nonblocking(true).unwrap();
        // The ACKs libslirp sends, as bytes acknowledged of the frame.
        let acked = |f: &[u8]| {
            let (_, a, flags, body) = (self.to_guest)(f)?;
            let n = a.wrapping_sub(seq);
            (flags == ACK && body.is_empty() && n > 0 && n < 1 << 30).then_some(n)
        };
        let deadline = Instant::now() + DEADLINE;
        let mut received = Vec::new();
        let mut buf = [0u8; 65536];
        let mut acks = Vec::new();
        while received.len() < payload.len() || acks.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} bytes on the host, ACKs {acks:?}",
                received.len()
            );
            g.turn(|_, f| acks.extend(acked(f)));
            if let Ok(n) = host.read(&mut buf) {
                received.extend_from_slice(&buf[..n]);
            }
        }
        assert!(received == payload);
        // Taken whole: one ACK for all of it, not one per segment.
        assert_eq!(acks, [payload.len() as u32]);
        let stats = g.slirp.stats();
        assert_eq!(
            (stats.gso_from_guest, stats.bad_headers),
            (1, 0),
            "{stats:?}"
        );
    }
}

/// A TCP segment's (sequence number, ACK number, flags, payload) if `f`
/// is an IPv4 one to the guest's port `port`; checks its checksums.
fn tcp_to(f: &[u8], port: u16) -> Option<Segment<'_>> {
    if f.len() < 54 || f[12..14] != [8, 0] || f[23] != 6 {
        return None;
    }
    let l4 = 14 + usize::from(f[14] & 15) * 4;
    let t = &f[l4..];
    if u16::from_be_bytes([t[2], t[3]]) != port {
        return None;
    }
    assert_checksums(f, "to the guest");
    Some(segment(t))
}

/// The (sequence number, ACK number, flags, payload) of TCP segment `t`.
fn segment(t: &[u8]) -> Segment<'_> {
    let word = |at: usize| u32::from_be_bytes(t[at..at + 4].try_into().unwrap());
    (word(4), word(8), t[13], &t[usize::from(t[12] >> 4) * 4..])
}

/// A guest's TCP connection through libslirp to a listener on the host:
/// what the host sends comes in coalesced GSO frames that segment back
/// into right wire frames; what the guest sends in one GSO frame libslirp
/// takes as one segment and ACKs once.
#[test]
fn tcp_both_ways_with_offloads() {
    let (listener, port) = listen("127.0.0.1:0");
    let ports = (40000, port);
    let mut g = Guest::new(Config::default());
    g.send(&arp_request(HOST));
    g.until(|f| f[12..14] == [8, 6]);
    let tcp = GuestTcp {
        to_guest: &move |f| tcp_to(f, ports.0),
        from_guest: &move |seq, ack, flags, payload, partial| {
            tcp_frame(ports, seq, ack, flags, payload, partial)
        },
        mss: 1460,
        gso_type: GSO_TCPV4,
    };
    tcp.both_ways(&mut g, &listener, 1000, 300_000, 30_000);
}

mod ipv6;
