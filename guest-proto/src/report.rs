//! `NetinitReport`: what guest-netinit did, written to `/run/guest-netinit/state.json`
//! and served by the agent in `/health` under `network`.
//!
//! The report is the answer to "why is this VM not reachable?" (failures F1, F2, F5), so it
//! carries every step with its duration, every conflicting source and what won, the
//! gateway probe result and, on failure, the error class and the exit code.

use crate::ipconfig::MacAddr;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};

/// Where the applied configuration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigSource {
    /// Kernel command line `ip=` (plus `nameserver=`, `rd.route=`).
    Cmdline,
    /// The guest-netinit template (`/etc/guest-netinit/eth0.network` or the old path).
    Template,
    /// A DHCPv4 lease.
    Dhcp,
    /// The template's fallback section, after DHCP got no lease in time.
    Fallback,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The interface is configured as asked.
    Configured,
    /// Configured from the fallback section (DHCP gave no lease).
    Fallback,
    /// No source configures any interface: nothing was done.
    NothingToDo,
    /// Stopped with an error; see `error`.
    Failed,
}

/// One step of the run (`read-config`, `find-link`, `load-modules`, `apply`, `files`,
/// `handoff`, `probe`), with its wall time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    pub name: String,
    pub ok: bool,
    pub duration_us: u64,
    /// One human sentence: what was done or what went wrong.
    pub detail: String,
}

/// A second source that also configures the interface, and how it was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// `cmdline`, `template`, `networkd`, `netplan`, `ifupdown`, `network-manager`, `kernel-ip-pnp`.
    pub source: String,
    /// The file that holds it, when it is a file.
    pub path: Option<String>,
    /// What it says (e.g. "DHCP=yes for eth0").
    pub detail: String,
    /// What guest-netinit did about it (e.g. "cmdline wins; networkd told KeepConfiguration=static").
    pub resolution: String,
}

/// The gateway probe (one ARP request, bounded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub target: IpAddr,
    pub ok: bool,
    pub rtt_us: Option<u64>,
    /// The gateway's MAC when it answered.
    pub mac: Option<MacAddr>,
    pub error: Option<String>,
}

/// An address with its prefix length, written `192.168.100.2/24`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressReport {
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// A route as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteReport {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub metric: Option<u32>,
}

/// Why the run failed: a class with a documented exit code, and the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    /// `bad-config`, `no-device`, `module-missing`, `module-load`, `apply`, `files`, `dhcp`, `internal`.
    pub class: String,
    pub exit_code: i32,
    pub message: String,
}

/// The state file. Fields are added, never renamed: the agent and host read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetinitReport {
    /// guest-netinit's version.
    pub version: String,
    pub outcome: Outcome,
    /// Wall-clock time the run started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Whole run, exec to report.
    pub duration_us: u64,
    pub interface: Option<String>,
    pub source: Option<ConfigSource>,
    pub addresses: Vec<AddressReport>,
    pub gateway: Option<IpAddr>,
    pub routes: Vec<RouteReport>,
    pub dns: Vec<IpAddr>,
    pub search_domains: Vec<String>,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub hostname: Option<String>,
    /// Kernel modules guest-netinit loaded itself (e.g. `virtio_net`).
    pub modules_loaded: Vec<String>,
    pub conflicts: Vec<Conflict>,
    pub steps: Vec<StepReport>,
    pub probe: Option<ProbeResult>,
    pub warnings: Vec<String>,
    pub error: Option<FailureReport>,
    /// The networkd handoff file written, if any.
    pub handoff_path: Option<String>,
    /// The DHCPv4 lease, or why the fallback was used; `None` when DHCP was not asked for.
    #[serde(default)]
    pub dhcp: Option<DhcpLeaseReport>,
}

/// What DHCP gave, for `/health`: without systemd-networkd nothing renews the lease, so the
/// host needs to see when it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpLeaseReport {
    /// `None` with `fallback_reason` set when no lease came.
    pub lease: Option<DhcpLease>,
    /// Set when the static fallback was applied: "no DHCP server answered within 5 s".
    pub fallback_reason: Option<String>,
}

/// One DHCPv4 lease as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpLease {
    pub server: Ipv4Addr,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    /// Option 51; `None` = infinite.
    pub lease_secs: Option<u32>,
    pub obtained_at_ms: u64,
    /// `obtained_at_ms + lease_secs`; `None` for an infinite lease.
    pub expires_at_ms: Option<u64>,
}
