//! DHCPv4 (DESIGN.md §3 step 4): `ip=dhcp`, `ip=<iface>:dhcp`, template `DHCP=yes|ipv4`.
//! The old image ran dnsmasq on the host with a static fallback file in the guest; so do we:
//! one DISCOVER/OFFER/REQUEST/ACK exchange on a packet socket (`socket`), messages from
//! `msg`, the lease turned into a [`NetConfig`](crate::config::NetConfig) (`lease`) and applied with netlink like any
//! other config. When no lease arrives before the deadline (default [`DEFAULT_TIMEOUT`]),
//! the caller applies the static fallback and reports `fallback`.
//!
//! Renewal is not netinit's job. The networkd handoff says `DHCP=ipv4`, `KeepConfiguration=dhcp`
//! and `ClientIdentifier=mac` (our client id), so systemd-networkd (when present) gets the same
//! lease from the server and renews it without dropping the address. Without networkd nothing
//! renews: the address is added without a lifetime, so it stays after the lease expires; the
//! server may then hand it to another client (with dnsmasq on the host and one address per VM
//! MAC, only when the pool runs out). The lease time is in the `dhcp` step's detail in
//! `state.json` (a lease field in `NetinitReport`, for the agent's `/health`, is requested).
//!
//! Retransmission: 1 s, then doubling up to 4 s (RFC 2131 §4.1 asks for 4 s, then 8 s...: far
//! too slow for a 5 s boot deadline on a one-hop link). A NAK restarts from DISCOVER.
#![allow(async_fn_in_trait)] // static dispatch on a current-thread runtime

pub mod lease;
pub mod msg;
pub mod socket;
pub mod step;

pub use lease::Lease;
use msg::{opt, Message, MessageType, BOOTREPLY};
use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How long to wait for a lease before falling back.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// First retransmission interval; doubles up to [`MAX_RETRANSMIT`].
pub const FIRST_RETRANSMIT: Duration = Duration::from_secs(1);
pub const MAX_RETRANSMIT: Duration = Duration::from_secs(4);
/// NAKs tolerated before giving up on the exchange.
pub const MAX_NAKS: usize = 3;

/// Sends and receives DHCP payloads on one interface (`socket::PacketTransport`; a scripted
/// fake in tests).
pub trait Transport {
    /// The interface's hardware address (chaddr, client id).
    fn mac(&self) -> [u8; 6];
    /// Broadcast one DHCP message to the servers.
    async fn send(&mut self, payload: &[u8]) -> io::Result<()>;
    /// The next DHCP payload addressed to the client port, or `None` once `until` passes.
    async fn recv(&mut self, until: Instant) -> io::Result<Option<Vec<u8>>>;
}

/// How the exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpOutcome {
    Leased(Lease),
    /// No lease before the deadline: what was seen, for the report.
    TimedOut {
        offers: usize,
        naks: usize,
        waited: Duration,
    },
}

impl DhcpOutcome {
    /// One sentence for the report when no lease came.
    pub fn why(&self) -> String {
        match self {
            DhcpOutcome::Leased(l) => {
                format!("lease {}/{} from {}", l.address, l.prefix_len, l.server)
            }
            DhcpOutcome::TimedOut {
                offers: 0, waited, ..
            } => format!(
                "no DHCP server answered within {}",
                crate::report::fmt_duration(*waited)
            ),
            DhcpOutcome::TimedOut {
                offers,
                naks,
                waited,
            } => format!(
                "{offers} offer(s) but no lease within {} ({naks} NAK(s))",
                crate::report::fmt_duration(*waited)
            ),
        }
    }
}

/// DHCP failures that are not "no lease in time".
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP on {interface}: {source}")]
    Socket {
        interface: String,
        #[source]
        source: io::Error,
    },
}

/// A transaction id: not security, only telling our exchange from others on the link.
pub fn new_xid(mac: [u8; 6]) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    let m = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
    nanos ^ m.rotate_left(7) ^ std::process::id().rotate_left(13)
}

