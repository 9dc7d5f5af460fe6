//! `cargo xtask lab`: the e2e tests inside L1. Each top-level module of the
//! e2e crate with lab tests is a scenario, run in its own short L1 boot
//! (rerun in a fresh L1, at most twice, if the lab itself fails).

use crate::artifacts;
use crate::cmd;
use crate::image::LabImage;
use crate::lab::{self, Job, Verdict};
use crate::paths;
use crate::setup;
use anyhow::{bail, Result};
use e2e::env as vars;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Scenarios that run before the others: QEMU on the lab's image says
/// whether the lab works at all.
const FIRST: &[&str] = &["qemu"];

pub struct Options {
    /// Go on with the other scenarios after one fails.
    pub keep_going: bool,
    /// Time limit of one L1 boot.
    pub timeout: Duration,
    /// Scenario names; empty for all.
    pub scenarios: Vec<String>,
    /// Only list the scenarios and their tests.
    pub list: bool,
}

/// Counts over the scenarios that ran.
#[derive(Default)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
    /// One line per scenario.
    pub lines: Vec<String>,
}

impl Tally {
    pub fn ok(&self) -> bool {
        self.failed == 0
    }
}

/// Builds everything, runs the selected scenarios and prints their results.
pub fn run(opts: &Options) -> Result<Tally> {
    let image = setup::run()?;
    let moatvm = artifacts::moatvm_or_missing();
    let e2e = artifacts::e2e_tests()?;
    let scenarios = scenarios(artifacts::lab_tests(&e2e)?);
    if opts.list {
        for (name, tests) in &scenarios {
            println!("{name}: {}", tests.join(" "));
        }
        return Ok(Tally::default());
    }
    for wanted in &opts.scenarios {
        if !scenarios.iter().any(|(name, _)| name == wanted) {
            let known: Vec<&str> = scenarios.iter().map(|(n, _)| n.as_str()).collect();
            bail!(
                "no lab scenario {wanted:?} (there are: {})",
                known.join(", ")
            );
        }
    }
    let mut tally = Tally::default();
    for (name, tests) in &scenarios {
        if !opts.scenarios.is_empty() && !opts.scenarios.contains(name) {
            continue;
        }
        let failed_before = tally.failed;
        run_scenario(&image, &moatvm, &e2e, name, tests, opts.timeout, &mut tally)?;
        if tally.failed > failed_before && !opts.keep_going {
            println!("lab: stopping after the first failed scenario (--keep-going runs the rest)");
            break;
        }
    }
    println!("\n==== lab summary ====");
    for line in &tally.lines {
        println!("{line}");
    }
    Ok(tally)
}

/// `cargo xtask l1 COMMAND`: runs a shell command in L1 (rerun once on a
/// lab failure), echoing L1's console; fails unless the command succeeds.
pub fn shell(command: &str, timeout: Duration) -> Result<()> {
    let image = setup::run()?;
    let moatvm = artifacts::moatvm_or_missing();
    let mut script = exports(&image, &moatvm, "\"$LAB_OUT/vms\"")?;
    writeln!(script, "cd {} || exit 1", cmd::quote(paths::root()))?;
    writeln!(script, "{command}")?;
    let job = Job {
        name: "l1".into(),
        script,
        timeout,
        echo: Some(""),
    };
    let outcome = lab::run_retrying(&image, &job, false)?;
    println!(
        "l1: {} (files: {})",
        outcome.describe(),
        outcome.share.display()
    );
    if outcome.verdict != Verdict::Done(0) {
        bail!("the command failed in L1");
    }
    Ok(())
}

/// Groups test names (`module::test`) by module, [`FIRST`] first.
fn scenarios(tests: Vec<String>) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for test in tests {
        let module = test.split("::").next().unwrap_or(&test).to_string();
        match groups.iter_mut().find(|(m, _)| *m == module) {
            Some((_, list)) => list.push(test),
            None => groups.push((module, vec![test])),
        }
    }
    groups.sort_by_key(|(m, _)| !FIRST.contains(&m.as_str()));
    groups
}

