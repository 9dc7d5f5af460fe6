//! From `--netdev user` options to what the backend process is told: every
//! default resolved as QEMU resolves it, and the host's DNS resolver.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use devices::backend::slirp::dns::nameserver_from_resolv_conf;
use devices::backend::slirp::{Config, HostFwd};

use crate::netspec::{FwdProto, UserOpts, DEFAULT_USER_NET};

/// Where the host's resolver is written down.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// QEMU's default `ipv6-net`: fec0::/64.
const DEFAULT_IPV6_PREFIX: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 64);

/// The backend's configuration for `u`, with `resolver` (port 53) as where
/// DNS queries to the alias go.
pub fn config(u: &UserOpts, resolver: Option<Ipv4Addr>) -> Config {
    let net = u.net.unwrap_or(DEFAULT_USER_NET);
    let dhcp_start = u.dhcpstart.unwrap_or(net.nth(15));
    // QEMU: both on, unless only one is given as on, or one is off.
    let ipv4 = !(u.ipv4 == Some(false) || (u.ipv6 == Some(true) && u.ipv4.is_none()));
    let ipv6 = !(u.ipv6 == Some(false) || (u.ipv4 == Some(true) && u.ipv6.is_none()));
    let (prefix6, prefix6_len) = u
        .ipv6_net
        .map_or(DEFAULT_IPV6_PREFIX, |n| (n.addr, n.prefix_len));
    let nth6 = |n: u128| Ipv6Addr::from(u128::from(prefix6) | n);
    Config {
        ipv4,
        net: net.addr,
        prefix_len: net.prefix_len,
        host: u.host.unwrap_or(net.nth(2)),
        dhcp_start,
        dns: u.dns.unwrap_or(net.nth(3)),
        ipv6,
        ipv6_prefix: prefix6,
        ipv6_prefix_len: prefix6_len,
        ipv6_host: nth6(2),
        ipv6_dns: nth6(3),
        hostname: u.hostname.clone(),
        domainname: u.domainname.clone(),
        dnssearch: u.dnssearch.clone(),
        bootfile: u.bootfile.clone(),
        restrict: u.restrict.unwrap_or(false),
        hostfwd: u
            .hostfwd
            .iter()
            .map(|h| HostFwd {
                udp: h.proto == FwdProto::Udp,
                host_addr: h.host_addr.unwrap_or(Ipv4Addr::UNSPECIFIED),
                host_port: h.host_port,
                guest_addr: h.guest_addr.unwrap_or(dhcp_start),
                guest_port: h.guest_port,
            })
            .collect(),
        dns_upstream: resolver.map(|ip| SocketAddrV4::new(ip, 53)),
    }
}

/// The host's DNS resolver: the first IPv4 `nameserver` of
/// /etc/resolv.conf, if there is one.
pub fn host_resolver() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string(RESOLV_CONF).ok()?;
    nameserver_from_resolv_conf(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netspec::{HostFwd as Rule, Ipv4Net, Ipv6Net};

    #[test]
    fn qemu_defaults() {
        let c = config(&UserOpts::default(), None);
        assert_eq!(c, Config::default());
        let c = config(&UserOpts::default(), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(c.dns_upstream, Some("192.0.2.1:53".parse().unwrap()));
    }

    #[test]
    fn options_and_what_they_imply() {
        let u = UserOpts {
            net: Some(Ipv4Net {
                addr: Ipv4Addr::new(192, 168, 76, 0),
                prefix_len: 24,
            }),
            dhcpstart: Some(Ipv4Addr::new(192, 168, 76, 9)),
            restrict: Some(true),
            ipv6_net: Some(Ipv6Net {
                addr: "fd00:1::".parse().unwrap(),
                prefix_len: 48,
            }),
            hostfwd: vec![
                Rule {
                    proto: FwdProto::Tcp,
                    host_addr: None,
                    host_port: 2222,
                    guest_addr: None,
                    guest_port: 22,
                },
                Rule {
                    proto: FwdProto::Udp,
                    host_addr: Some(Ipv4Addr::LOCALHOST),
                    host_port: 5353,
                    guest_addr: Some(Ipv4Addr::new(192, 168, 76, 20)),
                    guest_port: 53,
                },
            ],
            ..UserOpts::default()
        };
        let c = config(&u, None);
        assert_eq!(c.host, Ipv4Addr::new(192, 168, 76, 2));
        assert_eq!(c.dns, Ipv4Addr::new(192, 168, 76, 3));
        assert!(c.restrict);
        assert_eq!(c.ipv6_host, "fd00:1::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(c.ipv6_dns, "fd00:1::3".parse::<Ipv6Addr>().unwrap());
        assert_eq!(c.hostfwd[0].to_string(), "tcp:0.0.0.0:2222-192.168.76.9:22");
        assert_eq!(
            c.hostfwd[1].to_string(),
            "udp:127.0.0.1:5353-192.168.76.20:53"
        );
        assert!(c.check().is_ok());
    }

    #[test]
    fn ipv4_and_ipv6_as_qemu_reads_them() {
        let both = |ipv4, ipv6| {
            let c = config(
                &UserOpts {
                    ipv4,
                    ipv6,
                    ..UserOpts::default()
                },
                None,
            );
            (c.ipv4, c.ipv6)
        };
        assert_eq!(both(None, None), (true, true));
        assert_eq!(both(Some(true), None), (true, false));
        assert_eq!(both(None, Some(true)), (false, true));
        assert_eq!(both(Some(false), None), (false, true));
        assert_eq!(both(None, Some(false)), (true, false));
        assert_eq!(both(Some(true), Some(true)), (true, true));
    }
}
