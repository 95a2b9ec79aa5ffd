//! The kernel command line as guestkit reads it: `ip=`, `nameserver=`, `rd.route=`,
//! `guest.NAME=value` template values and any other `key=value`.
//!
//! Tokenised like the kernel does (`lib/cmdline.c` `next_arg`): whitespace separates
//! parameters, double quotes group (`key="a b"`), quotes are removed from the value.

use crate::ipconfig::{IpConfig, IpConfigError};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// `rd.route=<net>/<netmask>:<gateway>[:<interface>]` (dracut); IPv6 in brackets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdRoute {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub device: Option<String>,
}

/// A tokenised kernel command line, parameters in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    /// `(key, value)`; `value` is `None` for a bare flag such as `quiet`.
    pub params: Vec<(String, Option<String>)>,
}
