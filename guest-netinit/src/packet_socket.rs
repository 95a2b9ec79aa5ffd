//! The raw link both hand-built protocols use (the DHCP client and the fallback ARP probe):
//! a non-blocking AF_PACKET/SOCK_DGRAM socket bound to one interface and one EtherType, so
//! the kernel adds and strips the Ethernet header. It works before the interface has an
//! address, which a UDP socket does not.
//!
//! Opened with protocol 0 and bound to the EtherType afterwards: no packet hook is registered
//! until bind, which saves the second RCU grace period (`synchronize_net`) that a protocol
//! change at bind time costs. Closing still costs one (`packet_release`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;

const SOCKADDR_LL_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;

/// A bound packet socket; register it with tokio's `AsyncFd` to wait on it.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    index: u32,
    ethertype: u16,
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn sockaddr(index: u32, ethertype: u16, dest: Option<[u8; 6]>) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ethertype.to_be();
    sa.sll_ifindex = index as i32;
    if let Some(mac) = dest {
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&mac);
    }
    sa
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl PacketSocket {
    /// Opens the socket and binds it to interface `index` and `ethertype`; needs CAP_NET_RAW.
    pub fn bind(index: u32, ethertype: u16) -> io::Result<Self> {
        // SAFETY: a plain syscall; the fd is owned right after creation.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        check(fd)?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = PacketSocket {
            fd,
            index,
            ethertype,
        };
        let sa = sockaddr(index, ethertype, None);
        // SAFETY: sa is a valid sockaddr_ll of the length given.
        check(unsafe {
            libc::bind(
                sock.as_raw_fd(),
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                SOCKADDR_LL_LEN,
            )
        })?;
        Ok(sock)
    }

    /// The interface's MAC, as the kernel reports it for the bound socket; an error for a
    /// link whose hardware address is not 6 bytes (not Ethernet).
    pub fn own_mac(&self) -> io::Result<[u8; 6]> {
        let mut sa = sockaddr(0, 0, None);
        let mut len = SOCKADDR_LL_LEN;
        // SAFETY: sa is a valid sockaddr_ll buffer of `len` bytes.
        check(unsafe {
            libc::getsockname(
                self.as_raw_fd(),
                &mut sa as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                &mut len,
            )
        })?;
        if sa.sll_halen != 6 {
            return Err(io::Error::other(format!(
                "not an Ethernet interface (hardware address length {})",
                sa.sll_halen
            )));
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&sa.sll_addr[..6]);
        Ok(mac)
    }

    /// Sends `payload` to the Ethernet broadcast address (`WouldBlock` when the queue is full).
    pub fn send_broadcast(&self, payload: &[u8]) -> io::Result<()> {
        let sa = sockaddr(self.index, self.ethertype, Some([0xff; 6]));
        // SAFETY: payload and sa are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                self.as_raw_fd(),
                payload.as_ptr() as *const libc::c_void,
                payload.len(),
                0,
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                SOCKADDR_LL_LEN,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one packet (without its Ethernet header) into `buf` (`WouldBlock` when none).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of its length.
        let rc = unsafe {
            libc::recv(
                self.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
}
