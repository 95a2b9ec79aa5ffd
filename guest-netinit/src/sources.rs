//! Sources → one [`NetConfig`]: the kernel cmdline (`ip=`, `nameserver=`, `rd.route=`) and the
//! template, and the conflicts between them (DESIGN.md §3 step 1). Pure: the caller reads files.
//!
//! Rules (documented in the netinit contract):
//! - cmdline `ip=` with a client address wins **wholesale** over the template: the template is then
//!   not applied at all, and every field where it disagrees is reported in one [`Conflict`].
//! - `ip=` without an address but with a static autoconf (`ip=off`, `ip=eth0:none:1400`) configures
//!   nothing by itself (only MTU/MAC when given); the template, if any, is used.
//! - DHCPv4 (`ip=dhcp|on|any|both|bootp|rarp`, `ip=eth0:dhcp`, template `DHCP=yes|ipv4`) gives a
//!   config with `dhcp: true`; its static part (the template's `Address=`, `Gateway=`, `DNS=`,
//!   `[Route]`) is the **fallback**, applied when no lease comes in time. With `ip=dhcp` and a
//!   template for the same interface, the template is that fallback (not a conflict).
//!   IPv6-only autoconf (`dhcp6`, `auto6`, `either6`, `link6`, `ibft`) and template `DHCP=ipv6`
//!   without an address are bad config naming the source. A static client address with a DHCP
//!   autoconf is applied as static, with a warning (the static address wins, deterministically).
//! - `nameserver=` and `rd.route=` belong to the cmdline config; without an `ip=` config they are
//!   added to the template's config.
//! - interface: `ip=`'s device, else the template's `[Match] Name=`, else `eth0` (the old script).
//! - only the first `ip=` is used; others are warnings (one interface is configured).
//! - `ip=` without a netmask uses the kernel's classful default (10/8, 172.16/12 → /16, 192.168 → /24).

use crate::config::{Address, NetConfig, Route};
use crate::template::{self, Dhcp, Template, TemplateError};
use guest_proto::{Autoconf, ConfigSource, Conflict, IpConfig, KernelCmdline, RdRoute};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The default interface when nothing names one (the old script's default).
pub const DEFAULT_INTERFACE: &str = "eth0";

/// What the kernel cmdline says about the network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdlineInputs {
    pub ips: Vec<IpConfig>,
    pub nameservers: Vec<IpAddr>,
    pub routes: Vec<RdRoute>,
    /// `guest.NAME=value`, NAME as written.
    pub values: BTreeMap<String, String>,
}

impl CmdlineInputs {
    /// Extracts the network parameters from a kernel command line text.
    pub fn from_text(text: &str) -> Result<Self, ConfigError> {
        Self::from_cmdline(&KernelCmdline::parse(text))
    }

    pub fn from_cmdline(cmd: &KernelCmdline) -> Result<Self, ConfigError> {
        let e = |err: guest_proto::cmdline::CmdlineError| ConfigError::Cmdline(err.to_string());
        Ok(Self {
            ips: cmd.ip_configs().map_err(e)?,
            nameservers: cmd.nameservers().map_err(e)?,
            routes: cmd.rd_routes().map_err(e)?,
            values: cmd.template_values(),
        })
    }
}

/// A configuration source that cannot be used: exit code 3.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("kernel cmdline: {0}")]
    Cmdline(String),
    #[error("template {path}: {source}")]
    Template {
        path: String,
        #[source]
        source: TemplateError,
    },
    #[error("template {path}: {source}")]
    TemplateRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: not supported: guest-netinit does DHCPv4 (dhcp, on, any, both) or static addresses")]
    DhcpUnsupported { what: String },
}

/// The template as read from disk.
#[derive(Debug, Clone)]
pub struct TemplateInput {
    pub path: String,
    pub text: String,
}

/// The result of reading the sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// `None`: nothing configures an interface; nothing to do.
    pub config: Option<NetConfig>,
    pub conflicts: Vec<Conflict>,
    pub warnings: Vec<String>,
}

