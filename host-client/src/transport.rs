//! Where the agent is reached, and the byte stream to it: TCP, Firecracker's hybrid vsock
//! (a unix socket on the host + `CONNECT <port>`), or plain AF_VSOCK (QEMU vhost-vsock hosts).
//!
//! The vsock transports need no network in the guest: a VM whose eth0 never came up still
//! answers there, with its own diagnosis (issue 13). Every place that takes an address
//! (`GuestClient`, `OAuthClient`, `wait_ready`, guestctl) takes an [`AgentAddr`], so each
//! accepts all three forms.

use guest_proto::vsock::{connect_request, HandshakeError, ReplyDecoder, Step};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

#[path = "transport_afvsock.rs"]
mod afvsock;
pub use afvsock::VsockStream;

/// The agent's port when an address has none.
pub const DEFAULT_PORT: u16 = 8080;
/// The agent's default vsock port (`guest_agent.vsock_port=`).
pub const DEFAULT_VSOCK_PORT: u32 = 8080;
/// The port the agent pushes its readiness line to on the host (`guest_agent.ready_port=`).
pub const DEFAULT_READY_PORT: u32 = 8081;

/// How to reach an agent.
///
/// Written (and parsed) as:
/// - `IP[:PORT]`: TCP, e.g. `192.168.100.9:8080`, `[fd00::9]:8080` (port 8080 when omitted,
///   `http://` and a trailing `/` tolerated);
/// - `vsock:/PATH:PORT`: Firecracker's hybrid vsock, the VM's `vsock.uds_path` and the guest
///   port, e.g. `vsock:/run/vm-7/v.sock:8080` (a relative path starts with `./`);
/// - `vsock:CID:PORT`: plain AF_VSOCK to guest context id CID (≥ 3), e.g. `vsock:3:8080`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AgentAddr {
    Tcp(SocketAddr),
    HybridVsock { uds: PathBuf, port: u32 },
    Vsock { cid: u32, port: u32 },
}

/// An address that none of the three forms accepts; says which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("address `{0}` is not IP[:PORT] (e.g. 192.168.100.9 or 192.168.100.9:8080), vsock:/PATH:PORT or vsock:CID:PORT")]
    NotAnAddress(String),
    #[error("vsock address `{addr}`: the port `{port}` is not a number (0-4294967295)")]
    BadVsockPort { addr: String, port: String },
    #[error(
        "vsock address `{addr}`: no port (write vsock:/path/to/v.sock:PORT or vsock:CID:PORT)"
    )]
    NoVsockPort { addr: String },
    #[error("vsock address `{addr}`: the unix socket path is empty")]
    EmptyPath { addr: String },
    #[error("vsock address `{addr}`: `{cid}` is neither a context id (a number) nor a path (starting with / or ./)")]
    BadCid { addr: String, cid: String },
    #[error("vsock address `{addr}`: CID {cid} is not a VM's (0, 1 and 2 are the hypervisor, local and host; u32::MAX is any): a VM's CID is 3 or more")]
    ReservedCid { addr: String, cid: u32 },
}

impl FromStr for AgentAddr {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s.trim();
        if let Some(rest) = bare.strip_prefix("vsock:") {
            return parse_vsock(s, rest);
        }
        let bare = bare.strip_prefix("http://").unwrap_or(bare);
        let bare = bare.strip_suffix('/').unwrap_or(bare);
        if let Ok(sa) = bare.parse::<SocketAddr>() {
            return Ok(AgentAddr::Tcp(sa));
        }
        let ip = bare
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(bare);
        ip.parse::<IpAddr>()
            .map(|ip| AgentAddr::Tcp(SocketAddr::new(ip, DEFAULT_PORT)))
            .map_err(|_| AddrError::NotAnAddress(s.to_string()))
    }
}

fn parse_vsock(addr: &str, rest: &str) -> Result<AgentAddr, AddrError> {
    let Some((left, port)) = rest.rsplit_once(':') else {
        return Err(AddrError::NoVsockPort {
            addr: addr.to_string(),
        });
    };
    let port = parse_port(addr, port)?;
    if left.starts_with('/') || left.starts_with("./") || left.starts_with("../") {
        return Ok(AgentAddr::HybridVsock {
            uds: PathBuf::from(left),
            port,
        });
    }
    if left.is_empty() {
        return Err(AddrError::EmptyPath {
            addr: addr.to_string(),
        });
    }
    let cid: u32 = left
        .chars()
        .all(|c| c.is_ascii_digit())
        .then(|| left.parse().ok())
        .flatten()
        .ok_or_else(|| AddrError::BadCid {
            addr: addr.to_string(),
            cid: left.to_string(),
        })?;
    if cid < 3 || cid == u32::MAX {
        return Err(AddrError::ReservedCid {
            addr: addr.to_string(),
            cid,
        });
    }
    Ok(AgentAddr::Vsock { cid, port })
}

