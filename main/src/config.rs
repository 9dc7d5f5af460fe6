//! The validated description of a VM, built from `moatvm run`'s flags and
//! an optional TOML file.
//!
//! # The config file
//!
//! `--config FILE` takes a TOML file that can say everything the flags say;
//! unknown keys are an error. Every key is optional:
//!
//! ```toml
//! kernel = "/boot/vmlinuz"          # relative paths are relative to the file
//! initrd = "initrd.img"
//! cmdline = "console=ttyS0 reboot=k panic=1"
//! memory = "1G"                     # or a number of MiB: memory = 1024
//! cpus = 2
//! serial = "file:serial.log"        # stdio | none | file:PATH
//! netdev = ["tap,id=n0,ifname=tap0,script=no,downscript=no"]
//! device = ["virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"]
//! nic = ["user,model=e1000,hostfwd=tcp::2222-:22"]
//! net = ["nic,vlan=1", "user,vlan=1"]
//! ```
//!
//! The list entries are the strings the flags of the same names take.
//!
//! # Flags and file together
//!
//! A flag overrides the file: a single-valued flag (`--kernel`, `--initrd`,
//! `--cmdline`, `--memory`, `--cpus`, `--serial`) replaces the file's value;
//! a list flag (`--netdev`, `--device`, `--nic`, `--net`) given at least once
//! replaces the file's list of the same name as a whole, while the file's
//! other lists stay. An overridden file value is not looked at.
//!
//! # Checks
//!
//! [`VmConfig::from_run_args`] checks everything it can without creating
//! anything: the syntax of every value, the network options and their
//! cross-references (see [`crate::netspec`]), that the kernel file is a
//! 64-bit Linux kernel (reading its header only), that the initrd exists,
//! that the serial file's directory exists, that the command line fits the
//! kernel, and that the host has the memory asked for. Its errors are one
//! line each.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::RunArgs;
use crate::netspec::{shown, Backend, NetBuilder, NetConfig, NetError, NetOption, NicModel};
use crate::vcpu::layout::CMDLINE_MAX_SIZE;

/// Kernel command line used when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";
/// Guest RAM when none is given, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// vCPUs when none is given.
pub const DEFAULT_CPUS: u8 = 1;
/// Most vCPUs a VM can have.
pub const MAX_CPUS: u8 = 32;
/// Largest config file read.
const MAX_CONFIG_FILE: u64 = 1 << 20;

/// NIC models moatvm can create; a valid NIC of any other model is refused
/// as "not implemented yet". Later issues add to these.
const IMPLEMENTED_NIC_MODELS: &[NicModel] = &[NicModel::VirtioNetPci, NicModel::E1000];
/// Netdev types moatvm can create, likewise (checked for the netdevs a NIC
/// reaches; unused ones only get a warning).
const IMPLEMENTED_NETDEV_TYPES: &[&str] = &["tap", "user"];
/// Most queue pairs of a multiqueue virtio-net-pci (`queues=`).
const MAX_QUEUE_PAIRS: u16 = devices::virtio::net::MAX_PAIRS;

/// Where the guest's COM1 goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialConfig {
    /// moatvm's standard input and output.
    Stdio,
    /// Appended to a file (created if missing).
    File(PathBuf),
    /// Discarded.
    None,
}

impl fmt::Display for SerialConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdio => write!(f, "stdio"),
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::None => write!(f, "none"),
        }
    }
}

/// Everything needed to start a VM, checked.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub memory_mib: u64,
    pub cpus: u8,
    pub serial: SerialConfig,
    /// Netdevs and NICs, cross-checked.
    pub net: NetConfig,
}

/// A one-line summary, for the log.
impl fmt::Display for VmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel {}", self.kernel.display())?;
        if let Some(initrd) = &self.initrd {
            write!(f, ", initrd {}", initrd.display())?;
        }
        write!(
            f,
            ", cmdline '{}', {} MiB, {} vCPU{}, serial {}, network {}",
            self.cmdline,
            self.memory_mib,
            self.cpus,
            if self.cpus == 1 { "" } else { "s" },
            self.serial,
            self.net
        )
    }
}

/// Why a configuration was refused. Display is one line, without the
/// `moatvm: ` prefix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file '{path}' {reason}")]
    ConfigFile { path: String, reason: String },
    #[error("config file '{path}', line {line}: {message}")]
    ConfigSyntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error("no kernel given: use --kernel PATH (or kernel = \"PATH\" in the config file)")]
    NoKernel,
    #[error("{what} '{path}' {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("'{path}' is not a Linux kernel: {reason}")]
    NotAKernel { path: String, reason: String },
    #[error("{origin} '{value}': {reason}")]
    Memory {
        origin: String,
        value: String,
        reason: String,
    },
    #[error("{origin} '{value}' asks for {asked_mib} MiB of RAM but the host has only {host_mib} MiB (MemTotal)")]
    NotEnoughHostMemory {
        origin: String,
        value: String,
        asked_mib: u64,
        host_mib: u64,
    },
    #[error("{origin} '{value}': must be a whole number from 1 to {MAX_CPUS}")]
    Cpus { origin: String, value: String },
    #[error("{origin} '{value}': {reason}")]
    Serial {
        origin: String,
        value: String,
        reason: String,
    },
    #[error("{origin}: {reason}")]
    Cmdline { origin: String, reason: String },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("{origin}: NIC model '{model}' is not implemented yet")]
    NicNotImplemented { origin: String, model: &'static str },
    #[error("{origin}: netdev type '{kind}' is not implemented yet")]
    NetdevNotImplemented { origin: String, kind: &'static str },
    #[error("{origin}: {what} is not implemented yet")]
    OptionNotImplemented { origin: String, what: &'static str },
    #[error("{origin}: vhost=on serves only virtio-net-pci, not {model}")]
    VhostNeedsVirtio { origin: String, model: &'static str },
    #[error("{origin}: {reason}")]
    User { origin: String, reason: String },
    #[error("{origin}: {reason}")]
    Multiqueue { origin: String, reason: String },
}

/// The config file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
    #[serde(default, deserialize_with = "int_or_string")]
    memory: Option<String>,
    #[serde(default, deserialize_with = "int_or_string")]
    cpus: Option<String>,
    serial: Option<String>,
    netdev: Option<Vec<String>>,
    device: Option<Vec<String>>,
    nic: Option<Vec<String>>,
    net: Option<Vec<String>>,
}

impl FileConfig {
    fn list(&self, opt: NetOption) -> Option<&Vec<String>> {
        match opt {
            NetOption::Netdev => self.netdev.as_ref(),
            NetOption::Device => self.device.as_ref(),
            NetOption::Nic => self.nic.as_ref(),
            NetOption::Net => self.net.as_ref(),
        }
    }
}

/// Takes `1024` and `"1024"` alike, so that `memory` and `cpus` go through
/// the same parsers as the flags.
fn int_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an integer or a string")
        }
        fn visit_i64<E>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_str<E>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V).map(Some)
}

