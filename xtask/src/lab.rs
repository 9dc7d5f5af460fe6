//! One boot of L1, the lab's outer VM: QEMU in TCG mode with an SVM+NPT CPU,
//! so L1's kvm_amd gives a real /dev/kvm. L1 sees the host's root read-only
//! (9p) and a writable results share, runs a job's script (`cmd.sh`) and
//! powers off. This module boots it, enforces a time limit, watches L1's
//! console for kernel trouble, and tells a lab failure from a job failure.
//!
//! A run's files are in `target/lab/runs/NAME/`: `l1-console.log`,
//! `qemu.stderr.log`, and `share/` (L1's writable share: `cmd.sh`,
//! `status`, whatever the job writes).

use crate::cmd;
use crate::image::LabImage;
use crate::lab_watch::{Heartbeat, Watch, FATAL_GRACE, HEARTBEAT_LIMIT};
use crate::paths;
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How often the console and QEMU are looked at.
const TICK: Duration = Duration::from_millis(100);
/// How long an L1 out of time gets to print its blocked tasks (its
/// heartbeat loop looks for the request every 5 s).
const DUMP_GRACE: Duration = Duration::from_secs(15);

/// What to run in L1.
pub struct Job {
    /// Names the run directory (`target/lab/runs/NAME`).
    pub name: String,
    /// The body of `cmd.sh`, run by `sh` in L1 with stdout and stderr on
    /// L1's console and `$LAB_OUT` set to the share's path.
    pub script: String,
    /// L1 is killed after this long.
    pub timeout: Duration,
    /// Echo L1's console lines that start with this ("" for all).
    pub echo: Option<&'static str>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The script ran to its end with this exit status.
    Done(i32),
    /// L1's kernel reported trouble (the line), and the script did not
    /// succeed: a lab failure.
    L1Trouble(String),
    /// L1 went down before the script finished, with no reason shown.
    L1Died,
    /// L1 stopped writing its heartbeat (killed).
    L1Hung,
    /// The time limit passed.
    Timeout,
}

impl Verdict {
    /// Whether the lab itself failed (so the run is worth repeating).
    pub fn is_lab_failure(&self) -> bool {
        matches!(
            self,
            Verdict::L1Trouble(_) | Verdict::L1Died | Verdict::L1Hung
        )
    }
}

/// The result of a run.
pub struct Outcome {
    pub verdict: Verdict,
    /// The share, with the job's files.
    pub share: PathBuf,
    pub console_log: PathBuf,
    /// L1's console.
    pub console: String,
    /// From QEMU's start to stage 2 (L1 booted, host root mounted).
    pub l1_boot: Option<Duration>,
    pub elapsed: Duration,
    /// How the earlier attempts of the job ended, if it was run again.
    pub earlier: Vec<String>,
}

impl Outcome {
    /// The last `n` lines of L1's console.
    pub fn console_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A one-line description of the verdict.
    pub fn describe(&self) -> String {
        let boot = match self.l1_boot {
            Some(b) => format!("L1 boot {:.1}s", b.as_secs_f64()),
            None => "L1 did not boot".into(),
        };
        let what = match &self.verdict {
            Verdict::Done(0) => "ok".to_string(),
            Verdict::Done(s) => format!("exit status {s}"),
            Verdict::L1Trouble(line) => format!("LAB FAILURE: L1 kernel trouble: {line}"),
            Verdict::L1Died => "LAB FAILURE: L1 went down before the job finished".into(),
            Verdict::L1Hung => {
                format!("LAB FAILURE: L1 hung (no heartbeat for {HEARTBEAT_LIMIT:?})")
            }
            Verdict::Timeout => "LAB TIMEOUT: L1 killed".into(),
        };
        format!("{what} ({boot}, {:.1}s in all)", self.elapsed.as_secs_f64())
    }
}

/// Lab failures tolerated per job: each is followed by a rerun in a fresh L1.
pub const RERUNS: usize = 3;