fn parse_port(addr: &str, port: &str) -> Result<u32, AddrError> {
    if port.is_empty() {
        return Err(AddrError::NoVsockPort {
            addr: addr.to_string(),
        });
    }
    port.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| port.parse().ok())
        .flatten()
        .ok_or_else(|| AddrError::BadVsockPort {
            addr: addr.to_string(),
            port: port.to_string(),
        })
}

impl fmt::Display for AgentAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentAddr::Tcp(a) => a.fmt(f),
            AgentAddr::HybridVsock { uds, port } => write!(f, "vsock:{}:{port}", uds.display()),
            AgentAddr::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

impl serde::Serialize for AgentAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl From<SocketAddr> for AgentAddr {
    fn from(a: SocketAddr) -> Self {
        AgentAddr::Tcp(a)
    }
}

impl AgentAddr {
    /// The TCP address, for a TCP agent.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            AgentAddr::Tcp(a) => Some(*a),
            _ => None,
        }
    }

    /// Whether this is one of the vsock forms.
    pub fn is_vsock(&self) -> bool {
        !matches!(self, AgentAddr::Tcp(_))
    }

    /// The `Host` header sent: the address for TCP; `localhost` over vsock (the agent's
    /// Host guard accepts loopback names, and vsock has no host name).
    pub fn host_header(&self) -> String {
        match self {
            AgentAddr::Tcp(a) => a.to_string(),
            _ => "localhost".to_string(),
        }
    }

    /// Opens a stream to the agent (the vsock handshake included). No timeout here: the
    /// caller bounds the whole call.
    pub async fn connect(&self) -> Result<AgentStream, ConnectError> {
        match self {
            AgentAddr::Tcp(a) => {
                let s = TcpStream::connect(a).await.map_err(ConnectError::Io)?;
                // Small requests: don't let Nagle hold them.
                let _ = s.set_nodelay(true);
                Ok(AgentStream::Tcp(s))
            }
            AgentAddr::HybridVsock { uds, port } => {
                let s = UnixStream::connect(uds).await.map_err(ConnectError::Io)?;
                hybrid_handshake(s, *port).await
            }
            AgentAddr::Vsock { cid, port } => VsockStream::connect(*cid, *port)
                .await
                .map(AgentStream::Vsock)
                .map_err(ConnectError::Io),
        }
    }
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket call failed (TCP connect, the unix socket, AF_VSOCK connect).
    #[error("{0}")]
    Io(io::Error),
    /// The unix socket answered but the vsock handshake failed.
    #[error(transparent)]
    Handshake(#[from] VsockHandshakeError),
}

/// A failed `CONNECT <port>` / `OK <n>` exchange on a hybrid vsock socket.
#[derive(Debug, thiserror::Error)]
pub enum VsockHandshakeError {
    /// The device closed the socket without a reply: nothing accepted on that guest port.
    #[error("no listener on guest port {port} (the VM's vsock device closed the connection after CONNECT {port})")]
    NoListener { port: u32 },
    /// The device closed the socket mid-reply.
    #[error(
        "vsock handshake: the VM's device closed the connection after a partial answer `{partial}`"
    )]
    Truncated { port: u32, partial: String },
    /// The reply was not `OK <n>`.
    #[error("vsock handshake: {source}")]
    Reply {
        port: u32,
        #[source]
        source: HandshakeError,
    },
    /// Reading or writing the handshake failed (e.g. reset).
    #[error("vsock handshake on guest port {port}: {source}")]
    Io {
        port: u32,
        #[source]
        source: io::Error,
    },
}

/// `CONNECT port\n`, then the `OK <n>\n` reply read in whatever pieces it comes.
async fn hybrid_handshake(mut s: UnixStream, port: u32) -> Result<AgentStream, ConnectError> {
    let io_err = |source| VsockHandshakeError::Io { port, source };
    s.write_all(connect_request(port).as_bytes())
        .await
        .map_err(io_err)?;
    let mut dec = ReplyDecoder::new();
    let mut buf = [0u8; 64];
    loop {
        let n = s.read(&mut buf).await.map_err(io_err)?;
        if n == 0 {
            let partial = dec.pending();
            return Err(if partial.is_empty() {
                VsockHandshakeError::NoListener { port }
            } else {
                VsockHandshakeError::Truncated {
                    port,
                    partial: crate::text::Untrusted(&String::from_utf8_lossy(partial)).to_string(),
                }
            }
            .into());
        }
        match dec.feed(&buf[..n]) {
            Ok(Step::NeedMore) => continue,
            Ok(Step::Ok { rest, .. }) => {
                return Ok(AgentStream::Hybrid {
                    stream: s,
                    prefix: rest,
                })
            }
            Err(source) => return Err(VsockHandshakeError::Reply { port, source }.into()),
        }
    }
}

