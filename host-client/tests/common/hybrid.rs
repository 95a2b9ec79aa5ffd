//! A stand-in for Firecracker's (or vhost-device-vsock's) hybrid vsock device: a unix socket
//! that reads `CONNECT <port>\n` and, per guest port, answers as the test scripts: `OK <n>`
//! then the bytes of a TCP stand-in agent, a wrong line, a close (no listener), or the right
//! line in slow pieces.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};

/// What the device does for a guest port.
#[derive(Clone, Debug)]
pub enum Port {
    /// Connects to the agent at this TCP address; `OK 1073741824\n` and relays when it
    /// accepts, closes when it refuses (as the device does when the guest port has no listener).
    Agent(SocketAddr),
    /// Writes these bytes, then closes.
    Reply(Vec<u8>),
    /// Closes right after reading CONNECT (nothing listens on the guest port).
    Close,
    /// `OK 1073741824\n` one byte every `gap`, then relays to the agent.
    Slow(SocketAddr, Duration),
}

/// The device's socket and the CONNECT lines it read.
pub struct Device {
    pub path: PathBuf,
    pub seen: Arc<Mutex<Vec<String>>>,
}

/// Serves `ports` on a new unix socket `dir/v.sock`; ports not listed close (no listener).
pub fn device(dir: &Path, ports: HashMap<u32, Port>) -> Device {
    let path = dir.join("v.sock");
    let l = UnixListener::bind(&path).unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let ports = Arc::new(ports);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let s = s.clone();
            let ports = ports.clone();
            tokio::spawn(async move {
                // read the CONNECT line byte by byte: nothing of the HTTP that follows
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while line.len() < 64 {
                    match sock.read(&mut b).await {
                        Ok(1) if b[0] == b'\n' => break,
                        Ok(1) => line.push(b[0]),
                        _ => return,
                    }
                }
                let line = String::from_utf8_lossy(&line).into_owned();
                s.lock().unwrap().push(line.clone());
                let port: Option<u32> = line.strip_prefix("CONNECT ").and_then(|p| p.parse().ok());
                let what = port.and_then(|p| ports.get(&p).cloned());
                match what {
                    None | Some(Port::Close) => {}
                    Some(Port::Reply(bytes)) => {
                        let _ = sock.write_all(&bytes).await;
                    }
                    Some(Port::Agent(addr)) => {
                        let Ok(agent) = TcpStream::connect(addr).await else {
                            return;
                        };
                        let _ = sock.write_all(b"OK 1073741824\n").await;
                        relay(sock, agent).await;
                    }
                    Some(Port::Slow(addr, gap)) => {
                        for b in b"OK 1073741824\n" {
                            tokio::time::sleep(gap).await;
                            if sock.write_all(&[*b]).await.is_err() {
                                return;
                            }
                        }
                        if let Ok(agent) = TcpStream::connect(addr).await {
                            relay(sock, agent).await;
                        }
                    }
                }
            });
        }
    });
    Device { path, seen }
}

async fn relay(mut sock: tokio::net::UnixStream, mut agent: TcpStream) {
    let _ = tokio::io::copy_bidirectional(&mut sock, &mut agent).await;
}
