//! Links and bridges over rtnetlink: the launcher's few network set-up
//! steps, done with requests to the kernel rather than by running `ip`.
//!
//! Each function opens its own `NETLINK_ROUTE` socket (cheap), makes one or
//! two requests and waits for the kernel's acknowledgement, synchronously.
//! Everything acts on the network namespace of the calling thread.
//!
//! Messages are built and parsed with `netlink-packet-route`; the socket is
//! `netlink-sys`'s plain blocking one (no async runtime).

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::{check_ifname, Error, Result};

/// What this module reports about one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Index of the bridge (or other master) it is enslaved to.
    pub master: Option<u32>,
    /// The driver kind (`bridge`, `tun`, `veth`, ...), when it reports one.
    pub kind: Option<String>,
    /// For a bridge: whether spanning tree is on.
    pub stp: Option<bool>,
}

impl Link {
    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }
}

/// The interface called `name`, or `None` if there is none.
pub fn link(name: &str) -> Result<Option<Link>> {
    check_ifname(name)?;
    Rtnl::open(name)?.get(name)
}

/// The index of the interface called `name`, or `None` if there is none.
pub fn link_index(name: &str) -> Result<Option<u32>> {
    Ok(link(name)?.map(|l| l.index))
}

/// Brings `name` up (`ip link set NAME up`).
pub fn link_up(name: &str) -> Result<()> {
    check_ifname(name)?;
    let mut nl = Rtnl::open(name)?;
    let link = nl.get_existing(name)?;
    nl.set_up(name, link.index)
}

/// Creates bridge `name` with spanning tree off, and brings it up.
///
/// Returns whether it was created: `false` if a bridge of that name already
/// existed (it is then brought up and left as it is otherwise). Anything
/// else of that name is an error.
pub fn create_bridge(name: &str) -> Result<bool> {
    check_ifname(name)?;
    let mut nl = Rtnl::open(name)?;
    if let Some(existing) = nl.get(name)? {
        return nl.adopt_bridge(name, existing);
    }

    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes = vec![
        LinkAttribute::IfName(name.to_owned()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::StpState(
                BridgeStpState::Disabled,
            )])),
        ]),
    ];
    match nl.request(
        RouteNetlinkMessage::NewLink(msg),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        name,
        "create bridge",
    ) {
        Ok(_) => {}
        // Someone made it in the meantime: same as finding it above.
        Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
            let existing = nl.get_existing(name)?;
            return nl.adopt_bridge(name, existing);
        }
        Err(e) => return Err(e),
    }
    // Creating with IFF_UP set in the request brings it up; make sure.
    let created = nl.get_existing(name)?;
    if !created.up {
        nl.set_up(name, created.index)?;
    }
    Ok(true)
}

/// Enslaves `port` to bridge `bridge` (`ip link set PORT master BRIDGE`).
pub fn enslave(port: &str, bridge: &str) -> Result<()> {
    check_ifname(port)?;
    check_ifname(bridge)?;
    let mut nl = Rtnl::open(port)?;
    let br = nl.get_existing(bridge)?;
    if !br.is_bridge() {
        return Err(Error::WrongKind {
            name: bridge.to_owned(),
            expected: "bridge",
        });
    }
    let p = nl.get_existing(port)?;
    let mut msg = LinkMessage::default();
    msg.header.index = p.index;
    msg.attributes = vec![LinkAttribute::Controller(br.index)];
    nl.request(
        RouteNetlinkMessage::SetLink(msg),
        NLM_F_ACK,
        port,
        "enslave to bridge",
    )?;
    Ok(())
}

