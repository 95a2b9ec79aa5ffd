//! `IpConfig`: one `ip=` kernel parameter, in every form the fleet meets.
//!
//! Forms (field order is the kernel's `Documentation/admin-guide/nfs/nfsroot.rst`):
//! - bare: `ip=off|none|on|any|dhcp|both|bootp|rarp` (plus dracut's `dhcp6|auto6|either6|link6|ibft|single-dhcp`)
//! - kernel: `ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>:<ntp0>`
//! - dracut / systemd-network-generator:
//!   `ip=<iface>:<autoconf>[:[<mtu>][:<mac>]]`,
//!   `ip=<client>:[<peer>]:<gw>:<netmask>:<hostname>:<iface>:<autoconf>[:[<mtu>][:<mac>]]`,
//!   `ip=<client>:[<peer>]:<gw>:<netmask>:<hostname>:<iface>:<autoconf>[:[<dns1>][:<dns2>]]`.
//!
//! IPv6 addresses are written in brackets (`[2001:db8::2]`); the netmask field takes a dotted
//! netmask or a prefix length. `FromStr` and `Display` round-trip: `parse(x.to_string()) == x`.
//!
//! Telling the forms apart: one field that is an autoconf word is the bare form; a first field
//! that is not an address (`[...]`, or a digit then a dot) followed by a word is
//! `<iface>:<autoconf>`; anything else is positional. After `<autoconf>`, an address (or an
//! empty field then only addresses) starts `<dns0>:<dns1>:<ntp0>`; a number, or an empty
//! field then anything else, starts `[<mtu>][:<mac>]`, the MAC being the rest with its colons.
//!
//! What `Display` normalises (the value is kept, the spelling is not): an omitted `<autoconf>`
//! is written out (`off` when there is a client, as the kernel then configures statically,
//! `any` otherwise, nfsroot.rst's default); `<dns0>` empty with `<dns1>` set becomes one DNS
//! server; MACs are lowercase with colons; trailing empty fields are dropped. An empty value is
//! an error (the kernel reads it as `off`; here it is almost always a template gone wrong).
//!
//! Errors name the field and quote the bad text, the leftmost bad field first, because the old
//! host once emitted `ip=192.168.100.X::undefined:undefined::eth0:off` and nobody could tell
//! what was wrong: here that is "client: `192.168.100.X` is not an IPv4 address", and with a
//! good client "gateway: `undefined` is not an IPv4 address".

mod fields;
mod parse;

pub use fields::{check_device_name, check_hostname};
pub(crate) use fields::{fmt_addr, parse_addr, parse_netmask, Family};
pub(crate) use parse::split_fields;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// How the address is obtained (the `<autoconf>` field, or a bare `ip=` value).
///
/// Synonyms are kept as distinct variants (`Off` vs `None`) so that `Display` gives back the
/// spelling that was parsed; use [`Autoconf::is_static`] / [`Autoconf::wants_dhcp4`] for meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Autoconf {
    Off,
    None,
    On,
    Any,
    Dhcp,
    Both,
    Bootp,
    Rarp,
    Dhcp6,
    Auto6,
    Either6,
    Link6,
    Ibft,
    SingleDhcp,
}

/// Which of the grammars a parsed value was written in, so `Display` can write it back the
/// same way (the kernel only understands `Kernel` and `Bare`; dracut and systemd understand all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpForm {
    /// `ip=dhcp`
    Bare,
    /// `ip=<iface>:<autoconf>[:[<mtu>][:<mac>]]`
    DeviceAutoconf,
    /// the positional kernel/dracut form starting with the client address
    Positional,
}

/// A 48-bit Ethernet address, written `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// One parsed `ip=` parameter.
///
/// Every field is optional in the grammar, so every field is an `Option` here; a field that is
/// present is valid (an `IpConfig` cannot hold `undefined`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub form: IpForm,
    pub client: Option<IpAddr>,
    /// `<server>` (kernel) / `<peer>` (dracut): the point-to-point peer; unused on Ethernet.
    pub server: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    /// From `<netmask>`: a dotted IPv4 netmask or a prefix length.
    pub prefix_len: Option<u8>,
    /// True when `<netmask>` was written as a prefix length (`24`), false for `255.255.255.0`.
    #[serde(default)]
    pub prefix_written_as_len: bool,
    pub hostname: Option<String>,
    pub device: Option<String>,
    pub autoconf: Autoconf,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    /// `<dns0>:<dns1>` (kernel) or `<dns1>:<dns2>` (dracut), in order.
    pub dns: Vec<IpAddr>,
    pub ntp: Option<IpAddr>,
}

