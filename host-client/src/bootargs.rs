//! `BootArgs`: the kernel command line, and the Firecracker config fragment, from typed values.
//!
//! The old host built `ip=192.168.100.X::undefined:undefined::eth0:off` by string
//! concatenation (failure F3). Here every part is a typed value checked before anything is
//! written: the `ip=` value is a `guest_proto::IpConfig` (the same type guest-netinit parses
//! with, so the two sides cannot disagree on the grammar), and free-form parameters are
//! checked for empty, whitespace-in-key, quote and `undefined`/`null` text.

use guest_proto::{IpConfig, IpConfigError, IpForm, KernelCmdline, MacAddr};
use serde_json::{json, Value};
use std::fmt;
use std::net::IpAddr;

/// Keys with a typed field: they cannot be passed as extra parameters.
const TYPED_KEYS: [&str; 3] = ["ip", "console", "root"];
/// Text a broken template leaves behind.
const PLACEHOLDERS: [&str; 3] = ["undefined", "null", "nan"];

/// A kernel command line under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootArgs {
    /// `console=` (e.g. `ttyS0`, `ttyS0,115200`).
    pub console: Option<String>,
    /// `root=` (e.g. `/dev/vda`).
    pub root: Option<String>,
    /// `ip=`.
    pub ip: Option<IpConfig>,
    /// Other parameters in order; `None` for a flag such as `quiet`.
    pub extra: Vec<(String, Option<String>)>,
}

/// A value that cannot go on the command line: which parameter and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootArgsError {
    #[error("{param}: `{value}` {reason}")]
    BadValue {
        param: String,
        value: String,
        reason: &'static str,
    },
    #[error("ip: {0}")]
    Ip(#[from] IpConfigError),
    #[error("--ip `{0}` is not ADDRESS/PREFIX (e.g. 192.168.100.9/24)")]
    BadCidr(String),
    #[error("{0} nameservers given; the kernel's ip= holds at most 2")]
    TooManyDns(usize),
    #[error("`{0}` has a typed option (--{0}); it cannot be an extra parameter")]
    TypedKey(String),
}

fn bad(param: &str, value: &str, reason: &'static str) -> BootArgsError {
    BootArgsError::BadValue {
        param: param.to_string(),
        value: value.to_string(),
        reason,
    }
}

/// Checks a parameter key: not empty, no whitespace, `=` or `"`.
pub fn check_key(key: &str) -> Result<(), BootArgsError> {
    if key.is_empty() {
        return Err(bad("key", key, "is empty"));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("key", key, "contains whitespace or control characters"));
    }
    if key.contains(['=', '"']) {
        return Err(bad("key", key, "contains `=` or `\"`"));
    }
    if PLACEHOLDERS.contains(&key.to_ascii_lowercase().as_str()) {
        return Err(bad("key", key, "is a placeholder, not a parameter"));
    }
    Ok(())
}

/// Checks a parameter value: not empty, no `"` or control characters, no placeholder text
/// (`undefined`, `null`, `NaN`) as the value or as one of its `:`/`,`/`.`-separated fields,
/// e.g. `a:undefined:b` or `192.168.100.NaN`.
pub fn check_value(param: &str, value: &str) -> Result<(), BootArgsError> {
    if value.is_empty() {
        return Err(bad(
            param,
            value,
            "is empty (use a flag without `=` instead)",
        ));
    }
    if value.contains('"') || value.chars().any(|c| c.is_control()) {
        return Err(bad(param, value, "contains `\"` or control characters"));
    }
    let lower = value.to_ascii_lowercase();
    // fields as a template fills them: `a:undefined:b`, `192.168.100.NaN`, `x,null`; a path
    // such as `/dev/null` is not a placeholder
    let mut words = lower.split([':', ',', '.', '=', '@', ';']).map(str::trim);
    if words.any(|w| PLACEHOLDERS.contains(&w)) || lower.contains("[object object]") {
        return Err(bad(
            param,
            value,
            "contains a placeholder (`undefined`/`null`)",
        ));
    }
    Ok(())
}

/// A single-word value (console, root): checked, and no whitespace.
fn check_word(param: &str, value: &str) -> Result<(), BootArgsError> {
    check_value(param, value)?;
    if value.chars().any(char::is_whitespace) {
        return Err(bad(param, value, "contains whitespace"));
    }
    Ok(())
}

/// A static `ip=` in the kernel's positional form from the usual host-side values.
/// `cidr` is `ADDRESS/PREFIX`; the netmask is written dotted (the kernel's parser wants that).
pub fn static_ip(
    cidr: &str,
    gateway: Option<IpAddr>,
    dns: &[IpAddr],
    hostname: Option<&str>,
    device: Option<&str>,
) -> Result<IpConfig, BootArgsError> {
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| BootArgsError::BadCidr(cidr.to_string()))?;
    let client: IpAddr = addr
        .parse()
        .map_err(|_| BootArgsError::BadCidr(cidr.to_string()))?;
    let prefix_len: u8 = len
        .parse()
        .map_err(|_| BootArgsError::BadCidr(cidr.to_string()))?;
    let max = if client.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(BootArgsError::BadCidr(cidr.to_string()));
    }
    if dns.len() > 2 {
        return Err(BootArgsError::TooManyDns(dns.len()));
    }
    let mut ip = IpConfig::new(IpForm::Positional, guest_proto::Autoconf::Off);
    ip.client = Some(client);
    ip.gateway = gateway;
    ip.prefix_len = Some(prefix_len);
    ip.prefix_written_as_len = client.is_ipv6();
    ip.hostname = hostname.map(str::to_string);
    ip.device = device.map(str::to_string);
    ip.dns = dns.to_vec();
    ip.validate()?;
    Ok(ip)
}