/// A loaded config file.
struct Loaded {
    file: FileConfig,
    path: PathBuf,
}

impl Loaded {
    /// `PATH: key`, for messages about a value from the file.
    fn origin(&self, key: &str) -> String {
        format!("{}: {key}", show_path(&self.path))
    }

    /// `p` relative to the file's directory.
    fn resolve(&self, p: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }
}

fn show_path(p: &Path) -> String {
    shown(&p.to_string_lossy())
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "does not exist".into(),
        io::ErrorKind::PermissionDenied => "cannot be read: permission denied".into(),
        _ => format!("cannot be read: {e}"),
    }
}

/// Opens `path` for reading if it is a regular file (never blocking on a
/// FIFO or reading a device).
fn open_regular(path: &Path) -> Result<(File, u64), String> {
    let meta = std::fs::metadata(path).map_err(|e| io_reason(&e))?;
    if !meta.is_file() {
        return Err(if meta.is_dir() {
            "is a directory".into()
        } else {
            "is not a regular file".into()
        });
    }
    let f = File::open(path).map_err(|e| io_reason(&e))?;
    Ok((f, meta.len()))
}

fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let fail = |reason: String| ConfigError::ConfigFile {
        path: show_path(path),
        reason,
    };
    let (f, len) = open_regular(path).map_err(fail)?;
    if len > MAX_CONFIG_FILE {
        return Err(fail("is larger than 1 MiB".into()));
    }
    let mut text = String::new();
    f.take(MAX_CONFIG_FILE)
        .read_to_string(&mut text)
        .map_err(|e| fail(format!("cannot be read: {e}")))?;
    let file = toml::from_str::<FileConfig>(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text.get(..s.start).unwrap_or("").matches('\n').count() + 1)
            .unwrap_or(1);
        let message: Vec<&str> = e.message().lines().map(str::trim).collect();
        ConfigError::ConfigSyntax {
            path: show_path(path),
            line,
            message: shown(&message.join(" ")),
        }
    })?;
    Ok(Loaded {
        file,
        path: path.to_path_buf(),
    })
}

/// Guest RAM in MiB: a number of MiB, or a number (fractions allowed) with
/// a K, M, G or T suffix (binary; `KiB`/`KB` spellings too).
pub fn parse_memory_mib(s: &str) -> Result<u64, String> {
    const SYNTAX: &str = "expected a number of MiB or a size like 512M or 2G";
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(SYNTAX.into());
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 20,
        "k" | "kb" | "kib" => 10,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown unit '{}' ({SYNTAX})", shown(unit))),
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) if !f.is_empty() && !unit.is_empty() => (i, f),
        Some(_) => return Err(SYNTAX.into()),
        None => (num, ""),
    };
    if int.is_empty() || frac.contains('.') || frac.len() > 9 {
        return Err(SYNTAX.into());
    }
    let too_big = || "is too large".to_string();
    // bytes = (int.frac) << shift, computed exactly.
    let digits: u128 = format!("{int}{frac}").parse().map_err(|_| too_big())?;
    let scaled = digits.checked_shl(shift).ok_or_else(too_big)?;
    if digits != 0 && scaled >> shift != digits {
        return Err(too_big());
    }
    let denom = 10u128.pow(frac.len() as u32);
    if !scaled.is_multiple_of(denom) {
        return Err("is not a whole number of bytes".into());
    }
    let bytes = scaled / denom;
    if bytes == 0 {
        return Err("must be more than 0".into());
    }
    if !bytes.is_multiple_of(1 << 20) {
        return Err("is not a whole number of MiB".into());
    }
    let mib = bytes >> 20;
    if mib > u128::from(u64::MAX >> 20) {
        return Err(too_big());
    }
    Ok(mib as u64)
}

/// A number of vCPUs, 1 to [`MAX_CPUS`].
pub fn parse_cpus(s: &str) -> Option<u8> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u8>().ok().filter(|n| (1..=MAX_CPUS).contains(n))
}

