//! Reads links, addresses and routes back from inside a namespace with rtnetlink, so tests
//! check what the kernel holds rather than what a tool printed.
//!
//! A netlink socket belongs to the network namespace of the thread that opened it, so each
//! query runs on a fresh thread that `setns()`s into the namespace, opens the socket there,
//! runs a current-thread tokio runtime for the query and ends (the test's own threads never
//! change namespace).

use crate::netns::Namespace;
use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

/// A link as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// IFF_UP: administratively up.
    pub up: bool,
    pub mtu: Option<u32>,
    pub mac: Option<Vec<u8>>,
}

/// An address on a link, `address/prefix_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `0.0.0.0` with `prefix_len` 0 for the default route.
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: Option<u32>,
    pub metric: Option<u32>,
    /// Added by the kernel itself (the prefix route of an address), not by a program.
    pub kernel: bool,
}

impl Route {
    pub fn is_default(&self) -> bool {
        self.prefix_len == 0
    }
}

impl Namespace {
    /// The link called `name`, or `None` when the namespace has no such link.
    pub fn link(&self, name: &str) -> Option<LinkInfo> {
        let name = name.to_owned();
        self.netlink(move |handle| async move {
            let mut links = handle.link().get().execute();
            while let Some(msg) = links.try_next().await? {
                let mut info = LinkInfo {
                    index: msg.header.index,
                    name: String::new(),
                    up: msg.header.flags.contains(LinkFlags::Up),
                    mtu: None,
                    mac: None,
                };
                for attr in msg.attributes {
                    match attr {
                        LinkAttribute::IfName(n) => info.name = n,
                        LinkAttribute::Mtu(m) => info.mtu = Some(m),
                        LinkAttribute::Address(a) => info.mac = Some(a),
                        _ => {}
                    }
                }
                if info.name == name {
                    return Ok(Some(info));
                }
            }
            Ok(None)
        })
    }

    /// Like [`Namespace::link`] but panics naming the link when it is absent.
    pub fn expect_link(&self, name: &str) -> LinkInfo {
        self.link(name)
            .unwrap_or_else(|| panic!("no link {name} in namespace {}", self.name()))
    }

    /// Every address (IPv4 and IPv6) on link `name`; panics if the link does not exist.
    pub fn addresses(&self, name: &str) -> Vec<Address> {
        let index = self.expect_link(name).index;
        self.netlink(move |handle| async move {
            let mut found = Vec::new();
            let mut addrs = handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute();
            while let Some(msg) = addrs.try_next().await? {
                let prefix_len = msg.header.prefix_len;
                // IFA_LOCAL is the interface's own address on point-to-point links; on
                // Ethernet IFA_ADDRESS and IFA_LOCAL are equal. Prefer LOCAL when present.
                let mut address = None;
                for attr in msg.attributes {
                    match attr {
                        AddressAttribute::Local(a) => address = Some(a),
                        AddressAttribute::Address(a) if address.is_none() => address = Some(a),
                        _ => {}
                    }
                }
                if let Some(address) = address {
                    found.push(Address {
                        address,
                        prefix_len,
                    });
                }
            }
            Ok(found)
        })
    }

    /// The IPv4 addresses on link `name` (link-local IPv6 the kernel adds is left out).
    pub fn ipv4_addresses(&self, name: &str) -> Vec<Address> {
        self.addresses(name)
            .into_iter()
            .filter(|a| a.address.is_ipv4())
            .collect()
    }

    /// The IPv4 routes of the main table.
    pub fn routes_v4(&self) -> Vec<Route> {
        self.netlink(|handle| async move {
            let mut found = Vec::new();
            let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
            let mut routes = handle.route().get(query).execute();
            while let Some(msg) = routes.try_next().await? {
                let mut table = u32::from(msg.header.table);
                let mut route = Route {
                    destination: Ipv4Addr::UNSPECIFIED,
                    prefix_len: msg.header.destination_prefix_length,
                    gateway: None,
                    oif: None,
                    metric: None,
                    kernel: msg.header.protocol == RouteProtocol::Kernel,
                };
                for attr in msg.attributes {
                    match attr {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => route.destination = d,
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => route.gateway = Some(g),
                        RouteAttribute::Oif(i) => route.oif = Some(i),
                        RouteAttribute::Priority(p) => route.metric = Some(p),
                        RouteAttribute::Table(t) => table = t,
                        _ => {}
                    }
                }
                if table == u32::from(RouteHeader::RT_TABLE_MAIN) {
                    found.push(route);
                }
            }
            Ok(found)
        })
    }

    /// The default route(s) of the main table.
    pub fn default_routes(&self) -> Vec<Route> {
        self.routes_v4()
            .into_iter()
            .filter(Route::is_default)
            .collect()
    }

    /// Runs one rtnetlink query inside this namespace (see the module docs).
    fn netlink<T, F, Fut>(&self, query: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, rtnetlink::Error>>,
    {
        let path = self.path();
        let ns = self.name().to_owned();
        let worker = std::thread::spawn(move || -> Result<T, String> {
            let file = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
            // SAFETY: plain syscall on a valid fd; it only changes this thread's namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| format!("tokio runtime: {e}"))?;
            runtime.block_on(async move {
                let (connection, handle, _) =
                    rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
                tokio::spawn(connection);
                query(handle)
                    .await
                    .map_err(|e| format!("netlink query: {e}"))
            })
        });
        match worker.join() {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => panic!("reading netlink state of namespace {ns}: {e}"),
            Err(_) => panic!("netlink reader thread for namespace {ns} panicked"),
        }
    }
}
