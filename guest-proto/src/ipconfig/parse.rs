//! `FromStr for IpConfig`: split the value into fields, tell the three forms apart, then check
//! every field left to right so the first error reported is the leftmost bad field.

use super::fields::{
    all_digits, check_device_name, check_hostname, looks_like_address, parse_mtu, parse_netmask,
    parse_opt_addr, Family, Reference,
};
use super::{Autoconf, IpConfig, IpConfigError, IpForm, MacAddr};
use std::net::{IpAddr, Ipv6Addr};

/// The most fields the positional form has: `<client>` .. `<ntp0>`.
const MAX_POSITIONAL_FIELDS: usize = 10;

/// Splits on `:` outside `[...]`, so a bracketed IPv6 address stays one field.
pub(crate) fn split_fields(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_brackets = false;
    for (i, c) in s.char_indices() {
        match c {
            '[' => in_brackets = true,
            ']' => in_brackets = false,
            ':' if !in_brackets => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

pub(super) fn parse(s: &str) -> Result<IpConfig, IpConfigError> {
    if s.is_empty() {
        return Err(IpConfigError::new(
            "ip",
            s,
            "is empty (write `off` for no configuration)",
        ));
    }
    let t = split_fields(s);
    unbracketed_ipv6(&t)?;
    if t.len() == 1 && !looks_like_address(s) {
        let autoconf: Autoconf = s.parse()?;
        return Ok(IpConfig::new(IpForm::Bare, autoconf));
    }
    let is_word = |x: &str| !x.is_empty() && !looks_like_address(x);
    if t.len() >= 2 && is_word(t[0]) && is_word(t[1]) {
        return parse_device_autoconf(&t);
    }
    parse_positional(s, &t)
}

/// `2001:db8::2:...` written without brackets splits into nonsense fields; say what happened
/// instead of complaining about the pieces.
fn unbracketed_ipv6(t: &[&str]) -> Result<(), IpConfigError> {
    let first = t[0];
    if first.is_empty() || first.len() > 4 || !first.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    for k in (2..=t.len().min(8)).rev() {
        let joined = t[..k].join(":");
        if joined.parse::<Ipv6Addr>().is_ok() {
            return Err(IpConfigError::new(
                "client",
                joined.clone(),
                format!("is an IPv6 address without brackets (write [{joined}])"),
            ));
        }
    }
    Ok(())
}

/// `<iface>:<autoconf>[:[<mtu>][:<mac>]]`
fn parse_device_autoconf(t: &[&str]) -> Result<IpConfig, IpConfigError> {
    check_device_name(t[0])?;
    let autoconf: Autoconf = t[1].parse()?;
    let mut cfg = IpConfig::new(IpForm::DeviceAutoconf, autoconf);
    cfg.device = Some(t[0].to_string());
    parse_mtu_mac(&mut cfg, &t[2..])?;
    Ok(cfg)
}

/// `[<mtu>][:<mac>]`: the MAC keeps its colons, so everything after the MTU is the MAC.
fn parse_mtu_mac(cfg: &mut IpConfig, rest: &[&str]) -> Result<(), IpConfigError> {
    let Some((mtu, mac)) = rest.split_first() else {
        return Ok(());
    };
    if !mtu.is_empty() {
        cfg.mtu = Some(parse_mtu(mtu).map_err(|e| {
            if rest.join(":").parse::<MacAddr>().is_ok() {
                IpConfigError::new(
                    "mtu",
                    *mtu,
                    "is not an MTU (68..=65535); a MAC address here needs an empty MTU field before it (`<autoconf>::<mac>`)",
                )
            } else {
                e
            }
        })?);
    }
    let mac = mac.join(":");
    if !mac.is_empty() {
        cfg.mac = Some(mac.parse()?);
    }
    Ok(())
}

/// `<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>` then either
/// `:<dns0>:<dns1>:<ntp0>` or `:[<mtu>][:<mac>]`.
fn parse_positional(s: &str, t: &[&str]) -> Result<IpConfig, IpConfigError> {
    let field = |i: usize| t.get(i).copied().unwrap_or("");
    let mut cfg = IpConfig::new(IpForm::Positional, Autoconf::Off);

    let mut reference: Reference = None;
    cfg.client = parse_opt_addr("client", field(0), None).map_err(client_hint)?;
    if let Some(c) = cfg.client {
        if c.is_unspecified() {
            return Err(IpConfigError::new(
                "client",
                field(0),
                "is the unspecified address (leave the field empty instead)",
            ));
        }
        reference = Some((Family::of(&c), "client"));
    }
    cfg.server = parse_opt_addr("server", field(1), reference)?;
    if let (None, Some(a)) = (reference, cfg.server) {
        reference = Some((Family::of(&a), "server"));
    }
    cfg.gateway = parse_opt_addr("gateway", field(2), reference)?;

    let netmask = field(3);
    if !netmask.is_empty() {
        let Some(client) = cfg.client else {
            return Err(IpConfigError::new(
                "netmask",
                netmask,
                "needs a client address (the first field is empty)",
            ));
        };
        let (len, as_len) = parse_netmask("netmask", netmask, Family::of(&client))?;
        cfg.prefix_len = Some(len);
        cfg.prefix_written_as_len = as_len || client.is_ipv6();
    }

    let hostname = field(4);
    if !hostname.is_empty() {
        check_hostname(hostname)?;
        cfg.hostname = Some(hostname.to_string());
    }
    let device = field(5);
    if !device.is_empty() {
        check_device_name(device)?;
        cfg.device = Some(device.to_string());
    }
    // An omitted <autoconf> is "any" in nfsroot.rst, but with a client address the kernel
    // configures it statically, so that is what it means here.
    cfg.autoconf = match field(6) {
        "" if cfg.client.is_some() => Autoconf::Off,
        "" => Autoconf::Any,
        word => word.parse()?,
    };

    let extra = t.get(7..).unwrap_or(&[]);
    if is_dns_form(extra) {
        parse_dns_ntp(s, &mut cfg, extra)?;
    } else {
        parse_mtu_mac(&mut cfg, extra)?;
    }
    Ok(cfg)
}

fn client_hint(e: IpConfigError) -> IpConfigError {
    if e.text.len() <= 4 && e.text.bytes().all(|b| b.is_ascii_hexdigit()) && !all_digits(&e.text) {
        IpConfigError::new(
            e.field,
            e.text,
            format!(
                "{} (IPv6 addresses go in brackets: [2001:db8::2])",
                e.reason
            ),
        )
    } else {
        e
    }
}

/// After `<autoconf>`: an address (or empty then addresses) starts the DNS form; a number,
/// or empty then anything else, starts the MTU/MAC form.
fn is_dns_form(extra: &[&str]) -> bool {
    let Some((first, rest)) = extra.split_first() else {
        return false;
    };
    let addressy = |x: &&str| looks_like_address(x) || x.parse::<IpAddr>().is_ok();
    if first.is_empty() {
        !rest.is_empty()
            && rest.len() <= 2
            && rest.iter().any(|x| !x.is_empty())
            && rest.iter().all(|x| x.is_empty() || addressy(x))
    } else {
        addressy(first) || !first.starts_with(|c: char| c.is_ascii_digit())
    }
}

/// `<dns0>:<dns1>:<ntp0>` (dracut's `<dns1>:<dns2>` are the first two).
fn parse_dns_ntp(s: &str, cfg: &mut IpConfig, extra: &[&str]) -> Result<(), IpConfigError> {
    const NAMES: [&str; 3] = ["dns0", "dns1", "ntp0"];
    for (i, text) in extra.iter().enumerate() {
        let Some(name) = NAMES.get(i) else {
            return Err(IpConfigError::new(
                "ip",
                s,
                format!(
                    "has {} fields; the positional form has at most {MAX_POSITIONAL_FIELDS} (<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>:<ntp0>)",
                    7 + extra.len()
                ),
            ));
        };
        if let Some(a) = parse_opt_addr(name, text, None)? {
            if i < 2 {
                cfg.dns.push(a);
            } else {
                cfg.ntp = Some(a);
            }
        }
    }
    Ok(())
}
