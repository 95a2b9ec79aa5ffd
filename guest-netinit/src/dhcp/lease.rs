//! A DHCP lease and the configs made from it: the lease applied over the static base
//! (interface, explicit MTU/MAC, extra routes, extra DNS), or, without a lease, the base's
//! static part as the fallback.

use super::msg::{opt, Message};
use crate::config::{Address, NetConfig};
use guest_proto::ConfigSource;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};

/// MTUs below the IPv4 minimum are ignored (RFC 2132 §5.1: minimum 68; anything under 576
/// breaks DHCP itself).
pub const MIN_MTU: u16 = 576;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    /// Option 51; `None` = infinite.
    pub lease_secs: Option<u32>,
    pub server: Ipv4Addr,
    /// Wall-clock time of the ACK, ms since the Unix epoch.
    pub obtained_at_ms: u64,
}

impl Lease {
    /// The lease as `state.json` carries it, with its expiry time.
    pub fn to_report(&self) -> guest_proto::DhcpLease {
        guest_proto::DhcpLease {
            server: self.server,
            address: self.address,
            prefix_len: self.prefix_len,
            router: self.router,
            dns: self.dns.clone(),
            domain: self.domain.clone(),
            mtu: self.mtu,
            lease_secs: self.lease_secs,
            obtained_at_ms: self.obtained_at_ms,
            expires_at_ms: self
                .lease_secs
                .map(|s| self.obtained_at_ms.saturating_add(u64::from(s) * 1000)),
        }
    }

    /// The lease in an ACK (options missing from it are taken from the OFFER); `None` when
    /// the ACK carries no usable address.
    pub fn from_ack(ack: &Message, offer: &Message, server: Ipv4Addr) -> Option<Lease> {
        if !super::usable(ack.yiaddr) {
            return None;
        }
        let either = |code| {
            if ack.option(code).is_some() {
                ack
            } else {
                offer
            }
        };
        let prefix_len = either(opt::SUBNET_MASK)
            .addr(opt::SUBNET_MASK)
            .and_then(mask_len)
            .unwrap_or_else(|| crate::sources::classful_prefix(IpAddr::V4(ack.yiaddr)));
        let obtained_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Some(Lease {
            address: ack.yiaddr,
            prefix_len,
            router: either(opt::ROUTER)
                .addrs(opt::ROUTER)
                .into_iter()
                .find(|r| super::usable(*r)),
            dns: either(opt::DNS)
                .addrs(opt::DNS)
                .into_iter()
                .filter(|d| super::usable(*d))
                .collect(),
            domain: either(opt::DOMAIN_NAME).text(opt::DOMAIN_NAME),
            hostname: either(opt::HOSTNAME)
                .text(opt::HOSTNAME)
                .filter(|h| valid_hostname(h)),
            mtu: either(opt::MTU).u16(opt::MTU).filter(|m| *m >= MIN_MTU),
            lease_secs: either(opt::LEASE_TIME)
                .u32(opt::LEASE_TIME)
                .filter(|s| *s != u32::MAX),
            server,
            obtained_at_ms,
        })
    }

    /// When the lease runs out, ms since the Unix epoch; `None` for an infinite lease.
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.lease_secs
            .map(|s| self.obtained_at_ms.saturating_add(u64::from(s) * 1000))
    }

    /// The config to apply: the lease's address, router, DNS, domain, hostname and MTU over
    /// `base`. Explicit settings win (MTU and MAC from `ip=`/the template, a hostname from
    /// `ip=`); static routes are kept; static DNS servers and domains are added after the
    /// lease's (as networkd does with `DNS=` next to DHCP). The base's static addresses and
    /// gateway are the fallback and are not applied.
    pub fn to_config(&self, base: &NetConfig) -> NetConfig {
        let mut dns: Vec<IpAddr> = self.dns.iter().map(|d| IpAddr::V4(*d)).collect();
        for d in &base.dns {
            if !dns.contains(d) {
                dns.push(*d);
            }
        }
        let mut domains: Vec<String> = self.domain.iter().cloned().collect();
        for d in &base.domains {
            if !domains.contains(d) {
                domains.push(d.clone());
            }
        }
        NetConfig {
            interface: base.interface.clone(),
            source: ConfigSource::Dhcp,
            mtu: base.mtu.or(self.mtu.map(u32::from)),
            mac: base.mac,
            addresses: vec![Address {
                addr: IpAddr::V4(self.address),
                prefix_len: self.prefix_len,
            }],
            gateway: self.router.map(IpAddr::V4),
            routes: base.routes.clone(),
            dns,
            domains,
            hostname: base.hostname.clone().or(self.hostname.clone()),
            dhcp: true,
        }
    }
}

/// The static fallback: `base` without DHCP, when it has an address; `None` otherwise.
pub fn fallback_config(base: &NetConfig) -> Option<NetConfig> {
    if base.addresses.is_empty() {
        return None;
    }
    let mut c = base.clone();
    c.source = ConfigSource::Fallback;
    c.dhcp = false;
    Some(c)
}

/// What to apply before DHCP can run: MTU, MAC and link up only.
pub fn link_only(base: &NetConfig) -> NetConfig {
    NetConfig {
        interface: base.interface.clone(),
        source: base.source,
        mtu: base.mtu,
        mac: base.mac,
        addresses: vec![],
        gateway: None,
        routes: vec![],
        dns: vec![],
        domains: vec![],
        hostname: None,
        dhcp: true,
    }
}

/// Prefix length of a contiguous netmask.
pub fn mask_len(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// RFC 1123 labels: letters, digits, `-`, dots between; at most 253 characters.
fn valid_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}
