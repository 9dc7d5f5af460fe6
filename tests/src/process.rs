//! A running VMM (or any helper process) whose stdout is the guest's serial
//! console: a reader thread copies it to a log file and hands complete lines
//! to the test, which waits for a line or for the process's exit against a
//! deadline. Dropping a [`Running`] kills the process.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// How often a wait looks at the process's state while no line comes.
const TICK: Duration = Duration::from_millis(20);
/// After the process exits, how long its last output may take to arrive.
const DRAIN: Duration = Duration::from_secs(2);
/// Starts the line that tells the lab a guest reset by itself (`xtask`
/// reruns such a scenario in a fresh L1).
pub const EARLY_RESET_MARKER: &str = "LAB-L2-EARLY-RESET";
/// Lines of serial output quoted in error messages.
const TAIL_LINES: usize = 25;
/// How long a killed process may take to be reaped. A VMM whose vCPU
/// thread is stuck in L1's kernel (the nested lab's own trouble) may never
/// die; the test or bench then goes on without it instead of hanging.
const REAP: Duration = Duration::from_secs(30);

/// A spawned process with its stdout captured line by line.
pub struct Running {
    name: String,
    child: Child,
    lines: Receiver<String>,
    /// Every line received so far.
    seen: Vec<String>,
    /// Index in `seen` where the next [`Running::wait_for`] starts looking.
    cursor: usize,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
    exit: Option<ExitStatus>,
    /// SIGKILL was sent and the process reaped or given up on.
    killed: bool,
}

/// Renames the logs at `stdout_log` and `stderr_log`, if there are any, to
/// the first `LOG.N.*` names not taken.
fn keep_earlier(log: &Path, stdout_log: &Path, stderr_log: &Path) {
    if !stdout_log.exists() && !stderr_log.exists() {
        return;
    }
    for n in 1..100 {
        let (out, err) = (
            log.with_extension(format!("{n}.serial.log")),
            log.with_extension(format!("{n}.stderr.log")),
        );
        if !out.exists() && !err.exists() {
            let _ = std::fs::rename(stdout_log, out);
            let _ = std::fs::rename(stderr_log, err);
            return;
        }
    }
}

impl Running {
    /// Spawns `cmd` with stdin from /dev/null, stdout copied to
    /// `LOG.serial.log` and stderr to `LOG.stderr.log` (`log` is a path
    /// prefix). Logs of an earlier process under the same name (a run
    /// tried again) are kept as `LOG.N.serial.log` and `LOG.N.stderr.log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Running> {
        let stdout_log = log.with_extension("serial.log");
        let stderr_log = log.with_extension("stderr.log");
        keep_earlier(log, &stdout_log, &stderr_log);
        let stderr = File::create(&stderr_log)
            .with_context(|| format!("creating {}", stderr_log.display()))?;
        let mut copy = File::create(&stdout_log)
            .with_context(|| format!("creating {}", stdout_log.display()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            while let Ok(n) = reader.read_until(b'\n', &mut buf) {
                if n == 0 {
                    break;
                }
                let _ = copy.write_all(&buf);
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                buf.clear();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Running {
            name: name.to_string(),
            child,
            lines,
            seen: Vec::new(),
            cursor: 0,
            stdout_log,
            stderr_log,
            exit: None,
            killed: false,
        })
    }

    /// Waits for the next line (after the last one matched) for which
    /// `matches` is true and returns it. Fails when `timeout` passes or the
    /// process exits without printing such a line; the error quotes the
    /// end of the output.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = (self.cursor..self.seen.len()).find(|&i| matches(&self.seen[i])) {
                self.cursor = i + 1;
                return Ok(self.seen[i].clone());
            }
            if let Some(status) = self.exit {
                bail!(
                    "{} exited ({status}) before printing {what}\n{}{}",
                    self.name,
                    self.report(),
                    self.early_reset_marker(status)
                );
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "{} printed no {what} within {timeout:?}\n{}",
                    self.name,
                    self.report()
                );
            }
            match self.lines.recv_timeout(TICK.min(deadline - now)) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Timeout) => self.poll_exit()?,
                Err(RecvTimeoutError::Disconnected) => {
                    // Output closed: the process is gone or going.
                    self.wait_exit_quietly(deadline)?;
                }
            }
        }
    }

    /// Waits for a line containing `needle`.
    pub fn wait_for_text(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_for(&format!("{needle:?}"), timeout, |l| l.contains(needle))
    }

    /// Waits for the process to exit; kills it and fails if `timeout`
    /// passes first.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        self.wait_exit_quietly(deadline)?;
        match self.exit {
            Some(status) => Ok(status),
            None => {
                self.kill_and_reap();
                bail!(
                    "{} did not exit within {timeout:?} (killed)\n{}",
                    self.name,
                    self.report()
                )
            }
        }
    }

    /// Waits for the exit with a successful status.
    pub fn expect_success(&mut self, timeout: Duration) -> Result<()> {
        let status = self.wait_exit(timeout)?;
        if !status.success() {
            bail!(
                "{} exited with {status}\n{}{}",
                self.name,
                self.report(),
                self.early_reset_marker(status)
            );
        }
        Ok(())
    }

    /// Every line received so far (reads what has already arrived).
    pub fn lines(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line for the lab when the guest reset by itself: moatvm's "triple
    /// fault" (KVM_EXIT_SHUTDOWN, at any point), or QEMU (`-no-reboot`)
    /// exiting 0 before the guest's init printed anything. In the nested lab
    /// this happens now and then to QEMU and moatvm alike (L1's SVM is
    /// emulated by TCG), so the lab reruns the scenario in a fresh L1; a VMM
    /// that does it every time still fails every time.
    fn early_reset_marker(&self, status: ExitStatus) -> String {
        let started = self.seen.iter().any(|l| l.contains("MOAT start"));
        let stderr = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let reset = stderr.contains("triple fault")
            || (!started && status.success() && self.name == "qemu");
        if reset {
            format!("\n{EARLY_RESET_MARKER}: the guest reset by itself (triple fault)")
        } else {
            String::new()
        }
    }

    /// The end of the serial output and of stderr, and where the logs are.
    pub fn report(&self) -> String {
        let start = self.seen.len().saturating_sub(TAIL_LINES);
        let mut text = format!(
            "--- last serial lines of {} ({}):\n",
            self.name,
            self.stdout_log.display()
        );
        for line in &self.seen[start..] {
            text.push_str(line);
            text.push('\n');
        }
        let stderr = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let lines: Vec<&str> = stderr.lines().collect();
        text.push_str(&format!("--- stderr ({}):\n", self.stderr_log.display()));
        for line in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("---");
        text
    }

    /// Records the exit status if the process has exited, and then collects
    /// its remaining output.
    fn poll_exit(&mut self) -> Result<()> {
        if self.exit.is_none() {
            if let Some(status) = self.child.try_wait()? {
                self.exit = Some(status);
                self.drain();
            }
        }
        Ok(())
    }

    /// Polls for the exit until `deadline`.
    fn wait_exit_quietly(&mut self, deadline: Instant) -> Result<()> {
        loop {
            self.poll_exit()?;
            if self.exit.is_some() || Instant::now() >= deadline {
                return Ok(());
            }
            match self.lines.recv_timeout(TICK) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => thread::sleep(TICK),
            }
        }
    }

    /// Takes the output that is still in flight after the exit (a child of
    /// the process may hold the pipe open: give up after [`DRAIN`]).
    fn drain(&mut self) {
        let deadline = Instant::now() + DRAIN;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
    }
}

