//! QEMU-dialect network options: `--netdev`, `--device`, `--nic` and `--net`.
//!
//! Every option is a comma-separated list `TYPE,key=value,...`; a literal
//! comma inside a value is written `,,`, and the type may also be given as
//! `type=TYPE` (`driver=MODEL` for `--device`), as in QEMU. A boolean key
//! given bare (`vhost`) means `vhost=on`.
//!
//! [`NetBuilder::add`] parses one option and checks its keys and values;
//! [`NetBuilder::finish`] cross-checks the references between NICs, hub ports
//! and netdevs and returns a [`NetConfig`]: a flat list of netdevs (host
//! backends and hub ports) and NICs. The shorthands are expanded the way QEMU
//! expands them:
//!
//! * `--nic TYPE,...` is a netdev of that type (its `id=`, or a generated id)
//!   plus a NIC (`model=`, default virtio-net-pci; `mac=`) connected to it.
//! * `--net nic,...` is a NIC connected to a new port of hub `vlan=` (default
//!   0); `--net TYPE,...` a netdev connected to a new port of that hub. Ports
//!   are ordinary `hubport` netdevs, so `--netdev hubport,hubid=N` joins the
//!   same hub.
//!
//! Generated ids start with `#`, which no user id can (ids start with a
//! letter), so they never collide.
//!
//! Accepted types and keys (QEMU's meanings):
//!
//! ```text
//! netdev tap      id ifname br fd vnet_hdr=on|off vhost=on|off vhostfd vhostforce=on|off
//!                 queues script=no downscript=no
//! netdev user     id net=A.B.C.D[/N] host dhcpstart dns hostname domainname dnssearch*
//!                 restrict=on|off hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport*
//!                 ipv4=on|off ipv6=on|off ipv6-net=PREFIX[/N] tftp bootfile
//! netdev socket   id, exactly one of listen=[HOST]:PORT connect=HOST:PORT
//!                 mcast=GROUP:PORT udp=HOST:PORT; localaddr (ADDR with mcast,
//!                 HOST:PORT with udp, where it is required)
//! netdev hubport  id hubid [netdev]
//! device          virtio-net-pci (id netdev mac mq addr), e1000, rtl8139, ne2k_pci,
//!                 pcnet (id netdev mac addr)
//! (* = may be repeated)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Which option (or config-file list of the same name) a specification came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetOption {
    /// `--netdev TYPE,id=ID,...`: a host-side backend or hub port.
    Netdev,
    /// `--device MODEL,...`: a NIC.
    Device,
    /// `--nic TYPE,...`: a netdev plus a NIC.
    Nic,
    /// `--net nic|TYPE,...,vlan=N`: QEMU's old hub syntax.
    Net,
}

impl NetOption {
    /// All of them, in the order they are processed.
    pub const ALL: [NetOption; 4] = [Self::Netdev, Self::Device, Self::Nic, Self::Net];

    /// The command-line flag.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Netdev => "--netdev",
            Self::Device => "--device",
            Self::Nic => "--nic",
            Self::Net => "--net",
        }
    }

    /// The key of the config file's list.
    pub fn key(self) -> &'static str {
        match self {
            Self::Netdev => "netdev",
            Self::Device => "device",
            Self::Nic => "nic",
            Self::Net => "net",
        }
    }
}

/// A rejected network option: where it came from and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {kind}")]
pub struct NetError {
    /// The option, e.g. `--netdev tap` or `vm.toml: netdev[0] tap`.
    pub origin: String,
    /// What is wrong with it.
    pub kind: NetErrorKind,
}

/// What is wrong with a network option. Every user-supplied word that is
/// quoted here has had its control characters escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetErrorKind {
    #[error("empty specification")]
    Empty,
    #[error("control character in '{0}'")]
    ControlChar(String),
    #[error("empty option (stray ',')")]
    EmptyItem,
    #[error("option '{0}' has no key")]
    EmptyKey(String),
    #[error("no type given (start with the type, e.g. 'tap,id=n0', or give '{0}=')")]
    MissingType(&'static str),
    #[error("unknown netdev type '{ty}' (expected {expected})")]
    UnknownNetdevType { ty: String, expected: &'static str },
    #[error("unknown device type '{0}': only NIC models can be given (virtio-net-pci, e1000, rtl8139, ne2k_pci, pcnet)")]
    UnknownDevice(String),
    #[error(
        "unknown NIC model '{0}' (expected virtio-net-pci, e1000, rtl8139, ne2k_pci or pcnet)"
    )]
    UnknownModel(String),
    #[error("unknown --net type '{0}' (expected nic, user, tap, socket or none)")]
    UnknownNetType(String),
    #[error("unknown key '{key}' (valid keys for {what}: {valid})")]
    UnknownKey {
        key: String,
        what: String,
        valid: String,
    },
    #[error("key '{0}' given more than once")]
    DuplicateKey(String),
    #[error("key '{0}' needs a value ({0}=...)")]
    MissingValue(String),
    #[error("missing {0}=")]
    MissingKey(&'static str),
    #[error("{key}='{value}': {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("invalid id '{0}': an id starts with a letter and has only letters, digits, '-', '.' and '_'")]
    BadId(String),
    #[error("invalid MAC address '{0}': expected six hex pairs separated by ':', e.g. 52:54:00:12:34:56")]
    BadMac(String),
    #[error("MAC address '{0}' is a multicast address (lowest bit of the first byte set); a NIC needs a unicast one")]
    MulticastMac(String),
    #[error("{0}")]
    Conflict(String),
    #[error("duplicate netdev id '{id}' (already used by {first})")]
    DuplicateNetdevId { id: String, first: String },
    #[error("duplicate device id '{id}' (already used by {first})")]
    DuplicateDeviceId { id: String, first: String },
    #[error("netdev '{0}' does not exist (no --netdev has id={0})")]
    NoSuchNetdev(String),
    #[error("netdev '{id}' is already used by {user}")]
    NetdevInUse { id: String, user: String },
}

use NetErrorKind as K;

// ---------------------------------------------------------------- types

/// Every netdev and NIC of the VM, cross-checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// Host-side backends and hub ports, in the order given.
    pub netdevs: Vec<Netdev>,
    /// Guest NICs, in the order given.
    pub nics: Vec<Nic>,
}

/// A netdev: something a NIC (or a hub port) can be connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netdev {
    /// Its id; generated ones start with `#`.
    pub id: String,
    /// What it is.
    pub backend: Backend,
    /// The option it came from, e.g. `--netdev tap`, for messages.
    pub origin: String,
}

/// The kinds of netdev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Tap(TapOpts),
    User(UserOpts),
    Socket(SocketOpts),
    Hubport(HubportOpts),
}

impl Backend {
    /// The QEMU type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Tap(_) => "tap",
            Self::User(_) => "user",
            Self::Socket(_) => "socket",
            Self::Hubport(_) => "hubport",
        }
    }
}

/// `tap`: a host TAP interface. `script`/`downscript` are only accepted as
/// `no` (moatvm never runs scripts), so they are not stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapOpts {
    pub ifname: Option<String>,
    pub br: Option<String>,
    pub fd: Option<i32>,
    pub vnet_hdr: Option<bool>,
    pub vhost: Option<bool>,
    pub vhostfd: Option<i32>,
    pub vhostforce: Option<bool>,
    pub queues: Option<u16>,
}

/// `user`: user-mode (slirp-style) networking. Unset addresses take QEMU's
/// defaults inside `net` (host .2, dns .3, dhcpstart .15).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserOpts {
    pub net: Option<Ipv4Net>,
    pub host: Option<Ipv4Addr>,
    pub dhcpstart: Option<Ipv4Addr>,
    pub dns: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub dnssearch: Vec<String>,
    pub restrict: Option<bool>,
    pub hostfwd: Vec<HostFwd>,
    pub ipv4: Option<bool>,
    pub ipv6: Option<bool>,
    pub ipv6_net: Option<Ipv6Net>,
    pub tftp: Option<String>,
    pub bootfile: Option<String>,
}

/// QEMU's default `net=` for `user`.
pub const DEFAULT_USER_NET: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(10, 0, 2, 0),
    prefix_len: 24,
};

/// An IPv4 network, host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Net {
    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    /// Whether `a` lies inside the network.
    pub fn contains(self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.addr)
    }

    /// The address `n` places after the network address.
    pub fn nth(self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// An IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Transport of a `hostfwd` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwdProto {
    Tcp,
    Udp,
}

/// `hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`. Unset
/// addresses mean: any host address; the guest's DHCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFwd {
    pub proto: FwdProto,
    pub host_addr: Option<Ipv4Addr>,
    pub host_port: u16,
    pub guest_addr: Option<Ipv4Addr>,
    pub guest_port: u16,
}

