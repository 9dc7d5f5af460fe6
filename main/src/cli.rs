//! moatvm's command line.
//!
//! The flags are taken as written; [`crate::config::VmConfig::from_run_args`]
//! checks them (together with the `--config` file), so that every problem is
//! reported the same way whether it came from a flag or from the file.
//! [`parse_or_exit`] prints help and version normally and any usage error as
//! a single line.

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use crate::netspec::NetOption;

/// Shown under `moatvm --help`: every option of `run`, at a glance.
const SYNOPSIS: &str = "\
Synopsis:
  moatvm run --kernel PATH [--initrd PATH] [--cmdline STR] [--memory SIZE] [--cpus N]
             [--serial stdio|file:PATH|none] [--netdev SPEC]... [--device SPEC]...
             [--nic SPEC]... [--net SPEC]... [--config FILE]

  --kernel PATH     bzImage or vmlinux to boot (x86-64)
  --initrd PATH     initial ramdisk
  --cmdline STR     kernel command line [default: console=ttyS0 reboot=k panic=1]
  --memory SIZE     guest RAM, e.g. 512M, 2G, or plain MiB [default: 512M]
  --cpus N          vCPUs, 1 to 32 [default: 1]
  --serial WHERE    guest COM1: stdio, file:PATH or none [default: stdio]
  --netdev SPEC     network backend, QEMU syntax: tap|user|socket|hubport,id=ID,...
  --device SPEC     NIC, QEMU syntax: virtio-net-pci|e1000|rtl8139|ne2k_pci|pcnet,netdev=ID,...
  --nic SPEC        backend and NIC at once: TYPE[,model=MODEL][,mac=MAC][,backend keys]
  --net SPEC        QEMU's old hub syntax: nic|user|tap|socket,...[,vlan=N]
  --config FILE     TOML file with any of the above; flags override it

Run 'moatvm run --help' for the details of each option.";

/// Shown at the end of `moatvm run --help`.
const RUN_AFTER_HELP: &str = "\
Examples:
  moatvm run --kernel bzImage --initrd initramfs.cpio.gz --memory 1G --cpus 2
  moatvm run --kernel bzImage --serial file:/tmp/guest.log --cmdline 'console=ttyS0 quiet'
  moatvm run --config vm.toml --memory 2G

Errors are reported as one line on stderr, 'moatvm: ...', with exit status 2,
before anything is created.";

/// A virtual machine monitor for untrusted guests, with every NIC and
/// network backend in its own jailed process.
#[derive(Debug, Parser)]
#[command(name = "moatvm", version, after_help = SYNOPSIS, subcommand_required = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a Linux kernel in a new VM.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
}

