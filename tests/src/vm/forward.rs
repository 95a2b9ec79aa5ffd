//! The host's way into a kept VM (`cargo xtask demo --image browser --keep`): a loopback port
//! of the host forwarded to the VM's `:8080`, which sits in a network namespace only the VM's
//! side can route to. HTTP alone is not enough for the viewer: the stream's media is UDP to
//! the ICE candidates of the WHEP answer, addresses on the VM's bridge that a browser in the
//! host's own namespace cannot reach. So the forwarder is a small HTTP/1.1 proxy (one request
//! per connection) that rewrites each UDP candidate of an `application/sdp` answer to a
//! loopback port of its own and relays the datagrams between that port and the candidate
//! inside the namespace, as a TURN relay would. A person's browser on the host then plays the
//! VM's screen from `http://127.0.0.1:PORT/viewer`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest request or response the forwarder holds (the viewer page and SDP are KiBs).
const MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// A relay with no datagram in either direction this long is closed.
const RELAY_IDLE: Duration = Duration::from_secs(600);
/// Most relays one answer gets (the streamer gathers one candidate; the guest's SDP is not
/// trusted to size the host's threads and sockets).
const MAX_RELAYS_PER_ANSWER: usize = 4;

/// A running forwarder: `127.0.0.1:port` → `target` inside the namespace at `ns`.
pub struct Forwarder {
    pub port: u16,
}

impl Forwarder {
    /// Listens on a free loopback port (`port` 0) or the one given; serves on threads for as
    /// long as the process lives.
    pub fn start(ns: &Path, target: SocketAddr, port: u16) -> std::io::Result<Forwarder> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        let port = listener.local_addr()?.port();
        let ns = ns.to_path_buf();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let ns = ns.clone();
                std::thread::spawn(move || {
                    if let Err(e) = proxy_one(client, &ns, target) {
                        eprintln!("forwarder: {e}");
                    }
                });
            }
        });
        Ok(Forwarder { port })
    }
}

/// Runs `f` on a thread inside the network namespace at `ns`.
fn in_ns<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let ns: PathBuf = ns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns)?;
        // SAFETY: setns of this thread only, with an fd held open.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}

/// One request: read it whole, send it upstream with `Connection: close`, read the whole
/// answer, rewrite an SDP body's candidates, send it back and close.
fn proxy_one(mut client: TcpStream, ns: &Path, target: SocketAddr) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (head, body) = read_message(&mut client, true)?;
    let head = with_connection_close(&head);
    let mut upstream = in_ns(ns, move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(10))
    })?;
    upstream.set_read_timeout(Some(Duration::from_secs(60)))?;
    upstream.write_all(head.as_bytes())?;
    upstream.write_all(&body)?;
    let (head, mut body) = read_message(&mut upstream, false)?;
    let mut head = with_connection_close(&head);
    if header(&head, "content-type").is_some_and(|t| t.starts_with("application/sdp")) {
        let sdp = String::from_utf8_lossy(&body).into_owned();
        let ns = ns.to_path_buf();
        let mut relays = 0;
        // Only the VM's own address, and a few: the answer comes from the guest.
        let rewritten = rewrite_candidates(&sdp, |addr| {
            if addr.ip() != target.ip() || relays == MAX_RELAYS_PER_ANSWER {
                return None;
            }
            relays += 1;
            UdpRelay::start(&ns, addr)
                .map_err(|e| eprintln!("forwarder: relay for {addr}: {e}"))
                .ok()
        });
        body = rewritten.into_bytes();
        head = set_content_length(&head, body.len());
    }
    client.write_all(head.as_bytes())?;
    client.write_all(&body)?;
    let _ = client.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// A message's head (through the blank line) and body (`Content-Length` bytes, or to the end
/// for a response without one).
fn read_message(s: &mut TcpStream, request: bool) -> std::io::Result<(String, Vec<u8>)> {
    let too_big = || std::io::Error::other(format!("message over {MAX_MESSAGE} bytes"));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed inside the head"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_MESSAGE {
            return Err(too_big());
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut body = buf[end..].to_vec();
    match header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(len) if len > MAX_MESSAGE => return Err(too_big()),
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None if request => body.clear(),
        None => loop {
            // Sent with `Connection: close`: the body ends with the connection.
            let n = s.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
            if body.len() > MAX_MESSAGE {
                return Err(too_big());
            }
        },
    }
    Ok((head, body))
}

/// The value of header `name` (case-insensitive) in `head`.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `head` with any `Connection` header replaced by `Connection: close`.
fn with_connection_close(head: &str) -> String {
    replace_header(head, "connection", "close")
}

fn set_content_length(head: &str, len: usize) -> String {
    replace_header(head, "content-length", &len.to_string())
}