/// Runs the job; while the lab itself fails, runs it again in a fresh L1,
/// at most [`RERUNS`] times. With `rerun_failed`, a job that failed on its
/// own is also run once more; the outcome then lists the earlier attempts
/// (a pass after a failure is flaky, and reported so).
pub fn run_retrying(image: &LabImage, job: &Job, rerun_failed: bool) -> Result<Outcome> {
    let mut outcome = run(image, job, &job.name)?;
    let mut earlier = Vec::new();
    let mut failed_once = false;
    for attempt in 1..=RERUNS {
        let Some(failed) = run_again(&outcome.verdict, rerun_failed, failed_once) else {
            break;
        };
        failed_once |= failed;
        earlier.push(format!("{}: {}", job.name, outcome.describe()));
        let name = match attempt {
            1 => format!("{}-rerun", job.name),
            n => format!("{}-rerun{n}", job.name),
        };
        eprintln!(
            "lab: {}: {}\n{}\nlab: rerunning {} in a fresh L1 ({name})",
            job.name,
            outcome.describe(),
            outcome.console_tail(30),
            job.name
        );
        outcome = run(image, job, &name)?;
    }
    outcome.earlier = earlier;
    Ok(outcome)
}

/// Whether a job that ended with `verdict` runs again, and if so whether
/// this attempt was the job's own failure (`Some(true)`) rather than the
/// lab's (`Some(false)`). The job's own failure is rerun only once.
pub fn run_again(verdict: &Verdict, rerun_failed: bool, failed_once: bool) -> Option<bool> {
    if verdict.is_lab_failure() {
        return Some(false);
    }
    let failed = *verdict != Verdict::Done(0);
    (rerun_failed && failed && !failed_once).then_some(true)
}

