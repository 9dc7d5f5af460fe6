//! The launcher's half: clone(2) straight into new namespaces, map the
//! child's ids, hand it its descriptors and exec.
//!
//! Why clone(2) and not unshare(2): a new pid namespace only applies to the
//! children of the process that creates it. Cloning with `CLONE_NEWPID` makes
//! the child itself PID 1 of the new namespace, with no intermediate reaper
//! process (which would need its own filter and would be one more process to
//! supervise).
//!
//! Between clone and exec the child runs in a copy of a possibly
//! multi-threaded launcher, so it may only make raw system calls: no
//! allocation, no locks, no glibc wrappers that keep per-thread state
//! (glibc's `setresuid`, for one, signals every thread it believes exists).
//! Everything it needs is prepared by the parent beforehand ([`Prepared`]).

use std::ffi::{c_char, CString, OsStr, OsString};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use caps::{CapSet, Capability};
use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getegid, geteuid, pipe2, read, write, Pid};

use crate::Error;

/// The outside uid and gid a privileged launcher maps the child's root to
/// unless told otherwise: `nobody`.
pub const NOBODY: u32 = 65534;

/// Bit in the "go" byte the parent sends: the child should drop its
/// supplementary groups (only possible when the parent wrote the gid map with
/// privilege and left `setgroups` allowed).
const GO_DROP_GROUPS: u8 = 1;

/// The steps the child can fail at between clone and exec, in the order of
/// the codes it reports over the error pipe.
const STEPS: [&str; 7] = [
    "set the parent-death signal",
    "drop supplementary groups",
    "setresgid",
    "setresuid",
    "duplicate a descriptor",
    "place a descriptor",
    "execveat",
];
const STEP_PDEATHSIG: u32 = 0;
const STEP_SETGROUPS: u32 = 1;
const STEP_SETRESGID: u32 = 2;
const STEP_SETRESUID: u32 = 3;
const STEP_DUP: u32 = 4;
const STEP_PLACE: u32 = 5;
const STEP_EXEC: u32 = 6;

/// A program to start in new namespaces. Built like [`std::process::Command`].
///
/// By default the child gets: an empty environment; `/dev/null` as standard
/// input; the launcher's standard output and error; no other descriptor; a
/// new, empty network namespace.
#[derive(Debug)]
pub struct Command<'a> {
    program: PathBuf,
    argv0: Option<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    fds: Vec<(BorrowedFd<'a>, RawFd)>,
    new_net: bool,
    outside_ids: Option<(u32, u32)>,
}

impl<'a> Command<'a> {
    /// Runs `program` (a path, opened by the launcher before the clone).
    pub fn new(program: impl AsRef<Path>) -> Self {
        Command {
            program: program.as_ref().to_path_buf(),
            argv0: None,
            args: Vec::new(),
            env: Vec::new(),
            fds: Vec::new(),
            new_net: true,
            outside_ids: None,
        }
    }

    /// Runs the launcher's own binary (`/proc/self/exe`), as moatvm does for
    /// its hidden roles.
    pub fn current_exe() -> Self {
        Self::new("/proc/self/exe")
    }

