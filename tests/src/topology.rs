//! The network a Firecracker guest sees, rebuilt from two namespaces: a "host" namespace with
//! the bridge `fcbr0` (192.168.100.1/24, the guest's gateway) and a "guest" namespace where
//! `eth0` appears as one end of a veth pair whose other end is a port of the bridge.
//!
//! The guest NIC is attached separately ([`Topology::attach_guest_nic`]) so a test can create it
//! late, after guest-netinit started waiting for it. The veth is created inside the host
//! namespace and its guest end moved straight into the guest namespace: the root namespace
//! never holds any of it.

use crate::netns::Namespace;
use std::net::{IpAddr, Ipv4Addr};

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

    /// Creates a veth pair: the host end (`vh<n>`) becomes an up port of `fcbr0`, the guest end
    /// appears in the guest namespace as `name` (left down, as a fresh NIC is). Returns the host
    /// end's name.
    pub fn attach_guest_nic(&self, name: &str) -> String {
        let n = self.nics.get();
        self.nics.set(n + 1);
        let host_end = format!("vh{n}");
        self.host.ip([
            "link",
            "add",
            &host_end,
            "type",
            "veth",
            "peer",
            "name",
            name,
            "netns",
            self.guest.name(),
        ]);
        self.host
            .ip(["link", "set", &host_end, "master", HOST_BRIDGE]);
        self.host.ip(["link", "set", &host_end, "up"]);
        host_end
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