impl fmt::Display for HostFwd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            FwdProto::Tcp => "tcp",
            FwdProto::Udp => "udp",
        };
        let addr = |a: Option<Ipv4Addr>| a.map(|a| a.to_string()).unwrap_or_default();
        write!(
            f,
            "{proto}:{}:{}-{}:{}",
            addr(self.host_addr),
            self.host_port,
            addr(self.guest_addr),
            self.guest_port
        )
    }
}

/// `socket`: frames over a TCP stream, UDP multicast or UDP unicast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOpts {
    pub mode: SocketMode,
}

/// A host name (possibly empty, for "any") and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The one way a `socket` netdev connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketMode {
    /// `listen=[HOST]:PORT`
    Listen(HostPort),
    /// `connect=HOST:PORT`
    Connect(HostPort),
    /// `mcast=GROUP:PORT[,localaddr=ADDR]`
    Mcast {
        group: Ipv4Addr,
        port: u16,
        localaddr: Option<Ipv4Addr>,
    },
    /// `udp=HOST:PORT,localaddr=HOST:PORT`
    Udp {
        remote: HostPort,
        localaddr: HostPort,
    },
}

/// `hubport`: a port of emulated hub `hubid`, optionally connected to
/// another netdev (the host side of the hub).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubportOpts {
    pub hubid: u32,
    pub netdev: Option<String>,
}

/// The NIC models moatvm knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    VirtioNetPci,
    E1000,
    Rtl8139,
    Ne2kPci,
    Pcnet,
}

impl NicModel {
    /// Every model.
    pub const ALL: [NicModel; 5] = [
        Self::VirtioNetPci,
        Self::E1000,
        Self::Rtl8139,
        Self::Ne2kPci,
        Self::Pcnet,
    ];

    /// QEMU's device name.
    pub fn name(self) -> &'static str {
        match self {
            Self::VirtioNetPci => "virtio-net-pci",
            Self::E1000 => "e1000",
            Self::Rtl8139 => "rtl8139",
            Self::Ne2kPci => "ne2k_pci",
            Self::Pcnet => "pcnet",
        }
    }

    fn from_device_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// As for `model=`, which also takes QEMU's alias `virtio`.
    fn from_model_name(s: &str) -> Option<Self> {
        if s == "virtio" {
            Some(Self::VirtioNetPci)
        } else {
            Self::from_device_name(s)
        }
    }
}

/// A guest NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub model: NicModel,
    /// Its device id (`--device ...,id=` or `--net nic,name=`).
    pub id: Option<String>,
    /// The netdev it is connected to; none means no link.
    pub netdev: Option<String>,
    /// None: a stable one is generated later.
    pub mac: Option<MacAddr>,
    /// Multiqueue (virtio-net-pci only).
    pub mq: Option<bool>,
    /// PCI slot and function.
    pub addr: Option<PciAddr>,
    /// The option it came from, e.g. `--device e1000`, for messages.
    pub origin: String,
}

/// A unicast Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = NetErrorKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || K::BadMac(shown(s));
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if mac[0] & 1 != 0 {
            return Err(K::MulticastMac(s.to_string()));
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A PCI slot and function, written `SLOT[.FN]` in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciAddr {
    pub slot: u8,
    pub function: u8,
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}.{:x}", self.slot, self.function)
    }
}

impl NetConfig {
    /// The netdevs some NIC's traffic reaches: those NICs are connected to,
    /// and, through a hub, every port of that hub and what those ports are
    /// connected to. In the order given.
    pub fn reachable_netdevs(&self) -> Vec<&Netdev> {
        let mut ids: Vec<&str> = self
            .nics
            .iter()
            .filter_map(|n| n.netdev.as_deref())
            .collect();
        let mut hubs: Vec<u32> = Vec::new();
        loop {
            let before = (ids.len(), hubs.len());
            for nd in &self.netdevs {
                let Backend::Hubport(h) = &nd.backend else {
                    continue;
                };
                let on_hub = hubs.contains(&h.hubid);
                let listed = ids.contains(&nd.id.as_str());
                if listed && !on_hub {
                    hubs.push(h.hubid);
                }
                if on_hub || listed {
                    if !listed {
                        ids.push(&nd.id);
                    }
                    if let Some(peer) = h.netdev.as_deref() {
                        if !ids.contains(&peer) {
                            ids.push(peer);
                        }
                    }
                }
            }
            if (ids.len(), hubs.len()) == before {
                break;
            }
        }
        self.netdevs
            .iter()
            .filter(|nd| ids.contains(&nd.id.as_str()))
            .collect()
    }
}

// ---------------------------------------------------------------- rendering

/// Writes `,key=value`, doubling commas in the value.
fn kv(f: &mut fmt::Formatter<'_>, key: &str, value: Option<impl fmt::Display>) -> fmt::Result {
    match value {
        Some(v) => write!(f, ",{key}={}", v.to_string().replace(',', ",,")),
        None => Ok(()),
    }
}

fn on_off(b: Option<bool>) -> Option<&'static str> {
    b.map(|b| if b { "on" } else { "off" })
}

/// The netdev in `--netdev` syntax.
impl fmt::Display for Netdev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.backend.type_name())?;
        kv(f, "id", Some(&self.id))?;
        match &self.backend {
            Backend::Tap(t) => {
                kv(f, "ifname", t.ifname.as_ref())?;
                kv(f, "br", t.br.as_ref())?;
                kv(f, "fd", t.fd)?;
                kv(f, "vnet_hdr", on_off(t.vnet_hdr))?;
                kv(f, "vhost", on_off(t.vhost))?;
                kv(f, "vhostfd", t.vhostfd)?;
                kv(f, "vhostforce", on_off(t.vhostforce))?;
                kv(f, "queues", t.queues)?;
                kv(f, "script", Some("no"))?;
                kv(f, "downscript", Some("no"))
            }
            Backend::User(u) => {
                kv(f, "net", u.net)?;
                kv(f, "host", u.host)?;
                kv(f, "dhcpstart", u.dhcpstart)?;
                kv(f, "dns", u.dns)?;
                kv(f, "hostname", u.hostname.as_ref())?;
                kv(f, "domainname", u.domainname.as_ref())?;
                for d in &u.dnssearch {
                    kv(f, "dnssearch", Some(d))?;
                }
                kv(f, "restrict", on_off(u.restrict))?;
                for h in &u.hostfwd {
                    kv(f, "hostfwd", Some(h))?;
                }
                kv(f, "ipv4", on_off(u.ipv4))?;
                kv(f, "ipv6", on_off(u.ipv6))?;
                kv(f, "ipv6-net", u.ipv6_net)?;
                kv(f, "tftp", u.tftp.as_ref())?;
                kv(f, "bootfile", u.bootfile.as_ref())
            }
            Backend::Socket(s) => match &s.mode {
                SocketMode::Listen(hp) => kv(f, "listen", Some(hp)),
                SocketMode::Connect(hp) => kv(f, "connect", Some(hp)),
                SocketMode::Mcast {
                    group,
                    port,
                    localaddr,
                } => {
                    kv(f, "mcast", Some(format!("{group}:{port}")))?;
                    kv(f, "localaddr", *localaddr)
                }
                SocketMode::Udp { remote, localaddr } => {
                    kv(f, "udp", Some(remote))?;
                    kv(f, "localaddr", Some(localaddr))
                }
            },
            Backend::Hubport(h) => {
                kv(f, "hubid", Some(h.hubid))?;
                kv(f, "netdev", h.netdev.as_ref())
            }
        }
    }
}

/// The NIC in `--device` syntax.
impl fmt::Display for Nic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.model.name())?;
        kv(f, "id", self.id.as_ref())?;
        kv(f, "netdev", self.netdev.as_ref())?;
        kv(f, "mac", self.mac)?;
        kv(f, "mq", on_off(self.mq))?;
        kv(f, "addr", self.addr)
    }
}

/// The whole configuration as `--netdev`/`--device` options, or `none`.
impl fmt::Display for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.netdevs.is_empty() && self.nics.is_empty() {
            return write!(f, "none");
        }
        let mut sep = "";
        for n in &self.netdevs {
            write!(f, "{sep}--netdev {n}")?;
            sep = " ";
        }
        for n in &self.nics {
            write!(f, "{sep}--device {n}")?;
            sep = " ";
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- splitting

/// `s` with its control characters escaped, fit for a one-line message.
pub(crate) fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

type Items = Vec<(String, Option<String>)>;

/// Splits a specification into its type and `key[=value]` items.
fn split_spec(spec: &str, type_key: &'static str) -> Result<(String, Items), NetErrorKind> {
    if spec.chars().any(char::is_control) {
        return Err(K::ControlChar(shown(spec)));
    }
    if spec.is_empty() {
        return Err(K::Empty);
    }
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                parts.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);

    let mut items = Items::new();
    let mut ty = None;
    for (i, part) in parts.into_iter().enumerate() {
        if part.is_empty() {
            return Err(K::EmptyItem);
        }
        match part.split_once('=') {
            None if i == 0 => ty = Some(part),
            None => items.push((part, None)),
            Some(("", _)) => return Err(K::EmptyKey(part)),
            Some((k, v)) if k == type_key && ty.is_none() => ty = Some(v.to_string()),
            Some((k, v)) => items.push((k.to_string(), Some(v.to_string()))),
        }
    }
    match ty {
        Some(t) if !t.is_empty() => Ok((t, items)),
        _ => Err(K::MissingType(type_key)),
    }
}