    /// Sets `argv[0]` (by default, the program's path).
    pub fn arg0(mut self, arg0: impl AsRef<OsStr>) -> Self {
        self.argv0 = Some(arg0.as_ref().to_owned());
        self
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Adds an environment variable. Nothing of the launcher's environment is
    /// passed on otherwise.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Passes `fd` to the child as descriptor number `child_fd` (0, 1 and 2
    /// replace the defaults). The launcher keeps its own copy.
    pub fn fd(mut self, fd: BorrowedFd<'a>, child_fd: RawFd) -> Self {
        self.fds.push((fd, child_fd));
        self
    }

    /// Whether the child gets a new, empty network namespace (the default):
    /// right for a process that needs only an already-open tap; a slirp
    /// backend, which opens host sockets, passes `false`.
    pub fn new_net(mut self, new_net: bool) -> Self {
        self.new_net = new_net;
        self
    }

    /// The outside uid and gid that the child's root (uid 0 inside) maps to.
    /// Defaults to 65534 (`nobody`) for a launcher with `CAP_SETUID` and
    /// `CAP_SETGID`, and to the launcher's own ids otherwise (the only ones
    /// an unprivileged launcher may map). The program must be executable by
    /// that id (mode 0755 will do; its directories need not be searchable,
    /// as it is opened by the launcher).
    pub fn outside_ids(mut self, uid: u32, gid: u32) -> Self {
        self.outside_ids = Some((uid, gid));
        self
    }

    /// Starts the child: clone into the new namespaces, write its id maps,
    /// wait until it has exec'd the program (or report why it could not).
    ///
    /// The child gets `SIGKILL` when the launcher *thread* that called this
    /// ends, so call it from the thread that supervises the children.
    pub fn spawn(&self) -> Result<Child, Error> {
        // Every descriptor the child juggles before exec lives above the
        // highest number it is to receive, so placing one never clobbers
        // another.
        let mut targets: Vec<RawFd> = Vec::with_capacity(self.fds.len());
        for &(_, t) in &self.fds {
            if t < 0 || targets.contains(&t) {
                return Err(Error::BadFd(t));
            }
            targets.push(t);
        }
        let floor = targets.iter().copied().max().unwrap_or(0).max(2) + 1;

        let program = open(
            &self.program,
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::OpenProgram {
            path: self.program.clone(),
            source: e.into(),
        })?;
        let program = above(program, floor)?;
        let devnull = if targets.contains(&0) {
            None
        } else {
            let fd = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(Error::DevNull)?;
            Some(above(fd, floor)?)
        };
        let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC).map_err(Error::Descriptors)?;
        let (sync_r, sync_w) = (above(sync_r, floor)?, above(sync_w, floor)?);
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(Error::Descriptors)?;
        let err_w = above(err_w, floor)?;

        let argv0 = self.argv0.as_deref().unwrap_or(self.program.as_os_str());
        let argv: Vec<CString> = std::iter::once(argv0)
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(cstring)
            .collect::<Result<_, _>>()?;
        let envp: Vec<CString> = self
            .env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.clone();
                kv.push("=");
                kv.push(v);
                cstring(&kv)
            })
            .collect::<Result<_, _>>()?;

        let ids = self.id_plan()?;

        let mut plan: Vec<(RawFd, RawFd)> = self
            .fds
            .iter()
            .map(|(fd, t)| (fd.as_raw_fd(), *t))
            .collect();
        if let Some(d) = &devnull {
            plan.push((d.as_raw_fd(), 0));
        }
        let mut prepared = Prepared {
            program: program.as_raw_fd(),
            sync_r: sync_r.as_raw_fd(),
            sync_w: sync_w.as_raw_fd(),
            err_w: err_w.as_raw_fd(),
            argv: null_terminated(&argv),
            envp: null_terminated(&envp),
            scratch: vec![-1; plan.len()],
            plan,
            floor,
        };

        let mut flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWCGROUP;
        if self.new_net {
            flags |= libc::CLONE_NEWNET;
        }
        // Block every signal across the clone so that no launcher signal
        // handler runs in the child; the child resets all dispositions to
        // default and unblocks before exec.
        let old_mask = SigSet::all()
            .thread_swap_mask(SigmaskHow::SIG_SETMASK)
            .map_err(Error::Clone)?;
        // SAFETY: clone without CLONE_VM and with a null stack behaves like
        // fork(2): the child gets a private copy of the address space and
        // continues on its copy of this stack. It only runs `child_main`,
        // which makes raw system calls on data prepared above and never
        // returns (it execs or exits), so no lock or allocator state that
        // another launcher thread held at the clone is ever touched there.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if ret == 0 {
            // SAFETY: this is the child of the fork-like clone above.
            unsafe { child_main(&mut prepared) }
        }
        let clone_err = Errno::last();
        let _ = old_mask.thread_set_mask();
        if ret < 0 {
            return Err(Error::Clone(clone_err));
        }
        drop((sync_r, err_w, program, devnull));
        let mut child = Child {
            pid: Pid::from_raw(ret as i32),
            status: None,
        };

        let go = match write_id_maps(child.pid, &ids) {
            Ok(()) => {
                if ids.drop_groups {
                    GO_DROP_GROUPS
                } else {
                    0
                }
            }
            Err(e) => {
                child.kill_and_reap();
                return Err(e);
            }
        };
        if let Err(e) = write_all(&sync_w, &[go]) {
            child.kill_and_reap();
            return Err(Error::Handshake(e));
        }
        // The error pipe closes at exec (close-on-exec) or carries the step
        // and errno the child failed at. The sync pipe's write end stays open
        // until then: the child takes its hang-up as the launcher's death.
        let mut report = [0u8; 8];
        let got = read_full(&err_r, &mut report);
        drop(sync_w);
        match got {
            Ok(0) => Ok(child),
            Ok(8) => {
                let _ = child.wait();
                let step = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
                let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
                Err(Error::ChildSetup {
                    step: STEPS.get(step as usize).copied().unwrap_or("start"),
                    source: Errno::from_raw(errno),
                })
            }
            Ok(_) => {
                child.kill_and_reap();
                Err(Error::Handshake(Errno::EPROTO))
            }
            Err(e) => {
                child.kill_and_reap();
                Err(Error::Handshake(e))
            }
        }
    }

    /// Which outside ids to map, and how to treat supplementary groups.
    fn id_plan(&self) -> Result<IdPlan, Error> {
        let has = |cap| caps::has_cap(None, CapSet::Effective, cap).map_err(Error::LauncherCaps);
        let privileged = has(Capability::CAP_SETUID)? && has(Capability::CAP_SETGID)?;
        if privileged {
            let (uid, gid) = self.outside_ids.unwrap_or((NOBODY, NOBODY));
            // A privileged writer may map any id and need not deny
            // setgroups(2); leaving it allowed lets the child drop the
            // launcher's supplementary groups (root's, typically). If the
            // launcher's own namespace has setgroups denied, the child's
            // inherits that and cannot drop them (they are then whatever an
            // unprivileged ancestor had).
            let denied = std::fs::read_to_string("/proc/self/setgroups")
                .map(|s| s.trim() == "deny")
                .unwrap_or(false);
            Ok(IdPlan {
                uid,
                gid,
                deny_setgroups: false,
                drop_groups: !denied,
            })
        } else {
            let (uid, gid) = self
                .outside_ids
                .unwrap_or((geteuid().as_raw(), getegid().as_raw()));
            // An unprivileged writer must deny setgroups(2) before it may
            // write gid_map, and can map only its own ids.
            Ok(IdPlan {
                uid,
                gid,
                deny_setgroups: true,
                drop_groups: false,
            })
        }
    }
}

