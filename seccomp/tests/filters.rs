//! Real filters on real processes: the test binary re-executes itself in a
//! child role (named by an environment variable) that installs a filter and
//! then does allowed or forbidden things; the parent checks how it ended.
//!
//! `harness = false`: libtest runs every test on a thread of its own and
//! keeps its own threads busy meanwhile, which a filter installed with TSYNC
//! would also cover. Here the child runs exactly what its role says. The
//! small runner below prints libtest's summary line.

use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use seccomp::{install, Mode, ProcessKind};

/// Names the child role; unset in the parent.
const ROLE: &str = "SECCOMP_TEST_ROLE";

const TESTS: &[(&str, fn())] = &[
    ("nic_allows_its_steady_state", nic_allows_its_steady_state),
    ("nic_dies_on_openat", || assert_killed("nic-openat")),
    ("nic_dies_on_socket", || assert_killed("nic-socket")),
    ("nic_dies_on_execve", || assert_killed("nic-execve")),
    ("nic_dies_on_a_terminal_ioctl", || {
        assert_killed("nic-tcgets")
    }),
    ("nic_dies_on_executable_mmap", || {
        assert_killed("nic-mmap-exec")
    }),
    ("nic_dies_on_fcntl_setown", || assert_killed("nic-setown")),
    ("nic_dies_starting_a_thread", || assert_killed("nic-thread")),
    ("tsync_covers_earlier_threads", || {
        assert_killed("nic-tsync")
    }),
    (
        "log_mode_lets_a_forbidden_call_through",
        log_mode_lets_a_forbidden_call_through,
    ),
    ("nic_panic_message_gets_out", nic_panic_message_gets_out),
    ("vcpu_allows_its_steady_state", vcpu_allows_its_steady_state),
    ("vcpu_dies_on_openat", || assert_killed("vcpu-openat")),
    ("vcpu_dies_on_socket", || assert_killed("vcpu-socket")),
    ("vcpu_dies_on_tgkill_with_another_signal", || {
        assert_killed("vcpu-tgkill")
    }),
    (
        "slirp_allows_its_steady_state",
        slirp_allows_its_steady_state,
    ),
    ("slirp_refuses_file_lookups", slirp_refuses_file_lookups),
    ("slirp_dies_on_a_unix_socket", || {
        assert_killed("slirp-unix-socket")
    }),
    ("slirp_dies_on_bind", || assert_killed("slirp-bind")),
    ("slirp_dies_on_execve", || assert_killed("slirp-execve")),
    ("slirp_dies_on_a_foreign_socket_option", || {
        assert_killed("slirp-sockopt")
    }),
];

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child_role(&role);
        std::process::exit(0);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let (mut passed, mut failed, mut filtered) = (0, 0, 0);
    println!("\nrunning {} tests", TESTS.len());
    for (name, test) in TESTS {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            filtered += 1;
            continue;
        }
        let result = std::panic::catch_unwind(test);
        println!(
            "test {name} ... {}",
            if result.is_ok() { "ok" } else { "FAILED" }
        );
        match result {
            Ok(()) => passed += 1,
            Err(_) => failed += 1,
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; {filtered} filtered out\n"
    );
    std::process::exit(if failed == 0 { 0 } else { 101 });
}

// ---------------------------------------------------------------- parent side

fn run(role: &str) -> Output {
    Command::new("/proc/self/exe")
        .env(ROLE, role)
        // Printing a backtrace reads files (symbols): not under a filter.
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run the child")
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The role installed its filter, then died by SIGSYS on the forbidden call
/// (and not before: it said "installed"; nor after: no "survived").
fn assert_killed(role: &str) {
    let out = run(role);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "{role}: {}",
        describe(&out)
    );
    assert!(stdout.contains("installed"), "{role}: {}", describe(&out));
    assert!(!stdout.contains("survived"), "{role}: {}", describe(&out));
}

