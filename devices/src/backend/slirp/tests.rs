//! libslirp behind [`Slirp`], in this process (no jail, no filter: that is
//! main/tests/slirp_process.rs): a test "guest" on the other end of the
//! frame channel. All traffic stays on the loopback interface.

use std::cell::Cell;
use std::net::UdpSocket;
use std::time::Instant;

use super::*;

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

    fn send(&mut self, frame: &[u8]) {
        self.chan.send(frame).unwrap();
    }

    /// Runs slirp until a frame for the guest satisfies `want` (answering
    /// its ARP requests for the guest on the way), or `side` says stop.
    fn until(&mut self, mut want: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + DEADLINE;
        let mut buf = [0u8; 2048];
        loop {
            assert!(Instant::now() < deadline, "nothing came in time");
            assert_eq!(
                self.slirp.run_once(Duration::from_millis(20)).unwrap(),
                Flow::Go
            );
            while let Ok(n) = self.chan.recv(&mut buf) {
                let f = &buf[..n];
                if want(f) {
                    return f.to_vec();
                }
            }
        }
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

#[test]
fn frames_libslirp_should_not_see_are_dropped() {
    let mut g = Guest::new(Config::default());
    g.send(&[0xff; 13]);
    g.send(&eth([0xff; 6], 0x0800, &[0x45; MAX_FRAME - 14 + 1]));
    g.send(&vec![0xff; RECV_BUF + 100]);
    g.send(&eth([0xff; 6], 0x88f8, &[0; 50])); // NC-SI
    g.send(&eth([0xff; 6], 0x8100, &[0; 50])); // VLAN
    g.slirp.run_once(Duration::from_millis(20)).unwrap();
    let stats = g.slirp.stats();
    assert_eq!(
        (
            stats.runts,
            stats.oversize,
            stats.other_types,
            stats.from_guest
        ),
        (1, 2, 2, 0),
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