/// A child started by [`Command::spawn`]: PID 1 of its own pid namespace.
///
/// Dropping it neither kills nor reaps it. Note that PID 1 ignores signals
/// it has no handler for unless they come from an ancestor namespace, and
/// even then only `SIGKILL` and `SIGSTOP` are sure to act: use
/// [`Child::kill`] to end it.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    status: Option<ExitStatus>,
}

impl Child {
    /// The child's pid, as seen from the launcher's namespace.
    pub fn id(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Sends `SIGKILL`, unless the child has been reaped already.
    pub fn kill(&self) -> Result<(), Error> {
        if self.status.is_some() {
            return Ok(());
        }
        match kill(self.pid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(Error::Wait(e)),
        }
    }

    /// Waits for the child to end.
    pub fn wait(&mut self) -> Result<ExitStatus, Error> {
        self.wait_with(None).map(|s| s.expect("blocking waitpid"))
    }

    /// Reaps the child if it has ended.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        self.wait_with(Some(WaitPidFlag::WNOHANG))
    }

    fn wait_with(&mut self, flags: Option<WaitPidFlag>) -> Result<Option<ExitStatus>, Error> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        loop {
            let status = match waitpid(self.pid, flags) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::Wait(e)),
                Ok(WaitStatus::Exited(_, code)) => ExitStatus::from_raw((code & 0xff) << 8),
                Ok(WaitStatus::Signaled(_, sig, core)) => {
                    ExitStatus::from_raw(sig as i32 | if core { 0x80 } else { 0 })
                }
                Ok(_) => return Ok(None),
            };
            self.status = Some(status);
            return Ok(Some(status));
        }
    }

    fn kill_and_reap(&mut self) {
        let _ = self.kill();
        let _ = self.wait();
    }
}