/// Keys that may be given more than once.
const REPEATABLE: &[&str] = &["hostfwd", "dnssearch"];

/// The items of one specification, checked against the keys its type takes.
struct Bag {
    items: Items,
    what: String,
    valid: String,
}

impl Bag {
    fn new(items: Items, allowed: &[&str], what: &str) -> Result<Bag, NetErrorKind> {
        let valid = allowed.join(", ");
        for (i, (k, _)) in items.iter().enumerate() {
            if !allowed.contains(&k.as_str()) {
                return Err(K::UnknownKey {
                    key: k.clone(),
                    what: what.to_string(),
                    valid,
                });
            }
            if !REPEATABLE.contains(&k.as_str()) && items[..i].iter().any(|(p, _)| p == k) {
                return Err(K::DuplicateKey(k.clone()));
            }
        }
        Ok(Bag {
            items,
            what: what.to_string(),
            valid,
        })
    }

    /// Removes `key`: None if absent, Some(None) if given bare.
    fn take(&mut self, key: &str) -> Option<Option<String>> {
        let i = self.items.iter().position(|(k, _)| k == key)?;
        Some(self.items.remove(i).1)
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, NetErrorKind> {
        match self.take(key) {
            None => Ok(None),
            Some(None) => Err(K::MissingValue(key.to_string())),
            Some(Some(v)) if v.is_empty() => Err(bad(key, "", "must not be empty")),
            Some(Some(v)) => Ok(Some(v)),
        }
    }

    fn strings(&mut self, key: &str) -> Result<Vec<String>, NetErrorKind> {
        let mut all = Vec::new();
        while let Some(v) = self.string(key)? {
            all.push(v);
        }
        Ok(all)
    }

    fn parse<T>(
        &mut self,
        key: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, NetErrorKind> {
        match self.string(key)? {
            None => Ok(None),
            Some(v) => f(&v).map(Some).map_err(|reason| bad(key, &v, &reason)),
        }
    }

    fn flag(&mut self, key: &str) -> Result<Option<bool>, NetErrorKind> {
        match self.take(key) {
            None => Ok(None),
            Some(None) => Ok(Some(true)),
            Some(Some(v)) => match v.as_str() {
                "on" | "yes" | "true" | "y" => Ok(Some(true)),
                "off" | "no" | "false" | "n" => Ok(Some(false)),
                _ => Err(bad(key, &v, "expected on or off")),
            },
        }
    }

    fn id(&mut self, key: &str) -> Result<Option<String>, NetErrorKind> {
        let id = self.string(key)?;
        if let Some(id) = &id {
            check_id(id)?;
        }
        Ok(id)
    }

    /// Every allowed key must have been consumed by now.
    fn done(self) -> Result<(), NetErrorKind> {
        match self.items.into_iter().next() {
            None => Ok(()),
            Some((key, _)) => Err(K::UnknownKey {
                key,
                what: self.what,
                valid: self.valid,
            }),
        }
    }
}

fn bad(key: &str, value: &str, reason: &str) -> NetErrorKind {
    K::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn check_id(id: &str) -> Result<(), NetErrorKind> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(K::BadId(id.to_string()))
    }
}

// ---------------------------------------------------------------- values

/// A decimal number in `min..=max`.
fn number<T>(v: &str, min: T, max: T) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a number".into());
    }
    match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("must be from {min} to {max}")),
    }
}

fn port(v: &str) -> Result<u16, String> {
    number(v, 1, u16::MAX)
}

fn ipv4(v: &str) -> Result<Ipv4Addr, String> {
    v.parse().map_err(|_| "not an IPv4 address".to_string())
}

fn ifname(v: &str) -> Result<String, String> {
    if v.len() > 15 || v == "." || v == ".." || v.contains('/') || v.contains(char::is_whitespace) {
        Err("an interface name has 1 to 15 characters and no '/' or spaces".into())
    } else {
        Ok(v.to_string())
    }
}

/// `A.B.C.D[/N]` or `A.B.C.D/MASK`; without a mask, the address's class
/// decides, as in QEMU.
fn ipv4_net(v: &str) -> Result<Ipv4Net, String> {
    let (a, m) = match v.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (v, None),
    };
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| "expected an IPv4 network like 10.0.2.0/24".to_string())?;
    let bits = u32::from(addr);
    let prefix_len = match m {
        None if bits >> 31 == 0 => 8,
        None if bits >> 20 == 0xac1 => 12,
        None if bits >> 30 == 0b10 => 16,
        None if bits >> 16 == 0xc0a8 => 16,
        None => 24,
        Some(m) if m.contains('.') => {
            let mask: Ipv4Addr = m.parse().map_err(|_| "bad netmask".to_string())?;
            let mask = u32::from(mask);
            if mask.leading_ones() + mask.trailing_zeros() != 32 {
                return Err("the netmask is not contiguous".into());
            }
            mask.leading_ones() as u8
        }
        Some(m) => number(m, 0u8, 32).map_err(|e| format!("prefix length {e}"))?,
    };
    let net = Ipv4Net { addr, prefix_len };
    let masked = Ipv4Addr::from(bits & net.mask());
    if masked != addr {
        return Err(format!(
            "has host bits set for /{prefix_len}; the network would be {masked}/{prefix_len}"
        ));
    }
    Ok(net)
}

fn ipv6_net(v: &str) -> Result<Ipv6Net, String> {
    let (a, m) = match v.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (v, None),
    };
    let addr: Ipv6Addr = a
        .parse()
        .map_err(|_| "expected an IPv6 prefix like fd00::/64".to_string())?;
    let prefix_len = match m {
        None => 64,
        Some(m) => number(m, 0u8, 126).map_err(|e| format!("prefix length {e}"))?,
    };
    Ok(Ipv6Net { addr, prefix_len })
}

const HOSTFWD_SYNTAX: &str = "expected [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport";

fn hostfwd(v: &str) -> Result<HostFwd, String> {
    let syntax = || HOSTFWD_SYNTAX.to_string();
    let (host, guest) = v.split_once('-').ok_or_else(syntax)?;
    let host: Vec<&str> = host.split(':').collect();
    let [proto, host_addr, host_port] = host[..] else {
        return Err(syntax());
    };
    let (guest_addr, guest_port) = guest.split_once(':').ok_or_else(syntax)?;
    let proto = match proto {
        "" | "tcp" => FwdProto::Tcp,
        "udp" => FwdProto::Udp,
        p => return Err(format!("unknown protocol '{p}' (expected tcp or udp)")),
    };
    let addr = |a: &str, which: &str| -> Result<Option<Ipv4Addr>, String> {
        if a.is_empty() {
            Ok(None)
        } else {
            ipv4(a)
                .map(Some)
                .map_err(|e| format!("{which} address '{a}': {e}"))
        }
    };
    Ok(HostFwd {
        proto,
        host_addr: addr(host_addr, "host")?,
        host_port: number(host_port, 0, u16::MAX).map_err(|e| format!("host port: {e}"))?,
        guest_addr: addr(guest_addr, "guest")?,
        guest_port: port(guest_port).map_err(|e| format!("guest port: {e}"))?,
    })
}

/// `HOST:PORT`; HOST may be empty only if `empty_host`.
fn host_port(v: &str, empty_host: bool) -> Result<HostPort, String> {
    let syntax = if empty_host {
        "expected [HOST]:PORT"
    } else {
        "expected HOST:PORT"
    };
    let (host, p) = v.rsplit_once(':').ok_or_else(|| syntax.to_string())?;
    if host.is_empty() && !empty_host {
        return Err(syntax.into());
    }
    Ok(HostPort {
        host: host.to_string(),
        port: port(p).map_err(|e| format!("port {e}"))?,
    })
}

