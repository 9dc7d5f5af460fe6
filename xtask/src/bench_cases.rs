//! The benchmark cases (a table: one entry per case) and their measurement,
//! which runs inside L1 (`xtask bench-inner`, started by `bench`). Each run
//! is one line in the results file:
//! `RUN<TAB>case<TAB>vmm<TAB>ok<TAB>value` or `...<TAB>error<TAB>message`.

use anyhow::{ensure, Result};
use e2e::checks::BOOT_TIMEOUT;
use e2e::env::LabEnv;
use e2e::guest::Guest;
use e2e::vmm::Vmm;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// The unit of a case's figure, and which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Mbits,
    Millis,
    Mib,
}

impl Unit {
    pub const ALL: [Unit; 4] = [Unit::Seconds, Unit::Mbits, Unit::Millis, Unit::Mib];

    pub fn label(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::Mbits => "Mbit/s",
            Unit::Millis => "ms",
            Unit::Mib => "MiB",
        }
    }

    pub fn higher_is_better(self) -> bool {
        self == Unit::Mbits
    }
}

/// Measures one run of a case under a VMM (inside L1).
pub type Measure = fn(&LabEnv, Vmm, usize) -> Result<f64>;

/// A benchmark case; `measure: None` is not implemented yet.
pub struct Case {
    pub name: &'static str,
    pub unit: Unit,
    pub measure: Option<Measure>,
}

const fn case(name: &'static str, unit: Unit, measure: Option<Measure>) -> Case {
    Case {
        name,
        unit,
        measure,
    }
}

/// Every case, in report order.
pub const CASES: &[Case] = &[
    case("boot", Unit::Seconds, Some(boot)),
    case("virtio-tap-tx", Unit::Mbits, None),
    case("virtio-tap-rx", Unit::Mbits, None),
    case("vhost-tx", Unit::Mbits, None),
    case("vhost-rx", Unit::Mbits, None),
    case("e1000-tx", Unit::Mbits, None),
    case("e1000-rx", Unit::Mbits, None),
    case("user-tx", Unit::Mbits, None),
    case("user-rx", Unit::Mbits, None),
    case("ping-virtio", Unit::Millis, None),
    case("mem", Unit::Mib, None),
];

/// `boot`: wall seconds from the VMM's start to its exit, for a guest whose
/// init reboots at once. The run counts only if the guest's init started,
/// it rebooted and the VMM exited with status 0.
fn boot(env: &LabEnv, vmm: Vmm, run: usize) -> Result<f64> {
    let guest = Guest::new().word("quiet").action("reboot");
    let log = format!("bench-boot-{}-{run}", vmm.name());
    let start = Instant::now();
    let mut vm = vmm.boot(env, &guest, &log)?;
    vm.expect_success(BOOT_TIMEOUT)?;
    let seconds = start.elapsed().as_secs_f64();
    let lines = vm.lines();
    ensure!(
        lines.iter().any(|l| l.contains("MOAT start")),
        "the guest's init never started\n{}",
        vm.report()
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("reboot: Restarting system")),
        "the guest did not reboot\n{}",
        vm.report()
    );
    Ok(seconds)
}

/// Options of `xtask bench-inner`.
#[derive(clap::Args)]
pub struct InnerOptions {
    /// Runs per VMM and case.
    #[arg(long)]
    runs: usize,
    /// Comma-separated case names.
    #[arg(long)]
    cases: String,
    /// Where the result lines go.
    #[arg(long)]
    results: PathBuf,
}

/// Runs the cases, alternating the VMMs (and which goes first) run by run.
/// A VMM that fails a run is not run again for that case.
pub fn inner(opts: &InnerOptions) -> Result<()> {
    let env = LabEnv::from_env()?;
    let mut results = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.results)?;
    for name in opts.cases.split(',') {
        let Some(Case {
            measure: Some(measure),
            ..
        }) = CASES.iter().find(|c| c.name == name)
        else {
            continue;
        };
        let mut failed = Vec::new();
        for run in 0..opts.runs {
            let mut order = Vmm::ALL;
            if run % 2 == 1 {
                order.reverse();
            }
            for vmm in order {
                if failed.contains(&vmm) {
                    continue;
                }
                let line = match measure(&env, vmm, run) {
                    Ok(value) => format!("ok\t{value}"),
                    Err(e) => {
                        failed.push(vmm);
                        // The root cause first: the report shows the start.
                        let msg = format!("{} ({e:#})", e.root_cause());
                        let msg = msg.replace(['\n', '\t'], " | ");
                        format!("error\t{msg}")
                    }
                };
                let short: String = line.replace('\t', " ").chars().take(160).collect();
                println!("LAB-BENCH {name} {} run {}: {short}", vmm.name(), run + 1);
                writeln!(results, "RUN\t{name}\t{}\t{line}", vmm.name())?;
                results.flush()?;
            }
        }
    }
    Ok(())
}
