//! `rd.route=`: dracut's static route parameter, parsed and printed.
//!
//! `rd.route=<net>/<netmask>:<gateway>[:<interface>]`; IPv6 is bracketed, dracut style around
//! the whole network (`[2001:db8:3::/48]`), also accepted as `[2001:db8:3::]/48`.

use crate::ipconfig::{check_device_name, fmt_addr, parse_addr, parse_netmask, Family};
use crate::IpConfigError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// `rd.route=<net>/<netmask>:<gateway>[:<interface>]` (dracut); IPv6 in brackets.
///
/// A missing `/<netmask>` is a host route (/32, /128); an empty `<gateway>` is an on-link route.
/// The destination has no host bits set (the kernel refuses such a route).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdRoute {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub device: Option<String>,
}

impl FromStr for RdRoute {
    type Err = IpConfigError;
    /// Parses the value after `rd.route=`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = crate::ipconfig::split_fields(s);
        if t.len() > 3 {
            return Err(IpConfigError::new(
                "rd.route",
                s,
                format!(
                    "has {} fields; the most is 3 (<net>/<netmask>:<gateway>:<interface>)",
                    t.len()
                ),
            ));
        }
        let (destination, prefix_len) = parse_destination(t[0])?;
        let reference = Some((Family::of(&destination), "destination"));
        let gateway = match t.get(1).copied().unwrap_or("") {
            "" => None,
            g => Some(parse_addr("gateway", g, reference)?),
        };
        let device = match t.get(2).copied().unwrap_or("") {
            "" => None,
            d => {
                check_device_name(d)?;
                Some(d.to_string())
            }
        };
        Ok(RdRoute {
            destination,
            prefix_len,
            gateway,
            device,
        })
    }
}

/// `10.0.0.0/8`, `10.0.0.0/255.0.0.0`, `[2001:db8::/32]`, `[2001:db8::]/32`, `10.1.2.3`.
fn parse_destination(text: &str) -> Result<(IpAddr, u8), IpConfigError> {
    if text.is_empty() {
        return Err(IpConfigError::new(
            "destination",
            text,
            "is empty (want <net>/<prefix>)",
        ));
    }
    // `[net/len]` and `[net]/len` are both bracketed IPv6; anything else is `net[/len]`.
    let (net, mask): (String, Option<&str>) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inner, "")) => match inner.split_once('/') {
                Some((net, len)) => (format!("[{net}]"), Some(len)),
                None => (text.to_string(), None),
            },
            Some((inner, after)) => match after.strip_prefix('/') {
                Some(len) => (format!("[{inner}]"), Some(len)),
                None => {
                    return Err(IpConfigError::new(
                        "destination",
                        text,
                        "is not <net>/<prefix> (unexpected text after `]`)",
                    ))
                }
            },
            None => (text.to_string(), None),
        },
        None => match text.split_once('/') {
            Some((net, len)) => (net.to_string(), Some(len)),
            None => (text.to_string(), None),
        },
    };
    let destination = parse_addr("destination", &net, None)
        .map_err(|e| IpConfigError::new("destination", text, e.reason))?;
    let family = Family::of(&destination);
    let prefix_len = match mask {
        None => family.max_prefix(),
        Some(m) => parse_netmask("netmask", m, family)?.0,
    };
    if masked(destination, prefix_len) != destination {
        return Err(IpConfigError::new(
            "destination",
            text,
            format!(
                "has host bits set (the network is {}/{prefix_len})",
                fmt_addr(&masked(destination, prefix_len))
            ),
        ));
    }
    Ok((destination, prefix_len))
}

/// `addr` with the bits past `len` cleared.
fn masked(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl fmt::Display for RdRoute {
    /// `10.0.0.0/8:10.0.0.1:eth0`, `[2001:db8::/32]:[2001:db8::1]`; trailing empties dropped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.destination {
            IpAddr::V4(a) => write!(f, "{a}/{}", self.prefix_len)?,
            IpAddr::V6(a) => write!(f, "[{a}/{}]", self.prefix_len)?,
        }
        let gw = self.gateway.as_ref().map(fmt_addr);
        match (&gw, &self.device) {
            (_, Some(dev)) => write!(f, ":{}:{dev}", gw.unwrap_or_default()),
            (Some(gw), None) => write!(f, ":{gw}"),
            (None, None) => Ok(()),
        }
    }
}