/// Builds the one configuration to apply from the cmdline and the (optional) template.
pub fn build(cmd: &CmdlineInputs, template: Option<&TemplateInput>) -> Result<Plan, ConfigError> {
    let mut plan = Plan::default();
    let tpl =
        match template {
            Some(t) => Some(template::parse(&t.text, &cmd.values).map_err(|source| {
                ConfigError::Template {
                    path: t.path.clone(),
                    source,
                }
            })?),
            None => None,
        };
    if let Some(t) = &tpl {
        plan.warnings
            .extend(t.warnings.iter().map(|w| format!("template: {w}")));
    }
    let tpl_name = tpl.as_ref().and_then(|t| t.name.clone());

    for extra in cmd.ips.iter().skip(1) {
        plan.warnings
            .push(format!("ip={extra} ignored: only the first ip= is used (guest-netinit configures one interface)"));
    }
    let from_cmdline = match cmd.ips.first() {
        Some(ip) => cmdline_config(ip, tpl_name.as_deref(), &mut plan.warnings)?,
        None => None,
    };

    let config = match (from_cmdline, tpl, template) {
        (Some(mut c), tpl, tpl_in) => {
            add_cmdline_extras(&mut c, cmd, &mut plan.warnings);
            if let (Some(t), Some(t_in)) = (tpl, tpl_in) {
                let same_iface = t.name.as_deref().unwrap_or(DEFAULT_INTERFACE) == c.interface;
                if c.dhcp && c.addresses.is_empty() && same_iface {
                    add_fallback(&mut c, t);
                } else if let Some(conflict) = template_conflict(&c, &t, &t_in.path) {
                    plan.conflicts.push(conflict);
                }
            }
            Some(c)
        }
        (None, Some(t), Some(t_in)) => {
            let mut c = template_config(t, &t_in.path, &mut plan.warnings)?;
            add_cmdline_extras(&mut c, cmd, &mut plan.warnings);
            Some(c)
        }
        (None, _, _) => {
            if !cmd.nameservers.is_empty() || !cmd.routes.is_empty() {
                plan.warnings
                    .push("nameserver= / rd.route= ignored: no ip= address and no template configure an interface".into());
            }
            None
        }
    };
    plan.config = config;
    Ok(plan)
}

fn empty_config(interface: String, source: ConfigSource) -> NetConfig {
    NetConfig {
        interface,
        source,
        mtu: None,
        mac: None,
        addresses: vec![],
        gateway: None,
        routes: vec![],
        dns: vec![],
        domains: vec![],
        hostname: None,
        dhcp: false,
    }
}

fn cmdline_config(
    ip: &IpConfig,
    tpl_name: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Option<NetConfig>, ConfigError> {
    if let Some(d) = &ip.device {
        template::check_interface_name(d)
            .map_err(|m| ConfigError::Cmdline(format!("ip={ip}: device: {m}")))?;
    }
    let interface = ip
        .device
        .clone()
        .or_else(|| tpl_name.map(str::to_string))
        .unwrap_or_else(|| DEFAULT_INTERFACE.to_string());
    let mut c = empty_config(interface, ConfigSource::Cmdline);
    c.mtu = ip.mtu;
    c.mac = ip.mac;
    match ip.client {
        None if ip.autoconf.is_static() => {
            if ip.mtu.is_none() && ip.mac.is_none() {
                return Ok(None);
            }
        }
        None if ip.autoconf.wants_dhcp4() => c.dhcp = true,
        None => {
            return Err(ConfigError::DhcpUnsupported {
                what: format!("ip={ip}: autoconf `{}`", ip.autoconf),
            })
        }
        Some(client) => {
            if !ip.autoconf.is_static() && !matches!(ip.autoconf, Autoconf::On | Autoconf::Any) {
                warnings.push(format!(
                    "ip={ip}: autoconf `{}` ignored, the static address {client} is applied (a static address wins over DHCP)",
                    ip.autoconf
                ));
            }
            let prefix_len = match ip.prefix_len {
                Some(p) => p,
                None => {
                    let p = classful_prefix(client);
                    warnings.push(format!(
                        "ip= has no netmask: using /{p} for {client} (the kernel's default)"
                    ));
                    p
                }
            };
            c.addresses.push(Address {
                addr: client,
                prefix_len,
            });
            c.gateway = ip.gateway.filter(|g| !g.is_unspecified());
        }
    }
    c.hostname = ip.hostname.clone();
    c.dns = ip.dns.clone();
    Ok(Some(c))
}

/// The kernel's default netmask when `ip=` gives none (`net/ipv4/ipconfig.c`): classful for IPv4.
pub fn classful_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(a) => match a.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
        IpAddr::V6(_) => 64,
    }
}

fn add_cmdline_extras(c: &mut NetConfig, cmd: &CmdlineInputs, warnings: &mut Vec<String>) {
    for ns in &cmd.nameservers {
        if !c.dns.contains(ns) {
            c.dns.push(*ns);
        }
    }
    for r in &cmd.routes {
        match &r.device {
            Some(dev) if *dev != c.interface => {
                warnings.push(format!(
                    "rd.route to {}/{} on {dev} ignored: configuring {}",
                    r.destination, r.prefix_len, c.interface
                ));
            }
            _ => {
                let route = Route {
                    destination: r.destination,
                    prefix_len: r.prefix_len,
                    gateway: r.gateway,
                    metric: None,
                };
                if !c.routes.contains(&route) {
                    c.routes.push(route);
                }
            }
        }
    }
}