/// The options of `moatvm run`, as given; see [`crate::config`] for how
/// they combine with `--config`.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Linux kernel to boot: a bzImage, or an uncompressed ELF vmlinux.
    ///
    /// A bzImage must use boot protocol 2.06 or later and have a 64-bit entry
    /// point (any x86-64 kernel since Linux 3.8). Required, here or in the
    /// config file. Example: --kernel /boot/vmlinuz
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Initial ramdisk (initramfs) for the kernel.
    ///
    /// Example: --initrd initramfs.cpio.gz
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,

    /// Kernel command line [default: console=ttyS0 reboot=k panic=1].
    ///
    /// Replaces the default as a whole. Example: --cmdline 'console=ttyS0 root=/dev/vda quiet'
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,

    /// Guest RAM: 512M, 2G, or a plain number of MiB [default: 512M].
    ///
    /// Suffixes K, M, G, T (binary: 1G = 1024 MiB; KiB, MB, ... spellings too);
    /// fractions such as 1.5G are allowed. The size must be a whole number of
    /// MiB and at most the host's MemTotal. Example: --memory 2G
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,

    /// Number of vCPUs, 1 to 32 [default: 1].
    ///
    /// Example: --cpus 4
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,

    /// Where the guest's COM1 (ttyS0) goes: stdio, file:PATH or none [default: stdio].
    ///
    /// file:PATH appends to PATH, creating it if missing; its directory must exist.
    /// Example: --serial file:/tmp/guest.log
    #[arg(long, value_name = "stdio|file:PATH|none")]
    pub serial: Option<String>,

    /// Network backend (QEMU syntax), repeatable: TYPE,id=ID[,key=value...]
    ///
    /// Types and their keys (QEMU's meanings; a ',' inside a value is written ',,'):
    ///   tap      ifname=NAME br=BRIDGE fd=N vnet_hdr=on|off vhost=on|off vhostfd=N
    ///            vhostforce=on|off queues=N script=no downscript=no
    ///            (moatvm never runs scripts: only script=no and downscript=no)
    ///   user     net=ADDR[/N] host=ADDR dhcpstart=ADDR dns=ADDR hostname=NAME
    ///            domainname=NAME dnssearch=DOMAIN... restrict=on|off ipv4=on|off
    ///            ipv6=on|off ipv6-net=PREFIX[/N] tftp=DIR bootfile=FILE
    ///            hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport...
    ///   socket   exactly one of listen=[HOST]:PORT, connect=HOST:PORT,
    ///            mcast=GROUP:PORT[,localaddr=ADDR], udp=HOST:PORT,localaddr=HOST:PORT
    ///   hubport  hubid=N [netdev=ID]   (a port of emulated hub N)
    /// A netdev that no NIC uses gets a warning.
    /// Example: --netdev tap,id=n0,ifname=tap0,script=no,downscript=no
    #[arg(long, value_name = "SPEC", verbatim_doc_comment)]
    pub netdev: Vec<String>,

    /// Guest NIC (QEMU syntax), repeatable: MODEL[,netdev=ID][,mac=MAC][,id=ID][,addr=SLOT[.FN]]
    ///
    /// Models: virtio-net-pci (also mq=on|off), e1000, rtl8139, ne2k_pci, pcnet.
    /// netdev= names a --netdev id; mac= is six hex pairs, 52:54:00:12:34:56, and
    /// must not be multicast (a stable one is generated if missing).
    /// Example: --device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56
    #[arg(long, value_name = "SPEC", verbatim_doc_comment)]
    pub device: Vec<String>,

    /// Backend and NIC in one (QEMU syntax), repeatable: TYPE[,model=MODEL][,mac=MAC][,KEY=VALUE...]
    ///
    /// TYPE is tap, user or socket and takes the keys it takes in --netdev (id=
    /// is optional); model= defaults to virtio-net-pci ('virtio' also works).
    /// '--nic none' is accepted and does nothing.
    /// Example: --nic user,model=e1000,hostfwd=tcp::2222-:22
    #[arg(long, value_name = "SPEC", verbatim_doc_comment)]
    pub nic: Vec<String>,

    /// QEMU's old hub ("vlan") syntax, repeatable: nic[,KEY=VALUE...] or TYPE[,KEY=VALUE...]
    ///
    /// Every --net with the same vlan=N (default 0) joins emulated hub N.
    ///   nic    model=MODEL macaddr=MAC name=ID vlan=N addr=SLOT[.FN], or netdev=ID
    ///          instead of vlan= to connect to a --netdev directly
    ///   TYPE   tap, user or socket with its --netdev keys, vlan=N, name=ID
    ///   none   accepted, does nothing
    /// Example: --net nic,model=e1000,vlan=1 --net user,vlan=1
    #[arg(long, value_name = "SPEC", verbatim_doc_comment)]
    pub net: Vec<String>,

    /// TOML file that can say everything the flags say
    ///
    /// Keys: kernel, initrd, cmdline, memory (string or MiB), cpus, serial, and
    /// the lists netdev, device, nic, net (arrays of the strings the flags take).
    /// Relative paths in it are relative to its directory; unknown keys are an
    /// error. Flags override it: a single-valued flag replaces the file's value,
    /// and a list flag given at least once replaces the file's list of the same
    /// name entirely (the file's other lists stay).
    /// Example file:
    ///   kernel = "/boot/vmlinuz"
    ///   memory = "1G"
    ///   cpus = 2
    ///   serial = "stdio"
    ///   netdev = ["tap,id=n0,ifname=tap0,script=no,downscript=no"]
    ///   device = ["virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"]
    #[arg(long, value_name = "FILE", verbatim_doc_comment)]
    pub config: Option<PathBuf>,

    /// What a process's seccomp filter does with a forbidden system call:
    /// kill (the default) or log (for debugging only: the call goes through
    /// and the kernel logs it).
    #[arg(long, value_name = "kill|log", default_value = "kill", value_parser = ["kill", "log"])]
    pub seccomp: String,

    /// Testing only: the process of this NIC (id or index) or user-mode
    /// netdev (id) makes a forbidden system call once running, to show that
    /// the jail kills it.
    #[arg(long, value_name = "NIC", hide = true)]
    pub x_violate_seccomp: Option<String>,
}

impl RunArgs {
    /// The flags given for one network option.
    pub fn net_list(&self, opt: NetOption) -> &[String] {
        match opt {
            NetOption::Netdev => &self.netdev,
            NetOption::Device => &self.device,
            NetOption::Nic => &self.nic,
            NetOption::Net => &self.net,
        }
    }
}

