//! The kernel side of `Links` and `Apply`: a thin handle over rtnetlink with replace
//! semantics, so a second run, or a kernel that already applied `ip=`, is not an error.
//!
//! Two sockets are opened at `connect` time: one for requests, and one subscribed to
//! link events (RTNLGRP_LINK). Subscribing before the first look is what makes
//! `wait` race-free: an interface created between "look" and "wait" still produces an
//! event in the already-open socket's queue.

mod read;

use crate::config::NetConfig;
use crate::system::{Apply, ApplySummary, Links, NetError};
use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteMessage, RouteScope};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, LinkUnspec, MulticastGroup, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

type Events = UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

/// An open rtnetlink connection plus a link-event subscription.
pub struct Netlink {
    handle: Handle,
    events: Events,
}

/// The parts of a link's current state that `apply` compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
}

impl Netlink {
    /// Open the request socket and the link-event socket; spawns their connection tasks
    /// on the current tokio runtime.
    pub async fn connect() -> Result<Self, NetError> {
        let (events_conn, _events_handle, events) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
                .map_err(NetError::Socket)?;
        tokio::spawn(events_conn);
        let (conn, handle, _unsolicited) = rtnetlink::new_connection().map_err(NetError::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle, events })
    }

    /// The rtnetlink handle, for callers that need a request this type does not wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Current MTU, MAC and up flag of the link with `index`.
    pub async fn link_state(&mut self, index: u32) -> Result<LinkState, NetError> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.next().await {
            Some(Ok(msg)) => Ok(link_state(&msg)),
            Some(Err(e)) => Err(request_error(format!("get link {index}"), e)),
            None => Err(NetError::Request {
                what: format!("get link {index}"),
                message: "no answer".into(),
            }),
        }
    }

    async fn set_link(&mut self, what: String, msg: LinkMessage) -> Result<(), NetError> {
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(|e| request_error(what, e))
    }

    async fn set_mac(&mut self, state: &LinkState, mac: [u8; 6]) -> Result<String, NetError> {
        let name = &state.name;
        let what = format!("set mac {} on {name}", fmt_mac(&mac));
        let msg = || {
            LinkUnspec::new_with_index(state.index)
                .address(mac.to_vec())
                .build()
        };
        if !state.up {
            self.set_link(what, msg()).await?;
            return Ok(format!("mac {}", fmt_mac(&mac)));
        }
        // Most drivers (virtio_net included) change the address of a running link; the
        // ones that cannot answer EBUSY, and only then is the link taken down first.
        match self.handle.link().change(msg()).execute().await {
            Ok(()) => Ok(format!("mac {}", fmt_mac(&mac))),
            Err(e) if errno(&e) == Some(libc::EBUSY) => {
                let down = LinkUnspec::new_with_index(state.index).down().build();
                self.set_link(format!("set {name} down to change its mac"), down)
                    .await?;
                self.set_link(what, msg()).await?;
                Ok(format!("mac {} (link down first)", fmt_mac(&mac)))
            }
            Err(e) => Err(request_error(what, e)),
        }
    }

    async fn add_route(&mut self, what: String, msg: RouteMessage) -> Result<(), NetError> {
        match self.handle.route().add(msg).replace().execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(request_error(what, e)),
        }
    }
}

impl Links for Netlink {
    async fn find(&mut self, name: &str) -> Result<Option<u32>, NetError> {
        let mut stream = self.handle.link().get().match_name(name).execute();
        match stream.next().await {
            Some(Ok(msg)) => Ok(Some(msg.header.index)),
            Some(Err(e)) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Some(Err(e)) => Err(request_error(format!("look up link {name}"), e)),
            None => Ok(None),
        }
    }

    async fn wait(&mut self, name: &str, deadline: Instant) -> Result<Option<u32>, NetError> {
        if let Some(index) = self.find(name).await? {
            return Ok(Some(index));
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Ok(Some((msg, _))) => {
                    if let Some(index) = new_link_named(&msg, name) {
                        return Ok(Some(index));
                    }
                }
                Ok(None) => {
                    // The event socket closed (e.g. its receive queue overflowed): subscribe
                    // again, then look again, and keep waiting on the new subscription.
                    let (conn, _h, events) =
                        rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
                            .map_err(NetError::Socket)?;
                    tokio::spawn(conn);
                    self.events = events;
                    if let Some(index) = self.find(name).await? {
                        return Ok(Some(index));
                    }
                }
                // Deadline: one last look covers an event lost to a queue overflow.
                Err(_elapsed) => return self.find(name).await,
            }
        }
    }
}