impl Running {
    /// SIGKILL, then waits at most [`REAP`] for the process to go; once
    /// only (a process left behind is not waited for again on drop).
    fn kill_and_reap(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        let _ = self.child.kill();
        if !reap(&mut self.child, REAP) {
            eprintln!(
                "{} (pid {}) still there {REAP:?} after SIGKILL; left behind",
                self.name,
                self.child.id()
            );
        }
    }
}

/// Waits at most `timeout` for `child` to exit; whether it did.
fn reap(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => thread::sleep(TICK),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill_and_reap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    fn log(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("e2e-process-{}-{name}", std::process::id()))
    }

    #[test]
    fn reaping_gives_up_at_its_deadline() {
        let mut child = sh("sleep 30").spawn().unwrap();
        let start = Instant::now();
        assert!(!reap(&mut child, Duration::from_millis(100)));
        assert!(start.elapsed() < Duration::from_secs(5));
        child.kill().unwrap();
        assert!(reap(&mut child, Duration::from_secs(10)));
    }

    #[test]
    fn waits_for_lines_in_order_then_exit() {
        let mut p =
            Running::spawn("sh", sh("echo one; echo two; echo one"), &log("order")).unwrap();
        let t = Duration::from_secs(10);
        assert_eq!(p.wait_for_text("one", t).unwrap(), "one");
        assert_eq!(p.wait_for_text("two", t).unwrap(), "two");
        assert_eq!(p.wait_for_text("one", t).unwrap(), "one");
        p.expect_success(t).unwrap();
    }

    #[test]
    fn fails_when_process_exits_without_the_line() {
        let mut p = Running::spawn("sh", sh("echo nope; exit 3"), &log("exit")).unwrap();
        let err = p.wait_for_text("yes", Duration::from_secs(10)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("exited"), "{msg}");
        assert!(msg.contains("nope"), "{msg}");
        assert!(!p.wait_exit(Duration::from_secs(1)).unwrap().success());
    }

    #[test]
    fn times_out_and_kills() {
        let mut p = Running::spawn("sleep", sh("exec sleep 30"), &log("timeout")).unwrap();
        let start = Instant::now();
        assert!(p.wait_for_text("x", Duration::from_millis(200)).is_err());
        assert!(p.wait_exit(Duration::from_millis(200)).is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_second_process_under_the_same_name_keeps_the_first_ones_logs() {
        let base = log("again");
        let t = Duration::from_secs(10);
        for word in ["first", "second", "third"] {
            let mut p = Running::spawn("sh", sh(&format!("echo {word}")), &base).unwrap();
            // A line is passed on once it is in the log.
            p.wait_for_text(word, t).unwrap();
            p.expect_success(t).unwrap();
        }
        let read = |ext: &str| std::fs::read_to_string(base.with_extension(ext)).unwrap();
        assert_eq!(read("serial.log"), "third\n");
        assert_eq!(read("1.serial.log"), "first\n");
        assert_eq!(read("2.serial.log"), "second\n");
        assert!(base.with_extension("2.stderr.log").exists());
    }
}
