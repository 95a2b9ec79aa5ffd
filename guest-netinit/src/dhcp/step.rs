//! The run's `dhcp` step: link settings first (MTU, MAC, up: the MAC is the client id), then
//! the exchange, then either the lease's config or the static fallback. Generic over
//! [`DhcpClient`] so the run's tests script the outcome; [`PacketDhcp`] is the real one.

use super::lease::{fallback_config, link_only};
use super::socket::PacketTransport;
use super::{new_xid, obtain, DhcpError, DhcpOutcome, Lease, Transport};
use crate::config::NetConfig;
use crate::report::Reporter;
use crate::system::{Apply, NetError};
use std::time::{Duration, Instant};

/// Obtains a lease on an interface.
#[allow(async_fn_in_trait)] // static dispatch on a current-thread runtime
pub trait DhcpClient {
    async fn lease(
        &mut self,
        index: u32,
        interface: &str,
        timeout: Duration,
    ) -> Result<DhcpOutcome, DhcpError>;
}

/// DHCP on a packet socket (`socket::PacketTransport`).
#[derive(Debug, Default)]
pub struct PacketDhcp;

impl DhcpClient for PacketDhcp {
    async fn lease(
        &mut self,
        index: u32,
        interface: &str,
        timeout: Duration,
    ) -> Result<DhcpOutcome, DhcpError> {
        let err = |source| DhcpError::Socket {
            interface: interface.to_string(),
            source,
        };
        let mut t = PacketTransport::open(index).map_err(err)?;
        let xid = new_xid(t.mac());
        obtain(&mut t, timeout, xid).await.map_err(err)
    }
}

/// What the step decided to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Leased {
        cfg: NetConfig,
        lease: Lease,
    },
    /// No lease: the static fallback, and why.
    Fallback {
        cfg: NetConfig,
        reason: String,
    },
}

/// Why the step stopped the run.
#[derive(Debug, thiserror::Error)]
pub enum DhcpStepError {
    #[error("DHCP on {interface}: {reason}, and there is no static fallback (give Address= in the template)")]
    NoLease { interface: String, reason: String },
    #[error(transparent)]
    Client(#[from] DhcpError),
    #[error(transparent)]
    Apply(#[from] NetError),
}

/// Runs the step for `base` (a config with `dhcp: true`; its static part is the fallback).
pub async fn run_step<N: Apply, D: DhcpClient>(
    net: &mut N,
    dhcp: &mut D,
    index: u32,
    base: &NetConfig,
    timeout: Duration,
    rep: &mut Reporter,
) -> Result<Decision, DhcpStepError> {
    let t = Instant::now();
    let fail = |rep: &mut Reporter, e: &dyn std::fmt::Display| {
        rep.step("dhcp", false, t.elapsed(), &e.to_string())
    };
    if let Err(e) = net.apply(index, &link_only(base)).await {
        fail(rep, &e);
        return Err(e.into());
    }
    let outcome = match dhcp.lease(index, &base.interface, timeout).await {
        Ok(o) => o,
        Err(e) => {
            fail(rep, &e);
            return Err(e.into());
        }
    };
    match outcome {
        DhcpOutcome::Leased(lease) => {
            let cfg = lease.to_config(base);
            rep.step("dhcp", true, t.elapsed(), &describe(&lease));
            Ok(Decision::Leased { cfg, lease })
        }
        timed_out => {
            let reason = timed_out.why();
            match fallback_config(base) {
                Some(cfg) => {
                    let msg = format!("{reason}: applying the static fallback");
                    rep.step("dhcp", true, t.elapsed(), &msg);
                    rep.warning(&format!("DHCP on {}: {msg}", base.interface));
                    Ok(Decision::Fallback { cfg, reason })
                }
                None => {
                    let e = DhcpStepError::NoLease {
                        interface: base.interface.clone(),
                        reason,
                    };
                    fail(rep, &e);
                    Err(e)
                }
            }
        }
    }
}

/// `lease 192.168.100.57/24 from 192.168.100.1 for 600 s, router 192.168.100.1, dns ..., mtu 1400`
pub fn describe(l: &Lease) -> String {
    let mut s = format!("lease {}/{} from {}", l.address, l.prefix_len, l.server);
    match l.lease_secs {
        Some(secs) => s.push_str(&format!(" for {secs} s")),
        None => s.push_str(" (infinite)"),
    }
    if let Some(r) = l.router {
        s.push_str(&format!(", router {r}"));
    }
    if !l.dns.is_empty() {
        let dns: Vec<String> = l.dns.iter().map(|d| d.to_string()).collect();
        s.push_str(&format!(", dns {}", dns.join(" ")));
    }
    if let Some(m) = l.mtu {
        s.push_str(&format!(", mtu {m}"));
    }
    s
}
