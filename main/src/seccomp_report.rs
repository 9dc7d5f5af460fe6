//! Which system call a seccomp filter killed a process for. The kernel
//! logs each kill as an audit record (`type=1326 ... pid=P ... syscall=N`)
//! in its ring buffer, usually a moment after the process is gone; the
//! launcher reads /dev/kmsg for it, for a bounded time.

use std::io::Read;
use std::time::{Duration, Instant};

/// How long the audit record may take to appear.
const WAIT: Duration = Duration::from_secs(2);

/// The number of the system call pid `pid` was killed for, if the kernel
/// log says.
pub fn killed_syscall(pid: u32) -> Option<u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(nr) = scan(pid) {
            return Some(nr);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads every record in /dev/kmsg once, looking for pid's seccomp kill.
fn scan(pid: u32) -> Option<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let mut found = None;
    let mut buf = vec![0u8; 8192];
    loop {
        // Each read returns one record; EAGAIN at the end; EPIPE when a
        // record was overwritten (carry on).
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(nr) = parse(&String::from_utf8_lossy(&buf[..n]), pid) {
                    found = Some(nr);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    found
}

/// The syscall number in an audit seccomp record about `pid`.
fn parse(record: &str, pid: u32) -> Option<u64> {
    if !record.contains("type=1326")
        || !record.split_whitespace().any(|w| w == format!("pid={pid}"))
    {
        return None;
    }
    record
        .split_whitespace()
        .find_map(|w| w.strip_prefix("syscall="))
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn finds_the_syscall_of_the_right_pid() {
        let rec = "5,1234,567,-;audit: type=1326 audit(1.2:3): auid=4294967295 uid=65534 gid=65534 ses=4294967295 subj=unconfined pid=4321 comm=\"moatvm\" exe=\"/x\" sig=31 arch=c000003e syscall=257 compat=0 ip=0x7f code=0x80000000";
        assert_eq!(parse(rec, 4321), Some(257));
        assert_eq!(parse(rec, 432), None);
        assert_eq!(parse("audit: type=1400 pid=4321 syscall=1", 4321), None);
    }
}
