//! The benchmark's files: `target/bench/latest.json` (every run) and
//! `latest.md` (a table), with the date and the machine.

use crate::bench::{better, fmt, median, Outcome};
use crate::bench_cases::Case;
use crate::cmd;
use crate::paths;
use anyhow::Result;
use std::fmt::Write as _;
use std::fs;
use std::process::Command;

/// A JSON string literal.
fn json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = cmd::output(Command::new("uname").arg("-r")).unwrap_or_default();
    format!(
        "{model}, {cores} cores, Linux {}; L1: QEMU TCG qemu64,+svm,+npt, 2 vCPUs, 4 GiB",
        kernel.trim()
    )
}

/// Writes both files.
pub fn write(results: &[(&Case, Outcome)], runs: usize, quick: bool, lab: &str) -> Result<()> {
    let date = cmd::output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))?;
    let date = date.trim();
    let machine = machine();
    let mut js = format!(
        "{{\n  \"date\": {},\n  \"machine\": {},\n  \"lab\": {},\n  \"runs\": {runs},\n  \"quick\": {quick},\n  \"cases\": [\n",
        json(date),
        json(&machine),
        json(lab)
    );
    let mut md = format!(
        "# moatvm benchmark\n\n- date: {date}\n- machine: {machine}\n- lab: {lab}\n- runs per VMM: {runs}\n\n\
         | case | unit | better | moatvm | qemu | moatvm/qemu |\n|---|---|---|---|---|---|\n"
    );
    for (i, (case, outcome)) in results.iter().enumerate() {
        let (unit, better) = (case.unit.label(), better(case.unit));
        let head = format!(
            "{{\"case\": {}, \"unit\": {}, \"better\": {}",
            json(case.name),
            json(unit),
            json(better)
        );
        match outcome {
            Outcome::Skipped(why) => {
                write!(
                    js,
                    "    {head}, \"status\": \"skipped\", \"reason\": {}}}",
                    json(why)
                )?;
                writeln!(md, "| {} | {unit} | {better} | – | – | {why} |", case.name)?;
            }
            Outcome::Failed(errors) => {
                let list: Vec<String> = errors
                    .iter()
                    .map(|(vmm, e)| format!("{}: {}", json(vmm), json(e)))
                    .collect();
                write!(
                    js,
                    "    {head}, \"status\": \"error\", \"errors\": {{{}}}}}",
                    list.join(", ")
                )?;
                let who: Vec<&str> = errors.iter().map(|(v, _)| *v).collect();
                writeln!(
                    md,
                    "| {} | {unit} | {better} | – | – | error ({}) |",
                    case.name,
                    who.join(", ")
                )?;
            }
            Outcome::Measured { moatvm, qemu } => {
                let (m, q) = (median(moatvm), median(qemu));
                let list = |v: &[f64]| {
                    v.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                write!(
                    js,
                    "    {head}, \"status\": \"ok\", \"moatvm\": {{\"median\": {m}, \"runs\": [{}]}}, \
                     \"qemu\": {{\"median\": {q}, \"runs\": [{}]}}, \"ratio\": {}}}",
                    list(moatvm),
                    list(qemu),
                    m / q
                )?;
                writeln!(
                    md,
                    "| {} | {unit} | {better} | {} | {} | {:.3} |",
                    case.name,
                    fmt(case.unit, m),
                    fmt(case.unit, q),
                    m / q
                )?;
            }
        }
        js.push_str(if i + 1 < results.len() { ",\n" } else { "\n" });
    }
    js.push_str("  ]\n}\n");
    let dir = paths::target().join("bench");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("latest.json"), js)?;
    fs::write(dir.join("latest.md"), md)?;
    println!("bench: wrote {}/latest.json and latest.md", dir.display());
    Ok(())
}
