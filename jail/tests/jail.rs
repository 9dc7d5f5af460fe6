//! Real jails, on this machine: the test binary spawns itself (through
//! `jail::Command`) in a child role named by an environment variable, and
//! checks from outside what the child reports and what /proc says about it.
//!
//! `harness = false`: `jail::enter` must run single-threaded, and libtest
//! runs every test on a thread of its own. The small runner below prints
//! libtest's summary line.
//!
//! Needs what moatvm's launcher needs: permission to create user namespaces
//! (root here).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::resource::{getrlimit, Resource};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};

/// Names the child role; unset in the parent.
const ROLE: &str = "JAIL_TEST_ROLE";

const TESTS: &[(&str, fn())] = &[
    (
        "spawn_and_enter_make_an_empty_jail",
        spawn_and_enter_make_an_empty_jail,
    ),
    (
        "new_net_false_keeps_the_host_network",
        new_net_false_keeps_the_host_network,
    ),
    (
        "jailed_and_filtered_process_dies_by_sigsys",
        jailed_and_filtered_process_dies_by_sigsys,
    ),
    ("child_dies_with_its_launcher", child_dies_with_its_launcher),
    ("exec_failure_is_reported", exec_failure_is_reported),
    ("missing_program_is_reported", missing_program_is_reported),
    (
        "bad_descriptor_mapping_is_refused",
        bad_descriptor_mapping_is_refused,
    ),
    (
        "enter_refuses_a_threaded_process",
        enter_refuses_a_threaded_process,
    ),
];

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child_role(&role);
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

/// A jailed child with a report pipe (its fd 3) and a hold pipe (its fd 4):
/// it reports, then waits for a byte or end of file on the hold pipe.
struct Jailed {
    child: jail::Child,
    report: BufReader<File>,
    hold: Option<File>,
}

impl Jailed {
    fn start(role: &str, new_net: bool, extra: Option<&OwnedFd>) -> Jailed {
        let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        let (hold_r, hold_w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut cmd = jail::Command::current_exe()
            .arg0("jail-test-child")
            .env(ROLE, role)
            .env("RUST_BACKTRACE", "1")
            .fd(report_w.as_fd(), 3)
            .fd(hold_r.as_fd(), 4)
            .new_net(new_net);
        if let Some(fd) = extra {
            cmd = cmd.fd(fd.as_fd(), 5);
        }
        let child = cmd.spawn().expect("spawn");
        Jailed {
            child,
            report: BufReader::new(File::from(report_r)),
            hold: Some(File::from(hold_w)),
        }
    }

    /// The child's report: `key=value` lines up to `done`.
    fn read_report(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.report.read_line(&mut line).unwrap();
            assert!(n > 0, "the child ended its report early: {out:?}");
            let line = line.trim_end();
            if line == "done" {
                return out;
            }
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            assert_ne!(k, "error", "the child failed: {v}");
            out.push((k.to_string(), v.to_string()));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Jailed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get<'a>(report: &'a [(String, String)], key: &str) -> &'a str {
    report
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {report:?}"))
}

/// A field of /proc/<pid>/status.
fn status_field(pid: u32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn ns(pid: &str, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn spawn_and_enter_make_an_empty_jail() {
    // A descriptor the child is given but does not keep, and one the
    // launcher leaks (not close-on-exec): neither may survive.
    let (extra, _extra_w) = pipe2(OFlag::O_CLOEXEC).unwrap();
    let (_leak_r, leak_w) = pipe2(OFlag::empty()).unwrap();
    let mut j = Jailed::start("report", true, Some(&extra));
    let report = j.read_report();
    let pid = j.pid().to_string();

    for kind in ["mnt", "pid", "net", "user", "ipc", "uts", "cgroup"] {
        assert_ne!(ns(&pid, kind), ns("self", kind), "{kind} namespace shared");
    }
    assert_eq!(get(&report, "pid"), "1", "not PID 1 of its namespace");
    assert_eq!(get(&report, "root_entries"), "0", "root not empty");
    // The same, seen from outside (what the lab checks).
    let outside = fs::read_dir(format!("/proc/{pid}/root")).unwrap().count();
    assert_eq!(outside, 0, "/proc/{pid}/root not empty");
    assert_eq!(get(&report, "proc_exists"), "false");
    assert_ne!(get(&report, "mkdir_errno"), "0", "could write to the root");
    assert_eq!(get(&report, "open_fds"), "0,1,2,3,4", "stray descriptors");
    assert_eq!(get(&report, "stdin_is_dev_null"), "true");
    assert_eq!(get(&report, "nofile"), "32/32");
    assert_eq!(get(&report, "nproc"), "4/4");
    assert_eq!(get(&report, "core"), "0/0");
    assert_eq!(get(&report, "uid_inside"), "0");
    assert!(
        get(&report, "env").starts_with(&format!("{ROLE}=")),
        "environment leaked: {report:?}"
    );

    for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(j.pid(), field), "0000000000000000", "{field}");
    }
    assert_eq!(status_field(j.pid(), "NoNewPrivs"), "1");
    if is_root() {
        // Root inside is `nobody` outside, with no supplementary groups.
        let map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
        assert_eq!(
            map.split_whitespace().collect::<Vec<_>>(),
            ["0", "65534", "1"]
        );
        let map = fs::read_to_string(format!("/proc/{pid}/gid_map")).unwrap();
        assert_eq!(
            map.split_whitespace().collect::<Vec<_>>(),
            ["0", "65534", "1"]
        );
        assert_eq!(status_field(j.pid(), "Uid"), "65534\t65534\t65534\t65534");
        assert_eq!(status_field(j.pid(), "Groups"), "");
    }

    // Released, it exits cleanly.
    drop(j.hold.take());
    let status = j.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    drop(leak_w);
}

fn new_net_false_keeps_the_host_network() {
    let mut j = Jailed::start("report", false, None);
    j.read_report();
    let pid = j.pid().to_string();
    assert_eq!(ns(&pid, "net"), ns("self", "net"));
    for kind in ["mnt", "pid", "user", "ipc", "uts"] {
        assert_ne!(ns(&pid, kind), ns("self", kind), "{kind} namespace shared");
    }
}

/// The lab's acceptance check, here: a jailed process with the NIC filter
/// shows `Seccomp: 2`, `NoNewPrivs: 1`, `CapEff: 0`, and dies by SIGSYS on
/// a forbidden system call.
fn jailed_and_filtered_process_dies_by_sigsys() {
    let mut j = Jailed::start("filtered", true, None);
    j.read_report();
    assert_eq!(status_field(j.pid(), "Seccomp"), "2");
    assert_eq!(status_field(j.pid(), "NoNewPrivs"), "1");
    assert_eq!(status_field(j.pid(), "CapEff"), "0000000000000000");
    // One byte: go and make the forbidden call.
    j.hold.as_mut().unwrap().write_all(b"x").unwrap();
    let status = j.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}");
}