/// The environment the e2e tests read, as `export` lines for `cmd.sh`.
pub fn exports(image: &LabImage, moatvm: &Path, out: &str) -> Result<String> {
    let qemu = cmd::which("qemu-system-x86_64")?;
    let mut text = String::new();
    for (var, value) in [
        (vars::MOATVM, moatvm),
        (vars::KERNEL, image.kernel.as_path()),
        (vars::INITRD, image.guest_initrd.as_path()),
        (vars::QEMU, qemu.as_path()),
    ] {
        writeln!(text, "export {var}={}", cmd::quote(value))?;
    }
    writeln!(text, "export {}={out}", vars::OUT)?;
    if let Some(v) = std::env::var_os(vars::VERBOSE) {
        writeln!(text, "export {}={}", vars::VERBOSE, cmd::quote(v))?;
    }
    writeln!(text, "mkdir -p {out}")?;
    Ok(text)
}

fn run_scenario(
    image: &LabImage,
    moatvm: &Path,
    e2e: &Path,
    name: &str,
    tests: &[String],
    timeout: Duration,
    tally: &mut Tally,
) -> Result<()> {
    println!("\n==== lab scenario {name}: {} tests ====", tests.len());
    let mut record = Attempts::new(tests);
    let mut own_failure = false;
    let mut attempt = 0;
    let outcome = loop {
        let run = match attempt {
            0 => name.to_string(),
            1 => format!("{name}-rerun"),
            n => format!("{name}-rerun{n}"),
        };
        let outcome = run_tests(image, moatvm, e2e, name, &run, &record.remaining, timeout)?;
        let log = read_log(&outcome);
        print!("{log}");
        record.note(&log);
        if record.remaining.is_empty() || attempt == lab::RERUNS {
            break outcome;
        }
        // Lab failures, and once the tests' own failure, earn another
        // attempt in a fresh L1 for the tests that have not passed yet.
        let Some(failed) = lab::run_again(&outcome.verdict, true, own_failure) else {
            break outcome;
        };
        own_failure |= failed;
        record
            .earlier
            .push(format!("{run}: {}", outcome.describe()));
        println!(
            "lab: {run}: {}\n{}\nlab: rerunning {} in a fresh L1",
            outcome.describe(),
            outcome.console_tail(30),
            record.remaining.join(", ")
        );
        attempt += 1;
    };
    let ok = record.remaining.is_empty();
    if !ok {
        println!(
            "--- last lines of L1's console ({}):\n{}\n---",
            outcome.console_log.display(),
            outcome.console_tail(30)
        );
        for test in &record.remaining {
            println!("lab: FAILED {name}: {test}");
        }
    }
    for attempt in &record.earlier {
        println!("lab: earlier attempt of {attempt}");
    }
    // A test that failed in one attempt and passed in a later one is flaky.
    let flaky: Vec<&String> = record
        .failed_once
        .iter()
        .filter(|t| record.passed.contains(*t))
        .collect();
    for test in &flaky {
        println!("lab: FLAKY {name}: {test} failed in an earlier attempt");
    }
    let status = match (ok, flaky.is_empty()) {
        (false, _) => "FAILED",
        (true, true) => "ok",
        (true, false) => "FLAKY",
    };
    let (passed, failed) = (record.passed.len() as u32, record.remaining.len() as u32);
    let line = format!(
        "lab: {name:<10} {status:<7} {passed} passed, {failed} failed  [{}]  logs: {}",
        outcome.describe(),
        outcome.share.parent().unwrap_or(&outcome.share).display()
    );
    println!("{line}");
    tally.passed += passed;
    tally.failed += failed;
    tally.lines.push(line);
    Ok(())
}

/// The e2e log of a run (empty if the job never wrote one).
fn read_log(outcome: &lab::Outcome) -> String {
    std::fs::read_to_string(outcome.share.join("e2e.log")).unwrap_or_default()
}