fn template_config(
    t: Template,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<NetConfig, ConfigError> {
    let dhcp4 = matches!(t.dhcp, Dhcp::Yes | Dhcp::Ipv4);
    if t.dhcp == Dhcp::Ipv6 {
        if t.addresses.is_empty() {
            return Err(ConfigError::DhcpUnsupported {
                what: format!("template {path}: DHCP=ipv6"),
            });
        }
        warnings.push(format!(
            "template {path}: DHCP=ipv6 ignored (DHCPv4 only); the static Address= is applied"
        ));
    }
    let mut c = empty_config(
        t.name
            .clone()
            .unwrap_or_else(|| DEFAULT_INTERFACE.to_string()),
        ConfigSource::Template,
    );
    c.dhcp = dhcp4;
    add_fallback(&mut c, t);
    Ok(c)
}

/// Where a separate static fallback for DHCP on `iface` may be (under ROOT), in order: ours,
/// then the old image's networkd file.
pub fn fallback_files(iface: &str) -> [String; 2] {
    [
        format!("/etc/guest-netinit/{iface}-fallback.network"),
        format!("/etc/systemd/network/20-{iface}-fallback.network"),
    ]
}

/// Adds a fallback file's static part to a DHCP config `c` that has no static address. A file
/// for another interface is not used (the warning says so); one that does not parse is bad config.
pub fn add_fallback_file(
    c: &mut NetConfig,
    input: &TemplateInput,
    values: &BTreeMap<String, String>,
) -> Result<Option<String>, ConfigError> {
    let t = template::parse(&input.text, values).map_err(|source| ConfigError::Template {
        path: input.path.clone(),
        source,
    })?;
    if let Some(name) = t.name.as_deref().filter(|n| *n != c.interface) {
        return Ok(Some(format!(
            "fallback {}: configures {name}, not {}; not used",
            input.path, c.interface
        )));
    }
    if t.addresses.is_empty() {
        return Ok(Some(format!(
            "fallback {}: has no Address=; not used",
            input.path
        )));
    }
    add_fallback(c, t);
    Ok(None)
}

/// The template's static part into `c`: addresses and gateway (the whole config, or the DHCP
/// fallback), routes, DNS and domains added, MTU/MAC where `c` has none.
fn add_fallback(c: &mut NetConfig, t: Template) {
    c.mtu = c.mtu.or(t.mtu);
    c.mac = c.mac.or(t.mac);
    c.addresses = t.addresses;
    c.gateway = t.gateway;
    for r in t.routes {
        if !c.routes.contains(&r) {
            c.routes.push(r);
        }
    }
    for d in t.dns {
        if !c.dns.contains(&d) {
            c.dns.push(d);
        }
    }
    for d in t.domains {
        if !c.domains.contains(&d) {
            c.domains.push(d);
        }
    }
}

/// The template's disagreements with the applied cmdline config, or `None` when it agrees
/// (says nothing the cmdline contradicts).
fn template_conflict(c: &NetConfig, t: &Template, path: &str) -> Option<Conflict> {
    let resolution = "cmdline ip= wins; the template is not applied".to_string();
    let name = t.name.as_deref().unwrap_or(DEFAULT_INTERFACE);
    if name != c.interface {
        return Some(Conflict {
            source: "template".into(),
            path: Some(path.into()),
            detail: format!("configures {name}, cmdline ip= configures {}", c.interface),
            resolution,
        });
    }
    let mut diffs = Vec::new();
    let join = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(" ");
    if !t.addresses.is_empty() && t.addresses != c.addresses {
        diffs.push(format!(
            "Address={} vs ip= {}",
            join(&mut t.addresses.iter().map(|a| a.to_string())),
            join(&mut c.addresses.iter().map(|a| a.to_string()))
        ));
    }
    if t.gateway.is_some() && t.gateway != c.gateway {
        diffs.push(format!(
            "Gateway={} vs ip= {}",
            fmt_opt(t.gateway),
            fmt_opt(c.gateway)
        ));
    }
    if !t.routes.is_empty() && t.routes != c.routes {
        diffs.push(format!(
            "[Route] {}",
            join(&mut t.routes.iter().map(|r| r.to_string()))
        ));
    }
    if !t.dns.is_empty() && t.dns != c.dns {
        diffs.push(format!(
            "DNS={}",
            join(&mut t.dns.iter().map(|a| a.to_string()))
        ));
    }
    if !t.domains.is_empty() && t.domains != c.domains {
        diffs.push(format!("Domains={}", t.domains.join(" ")));
    }
    if t.mtu.is_some() && t.mtu != c.mtu {
        diffs.push(format!("MTUBytes={}", fmt_opt(t.mtu)));
    }
    if t.mac.is_some() && t.mac != c.mac {
        diffs.push(format!("MACAddress={}", fmt_opt(t.mac)));
    }
    if t.dhcp.enabled() {
        diffs.push(format!("DHCP={}", t.dhcp.as_str()));
    }
    (!diffs.is_empty()).then(|| Conflict {
        source: "template".into(),
        path: Some(path.into()),
        detail: format!("{name}: {}", diffs.join("; ")),
        resolution,
    })
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "(none)".into())
}

#[cfg(test)]
#[path = "sources_tests.rs"]
mod tests;
