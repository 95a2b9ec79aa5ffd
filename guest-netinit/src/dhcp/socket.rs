//! The DHCP client's link: an AF_PACKET/SOCK_DGRAM socket bound to the interface (the kernel
//! adds the Ethernet header), carrying hand-built IPv4 + UDP headers. A UDP socket cannot be
//! used before the interface has an address: the kernel does not deliver to it, and it
//! would send from whatever address another interface has. Non-blocking, driven by tokio's
//! `AsyncFd`; the socket is `packet_socket::PacketSocket`, shared with the ARP probe.

use super::Transport;
use crate::packet_socket::{PacketSocket, ETH_P_IP};
use std::io;
use std::net::Ipv4Addr;
use std::time::Instant;
use tokio::io::unix::AsyncFd;

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

/// The packet-socket transport for one interface.
pub struct PacketTransport {
    fd: AsyncFd<PacketSocket>,
    mac: [u8; 6],
}

impl PacketTransport {
    /// Opens and binds the socket on interface `index`; needs CAP_NET_RAW. Must be called
    /// inside a tokio runtime with IO enabled.
    pub fn open(index: u32) -> io::Result<PacketTransport> {
        let sock = PacketSocket::bind(index, ETH_P_IP)?;
        let mac = sock.own_mac()?;
        // SAFETY: `PacketSocket` owns its fd, which stays open and unchanged until it drops.
        let fd = unsafe { AsyncFd::register(sock) }.map_err(|e| e.into_parts().1)?;
        Ok(PacketTransport { fd, mac })
    }
}

impl Transport for PacketTransport {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    async fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let frame = udp_ipv4(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            CLIENT_PORT,
            SERVER_PORT,
            payload,
        );
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|s| s.get_ref().send_broadcast(&frame)) {
                Ok(res) => return res,
                Err(_would_block) => continue,
            }
        }
    }

    async fn recv(&mut self, until: Instant) -> io::Result<Option<Vec<u8>>> {
        let deadline = tokio::time::Instant::from_std(until);
        let mut buf = vec![0u8; 2048];
        loop {
            let mut guard = match tokio::time::timeout_at(deadline, self.fd.readable()).await {
                Ok(g) => g?,
                Err(_) => return Ok(None),
            };
            let r = guard.try_io(|s| s.get_ref().recv(&mut buf));
            match r {
                Ok(Ok(n)) => {
                    if let Some(p) = udp_payload(&buf[..n], CLIENT_PORT) {
                        return Ok(Some(p.to_vec()));
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The Internet checksum of `data` starting from `sum`.
fn checksum(mut sum: u32, data: &[u8]) -> u16 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet carrying one UDP datagram, both checksums filled in.
pub fn udp_ipv4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0x10]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let ip_sum = checksum(0, &p[..20]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let mut pseudo = 0u32;
    for w in [src.octets(), dst.octets()] {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        pseudo += u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    pseudo += 17 + udp_len as u32;
    let mut udp_sum = checksum(pseudo, &p[20..]);
    if udp_sum == 0 {
        udp_sum = 0xffff;
    }
    p[26..28].copy_from_slice(&udp_sum.to_be_bytes());
    p
}

/// The UDP payload of an IPv4 packet addressed to UDP port `dport`, else `None`.
pub fn udp_payload(p: &[u8], dport: u16) -> Option<&[u8]> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 17 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    // fragments: not for us (DHCP replies fit one frame)
    if ihl < 20 || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
        return None;
    }
    let udp = p.get(ihl..total)?;
    if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != dport {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    udp.get(8..len.max(8).min(udp.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_checksums() {
        let p = udp_ipv4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, b"hello");
        assert_eq!(p.len(), 20 + 8 + 5);
        // a correct header sums to zero
        assert_eq!(checksum(0, &p[..20]), 0);
        let mut pseudo = 0u32;
        pseudo += 0xffff + 0xffff + 17 + 13;
        assert_eq!(checksum(pseudo, &p[20..]), 0);
        assert_eq!(udp_payload(&p, 67), Some(&b"hello"[..]));
        assert_eq!(udp_payload(&p, 68), None);
        assert_eq!(udp_payload(&p[..10], 67), None);
        let mut frag = p.clone();
        frag[6] = 0x20; // more fragments
        assert_eq!(udp_payload(&frag, 67), None);
        let mut tcp = p.clone();
        tcp[9] = 6;
        assert_eq!(udp_payload(&tcp, 67), None);
    }
}
