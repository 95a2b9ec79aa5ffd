//! Reading back what is on an interface (addresses, routes): for tests, for the report,
//! and to see what a kernel `ip=` or an earlier run already applied.

use super::{request_error, Netlink};
use crate::config::{Address, Route};
use crate::system::NetError;
use futures::StreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

impl Netlink {
    /// The addresses on the interface (both families; IPv6 link-local included).
    pub async fn addresses(&mut self, index: u32) -> Result<Vec<Address>, NetError> {
        let what = || format!("list addresses of link {index}");
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.next().await {
            let msg = msg.map_err(|e| request_error(what(), e))?;
            if msg.header.index != index {
                continue;
            }
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on p2p links).
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(addr) = local.or(address) {
                out.push(Address {
                    addr,
                    prefix_len: msg.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    /// The main-table routes that go out through the interface (both families), with the
    /// default route as destination `0.0.0.0/0` (or `::/0`). Kernel-made routes (the
    /// prefix route of an address, IPv6 multicast/link-local) are included.
    pub async fn routes(&mut self, index: u32) -> Result<Vec<Route>, NetError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let mut stream = self.handle.route().get(query).execute();
            while let Some(msg) = stream.next().await {
                let msg =
                    msg.map_err(|e| request_error(format!("list routes of link {index}"), e))?;
                if let Some(route) = route_of(&msg, index) {
                    out.push(route);
                }
            }
        }
        Ok(out)
    }
}

fn route_of(msg: &RouteMessage, index: u32) -> Option<Route> {
    if msg.header.table != RouteHeader::RT_TABLE_MAIN || msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut oif = None;
    let mut destination = None;
    let mut gateway = None;
    let mut metric = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(d) => destination = ip_of(d),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::Priority(p) => metric = Some(*p),
            _ => {}
        }
    }
    if oif != Some(index) {
        return None;
    }
    let destination = destination.or(match msg.header.address_family {
        AddressFamily::Inet => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        AddressFamily::Inet6 => Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        _ => None,
    })?;
    Some(Route {
        destination,
        prefix_len: msg.header.destination_prefix_length,
        gateway,
        metric,
    })
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}