/// Parses the process's arguments. Help and version go to stdout with exit
/// status 0; a usage error is printed as one line, `moatvm: MESSAGE`, with
/// exit status 2.
pub fn parse_or_exit() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => e.exit(),
            _ => {
                eprintln!("moatvm: {}", one_line(&e));
                std::process::exit(2)
            }
        },
    }
}

/// clap's message without the usage and the hints, on one line; a `tip:`
/// (such as a suggested flag) is kept in parentheses.
pub fn one_line(e: &clap::Error) -> String {
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "no command given (try 'moatvm --help')".into();
    }
    let text = e.render().to_string();
    let mut paragraphs = text.split("\n\n").map(|p| {
        p.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    });
    let first = paragraphs.next().unwrap_or_default();
    let mut line = first.strip_prefix("error: ").unwrap_or(&first).to_string();
    for p in paragraphs {
        if let Some(tip) = p.strip_prefix("tip: ") {
            line.push_str(&format!(" ({tip})"));
        }
    }
    if line.is_empty() {
        line = e.kind().to_string();
    }
    crate::netspec::shown(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("moatvm").chain(args.iter().copied()))
    }

    fn usage_error(args: &[&str]) -> String {
        let e = parse(args).expect_err("accepted");
        let line = one_line(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(!line.starts_with("error"), "{line}");
        line
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_every_option() {
        let cli = parse(&[
            "run",
            "--kernel",
            "/k",
            "--initrd",
            "/i",
            "--cmdline",
            "console=ttyS0",
            "--memory",
            "1G",
            "--cpus",
            "2",
            "--serial",
            "none",
            "--netdev",
            "user,id=a",
            "--netdev",
            "tap,id=b",
            "--device",
            "e1000,netdev=a",
            "--nic",
            "user",
            "--net",
            "nic",
            "--net=user",
            "--config",
            "/c.toml",
        ])
        .unwrap();
        let Command::Run(a) = cli.command;
        assert_eq!(a.kernel, Some(PathBuf::from("/k")));
        assert_eq!(a.initrd, Some(PathBuf::from("/i")));
        assert_eq!(a.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!(a.memory.as_deref(), Some("1G"));
        assert_eq!(a.cpus.as_deref(), Some("2"));
        assert_eq!(a.serial.as_deref(), Some("none"));
        assert_eq!(a.netdev, ["user,id=a", "tap,id=b"]);
        assert_eq!(a.net_list(NetOption::Device), ["e1000,netdev=a"]);
        assert_eq!(a.nic, ["user"]);
        assert_eq!(a.net, ["nic", "user"]);
        assert_eq!(a.config, Some(PathBuf::from("/c.toml")));
    }

    #[test]
    fn usage_errors_are_one_line() {
        let e = usage_error(&["run", "--kernal", "/k"]);
        assert!(e.starts_with("unexpected argument '--kernal' found"), "{e}");
        assert!(e.contains("'--kernel'"), "{e}");
        let e = usage_error(&["run", "--memory"]);
        assert!(e.contains("--memory"), "{e}");
        assert_eq!(usage_error(&[]), "no command given (try 'moatvm --help')");
        let e = usage_error(&["boot"]);
        assert!(e.contains("'boot'"), "{e}");
        let e = usage_error(&["run", "--cpus", "1", "--cpus", "2"]);
        assert!(e.contains("--cpus"), "{e}");
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for args in [
            &["--help"][..],
            &["run", "--help"],
            &["-h"],
            &["help", "run"],
            &["--version"],
        ] {
            let kind = parse(args).unwrap_err().kind();
            assert!(
                matches!(kind, ErrorKind::DisplayHelp | ErrorKind::DisplayVersion),
                "{args:?}: {kind:?}"
            );
        }
    }

    #[test]
    fn help_mentions_every_option() {
        let top = Cli::command().render_long_help().to_string();
        let mut cmd = Cli::command();
        let run = cmd
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        for opt in [
            "--kernel",
            "--initrd",
            "--cmdline",
            "--memory",
            "--cpus",
            "--serial",
            "--netdev",
            "--device",
            "--nic",
            "--net",
            "--config",
        ] {
            assert!(
                top.contains(&format!("{opt} ")),
                "moatvm --help lacks {opt}"
            );
            assert!(
                run.contains(&format!("{opt} <")),
                "moatvm run --help lacks {opt}"
            );
        }
    }
}
