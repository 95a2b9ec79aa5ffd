//! The DHCP client's link: an AF_PACKET/SOCK_DGRAM socket bound to the interface (the kernel
//! adds the Ethernet header), carrying hand-built IPv4 + UDP headers. A UDP socket cannot be
//! used before the interface has an address: the kernel does not deliver to it, and it
//! would send from whatever address another interface has. Non-blocking, driven by tokio's
//! `AsyncFd`. As in `probe/packet.rs`, the socket is opened with protocol 0 and bound to
//! ETH_P_IP, which avoids a second RCU grace period at bind.

use super::Transport;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;
use tokio::io::unix::AsyncFd;

const ETH_P_IP: u16 = 0x0800;
pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

/// The packet-socket transport for one interface.
pub struct PacketTransport {
    fd: AsyncFd<Sock>,
    index: u32,
    mac: [u8; 6],
}

struct Sock(OwnedFd);

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

const SOCKADDR_LL_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;

fn sockaddr(index: u32, dest: Option<[u8; 6]>) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ETH_P_IP.to_be();
    sa.sll_ifindex = index as i32;
    if let Some(mac) = dest {
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&mac);
    }
    sa
}

impl PacketTransport {
    /// Opens and binds the socket on interface `index`; needs CAP_NET_RAW. Must be called
    /// inside a tokio runtime with IO enabled.
    pub fn open(index: u32) -> io::Result<PacketTransport> {
        // SAFETY: plain syscalls; the fd is owned right after creation.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = Sock(unsafe { OwnedFd::from_raw_fd(fd) });
        let sa = sockaddr(index, None);
        // SAFETY: sa is a valid sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                SOCKADDR_LL_LEN,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut sa = sockaddr(0, None);
        let mut len = SOCKADDR_LL_LEN;
        // SAFETY: sa is a valid sockaddr_ll buffer of `len` bytes.
        let rc = unsafe {
            libc::getsockname(
                sock.as_raw_fd(),
                &mut sa as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if sa.sll_halen != 6 {
            return Err(io::Error::other(format!(
                "not an Ethernet interface (hardware address length {})",
                sa.sll_halen
            )));
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&sa.sll_addr[..6]);
        // SAFETY: `Sock` owns its fd, which stays open and unchanged until it drops.
        let fd = unsafe { AsyncFd::register(sock) }.map_err(|e| e.into_parts().1)?;
        Ok(PacketTransport { fd, index, mac })
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
        let sa = sockaddr(self.index, Some([0xff; 6]));
        loop {
            let mut guard = self.fd.writable().await?;
            let r = guard.try_io(|s| {
                // SAFETY: frame and sa are valid for the lengths given.
                let rc = unsafe {
                    libc::sendto(
                        s.as_raw_fd(),
                        frame.as_ptr() as *const libc::c_void,
                        frame.len(),
                        0,
                        &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                        SOCKADDR_LL_LEN,
                    )
                };
                if rc < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match r {
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
            let r = guard.try_io(|s| {
                // SAFETY: buf is valid for writes of its length.
                let rc = unsafe {
                    libc::recv(
                        s.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                    )
                };
                if rc < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(rc as usize)
                }
            });
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
