//! Checking one field at a time: addresses, netmasks, names, MTU.
//!
//! Shared by the `ip=` parser and by `nameserver=` / `rd.route=` in `cmdline`, so every
//! parameter reports a bad address the same way: the field, the text, and why.

use super::IpConfigError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family, used to check that the fields of one `ip=` agree with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn of(a: &IpAddr) -> Family {
        match a {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    pub(crate) fn max_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// The family an earlier field fixed, and that field's name (for the error message).
pub(crate) type Reference = Option<(Family, &'static str)>;

/// True when `s` is meant as an address rather than a word: bracketed, or a digit then a dot
/// somewhere (`192.168.100.X` is a broken address, not an interface name).
pub(crate) fn looks_like_address(s: &str) -> bool {
    s.starts_with('[') || (s.starts_with(|c: char| c.is_ascii_digit()) && s.contains('.'))
}

pub(crate) fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Writes an address the way the grammar wants it: IPv6 in brackets.
pub(crate) fn fmt_addr(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Parses a dotted IPv4 or a bracketed IPv6 address, checking it against `reference`.
pub(crate) fn parse_addr(
    field: &'static str,
    text: &str,
    reference: Reference,
) -> Result<IpAddr, IpConfigError> {
    let addr = if let Some(inner) = text.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return Err(IpConfigError::new(
                field,
                text,
                "is not an IPv6 address (missing the closing `]`)",
            ));
        };
        match inner.parse::<Ipv6Addr>() {
            Ok(a) => IpAddr::V6(a),
            Err(_) => return Err(IpConfigError::new(field, text, "is not an IPv6 address")),
        }
    } else {
        match text.parse::<Ipv4Addr>() {
            Ok(a) => IpAddr::V4(a),
            Err(_) => {
                return Err(IpConfigError::new(
                    field,
                    text,
                    not_an_address(text, reference),
                ))
            }
        }
    };
    if let Some((family, from)) = reference {
        let got = Family::of(&addr);
        if got != family {
            return Err(IpConfigError::new(
                field,
                text,
                format!(
                    "is an {} address but the {from} is {}",
                    got.name(),
                    family.name()
                ),
            ));
        }
    }
    Ok(addr)
}

/// Parses an optional address field: empty means absent.
pub(crate) fn parse_opt_addr(
    field: &'static str,
    text: &str,
    reference: Reference,
) -> Result<Option<IpAddr>, IpConfigError> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse_addr(field, text, reference).map(Some)
    }
}

/// The reason for a text that is no address at all, worded for the family expected.
fn not_an_address(text: &str, reference: Reference) -> String {
    if text.parse::<Ipv6Addr>().is_ok() {
        return format!("is an IPv6 address without brackets (write [{text}])");
    }
    match reference {
        Some((Family::V4, _)) => "is not an IPv4 address".into(),
        Some((Family::V6, _)) => "is not a bracketed IPv6 address ([2001:db8::1])".into(),
        None if text.starts_with(|c: char| c.is_ascii_digit()) => "is not an IPv4 address".into(),
        None => "is not an IP address".into(),
    }
}

/// Parses `<netmask>`: a prefix length, or (IPv4 only) a dotted netmask without holes.
/// Returns the prefix length and whether it was written as a length.
pub(crate) fn parse_netmask(
    field: &'static str,
    text: &str,
    family: Family,
) -> Result<(u8, bool), IpConfigError> {
    let max = family.max_prefix();
    if all_digits(text) {
        let len = if text.len() <= 3 {
            text.parse::<u16>().ok()
        } else {
            None
        };
        return match len {
            Some(n) if n <= u16::from(max) => Ok((n as u8, true)),
            _ => Err(IpConfigError::new(
                field,
                text,
                format!("is not a prefix length for {} (0..={max})", family.name()),
            )),
        };
    }
    if family == Family::V6 {
        return Err(IpConfigError::new(
            field,
            text,
            "is not a prefix length for IPv6 (0..=128)",
        ));
    }
    let mask: Ipv4Addr = text.parse().map_err(|_| {
        IpConfigError::new(
            field,
            text,
            "is not a netmask (255.255.255.0) or a prefix length (24)",
        )
    })?;
    match super::netmask_to_prefix(mask) {
        Some(len) => Ok((len, false)),
        None => Err(IpConfigError::new(
            field,
            text,
            "is not a contiguous netmask (its one bits must come first, as in 255.255.255.0)",
        )),
    }
}

/// Parses `<mtu>`: 68 (the IPv4 minimum) to 65535.
pub(crate) fn parse_mtu(text: &str) -> Result<u32, IpConfigError> {
    let bad = || IpConfigError::new("mtu", text, "is not an MTU (a number in 68..=65535)");
    if !all_digits(text) || text.len() > 5 {
        return Err(bad());
    }
    match text.parse::<u32>() {
        Ok(n) if (68..=65535).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

/// Checks an interface name the way the kernel's `dev_valid_name` does: 1 to 15 bytes
/// (IFNAMSIZ - 1), not `.` or `..`, no `/`, `:`, whitespace or NUL; and, because `ip=` uses
/// them to bracket IPv6 addresses, no `[` or `]`.
pub fn check_device_name(name: &str) -> Result<(), IpConfigError> {
    let bad = |why: &str| Err(IpConfigError::new("device", name, why));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > 15 {
        return bad("is not an interface name (at most 15 bytes)");
    }
    if name == "." || name == ".." {
        return bad("is not an interface name");
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | ':' | '\0' | '[' | ']') || c.is_whitespace())
    {
        return bad(&format!(
            "is not an interface name (it contains {c:?}; `/`, `:`, `[`, `]`, NUL and whitespace are not allowed)"
        ));
    }
    Ok(())
}

/// Checks a hostname: RFC 1123 labels (letters, digits, `-`, not at either end of a label,
/// 1 to 63 characters) joined by `.`, at most 64 characters (the kernel's `__NEW_UTS_LEN`).
pub fn check_hostname(name: &str) -> Result<(), IpConfigError> {
    let bad = |why: String| Err(IpConfigError::new("hostname", name, why));
    if name.len() > 64 {
        return bad("is longer than 64 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return bad("has an empty label (two dots, or a dot at either end)".into());
        }
        if label.len() > 63 {
            return bad(format!("has a label longer than 63 characters (`{label}`)"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return bad(format!(
                "is not a hostname (it contains {c:?}; only letters, digits, `-` and `.` are allowed)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad(format!(
                "has a label starting or ending with `-` (`{label}`)"
            ));
        }
    }
    Ok(())
}