/// `stdio`, `none` or `file:PATH`; a relative PATH is taken relative to
/// `base` if given.
pub fn parse_serial(s: &str, base: Option<&Path>) -> Result<SerialConfig, String> {
    match s {
        "stdio" => Ok(SerialConfig::Stdio),
        "none" => Ok(SerialConfig::None),
        _ => match s.strip_prefix("file:") {
            Some("") => Err("file: needs a path (file:PATH)".into()),
            Some(p) => Ok(SerialConfig::File(match base {
                Some(b) if Path::new(p).is_relative() => b.join(p),
                _ => PathBuf::from(p),
            })),
            None => Err("expected stdio, none or file:PATH".into()),
        },
    }
}

/// What the kernel's header says.
struct KernelInfo {
    /// Longest command line it takes, NUL excluded.
    cmdline_max: usize,
}

/// Checks that `buf`, the start of a file, is an x86-64 Linux kernel: a
/// bzImage (boot protocol 2.06 or later, loaded high, with a 64-bit entry
/// point) or an ELF64 x86-64 executable (vmlinux).
fn check_kernel_header(buf: &[u8]) -> Result<KernelInfo, String> {
    let u16_at = |o: usize| buf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        buf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let limit = CMDLINE_MAX_SIZE - 1;
    if buf.get(0x202..0x206) == Some(b"HdrS") {
        let version = u16_at(0x206).unwrap_or(0);
        let (major, minor) = (version >> 8, version & 0xff);
        if version < 0x206 {
            return Err(format!(
                "bzImage boot protocol {major}.{minor:02} is too old (2.06 or later needed)"
            ));
        }
        let (Some(&loadflags), Some(xloadflags), Some(cmdline_size)) =
            (buf.get(0x211), u16_at(0x236), u32_at(0x238))
        else {
            return Err("bzImage header is truncated".into());
        };
        if loadflags & 0x01 == 0 {
            return Err("a zImage (not loaded high) is not supported; use a bzImage".into());
        }
        if xloadflags & 0x01 == 0 {
            return Err(format!(
                "bzImage has no 64-bit entry point (XLF_KERNEL_64 not set, boot protocol {major}.{minor:02})"
            ));
        }
        let cmdline_size = usize::try_from(cmdline_size).unwrap_or(usize::MAX);
        return Ok(KernelInfo {
            cmdline_max: cmdline_size.min(limit),
        });
    }
    if buf.starts_with(b"\x7fELF") {
        if buf.get(4) != Some(&2) {
            return Err("ELF file is not 64-bit".into());
        }
        if buf.get(5) != Some(&1) {
            return Err("ELF file is not little-endian".into());
        }
        if u16_at(0x12) != Some(62) {
            return Err("ELF file is not for x86-64".into());
        }
        if u16_at(0x10) != Some(2) {
            return Err("ELF file is not an executable (ET_EXEC)".into());
        }
        return Ok(KernelInfo { cmdline_max: limit });
    }
    if buf.is_empty() {
        return Err("the file is empty".into());
    }
    Err("neither a bzImage (no 'HdrS' at 0x202) nor an ELF vmlinux".into())
}

fn check_kernel(path: &Path) -> Result<KernelInfo, ConfigError> {
    let (f, _) = open_regular(path).map_err(|reason| ConfigError::File {
        what: "kernel",
        path: show_path(path),
        reason,
    })?;
    let mut buf = Vec::with_capacity(1024);
    f.take(1024)
        .read_to_end(&mut buf)
        .map_err(|e| ConfigError::File {
            what: "kernel",
            path: show_path(path),
            reason: io_reason(&e),
        })?;
    check_kernel_header(&buf).map_err(|reason| ConfigError::NotAKernel {
        path: show_path(path),
        reason,
    })
}

/// MemTotal from /proc/meminfo, in MiB.
fn host_memory_mib() -> Option<u64> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The flag's value if given, else the file's; with where it came from.
fn pick<T: Clone>(
    flag: &Option<T>,
    flag_name: &str,
    loaded: Option<&Loaded>,
    file_value: impl Fn(&FileConfig) -> Option<T>,
    key: &str,
) -> Option<(T, String)> {
    if let Some(v) = flag {
        return Some((v.clone(), flag_name.to_string()));
    }
    let l = loaded?;
    file_value(&l.file).map(|v| (v, l.origin(key)))
}

impl VmConfig {
    /// Builds and checks the configuration of `moatvm run`: the flags, over
    /// the `--config` file if any. Creates nothing. Warnings (unused
    /// netdevs and the like) are logged only if it succeeds.
    pub fn from_run_args(args: &RunArgs) -> Result<VmConfig, ConfigError> {
        let (cfg, warnings) = Self::build(args, host_memory_mib())?;
        for w in warnings {
            log::warn!("{w}");
        }
        log::debug!("configuration: {cfg}");
        Ok(cfg)
    }

