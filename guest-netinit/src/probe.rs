//! The gateway probe: one ARP request for the gateway on the configured interface, bounded
//! by a timeout, recording the round trip and the gateway's MAC. ARP rather than ICMP
//! because it needs no route, no firewall rule on the gateway and no raw IP socket, and it
//! proves exactly what boot needs: the gateway is on the link. A failed probe is a warning.
//!
//! `ArpProber` has the kernel send the request: it deletes any cached neighbour entry for
//! the gateway, then asks for resolution with `RTM_NEWNEIGH` + `NTF_USE` (the kernel sends
//! its first ARP solicitation at once, from the interface's address) and waits for the
//! neighbour event that carries the answer. Only netlink sockets are involved, which open
//! and close in microseconds — a packet socket's close costs an RCU grace period (see
//! `packet.rs`) — and the resolved entry stays in the cache, so the first real packet to
//! the gateway does not wait for ARP.

pub mod packet;

pub use packet::PacketArpProber;

use crate::system::Prober;
use futures::StreamExt;
use guest_proto::{MacAddr, ProbeResult};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::MulticastGroup;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Probes the gateway through the kernel's ARP (see the module doc).
#[derive(Debug, Default)]
pub struct ArpProber;

/// How a neighbour probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeighbourOutcome {
    /// The gateway answered: round trip from the request, and its MAC.
    Answered { rtt: Duration, mac: [u8; 6] },
    /// No answer before the timeout.
    Silent,
    /// The kernel gave up on the gateway (entry FAILED) before the timeout.
    Failed,
    /// The gateway has a permanent (static) neighbour entry, which the kernel does not
    /// re-resolve and which is not ours to delete.
    Static,
}

impl Prober for ArpProber {
    async fn probe(
        &mut self,
        index: u32,
        interface: &str,
        source: Ipv4Addr,
        target: Ipv4Addr,
        timeout: Duration,
    ) -> ProbeResult {
        let started = Instant::now();
        let failed = |error: String| ProbeResult {
            target: IpAddr::V4(target),
            ok: false,
            rtt_us: None,
            mac: None,
            error: Some(error),
        };
        let silent = || {
            failed(format!(
                "no ARP reply from {target} within {} ms",
                timeout.as_millis()
            ))
        };
        match neighbour_probe(index, target, timeout).await {
            Ok(NeighbourOutcome::Answered { rtt, mac }) => ProbeResult {
                target: IpAddr::V4(target),
                ok: true,
                rtt_us: Some(rtt.as_micros() as u64),
                mac: Some(MacAddr(mac)),
                error: None,
            },
            Ok(NeighbourOutcome::Silent) => silent(),
            Ok(NeighbourOutcome::Failed) => failed(format!(
                "no ARP reply from {target}: the kernel marked it unreachable"
            )),
            Ok(NeighbourOutcome::Static) => {
                let left = timeout.saturating_sub(started.elapsed());
                PacketArpProber
                    .probe(index, interface, source, target, left)
                    .await
            }
            Err(e) => failed(format!("ARP probe of {target} on {interface}: {e}")),
        }
    }
}

