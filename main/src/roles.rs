//! The hidden command lines of the processes the launcher spawns, and what
//! each is handed. A spawned process finds its descriptors at fixed numbers
//! and its configuration, as TOML, in its one argument.
//!
//! ```text
//! moatvm __vcpu   '<VcpuRole as TOML>'     fds: 0 stdin (serial input), 3 /dev/kvm,
//!                                               4 guest RAM, 5 serial output,
//!                                               then per device: device channel,
//!                                               vm-control channel, register
//!                                               mirror (if the model has one)
//! moatvm __device '<DeviceRole as TOML>'   fds: 3 guest RAM, 4 device channel,
//!                                               5 vm-control channel, 6 backend
//!                                               (a tap or a frame channel),
//!                                               7 /dev/vhost-net (vhost=on),
//!                                               8 register mirror (if any);
//!                                               with multiqueue, pair p >= 1:
//!                                               7 + 2p its tap queue, 8 + 2p
//!                                               its /dev/vhost-net (vhost=on)
//! moatvm __backend '<BackendRole as TOML>' fds: 3 frame channel
//! ```

use serde::{Deserialize, Serialize};

/// The hidden subcommand of the vCPU process.
pub const VCPU: &str = "__vcpu";
/// The hidden subcommand of a device process.
pub const DEVICE: &str = "__device";
/// The hidden subcommand of a backend process (user-mode networking).
pub const BACKEND: &str = "__backend";

/// Descriptor numbers in a device process.
pub mod device_fds {
    /// The guest-RAM memfd.
    pub const GUEST_RAM: i32 = 3;
    /// Requests from the vCPU process (config and BAR accesses).
    pub const DEVICE_CHANNEL: i32 = 4;
    /// Requests to the vCPU process (ioeventfds, irqfds, MSI routes).
    pub const VM_CONTROL: i32 = 5;
    /// The backend: the tap (queue 0), or the NIC's end of a frame channel
    /// (as [`super::DeviceRole::backend`] says).
    pub const BACKEND: i32 = 6;
    /// `/dev/vhost-net`, when the netdev has `vhost=on`.
    pub const VHOST: i32 = 7;
    /// The register mirror, for a model with mirrored registers.
    pub const MIRROR: i32 = 8;

    /// The tap queue of queue pair `pair` ([`BACKEND`] for pair 0, then
    /// 9, 11, 13, ...).
    pub fn tap_queue(pair: u16) -> i32 {
        match pair {
            0 => BACKEND,
            p => 7 + 2 * i32::from(p),
        }
    }

    /// The `/dev/vhost-net` of queue pair `pair` ([`VHOST`] for pair 0,
    /// then 10, 12, 14, ...).
    pub fn vhost(pair: u16) -> i32 {
        match pair {
            0 => VHOST,
            p => 8 + 2 * i32::from(p),
        }
    }
}

/// Descriptor numbers in a backend process.
pub mod backend_fds {
    /// The backend's end of the frame channel.
    pub const FRAMES: i32 = 3;
}

/// Descriptor numbers in the vCPU process.
pub mod vcpu_fds {
    /// /dev/kvm.
    pub const KVM: i32 = 3;
    /// The guest-RAM memfd.
    pub const GUEST_RAM: i32 = 4;
    /// COM1's output (a file, or a copy of standard output).
    pub const SERIAL: i32 = 5;
    /// Device `i`'s device channel; its vm-control channel and register
    /// mirror follow.
    pub fn device_channel(i: usize) -> i32 {
        6 + 3 * i as i32
    }
    /// Device `i`'s vm-control channel.
    pub fn vm_control(i: usize) -> i32 {
        device_channel(i) + 1
    }
    /// Device `i`'s register mirror (if its model has mirrored registers).
    pub fn mirror(i: usize) -> i32 {
        device_channel(i) + 2
    }
}

/// What a BAR decodes, in a form that serializes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarKindName {
    Io,
    Memory32,
    Memory64,
}

/// A BAR of a device and the guest-physical address the launcher gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedBar {
    pub index: u8,
    pub kind: BarKindName,
    pub prefetchable: bool,
    pub size: u64,
    pub address: u64,
}

/// A device as the vCPU process knows it: where its BARs are and how many
/// MSI-X vectors it may ask routes for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteDevice {
    pub name: String,
    pub bars: Vec<AssignedBar>,
    pub msix_vectors: u16,
    /// Registers (BAR, offset) answered from the register mirror, slot by
    /// slot.
    #[serde(default)]
    pub mirrored: Vec<(u8, u64)>,
}

/// What the vCPU process is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VcpuRole {
    pub mem_size: u64,
    pub cpus: u8,
    /// Where the boot vCPU starts (the launcher loaded the kernel).
    pub entry: crate::vcpu::boot::BootEntry,
    /// COM1 writes every byte at once (a terminal).
    pub serial_interactive: bool,
    /// COM1 reads standard input.
    pub serial_stdin: bool,
    /// `kill` or `log`.
    pub seccomp: String,
    /// PCI devices, in slot order from slot 1.
    pub devices: Vec<RemoteDevice>,
}

impl VcpuRole {
    /// The command-line form.
    pub fn to_arg(&self) -> String {
        toml::to_string(self).expect("a VcpuRole always serializes")
    }

    /// Parses the command-line form.
    pub fn from_arg(arg: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(arg)
    }
}

/// The NIC models a device process can host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NicKind {
    VirtioNet,
    E1000,
}

