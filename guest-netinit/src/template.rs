//! The template: a systemd `.network` file subset with `__NAME__` placeholders, so one golden
//! image serves every VM (DESIGN.md §3, source 2). Pure: text + values in, [`Template`] out.
//!
//! Supported:
//! - `[Match] Name=` (exactly one interface name; no globs, no lists: we must know what to wait for)
//! - `[Link] MTUBytes= MACAddress=`
//! - `[Network] Address=` (repeatable, CIDR), `Gateway=` (one per address family), `DNS=` and
//!   `Domains=` (repeatable, space-separated lists), `DHCP=`
//! - `[Route] Destination= Gateway= Metric=` (repeatable sections; no Destination = default route)
//! - comments (`#`, `;` as first non-blank character), blank lines; an empty assignment (`DNS=`)
//!   resets that key, like networkd.
//!
//! Errors and warnings, decided so that a typo never silently drops configuration:
//! - a section or key networkd does not know (a typo such as `Adress=`) is an **error**;
//! - a section or key networkd knows but guest-netinit does not apply (`LinkLocalAddressing=`,
//!   `[DHCPv4]`) is a **warning** naming the line, and is skipped (its placeholders are not filled);
//! - `[Address]` sections are an error: skipping one would drop an address.
//!
//! Placeholders: `__NAME__` where NAME is ASCII letters/digits in `_`-separated words
//! (`__VM_IP__`, `__GW__`); it is filled from the cmdline parameter `guest.name=value`,
//! matching NAME **case-insensitively** (`guest.vm_ip=` fills `__VM_IP__`, so does `guest.VM_IP=`).
//! Filled text is not scanned again. A placeholder left unfilled is an error naming it and its line.
//! Comments are not scanned, so a comment may mention `__VM_IP__` freely.

use crate::config::{Address, Route};
use guest_proto::MacAddr;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The template's content, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    /// `[Match] Name=`; `None` when absent (the caller defaults to `eth0`).
    pub name: Option<String>,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub addresses: Vec<Address>,
    /// The first `Gateway=` of `[Network]`; a second one of the other family becomes a default route.
    pub gateway: Option<IpAddr>,
    pub routes: Vec<Route>,
    pub dns: Vec<IpAddr>,
    pub domains: Vec<String>,
    pub dhcp: Dhcp,
    /// Skipped lines, one sentence each, with the line number.
    pub warnings: Vec<String>,
}

/// `DHCP=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dhcp {
    #[default]
    No,
    Yes,
    Ipv4,
    Ipv6,
}

impl Dhcp {
    pub fn enabled(self) -> bool {
        self != Dhcp::No
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dhcp::No => "no",
            Dhcp::Yes => "yes",
            Dhcp::Ipv4 => "ipv4",
            Dhcp::Ipv6 => "ipv6",
        }
    }
}

/// A template error: the line (1-based), the key when there is one, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {}{message}", key.as_ref().map(|k| format!("{k}=: ")).unwrap_or_default())]
pub struct TemplateError {
    pub line: usize,
    pub key: Option<String>,
    pub message: String,
}