/// Deletes interface `name` (`ip link del NAME`). Returns whether it existed.
pub fn delete_link(name: &str) -> Result<bool> {
    check_ifname(name)?;
    let mut nl = Rtnl::open(name)?;
    let Some(link) = nl.get(name)? else {
        return Ok(false);
    };
    let mut msg = LinkMessage::default();
    msg.header.index = link.index;
    match nl.request(
        RouteNetlinkMessage::DelLink(msg),
        NLM_F_ACK,
        name,
        "delete link",
    ) {
        Ok(_) => Ok(true),
        // Gone in the meantime.
        Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Whether any interface is enslaved to bridge `name`.
pub fn bridge_has_ports(name: &str) -> Result<bool> {
    Ok(!ports(name)?.is_empty())
}

/// The names of the interfaces enslaved to bridge `name`.
pub fn ports(name: &str) -> Result<Vec<String>> {
    check_ifname(name)?;
    let mut nl = Rtnl::open(name)?;
    let br = nl.get_existing(name)?;
    if !br.is_bridge() {
        return Err(Error::WrongKind {
            name: name.to_owned(),
            expected: "bridge",
        });
    }
    Ok(nl
        .dump_links(name)?
        .into_iter()
        .filter(|l| l.master == Some(br.index))
        .map(|l| l.name)
        .collect())
}

/// The name of the bridge (or other master) `name` is enslaved to, if any.
pub fn master_of(name: &str) -> Result<Option<String>> {
    check_ifname(name)?;
    let mut nl = Rtnl::open(name)?;
    let link = nl.get_existing(name)?;
    let Some(master) = link.master else {
        return Ok(None);
    };
    Ok(nl
        .dump_links(name)?
        .into_iter()
        .find(|l| l.index == master)
        .map(|l| l.name))
}

/// A route-netlink socket and the sequence number of its last request.
struct Rtnl {
    socket: Socket,
    seq: u32,
}

fn nl_err(name: &str, step: &'static str, source: io::Error) -> Error {
    Error::Netlink {
        name: name.to_owned(),
        step,
        source,
    }
}

fn bad_reply(name: &str, step: &'static str, what: impl Into<String>) -> Error {
    nl_err(
        name,
        step,
        io::Error::new(io::ErrorKind::InvalidData, what.into()),
    )
}

impl Rtnl {
    fn open(name: &str) -> Result<Rtnl> {
        let step = "open socket";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err(name, step, e))?;
        socket.bind_auto().map_err(|e| nl_err(name, step, e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| nl_err(name, step, e))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// Sends one request and collects the messages of its answer, up to the
    /// acknowledgement (or the end of a dump). A negative acknowledgement is
    /// an error carrying the kernel's errno.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        name: &str,
        step: &'static str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        let sent = self
            .socket
            .send(&buf, 0)
            .map_err(|e| nl_err(name, step, e))?;
        if sent != buf.len() {
            return Err(bad_reply(name, step, "short send"));
        }

        let mut answer = Vec::new();
        loop {
            let (datagram, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| nl_err(name, step, e))?;
            let mut offset = 0;
            while offset < datagram.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
                    .map_err(|e| bad_reply(name, step, e.to_string()))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(bad_reply(name, step, "zero-length message"));
                }
                offset += len.next_multiple_of(4);
                if reply.header.sequence_number != self.seq {
                    continue; // an answer to an earlier request
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answer),
                            Some(code) => Err(nl_err(
                                name,
                                step,
                                io::Error::from_raw_os_error(-code.get()),
                            )),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(answer),
                    NetlinkPayload::InnerMessage(m) => answer.push(m),
                    _ => {}
                }
            }
        }
    }

    /// The link called `name`, or `None`.
    fn get(&mut self, name: &str) -> Result<Option<Link>> {
        let step = "query link";
        let mut msg = LinkMessage::default();
        msg.attributes = vec![LinkAttribute::IfName(name.to_owned())];
        match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_ACK, name, step) {
            Ok(answer) => {
                let mut links = answer.into_iter().filter_map(|m| match m {
                    RouteNetlinkMessage::NewLink(l) => Some(describe(l)),
                    _ => None,
                });
                match links.next() {
                    Some(link) if link.name == name => Ok(Some(link)),
                    Some(link) => Err(bad_reply(
                        name,
                        step,
                        format!("asked for {name}, got {}", link.name),
                    )),
                    None => Err(bad_reply(name, step, "no link in the answer")),
                }
            }
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn get_existing(&mut self, name: &str) -> Result<Link> {
        self.get(name)?.ok_or_else(|| Error::NoSuchLink {
            name: name.to_owned(),
        })
    }

    fn dump_links(&mut self, name: &str) -> Result<Vec<Link>> {
        let answer = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            name,
            "list links",
        )?;
        Ok(answer
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(describe(l)),
                _ => None,
            })
            .collect())
    }

    fn set_up(&mut self, name: &str, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
            name,
            "set link up",
        )?;
        Ok(())
    }

    /// An existing interface where a bridge was asked for: fine (and brought
    /// up) if it is a bridge, an error otherwise.
    fn adopt_bridge(&mut self, name: &str, existing: Link) -> Result<bool> {
        if !existing.is_bridge() {
            return Err(Error::WrongKind {
                name: name.to_owned(),
                expected: "bridge",
            });
        }
        if !existing.up {
            self.set_up(name, existing.index)?;
        }
        Ok(false)
    }
}