/// Resolve `target` on interface `index` through the kernel's neighbour table, bounded by
/// `timeout`. Errors are netlink failures, as text.
pub async fn neighbour_probe(
    index: u32,
    target: Ipv4Addr,
    timeout: Duration,
) -> Result<NeighbourOutcome, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    // Subscribe first, so the answer cannot slip between the request and the wait.
    let (events_conn, _events_handle, mut events) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Neigh])
            .map_err(|e| format!("netlink socket: {e}"))?;
    tokio::spawn(events_conn);
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
    tokio::spawn(conn);

    let mut existing = None;
    let mut dump = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute();
    while let Some(msg) = dump.next().await {
        let msg = msg.map_err(|e| format!("list neighbours: {e}"))?;
        if is_entry(&msg, index, target) {
            existing = Some(msg);
        }
    }
    drop(dump);
    let mut deleted = false;
    if let Some(entry) = existing {
        if matches!(
            entry.header.state,
            NeighbourState::Permanent | NeighbourState::Noarp
        ) {
            return Ok(NeighbourOutcome::Static);
        }
        // A cached answer proves nothing about now: forget it and ask again.
        let mut del = NeighbourMessage::default();
        del.header.family = AddressFamily::Inet;
        del.header.ifindex = index;
        del.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                target,
            )));
        match handle.neighbours().del(del).execute().await {
            Ok(()) => deleted = true,
            Err(e) if errno(&e) == Some(libc::ENOENT) => {}
            Err(e) => return Err(format!("delete the cached entry for {target}: {e}")),
        }
    }

    let sent = Instant::now();
    handle
        .neighbours()
        .add(index, IpAddr::V4(target))
        // NUD_NONE, not the builder's PERMANENT (which would exempt the entry from GC):
        // with NTF_USE the kernel only starts resolution.
        .state(NeighbourState::None)
        .flags(NeighbourFlags::Use)
        .replace()
        .execute()
        .await
        .map_err(|e| format!("ask the kernel to resolve {target}: {e}"))?;

    // Events queued before our delete describe the old entry: skip up to its deletion.
    let mut past_old = !deleted;
    loop {
        let msg = match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_elapsed) => return Ok(NeighbourOutcome::Silent),
            Ok(None) => return Err("neighbour event socket closed".into()),
            Ok(Some((msg, _))) => msg,
        };
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n))
                if is_entry(&n, index, target) =>
            {
                past_old = true;
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n))
                if past_old && is_entry(&n, index, target) =>
            {
                if let Some(outcome) = outcome_of(&n, sent.elapsed()) {
                    return Ok(outcome);
                }
            }
            _ => {}
        }
    }
}

/// What a RTM_NEWNEIGH event for the gateway says, if it settles the probe.
fn outcome_of(n: &NeighbourMessage, rtt: Duration) -> Option<NeighbourOutcome> {
    match n.header.state {
        NeighbourState::Reachable
        | NeighbourState::Stale
        | NeighbourState::Delay
        | NeighbourState::Probe => lladdr(n).map(|mac| NeighbourOutcome::Answered { rtt, mac }),
        NeighbourState::Failed => Some(NeighbourOutcome::Failed),
        _ => None,
    }
}

fn is_entry(n: &NeighbourMessage, index: u32, target: Ipv4Addr) -> bool {
    n.header.ifindex == index
        && n.attributes.iter().any(
            |a| matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) if *d == target),
        )
}

fn lladdr(n: &NeighbourMessage) -> Option<[u8; 6]> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
        _ => None,
    })
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);

    fn event(
        index: u32,
        dst: Ipv4Addr,
        state: NeighbourState,
        mac: Option<[u8; 6]>,
    ) -> NeighbourMessage {
        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet;
        n.header.ifindex = index;
        n.header.state = state;
        n.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        if let Some(m) = mac {
            n.attributes
                .push(NeighbourAttribute::LinkLayerAddress(m.to_vec()));
        }
        n
    }

    #[test]
    fn only_settled_states_with_a_mac_answer() {
        let mac = [2, 0, 0, 0, 0, 1];
        let rtt = Duration::from_micros(80);
        for state in [NeighbourState::Reachable, NeighbourState::Stale] {
            assert_eq!(
                outcome_of(&event(2, GW, state, Some(mac)), rtt),
                Some(NeighbourOutcome::Answered { rtt, mac })
            );
        }
        assert_eq!(
            outcome_of(&event(2, GW, NeighbourState::Incomplete, None), rtt),
            None
        );
        assert_eq!(
            outcome_of(&event(2, GW, NeighbourState::Reachable, None), rtt),
            None
        );
        assert_eq!(
            outcome_of(&event(2, GW, NeighbourState::Failed, None), rtt),
            Some(NeighbourOutcome::Failed)
        );
    }

    #[test]
    fn entry_matches_interface_and_address() {
        let n = event(2, GW, NeighbourState::Reachable, None);
        assert!(is_entry(&n, 2, GW));
        assert!(!is_entry(&n, 3, GW));
        assert!(!is_entry(&n, 2, Ipv4Addr::new(192, 168, 100, 2)));
    }
}