impl TemplateError {
    fn new(line: usize, key: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            line,
            key: key.map(str::to_string),
            message: message.into(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Match,
    Link,
    Network,
    Route,
    /// A networkd section we do not apply: its keys are skipped.
    Ignored,
}

mod keys;
use keys::{IGNORED_LINK, IGNORED_MATCH, IGNORED_NETWORK, IGNORED_ROUTE, IGNORED_SECTIONS};

/// A `[Route]` section being read.
struct RouteDraft {
    line: usize,
    destination: Option<(IpAddr, u8)>,
    gateway: Option<IpAddr>,
    metric: Option<u32>,
}

/// Parses `text`, filling placeholders from `values` (keys as given by
/// `guest.NAME=value`; matched case-insensitively).
pub fn parse(text: &str, values: &BTreeMap<String, String>) -> Result<Template, TemplateError> {
    let values: BTreeMap<String, &str> = values
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    let mut t = Template::default();
    let mut section = Section::None;
    let mut route: Option<RouteDraft> = None;
    let mut other_family_gw: Option<(usize, IpAddr)> = None;

    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(TemplateError::new(
                    n,
                    None,
                    format!("`{line}`: a section header must end with `]`"),
                ));
            };
            if let Some(r) = route.take() {
                t.routes.push(finish_route(r)?);
            }
            section = match name {
                "Match" => Section::Match,
                "Link" => Section::Link,
                "Network" => Section::Network,
                "Route" => {
                    route = Some(RouteDraft {
                        line: n,
                        destination: None,
                        gateway: None,
                        metric: None,
                    });
                    Section::Route
                }
                s if IGNORED_SECTIONS.contains(&s) => {
                    t.warnings.push(format!(
                        "line {n}: section [{s}] is not supported by guest-netinit; skipped"
                    ));
                    Section::Ignored
                }
                s => {
                    return Err(TemplateError::new(
                        n,
                        None,
                        format!(
                        "unknown section [{s}] (supported: [Match], [Link], [Network], [Route])"
                    ),
                    ))
                }
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(TemplateError::new(
                n,
                None,
                format!("`{line}` is not `Key=Value` or `[Section]`"),
            ));
        };
        let key = key.trim();
        let value = value.trim();
        let ignored: &[&str] = match section {
            Section::None => {
                return Err(TemplateError::new(
                    n,
                    Some(key),
                    "assignment outside of any section",
                ));
            }
            Section::Ignored => continue,
            Section::Match => IGNORED_MATCH,
            Section::Link => IGNORED_LINK,
            Section::Network => IGNORED_NETWORK,
            Section::Route => IGNORED_ROUTE,
        };
        let known = match section {
            Section::Match => key == "Name",
            Section::Link => matches!(key, "MTUBytes" | "MACAddress"),
            Section::Network => matches!(key, "Address" | "Gateway" | "DNS" | "Domains" | "DHCP"),
            Section::Route => matches!(key, "Destination" | "Gateway" | "Metric"),
            Section::None | Section::Ignored => false,
        };
        if !known {
            if ignored.contains(&key) {
                t.warnings.push(format!(
                    "line {n}: {key}= is not supported by guest-netinit; skipped"
                ));
                continue;
            }
            return Err(TemplateError::new(
                n,
                Some(key),
                format!("unknown key in [{}]", section_name(section)),
            ));
        }
        let value = fill(value, &values).map_err(|name| {
            TemplateError::new(
                n,
                Some(key),
                format!(
                    "placeholder __{name}__ is not filled: the kernel cmdline has no guest.{}=",
                    name.to_ascii_lowercase()
                ),
            )
        })?;
        let err = |msg: String| TemplateError::new(n, Some(key), msg);
        match (section, key) {
            (Section::Match, "Name") => t.name = parse_name(&value).map_err(err)?,
            (Section::Link, "MTUBytes") => t.mtu = opt(&value, parse_mtu).map_err(err)?,
            (Section::Link, "MACAddress") => {
                t.mac = opt(&value, |v| {
                    v.parse::<MacAddr>()
                        .map_err(|_| format!("`{v}` is not a MAC address"))
                })
                .map_err(err)?
            }
            (Section::Network, "Address") => {
                if value.is_empty() {
                    t.addresses.clear();
                } else {
                    let (addr, prefix_len) = parse_cidr(&value, true).map_err(err)?;
                    if addr.is_unspecified() {
                        return Err(err(format!(
                            "`{value}`: address pools (0.0.0.0, ::) are not supported"
                        )));
                    }
                    t.addresses.push(Address { addr, prefix_len });
                }
            }
            (Section::Network, "Gateway") => {
                if value.is_empty() {
                    t.gateway = None;
                    other_family_gw = None;
                    continue;
                }
                let gw = parse_ip(&value).map_err(err)?;
                match t.gateway {
                    None => t.gateway = Some(gw),
                    Some(first) if first.is_ipv4() != gw.is_ipv4() && other_family_gw.is_none() => {
                        other_family_gw = Some((n, gw))
                    }
                    Some(_) => {
                        return Err(err(format!(
                            "a second {} gateway `{value}`: one Gateway= per address family is supported",
                            if gw.is_ipv4() { "IPv4" } else { "IPv6" }
                        )))
                    }
                }
            }
            (Section::Network, "DNS") => {
                if value.is_empty() {
                    t.dns.clear();
                }
                for word in value.split_whitespace() {
                    t.dns.push(parse_ip(word).map_err(err)?);
                }
            }
            (Section::Network, "Domains") => {
                if value.is_empty() {
                    t.domains.clear();
                }
                for word in value.split_whitespace() {
                    t.domains.push(parse_domain(word).map_err(err)?);
                }
            }
            (Section::Network, "DHCP") => t.dhcp = parse_dhcp(&value).map_err(err)?,
            (Section::Route, _) => {
                let Some(r) = route.as_mut() else {
                    return Err(TemplateError::new(
                        n,
                        Some(key),
                        "internal: [Route] without a draft",
                    ));
                };
                match key {
                    "Destination" => {
                        r.destination = opt(&value, |v| parse_cidr(v, false)).map_err(err)?
                    }
                    "Gateway" => r.gateway = opt(&value, parse_ip).map_err(err)?,
                    _ => {
                        r.metric = opt(&value, |v| {
                            v.parse::<u32>()
                                .map_err(|_| format!("`{v}` is not a number 0..4294967295"))
                        })
                        .map_err(err)?
                    }
                }
            }
            _ => return Err(err("internal: known key without a handler".into())),
        }
    }
    if let Some(r) = route.take() {
        t.routes.push(finish_route(r)?);
    }
    if let Some((_, gw)) = other_family_gw {
        let destination = if gw.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        t.routes.push(Route {
            destination,
            prefix_len: 0,
            gateway: Some(gw),
            metric: None,
        });
    }
    Ok(t)
}