/// Runs DISCOVER → OFFER → REQUEST → ACK until `timeout` passes. Socket errors are errors;
/// silence, NAKs and garbage are not (they end in `TimedOut`).
pub async fn obtain<T: Transport>(
    t: &mut T,
    timeout: Duration,
    xid: u32,
) -> io::Result<DhcpOutcome> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mac = t.mac();
    let (mut offers, mut naks) = (0usize, 0usize);
    let mut xid = xid;
    'restart: loop {
        // Selecting: DISCOVER until a usable OFFER (an address, a server to ask). Unusable
        // replies are ignored like noise, so a broken server cannot make us spin.
        let discover = Message::request(MessageType::Discover, xid, mac).encode();
        let Some(offer) = exchange(t, &discover, deadline, |m| {
            reply_to(m, xid, mac)
                && m.message_type() == Some(MessageType::Offer)
                && usable(m.yiaddr)
                && server_of(m).is_some()
        })
        .await?
        else {
            return Ok(timed_out(offers, naks, start));
        };
        offers += 1;
        let Some(server) = server_of(&offer) else {
            continue 'restart; // not reached: the OFFER was accepted with a server
        };
        // Requesting: REQUEST until an ACK with an address, or a NAK.
        let mut req = Message::request(MessageType::Request, xid, mac);
        req.options
            .insert(1, (opt::REQUESTED_IP, offer.yiaddr.octets().to_vec()));
        req.options
            .insert(2, (opt::SERVER_ID, server.octets().to_vec()));
        let request = req.encode();
        let Some(answer) = exchange(t, &request, deadline, |m| {
            reply_to(m, xid, mac)
                && match m.message_type() {
                    Some(MessageType::Ack) => usable(m.yiaddr),
                    Some(MessageType::Nak) => true,
                    _ => false,
                }
                && m.addr(opt::SERVER_ID).is_none_or(|s| s == server)
        })
        .await?
        else {
            return Ok(timed_out(offers, naks, start));
        };
        if answer.message_type() == Some(MessageType::Nak) {
            naks += 1;
            if naks >= MAX_NAKS {
                return Ok(timed_out(offers, naks, start));
            }
            xid = xid.wrapping_add(1);
            continue 'restart;
        }
        if let Some(l) = Lease::from_ack(&answer, &offer, server) {
            return Ok(DhcpOutcome::Leased(l));
        }
        // from_ack only refuses an unusable address, which the ACK filter already excluded
        xid = xid.wrapping_add(1);
    }
}

/// The server to REQUEST from: option 54, else `siaddr`.
fn server_of(m: &Message) -> Option<Ipv4Addr> {
    m.addr(opt::SERVER_ID)
        .or(Some(m.siaddr))
        .filter(|s| usable(*s))
}

fn timed_out(offers: usize, naks: usize, start: Instant) -> DhcpOutcome {
    DhcpOutcome::TimedOut {
        offers,
        naks,
        waited: start.elapsed(),
    }
}

/// A reply from a server to our transaction.
fn reply_to(m: &Message, xid: u32, mac: [u8; 6]) -> bool {
    m.op == BOOTREPLY && m.xid == xid && m.chaddr == mac
}

/// Sends `payload`, then waits for a message `wanted` accepts, retransmitting on the
/// schedule; `None` at `deadline`. Time advances by the `until` each silent wait ended at,
/// so a scripted transport needs no clock.
async fn exchange<T: Transport>(
    t: &mut T,
    payload: &[u8],
    deadline: Instant,
    wanted: impl Fn(&Message) -> bool,
) -> io::Result<Option<Message>> {
    let mut interval = FIRST_RETRANSMIT;
    let mut now = Instant::now();
    if now >= deadline {
        return Ok(None);
    }
    t.send(payload).await?;
    let mut resend_at = now + interval;
    loop {
        let until = resend_at.min(deadline);
        match t.recv(until).await? {
            Some(bytes) => {
                if let Ok(m) = Message::decode(&bytes) {
                    if wanted(&m) {
                        return Ok(Some(m));
                    }
                }
            }
            None if until >= deadline => return Ok(None),
            None => {
                now = until;
                t.send(payload).await?;
                interval = (interval * 2).min(MAX_RETRANSMIT);
                resend_at = now + interval;
            }
        }
    }
}

/// A usable unicast lease address.
pub fn usable(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
}

#[cfg(test)]
#[path = "dhcp_tests.rs"]
mod tests;
