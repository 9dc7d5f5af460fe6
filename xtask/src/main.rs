//! Project tasks (`cargo xtask ...`), above all the nested lab: real Linux
//! guests under moatvm need real KVM, which here exists only inside L1, a
//! QEMU TCG guest with an SVM CPU (see ../shared/LAB.md).
//!
//! - `setup`: packages, Debian's kernel, the two initramfs images.
//! - `lab`: the e2e tests inside L1, one short L1 boot per scenario.
//! - `test`: `cargo test --workspace`, then `lab`.
//! - `demo`: boots a guest under moatvm and shows its console.
//! - `bench`: moatvm against QEMU as the L2 VMM, in one L1 boot.
//! - `l1`: a shell command inside L1 (for poking at the lab).
//!
//! The lab's scripts and a description of it: `xtask/lab/README.md`.

mod artifacts;
mod bench;
mod bench_cases;
mod bench_proc;
mod bench_report;
mod cmd;
mod cpio;
mod demo;
mod exit_cost;
mod image;
mod kernel;
mod lab;
mod lab_watch;
mod modules;
mod paths;
mod setup;
mod suite;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "moatvm's project tasks", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the lab's packages, fetch the kernel, build the initramfs images.
    Setup,
    /// Run the e2e tests inside the nested lab (one L1 boot per scenario).
    Lab {
        /// Go on after a scenario fails.
        #[arg(long)]
        keep_going: bool,
        /// Kill an L1 boot after this many minutes.
        #[arg(long, default_value_t = 15)]
        timeout_mins: u64,
        /// List the scenarios and their tests.
        #[arg(long)]
        list: bool,
        /// Scenarios to run (modules of the e2e crate); all if none.
        scenarios: Vec<String>,
    },
    /// The whole suite: `cargo test --workspace`, then every lab scenario.
    Test {
        /// Kill an L1 boot after this many minutes.
        #[arg(long, default_value_t = 15)]
        timeout_mins: u64,
    },
    /// Boot a Linux guest under moatvm (inside L1 unless the host has
    /// hardware virtualization) and show its console.
    Demo(demo::Options),
    /// Compare moatvm with QEMU as the L2 VMM (medians; one L1 boot).
    Bench(bench::Options),
    /// Run a shell command inside L1, showing L1's console (for poking at
    /// the lab; the share is $LAB_OUT, the e2e variables are set).
    L1 {
        /// Kill L1 after this many minutes.
        #[arg(long, default_value_t = 15)]
        timeout_mins: u64,
        /// The command (one shell word, or several joined by spaces).
        #[arg(required = true)]
        command: Vec<String>,
    },
    /// (Inside L1, run by `bench`.) Measure the cases and write the runs.
    #[command(hide = true)]
    BenchInner(bench_cases::InnerOptions),
}

fn main() -> ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Setup => {
            let image = setup::run()?;
            println!("kernel:        {}", image.kernel.display());
            println!("L1 initrd:     {}", image.l1_initrd.display());
            println!("guest initrd:  {}", image.guest_initrd.display());
        }
        Task::Lab {
            keep_going,
            timeout_mins,
            list,
            scenarios,
        } => {
            let tally = suite::run(&suite::Options {
                keep_going,
                timeout: Duration::from_secs(timeout_mins * 60),
                scenarios,
                list,
            })?;
            if !list {
                finish(&tally)?;
            }
        }
        Task::Test { timeout_mins } => {
            // Packages first: crates link against some (libslirp).
            setup::packages()?;
            let unit = cmd::run(cmd::cargo().args(["test", "--workspace"]));
            if let Err(e) = &unit {
                println!("xtask test: cargo test --workspace failed: {e:#}");
            }
            let tally = suite::run(&suite::Options {
                keep_going: true,
                timeout: Duration::from_secs(timeout_mins * 60),
                scenarios: Vec::new(),
                list: false,
            })?;
            finish(&tally)?;
            unit?;
        }
        Task::Demo(opts) => demo::run(&opts)?,
        Task::Bench(opts) => bench::run(&opts)?,
        Task::BenchInner(opts) => bench_cases::inner(&opts)?,
        Task::L1 {
            timeout_mins,
            command,
        } => suite::shell(&command.join(" "), Duration::from_secs(timeout_mins * 60))?,
    }
    Ok(())
}

/// Prints the closing count line and fails if any lab test failed.
fn finish(tally: &suite::Tally) -> Result<()> {
    println!("e2e: {} passed, {} failed", tally.passed, tally.failed);
    if !tally.ok() {
        bail!("{} lab test(s) failed", tally.failed);
    }
    Ok(())
}