fn section_name(s: Section) -> &'static str {
    match s {
        Section::Match => "Match",
        Section::Link => "Link",
        Section::Network => "Network",
        Section::Route => "Route",
        Section::None | Section::Ignored => "?",
    }
}

/// Replaces every `__NAME__` in `value`; `Err(NAME)` for the first one without a value.
pub fn fill(value: &str, values: &BTreeMap<String, &str>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find("__") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match placeholder_name(after) {
            Some(name) => {
                match values.get(&name.to_ascii_lowercase()) {
                    Some(v) => out.push_str(v),
                    None => return Err(name.to_string()),
                }
                rest = &after[name.len() + 2..];
            }
            None => {
                out.push('_');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// If `s` starts with `NAME__` (NAME = alphanumeric words joined by single `_`), NAME.
pub(crate) fn placeholder_name(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        if i == start {
            return None;
        }
        // now at `_` or end
        if b.get(i) == Some(&b'_') && b.get(i + 1) == Some(&b'_') {
            return Some(&s[..i]);
        }
        if b.get(i) == Some(&b'_') {
            i += 1;
            continue;
        }
        return None;
    }
}

fn opt<T>(value: &str, f: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if value.is_empty() {
        Ok(None)
    } else {
        f(value).map(Some)
    }
}

fn parse_name(v: &str) -> Result<Option<String>, String> {
    let words: Vec<&str> = v.split_whitespace().collect();
    match words.as_slice() {
        [] => Ok(None),
        [name] => check_interface_name(name).map(|()| Some((*name).to_string())),
        _ => Err(format!(
            "`{v}`: give exactly one interface name, not a list"
        )),
    }
}

/// An interface name guest-netinit can wait for and hand to networkd's `Name=` (a glob there):
/// 1..15 characters, none of `* ? [ ! / :` or whitespace.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 15
        || name.contains(['*', '?', '[', '!', '/', ':', '\\'])
        || name.chars().any(char::is_whitespace)
    {
        Err(format!(
            "`{name}`: give exactly one interface name (at most 15 characters, no glob, no `!`)"
        ))
    } else if let Some(p) = first_placeholder(name) {
        // The handoff file names the interface; read back as a template, `__P__` would be a
        // placeholder again. A name like this is a host-side template nobody filled in.
        Err(format!(
            "`{name}`: contains `__{p}__`, a placeholder nobody filled in (not an interface name)"
        ))
    } else {
        Ok(())
    }
}

/// The first `__NAME__` placeholder in `s`, if any.
fn first_placeholder(s: &str) -> Option<&str> {
    let mut rest = s;
    while let Some(at) = rest.find("__") {
        let after = &rest[at + 2..];
        if let Some(name) = placeholder_name(after) {
            return Some(name);
        }
        rest = &rest[at + 1..];
    }
    None
}

fn parse_mtu(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(m) if (68..=65535).contains(&m) => Ok(m),
        _ => Err(format!("`{v}` is not an MTU (a number 68..65535)")),
    }
}