/// A malformed `ip=` value: which field, the offending text, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: `{text}` {reason}")]
pub struct IpConfigError {
    /// Grammar name of the field: `client`, `server`, `gateway`, `netmask`, `hostname`,
    /// `device`, `autoconf`, `dns0`, `dns1`, `ntp0`, `mtu`, `mac`, or `ip` for the whole value.
    pub field: &'static str,
    /// The text found in that field (may be empty).
    pub text: String,
    /// Why it is wrong, as a predicate: "is not an IPv4 address".
    pub reason: String,
}

impl IpConfigError {
    pub fn new(field: &'static str, text: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field,
            text: text.into(),
            reason: reason.into(),
        }
    }
}

impl Autoconf {
    /// Every accepted spelling, in the order they are documented.
    pub const ALL: [Autoconf; 14] = [
        Autoconf::Off,
        Autoconf::None,
        Autoconf::On,
        Autoconf::Any,
        Autoconf::Dhcp,
        Autoconf::Both,
        Autoconf::Bootp,
        Autoconf::Rarp,
        Autoconf::Dhcp6,
        Autoconf::Auto6,
        Autoconf::Either6,
        Autoconf::Link6,
        Autoconf::Ibft,
        Autoconf::SingleDhcp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Autoconf::Off => "off",
            Autoconf::None => "none",
            Autoconf::On => "on",
            Autoconf::Any => "any",
            Autoconf::Dhcp => "dhcp",
            Autoconf::Both => "both",
            Autoconf::Bootp => "bootp",
            Autoconf::Rarp => "rarp",
            Autoconf::Dhcp6 => "dhcp6",
            Autoconf::Auto6 => "auto6",
            Autoconf::Either6 => "either6",
            Autoconf::Link6 => "link6",
            Autoconf::Ibft => "ibft",
            Autoconf::SingleDhcp => "single-dhcp",
        }
    }

    /// No autoconfiguration: the address is static (or there is none).
    pub fn is_static(self) -> bool {
        matches!(self, Autoconf::Off | Autoconf::None)
    }

    /// Asks for an IPv4 lease (DHCP or its BOOTP/RARP ancestors, which we serve with DHCP).
    pub fn wants_dhcp4(self) -> bool {
        matches!(
            self,
            Autoconf::On
                | Autoconf::Any
                | Autoconf::Dhcp
                | Autoconf::Both
                | Autoconf::Bootp
                | Autoconf::Rarp
                | Autoconf::SingleDhcp
        )
    }
}

