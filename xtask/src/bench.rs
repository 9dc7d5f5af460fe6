//! `cargo xtask bench`: moatvm against QEMU as the L2 VMM, alternating, in
//! one L1 boot; prints one `BENCH` line per case with the medians and their
//! ratio, and has `target/bench/latest.json` and `latest.md` written
//! (`bench_report.rs`). Absolute
//! figures mean little under TCG: the ratio is the result.

use crate::artifacts;
use crate::bench_cases::{Case, Unit, CASES};
use crate::bench_report;
use crate::cmd;
use crate::lab::{self, Job, Verdict};
use crate::setup;
use crate::suite;
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Options {
    /// 3 runs per VMM and case instead of 5.
    #[arg(long)]
    quick: bool,
    /// Only the cases whose name contains this (or, comma-separated, any
    /// of these).
    #[arg(long)]
    filter: Option<String>,
    /// Kill L1 after this many minutes.
    #[arg(long, default_value_t = 40)]
    timeout_mins: u64,
}

/// Runs per VMM: (moatvm, qemu) figures, or the first error of each.
#[derive(Default)]
struct Runs {
    values: HashMap<&'static str, Vec<f64>>,
    errors: HashMap<&'static str, String>,
}

/// The outcome of one case.
pub(crate) enum Outcome {
    /// Not measured, and why.
    Skipped(&'static str),
    Failed(Vec<(&'static str, String)>),
    Measured {
        moatvm: Vec<f64>,
        qemu: Vec<f64>,
    },
}

pub fn run(opts: &Options) -> Result<()> {
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| {
            opts.filter
                .as_ref()
                .is_none_or(|f| f.split(',').any(|part| c.name.contains(part)))
        })
        .collect();
    if cases.is_empty() {
        bail!("no bench case matches {:?}", opts.filter);
    }
    let runs = if opts.quick { 3 } else { 5 };
    let left_out = |c: &Case| opts.quick && opts.filter.is_none() && c.full_only;
    let measured: Vec<&str> = cases
        .iter()
        .filter(|c| c.probe.is_some() && !left_out(c))
        .map(|c| c.name)
        .collect();
    let mut by_case: HashMap<String, Runs> = HashMap::new();
    let mut lab_note = String::new();
    if !measured.is_empty() {
        let image = setup::run()?;
        let moatvm = artifacts::moatvm_or_missing();
        let xtask = std::env::current_exe()?;
        // The runs of the cases done so far. When L1 itself fails (a hang,
        // a panic), a fresh L1 measures only the cases not done yet: a
        // case is done once each VMM has all its runs (or its error).
        let mut tsv = String::new();
        let mut todo = measured.clone();
        for attempt in 0..=lab::RERUNS {
            let name = match attempt {
                0 => "bench".to_string(),
                1 => "bench-rerun".to_string(),
                n => format!("bench-rerun{n}"),
            };
            let mut script = suite::exports(&image, &moatvm, "\"$LAB_OUT/vms\"")?;
            writeln!(
                script,
                "{} bench-inner --runs {runs} --cases {} --results \"$LAB_OUT/runs.tsv\"",
                cmd::quote(&xtask),
                todo.join(",")
            )?;
            let job = Job {
                name: name.clone(),
                script,
                timeout: Duration::from_secs(opts.timeout_mins * 60),
                echo: Some("LAB-"),
            };
            let outcome = lab::run(&image, &job, &name)?;
            let got = fs::read_to_string(outcome.share.join("runs.tsv")).unwrap_or_default();
            let done = done_cases(&got, runs);
            for line in got.lines() {
                if line
                    .split('\t')
                    .nth(1)
                    .is_some_and(|c| done.iter().any(|d| d == c))
                {
                    tsv.push_str(line);
                    tsv.push('\n');
                }
            }
            todo.retain(|c| !done.iter().any(|d| d == c));
            if outcome.verdict == Verdict::Done(0) {
                break;
            }
            println!(
                "bench: the lab run failed: {}\n{}",
                outcome.describe(),
                outcome.console_tail(30)
            );
            let _ = write!(lab_note, "{name}: {}; ", outcome.describe());
            if !outcome.verdict.is_lab_failure() || todo.is_empty() {
                break;
            }
            println!("bench: again in a fresh L1 for {}", todo.join(","));
        }
        by_case = parse_runs(&tsv);
        lab_note = format!("{lab_note} L2 kernel {}", image.kernel_version);
    }

    let results: Vec<(&Case, Outcome)> = cases
        .iter()
        .map(|case| {
            let outcome = if left_out(case) {
                Outcome::Skipped(FULL_ONLY)
            } else {
                outcome(case, by_case.remove(case.name), runs)
            };
            (*case, outcome)
        })
        .collect();
    println!("{}", header());
    for (case, outcome) in &results {
        println!("{}", line(case, outcome, runs));
    }
    bench_report::write(&results, runs, opts.quick, lab_note.trim())?;
    Ok(())
}

/// The cases of `tsv` (result lines) that are done: each VMM has `runs`
/// figures or an error (after which it is not run again).
fn done_cases(tsv: &str, runs: usize) -> Vec<String> {
    parse_runs(tsv)
        .into_iter()
        .filter(|(_, r)| {
            ["moatvm", "qemu"].iter().all(|vmm| {
                r.errors.contains_key(vmm) || r.values.get(vmm).is_some_and(|v| v.len() >= runs)
            })
        })
        .map(|(case, _)| case)
        .collect()
}

fn parse_runs(tsv: &str) -> HashMap<String, Runs> {
    let mut by_case: HashMap<String, Runs> = HashMap::new();
    for line in tsv.lines() {
        let fields: Vec<&str> = line.splitn(5, '\t').collect();
        let [_, case, vmm, kind, value] = fields[..] else {
            continue;
        };
        let vmm = match vmm {
            "moatvm" => "moatvm",
            "qemu" => "qemu",
            _ => continue,
        };
        let runs = by_case.entry(case.to_string()).or_default();
        match (kind, value.parse::<f64>()) {
            ("ok", Ok(v)) => runs.values.entry(vmm).or_default().push(v),
            _ => {
                runs.errors.entry(vmm).or_insert_with(|| value.to_string());
            }
        }
    }
    by_case
}

/// Why a case is skipped.
pub(crate) const NOT_IMPLEMENTED: &str = "not implemented yet";
pub(crate) const FULL_ONLY: &str = "full run only (not --quick)";

fn outcome(case: &Case, runs: Option<Runs>, want: usize) -> Outcome {
    if case.probe.is_none() {
        return Outcome::Skipped(NOT_IMPLEMENTED);
    }
    let mut runs = runs.unwrap_or_default();
    let mut errors = Vec::new();
    let mut take = |vmm: &'static str| -> Vec<f64> {
        let values = runs.values.remove(vmm).unwrap_or_default();
        if let Some(e) = runs.errors.remove(vmm) {
            errors.push((vmm, e));
        } else if values.len() < want {
            errors.push((vmm, format!("{} of {want} runs happened", values.len())));
        }
        values
    };
    let (moatvm, qemu) = (take("moatvm"), take("qemu"));
    if errors.is_empty() {
        Outcome::Measured { moatvm, qemu }
    } else {
        Outcome::Failed(errors)
    }
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) fn fmt(unit: Unit, value: f64) -> String {
    match unit {
        Unit::Seconds => format!("{value:.3}"),
        Unit::Millis => format!("{value:.2}"),
        Unit::Mbits | Unit::Mib => format!("{value:.1}"),
    }
}

pub(crate) fn better(unit: Unit) -> &'static str {
    if unit.higher_is_better() {
        "higher"
    } else {
        "lower"
    }
}