/// The role ran to its end and exited 0.
fn assert_clean(role: &str) -> String {
    let out = run(role);
    assert!(out.status.success(), "{role}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nic_allows_its_steady_state() {
    let stdout = assert_clean("nic-allowed");
    assert!(stdout.contains("all allowed"), "{stdout}");
}

fn log_mode_lets_a_forbidden_call_through() {
    let stdout = assert_clean("nic-log");
    assert!(stdout.contains("survived"), "{stdout}");
}

/// A panic under the filter still says why on stderr (the message needs
/// the thread's OS id), and the process ends by unwinding as usual. (A
/// backtrace, which reads files, would not get out.)
fn nic_panic_message_gets_out() {
    let out = run("nic-panic");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{}", describe(&out));
    assert!(
        stderr.contains("device model gave up"),
        "{}",
        describe(&out)
    );
}

fn slirp_allows_its_steady_state() {
    let stdout = assert_clean("slirp-allowed");
    assert!(stdout.contains("all allowed"), "{stdout}");
}

/// Opening or looking up a file fails with ENOENT and the process lives
/// on, in kill mode and in log mode alike.
fn slirp_refuses_file_lookups() {
    for role in ["slirp-refused", "slirp-refusedlog"] {
        let stdout = assert_clean(role);
        assert!(stdout.contains("refused with ENOENT"), "{role}: {stdout}");
    }
}

fn vcpu_allows_its_steady_state() {
    let stdout = assert_clean("vcpu-allowed");
    assert!(stdout.contains("all allowed"), "{stdout}");
}

// ----------------------------------------------------------------- child side

fn child_role(role: &str) {
    let (kind, what) = role.split_once('-').expect("kind-what");
    let kind = match kind {
        "nic" => ProcessKind::VirtioNet,
        "vcpu" => ProcessKind::Vcpu,
        "slirp" => ProcessKind::Slirp,
        _ => panic!("unknown kind in {role}"),
    };
    match what {
        "allowed" if kind == ProcessKind::VirtioNet => nic_steady_state(),
        "allowed" if kind == ProcessKind::Slirp => slirp_steady_state(),
        "refused" | "refusedlog" => {
            installed(
                kind,
                if what == "refused" {
                    Mode::Kill
                } else {
                    Mode::Log
                },
            );
            file_lookups_refused();
        }
        "allowed" => vcpu_steady_state(),
        "log" => {
            installed(kind, Mode::Log);
            let fd = openat_root();
            println!("survived: openat gave {fd}");
        }
        "panic" => {
            installed(kind, Mode::Kill);
            panic!("device model gave up");
        }
        "tsync" => {
            // A thread started before the filter, forbidden call after it.
            let (go, wait) = mpsc::channel::<()>();
            let t = std::thread::spawn(move || {
                wait.recv().unwrap();
                openat_root();
            });
            installed(kind, Mode::Kill);
            go.send(()).unwrap();
            let _ = t.join();
            println!("survived");
        }
        forbidden => {
            installed(kind, Mode::Kill);
            forbidden_call(forbidden);
            println!("survived");
        }
    }
}

/// Installs the filter and says so on stdout.
fn installed(kind: ProcessKind, mode: Mode) {
    install(kind, mode).expect("install");
    println!("installed");
    std::io::stdout().flush().unwrap();
}

fn openat_root() -> i64 {
    // SAFETY: a plain system call on a constant, NUL-terminated path.
    unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            libc::O_RDONLY,
        )
    }
}

