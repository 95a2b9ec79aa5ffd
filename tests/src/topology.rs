//! The network a Firecracker guest sees, rebuilt from two namespaces: a "host" namespace with
//! the bridge `fcbr0` (192.168.100.1/24, the guest's gateway) and a "guest" namespace where
//! `eth0` appears.
//!
//! Like a Firecracker tap, the host side of the guest's link is a bridge port that is up and
//! forwarding before the guest's NIC exists: a veth pair `vh<n>`/`vg<n>` lives in the host
//! namespace (`vh<n>` a port of `fcbr0`, both ends up), and the guest's `eth0` is a macvlan on
//! `vg<n>` created straight into the guest namespace, down, as a fresh NIC is. (With a plain
//! veth whose far end is the guest's `eth0`, the bridge port only gets carrier when the guest
//! sets `eth0` up, and turns forwarding from the kernel's link-watch work some time later: the
//! guest's first ARP request can be dropped at the bridge, which no real VM sees.)
//!
//! The guest NIC is attached separately ([`Topology::attach_guest_nic`]) so a test can create it
//! late, after guest-netinit started waiting for it. The root namespace never holds any of it.

use crate::netns::Namespace;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The bridge in the host namespace.
pub const HOST_BRIDGE: &str = "fcbr0";
/// The gateway address on the bridge (when the topology has one).
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
/// Prefix length of the guest subnet 192.168.100.0/24.
pub const SUBNET_PREFIX: u8 = 24;
/// The guest interface name used unless a test asks for another.
pub const GUEST_NIC: &str = "eth0";

/// Host + guest namespaces joined by a bridge; dropped namespaces take their links along.
#[derive(Debug)]
pub struct Topology {
    pub host: Namespace,
    pub guest: Namespace,
    with_gateway: bool,
    nics: std::cell::Cell<u32>,
}

impl Topology {
    /// Bridge `fcbr0` up with 192.168.100.1/24: the gateway answers ARP and ping.
    pub fn new() -> Self {
        Self::build(true)
    }

    /// Bridge `fcbr0` up but without any address: the gateway is absent (nothing answers).
    pub fn without_gateway() -> Self {
        Self::build(false)
    }

    fn build(with_gateway: bool) -> Self {
        let host = Namespace::new("host");
        let guest = Namespace::new("guest");
        host.ip(["link", "add", HOST_BRIDGE, "type", "bridge"]);
        if with_gateway {
            let cidr = format!("{GATEWAY}/{SUBNET_PREFIX}");
            host.ip(["addr", "add", &cidr, "dev", HOST_BRIDGE]);
        }
        host.ip(["link", "set", HOST_BRIDGE, "up"]);
        Self {
            host,
            guest,
            with_gateway,
            nics: std::cell::Cell::new(0),
        }
    }

    /// Whether 192.168.100.1 is configured on the bridge.
    pub fn has_gateway(&self) -> bool {
        self.with_gateway
    }

    /// Creates the guest's NIC `name` (see the module docs): the bridge port `vh<n>` is up and
    /// forwarding before `name` appears in the guest namespace, down. Returns the port's name.
    pub fn attach_guest_nic(&self, name: &str) -> String {
        let n = self.nics.get();
        self.nics.set(n + 1);
        let port = format!("vh{n}");
        let lower = format!("vg{n}");
        self.host
            .ip(["link", "add", &port, "type", "veth", "peer", "name", &lower]);
        self.host.ip(["link", "set", &port, "master", HOST_BRIDGE]);
        self.host.ip(["link", "set", &port, "up"]);
        self.host.ip(["link", "set", &lower, "up"]);
        self.wait_port_forwarding(&port);
        self.host.ip([
            "link",
            "add",
            "link",
            &lower,
            "name",
            name,
            "netns",
            self.guest.name(),
            "type",
            "macvlan",
            "mode",
            "bridge",
        ]);
        port
    }

    /// Waits (bounded) until bridge port `port` forwards: the kernel switches it from its
    /// link-watch work after carrier comes up.
    fn wait_port_forwarding(&self, port: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let json = self.host.ip(["-j", "-d", "link", "show", port]);
            let state = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| {
                    v.get(0)?
                        .get("linkinfo")?
                        .get("info_slave_data")?
                        .get("state")?
                        .as_str()
                        .map(str::to_owned)
                });
            if state.as_deref() == Some("forwarding") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bridge port {port} in {} not forwarding after 5 s (state {state:?}): {json}",
                self.host.name()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Resets the guest NIC to how a fresh VM has it: no addresses, no routes, link down. Used
    /// between benchmark runs.
    pub fn reset_guest_nic(&self, name: &str) {
        self.guest.ip(["addr", "flush", "dev", name]);
        // Routes through the device go with its addresses, except a default route set with
        // `onlink`: flush what is left in the main table for this device.
        let _ = self.guest.ip_unchecked(["route", "flush", "dev", name]);
        self.guest.ip(["link", "set", name, "down"]);
    }

    /// Whether the gateway answers one ping from the guest namespace (1 s bound). Only traffic
    /// between our two namespaces.
    pub fn guest_reaches_gateway(&self) -> bool {
        let out = self
            .guest
            .exec("ping")
            .args(["-c1", "-W1", "-q", &IpAddr::V4(GATEWAY).to_string()])
            .output()
            .unwrap_or_else(|e| panic!("cannot run ping (apt-get install -y iputils-ping): {e}"));
        out.status.success()
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}