fn child_dies_with_its_launcher() {
    // Adopt orphans, so that the jailed grandchild is ours to reap once its
    // launcher (the middle process) is gone.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let mut middle = std::process::Command::new("/proc/self/exe")
        .env(ROLE, "middle")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(middle.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let grandchild: i32 = line
        .trim()
        .strip_prefix("pid=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("middle said {line:?}"));
    middle.kill().unwrap();
    middle.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match waitpid(Pid::from_raw(grandchild), Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            s => break s,
        }
    };
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
        "grandchild: {status:?}"
    );
}

fn exec_failure_is_reported() {
    // Opened fine by the launcher, but not executable.
    let path = std::env::temp_dir().join(format!("jail-test-noexec-{}", std::process::id()));
    fs::write(&path, b"#!/bin/sh\n").unwrap();
    let err = jail::Command::new(&path).spawn().unwrap_err();
    fs::remove_file(&path).unwrap();
    match err {
        jail::Error::ChildSetup { step, source } => {
            assert_eq!(step, "execveat");
            assert_eq!(source, nix::errno::Errno::EACCES);
        }
        e => panic!("unexpected {e}"),
    }
}

fn missing_program_is_reported() {
    let err = jail::Command::new("/nonexistent/moatvm")
        .spawn()
        .unwrap_err();
    assert!(matches!(err, jail::Error::OpenProgram { .. }), "{err}");
}

fn bad_descriptor_mapping_is_refused() {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
    let err = jail::Command::current_exe()
        .fd(r.as_fd(), 3)
        .fd(w.as_fd(), 3)
        .spawn()
        .unwrap_err();
    assert!(matches!(err, jail::Error::BadFd(3)), "{err}");
}