/// One call the list forbids, made directly so that nothing else runs first.
fn forbidden_call(what: &str) {
    // SAFETY (all arms): raw system calls with integer arguments or pointers
    // to live locals and constant strings; each is expected to kill us.
    unsafe {
        match what {
            "openat" => {
                openat_root();
            }
            "socket" => {
                libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0);
            }
            "execve" => {
                let argv = [c"true".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null::<libc::c_char>()];
                libc::syscall(
                    libc::SYS_execve,
                    c"/bin/true".as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                );
            }
            "tcgets" => {
                let mut t: libc::termios = std::mem::zeroed();
                libc::syscall(
                    libc::SYS_ioctl,
                    0,
                    libc::TCGETS,
                    &mut t as *mut libc::termios,
                );
            }
            "mmap-exec" => {
                libc::syscall(
                    libc::SYS_mmap,
                    0usize,
                    4096usize,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0usize,
                );
            }
            "setown" => {
                libc::syscall(libc::SYS_fcntl, 1, libc::F_SETOWN, 1);
            }
            "thread" => {
                let _ = std::thread::spawn(|| {}).join();
            }
            "tgkill" => {
                libc::syscall(libc::SYS_tgkill, 1, 1, libc::SIGUSR1);
            }
            "unix-socket" => {
                libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0);
            }
            "bind" => {
                let addr = sockaddr_in(std::net::Ipv4Addr::LOCALHOST, 0);
                libc::syscall(
                    libc::SYS_bind,
                    3,
                    &addr as *const libc::sockaddr_in,
                    size_of::<libc::sockaddr_in>(),
                );
            }
            "sockopt" => {
                let on: libc::c_int = 1;
                libc::syscall(
                    libc::SYS_setsockopt,
                    3,
                    libc::SOL_SOCKET,
                    libc::SO_BROADCAST,
                    &on as *const libc::c_int,
                    size_of::<libc::c_int>(),
                );
            }
            _ => panic!("unknown forbidden call {what}"),
        }
    }
}

fn sockaddr_in(ip: std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// What libslirp does to find the host's DNS server: each call fails with
/// ENOENT, and the process goes on.
fn file_lookups_refused() {
    let path = c"/etc/resolv.conf".as_ptr();
    // The result and errno of one raw call.
    let call = |name: &str, r: i64| {
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((r, errno), (-1, Some(libc::ENOENT)), "{name}");
    };
    // SAFETY: plain system calls on a constant path; the stat buffers are
    // locals of the right size.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let mut stx: libc::statx = std::mem::zeroed();
        call(
            "openat",
            libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path, libc::O_RDONLY),
        );
        // "/" exists: the refusal, not the file system, answers.
        call(
            "openat /",
            libc::syscall(libc::SYS_openat, libc::AT_FDCWD, c"/".as_ptr(), 0),
        );
        call("open", libc::syscall(libc::SYS_open, path, libc::O_RDONLY));
        call(
            "newfstatat",
            libc::syscall(
                libc::SYS_newfstatat,
                libc::AT_FDCWD,
                path,
                &mut st as *mut libc::stat,
                0,
            ),
        );
        call(
            "stat",
            libc::syscall(libc::SYS_stat, path, &mut st as *mut libc::stat),
        );
        call(
            "statx",
            libc::syscall(
                libc::SYS_statx,
                libc::AT_FDCWD,
                path,
                0,
                libc::STATX_BASIC_STATS,
                &mut stx as *mut libc::statx,
            ),
        );
    }
    println!("refused with ENOENT");
}

