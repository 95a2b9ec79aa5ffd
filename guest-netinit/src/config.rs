//! `NetConfig`: the one configuration guest-netinit applies, built from the sources
//! (cmdline `ip=`, template, later DHCP) by pure functions, so every decision about
//! *what* to apply is testable without root. Applying it is `system`'s job.

use guest_proto::report::ConfigSource;
use guest_proto::MacAddr;
use serde::Serialize;
use std::net::IpAddr;

/// An address with its prefix length (`192.168.100.2/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Address {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// A route to add. `gateway: None` is an on-link route (added before gateway routes, so the
/// kernel accepts a gateway that is only reachable through it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Route {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub metric: Option<u32>,
}

/// Everything to apply to one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetConfig {
    pub interface: String,
    pub source: ConfigSource,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub addresses: Vec<Address>,
    /// Default gateway (a default route via it is added after the on-link routes).
    pub gateway: Option<IpAddr>,
    /// Extra routes (`rd.route=`, template `[Route]`), default route excluded.
    pub routes: Vec<Route>,
    pub dns: Vec<IpAddr>,
    pub domains: Vec<String>,
    pub hostname: Option<String>,
    /// Ask DHCPv4 for the address (filled by the DHCP issue; static fields are then a fallback).
    pub dhcp: bool,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix_len == 0 && self.destination.is_unspecified() {
            f.write_str("default")?;
        } else {
            write!(f, "{}/{}", self.destination, self.prefix_len)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        Ok(())
    }
}