impl BootArgs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn console(mut self, console: impl Into<String>) -> Self {
        self.console = Some(console.into());
        self
    }

    pub fn root(mut self, root: impl Into<String>) -> Self {
        self.root = Some(root.into());
        self
    }

    pub fn ip(mut self, ip: IpConfig) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Adds `key=value`, or a flag when `value` is `None`.
    pub fn extra(mut self, key: impl Into<String>, value: Option<String>) -> Self {
        self.extra.push((key.into(), value));
        self
    }

    /// Parses `k=v` or a bare flag `k` (from `--extra`).
    pub fn parse_extra(text: &str) -> Result<(String, Option<String>), BootArgsError> {
        let (k, v) = match text.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (text, None),
        };
        check_key(k)?;
        if let Some(v) = &v {
            check_value(k, v)?;
        }
        Ok((k.to_string(), v))
    }

    /// Checks every part; the first bad one is the error.
    pub fn validate(&self) -> Result<(), BootArgsError> {
        if let Some(c) = &self.console {
            check_word("console", c)?;
        }
        if let Some(r) = &self.root {
            check_word("root", r)?;
        }
        if let Some(ip) = &self.ip {
            ip.validate()?;
            check_word("ip", &ip.to_string())?;
        }
        for (k, v) in &self.extra {
            check_key(k)?;
            if TYPED_KEYS.contains(&k.as_str()) {
                return Err(BootArgsError::TypedKey(k.clone()));
            }
            if let Some(v) = v {
                check_value(k, v)?;
            }
        }
        Ok(())
    }

    /// The parameters in order: console, root, ip, then the extras.
    pub fn to_kernel_cmdline(&self) -> Result<KernelCmdline, BootArgsError> {
        self.validate()?;
        let mut params = Vec::new();
        if let Some(c) = &self.console {
            params.push(("console".to_string(), Some(c.clone())));
        }
        if let Some(r) = &self.root {
            params.push(("root".to_string(), Some(r.clone())));
        }
        if let Some(ip) = &self.ip {
            params.push(("ip".to_string(), Some(ip.to_string())));
        }
        params.extend(self.extra.iter().cloned());
        Ok(KernelCmdline { params })
    }

    /// The command line as text (what goes into Firecracker's `boot_args`).
    pub fn build(&self) -> Result<String, BootArgsError> {
        Ok(self.to_kernel_cmdline()?.to_string())
    }

    /// The Firecracker config fragment: `boot-source` and, when there is an `ip=` with a
    /// client address, `network-interfaces` with a MAC derived from it.
    pub fn firecracker(
        &self,
        kernel_image_path: &str,
        host_dev_name: &str,
    ) -> Result<Value, BootArgsError> {
        check_word("kernel_image_path", kernel_image_path)?;
        check_word("host_dev_name", host_dev_name)?;
        let boot_args = self.build()?;
        let mut cfg = json!({
            "boot-source": {
                "kernel_image_path": kernel_image_path,
                "boot_args": boot_args,
            }
        });
        if let Some(client) = self.ip.as_ref().and_then(|ip| ip.client) {
            let iface_id = self
                .ip
                .as_ref()
                .and_then(|ip| ip.device.clone())
                .unwrap_or_else(|| "eth0".to_string());
            cfg["network-interfaces"] = json!([{
                "iface_id": iface_id,
                "host_dev_name": host_dev_name,
                "guest_mac": mac_for_ip(client).to_string().to_ascii_uppercase(),
            }]);
        }
        Ok(cfg)
    }
}

impl fmt::Display for BootArgs {
    /// The command line, or `<invalid: error>` (use [`BootArgs::build`] to get the error).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.build() {
            Ok(s) => f.write_str(&s),
            Err(e) => write!(f, "<invalid: {e}>"),
        }
    }
}

/// A locally administered unicast MAC from the guest's address: `06:00` then the four IPv4
/// octets (192.168.100.9 → 06:00:c0:a8:64:09), the Firecracker convention; for IPv6 the last
/// four bytes. Unique per address, so one bridge never sees two VMs with the same MAC.
pub fn mac_for_ip(ip: IpAddr) -> MacAddr {
    let tail: [u8; 4] = match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    MacAddr([0x06, 0x00, tail[0], tail[1], tail[2], tail[3]])
}

#[cfg(test)]
#[path = "bootargs_tests.rs"]
mod tests;