fn replace_header(head: &str, name: &str, value: &str) -> String {
    let mut lines: Vec<String> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .enumerate()
        .filter(|(i, l)| {
            *i == 0
                || !l
                    .split_once(':')
                    .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        })
        .map(|(_, l)| l.to_string())
        .collect();
    lines.push(format!("{name}: {value}"));
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

/// `sdp` with the address and port of every UDP `a=candidate:` line replaced by what `map`
/// gives for it (a line `map` gives nothing for is dropped, so the viewer never tries an
/// address it cannot reach); other lines unchanged.
pub fn rewrite_candidates(
    sdp: &str,
    mut map: impl FnMut(SocketAddr) -> Option<SocketAddr>,
) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let text = line.trim_end_matches(['\r', '\n']);
        let eol = &line[text.len()..];
        let Some(cand) = text.strip_prefix("a=candidate:") else {
            out.push_str(line);
            continue;
        };
        // foundation component transport priority address port typ type ...
        let mut f: Vec<&str> = cand.split(' ').collect();
        let addr = (f.len() >= 8 && f[2].eq_ignore_ascii_case("udp"))
            .then(|| {
                Some(SocketAddr::new(
                    f[4].parse::<IpAddr>().ok()?,
                    f[5].parse().ok()?,
                ))
            })
            .flatten();
        let Some(to) = addr.and_then(&mut map) else {
            continue;
        };
        let (ip, port) = (to.ip().to_string(), to.port().to_string());
        f[4] = &ip;
        f[5] = &port;
        out.push_str("a=candidate:");
        out.push_str(&f.join(" "));
        out.push_str(eol);
    }
    out
}

/// Datagrams between a loopback port of the host and one address inside the namespace.
struct UdpRelay;

impl UdpRelay {
    /// Binds the loopback side here and the far side in `ns`; the loopback address.
    fn start(ns: &Path, far: SocketAddr) -> std::io::Result<SocketAddr> {
        let near = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let here = near.local_addr()?;
        let inside = in_ns(ns, move || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            s.connect(far)?;
            Ok(s)
        })?;
        near.set_read_timeout(Some(RELAY_IDLE))?;
        inside.set_read_timeout(Some(RELAY_IDLE))?;
        let peer = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let (near2, inside2, peer2) = (near.try_clone()?, inside.try_clone()?, peer.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok((n, from)) = near2.recv_from(&mut buf) {
                // The first sender is the viewer; nobody else on the host takes its place.
                let mut p = peer2.lock().unwrap_or_else(|p| p.into_inner());
                if p.is_some_and(|p| p != from) {
                    continue;
                }
                *p = Some(from);
                drop(p);
                let _ = inside2.send(&buf[..n]);
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = inside.recv(&mut buf) {
                let to = *peer.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(to) = to {
                    let _ = near.send_to(&buf[..n], to);
                }
            }
        });
        Ok(here)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_candidates_are_mapped_and_others_kept_or_dropped() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\n\
                   a=candidate:1 1 udp 2130706431 192.168.100.2 40000 typ host\r\n\
                   a=candidate:2 1 tcp 1 192.168.100.2 9 typ host tcptype active\r\n\
                   a=candidate:3 1 UDP 1 fe80::1 5 typ host\r\n\
                   a=end-of-candidates\r\n";
        let out = rewrite_candidates(sdp, |a| {
            (a.port() == 40000).then(|| "127.0.0.1:5555".parse().expect("addr"))
        });
        assert!(
            out.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 5555 typ host\r\n"),
            "{out}"
        );
        assert!(!out.contains("192.168.100.2 40000"), "{out}");
        assert!(!out.contains("tcptype"), "{out}");
        assert!(!out.contains("fe80::1"), "{out}");
        assert!(out.starts_with("v=0\r\nm=video 9"), "{out}");
        assert!(out.ends_with("a=end-of-candidates\r\n"), "{out}");
    }

    #[test]
    fn headers_are_replaced_whatever_their_case() {
        let h = "HTTP/1.1 201 Created\r\ncontent-type: application/sdp\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n";
        let h = set_content_length(&with_connection_close(h), 42);
        assert_eq!(header(&h, "Content-Length"), Some("42"));
        assert_eq!(header(&h, "connection"), Some("close"));
        assert_eq!(h.matches("onnection").count(), 1, "{h}");
        assert!(h.starts_with("HTTP/1.1 201 Created\r\n") && h.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_relay_carries_datagrams_both_ways() {
        // Both sides in this namespace: the far side is a loopback echo socket.
        let echo = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let far = echo.local_addr().expect("addr");
        std::thread::spawn(move || {
            let mut b = [0u8; 64];
            if let Ok((n, from)) = echo.recv_from(&mut b) {
                let _ = echo.send_to(&b[..n], from);
            }
        });
        let ns = Path::new("/proc/self/ns/net");
        let near = UdpRelay::start(ns, far).expect("relay");
        let c = UdpSocket::bind("127.0.0.1:0").expect("client");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.send_to(b"ping", near).expect("send");
        let mut b = [0u8; 64];
        let (n, from) = c.recv_from(&mut b).expect("echo back through the relay");
        assert_eq!(&b[..n], b"ping");
        assert_eq!(from, near);
    }
}
