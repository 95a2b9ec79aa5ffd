//! The gateway probe done by hand: one ARP who-has on an AF_PACKET/SOCK_DGRAM socket bound
//! to the interface (the kernel adds the Ethernet header), non-blocking, driven by tokio's
//! `AsyncFd`, retransmitted once halfway through the timeout.
//!
//! Not the default (`ArpProber` lets the kernel's neighbour code do it) because closing a
//! packet socket costs an RCU grace period (`synchronize_net` in `packet_release`): 8–16 ms
//! measured here, against a 3 ms budget for the whole run. It is kept for the one case the
//! kernel will not re-resolve: a gateway with a permanent (static) neighbour entry.
//! The socket is `packet_socket::PacketSocket`, shared with the DHCP client.

use crate::packet_socket::{PacketSocket, ETH_P_ARP};
use crate::system::Prober;
use guest_proto::{MacAddr, ProbeResult};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// Probes with an ARP request sent on a packet socket.
#[derive(Debug, Default)]
pub struct PacketArpProber;

impl Prober for PacketArpProber {
    async fn probe(
        &mut self,
        index: u32,
        interface: &str,
        source: Ipv4Addr,
        target: Ipv4Addr,
        timeout: Duration,
    ) -> ProbeResult {
        let failed = |error: String| ProbeResult {
            target: IpAddr::V4(target),
            ok: false,
            rtt_us: None,
            mac: None,
            error: Some(error),
        };
        match arp_probe(index, source, target, timeout).await {
            Ok(Some((rtt, mac))) => ProbeResult {
                target: IpAddr::V4(target),
                ok: true,
                rtt_us: Some(rtt.as_micros() as u64),
                mac: Some(MacAddr(mac)),
                error: None,
            },
            Ok(None) => failed(format!(
                "no ARP reply from {target} within {} ms",
                timeout.as_millis()
            )),
            Err(e) => failed(format!("ARP probe of {target} on {interface}: {e}")),
        }
    }
}

/// Send who-has `target` from `source` on interface `index` and wait for the answer.
/// `Ok(None)`: no reply within `timeout`.
pub async fn arp_probe(
    index: u32,
    source: Ipv4Addr,
    target: Ipv4Addr,
    timeout: Duration,
) -> io::Result<Option<(Duration, [u8; 6])>> {
    let sock = PacketSocket::bind(index, ETH_P_ARP)?;
    let own_mac = sock.own_mac()?;
    let request = arp_request(own_mac, source, target);
    // SAFETY: `PacketSocket` owns its fd, which stays open and unchanged until it drops.
    let fd = unsafe { AsyncFd::register(sock) }.map_err(|e| e.into_parts().1)?;

    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + timeout);
    let resend_at = tokio::time::Instant::from_std(start + timeout / 2);
    fd.get_ref().send_broadcast(&request)?;
    let mut resent = false;
    let mut buf = [0u8; 128];
    loop {
        let wake = if resent { deadline } else { resend_at };
        let ready = tokio::time::timeout_at(wake, fd.readable()).await;
        let mut guard = match ready {
            Ok(guard) => guard?,
            Err(_) if !resent => {
                fd.get_ref().send_broadcast(&request)?;
                resent = true;
                continue;
            }
            Err(_) => return Ok(None),
        };
        match guard.try_io(|s| s.get_ref().recv(&mut buf)) {
            Ok(Ok(n)) => {
                if let Some(mac) = parse_reply(&buf[..n], source, target) {
                    return Ok(Some((start.elapsed(), mac)));
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// An ARP request (the payload after the Ethernet header).
pub fn arp_request(own_mac: [u8; 6], source: Ipv4Addr, target: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    p[8..14].copy_from_slice(&own_mac);
    p[14..18].copy_from_slice(&source.octets());
    // target hardware address stays zero
    p[24..28].copy_from_slice(&target.octets());
    p
}

/// The sender MAC of `packet` if it is `target`'s ARP reply to `source`.
pub fn parse_reply(packet: &[u8], source: Ipv4Addr, target: Ipv4Addr) -> Option<[u8; 6]> {
    if packet.len() < 28
        || packet[0..2] != 1u16.to_be_bytes()
        || packet[2..4] != 0x0800u16.to_be_bytes()
        || packet[4] != 6
        || packet[5] != 4
        || packet[6..8] != ARP_REPLY.to_be_bytes()
        || packet[14..18] != target.octets()
        || packet[24..28] != source.octets()
    {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&packet[8..14]);
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);
    const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);

    fn reply(from: Ipv4Addr, to: Ipv4Addr, mac: [u8; 6]) -> [u8; 28] {
        let mut p = arp_request(mac, from, to);
        p[6..8].copy_from_slice(&ARP_REPLY.to_be_bytes());
        p
    }

    #[test]
    fn request_layout() {
        let p = arp_request([2, 0, 0, 0, 0, 9], ME, GW);
        assert_eq!(&p[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(&p[14..18], &[192, 168, 100, 2]);
        assert_eq!(&p[18..24], &[0; 6]);
        assert_eq!(&p[24..28], &[192, 168, 100, 1]);
    }

    #[test]
    fn accepts_only_the_gateways_reply_to_us() {
        let mac = [2, 0, 0, 0, 0, 1];
        assert_eq!(parse_reply(&reply(GW, ME, mac), ME, GW), Some(mac));
        // Our own request (seen by the packet socket as outgoing) is not a reply.
        assert_eq!(parse_reply(&arp_request(mac, ME, GW), ME, GW), None);
        // A reply from someone else, or to someone else, or truncated.
        let other = Ipv4Addr::new(192, 168, 100, 7);
        assert_eq!(parse_reply(&reply(other, ME, mac), ME, GW), None);
        assert_eq!(parse_reply(&reply(GW, other, mac), ME, GW), None);
        assert_eq!(parse_reply(&reply(GW, ME, mac)[..27], ME, GW), None);
        // Ethernet padding after the ARP payload is fine.
        let mut padded = reply(GW, ME, mac).to_vec();
        padded.extend_from_slice(&[0; 18]);
        assert_eq!(parse_reply(&padded, ME, GW), Some(mac));
    }
}