impl Apply for Netlink {
    async fn apply(&mut self, index: u32, cfg: &NetConfig) -> Result<ApplySummary, NetError> {
        let mut actions = Vec::new();
        let mut state = self.link_state(index).await?;
        let name = cfg.interface.clone();

        if let Some(mtu) = cfg.mtu {
            if state.mtu == Some(mtu) {
                actions.push(format!("mtu {mtu} (already set)"));
            } else {
                let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
                self.set_link(format!("set mtu {mtu} on {name}"), msg)
                    .await?;
                actions.push(format!("mtu {mtu}"));
            }
        }

        if let Some(mac) = cfg.mac {
            if state.mac == Some(mac.0) {
                actions.push(format!("mac {} (already set)", fmt_mac(&mac.0)));
            } else {
                let done = self.set_mac(&state, mac.0).await?;
                if done.ends_with("(link down first)") {
                    state.up = false;
                }
                actions.push(done);
            }
        }

        if state.up {
            actions.push("up (already up)".into());
        } else {
            let msg = LinkUnspec::new_with_index(index).up().build();
            self.set_link(format!("set {name} up"), msg).await?;
            actions.push("up".into());
        }

        for a in &cfg.addresses {
            let what = format!("add address {}/{} to {name}", a.addr, a.prefix_len);
            match self
                .handle
                .address()
                .add(index, a.addr, a.prefix_len)
                .replace()
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(request_error(what, e)),
            }
            actions.push(format!("address {}/{}", a.addr, a.prefix_len));
        }

        // On-link routes first, so a gateway reachable only through one of them is accepted.
        for r in cfg.routes.iter().filter(|r| r.gateway.is_none()) {
            let what = format!("add route {}/{} dev {name}", r.destination, r.prefix_len);
            let msg = route_message(index, r.destination, r.prefix_len, None, r.metric, false)
                .map_err(|message| NetError::Request {
                    what: what.clone(),
                    message,
                })?;
            self.add_route(what, msg).await?;
            actions.push(format!(
                "route {}/{} dev {name}",
                r.destination, r.prefix_len
            ));
        }
        for r in cfg.routes.iter() {
            let Some(gw) = r.gateway else { continue };
            let onlink = !gateway_on_link(gw, cfg);
            let what = format!(
                "add route {}/{} via {gw} dev {name}",
                r.destination, r.prefix_len
            );
            let msg = route_message(
                index,
                r.destination,
                r.prefix_len,
                Some(gw),
                r.metric,
                onlink,
            )
            .map_err(|message| NetError::Request {
                what: what.clone(),
                message,
            })?;
            self.add_route(what, msg).await?;
            actions.push(format!(
                "route {}/{} via {gw}{}",
                r.destination,
                r.prefix_len,
                if onlink { " onlink" } else { "" }
            ));
        }

        if let Some(gw) = cfg.gateway {
            let onlink = !gateway_on_link(gw, cfg);
            let what = format!("add default route via {gw} dev {name}");
            let any = match gw {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            let msg = route_message(index, any, 0, Some(gw), None, onlink).map_err(|message| {
                NetError::Request {
                    what: what.clone(),
                    message,
                }
            })?;
            self.add_route(what, msg).await?;
            actions.push(format!(
                "default via {gw}{}",
                if onlink { " onlink" } else { "" }
            ));
        }

        Ok(ApplySummary { actions })
    }
}

/// Build a main-table route out through `index`. No gateway → scope link (on-link route).
fn route_message(
    index: u32,
    destination: IpAddr,
    prefix_len: u8,
    gateway: Option<IpAddr>,
    metric: Option<u32>,
    onlink: bool,
) -> Result<RouteMessage, String> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(destination, prefix_len)
        .map_err(|e| e.to_string())?
        .output_interface(index);
    if let Some(gw) = gateway {
        b = b.gateway(gw).map_err(|e| e.to_string())?;
        if onlink {
            b = b.onlink();
        }
    } else {
        b = b.scope(RouteScope::Link);
    }
    if let Some(m) = metric {
        b = b.priority(m);
    }
    Ok(b.build())
}