fn pci_addr(v: &str) -> Result<PciAddr, String> {
    let syntax = || "expected SLOT[.FUNCTION] in hex, e.g. 03.0".to_string();
    let (slot, function) = match v.split_once('.') {
        Some((s, f)) => (s, f),
        None => (v, "0"),
    };
    let slot = slot.strip_prefix("0x").unwrap_or(slot);
    let hex = |s: &str| {
        if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Err(syntax())
        } else {
            u8::from_str_radix(s, 16).map_err(|_| syntax())
        }
    };
    let (slot, function) = (hex(slot)?, hex(function)?);
    if slot > 0x1f || function > 7 {
        return Err("slot goes up to 1f and function up to 7".into());
    }
    Ok(PciAddr { slot, function })
}

// ---------------------------------------------------------------- backends

const TAP_KEYS: &[&str] = &[
    "id",
    "ifname",
    "br",
    "fd",
    "vnet_hdr",
    "vhost",
    "vhostfd",
    "vhostforce",
    "queues",
    "script",
    "downscript",
];
const USER_KEYS: &[&str] = &[
    "id",
    "net",
    "host",
    "dhcpstart",
    "dns",
    "hostname",
    "domainname",
    "dnssearch",
    "restrict",
    "hostfwd",
    "ipv4",
    "ipv6",
    "ipv6-net",
    "tftp",
    "bootfile",
];
const SOCKET_KEYS: &[&str] = &["id", "listen", "connect", "mcast", "udp", "localaddr"];
const HUBPORT_KEYS: &[&str] = &["id", "hubid", "netdev"];
const VIRTIO_NET_KEYS: &[&str] = &["id", "netdev", "mac", "mq", "addr"];
const NIC_KEYS: &[&str] = &["id", "netdev", "mac", "addr"];
const NET_NIC_KEYS: &[&str] = &["model", "macaddr", "name", "vlan", "netdev", "addr"];

const NETDEV_TYPES: &str = "tap, user, socket or hubport";
const HOST_NETDEV_TYPES: &str = "tap, user or socket";

fn backend_keys(ty: &str) -> Option<&'static [&'static str]> {
    match ty {
        "tap" => Some(TAP_KEYS),
        "user" => Some(USER_KEYS),
        "socket" => Some(SOCKET_KEYS),
        "hubport" => Some(HUBPORT_KEYS),
        _ => None,
    }
}

/// Parses the keys of backend `ty` other than `id`.
fn parse_backend(ty: &str, b: &mut Bag) -> Result<Backend, NetErrorKind> {
    Ok(match ty {
        "tap" => Backend::Tap(parse_tap(b)?),
        "user" => Backend::User(parse_user(b)?),
        "socket" => Backend::Socket(parse_socket(b)?),
        _ => Backend::Hubport(parse_hubport(b)?),
    })
}

fn parse_tap(b: &mut Bag) -> Result<TapOpts, NetErrorKind> {
    let t = TapOpts {
        ifname: b.parse("ifname", ifname)?,
        br: b.parse("br", ifname)?,
        fd: b.parse("fd", |v| number(v, 0, i32::MAX))?,
        vnet_hdr: b.flag("vnet_hdr")?,
        vhost: b.flag("vhost")?,
        vhostfd: b.parse("vhostfd", |v| number(v, 0, i32::MAX))?,
        vhostforce: b.flag("vhostforce")?,
        queues: b.parse("queues", |v| number(v, 1, 1024))?,
    };
    for key in ["script", "downscript"] {
        match b.take(key) {
            None => {}
            Some(None) => return Err(K::MissingValue(key.to_string())),
            Some(Some(v)) if v == "no" || v.is_empty() => {}
            Some(Some(v)) => return Err(bad(
                key,
                &v,
                "moatvm never runs scripts; set the tap device up beforehand and give script=no",
            )),
        }
    }
    if t.fd.is_some() {
        let others = [
            ("ifname", t.ifname.is_some()),
            ("br", t.br.is_some()),
            ("vnet_hdr", t.vnet_hdr.is_some()),
            ("queues", t.queues.is_some()),
        ];
        if let Some((k, _)) = others.into_iter().find(|(_, given)| *given) {
            return Err(K::Conflict(format!("fd= cannot be combined with {k}=")));
        }
    }
    if t.vhost == Some(false) && (t.vhostfd.is_some() || t.vhostforce == Some(true)) {
        return Err(K::Conflict(
            "vhostfd= and vhostforce=on need vhost=on, not vhost=off".into(),
        ));
    }
    Ok(t)
}

fn parse_user(b: &mut Bag) -> Result<UserOpts, NetErrorKind> {
    let net = b.parse("net", ipv4_net)?;
    let within = net.unwrap_or(DEFAULT_USER_NET);
    let mut u = UserOpts {
        net,
        host: b.parse("host", ipv4)?,
        dhcpstart: b.parse("dhcpstart", ipv4)?,
        dns: b.parse("dns", ipv4)?,
        hostname: b.string("hostname")?,
        domainname: b.string("domainname")?,
        dnssearch: b.strings("dnssearch")?,
        restrict: b.flag("restrict")?,
        hostfwd: Vec::new(),
        ipv4: b.flag("ipv4")?,
        ipv6: b.flag("ipv6")?,
        ipv6_net: b.parse("ipv6-net", ipv6_net)?,
        tftp: b.string("tftp")?,
        bootfile: b.string("bootfile")?,
    };
    for v in b.strings("hostfwd")? {
        let rule = hostfwd(&v).map_err(|e| bad("hostfwd", &v, &e))?;
        if let Some(g) = rule.guest_addr {
            if !within.contains(g) {
                return Err(bad(
                    "hostfwd",
                    &v,
                    &format!("guest address {g} is not in {within}"),
                ));
            }
        }
        u.hostfwd.push(rule);
    }
    if u.ipv4 == Some(false) && u.ipv6 == Some(false) {
        return Err(K::Conflict("ipv4=off and ipv6=off leave nothing".into()));
    }
    for (key, given, default) in [
        ("host", u.host, 2),
        ("dns", u.dns, 3),
        ("dhcpstart", u.dhcpstart, 15),
    ] {
        let a = given.unwrap_or(within.nth(default));
        if !within.contains(a) {
            return Err(match given {
                Some(a) => bad(key, &a.to_string(), &format!("is not in net={within}")),
                None => bad(
                    "net",
                    &within.to_string(),
                    &format!("is too small for the default {key} {a}; give {key}="),
                ),
            });
        }
    }
    Ok(u)
}

fn parse_socket(b: &mut Bag) -> Result<SocketOpts, NetErrorKind> {
    let listen = b.string("listen")?;
    let connect = b.string("connect")?;
    let mcast = b.string("mcast")?;
    let udp = b.string("udp")?;
    let localaddr = b.string("localaddr")?;
    let given: Vec<&str> = [
        ("listen=", &listen),
        ("connect=", &connect),
        ("mcast=", &mcast),
        ("udp=", &udp),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_some())
    .map(|(k, _)| k)
    .collect();
    if given.len() != 1 {
        return Err(K::Conflict(if given.is_empty() {
            "needs exactly one of listen=, connect=, mcast= or udp=".into()
        } else {
            format!(
                "needs exactly one of listen=, connect=, mcast= or udp=, not {}",
                given.join(" and ")
            )
        }));
    }
    let stream_local = || K::Conflict("localaddr= goes only with mcast= or udp=".into());
    let mode = if let Some(v) = listen {
        if localaddr.is_some() {
            return Err(stream_local());
        }
        SocketMode::Listen(host_port(&v, true).map_err(|e| bad("listen", &v, &e))?)
    } else if let Some(v) = connect {
        if localaddr.is_some() {
            return Err(stream_local());
        }
        SocketMode::Connect(host_port(&v, false).map_err(|e| bad("connect", &v, &e))?)
    } else if let Some(v) = mcast {
        let hp = host_port(&v, false).map_err(|e| bad("mcast", &v, &e))?;
        let group: Ipv4Addr = match hp.host.parse::<Ipv4Addr>() {
            Ok(g) if g.is_multicast() => g,
            _ => {
                return Err(bad(
                    "mcast",
                    &v,
                    "the group must be an IPv4 multicast address (224.0.0.0/4)",
                ))
            }
        };
        let localaddr = match localaddr {
            None => None,
            Some(l) => Some(ipv4(&l).map_err(|e| bad("localaddr", &l, &e))?),
        };
        SocketMode::Mcast {
            group,
            port: hp.port,
            localaddr,
        }
    } else {
        let v = udp.unwrap_or_default();
        let remote = host_port(&v, false).map_err(|e| bad("udp", &v, &e))?;
        let l = localaddr.ok_or_else(|| K::Conflict("udp= needs localaddr=HOST:PORT".into()))?;
        let localaddr = host_port(&l, true).map_err(|e| bad("localaddr", &l, &e))?;
        SocketMode::Udp { remote, localaddr }
    };
    Ok(SocketOpts { mode })
}