impl NicKind {
    /// 32-bit registers (BAR, offset) whose reads the vCPU process answers
    /// from the register mirror: side-effect-free ones the guest's writes
    /// cannot change, read on hot paths.
    pub fn mirrored(self) -> Vec<(u8, u64)> {
        match self {
            NicKind::VirtioNet => Vec::new(),
            // STATUS: Linux's e1000 reads it to flush every write to IMS
            // and IMC, twice per interrupt; it follows only the link.
            NicKind::E1000 => vec![(0, 0x8)],
        }
    }

    /// The BARs of the model (size, kind) and its MSI-X vector count, for
    /// `queue_pairs` queue pairs; the launcher places the BARs before the
    /// model exists.
    pub fn layout(self, queue_pairs: u16) -> (Vec<(u8, BarKindName, bool, u64)>, u16) {
        match self {
            // One 32 KiB 64-bit BAR: common, ISR, device, notify, MSI-X
            // table and PBA; vectors for each RX and TX queue, control and
            // configuration.
            NicKind::VirtioNet => (
                vec![(0, BarKindName::Memory64, false, 0x8000)],
                2 * queue_pairs.max(1) + 2,
            ),
            // 128 KiB of registers and the 64-byte IOADDR/IODATA window;
            // INTx only.
            NicKind::E1000 => (
                vec![
                    (0, BarKindName::Memory32, false, 0x2_0000),
                    (1, BarKindName::Io, false, 0x40),
                ],
                0,
            ),
        }
    }
}

/// What a device process's backend descriptor is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendKind {
    /// A tap the launcher made (or was given).
    #[default]
    Tap,
    /// A frame channel to a backend process.
    Frames,
}

/// What a device process is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRole {
    /// For messages: e.g. `net0 (virtio-net-pci)`.
    pub name: String,
    pub kind: NicKind,
    pub mac: [u8; 6],
    /// Bytes of guest RAM in the memfd (laid out as `vcpu::layout` says).
    pub mem_size: u64,
    /// `kill` or `log`.
    pub seccomp: String,
    /// Testing only: issue a forbidden system call once set up, to show
    /// that the jail kills the process and the launcher notices.
    #[serde(default)]
    pub violate_seccomp: bool,
    /// A vhost-net descriptor comes at [`device_fds::VHOST`].
    #[serde(default)]
    pub vhost: bool,
    /// What descriptor 6 is.
    #[serde(default)]
    pub backend: BackendKind,
    /// virtio-net's multiqueue (`mq=on`): VIRTIO_NET_F_MQ offered with
    /// [`Self::queue_pairs`] pairs, each with its own tap queue (and
    /// vhost-net descriptor) at [`device_fds::tap_queue`]
    /// ([`device_fds::vhost`]).
    #[serde(default)]
    pub mq: bool,
    /// Queue pairs (1 without multiqueue).
    #[serde(default = "one")]
    pub queue_pairs: u16,
}

fn one() -> u16 {
    1
}

impl DeviceRole {
    /// The command-line form.
    pub fn to_arg(&self) -> String {
        toml::to_string(self).expect("a DeviceRole always serializes")
    }

    /// Parses the command-line form.
    pub fn from_arg(arg: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(arg)
    }
}

/// The network a backend process provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendSpec {
    /// User-mode networking (libslirp), every default resolved.
    User(devices::backend::slirp::Config),
}

/// What a backend process is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRole {
    /// For messages: e.g. `n0 (user)`.
    pub name: String,
    /// `kill` or `log`.
    pub seccomp: String,
    /// Testing only, as for [`DeviceRole`].
    #[serde(default)]
    pub violate_seccomp: bool,
    pub spec: BackendSpec,
}

impl BackendRole {
    /// The command-line form.
    pub fn to_arg(&self) -> String {
        toml::to_string(self).expect("a BackendRole always serializes")
    }

    /// Parses the command-line form.
    pub fn from_arg(arg: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(arg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::backend::slirp::{Config, HostFwd};

    #[test]
    fn backend_role_round_trips() {
        let role = BackendRole {
            name: "n0 (user)".into(),
            seccomp: "kill".into(),
            violate_seccomp: false,
            spec: BackendSpec::User(Config {
                hostname: Some("guest".into()),
                dnssearch: vec!["a.example".into(), "b.example".into()],
                hostfwd: vec![
                    HostFwd {
                        udp: false,
                        host_addr: "127.0.0.1".parse().unwrap(),
                        host_port: 2222,
                        guest_addr: "10.0.2.15".parse().unwrap(),
                        guest_port: 22,
                    },
                    HostFwd {
                        udp: true,
                        host_addr: "0.0.0.0".parse().unwrap(),
                        host_port: 5353,
                        guest_addr: "10.0.2.16".parse().unwrap(),
                        guest_port: 53,
                    },
                ],
                dns_upstream: Some("192.0.2.53:53".parse().unwrap()),
                ..Config::default()
            }),
        };
        let arg = role.to_arg();
        assert_eq!(BackendRole::from_arg(&arg).unwrap(), role, "{arg}");
        let mut plain = role.clone();
        plain.spec = BackendSpec::User(Config::default());
        assert_eq!(BackendRole::from_arg(&plain.to_arg()).unwrap(), plain);
    }

    #[test]
    fn device_role_backend_defaults_to_tap() {
        let arg = "name = 'n'\nkind = 'VirtioNet'\nmac = [2, 0, 0, 0, 0, 1]\n\
                   mem_size = 1\nseccomp = 'kill'\n";
        assert_eq!(DeviceRole::from_arg(arg).unwrap().backend, BackendKind::Tap);
    }
}