pub(crate) fn parse_ip(v: &str) -> Result<IpAddr, String> {
    v.parse::<IpAddr>()
        .map_err(|_| format!("`{v}` is not an IP address"))
}

/// `addr/len`; with `need_len` false a bare address is a host route (/32, /128).
pub(crate) fn parse_cidr(v: &str, need_len: bool) -> Result<(IpAddr, u8), String> {
    let (a, len) = match v.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None if need_len => {
            return Err(format!(
                "`{v}` has no prefix length (write it as 192.168.100.2/24)"
            ))
        }
        None => (v, None),
    };
    let addr = parse_ip(a)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(l) if l <= max => l,
            _ => return Err(format!("`{v}`: prefix length `{l}` is not 0..{max}")),
        },
    };
    Ok((addr, len))
}

fn parse_domain(v: &str) -> Result<String, String> {
    let body = v.strip_prefix('~').unwrap_or(v);
    let ok = (body == "." || !body.is_empty())
        && body.len() <= 253
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("`{v}` is not a domain name"))
    }
}

fn parse_dhcp(v: &str) -> Result<Dhcp, String> {
    Ok(match v {
        "" | "no" | "false" | "off" | "0" => Dhcp::No,
        "yes" | "true" | "on" | "1" => Dhcp::Yes,
        "ipv4" => Dhcp::Ipv4,
        "ipv6" => Dhcp::Ipv6,
        _ => return Err(format!("`{v}` is not one of yes, no, ipv4, ipv6")),
    })
}

fn finish_route(r: RouteDraft) -> Result<Route, TemplateError> {
    let err = |m: String| TemplateError::new(r.line, None, format!("[Route]: {m}"));
    let (destination, prefix_len) = match (r.destination, r.gateway) {
        (Some(d), _) => d,
        (None, Some(gw)) if gw.is_ipv4() => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        (None, Some(_)) => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        (None, None) => return Err(err("needs Destination= or Gateway=".into())),
    };
    if let Some(gw) = r.gateway {
        if gw.is_ipv4() != destination.is_ipv4() {
            return Err(err(format!(
                "Gateway={gw} and Destination={destination} are different address families"
            )));
        }
    }
    if !host_bits_clear(destination, prefix_len) {
        return Err(err(format!(
            "Destination={destination}/{prefix_len} has host bits set (did you mean {}/{prefix_len}?)",
            network_of(destination, prefix_len)
        )));
    }
    Ok(Route {
        destination,
        prefix_len,
        gateway: r.gateway,
        metric: r.metric,
    })
}

/// The network address of `addr/len` (host bits cleared).
pub fn network_of(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

fn host_bits_clear(addr: IpAddr, len: u8) -> bool {
    network_of(addr, len) == addr
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