/// Boots L1 once for `job`, in `target/lab/runs/RUN/`.
pub fn run(image: &LabImage, job: &Job, run: &str) -> Result<Outcome> {
    let dir = paths::lab().join("runs").join(run);
    let share = dir.join("share");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&share)?;
    fs::write(share.join("cmd.sh"), &job.script)?;
    let console_log = dir.join("l1-console.log");
    File::create(&console_log)?;
    let stage2 = paths::script("stage2.sh");
    for path in [&share, &stage2] {
        if path.to_string_lossy().contains(char::is_whitespace) {
            bail!(
                "the lab cannot pass {} on a kernel command line",
                path.display()
            );
        }
        // L1 mounts its own file systems over these (over /tmp only when
        // the checkout is elsewhere: see l1-init.sh).
        if ["/run", "/dev", "/proc", "/sys"]
            .iter()
            .any(|top| path.starts_with(top))
        {
            bail!(
                "the lab cannot use {}: L1 mounts over its top directory (set CARGO_TARGET_DIR elsewhere)",
                path.display()
            );
        }
    }
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg,thread=multi", "-smp", "2"])
        .args(["-cpu", "qemu64,+svm,+npt", "-m", "4096"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console_log.display()))
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.l1_initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet lab.out={} lab.stage2={}",
            share.display(),
            stage2.display()
        ))
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=labout,security_model=none,multidevs=remap",
            share.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("qemu.stderr.log"))?);
    eprintln!("lab: {run}: booting L1 (log {})", console_log.display());
    if std::env::var_os("LAB_VERBOSE").is_some() {
        eprintln!("$ {}", cmd::display(&qemu));
    }
    let start = Instant::now();
    // SAFETY: prctl is async-signal-safe; this only asks for QEMU to be
    // killed when this process dies, so no L1 outlives an interrupted xtask.
    unsafe {
        qemu.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = qemu.spawn().context("starting qemu-system-x86_64")?;
    let mut watch = Watch::new(File::open(&console_log)?, job.echo);
    let mut heartbeat = Heartbeat::new(share.join("heartbeat"));
    let mut timed_out = false;
    let mut hung = false;
    // When the host asked L1 for its blocked tasks (out of time).
    let mut asked_dump: Option<Instant> = None;
    loop {
        watch.read()?;
        if child.try_wait()?.is_some() {
            break;
        }
        let fatal = watch.fatal_since.is_some_and(|t| t.elapsed() > FATAL_GRACE);
        hung = heartbeat.stale();
        let out_of_time = start.elapsed() > job.timeout;
        if out_of_time && asked_dump.is_none() && !hung {
            // Stage 2 still beats: have it show what is stuck before the kill.
            asked_dump = Some(Instant::now());
            let _ = fs::write(share.join("dump-request"), "");
            eprintln!("lab: {run}: out of time; asking L1 for its blocked tasks (sysrq w)");
        }
        timed_out = out_of_time && (hung || asked_dump.is_some_and(|t| t.elapsed() > DUMP_GRACE));
        if fatal || timed_out || hung {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        if watch.booted.is_none() && watch.console.contains("LAB-L1 stage2") {
            watch.booted = Some(start.elapsed());
        }
        thread::sleep(TICK);
    }
    watch.read()?;
    watch.flush_echo();
    let status = fs::read_to_string(share.join("status"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let verdict = classify(status, watch.trouble.clone(), hung, timed_out);
    if let (Verdict::Done(0), Some(line)) = (&verdict, &watch.trouble) {
        eprintln!("lab: {run}: warning: L1's console shows {line:?} (the job passed)");
    }
    let booted = watch.booted.or_else(|| {
        // Stage 2 began but the loop missed it between two looks.
        watch
            .console
            .contains("LAB-L1 stage2")
            .then(|| start.elapsed())
    });
    Ok(Outcome {
        verdict,
        share,
        console_log,
        console: watch.console,
        l1_boot: booted,
        elapsed: start.elapsed(),
        earlier: Vec::new(),
    })
}

/// Tells a lab failure from the job's own: kernel trouble counts only when
/// the job did not succeed (a warning in L1 does not fail a passing job).
fn classify(status: Option<i32>, trouble: Option<String>, hung: bool, timed_out: bool) -> Verdict {
    match (status, trouble) {
        (Some(0), _) => Verdict::Done(0),
        (_, Some(line)) => Verdict::L1Trouble(line),
        (Some(s), None) => Verdict::Done(s),
        (None, None) if hung => Verdict::L1Hung,
        (None, None) if timed_out => Verdict::Timeout,
        (None, None) => Verdict::L1Died,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reruns_lab_failures_and_at_most_one_own_failure() {
        assert_eq!(run_again(&Verdict::L1Hung, false, false), Some(false));
        assert_eq!(run_again(&Verdict::L1Hung, true, true), Some(false));
        assert_eq!(run_again(&Verdict::Done(0), true, false), None);
        assert_eq!(run_again(&Verdict::Done(101), false, false), None);
        assert_eq!(run_again(&Verdict::Done(101), true, false), Some(true));
        assert_eq!(run_again(&Verdict::Done(101), true, true), None);
        assert_eq!(run_again(&Verdict::Timeout, true, false), Some(true));
    }

    #[test]
    fn classifies_runs() {
        let line = "Kernel panic - not syncing".to_string();
        let panic = Some(line.clone());
        assert_eq!(
            classify(Some(0), panic.clone(), false, false),
            Verdict::Done(0)
        );
        assert_eq!(classify(Some(1), None, false, false), Verdict::Done(1));
        assert_eq!(
            classify(Some(1), panic.clone(), false, false),
            Verdict::L1Trouble(line.clone())
        );
        assert_eq!(classify(None, panic, false, true), Verdict::L1Trouble(line));
        assert_eq!(classify(None, None, true, false), Verdict::L1Hung);
        assert_eq!(classify(None, None, false, true), Verdict::Timeout);
        assert_eq!(classify(None, None, false, false), Verdict::L1Died);
        assert!(Verdict::L1Hung.is_lab_failure());
        assert!(!Verdict::Timeout.is_lab_failure());
        assert!(!Verdict::Done(1).is_lab_failure());
    }
}
