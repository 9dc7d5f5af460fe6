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
    let mut script = exports(image, moatvm, "\"$LAB_OUT/e2e\"")?;
    // The tests' errors say what failed; backtraces would only bury that.
    writeln!(script, "export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0")?;
    writeln!(script, "cd {} || exit 1", cmd::quote(paths::root()))?;
    writeln!(script, "echo 'LAB-JOB e2e {name} starting'")?;
    let mut run = format!(
        "{} --include-ignored --test-threads=1 --exact",
        cmd::quote(e2e)
    );
    for test in tests {
        write!(run, " {}", cmd::quote(test))?;
    }
    writeln!(script, "{run} > \"$LAB_OUT/e2e.log\" 2>&1")?;
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
    let outcome = lab::run_retrying(image, &job, true)?;
    let log = std::fs::read_to_string(outcome.share.join("e2e.log")).unwrap_or_default();
    print!("{log}");
    let (passed, mut failed) = counts(&log);
    let ok = outcome.verdict == Verdict::Done(0) && failed == 0 && passed > 0;
    if !ok {
        if passed + failed == 0 {
            failed = tests.len() as u32;
        }
        println!(
            "--- last lines of L1's console ({}):\n{}\n---",
            outcome.console_log.display(),
            outcome.console_tail(30)
        );
        for test in failing(&log) {
            println!("lab: FAILED {name}: {test}");
        }
    }
    // Earlier attempts: a lab failure, or (once) the job's own failure. A
    // pass after a failure is flaky: say so, with the tests that failed.
    for attempt in &outcome.earlier {
        println!("lab: earlier attempt of {attempt}");
    }
    let first_log = paths::lab()
        .join("runs")
        .join(name)
        .join("share")
        .join("e2e.log");
    let first_log = if outcome.earlier.is_empty() {
        String::new()
    } else {
        std::fs::read_to_string(first_log).unwrap_or_default()
    };
    let flaky: Vec<&str> = failing(&first_log);
    for test in &flaky {
        println!("lab: FLAKY {name}: {test} failed in the first attempt");
    }
    let status = match (ok, flaky.is_empty()) {
        (false, _) => "FAILED",
        (true, true) => "ok",
        (true, false) => "FLAKY",
    };
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

/// `N passed` and `N failed` from libtest's `test result:` line.
fn counts(log: &str) -> (u32, u32) {
    let Some(line) = log.lines().rev().find(|l| l.starts_with("test result:")) else {
        return (0, 0);
    };
    let field = |word: &str| -> u32 {
        line.split([';', '.'])
            .find_map(|part| part.trim().strip_suffix(word)?.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("passed"), field("failed"))
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
                   test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.1s\n";
        assert_eq!(counts(log), (1, 2));
        assert_eq!(failing(log), ["boot::b"]);
        assert_eq!(counts("nothing"), (0, 0));
    }
}
