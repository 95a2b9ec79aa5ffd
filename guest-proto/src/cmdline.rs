//! The kernel command line as guestkit reads it: `ip=`, `nameserver=`, `rd.route=`,
//! `guest.NAME=value` template values and any other `key=value`.
//!
//! Tokenised like the kernel does (`lib/cmdline.c` `next_arg`): whitespace separates
//! parameters, double quotes group (`key="a b"`), quotes are removed from the value.

mod rd_route;

pub use rd_route::RdRoute;

use crate::ipconfig::{parse_addr, IpConfig, IpConfigError};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// A tokenised kernel command line, parameters in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    /// `(key, value)`; `value` is `None` for a bare flag such as `quiet`.
    pub params: Vec<(String, Option<String>)>,
}

/// A command-line parameter guestkit reads is malformed: which parameter, its value, and the
/// field error inside it ("ip=192.168.100.5::undefined:...: gateway: `undefined` is not an
/// IPv4 address").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}={value}: {error}")]
pub struct CmdlineError {
    /// `ip`, `nameserver` or `rd.route`.
    pub param: &'static str,
    /// The whole value after `=` (empty for a flag without `=`).
    pub value: String,
    /// What is wrong inside it. Not a `source()`: its text is already in this Display.
    pub error: IpConfigError,
}

/// The kernel's `isspace` on ASCII: space, `\t`, `\n`, `\v`, `\f`, `\r`.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

impl KernelCmdline {
    /// Tokenises like the kernel's `next_arg`: a parameter ends at whitespace outside double
    /// quotes; a quote at the start of the parameter or of its value is removed with the
    /// parameter's last character when that is a quote; an unterminated quote runs to the end.
    /// Parameters that are empty after that (`""`) are dropped. Never fails.
    pub fn parse(s: &str) -> KernelCmdline {
        let mut params = Vec::new();
        let mut rest = s.trim_start_matches(is_space);
        while !rest.is_empty() {
            let mut in_quote = false;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                if is_space(c) && !in_quote {
                    end = i;
                    break;
                }
                if c == '"' {
                    in_quote = !in_quote;
                }
            }
            let (token, after) = rest.split_at(end);
            if let Some(param) = split_param(token) {
                params.push(param);
            }
            rest = after.trim_start_matches(is_space);
        }
        KernelCmdline { params }
    }

    /// The value of the last `key=` (the kernel lets the last one win); `None` when absent or
    /// when the last occurrence is a flag without `=`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value of `key=`, in order (flags without `=` are skipped).
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(k, _)| k == key)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }

    /// True when `key` appears at all, with or without a value (`quiet`).
    pub fn contains(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| k == key)
    }

    /// Every `ip=`, in order; the first malformed one is an error. A bare `ip` flag is an
    /// error too (the kernel would read it as "no value").
    pub fn ip_configs(&self) -> Result<Vec<IpConfig>, CmdlineError> {
        self.values_of("ip")
            .map(|v| v.parse().map_err(|e| err("ip", v, e)))
            .collect()
    }

    /// Every `nameserver=` in order: dotted IPv4 or IPv6 (brackets optional).
    pub fn nameservers(&self) -> Result<Vec<IpAddr>, CmdlineError> {
        self.values_of("nameserver")
            .map(|v| parse_nameserver(v).map_err(|e| err("nameserver", v, e)))
            .collect()
    }

    /// Every `rd.route=` in order.
    pub fn rd_routes(&self) -> Result<Vec<RdRoute>, CmdlineError> {
        self.values_of("rd.route")
            .map(|v| v.parse().map_err(|e| err("rd.route", v, e)))
            .collect()
    }

    /// `guest.NAME=value` as `NAME` (ASCII-uppercased, so `guest.vm_ip=` fills `__VM_IP__`)
    /// → value; the last occurrence wins. Flags without `=` and an empty NAME are skipped.
    pub fn template_values(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.params {
            if let (Some(name), Some(v)) = (k.strip_prefix("guest."), v) {
                if !name.is_empty() {
                    out.insert(name.to_ascii_uppercase(), v.clone());
                }
            }
        }
        out
    }

    /// True when `Display` writes text that parses back to `self`: no `"` in any key or value,
    /// no `=` in a key, no parameter with an empty key and no value. Always true for a parsed
    /// line without quotes inside values.
    pub fn can_display(&self) -> bool {
        self.params.iter().all(|(k, v)| {
            let bad_key = k.contains(['"', '=']) || (k.is_empty() && v.is_none());
            let bad_value = v.as_deref().is_some_and(|v| v.contains('"'));
            !bad_key && !bad_value
        })
    }

    /// Values of `key`, a flag counting as an empty value so it is reported, not ignored.
    fn values_of<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }
}

fn err(param: &'static str, value: &str, error: IpConfigError) -> CmdlineError {
    CmdlineError {
        param,
        value: value.to_string(),
        error,
    }
}

/// One token of the command line → `(key, value)`, following `next_arg`'s quote removal.
fn split_param(token: &str) -> Option<(String, Option<String>)> {
    let (quoted, body) = match token.strip_prefix('"') {
        Some(b) => (true, b),
        None => (false, token),
    };
    let mut stripped_end = false;
    let param = match body.split_once('=') {
        None => body,
        Some((key, value)) => {
            let value = match value.strip_prefix('"') {
                Some(v) => match v.strip_suffix('"') {
                    Some(v) => {
                        stripped_end = true;
                        v
                    }
                    None => v,
                },
                None => value,
            };
            let value = if quoted && !stripped_end {
                value.strip_suffix('"').unwrap_or(value)
            } else {
                value
            };
            return Some((key.to_string(), Some(value.to_string())));
        }
    };
    let key = if quoted {
        param.strip_suffix('"').unwrap_or(param)
    } else {
        param
    };
    (!key.is_empty()).then(|| (key.to_string(), None))
}

fn parse_nameserver(v: &str) -> Result<IpAddr, IpConfigError> {
    if let Ok(a) = v.parse::<Ipv6Addr>() {
        return Ok(IpAddr::V6(a));
    }
    parse_addr("nameserver", v, None)
}

impl fmt::Display for KernelCmdline {
    /// Space-separated; a parameter whose key has whitespace is quoted whole (`"a b=c"`), a
    /// value with whitespace is quoted (`key="a b"`). See [`KernelCmdline::can_display`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let key_space = k.contains(is_space);
            let value_space = v.as_deref().is_some_and(|v| v.contains(is_space));
            match v {
                None if key_space => write!(f, "\"{k}\"")?,
                None => f.write_str(k)?,
                Some(v) if key_space => write!(f, "\"{k}={v}\"")?,
                Some(v) if value_space => write!(f, "{k}=\"{v}\"")?,
                Some(v) => write!(f, "{k}={v}")?,
            }
        }
        Ok(())
    }
}

impl FromStr for KernelCmdline {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(KernelCmdline::parse(s))
    }
}