fn parse_hubport(b: &mut Bag) -> Result<HubportOpts, NetErrorKind> {
    Ok(HubportOpts {
        hubid: b
            .parse("hubid", |v| number(v, 0, u32::MAX))?
            .ok_or(K::MissingKey("hubid"))?,
        netdev: b.id("netdev")?,
    })
}

fn nic_fields(
    b: &mut Bag,
    mac_key: &str,
) -> Result<(Option<MacAddr>, Option<PciAddr>), NetErrorKind> {
    let mac = b.string(mac_key)?.map(|m| m.parse()).transpose()?;
    let addr = b.parse("addr", pci_addr)?;
    Ok((mac, addr))
}

// ---------------------------------------------------------------- builder

/// Collects network options one by one; see the module documentation.
#[derive(Debug, Default)]
pub struct NetBuilder {
    netdevs: Vec<Netdev>,
    nics: Vec<Nic>,
    /// Counter for generated ids.
    auto: u32,
    /// Ports created so far on each hub by `--net`.
    hub_ports: HashMap<u32, u32>,
}

impl NetBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `spec`, given as option `opt`. `place` says where it was
    /// given (`--netdev`, or `vm.toml: netdev[0]`); messages about it say
    /// `PLACE TYPE: ...`.
    pub fn add(&mut self, opt: NetOption, place: &str, spec: &str) -> Result<(), NetError> {
        let type_key = if opt == NetOption::Device {
            "driver"
        } else {
            "type"
        };
        let (ty, items) = split_spec(spec, type_key).map_err(|kind| NetError {
            origin: place.to_string(),
            kind,
        })?;
        let origin = format!("{place} {ty}");
        let result = match opt {
            NetOption::Netdev => self.add_netdev(&ty, items, &origin),
            NetOption::Device => self.add_device(&ty, items, &origin),
            NetOption::Nic => self.add_nic(&ty, items, &origin),
            NetOption::Net => self.add_net(&ty, items, &origin),
        };
        result.map_err(|kind| NetError { origin, kind })
    }

    fn next_auto(&mut self, what: &str) -> String {
        self.auto += 1;
        format!("#{what}{}", self.auto - 1)
    }

    fn push_netdev(&mut self, nd: Netdev) -> Result<(), NetErrorKind> {
        if let Some(first) = self.netdevs.iter().find(|d| d.id == nd.id) {
            return Err(K::DuplicateNetdevId {
                id: nd.id,
                first: first.origin.clone(),
            });
        }
        self.netdevs.push(nd);
        Ok(())
    }

    fn push_nic(&mut self, nic: Nic) -> Result<(), NetErrorKind> {
        if let Some(id) = &nic.id {
            if let Some(first) = self.nics.iter().find(|n| n.id.as_ref() == Some(id)) {
                return Err(K::DuplicateDeviceId {
                    id: id.clone(),
                    first: first.origin.clone(),
                });
            }
        }
        self.nics.push(nic);
        Ok(())
    }

    /// A new port on `hubid`, connected to `netdev` if given.
    fn push_hub_port(
        &mut self,
        hubid: u32,
        netdev: Option<String>,
        origin: &str,
    ) -> Result<String, NetErrorKind> {
        let n = self.hub_ports.entry(hubid).or_insert(0);
        let id = format!("#hub{hubid}port{n}");
        *n += 1;
        self.push_netdev(Netdev {
            id: id.clone(),
            backend: Backend::Hubport(HubportOpts { hubid, netdev }),
            origin: origin.to_string(),
        })?;
        Ok(id)
    }

    fn add_netdev(&mut self, ty: &str, items: Items, origin: &str) -> Result<(), NetErrorKind> {
        let keys = backend_keys(ty).ok_or_else(|| K::UnknownNetdevType {
            ty: ty.to_string(),
            expected: NETDEV_TYPES,
        })?;
        let mut b = Bag::new(items, keys, ty)?;
        let id = b.id("id")?.ok_or(K::MissingKey("id"))?;
        let backend = parse_backend(ty, &mut b)?;
        b.done()?;
        self.push_netdev(Netdev {
            id,
            backend,
            origin: origin.to_string(),
        })
    }

    fn add_device(&mut self, ty: &str, items: Items, origin: &str) -> Result<(), NetErrorKind> {
        let model =
            NicModel::from_device_name(ty).ok_or_else(|| K::UnknownDevice(ty.to_string()))?;
        let keys = if model == NicModel::VirtioNetPci {
            VIRTIO_NET_KEYS
        } else {
            NIC_KEYS
        };
        let mut b = Bag::new(items, keys, ty)?;
        let id = b.id("id")?;
        let netdev = b.id("netdev")?;
        let (mac, addr) = nic_fields(&mut b, "mac")?;
        let mq = b.flag("mq")?;
        b.done()?;
        self.push_nic(Nic {
            model,
            id,
            netdev,
            mac,
            mq,
            addr,
            origin: origin.to_string(),
        })
    }

    fn add_nic(&mut self, ty: &str, items: Items, origin: &str) -> Result<(), NetErrorKind> {
        if ty == "none" {
            return Bag::new(items, &[], "--nic none")?.done();
        }
        let keys = match backend_keys(ty) {
            Some(keys) if ty != "hubport" => keys,
            _ => {
                return Err(K::UnknownNetdevType {
                    ty: ty.to_string(),
                    expected: HOST_NETDEV_TYPES,
                })
            }
        };
        let keys: Vec<&str> = keys.iter().copied().chain(["model", "mac"]).collect();
        let mut b = Bag::new(items, &keys, &format!("--nic {ty}"))?;
        let model = match b.string("model")? {
            None => NicModel::VirtioNetPci,
            Some(m) => NicModel::from_model_name(&m).ok_or(K::UnknownModel(m))?,
        };
        let mac = b.string("mac")?.map(|m| m.parse()).transpose()?;
        let id = match b.id("id")? {
            Some(id) => id,
            None => self.next_auto("nic"),
        };
        let backend = parse_backend(ty, &mut b)?;
        b.done()?;
        self.push_netdev(Netdev {
            id: id.clone(),
            backend,
            origin: origin.to_string(),
        })?;
        self.push_nic(Nic {
            model,
            id: None,
            netdev: Some(id),
            mac,
            mq: None,
            addr: None,
            origin: origin.to_string(),
        })
    }

    fn add_net(&mut self, ty: &str, items: Items, origin: &str) -> Result<(), NetErrorKind> {
        let vlan = |b: &mut Bag| b.parse("vlan", |v| number(v, 0, u32::MAX));
        match ty {
            "none" => Bag::new(items, &[], "--net none")?.done(),
            "nic" => {
                let mut b = Bag::new(items, NET_NIC_KEYS, "--net nic")?;
                let model = match b.string("model")? {
                    None => NicModel::VirtioNetPci,
                    Some(m) => NicModel::from_model_name(&m).ok_or(K::UnknownModel(m))?,
                };
                let (mac, addr) = nic_fields(&mut b, "macaddr")?;
                let id = b.id("name")?;
                let vlan = vlan(&mut b)?;
                let netdev = match (b.id("netdev")?, vlan) {
                    (Some(_), Some(_)) => {
                        return Err(K::Conflict("give vlan= or netdev=, not both".into()))
                    }
                    (Some(nd), None) => nd,
                    (None, vlan) => self.push_hub_port(vlan.unwrap_or(0), None, origin)?,
                };
                b.done()?;
                self.push_nic(Nic {
                    model,
                    id,
                    netdev: Some(netdev),
                    mac,
                    mq: None,
                    addr,
                    origin: origin.to_string(),
                })
            }
            "tap" | "user" | "socket" => {
                let keys: Vec<&str> = backend_keys(ty)
                    .unwrap_or_default()
                    .iter()
                    .copied()
                    .chain(["name", "vlan"])
                    .collect();
                let mut b = Bag::new(items, &keys, &format!("--net {ty}"))?;
                let id = match (b.id("id")?, b.id("name")?) {
                    (Some(_), Some(_)) => {
                        return Err(K::Conflict("give id= or name=, not both".into()))
                    }
                    (Some(id), None) | (None, Some(id)) => id,
                    (None, None) => self.next_auto(ty),
                };
                let hubid = vlan(&mut b)?.unwrap_or(0);
                let backend = parse_backend(ty, &mut b)?;
                b.done()?;
                self.push_netdev(Netdev {
                    id: id.clone(),
                    backend,
                    origin: origin.to_string(),
                })?;
                self.push_hub_port(hubid, Some(id), origin).map(drop)
            }
            _ => Err(K::UnknownNetType(ty.to_string())),
        }
    }

    /// Cross-checks the references: every `netdev=` names an existing
    /// netdev, and no netdev is used twice. Returns the configuration and
    /// the warnings to give if the VM is otherwise valid (unused netdevs,
    /// hubs without NICs or without a host side, NICs without a link,
    /// repeated MACs).
    pub fn finish(self) -> Result<(NetConfig, Vec<String>), NetError> {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum User {
            Nic,
            Hubport,
        }
        let mut used: HashMap<&str, (&str, User)> = HashMap::new();
        let mut claims: Vec<(&str, &str, User)> = Vec::new();
        for nd in &self.netdevs {
            if let Backend::Hubport(HubportOpts {
                netdev: Some(peer), ..
            }) = &nd.backend
            {
                if *peer == nd.id {
                    return Err(NetError {
                        origin: nd.origin.clone(),
                        kind: K::Conflict(format!("hubport '{peer}' cannot be its own netdev")),
                    });
                }
                claims.push((peer, &nd.origin, User::Hubport));
            }
        }
        for nic in &self.nics {
            if let Some(id) = &nic.netdev {
                claims.push((id, &nic.origin, User::Nic));
            }
        }
        for (id, origin, user) in claims {
            let err = |kind| NetError {
                origin: origin.to_string(),
                kind,
            };
            if !self.netdevs.iter().any(|d| d.id == id) {
                return Err(err(K::NoSuchNetdev(id.to_string())));
            }
            if let Some((first, _)) = used.insert(id, (origin, user)) {
                return Err(err(K::NetdevInUse {
                    id: id.to_string(),
                    user: first.to_string(),
                }));
            }
        }

        let mut warnings = Vec::new();
        let mut hubs: BTreeMap<u32, (bool, bool)> = BTreeMap::new();
        for nd in &self.netdevs {
            let user = used.get(nd.id.as_str()).map(|&(_, u)| u);
            match &nd.backend {
                Backend::Hubport(h) => {
                    let (nic, host) = hubs.entry(h.hubid).or_default();
                    *nic |= user == Some(User::Nic);
                    *host |= h.netdev.is_some() || user == Some(User::Hubport);
                }
                _ if user.is_none() => warnings.push(format!(
                    "{}: netdev '{}' is not used by any NIC",
                    nd.origin, nd.id
                )),
                _ => {}
            }
        }
        for (hub, (nic, host)) in hubs {
            if !nic {
                warnings.push(format!("hub {hub} has no NIC"));
            }
            if !host {
                warnings.push(format!("hub {hub} is not connected to any host network"));
            }
        }
        let mut macs: HashMap<MacAddr, &str> = HashMap::new();
        for nic in &self.nics {
            if nic.netdev.is_none() {
                warnings.push(format!(
                    "{}: NIC has no netdev and will have no link",
                    nic.origin
                ));
            }
            if let Some(mac) = nic.mac {
                if let Some(first) = macs.insert(mac, &nic.origin) {
                    warnings.push(format!("{}: MAC {mac} is also used by {first}", nic.origin));
                }
            }
        }
        Ok((
            NetConfig {
                netdevs: self.netdevs,
                nics: self.nics,
            },
            warnings,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses flag-style options, e.g. `&[(NetOption::Netdev, "tap,id=n0")]`.
    fn build(opts: &[(NetOption, &str)]) -> Result<(NetConfig, Vec<String>), NetError> {
        let mut b = NetBuilder::new();
        for (opt, spec) in opts {
            b.add(*opt, opt.flag(), spec)?;
        }
        b.finish()
    }

    fn ok(opts: &[(NetOption, &str)]) -> NetConfig {
        match build(opts) {
            Ok((cfg, _)) => cfg,
            Err(e) => panic!("{opts:?}: {e}"),
        }
    }

    fn err(opts: &[(NetOption, &str)]) -> NetError {
        match build(opts) {
            Ok(cfg) => panic!("{opts:?} accepted: {cfg:?}"),
            Err(e) => e,
        }
    }

    fn netdev_err(spec: &str) -> NetError {
        err(&[(NetOption::Netdev, spec)])
    }

    fn device_err(spec: &str) -> NetError {
        err(&[(NetOption::Device, spec)])
    }

    use NetOption::{Device, Net, Netdev as Nd, Nic as NicOpt};

    #[test]
    fn tap_netdev_and_virtio_nic() {
        let cfg = ok(&[
            (
                Nd,
                "tap,id=n0,ifname=tap0,vnet_hdr=on,vhost=off,queues=4,script=no,downscript=no",
            ),
            (
                Device,
                "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,mq=on,id=nic0,addr=03.0",
            ),
        ]);
        assert_eq!(
            cfg.netdevs,
            vec![super::Netdev {
                id: "n0".into(),
                backend: Backend::Tap(TapOpts {
                    ifname: Some("tap0".into()),
                    vnet_hdr: Some(true),
                    vhost: Some(false),
                    queues: Some(4),
                    ..Default::default()
                }),
                origin: "--netdev tap".into(),
            }]
        );
        assert_eq!(
            cfg.nics,
            vec![super::Nic {
                model: NicModel::VirtioNetPci,
                id: Some("nic0".into()),
                netdev: Some("n0".into()),
                mac: Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56])),
                mq: Some(true),
                addr: Some(PciAddr {
                    slot: 3,
                    function: 0
                }),
                origin: "--device virtio-net-pci".into(),
            }]
        );
    }

    #[test]
    fn device_order_does_not_matter_and_type_key_works() {
        let cfg = ok(&[(Device, "driver=e1000,netdev=n0"), (Nd, "id=n0,type=user")]);
        assert_eq!(cfg.nics[0].model, NicModel::E1000);
        assert_eq!(cfg.netdevs[0].backend.type_name(), "user");
    }

    #[test]
    fn user_netdev_full() {
        let cfg = ok(&[(
            Nd,
            "user,id=u,net=192.168.76.0/24,host=192.168.76.2,dhcpstart=192.168.76.9,dns=192.168.76.3,\
             hostname=vm,domainname=example.org,dnssearch=a.org,dnssearch=b.org,restrict=on,\
             hostfwd=tcp::2222-:22,hostfwd=udp:127.0.0.1:5353-192.168.76.9:53,ipv6=off,\
             ipv6-net=fd00::/64,tftp=/srv/tftp,bootfile=pxelinux.0",
        )]);
        let Backend::User(u) = &cfg.netdevs[0].backend else {
            panic!("not user")
        };
        assert_eq!(
            u.net,
            Some(Ipv4Net {
                addr: Ipv4Addr::new(192, 168, 76, 0),
                prefix_len: 24
            })
        );
        assert_eq!(u.dnssearch, vec!["a.org", "b.org"]);
        assert_eq!(u.restrict, Some(true));
        assert_eq!(
            u.hostfwd,
            vec![
                HostFwd {
                    proto: FwdProto::Tcp,
                    host_addr: None,
                    host_port: 2222,
                    guest_addr: None,
                    guest_port: 22
                },
                HostFwd {
                    proto: FwdProto::Udp,
                    host_addr: Some(Ipv4Addr::LOCALHOST),
                    host_port: 5353,
                    guest_addr: Some(Ipv4Addr::new(192, 168, 76, 9)),
                    guest_port: 53
                },
            ]
        );
        assert_eq!(u.ipv6_net.map(|n| n.prefix_len), Some(64));
        assert_eq!(u.tftp.as_deref(), Some("/srv/tftp"));
    }

    #[test]
    fn user_net_forms() {
        let net = |s: &str| ipv4_net(s);
        assert_eq!(net("10.0.2.0/24").unwrap().prefix_len, 24);
        assert_eq!(net("10.0.0.0/255.255.0.0").unwrap().prefix_len, 16);
        assert_eq!(net("10.0.0.0").unwrap().prefix_len, 8);
        assert_eq!(net("192.168.0.0").unwrap().prefix_len, 16);
        assert!(net("10.0.2.1/24").unwrap_err().contains("host bits"));
        assert!(net("10.0.0.0/255.0.255.0")
            .unwrap_err()
            .contains("contiguous"));
        assert!(net("10.0.0.0/33").is_err());
        assert!(net("bogus").is_err());
    }

    #[test]
    fn socket_modes() {
        let mode = |spec: &str| match &ok(&[(Nd, spec)]).netdevs[0].backend {
            Backend::Socket(s) => s.mode.clone(),
            b => panic!("{b:?}"),
        };
        assert_eq!(
            mode("socket,id=s,listen=:1234"),
            SocketMode::Listen(HostPort {
                host: "".into(),
                port: 1234
            })
        );
        assert_eq!(
            mode("socket,id=s,connect=127.0.0.1:1234"),
            SocketMode::Connect(HostPort {
                host: "127.0.0.1".into(),
                port: 1234
            })
        );
        assert_eq!(
            mode("socket,id=s,mcast=230.0.0.1:1234,localaddr=192.168.0.1"),
            SocketMode::Mcast {
                group: Ipv4Addr::new(230, 0, 0, 1),
                port: 1234,
                localaddr: Some(Ipv4Addr::new(192, 168, 0, 1))
            }
        );
        assert!(matches!(
            mode("socket,id=s,udp=10.0.0.1:5000,localaddr=:5001"),
            SocketMode::Udp { .. }
        ));
    }

    #[test]
    fn socket_needs_exactly_one_mode() {
        let e = netdev_err("socket,id=s,listen=:1,connect=h:2");
        assert!(e.to_string().contains("listen= and connect="), "{e}");
        assert!(netdev_err("socket,id=s")
            .to_string()
            .contains("exactly one"));
        assert!(netdev_err("socket,id=s,udp=h:1")
            .to_string()
            .contains("localaddr"));
        assert!(netdev_err("socket,id=s,mcast=10.0.0.1:1")
            .to_string()
            .contains("multicast"));
        assert!(netdev_err("socket,id=s,listen=:1,localaddr=x")
            .to_string()
            .contains("localaddr"));
        assert!(netdev_err("socket,id=s,connect=:1")
            .to_string()
            .contains("HOST:PORT"));
        assert!(netdev_err("socket,id=s,connect=h:0")
            .to_string()
            .contains("port"));
    }

    #[test]
    fn nic_shorthand() {
        let cfg = ok(&[(
            NicOpt,
            "user,model=e1000,mac=52:54:00:00:00:01,hostfwd=tcp::8080-:80",
        )]);
        assert_eq!(cfg.netdevs.len(), 1);
        assert_eq!(cfg.netdevs[0].id, "#nic0");
        assert_eq!(cfg.nics[0].model, NicModel::E1000);
        assert_eq!(cfg.nics[0].netdev.as_deref(), Some("#nic0"));
        assert_eq!(cfg.nics[0].origin, "--nic user");

        let cfg = ok(&[(NicOpt, "tap,id=t0,ifname=tap3")]);
        assert_eq!(cfg.netdevs[0].id, "t0");
        assert_eq!(cfg.nics[0].model, NicModel::VirtioNetPci);
        assert_eq!(
            ok(&[(NicOpt, "user,model=virtio")]).nics[0].model,
            NicModel::VirtioNetPci
        );
        assert_eq!(ok(&[(NicOpt, "none")]), NetConfig::default());

        assert!(err(&[(NicOpt, "hubport,hubid=0")])
            .to_string()
            .contains("'hubport'"));
        assert!(err(&[(NicOpt, "user,model=virtio-blk")])
            .to_string()
            .contains("'virtio-blk'"));
        assert!(err(&[(NicOpt, "user,mac=01:00:00:00:00:01")])
            .to_string()
            .contains("multicast"));
    }

    #[test]
    fn net_hub_syntax() {
        let (cfg, warnings) = build(&[
            (Net, "nic,model=rtl8139,vlan=1,macaddr=52:54:00:00:00:02"),
            (Net, "user,vlan=1,name=slirp"),
            (Net, "nic"),
            (Net, "tap,ifname=tap0"),
        ])
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let ids: Vec<&str> = cfg.netdevs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "#hub1port0",
                "slirp",
                "#hub1port1",
                "#hub0port0",
                "#tap0",
                "#hub0port1"
            ]
        );
        let hub = |i: usize| match &cfg.netdevs[i].backend {
            Backend::Hubport(h) => h.clone(),
            b => panic!("{b:?}"),
        };
        assert_eq!(
            hub(2),
            HubportOpts {
                hubid: 1,
                netdev: Some("slirp".into())
            }
        );
        assert_eq!(
            hub(3),
            HubportOpts {
                hubid: 0,
                netdev: None
            }
        );
        assert_eq!(cfg.nics[0].netdev.as_deref(), Some("#hub1port0"));
        assert_eq!(cfg.nics[0].model, NicModel::Rtl8139);
        assert_eq!(cfg.nics[1].netdev.as_deref(), Some("#hub0port0"));
        assert_eq!(ok(&[(Net, "none")]), NetConfig::default());
    }

    #[test]
    fn net_nic_joins_netdev_hubport() {
        let (cfg, warnings) = build(&[
            (Nd, "user,id=u"),
            (Nd, "hubport,id=h,hubid=0,netdev=u"),
            (Net, "nic,vlan=0"),
        ])
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.nics.len(), 1);
    }

    #[test]
    fn reachable_netdevs() {
        let cfg = ok(&[
            (Net, "user,vlan=1"),
            (Net, "tap,ifname=tap9,vlan=2"),
            (Net, "nic,vlan=2"),
            (Nd, "socket,id=s,listen=:1"),
            (Nd, "hubport,id=h,hubid=2,netdev=s"),
            (Nd, "user,id=alone"),
            (Nd, "user,id=direct"),
            (Device, "e1000,netdev=direct"),
        ]);
        let ids: Vec<&str> = cfg
            .reachable_netdevs()
            .iter()
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["#tap1", "#hub2port0", "#hub2port1", "s", "h", "direct"]
        );
        assert!(NetConfig::default().reachable_netdevs().is_empty());
    }

    #[test]
    fn net_errors() {
        assert!(err(&[(Net, "bogus")]).to_string().contains("'bogus'"));
        assert!(err(&[(Net, "nic,vlan=0,netdev=n0")])
            .to_string()
            .contains("not both"));
        assert!(err(&[(Net, "nic,mac=52:54:00:00:00:01")])
            .to_string()
            .contains("'mac'"));
        assert!(err(&[(Net, "nic,vlan=x")]).to_string().contains("vlan='x'"));
        assert!(err(&[(Net, "hubport,hubid=1")])
            .to_string()
            .contains("'hubport'"));
        assert!(err(&[(Net, "user,id=a,name=b")])
            .to_string()
            .contains("not both"));
    }

    #[test]
    fn warnings() {
        let (_, w) = build(&[(Nd, "user,id=lonely")]).unwrap();
        assert_eq!(w, ["--netdev user: netdev 'lonely' is not used by any NIC"]);
        let (_, w) = build(&[(Net, "user")]).unwrap();
        assert_eq!(w, ["hub 0 has no NIC"]);
        let (_, w) = build(&[(Net, "nic")]).unwrap();
        assert_eq!(w, ["hub 0 is not connected to any host network"]);
        let (_, w) = build(&[(Device, "e1000")]).unwrap();
        assert!(w[0].contains("no link"));
        let (_, w) = build(&[
            (Device, "e1000,mac=52:54:00:00:00:01"),
            (Device, "e1000,mac=52:54:00:00:00:01"),
        ])
        .unwrap();
        assert!(w.iter().any(|w| w.contains("also used")), "{w:?}");
    }

    #[test]
    fn unknown_types_and_keys() {
        let e = netdev_err("bogus,id=x");
        assert_eq!(e.origin, "--netdev bogus");
        assert_eq!(
            e.to_string(),
            "--netdev bogus: unknown netdev type 'bogus' (expected tap, user, socket or hubport)"
        );
        let e = netdev_err("tap,id=n0,frobnicate=1");
        assert!(
            matches!(&e.kind, K::UnknownKey { key, .. } if key == "frobnicate"),
            "{e}"
        );
        assert!(e.to_string().contains("'frobnicate'"));
        // A key of another type is unknown too.
        assert!(netdev_err("tap,id=n0,hostfwd=::1-:2")
            .to_string()
            .contains("'hostfwd'"));
        assert!(netdev_err("user,id=n0,ifname=tap0")
            .to_string()
            .contains("'ifname'"));
        // Device types that are not NICs.
        let e = device_err("virtio-blk-pci,drive=d0");
        assert!(
            e.to_string()
                .contains("unknown device type 'virtio-blk-pci'"),
            "{e}"
        );
        // mq is for virtio-net-pci only.
        assert!(device_err("e1000,mq=on").to_string().contains("'mq'"));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(netdev_err("").kind, K::Empty);
        assert_eq!(netdev_err("tap,id=n0,").kind, K::EmptyItem);
        assert_eq!(netdev_err("id=n0").kind, K::MissingType("type"));
        assert_eq!(device_err("netdev=n0").kind, K::MissingType("driver"));
        assert!(matches!(netdev_err("tap,=x").kind, K::EmptyKey(_)));
        assert_eq!(
            netdev_err("tap,ifname=a,ifname=b").kind,
            K::DuplicateKey("ifname".into())
        );
        assert_eq!(
            netdev_err("tap,id=n0,ifname").kind,
            K::MissingValue("ifname".into())
        );
        assert_eq!(netdev_err("tap,ifname=tap0").kind, K::MissingKey("id"));
        assert_eq!(netdev_err("tap,id=0n").kind, K::BadId("0n".into()));
        assert_eq!(netdev_err("tap,id=#nic0").kind, K::BadId("#nic0".into()));
        assert_eq!(
            netdev_err("tap,id=n\n0").kind,
            K::ControlChar("tap,id=n\\n0".into())
        );
        assert!(netdev_err("hubport,id=h")
            .to_string()
            .contains("missing hubid="));
    }

    #[test]
    fn escaped_commas() {
        let cfg = ok(&[(Nd, "user,id=u,bootfile=a,,b")]);
        let Backend::User(u) = &cfg.netdevs[0].backend else {
            panic!()
        };
        assert_eq!(u.bootfile.as_deref(), Some("a,b"));
        assert_eq!(cfg.netdevs[0].to_string(), "user,id=u,bootfile=a,,b");
    }

    #[test]
    fn value_errors() {
        let cases = [
            ("tap,id=n0,vhost=maybe", "vhost='maybe'"),
            ("tap,id=n0,queues=0", "queues='0'"),
            ("tap,id=n0,queues=x", "queues='x'"),
            ("tap,id=n0,fd=-1", "fd='-1'"),
            (
                "tap,id=n0,ifname=much-too-long-name",
                "ifname='much-too-long-name'",
            ),
            ("tap,id=n0,script=/etc/qemu-ifup", "script='/etc/qemu-ifup'"),
            (
                "tap,id=n0,downscript=/etc/qemu-ifdown",
                "downscript='/etc/qemu-ifdown'",
            ),
            (
                "tap,id=n0,fd=3,ifname=tap0",
                "fd= cannot be combined with ifname=",
            ),
            ("tap,id=n0,vhost=off,vhostfd=4", "vhost=on"),
            ("user,id=u,net=10.0.2.0/40", "net='10.0.2.0/40'"),
            ("user,id=u,host=10.0.3.2", "host='10.0.3.2'"),
            ("user,id=u,dns=bogus", "dns='bogus'"),
            ("user,id=u,net=10.0.2.0/30", "default dhcpstart"),
            ("user,id=u,hostfwd=tcp:2222-:22", "hostfwd='tcp:2222-:22'"),
            ("user,id=u,hostfwd=sctp::1-:2", "'sctp'"),
            ("user,id=u,hostfwd=tcp::2222-:0", "guest port"),
            ("user,id=u,hostfwd=tcp::99999-:22", "host port"),
            ("user,id=u,hostfwd=tcp:1.2.3:1-:2", "host address '1.2.3'"),
            ("user,id=u,hostfwd=tcp::1-10.9.9.9:2", "not in 10.0.2.0/24"),
            ("user,id=u,ipv4=off,ipv6=off", "ipv4=off and ipv6=off"),
            ("user,id=u,ipv6-net=zz", "ipv6-net='zz'"),
            ("user,id=u,hostname=", "hostname=''"),
            ("hubport,id=h,hubid=-1", "hubid='-1'"),
        ];
        for (spec, want) in cases {
            let e = netdev_err(spec).to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
        assert!(device_err("e1000,addr=20.0")
            .to_string()
            .contains("addr='20.0'"));
        assert!(device_err("e1000,addr=zz")
            .to_string()
            .contains("addr='zz'"));
    }

    #[test]
    fn macs() {
        assert_eq!(
            "52:54:00:AB:cd:ef".parse::<MacAddr>(),
            Ok(MacAddr([0x52, 0x54, 0, 0xab, 0xcd, 0xef]))
        );
        for bad in [
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52-54-00-12-34-56",
            "52:54:00:12:34:5g",
            "52:54:00:12:34:567",
            "5:54:00:12:34:56",
            "+5:54:00:12:34:56",
            "",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(K::BadMac(bad.into())), "{bad}");
        }
        assert_eq!(
            "01:00:5e:00:00:01".parse::<MacAddr>(),
            Err(K::MulticastMac("01:00:5e:00:00:01".into()))
        );
        let e = device_err("e1000,mac=52:54:00:12:34");
        assert_eq!(
            e.to_string(),
            "--device e1000: invalid MAC address '52:54:00:12:34': expected six hex pairs separated by ':', e.g. 52:54:00:12:34:56"
        );
        assert!(device_err("e1000,mac=ff:ff:ff:ff:ff:ff")
            .to_string()
            .contains("multicast"));
    }

    #[test]
    fn cross_check_errors() {
        let e = err(&[(Device, "virtio-net-pci,netdev=n1"), (Nd, "user,id=n0")]);
        assert_eq!(e.origin, "--device virtio-net-pci");
        assert_eq!(e.kind, K::NoSuchNetdev("n1".into()));
        let e = err(&[(Nd, "user,id=n0"), (Nd, "tap,id=n0")]);
        assert_eq!(
            e.to_string(),
            "--netdev tap: duplicate netdev id 'n0' (already used by --netdev user)"
        );
        let e = err(&[(Nd, "user,id=n0"), (NicOpt, "tap,id=n0")]);
        assert!(matches!(e.kind, K::DuplicateNetdevId { .. }), "{e}");
        let e = err(&[(Device, "e1000,id=a"), (Device, "rtl8139,id=a")]);
        assert!(matches!(e.kind, K::DuplicateDeviceId { .. }), "{e}");
        let e = err(&[
            (Nd, "user,id=n0"),
            (Device, "e1000,netdev=n0"),
            (Device, "pcnet,netdev=n0"),
        ]);
        assert_eq!(e.origin, "--device pcnet");
        assert!(
            e.to_string()
                .contains("netdev 'n0' is already used by --device e1000"),
            "{e}"
        );
        let e = err(&[(Nd, "hubport,id=h,hubid=0,netdev=nope")]);
        assert_eq!(e.kind, K::NoSuchNetdev("nope".into()));
        let e = err(&[(Nd, "hubport,id=h,hubid=0,netdev=h")]);
        assert!(e.to_string().contains("its own"), "{e}");
    }

    #[test]
    fn rendering_round_trips() {
        let opts = [
            (Nd, "tap,id=t,ifname=tap0,vnet_hdr=on,vhost=on,vhostforce=on,queues=2"),
            (Nd, "tap,id=f,fd=3,vhostfd=4"),
            (Nd, "user,id=u,net=10.1.0.0/16,dnssearch=a,hostfwd=udp:1.2.3.4:5-:6,ipv6-net=fd00::/48,restrict=off"),
            (Nd, "socket,id=s,mcast=239.1.1.1:5000,localaddr=10.0.0.1"),
            (Nd, "socket,id=v,udp=h:1,localaddr=:2"),
            (Nd, "hubport,id=h,hubid=3,netdev=s"),
            (Device, "virtio-net-pci,id=x,netdev=t,mac=52:54:00:00:00:09,mq=off,addr=1f.7"),
            (Device, "ne2k_pci,netdev=u"),
        ];
        let cfg = ok(&opts);
        let mut again = Vec::new();
        for n in &cfg.netdevs {
            again.push((Nd, n.to_string()));
        }
        for n in &cfg.nics {
            again.push((Device, n.to_string()));
        }
        let again: Vec<(NetOption, &str)> = again.iter().map(|(o, s)| (*o, s.as_str())).collect();
        assert_eq!(ok(&again), cfg);
        assert!(cfg.to_string().starts_with("--netdev tap,id=t,"));
        assert_eq!(NetConfig::default().to_string(), "none");
    }

    #[test]
    fn bare_booleans_and_places() {
        let cfg = ok(&[(Nd, "tap,id=t,vhost")]);
        let Backend::Tap(t) = &cfg.netdevs[0].backend else {
            panic!()
        };
        assert_eq!(t.vhost, Some(true));
        let mut b = NetBuilder::new();
        let e = b
            .add(Nd, "vm.toml: netdev[2]", "tap,id=n0,x=1")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("vm.toml: netdev[2] tap: unknown key 'x'"),
            "{e}"
        );
    }

    #[test]
    fn no_panics_on_junk() {
        let junk = [
            ",",
            ",,",
            "=",
            "==",
            "tap,,",
            ",tap",
            "tap,id",
            "tap,id=",
            "type=",
            "user,hostfwd=-",
            "user,id=u,hostfwd=:::-::",
            "user,id=u,net=/",
            "user,id=u,net=1.2.3.4/",
            "socket,id=s,listen=",
            "socket,id=s,listen=:",
            "socket,id=s,mcast=:",
            "hubport,id=h,hubid=99999999999",
            "é,ü=ß",
            "user,id=u,net=0.0.0.0/0",
            "user,id=u,net=255.255.255.255/32",
        ];
        for opt in NetOption::ALL {
            for j in junk {
                let mut b = NetBuilder::new();
                if b.add(opt, opt.flag(), j).is_ok() {
                    let _ = b.finish();
                }
            }
        }
    }
}