fn enter_refuses_a_threaded_process() {
    // The check comes first, so this is harmless in the test process.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv());
    let err = jail::enter(&jail::JailConfig::default()).unwrap_err();
    drop(tx);
    t.join().unwrap().ok();
    assert!(matches!(err, jail::Error::Threads(n) if n >= 2), "{err}");
}

// ----------------------------------------------------------------- child side

fn child_role(role: &str) -> ! {
    match role {
        "report" => report_role(),
        "filtered" => filtered_role(),
        "middle" => middle_role(),
        "sleeper" => sleeper_role(),
        _ => panic!("unknown role {role}"),
    }
}

/// Takes descriptor `fd`, which `spawn` placed and nothing else owns.
fn take_fd(fd: RawFd) -> File {
    // SAFETY: the launcher mapped this number for us and no other object in
    // this process owns it.
    unsafe { File::from_raw_fd(fd) }
}

/// Enters the jail keeping fds 3 and 4; reports failures on fd 3.
fn enter_or_report(out: &mut File) {
    let cfg = jail::JailConfig {
        keep_fds: vec![3, 4],
        max_open_files: 32,
        max_processes: 4,
        ..Default::default()
    };
    if let Err(e) = jail::enter(&cfg) {
        let _ = writeln!(out, "error={e}\ndone");
        std::process::exit(1);
    }
}

/// Blocks until the parent writes a byte (returns true) or hangs up.
fn hold() -> bool {
    let mut byte = [0u8; 1];
    matches!(take_fd(4).read(&mut byte), Ok(1))
}

fn report_role() -> ! {
    // Before entering, so that the report pipe is open and kept.
    let mut out = take_fd(3);
    enter_or_report(&mut out);
    let limit = |r| {
        let (soft, hard) = getrlimit(r).unwrap();
        format!("{soft}/{hard}")
    };
    let open_fds: Vec<String> = (0..1024)
        .filter(|&fd| {
            // SAFETY: F_GETFD only asks whether the number is open.
            unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
        })
        .map(|fd| fd.to_string())
        .collect();
    let stdin = nix::sys::stat::fstat(std::io::stdin()).unwrap();
    let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    let report = [
        ("pid", std::process::id().to_string()),
        (
            "root_entries",
            fs::read_dir("/").unwrap().count().to_string(),
        ),
        ("proc_exists", Path::new("/proc").exists().to_string()),
        (
            "mkdir_errno",
            fs::create_dir("/x")
                .err()
                .and_then(|e| e.raw_os_error())
                .unwrap_or(0)
                .to_string(),
        ),
        ("open_fds", open_fds.join(",")),
        (
            "stdin_is_dev_null",
            (stdin.st_rdev == libc::makedev(1, 3)).to_string(),
        ),
        ("nofile", limit(Resource::RLIMIT_NOFILE)),
        ("nproc", limit(Resource::RLIMIT_NPROC)),
        ("core", limit(Resource::RLIMIT_CORE)),
        ("uid_inside", nix::unistd::getuid().to_string()),
        ("env", env.join(" ")),
    ];
    for (k, v) in report {
        writeln!(out, "{k}={v}").unwrap();
    }
    writeln!(out, "done").unwrap();
    hold();
    std::process::exit(0);
}

fn filtered_role() -> ! {
    let mut out = take_fd(3);
    enter_or_report(&mut out);
    if let Err(e) = seccomp::install(seccomp::ProcessKind::VirtioNet, seccomp::Mode::Kill) {
        let _ = writeln!(out, "error={e}\ndone");
        std::process::exit(1);
    }
    writeln!(out, "done").unwrap();
    if hold() {
        // Forbidden for a NIC process: open a file.
        // SAFETY: a plain system call on a constant string.
        unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, c"/".as_ptr(), 0) };
        let _ = writeln!(out, "survived");
    }
    std::process::exit(0);
}

/// A launcher in miniature: spawns a jailed sleeper, says its pid, waits to
/// be killed.
fn middle_role() -> ! {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
    let child = jail::Command::current_exe()
        .env(ROLE, "sleeper")
        .fd(w.as_fd(), 3)
        .spawn()
        .unwrap();
    drop(w);
    let mut ready = String::new();
    BufReader::new(File::from(r)).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    println!("pid={}", child.id());
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn sleeper_role() -> ! {
    let mut out = take_fd(3);
    let cfg = jail::JailConfig {
        keep_fds: vec![3],
        ..Default::default()
    };
    jail::enter(&cfg).unwrap();
    writeln!(out, "ready").unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}