/// What the slirp process does once running, all under the Kill filter:
/// the frame channel, a UDP exchange and a TCP connection over loopback
/// (accepted on a listener made before the filter), libslirp's socket
/// options, poll.
fn slirp_steady_state() {
    use std::net::{Ipv4Addr, TcpListener, UdpSocket};
    let (frames_a, frames_b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let peer_port = peer.local_addr().unwrap().port();

    installed(ProcessKind::Slirp, Mode::Kill);

    // A frame each way over the channel.
    sendmsg::<()>(
        frames_a.as_raw_fd(),
        &[IoSlice::new(&[0xffu8; 60])],
        &[],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .unwrap();
    let mut pfd = [PollFd::new(frames_b.as_fd(), PollFlags::POLLIN)];
    assert_eq!(poll(&mut pfd, PollTimeout::from(1000u16)).unwrap(), 1);
    let mut buf = [0u8; 1514];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(frames_b.as_raw_fd(), &mut iov, None, MsgFlags::MSG_DONTWAIT).unwrap();
    assert_eq!(msg.bytes, 60);

    // SAFETY (the block): raw socket calls on descriptors made here, with
    // pointers to live locals of the sizes given.
    unsafe {
        let int = size_of::<libc::c_int>() as libc::socklen_t;
        let on: libc::c_int = 1;
        let setopt = |fd: i32, level: i32, name: i32| {
            assert_eq!(
                libc::setsockopt(fd, level, name, (&on as *const libc::c_int).cast(), int),
                0,
                "setsockopt {level}/{name}: {}",
                std::io::Error::last_os_error()
            );
        };

        // UDP, as libslirp forwards the guest's datagrams.
        let udp = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(udp >= 0);
        let fl = libc::fcntl(udp, libc::F_GETFL);
        assert_eq!(libc::fcntl(udp, libc::F_SETFL, fl | libc::O_NONBLOCK), 0);
        setopt(udp, libc::IPPROTO_IP, libc::IP_RECVERR);
        setopt(udp, libc::IPPROTO_IP, libc::IP_TTL);
        let to = sockaddr_in(Ipv4Addr::LOCALHOST, peer_port);
        let sl = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let n = libc::sendto(
            udp,
            b"ping".as_ptr().cast(),
            4,
            0,
            (&to as *const libc::sockaddr_in).cast(),
            sl,
        );
        assert_eq!(n, 4);
        let (got, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"ping");
        peer.send_to(b"pong", from).unwrap();
        let mut pfd = libc::pollfd {
            fd: udp,
            events: libc::POLLIN,
            revents: 0,
        };
        assert_eq!(libc::poll(&mut pfd, 1, 1000), 1);
        let mut waiting: libc::c_int = 0;
        assert_eq!(libc::ioctl(udp, libc::FIONREAD, &mut waiting), 0);
        assert_eq!(waiting, 4);
        let mut src: libc::sockaddr_in = std::mem::zeroed();
        let mut srclen = sl;
        let n = libc::recvfrom(
            udp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut src as *mut libc::sockaddr_in).cast(),
            &mut srclen,
        );
        assert_eq!(&buf[..n as usize], b"pong");
        libc::close(udp);

        // TCP out (non-blocking connect), and in through the listener.
        let tcp = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        setopt(tcp, libc::SOL_SOCKET, libc::SO_OOBINLINE);
        setopt(tcp, libc::IPPROTO_TCP, libc::TCP_NODELAY);
        let to = sockaddr_in(Ipv4Addr::LOCALHOST, port);
        let r = libc::connect(tcp, (&to as *const libc::sockaddr_in).cast(), sl);
        assert!(
            r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EINPROGRESS)
        );
        let mut pfd = libc::pollfd {
            fd: tcp,
            events: libc::POLLOUT,
            revents: 0,
        };
        assert_eq!(libc::poll(&mut pfd, 1, 1000), 1);
        let mut err: libc::c_int = -1;
        let mut len = int;
        libc::getsockopt(
            tcp,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        );
        assert_eq!(err, 0);
        let mut peer_addr: libc::sockaddr_in = std::mem::zeroed();
        let mut plen = sl;
        let conn = libc::accept(
            listener.as_raw_fd(),
            (&mut peer_addr as *mut libc::sockaddr_in).cast(),
            &mut plen,
        );
        assert!(conn >= 0, "accept: {}", std::io::Error::last_os_error());
        assert_eq!(
            libc::getsockname(
                conn,
                (&mut peer_addr as *mut libc::sockaddr_in).cast(),
                &mut plen
            ),
            0
        );
        assert_eq!(
            libc::getpeername(
                conn,
                (&mut peer_addr as *mut libc::sockaddr_in).cast(),
                &mut plen
            ),
            0
        );
        assert_eq!(libc::send(tcp, b"data".as_ptr().cast(), 4, 0), 4);
        assert_eq!(libc::recv(conn, buf.as_mut_ptr().cast(), buf.len(), 0), 4);
        assert_eq!(libc::shutdown(tcp, libc::SHUT_WR), 0);
        libc::close(conn);
        libc::close(tcp);

        // IPv6 too.
        let v6 = libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(v6 >= 0);
        setopt(v6, libc::IPPROTO_IPV6, libc::IPV6_RECVERR);
        libc::close(v6);
    }
    println!("all allowed");
}

