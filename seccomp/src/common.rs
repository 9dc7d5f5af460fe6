//! What Rust's std and glibc need in any moatvm process once it is running,
//! whatever the process does: memory, locks, thread and process exit,
//! signal returns, time, logging. Each kind's list starts from this.

use crate::policy::{arg_in, arg_lacks, sys, Policy};

/// Adds the runtime's system calls (23) to `p`.
pub(crate) fn rust_runtime(p: &mut Policy) {
    // Memory (glibc malloc behind Rust's allocations). Nothing may become
    // executable: no code is ever generated or loaded after start.
    let no_exec = || vec![vec![arg_lacks(2, libc::PROT_EXEC as u64)]];
    // Grows and shrinks the main heap.
    p.allow(sys!(SYS_brk));
    // Large blocks, new malloc arenas, and (before the filter) guest memory.
    p.allow_when(sys!(SYS_mmap), no_exec());
    // Frees large blocks; a thread's stack and signal stack when it ends.
    p.allow(sys!(SYS_munmap));
    // realloc of large blocks (a growing Vec).
    p.allow(sys!(SYS_mremap));
    // malloc commits memory in non-main arenas by mprotect.
    p.allow_when(sys!(SYS_mprotect), no_exec());
    // free() and thread exit hand pages back with MADV_DONTNEED.
    p.allow(sys!(SYS_madvise));

    // Threads, locks and exit.
    // Mutex, Condvar, Once, mpsc channels, thread join.
    p.allow(sys!(SYS_futex));
    // Spin-then-yield in locks and channels.
    p.allow(sys!(SYS_sched_yield));
    // glibc malloc counts the CPUs when a thread's first allocation creates
    // an arena (read-only).
    p.allow(sys!(SYS_sched_getaffinity));
    // A thread ends.
    p.allow(sys!(SYS_exit));
    // The process ends.
    p.allow(sys!(SYS_exit_group));
    // A thread registers its restartable-sequences area as it starts and
    // unregisters it as it ends (glibc >= 2.35). A thread started just
    // before the filter may still be starting when TSYNC reaches it, hence
    // this and the next two.
    p.allow(sys!(SYS_rseq));
    // A starting thread registers its robust futex list.
    p.allow(sys!(SYS_set_robust_list));
    // std names a starting thread (PR_SET_NAME only).
    p.allow_when(sys!(SYS_prctl), arg_in(0, &[libc::PR_SET_NAME as u64]));
    // A panic message names the thread by its OS id (Rust >= 1.89); without
    // this a panicking process would die before saying why.
    p.allow(sys!(SYS_gettid));

    // Signals.
    // Returning from any signal handler.
    p.allow(sys!(SYS_rt_sigreturn));
    // glibc masks signals around thread exit and in abort().
    p.allow(sys!(SYS_rt_sigprocmask));
    // A Rust thread sets up its stack-overflow signal stack as it starts
    // and removes it as it ends.
    p.allow(sys!(SYS_sigaltstack));
    // The kernel resumes a sleeping call this way after SIGSTOP/SIGCONT.
    p.allow(sys!(SYS_restart_syscall));

    // Time, randomness, descriptors, output.
    // Instant::now and timeouts when the vDSO cannot answer (it falls back
    // to the system call with some clocksources, e.g. in nested guests).
    p.allow(sys!(SYS_clock_gettime));
    // Seeds for HashMap's RandomState.
    p.allow(sys!(SYS_getrandom));
    // Dropping a descriptor (received ones, eventfds of a reset queue).
    p.allow(sys!(SYS_close));
    // Logs and panic messages on stderr; each kind's own writes too.
    p.allow(sys!(SYS_write));
}

/// fcntl commands a process may need on descriptors it holds or receives:
/// reading and setting close-on-exec and O_NONBLOCK, and duplicating
/// (`OwnedFd::try_clone`). Not F_SETOWN/F_SETSIG (signals to other
/// processes), not locks, not leases.
pub(crate) fn fcntl_commands() -> Vec<Vec<crate::policy::Cond>> {
    crate::policy::arg_in(
        1,
        &[
            libc::F_GETFD as u64,
            libc::F_SETFD as u64,
            libc::F_GETFL as u64,
            libc::F_SETFL as u64,
            libc::F_DUPFD_CLOEXEC as u64,
        ],
    )
}