impl fmt::Display for Autoconf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Autoconf {
    type Err = IpConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Autoconf::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                IpConfigError::new(
                    "autoconf",
                    s,
                    "is not one of off, none, on, any, dhcp, both, bootp, rarp, dhcp6, auto6, either6, link6, ibft, single-dhcp",
                )
            })
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = IpConfigError;
    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IpConfigError::new("mac", s, "is not a MAC address (want 52:54:00:12:34:56)");
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| bad())?;
            n += 1;
        }
        if n != 6 {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Prefix length of a contiguous IPv4 netmask, `None` when the mask has holes.
pub fn netmask_to_prefix(mask: std::net::Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// The IPv4 netmask for a prefix length (`24` → `255.255.255.0`); `None` above 32.
pub fn prefix_to_netmask(len: u8) -> Option<std::net::Ipv4Addr> {
    (len <= 32).then(|| {
        let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        std::net::Ipv4Addr::from(m)
    })
}

impl IpConfig {
    /// A value of `form` with `autoconf` and every other field absent.
    pub fn new(form: IpForm, autoconf: Autoconf) -> Self {
        IpConfig {
            form,
            client: None,
            server: None,
            gateway: None,
            prefix_len: None,
            prefix_written_as_len: false,
            hostname: None,
            device: None,
            autoconf,
            mtu: None,
            mac: None,
            dns: Vec::new(),
            ntp: None,
        }
    }

    /// Checks a value built by hand (not parsed): `Ok` exactly when `Display` writes text
    /// that parses back to an equal value. The error names the first field that is invalid
    /// or cannot be written in `self.form` (e.g. a client in the bare form, MTU together with
    /// DNS servers in the positional form, three DNS servers).
    pub fn validate(&self) -> Result<(), IpConfigError> {
        let text = self.to_string();
        let back: IpConfig = text.parse()?;
        let differs = |field: &'static str, value: String| {
            Err(IpConfigError::new(
                field,
                value,
                format!("cannot be written in the {:?} form as `{text}`", self.form),
            ))
        };
        let opt = |a: &Option<IpAddr>| a.as_ref().map(fmt_addr).unwrap_or_default();
        if back.form != self.form {
            return differs("ip", format!("{:?}", self.form));
        }
        if back.client != self.client {
            return differs("client", opt(&self.client));
        }
        if back.server != self.server {
            return differs("server", opt(&self.server));
        }
        if back.gateway != self.gateway {
            return differs("gateway", opt(&self.gateway));
        }
        if back.prefix_len != self.prefix_len
            || back.prefix_written_as_len != self.prefix_written_as_len
        {
            return differs(
                "netmask",
                format!(
                    "{:?} (prefix_written_as_len {})",
                    self.prefix_len, self.prefix_written_as_len
                ),
            );
        }
        if back.hostname != self.hostname {
            return differs("hostname", self.hostname.clone().unwrap_or_default());
        }
        if back.device != self.device {
            return differs("device", self.device.clone().unwrap_or_default());
        }
        if back.autoconf != self.autoconf {
            return differs("autoconf", self.autoconf.to_string());
        }
        if back.mtu != self.mtu {
            return differs("mtu", self.mtu.map(|m| m.to_string()).unwrap_or_default());
        }
        if back.mac != self.mac {
            return differs("mac", self.mac.map(|m| m.to_string()).unwrap_or_default());
        }
        if back.dns != self.dns {
            let dns: Vec<String> = self.dns.iter().map(fmt_addr).collect();
            return differs("dns0", dns.join(","));
        }
        if back.ntp != self.ntp {
            return differs("ntp0", opt(&self.ntp));
        }
        Ok(())
    }
}

impl FromStr for IpConfig {
    type Err = IpConfigError;
    /// Parses the value after `ip=` (without the `ip=`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse::parse(s)
    }
}

impl fmt::Display for IpConfig {
    /// Writes the value after `ip=` in `self.form`. IPv6 in brackets, MAC in lowercase, the
    /// netmask as it was written (dotted or a length), the positional form always up to
    /// `<autoconf>` and then only as far as the last field present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = |a: &Option<IpAddr>| a.as_ref().map(fmt_addr).unwrap_or_default();
        match self.form {
            IpForm::Bare => f.write_str(self.autoconf.as_str()),
            IpForm::DeviceAutoconf => {
                write!(
                    f,
                    "{}:{}",
                    self.device.as_deref().unwrap_or(""),
                    self.autoconf
                )?;
                self.fmt_mtu_mac(f)
            }
            IpForm::Positional => {
                let netmask = match (self.prefix_len, self.client) {
                    (None, _) => String::new(),
                    (Some(len), Some(IpAddr::V4(_))) if !self.prefix_written_as_len => {
                        match prefix_to_netmask(len) {
                            Some(mask) => mask.to_string(),
                            None => len.to_string(),
                        }
                    }
                    (Some(len), _) => len.to_string(),
                };
                write!(
                    f,
                    "{}:{}:{}:{}:{}:{}:{}",
                    addr(&self.client),
                    addr(&self.server),
                    addr(&self.gateway),
                    netmask,
                    self.hostname.as_deref().unwrap_or(""),
                    self.device.as_deref().unwrap_or(""),
                    self.autoconf
                )?;
                if self.mtu.is_some() || self.mac.is_some() {
                    return self.fmt_mtu_mac(f);
                }
                let mut tail = vec![
                    addr(&self.dns.first().copied()),
                    addr(&self.dns.get(1).copied()),
                    addr(&self.ntp),
                ];
                while tail.last().is_some_and(|s| s.is_empty()) {
                    tail.pop();
                }
                for field in tail {
                    write!(f, ":{field}")?;
                }
                Ok(())
            }
        }
    }
}

impl IpConfig {
    fn fmt_mtu_mac(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mtu.is_none() && self.mac.is_none() {
            return Ok(());
        }
        write!(f, ":")?;
        if let Some(mtu) = self.mtu {
            write!(f, "{mtu}")?;
        }
        if let Some(mac) = self.mac {
            write!(f, ":{mac}")?;
        }
        Ok(())
    }
}