/// A tap in a network namespace of our own (so the host sees nothing), or
/// None where /dev/net/tun is missing.
fn private_tap() -> Option<OwnedFd> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
    use std::os::unix::fs::OpenOptionsExt;
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .ok()?;
    // struct ifreq: a 16-byte name, then the flags (a short).
    let mut ifr = [0u8; 40];
    ifr[..7].copy_from_slice(b"mvtest0");
    let flags: u16 = 0x0002 | 0x1000 | 0x4000; // IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    const TUNSETIFF: u64 = 0x400454ca;
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` holds.
    let r = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, ifr.as_mut_ptr()) };
    (r == 0).then(|| tun.into())
}

/// What a NIC process does once running, all under the Kill filter.
fn nic_steady_state() {
    // Set up before the filter, as the real process would: tap, IPC socket,
    // eventfds, epoll, and a helper thread.
    let tap = private_tap();
    let (ipc_a, ipc_b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let notify = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).unwrap();
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
    let shared = Arc::new((Mutex::new(0u32), Condvar::new()));
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let helper = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let mut total = 0;
            for buf in rx {
                total += buf.len();
            }
            let (lock, cv) = &*shared;
            *lock.lock().unwrap() += 1;
            cv.notify_all();
            total
        })
    };

    installed(ProcessKind::VirtioNet, Mode::Kill);

    // Event loop: an eventfd kick seen through epoll.
    epoll
        .add(&notify, EpollEvent::new(EpollFlags::EPOLLIN, 7))
        .unwrap();
    notify.write(1).unwrap();
    let mut events = [EpollEvent::empty(); 4];
    let n = epoll
        .wait(&mut events, EpollTimeout::from(1000u16))
        .unwrap();
    assert_eq!((n, events[0].data()), (1, 7));
    assert_eq!(notify.read().unwrap(), 1);
    epoll.delete(&notify).unwrap();

    // A new eventfd at activation, passed over IPC with SCM_RIGHTS.
    let irq = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).unwrap();
    let fds = [irq.as_fd().as_raw_fd()];
    let payload = [1u8, 2, 3];
    sendmsg::<()>(
        ipc_a.as_raw_fd(),
        &[IoSlice::new(&payload)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .unwrap();
    let mut pfd = [PollFd::new(ipc_b.as_fd(), PollFlags::POLLIN)];
    assert_eq!(poll(&mut pfd, PollTimeout::from(1000u16)).unwrap(), 1);
    let mut buf = [0u8; 16];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        ipc_b.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    let received = match msg.cmsgs().unwrap().next() {
        // SAFETY: SCM_RIGHTS just gave us this descriptor; we own it.
        Some(ControlMessageOwned::ScmRights(fds)) => unsafe { OwnedFd::from_raw_fd(fds[0]) },
        other => panic!("no descriptor: {other:?}"),
    };
    // Descriptor flags, a duplicate, and closing both.
    let fl = fcntl(&received, FcntlArg::F_GETFL).unwrap();
    fcntl(
        &received,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK),
    )
    .unwrap();
    fcntl(&received, FcntlArg::F_GETFD).unwrap();
    let dup = received.try_clone().unwrap();
    // Signalling the "irqfd" through the received copy.
    nix::unistd::write(&dup, &1u64.to_ne_bytes()).unwrap();
    assert_eq!(irq.read().unwrap(), 1);
    drop((dup, received));
    // Rust's set_nonblocking on a socket (ioctl FIONBIO).
    let on: libc::c_int = 1;
    // SAFETY: FIONBIO reads one int.
    assert_eq!(
        unsafe { libc::ioctl(ipc_a.as_raw_fd(), libc::FIONBIO, &on) },
        0
    );

    // The tap: feature-driven ioctls, a frame out, a read attempt.
    if let Some(tap) = &tap {
        let hdr: libc::c_int = 12;
        let offloads: libc::c_ulong = 0x01; // TUN_F_CSUM, passed by value
                                            // SAFETY: TUNSETVNETHDRSZ reads one int; TUNSETOFFLOAD reads nothing.
        unsafe {
            let fd = tap.as_raw_fd();
            assert_eq!(
                libc::ioctl(fd, seccomp::ioctls::TUNSETVNETHDRSZ as _, &hdr),
                0
            );
            assert_eq!(
                libc::ioctl(fd, seccomp::ioctls::TUNSETOFFLOAD as _, offloads),
                0
            );
        }
        let vnet_hdr = [0u8; 12];
        let frame = [0xffu8; 60];
        // The interface is down, so the kernel may refuse the frame (EIO);
        // what matters is that the calls are allowed.
        let _ = nix::sys::uio::writev(tap, &[IoSlice::new(&vnet_hdr), IoSlice::new(&frame)]);
        let mut rx_hdr = [0u8; 12];
        let mut rx_frame = [0u8; 1514];
        let _ = nix::sys::uio::readv(
            tap,
            &mut [IoSliceMut::new(&mut rx_hdr), IoSliceMut::new(&mut rx_frame)],
        );
        let _ = nix::unistd::read(tap, &mut rx_frame);
        println!("tap: exercised");
    } else {
        println!("tap: skipped (no /dev/net/tun)");
    }

    // The allocator: small and large blocks, a growing large block.
    let small: Vec<Box<[u8; 64]>> = (0..1000).map(|_| Box::new([1u8; 64])).collect();
    let mut large = vec![0u8; 1 << 20];
    large.resize(8 << 20, 1);
    let map: std::collections::HashMap<u32, u32> = (0..100).map(|i| (i, i)).collect();
    drop((small, large, map));

    // Time, yielding, the helper thread's work, exit and join.
    let start = Instant::now();
    std::thread::yield_now();
    for _ in 0..10 {
        tx.send(vec![0u8; 256 << 10]).unwrap();
    }
    drop(tx);
    let (lock, cv) = &*shared;
    let guard = cv
        .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(5), |n| *n == 0)
        .unwrap()
        .0;
    assert_eq!(*guard, 1);
    drop(guard);
    assert_eq!(helper.join().unwrap(), 10 * (256 << 10));
    assert!(start.elapsed() < Duration::from_secs(5));
    eprintln!("stderr still works");
    println!("all allowed");
}

/// What the vCPU process does once running, under the Kill filter: vCPU
/// threads started after the filter, KVM_RUN kicked out by a signal, the
/// interrupt ioctls, IPC, sleeping, sigtimedwait.
fn vcpu_steady_state() {
    use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuExit};
    use vmm_sys_util::eventfd::EventFd as VmmEventFd;

    // Before the filter: a VM with 64 KiB of RAM running, in real mode at
    // 0x1000, `mov al, 0x42; out 0x10, al; hlt`.
    let kvm_parts = Kvm::new().ok().map(|kvm| {
        let vm = kvm.create_vm().unwrap();
        let size = 0x10000usize;
        // SAFETY: a fresh anonymous mapping; it lives as long as the process
        // (the VM keeps using it until exit).
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(mem, libc::MAP_FAILED);
        let code = [0xb0u8, 0x42, 0xe6, 0x10, 0xf4];
        // SAFETY: 0x1000 + 5 bytes lie inside the `size`-byte mapping.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), (mem as *mut u8).add(0x1000), 5) };
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: size as u64,
            userspace_addr: mem as u64,
        };
        // SAFETY: the region is the mapping above, which is never unmapped.
        unsafe { vm.set_user_memory_region(region).unwrap() };
        vm.create_irq_chip().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let mut sregs = vcpu.get_sregs().unwrap();
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu.set_sregs(&sregs).unwrap();
        let mut regs = vcpu.get_regs().unwrap();
        regs.rip = 0x1000;
        regs.rflags = 2;
        vcpu.set_regs(&regs).unwrap();
        let irqfd = VmmEventFd::new(libc::EFD_NONBLOCK).unwrap();
        let ioeventfd = VmmEventFd::new(libc::EFD_NONBLOCK).unwrap();
        (vm, vcpu, irqfd, ioeventfd)
    });
    let (ipc_a, ipc_b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();

    installed(ProcessKind::Vcpu, Mode::Kill);

    // The kick handler and the signal thread's wait, both after the filter.
    extern "C" fn nothing(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    vmm_sys_util::signal::register_signal_handler(libc::SIGRTMIN(), nothing).unwrap();
    let mut hup = nix::sys::signal::SigSet::empty();
    hup.add(nix::sys::signal::Signal::SIGHUP);
    hup.thread_block().unwrap();
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    // SAFETY: a live sigset and timespec; no siginfo wanted.
    let r = unsafe { libc::sigtimedwait(hup.as_ref(), std::ptr::null_mut(), &timeout) };
    assert_eq!(
        (r, nix::errno::Errno::last()),
        (-1, nix::errno::Errno::EAGAIN)
    );

    if let Some((vm, mut vcpu, irqfd, ioeventfd)) = kvm_parts {
        // What device processes ask for once the guest places their BARs.
        vm.register_irqfd(&irqfd, 5).unwrap();
        vm.register_ioevent(&ioeventfd, &IoEventAddress::Pio(0x600), NoDatamatch)
            .unwrap();
        vm.set_irq_line(4, true).unwrap();
        vm.set_irq_line(4, false).unwrap();
        vm.set_gsi_routing(&kvm_bindings::KvmIrqRouting::new(0).unwrap())
            .unwrap();
        let _ = vm.signal_msi(kvm_bindings::kvm_msi {
            address_lo: 0xfee0_0000,
            data: 0x30,
            ..Default::default()
        });
        let _ = vm.check_extension(kvm_ioctls::Cap::Irqfd);

        // A vCPU thread started now: the OUT exits to us, the HLT sleeps in
        // the kernel until a kick interrupts KVM_RUN.
        let (tx, rx) = mpsc::channel();
        let t = std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || {
                let first = match vcpu.run() {
                    Ok(VcpuExit::IoOut(port, data)) => format!("out {port:#x} {:#x}", data[0]),
                    other => format!("{other:?}"),
                };
                let second = format!("{:?}", vcpu.run().map(|_| ()));
                // The failure report's reads.
                vcpu.get_regs().unwrap();
                vcpu.get_sregs().unwrap();
                tx.send((first, second)).unwrap();
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the vCPU thread was never kicked out"
            );
            use std::os::unix::thread::JoinHandleExt;
            // SAFETY: the thread is neither joined nor detached; the signal
            // has a handler.
            unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGRTMIN()) };
            std::thread::sleep(Duration::from_millis(10));
        }
        t.join().unwrap();
        let (first, second) = rx.recv().unwrap();
        println!("vcpu: {first}; then {second}");
        assert_eq!(first, "out 0x10 0x42");
    } else {
        println!("kvm: skipped (no /dev/kvm)");
    }

    // IPC over epoll and poll.
    epoll
        .add(&ipc_b, EpollEvent::new(EpollFlags::EPOLLIN, 1))
        .unwrap();
    sendmsg::<()>(
        ipc_a.as_raw_fd(),
        &[IoSlice::new(b"bar read")],
        &[],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .unwrap();
    let mut events = [EpollEvent::empty(); 2];
    assert_eq!(
        epoll
            .wait(&mut events, EpollTimeout::from(1000u16))
            .unwrap(),
        1
    );
    let mut pfd = [PollFd::new(ipc_b.as_fd(), PollFlags::POLLIN)];
    assert_eq!(poll(&mut pfd, PollTimeout::from(1000u16)).unwrap(), 1);
    let mut buf = [0u8; 16];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(ipc_b.as_raw_fd(), &mut iov, None, MsgFlags::empty()).unwrap();
    assert_eq!(msg.bytes, 8);
    println!("all allowed");
}