fn header() -> String {
    let units: Vec<String> = Unit::ALL
        .iter()
        .map(|u| format!("{}={}-is-better", u.label(), better(*u)))
        .collect();
    format!("BENCH-UNITS {}", units.join(" "))
}

/// The first line of an error, shortened, with no spaces.
fn reason(error: &str) -> String {
    let first = error.split(" | ").next().unwrap_or(error);
    let short: String = first.chars().take(120).collect();
    short.replace(' ', "_")
}

fn line(case: &Case, outcome: &Outcome, runs: usize) -> String {
    match outcome {
        Outcome::Skipped(why) => format!("BENCH {} skipped reason={why}", case.name),
        Outcome::Failed(errors) => {
            let what: Vec<String> = errors
                .iter()
                .map(|(vmm, e)| format!("{vmm}_error={}", reason(e)))
                .collect();
            format!("BENCH {} error {}", case.name, what.join(" "))
        }
        Outcome::Measured { moatvm, qemu } => {
            let (m, q) = (median(moatvm), median(qemu));
            format!(
                "BENCH {} moatvm={} qemu={} ratio={:.3} unit={} runs={runs}",
                case.name,
                fmt(case.unit, m),
                fmt(case.unit, q),
                m / q,
                case.unit.label()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_is_done_when_each_vmm_has_its_runs_or_an_error() {
        let tsv = "RUN\tboot\tmoatvm\tok\t1.0\nRUN\tboot\tqemu\tok\t2.0\n\
                   RUN\tboot\tmoatvm\tok\t1.5\nRUN\tboot\tqemu\terror\tguest reset\n\
                   RUN\tmem\tmoatvm\tok\t2.6\nRUN\tmem\tqemu\tok\t49\n\
                   RUN\tmem\tmoatvm\tok\t2.7\n";
        // boot: moatvm 2 of 2 runs, qemu an error; mem: qemu 1 of 2 (L1
        // hung there).
        assert_eq!(done_cases(tsv, 2), ["boot"]);
        assert!(done_cases(tsv, 3).is_empty());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn a_failing_vmm_gives_an_error_line() {
        let tsv = "RUN\tboot\tqemu\tok\t2.0\nRUN\tboot\tmoatvm\terror\texited (1) | tail\n\
                   RUN\tboot\tqemu\tok\t3.0\nRUN\tboot\tqemu\tok\t4.0\n";
        let mut runs = parse_runs(tsv);
        let case = &CASES[0];
        let out = outcome(case, runs.remove("boot"), 3);
        let text = line(case, &out, 3);
        assert!(
            text.starts_with("BENCH boot error moatvm_error=exited_(1)"),
            "{text}"
        );
        assert!(!text.contains("qemu_error"), "{text}");
    }

    #[test]
    fn measured_line_has_medians_and_ratio() {
        let tsv = "RUN\tboot\tqemu\tok\t2.0\nRUN\tboot\tmoatvm\tok\t1.0\n";
        let case = &CASES[0];
        let out = outcome(case, parse_runs(tsv).remove("boot"), 1);
        assert_eq!(
            line(case, &out, 1),
            "BENCH boot moatvm=1.000 qemu=2.000 ratio=0.500 unit=s runs=1"
        );
        let unlanded = crate::bench_cases::Case {
            name: "rtl8139-tx",
            unit: crate::bench_cases::Unit::Mbits,
            probe: None,
            full_only: false,
        };
        assert!(matches!(
            outcome(&unlanded, None, 1),
            Outcome::Skipped(NOT_IMPLEMENTED)
        ));
    }
}