/// The outside ids and the setgroups policy for one child.
struct IdPlan {
    uid: u32,
    gid: u32,
    deny_setgroups: bool,
    drop_groups: bool,
}

fn write_id_maps(pid: Pid, ids: &IdPlan) -> Result<(), Error> {
    let put = |file: &'static str, content: String| {
        OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/{file}"))
            .and_then(|mut f| f.write_all(content.as_bytes()))
            .map_err(|source| Error::IdMap {
                pid: pid.as_raw(),
                file,
                source,
            })
    };
    if ids.deny_setgroups {
        put("setgroups", "deny".into())?;
    }
    put("uid_map", format!("0 {} 1\n", ids.uid))?;
    put("gid_map", format!("0 {} 1\n", ids.gid))
}

/// Everything the child needs between clone and exec, prepared so that the
/// child allocates nothing.
struct Prepared {
    program: RawFd,
    sync_r: RawFd,
    sync_w: RawFd,
    err_w: RawFd,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// (launcher descriptor, child descriptor number).
    plan: Vec<(RawFd, RawFd)>,
    /// One slot per `plan` entry for the intermediate copies.
    scratch: Vec<RawFd>,
    /// Lowest descriptor number above every child descriptor number.
    floor: RawFd,
}

/// The child between clone and exec. Raw system calls only (see the module
/// documentation); never returns.
///
/// # Safety
///
/// Only for the child of a fork-like clone, with `p` prepared by
/// [`Command::spawn`]. Every [`sys`] call below passes integers, descriptor
/// numbers, or pointers to locals and to `p`'s buffers, all alive for the
/// call (the argv/envp strings live in this copy of the launcher's memory).
unsafe fn child_main(p: &mut Prepared) -> ! {
    let _ = sys(libc::SYS_close, [p.sync_w as usize, 0, 0, 0, 0]);
    let pdeathsig = [
        libc::PR_SET_PDEATHSIG as usize,
        libc::SIGKILL as usize,
        0,
        0,
        0,
    ];
    if let Err(e) = sys(libc::SYS_prctl, pdeathsig) {
        fail(p, STEP_PDEATHSIG, e);
    }
    // Wait for the id maps. End of file: the launcher died or gave up.
    let mut go = 0u8;
    loop {
        match sys(
            libc::SYS_read,
            [p.sync_r as usize, &mut go as *mut u8 as usize, 1, 0, 0],
        ) {
            Ok(1) => break,
            Err(Errno::EINTR) => continue,
            _ => libc::_exit(127),
        }
    }
    // Become root of the new user namespace (the mapped outside id), so that
    // the exec keeps the namespace's full capabilities for `enter`.
    if go & GO_DROP_GROUPS != 0 {
        if let Err(e) = sys(libc::SYS_setgroups, [0; 5]) {
            fail(p, STEP_SETGROUPS, e);
        }
    }
    if let Err(e) = sys(libc::SYS_setresgid, [0; 5]) {
        fail(p, STEP_SETRESGID, e);
    }
    if let Err(e) = sys(libc::SYS_setresuid, [0; 5]) {
        fail(p, STEP_SETRESUID, e);
    }
    // Changing credentials clears the parent-death signal: set it again,
    // then make sure the launcher did not die in between (the sync pipe's
    // write end, which it holds until we exec, would have hung up).
    if let Err(e) = sys(libc::SYS_prctl, pdeathsig) {
        fail(p, STEP_PDEATHSIG, e);
    }
    let mut pfd = libc::pollfd {
        fd: p.sync_r,
        events: 0,
        revents: 0,
    };
    let no_wait = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let polled = sys(
        libc::SYS_ppoll,
        [
            &mut pfd as *mut libc::pollfd as usize,
            1,
            &no_wait as *const libc::timespec as usize,
            0,
            0,
        ],
    );
    if polled.is_err() || pfd.revents & libc::POLLHUP != 0 {
        libc::_exit(127)
    }
    // A fresh signal state: every disposition default (a zeroed kernel
    // sigaction is SIG_DFL), nothing blocked. SIGKILL/SIGSTOP fail; fine.
    let dfl = [0u64; 4];
    for sig in 1..=64usize {
        let _ = sys(
            libc::SYS_rt_sigaction,
            [sig, dfl.as_ptr() as usize, 0, 8, 0],
        );
    }
    let empty = 0u64;
    let _ = sys(
        libc::SYS_rt_sigprocmask,
        [
            libc::SIG_SETMASK as usize,
            &empty as *const u64 as usize,
            0,
            8,
            0,
        ],
    );
    // Descriptors: copy each one above `floor`, mark everything from 3 up
    // close-on-exec, then place the copies (dup3 clears close-on-exec on the
    // new number).
    for i in 0..p.plan.len() {
        let src = p.plan[i].0;
        let dup = [
            src as usize,
            libc::F_DUPFD_CLOEXEC as usize,
            p.floor as usize,
            0,
            0,
        ];
        match sys(libc::SYS_fcntl, dup) {
            Ok(fd) => p.scratch[i] = fd as RawFd,
            Err(e) => fail(p, STEP_DUP, e),
        }
    }
    // Best effort (Linux >= 5.11); `enter` closes strays in any case.
    let _ = sys(
        libc::SYS_close_range,
        [
            3,
            u32::MAX as usize,
            libc::CLOSE_RANGE_CLOEXEC as usize,
            0,
            0,
        ],
    );
    for i in 0..p.plan.len() {
        let place = [p.scratch[i] as usize, p.plan[i].1 as usize, 0, 0, 0];
        if let Err(e) = sys(libc::SYS_dup3, place) {
            fail(p, STEP_PLACE, e);
        }
    }
    let exec = [
        p.program as usize,
        c"".as_ptr() as usize,
        p.argv.as_ptr() as usize,
        p.envp.as_ptr() as usize,
        libc::AT_EMPTY_PATH as usize,
    ];
    let e = sys(libc::SYS_execveat, exec).unwrap_err();
    fail(p, STEP_EXEC, e)
}