    /// [`Self::from_run_args`] with the host's memory given, returning the
    /// warnings.
    fn build(
        args: &RunArgs,
        host_mib: Option<u64>,
    ) -> Result<(VmConfig, Vec<String>), ConfigError> {
        let loaded = args.config.as_deref().map(load_file).transpose()?;
        let loaded = loaded.as_ref();

        // Syntax of the single values.
        let memory = pick(
            &args.memory,
            "--memory",
            loaded,
            |f| f.memory.clone(),
            "memory",
        );
        let memory_mib = match &memory {
            None => DEFAULT_MEMORY_MIB,
            Some((v, origin)) => parse_memory_mib(v).map_err(|reason| ConfigError::Memory {
                origin: origin.clone(),
                value: shown(v),
                reason,
            })?,
        };
        let cpus = match pick(&args.cpus, "--cpus", loaded, |f| f.cpus.clone(), "cpus") {
            None => DEFAULT_CPUS,
            Some((v, origin)) => parse_cpus(&v).ok_or_else(|| ConfigError::Cpus {
                origin,
                value: shown(&v),
            })?,
        };
        let serial_arg = pick(
            &args.serial,
            "--serial",
            loaded,
            |f| f.serial.clone(),
            "serial",
        );
        let serial = match &serial_arg {
            None => SerialConfig::Stdio,
            Some((v, origin)) => {
                let base = if args.serial.is_some() {
                    None
                } else {
                    loaded.and_then(|l| l.path.parent())
                };
                parse_serial(v, base).map_err(|reason| ConfigError::Serial {
                    origin: origin.clone(),
                    value: shown(v),
                    reason,
                })?
            }
        };
        let (cmdline, cmdline_origin) = pick(
            &args.cmdline,
            "--cmdline",
            loaded,
            |f| f.cmdline.clone(),
            "cmdline",
        )
        .unwrap_or_else(|| (DEFAULT_CMDLINE.to_string(), "default command line".into()));
        if cmdline.contains('\0') {
            return Err(ConfigError::Cmdline {
                origin: cmdline_origin,
                reason: "contains a NUL character".into(),
            });
        }

        // Network options and their cross-references.
        let mut nb = NetBuilder::new();
        for opt in NetOption::ALL {
            let flags = args.net_list(opt);
            if !flags.is_empty() || loaded.is_none() {
                for spec in flags {
                    nb.add(opt, opt.flag(), spec)?;
                }
            } else if let Some(l) = loaded {
                for (i, spec) in l.file.list(opt).into_iter().flatten().enumerate() {
                    nb.add(opt, &format!("{}[{i}]", l.origin(opt.key())), spec)?;
                }
            }
        }
        let (net, warnings) = nb.finish()?;

        // Files.
        let kernel = match (&args.kernel, loaded) {
            (Some(k), _) => k.clone(),
            (None, Some(l)) => l
                .file
                .kernel
                .as_deref()
                .map(|k| l.resolve(k))
                .ok_or(ConfigError::NoKernel)?,
            (None, None) => return Err(ConfigError::NoKernel),
        };
        let info = check_kernel(&kernel)?;
        if cmdline.len() > info.cmdline_max {
            return Err(ConfigError::Cmdline {
                origin: cmdline_origin,
                reason: format!(
                    "the command line is {} bytes long but the kernel takes at most {}",
                    cmdline.len(),
                    info.cmdline_max
                ),
            });
        }
        let initrd = match (&args.initrd, loaded) {
            (Some(i), _) => Some(i.clone()),
            (None, Some(l)) => l.file.initrd.as_deref().map(|i| l.resolve(i)),
            (None, None) => None,
        };
        if let Some(i) = &initrd {
            open_regular(i).map_err(|reason| ConfigError::File {
                what: "initrd",
                path: show_path(i),
                reason,
            })?;
        }
        if let (SerialConfig::File(p), Some((v, origin))) = (&serial, &serial_arg) {
            let fail = |reason: String| ConfigError::Serial {
                origin: origin.clone(),
                value: shown(v),
                reason,
            };
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(fail(format!(
                    "directory '{}' does not exist",
                    show_path(dir)
                )));
            }
            if p.is_dir() {
                return Err(fail("is a directory".into()));
            }
        }

        // The host.
        if let (Some(host_mib), Some((v, origin))) = (host_mib, &memory) {
            if memory_mib > host_mib {
                return Err(ConfigError::NotEnoughHostMemory {
                    origin: origin.clone(),
                    value: shown(v),
                    asked_mib: memory_mib,
                    host_mib,
                });
            }
        }

