//! moatvm: a virtual machine monitor for untrusted guests.
//!
//! `moatvm run` is the launcher; it spawns this same binary as the vCPU
//! process (`moatvm __vcpu`), as one device process per NIC
//! (`moatvm __device`) and as one backend process per user-mode network
//! (`moatvm __backend`), each jailed and under its own seccomp policy.

mod backend_process;
mod cli;
mod config;
mod device_process;
mod footprint;
mod launcher;
mod netspec;
mod platform;
mod roles;
mod seccomp_report;
mod user_net;
mod vcpu;
mod vcpu_process;

use nix::sys::signal::Signal;

/// The signals that end the VM cleanly.
const STOP_SIGNALS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

fn main() {
    footprint::one_arena();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    // Spawned roles: `moatvm __vcpu ARG` / `moatvm __device ARG`.
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some(roles::VCPU), Some(arg)) => std::process::exit(vcpu_process::main(arg)),
        (Some(roles::DEVICE), Some(arg)) => device_process::main(arg),
        (Some(roles::BACKEND), Some(arg)) => backend_process::main(arg),
        _ => {}
    }
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
            log::debug!("{cfg}");
            let opts = launcher::Options {
                seccomp: args.seccomp.clone(),
                violate_seccomp: args.x_violate_seccomp.clone(),
            };
            std::process::exit(launcher::run(&cfg, &opts))
        }
    }
}