/// An open stream to the agent.
#[derive(Debug)]
pub enum AgentStream {
    Tcp(TcpStream),
    /// After the handshake; `prefix` holds guest bytes read along with the `OK` line.
    Hybrid {
        stream: UnixStream,
        prefix: Vec<u8>,
    },
    Vsock(VsockStream),
}

impl AsyncRead for AgentStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            AgentStream::Hybrid { stream, prefix } => {
                if !prefix.is_empty() {
                    let n = prefix.len().min(buf.remaining());
                    buf.put_slice(&prefix[..n]);
                    prefix.drain(..n);
                    return Poll::Ready(Ok(()));
                }
                Pin::new(stream).poll_read(cx, buf)
            }
            AgentStream::Vsock(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AgentStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AgentStream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            AgentStream::Hybrid { stream, .. } => Pin::new(stream).poll_write(cx, data),
            AgentStream::Vsock(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            AgentStream::Hybrid { stream, .. } => Pin::new(stream).poll_flush(cx),
            AgentStream::Vsock(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            AgentStream::Hybrid { stream, .. } => Pin::new(stream).poll_shutdown(cx),
            AgentStream::Vsock(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_addresses() {
        let a: AgentAddr = "192.168.100.9".parse().unwrap();
        assert_eq!(a.to_string(), "192.168.100.9:8080");
        let a: AgentAddr = "http://192.168.100.9:9000/".parse().unwrap();
        assert_eq!(a.to_string(), "192.168.100.9:9000");
        let a: AgentAddr = "[fd00::9]".parse().unwrap();
        assert_eq!(a.to_string(), "[fd00::9]:8080");
        let a: AgentAddr = "fd00::9".parse().unwrap();
        assert_eq!(a.tcp().unwrap().port(), 8080);
        for bad in [
            "",
            "vm1",
            "192.168.100.X",
            "192.168.100.9:http",
            "undefined",
        ] {
            let e = bad.parse::<AgentAddr>().unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn vsock_addresses() {
        let a: AgentAddr = "vsock:/run/vm-7/v.sock:1024".parse().unwrap();
        assert_eq!(
            a,
            AgentAddr::HybridVsock {
                uds: "/run/vm-7/v.sock".into(),
                port: 1024
            }
        );
        assert_eq!(a.to_string(), "vsock:/run/vm-7/v.sock:1024");
        assert!(a.is_vsock());
        // a colon inside the path: the port is after the last one
        let a: AgentAddr = "vsock:/run/a:b/v.sock:8080".parse().unwrap();
        assert_eq!(
            a,
            AgentAddr::HybridVsock {
                uds: "/run/a:b/v.sock".into(),
                port: 8080
            }
        );
        let a: AgentAddr = "vsock:./v.sock:1".parse().unwrap();
        assert!(matches!(a, AgentAddr::HybridVsock { port: 1, .. }));
        let a: AgentAddr = "vsock:3:8080".parse().unwrap();
        assert_eq!(a, AgentAddr::Vsock { cid: 3, port: 8080 });
        assert_eq!(a.to_string(), "vsock:3:8080");
        assert_eq!(a.host_header(), "localhost");
    }

    #[test]
    fn bad_vsock_addresses_name_the_part() {
        let e = |s: &str| s.parse::<AgentAddr>().unwrap_err();
        assert!(matches!(
            e("vsock:/run/v.sock"),
            AddrError::NoVsockPort { .. }
        ));
        assert!(matches!(e("vsock:"), AddrError::NoVsockPort { .. }));
        assert!(matches!(
            e("vsock:/run/v.sock:"),
            AddrError::NoVsockPort { .. }
        ));
        assert!(
            matches!(e("vsock:/run/v.sock:http"), AddrError::BadVsockPort { port, .. } if port == "http")
        );
        assert!(
            matches!(e("vsock:3:99999999999"), AddrError::BadVsockPort { port, .. } if port == "99999999999")
        );
        assert!(matches!(e("vsock::8080"), AddrError::EmptyPath { .. }));
        assert!(matches!(e("vsock:vm7:8080"), AddrError::BadCid { cid, .. } if cid == "vm7"));
        assert!(matches!(
            e("vsock:run/v.sock:8080"),
            AddrError::BadCid { .. }
        ));
        for cid in [0u32, 1, 2, u32::MAX] {
            assert!(
                matches!(e(&format!("vsock:{cid}:8080")), AddrError::ReservedCid { cid: c, .. } if c == cid)
            );
        }
        let msg = e("vsock:2:8080").to_string();
        assert!(
            msg.contains("`vsock:2:8080`") && msg.contains("CID 2"),
            "{msg}"
        );
    }
}