/// Is `gw` inside one of the configured address prefixes or on-link routes? When it is
/// not, the gateway route gets the onlink flag (the kernel would otherwise refuse it
/// with ENETUNREACH), as `ip=` configurations with a /32 address need.
fn gateway_on_link(gw: IpAddr, cfg: &NetConfig) -> bool {
    cfg.addresses
        .iter()
        .map(|a| (a.addr, a.prefix_len))
        .chain(
            cfg.routes
                .iter()
                .filter(|r| r.gateway.is_none())
                .map(|r| (r.destination, r.prefix_len)),
        )
        .any(|(net, len)| in_prefix(gw, net, len))
}

/// `ip` is inside `net/len` (same family).
pub fn in_prefix(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

fn link_state(msg: &LinkMessage) -> LinkState {
    let mut s = LinkState {
        index: msg.header.index,
        name: String::new(),
        mtu: None,
        mac: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Mtu(m) => s.mtu = Some(*m),
            LinkAttribute::Address(a) => s.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            _ => {}
        }
    }
    s
}

/// The index of a RTM_NEWLINK event for `name`, if `msg` is one.
fn new_link_named(msg: &NetlinkMessage<RouteNetlinkMessage>, name: &str) -> Option<u32> {
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = &msg.payload else {
        return None;
    };
    link.attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::IfName(n) if n == name))
        .then_some(link.header.index)
}

/// The positive errno of a netlink NACK.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

pub(crate) fn request_error(what: String, e: rtnetlink::Error) -> NetError {
    let message = match &e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    };
    NetError::Request { what, message }
}

fn fmt_mac(m: &[u8; 6]) -> String {
    guest_proto::MacAddr(*m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Address, Route};
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteFlags};
    use rtnetlink::packet_route::AddressFamily;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_membership() {
        assert!(in_prefix(v4("192.168.100.1"), v4("192.168.100.2"), 24));
        assert!(!in_prefix(v4("192.168.101.1"), v4("192.168.100.2"), 24));
        assert!(!in_prefix(v4("192.168.100.1"), v4("192.168.100.2"), 32));
        assert!(in_prefix(v4("10.9.8.7"), v4("0.0.0.0"), 0));
        assert!(in_prefix(v4("fe80::1"), v4("fe80::2"), 64));
        assert!(!in_prefix(v4("fe80::1"), v4("192.168.100.2"), 0));
    }

    fn cfg(addresses: Vec<Address>, routes: Vec<Route>) -> NetConfig {
        NetConfig {
            interface: "eth0".into(),
            source: guest_proto::report::ConfigSource::Cmdline,
            mtu: None,
            mac: None,
            addresses,
            gateway: None,
            routes,
            dns: vec![],
            domains: vec![],
            hostname: None,
            dhcp: false,
        }
    }

    #[test]
    fn gateway_outside_every_prefix_needs_onlink() {
        let a = Address {
            addr: v4("192.168.100.2"),
            prefix_len: 32,
        };
        assert!(!gateway_on_link(v4("192.168.100.1"), &cfg(vec![a], vec![])));
        let onlink = Route {
            destination: v4("192.168.100.0"),
            prefix_len: 24,
            gateway: None,
            metric: None,
        };
        assert!(gateway_on_link(
            v4("192.168.100.1"),
            &cfg(vec![a], vec![onlink])
        ));
        let wide = Address {
            addr: v4("192.168.100.2"),
            prefix_len: 24,
        };
        assert!(gateway_on_link(
            v4("192.168.100.1"),
            &cfg(vec![wide], vec![])
        ));
    }

    #[test]
    fn default_route_message_has_gateway_and_oif() {
        let m = route_message(7, v4("0.0.0.0"), 0, Some(v4("192.168.100.1")), None, true).unwrap();
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert_eq!(m.header.destination_prefix_length, 0);
        assert!(m.header.flags.contains(RouteFlags::Onlink));
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(m
            .attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet(
                "192.168.100.1".parse().unwrap()
            ))));
        let onlink = route_message(7, v4("10.0.0.0"), 8, None, Some(50), false).unwrap();
        assert_eq!(onlink.header.scope, RouteScope::Link);
        assert!(onlink.attributes.contains(&RouteAttribute::Priority(50)));
        // A v4 destination with a v6-sized prefix is refused before reaching the kernel.
        assert!(route_message(7, v4("10.0.0.0"), 40, None, None, false).is_err());
    }
}