fn describe(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
        kind: None,
        stp: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Controller(m) if m != 0 => link.master = Some(m),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        LinkInfo::Data(InfoData::Bridge(opts)) => {
                            for opt in opts {
                                if let InfoBridge::StpState(s) = opt {
                                    link.stp = Some(s != BridgeStpState::Disabled);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tap::Tap;
    use crate::backend::test_netns::in_fresh_netns;

    #[test]
    fn bridge_lifecycle() {
        in_fresh_netns(|| {
            assert_eq!(link("mbr0").unwrap(), None);
            assert!(create_bridge("mbr0").unwrap(), "created");
            let br = link("mbr0").unwrap().expect("bridge exists");
            assert!(br.is_bridge(), "{br:?}");
            assert!(br.up, "bridge is up: {br:?}");
            assert_eq!(br.stp, Some(false), "spanning tree is off");
            assert!(
                !create_bridge("mbr0").unwrap(),
                "second time: already there"
            );
            assert!(!bridge_has_ports("mbr0").unwrap());

            let taps = Tap::create(Some("mtap0"), true, 1).unwrap();
            assert_eq!(master_of("mtap0").unwrap(), None);
            enslave("mtap0", "mbr0").unwrap();
            link_up("mtap0").unwrap();
            assert!(link("mtap0").unwrap().unwrap().up);
            assert_eq!(master_of("mtap0").unwrap().as_deref(), Some("mbr0"));
            assert_eq!(
                link("mtap0").unwrap().unwrap().master,
                Some(br.index),
                "the kernel reports the bridge as the tap's master"
            );
            assert!(bridge_has_ports("mbr0").unwrap());
            assert_eq!(ports("mbr0").unwrap(), vec!["mtap0".to_string()]);

            // Closing the tap removes it from the bridge.
            drop(taps);
            assert_eq!(link("mtap0").unwrap(), None);
            assert!(!bridge_has_ports("mbr0").unwrap());

            assert!(delete_link("mbr0").unwrap());
            assert_eq!(link("mbr0").unwrap(), None);
            assert!(!delete_link("mbr0").unwrap(), "already gone");
        });
    }

    #[test]
    fn bridge_errors_name_the_interface() {
        in_fresh_netns(|| {
            let _tap = Tap::create(Some("notabr"), false, 1).unwrap();
            let e = create_bridge("notabr").unwrap_err();
            assert!(matches!(e, Error::WrongKind { .. }), "{e}");
            assert!(e.to_string().contains("notabr"), "{e}");

            let e = enslave("notabr", "notabr").unwrap_err();
            assert!(matches!(e, Error::WrongKind { .. }), "{e}");

            create_bridge("mbr1").unwrap();
            let e = enslave("ghost0", "mbr1").unwrap_err();
            assert!(
                matches!(&e, Error::NoSuchLink { name } if name == "ghost0"),
                "{e}"
            );
            let e = enslave("notabr", "ghost1").unwrap_err();
            assert!(
                matches!(&e, Error::NoSuchLink { name } if name == "ghost1"),
                "{e}"
            );
            let e = link_up("ghost2").unwrap_err();
            assert!(e.to_string().contains("ghost2"), "{e}");
            assert!(matches!(
                bridge_has_ports("notabr"),
                Err(Error::WrongKind { .. })
            ));
            assert!(matches!(
                create_bridge("bad name"),
                Err(Error::InvalidName { .. })
            ));
        });
    }

    #[test]
    fn frames_cross_the_bridge_between_taps() {
        in_fresh_netns(|| {
            use std::time::{Duration, Instant};
            create_bridge("mbr2").unwrap();
            let a = Tap::create(Some("mta"), false, 1).unwrap().remove(0);
            let b = Tap::create(Some("mtb"), false, 1).unwrap().remove(0);
            for t in ["mta", "mtb"] {
                enslave(t, "mbr2").unwrap();
                link_up(t).unwrap();
            }
            // A broadcast frame of a local-experimental ethertype.
            let mut frame = vec![0xff; 6];
            frame.extend([0x02, 0, 0, 0, 0, 0x01, 0x88, 0xb5]);
            frame.extend(b"moatvm bridge test frame");
            frame.resize(60, 0);

            let deadline = Instant::now() + Duration::from_secs(10);
            let mut buf = [0u8; 2048];
            'outer: loop {
                assert!(Instant::now() < deadline, "frame never crossed the bridge");
                // Ports may take a moment to start forwarding: resend.
                a.write(&frame).unwrap();
                let until = Instant::now() + Duration::from_millis(200);
                while Instant::now() < until {
                    match b.read(&mut buf) {
                        Ok(n) if buf[..n] == frame[..] => break 'outer,
                        Ok(_) => {} // the kernel's own chatter (IPv6 etc.)
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        Err(e) => panic!("read from mtb: {e}"),
                    }
                }
            }
        });
    }
}
