//! moatvm: a virtual machine monitor for untrusted guests.

mod cli;
mod config;
mod netspec;
mod platform;
mod vcpu;

use std::sync::mpsc;

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};

use vcpu::runner::VmEnd;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = cli::parse_or_exit();
    match cli.command {
        cli::Command::Run(args) => {
            let cfg = match config::VmConfig::from_run_args(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("moatvm: {e}");
                    std::process::exit(2)
                }
            };
            match run(&cfg) {
                Ok(end) => {
                    log::info!("VM ended: {end:?}");
                    if let VmEnd::VcpuFailed {
                        index,
                        reason,
                        registers,
                    } = &end
                    {
                        eprintln!("moatvm: vCPU {index} failed: {reason}; registers: {registers}");
                    }
                    std::process::exit(end.exit_code())
                }
                Err(e) => {
                    eprintln!("moatvm: {e:#}");
                    std::process::exit(1)
                }
            }
        }
    }
}

/// The signals that end the VM cleanly.
const STOP_SIGNALS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// Builds the VM, runs it to its end, and says how it ended.
fn run(cfg: &config::VmConfig) -> Result<VmEnd> {
    // Block the stop signals before any thread exists, so that every thread
    // inherits the mask and only the waiter below receives them.
    let mut stop_set = SigSet::empty();
    for s in STOP_SIGNALS {
        stop_set.add(s);
    }
    stop_set.thread_block().context("cannot block signals")?;

    let spec = vcpu::vm::VmSpec {
        mem_size: cfg.memory_mib << 20,
        cpus: cfg.cpus,
        serial_out: platform::serial_output(&cfg.serial)?,
        serial_stdin: cfg.serial == config::SerialConfig::Stdio,
    };
    let mut vm = vcpu::vm::Vm::create(spec)?;
    vm.load_linux(&cfg.kernel, cfg.initrd.as_deref(), &cfg.cmdline)?;
    let (end_tx, end_rx) = mpsc::channel();
    let signal_tx = end_tx.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = stop_set.wait() {
                let _ = signal_tx.send(VmEnd::Signal(sig as i32));
            }
        })
        .context("cannot start the signal thread")?;
    vm.run(end_rx, end_tx)
}