        // Everything is valid; is it all implemented?
        for nic in &net.nics {
            if !IMPLEMENTED_NIC_MODELS.contains(&nic.model) {
                return Err(ConfigError::NicNotImplemented {
                    origin: nic.origin.clone(),
                    model: nic.model.name(),
                });
            }
            let netdev = nic
                .netdev
                .as_ref()
                .and_then(|id| net.netdevs.iter().find(|d| &d.id == id));
            if let Some(Backend::Tap(t)) = netdev.map(|d| &d.backend) {
                let vhost =
                    t.vhost == Some(true) || t.vhostfd.is_some() || t.vhostforce == Some(true);
                if vhost && nic.model != NicModel::VirtioNetPci {
                    return Err(ConfigError::VhostNeedsVirtio {
                        origin: nic.origin.clone(),
                        model: nic.model.name(),
                    });
                }
                // Multiqueue: queues=N on the tap, mq=on on the device.
                // mq=on alone offers multiqueue with one pair (as QEMU
                // does); queues=N without mq=on is refused rather than
                // quietly using one pair.
                let queues = t.queues.unwrap_or(1);
                let mq = nic.model == NicModel::VirtioNetPci && nic.mq == Some(true);
                let reason = if queues > 1 && !mq {
                    Some(format!(
                        "its netdev has queues={queues}: multiqueue needs virtio-net-pci with \
                         mq=on (--device virtio-net-pci,netdev=ID,mq=on)"
                    ))
                } else if queues > MAX_QUEUE_PAIRS {
                    Some(format!(
                        "queues={queues}: at most {MAX_QUEUE_PAIRS} queue pairs"
                    ))
                } else if queues > 1 && t.vhostfd.is_some() {
                    Some(format!(
                        "vhostfd= gives one vhost-net descriptor, queues={queues} needs one \
                         per queue pair (vhostfds= is not implemented; use vhost=on)"
                    ))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(ConfigError::Multiqueue {
                        origin: nic.origin.clone(),
                        reason,
                    });
                }
            }
        }
        for nd in net.reachable_netdevs() {
            let kind = nd.backend.type_name();
            if !IMPLEMENTED_NETDEV_TYPES.contains(&kind) {
                return Err(ConfigError::NetdevNotImplemented {
                    origin: nd.origin.clone(),
                    kind,
                });
            }
            if let Backend::User(u) = &nd.backend {
                // libslirp's TFTP server opens files by path, which the
                // backend's jail (an empty root, no open(2)) rules out.
                if u.tftp.is_some() {
                    return Err(ConfigError::OptionNotImplemented {
                        origin: nd.origin.clone(),
                        what: "tftp= (a TFTP server)",
                    });
                }
                if let Err(e) = crate::user_net::config(u, None).check() {
                    return Err(ConfigError::User {
                        origin: nd.origin.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        for nic in &net.nics {
            let unimplemented = if nic.netdev.is_none() {
                Some("a NIC without a netdev")
            } else if nic.addr.is_some() {
                Some("addr= (a chosen PCI slot)")
            } else {
                None
            };
            if let Some(what) = unimplemented {
                return Err(ConfigError::OptionNotImplemented {
                    origin: nic.origin.clone(),
                    what,
                });
            }
        }

        let cfg = VmConfig {
            kernel,
            initrd,
            cmdline,
            memory_mib,
            cpus,
            serial,
            net,
        };
        Ok((cfg, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system's temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "moatvm-config-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        pub(crate) fn write(&self, name: &str, data: &[u8]) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, data).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The first 4 KiB of a bzImage: boot protocol 2.15, loaded high, with
    /// a 64-bit entry point, taking command lines of up to 2047 bytes.
    pub(crate) fn fake_bzimage() -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0x1f1] = 4; // setup_sects
        b[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x211] = 0x01; // LOADED_HIGH
        b[0x236..0x238].copy_from_slice(&0x0003u16.to_le_bytes()); // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
        b[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
        b
    }

    fn fake_vmlinux() -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[0x10..0x12].copy_from_slice(&2u16.to_le_bytes());
        b[0x12..0x14].copy_from_slice(&62u16.to_le_bytes());
        b
    }

    /// A temp dir with a valid kernel `vmlinuz` in it, and args using it.
    fn setup(name: &str) -> (TempDir, RunArgs) {
        let dir = TempDir::new(name);
        let kernel = dir.write("vmlinuz", &fake_bzimage());
        let args = RunArgs {
            kernel: Some(kernel),
            ..Default::default()
        };
        (dir, args)
    }

    const HOST: Option<u64> = Some(8192);

    fn build(args: &RunArgs) -> Result<VmConfig, ConfigError> {
        VmConfig::build(args, HOST).map(|(c, _)| c)
    }

    fn error(args: &RunArgs) -> String {
        match build(args) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => {
                let s = e.to_string();
                assert!(!s.contains('\n'), "{s}");
                s
            }
        }
    }

    #[test]
    fn defaults() {
        let (_dir, args) = setup("defaults");
        let c = build(&args).unwrap();
        assert_eq!(c.cmdline, DEFAULT_CMDLINE);
        assert_eq!(c.memory_mib, 512);
        assert_eq!(c.cpus, 1);
        assert_eq!(c.serial, SerialConfig::Stdio);
        assert_eq!(c.initrd, None);
        assert_eq!(c.net, NetConfig::default());
        assert!(c
            .to_string()
            .contains("512 MiB, 1 vCPU, serial stdio, network none"));
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_mib("1024"), Ok(1024));
        assert_eq!(parse_memory_mib("512M"), Ok(512));
        assert_eq!(parse_memory_mib("2G"), Ok(2048));
        assert_eq!(parse_memory_mib("2g"), Ok(2048));
        assert_eq!(parse_memory_mib("2GiB"), Ok(2048));
        assert_eq!(parse_memory_mib("1.5G"), Ok(1536));
        assert_eq!(parse_memory_mib("1T"), Ok(1 << 20));
        assert_eq!(parse_memory_mib("2048K"), Ok(2));
        assert!(parse_memory_mib("12XB")
            .unwrap_err()
            .contains("unknown unit 'XB'"));
        assert!(parse_memory_mib("0").unwrap_err().contains("more than 0"));
        assert!(parse_memory_mib("0G").is_err());
        assert!(parse_memory_mib("1K")
            .unwrap_err()
            .contains("whole number of MiB"));
        assert!(parse_memory_mib("1.5").is_err());
        assert_eq!(
            parse_memory_mib("-5").unwrap_err(),
            "expected a number of MiB or a size like 512M or 2G"
        );
        for bad in [
            "", "G", "-1", "1..5G", "1.G", ".5G", "1.5.5G", " 1G", "1G ", "1e3",
        ] {
            assert!(parse_memory_mib(bad).is_err(), "{bad:?}");
        }
        assert!(parse_memory_mib("99999999999999999999999999T")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_memory_mib("9999999999999999999999999999999999999999999").is_err());
        assert!(parse_memory_mib("17179869184T")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn memory_errors_name_the_flag() {
        let (_dir, mut args) = setup("mem");
        args.memory = Some("12XB".into());
        let e = error(&args);
        assert!(e.starts_with("--memory '12XB': unknown unit 'XB'"), "{e}");
        args.memory = Some("0".into());
        assert!(error(&args).starts_with("--memory '0': must be more than 0"));
        args.memory = Some("16G".into());
        assert_eq!(
            error(&args),
            "--memory '16G' asks for 16384 MiB of RAM but the host has only 8192 MiB (MemTotal)"
        );
        args.memory = Some("8G".into());
        assert_eq!(build(&args).unwrap().memory_mib, 8192);
        // Unknown host memory: no check.
        args.memory = Some("64G".into());
        assert!(VmConfig::build(&args, None).is_ok());
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       16318572 kB\nMemFree:         1234 kB\n";
        assert_eq!(parse_meminfo(text), Some(15936));
        assert_eq!(parse_meminfo("garbage"), None);
        assert!(host_memory_mib().is_some_and(|m| m > 0));
    }

    #[test]
    fn cpus() {
        let (_dir, mut args) = setup("cpus");
        for (v, want) in [("1", Some(1)), ("32", Some(32)), ("4", Some(4))] {
            args.cpus = Some(v.into());
            assert_eq!(build(&args).ok().map(|c| c.cpus), want);
        }
        for v in ["0", "33", "256", "-1", "two", "", "+1"] {
            args.cpus = Some(v.into());
            assert_eq!(
                error(&args),
                format!("--cpus '{v}': must be a whole number from 1 to 32")
            );
        }
    }

    #[test]
    fn serial() {
        let (dir, mut args) = setup("serial");
        args.serial = Some("none".into());
        assert_eq!(build(&args).unwrap().serial, SerialConfig::None);
        let log = dir.0.join("serial.log");
        args.serial = Some(format!("file:{}", log.display()));
        assert_eq!(
            build(&args).unwrap().serial,
            SerialConfig::File(log.clone())
        );
        assert!(!log.exists(), "checking must not create the file");
        args.serial = Some("bogus".into());
        assert_eq!(
            error(&args),
            "--serial 'bogus': expected stdio, none or file:PATH"
        );
        args.serial = Some("file:".into());
        assert!(error(&args).contains("needs a path"));
        let missing = dir.0.join("nope/serial.log");
        args.serial = Some(format!("file:{}", missing.display()));
        let e = error(&args);
        assert!(e.contains("does not exist") && e.contains("nope"), "{e}");
        assert!(!dir.0.join("nope").exists());
        args.serial = Some(format!("file:{}", dir.0.display()));
        assert!(error(&args).contains("is a directory"));
    }

    #[test]
    fn kernel_checks() {
        let dir = TempDir::new("kernel");
        let mut args = RunArgs::default();
        assert_eq!(
            error(&args),
            "no kernel given: use --kernel PATH (or kernel = \"PATH\" in the config file)"
        );
        let missing = dir.0.join("no-such-vmlinuz");
        args.kernel = Some(missing.clone());
        assert_eq!(
            error(&args),
            format!("kernel '{}' does not exist", missing.display())
        );
        args.kernel = Some(dir.0.clone());
        assert!(error(&args).ends_with("is a directory"));
        args.kernel = Some(PathBuf::from("/dev/null"));
        assert!(error(&args).ends_with("is not a regular file"));

        let check = |data: &[u8]| {
            let p = dir.write("k", data);
            let args = RunArgs {
                kernel: Some(p),
                ..Default::default()
            };
            build(&args).map(|_| ()).map_err(|e| e.to_string())
        };
        assert_eq!(check(&fake_bzimage()), Ok(()));
        assert_eq!(check(&fake_vmlinux()), Ok(()));
        let not = |data: &[u8], why: &str| {
            let e = check(data).unwrap_err();
            assert!(
                e.contains("is not a Linux kernel") && e.contains(why),
                "{e}"
            );
        };
        not(b"", "empty");
        not(b"#!/bin/sh\necho hello\n", "neither a bzImage");
        let mut old = fake_bzimage();
        old[0x206..0x208].copy_from_slice(&0x0205u16.to_le_bytes());
        not(&old, "2.05 is too old");
        let mut no64 = fake_bzimage();
        no64[0x236] = 0;
        not(&no64, "XLF_KERNEL_64");
        let mut zimage = fake_bzimage();
        zimage[0x211] = 0;
        not(&zimage, "zImage");
        not(&fake_bzimage()[..0x210], "truncated");
        let mut elf32 = fake_vmlinux();
        elf32[4] = 1;
        not(&elf32, "64-bit");
        let mut arm = fake_vmlinux();
        arm[0x12] = 183;
        not(&arm, "x86-64");
        let mut module = fake_vmlinux();
        module[0x10] = 1;
        not(&module, "ET_EXEC");
    }

    #[test]
    fn cmdline() {
        let (_dir, mut args) = setup("cmdline");
        args.cmdline = Some("console=ttyS0 quiet".into());
        assert_eq!(build(&args).unwrap().cmdline, "console=ttyS0 quiet");
        args.cmdline = Some("x".repeat(2047));
        assert!(build(&args).is_ok());
        args.cmdline = Some("x".repeat(2048));
        assert_eq!(
            error(&args),
            "--cmdline: the command line is 2048 bytes long but the kernel takes at most 2047"
        );
        args.cmdline = Some("a\0b".into());
        assert!(error(&args).contains("NUL"));
    }

    #[test]
    fn initrd() {
        let (dir, mut args) = setup("initrd");
        let missing = dir.0.join("initrd.img");
        args.initrd = Some(missing.clone());
        assert_eq!(
            error(&args),
            format!("initrd '{}' does not exist", missing.display())
        );
        dir.write("initrd.img", b"070701");
        assert_eq!(build(&args).unwrap().initrd, Some(missing));
    }

    #[test]
    fn multiqueue_needs_mq_on_and_one_vhost_per_pair() {
        let (_dir, mut args) = setup("mq");
        let with = |args: &mut RunArgs, netdev: &str, device: &str| {
            args.netdev = vec![netdev.into()];
            args.device = vec![device.into()];
        };
        with(
            &mut args,
            "tap,id=n0,queues=2",
            "virtio-net-pci,netdev=n0,mq=on",
        );
        let c = build(&args).unwrap();
        assert_eq!(c.net.nics[0].mq, Some(true));
        // mq=on alone: multiqueue with one pair.
        with(&mut args, "tap,id=n0", "virtio-net-pci,netdev=n0,mq=on");
        assert!(build(&args).is_ok());
        with(&mut args, "user,id=n0", "virtio-net-pci,netdev=n0,mq=on");
        assert!(build(&args).is_ok());
        with(
            &mut args,
            "tap,id=n0,queues=4,vhost=on",
            "virtio-net-pci,netdev=n0,mq=on",
        );
        assert!(build(&args).is_ok());
        with(&mut args, "tap,id=n0,queues=2", "virtio-net-pci,netdev=n0");
        assert_eq!(
            error(&args),
            "--device virtio-net-pci: its netdev has queues=2: multiqueue needs \
             virtio-net-pci with mq=on (--device virtio-net-pci,netdev=ID,mq=on)"
        );
        with(
            &mut args,
            "tap,id=n0,queues=2",
            "virtio-net-pci,netdev=n0,mq=off",
        );
        assert!(error(&args).contains("needs virtio-net-pci with mq=on"));
        with(&mut args, "tap,id=n0,queues=2", "e1000,netdev=n0");
        assert!(error(&args).contains("needs virtio-net-pci with mq=on"));
        with(
            &mut args,
            "tap,id=n0,queues=17",
            "virtio-net-pci,netdev=n0,mq=on",
        );
        assert_eq!(
            error(&args),
            "--device virtio-net-pci: queues=17: at most 16 queue pairs"
        );
        with(
            &mut args,
            "tap,id=n0,queues=2,vhost=on,vhostfd=9",
            "virtio-net-pci,netdev=n0,mq=on",
        );
        assert!(error(&args).contains("vhostfds= is not implemented"));
        // One queue through vhostfd= stays fine.
        with(
            &mut args,
            "tap,id=n0,queues=1,vhost=on,vhostfd=9",
            "virtio-net-pci,netdev=n0,mq=on",
        );
        assert!(build(&args).is_ok());
    }

    #[test]
    fn network_errors_and_not_implemented() {
        let (_dir, mut args) = setup("net");
        args.netdev = vec!["tap,id=n0,ifname=tap0".into()];
        args.device = vec!["virtio-net-pci,netdev=n0".into()];
        let c = build(&args).unwrap();
        assert_eq!((c.net.nics.len(), c.net.netdevs.len()), (1, 1));
        args.netdev = vec!["tap,id=n0,vhost=on".into()];
        args.device = vec!["e1000,netdev=n0".into()];
        assert_eq!(
            error(&args),
            "--device e1000: vhost=on serves only virtio-net-pci, not e1000"
        );
        args.device = vec!["virtio-net-pci,netdev=n0".into()];
        assert!(build(&args).is_ok());
        args.netdev = vec!["tap,id=n0".into()];
        args.device = vec!["virtio-net-pci,netdev=n1".into()];
        assert_eq!(
            error(&args),
            "--device virtio-net-pci: netdev 'n1' does not exist (no --netdev has id=n1)"
        );
        // An unused netdev is only a warning.
        args.device.clear();
        let (c, warnings) = VmConfig::build(&args, HOST).unwrap();
        assert_eq!(c.net.netdevs.len(), 1);
        assert_eq!(
            warnings,
            ["--netdev tap: netdev 'n0' is not used by any NIC"]
        );
        // Network errors come before file errors.
        args.kernel = Some(PathBuf::from("/nonexistent/vmlinuz"));
        args.netdev = vec!["bogus,id=x".into()];
        assert!(error(&args).starts_with("--netdev bogus: unknown netdev type 'bogus'"));
        // --nic and --net NICs are not implemented either.
        let (_dir, mut args) = setup("net2");
        args.nic = vec!["user,model=e1000".into()];
        assert_eq!(build(&args).unwrap().net.nics[0].model, NicModel::E1000);
        args.nic = vec!["user,model=rtl8139".into()];
        assert_eq!(
            error(&args),
            "--nic user: NIC model 'rtl8139' is not implemented yet"
        );
        args.nic.clear();
        args.net = vec!["nic,model=rtl8139".into(), "user".into()];
        assert_eq!(
            error(&args),
            "--net nic: NIC model 'rtl8139' is not implemented yet"
        );
    }

    #[test]
    fn user_networking_is_implemented_with_implemented_nics() {
        let (_dir, mut args) = setup("user");
        args.netdev = vec!["user,id=n0,hostfwd=tcp::2222-:22,restrict=on".into()];
        args.device = vec!["virtio-net-pci,netdev=n0".into()];
        let c = build(&args).unwrap();
        assert_eq!(c.net.netdevs[0].backend.type_name(), "user");
        args.netdev.clear();
        args.device.clear();
        args.nic = vec!["user,model=virtio-net-pci,mac=52:54:00:12:34:56".into()];
        assert_eq!(build(&args).unwrap().net.nics.len(), 1);
        args.nic = vec!["user".into()];
        assert_eq!(build(&args).unwrap().net.nics.len(), 1);
        args.nic = vec!["user,model=e1000".into()];
        assert_eq!(build(&args).unwrap().net.nics[0].model, NicModel::E1000);
        args.nic = vec!["user,model=rtl8139".into()];
        assert_eq!(
            error(&args),
            "--nic user: NIC model 'rtl8139' is not implemented yet"
        );
        args.nic = vec!["user,tftp=/srv/tftp".into()];
        assert_eq!(
            error(&args),
            "--nic user: tftp= (a TFTP server) is not implemented yet"
        );
        args.nic = vec![format!("user,bootfile={}", "b".repeat(200))];
        assert!(
            error(&args).starts_with("--nic user: user networking: bootfile longer than"),
            "{}",
            error(&args)
        );
        // Behind a hub (--net), the hub is what is missing.
        args.nic.clear();
        args.net = vec!["nic".into(), "user".into()];
        assert!(error(&args).contains("'hubport' is not implemented yet"));
    }

    #[test]
    fn config_file() {
        let (dir, mut args) = setup("file");
        dir.write("initrd.img", b"initrd");
        let cfg = dir.write(
            "vm.toml",
            br#"
kernel = "vmlinuz"
initrd = "initrd.img"
cmdline = "console=ttyS0 root=/dev/vda"
memory = "1G"
cpus = 2
serial = "file:serial.log"
netdev = ["user,id=u0"]
"#,
        );
        args.kernel = None;
        args.config = Some(cfg.clone());
        let (c, warnings) = VmConfig::build(&args, HOST).unwrap();
        assert_eq!(c.kernel, dir.0.join("vmlinuz"));
        assert_eq!(c.initrd, Some(dir.0.join("initrd.img")));
        assert_eq!(c.cmdline, "console=ttyS0 root=/dev/vda");
        assert_eq!(c.memory_mib, 1024);
        assert_eq!(c.cpus, 2);
        assert_eq!(c.serial, SerialConfig::File(dir.0.join("serial.log")));
        assert_eq!(c.net.netdevs[0].id, "u0");
        assert_eq!(
            warnings,
            [format!(
                "{}: netdev[0] user: netdev 'u0' is not used by any NIC",
                cfg.display()
            )]
        );

        // Flags override single values...
        args.memory = Some("2048".into());
        args.cpus = Some("4".into());
        args.serial = Some("none".into());
        let c = build(&args).unwrap();
        assert_eq!(
            (c.memory_mib, c.cpus, c.serial),
            (2048, 4, SerialConfig::None)
        );
        // ...and a list flag replaces the file's list.
        args.netdev = vec!["tap,id=t0".into()];
        let c = build(&args).unwrap();
        assert_eq!(c.net.netdevs.len(), 1);
        assert_eq!(c.net.netdevs[0].id, "t0");
        assert_eq!(c.net.netdevs[0].origin, "--netdev tap");
    }

    #[test]
    fn config_file_lists_mix_with_flags() {
        let (dir, mut args) = setup("mix");
        let cfg = dir.write("vm.toml", b"netdev = [\"user,id=u0\"]\nmemory = 256\n");
        args.config = Some(cfg.clone());
        args.device = vec!["pcnet,netdev=u0".into()];
        assert_eq!(
            error(&args),
            "--device pcnet: NIC model 'pcnet' is not implemented yet"
        );
        args.device = vec!["e1000,netdev=u0".into()];
        let c = build(&args).unwrap();
        assert_eq!((c.memory_mib, c.net.netdevs[0].id.as_str()), (256, "u0"));
        // An overridden file value is not checked.
        std::fs::write(&cfg, "memory = \"12XB\"\n").unwrap();
        args.device.clear();
        args.memory = Some("1G".into());
        assert_eq!(build(&args).unwrap().memory_mib, 1024);
    }

    #[test]
    fn config_file_errors() {
        let (dir, mut args) = setup("fileerr");
        let missing = dir.0.join("missing.toml");
        args.config = Some(missing.clone());
        assert_eq!(
            error(&args),
            format!("config file '{}' does not exist", missing.display())
        );

        let mut file_error = |text: &str| {
            let p = dir.write("vm.toml", text.as_bytes());
            args.config = Some(p);
            error(&args)
        };
        let e = file_error("memory = \"1G\"\nbogus_key = 1\n");
        assert!(
            e.contains("line 2") && e.contains("unknown field `bogus_key`"),
            "{e}"
        );
        let e = file_error("kernel = \n");
        assert!(e.contains("line 1"), "{e}");
        let e = file_error("cpus = 2.5\n");
        assert!(e.contains("an integer or a string"), "{e}");
        let e = file_error("memory = \"12XB\"\n");
        assert!(e.ends_with("vm.toml: memory '12XB': unknown unit 'XB' (expected a number of MiB or a size like 512M or 2G)"), "{e}");
        let e = file_error("cpus = 40\n");
        assert!(
            e.ends_with("vm.toml: cpus '40': must be a whole number from 1 to 32"),
            "{e}"
        );
        let e = file_error("serial = \"tty\"\n");
        assert!(
            e.ends_with("vm.toml: serial 'tty': expected stdio, none or file:PATH"),
            "{e}"
        );
        let e = file_error("device = [\"e1000\", \"virtio-blk-pci\"]\n");
        assert!(e.ends_with("vm.toml: device[1] virtio-blk-pci: unknown device type 'virtio-blk-pci': only NIC models can be given (virtio-net-pci, e1000, rtl8139, ne2k_pci, pcnet)"), "{e}");
        let e = file_error("netdev = \"user,id=u\"\n");
        assert!(e.contains("expected a sequence"), "{e}");
        args.kernel = None;
        args.config = Some(dir.write("vm.toml", b"kernel = \"nope\"\n"));
        let e = error(&args);
        assert_eq!(
            e,
            format!("kernel '{}' does not exist", dir.0.join("nope").display())
        );
        args.config = Some(dir.0.clone());
        assert!(error(&args).ends_with("is a directory"));
    }

    #[test]
    fn kernel_from_file_and_no_kernel() {
        let (dir, mut args) = setup("nokernel");
        args.kernel = None;
        args.config = Some(dir.write("vm.toml", b"cpus = 1\n"));
        assert!(error(&args).starts_with("no kernel given"));
    }
}