/// Runs `tests` of scenario `name` in one L1 boot (`target/lab/runs/RUN`).
fn run_tests(
    image: &LabImage,
    moatvm: &Path,
    e2e: &Path,
    name: &str,
    run: &str,
    tests: &[String],
    timeout: Duration,
) -> Result<lab::Outcome> {
    let mut script = exports(image, moatvm, "\"$LAB_OUT/e2e\"")?;
    // The tests' errors say what failed; backtraces would only bury that.
    writeln!(script, "export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0")?;
    writeln!(script, "cd {} || exit 1", cmd::quote(paths::root()))?;
    writeln!(script, "echo 'LAB-JOB e2e {name} starting'")?;
    let mut line = format!(
        "{} --include-ignored --test-threads=1 --exact",
        cmd::quote(e2e)
    );
    for test in tests {
        write!(line, " {}", cmd::quote(test))?;
    }
    writeln!(script, "{line} > \"$LAB_OUT/e2e.log\" 2>&1")?;
    // Tell the host's watcher (on L1's console) that a guest reset early:
    // a lab failure, worth a rerun, when the job failed.
    writeln!(script, "status=$?")?;
    writeln!(
        script,
        "grep -q '{marker}' \"$LAB_OUT/e2e.log\" && echo '{marker} in e2e.log'",
        marker = e2e::process::EARLY_RESET_MARKER
    )?;
    writeln!(script, "exit $status")?;
    let job = Job {
        name: name.to_string(),
        script,
        timeout,
        echo: Some("LAB-"),
    };
    lab::run(image, &job, run)
}

/// What the attempts at one scenario's tests have shown so far.
struct Attempts {
    /// Tests that have not passed yet (the next attempt runs these).
    remaining: Vec<String>,
    /// Tests that passed in some attempt.
    passed: Vec<String>,
    /// Tests that failed in some attempt.
    failed_once: Vec<String>,
    /// One line per earlier attempt: its run and how it ended.
    earlier: Vec<String>,
}

impl Attempts {
    fn new(tests: &[String]) -> Attempts {
        Attempts {
            remaining: tests.to_vec(),
            passed: Vec::new(),
            failed_once: Vec::new(),
            earlier: Vec::new(),
        }
    }

    /// Takes in one attempt's libtest output.
    fn note(&mut self, log: &str) {
        for test in passing(log) {
            if let Some(i) = self.remaining.iter().position(|t| t == test) {
                self.passed.push(self.remaining.remove(i));
            }
        }
        for test in failing(log) {
            if !self.failed_once.iter().any(|t| t == test) {
                self.failed_once.push(test.to_string());
            }
        }
    }
}

/// Names of the tests libtest reported as passed.
fn passing(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... ok"))
        .collect()
}

/// Names of the tests libtest reported as failed.
fn failing(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_module_with_qemu_first() {
        let tests = ["boot::a", "boot::b", "qemu::c", "net::d"]
            .map(String::from)
            .to_vec();
        let groups = scenarios(tests);
        let names: Vec<&str> = groups.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["qemu", "boot", "net"]);
        assert_eq!(groups[1].1, ["boot::a", "boot::b"]);
    }

    #[test]
    fn reads_libtest_output() {
        let log = "test boot::a ... ok\ntest boot::b ... FAILED\n\nfailures:\n\n\
                   test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.1s\n";
        assert_eq!(passing(log), ["boot::a"]);
        assert_eq!(failing(log), ["boot::b"]);
        assert!(passing("nothing").is_empty());
    }

    #[test]
    fn later_attempts_run_only_what_has_not_passed() {
        let tests = ["s::a", "s::b", "s::c"].map(String::from);
        let mut record = Attempts::new(&tests);
        // First attempt: a passes, b fails, L1 hangs before c.
        record.note("test s::a ... ok\ntest s::b ... FAILED\n");
        assert_eq!(record.remaining, ["s::b", "s::c"]);
        // Second attempt: both pass.
        record.note("test s::b ... ok\ntest s::c ... ok\n");
        assert!(record.remaining.is_empty());
        assert_eq!(record.passed, ["s::a", "s::b", "s::c"]);
        assert_eq!(record.failed_once, ["s::b"]);
    }
}