/// Reports `step` and `errno` to the launcher and exits.
///
/// # Safety
///
/// As for [`child_main`].
unsafe fn fail(p: &Prepared, step: u32, errno: Errno) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&step.to_ne_bytes());
    msg[4..].copy_from_slice(&(errno as i32).to_ne_bytes());
    let _ = sys(
        libc::SYS_write,
        [p.err_w as usize, msg.as_ptr() as usize, msg.len(), 0, 0],
    );
    libc::_exit(127)
}

/// One raw system call with up to five arguments.
///
/// # Safety
///
/// The arguments must be valid for `nr`: pointers must point at live,
/// correctly sized memory.
unsafe fn sys(nr: libc::c_long, a: [usize; 5]) -> Result<libc::c_long, Errno> {
    let r = libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]);
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// `fd`, moved to a number at or above `floor` if it is below.
fn above(fd: OwnedFd, floor: RawFd) -> Result<OwnedFd, Error> {
    if fd.as_raw_fd() >= floor {
        return Ok(fd);
    }
    let raw = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(floor)).map_err(Error::Descriptors)?;
    // SAFETY: fcntl just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn cstring(s: &OsStr) -> Result<CString, Error> {
    CString::new(s.as_bytes()).map_err(|_| Error::Nul)
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn write_all(fd: &OwnedFd, buf: &[u8]) -> Result<(), Errno> {
    let mut done = 0;
    while done < buf.len() {
        match write(fd.as_fd(), &buf[done..]) {
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads until `buf` is full or end of file; returns how much was read.
fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut done = 0;
    while done < buf.len() {
        match read(fd.as_fd(), &mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
