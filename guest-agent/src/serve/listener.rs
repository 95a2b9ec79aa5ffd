//! The accept loop of `serve`, bounded so that no neighbour can take the agent off the air.
//!
//! axum's own `serve` runs hyper without a timer (no header-read timeout), caps nothing, and
//! with the default 1024 open files ~1,100 idle sockets make `accept` fail with EMFILE: the
//! host's `/health` then waits in the backlog and the supervisor restarts `serve` in a loop.
//! Here:
//! - hyper gets a timer and a header-read timeout ([`HEADER_TIMEOUT`]). hyper starts that timer
//!   whenever the connection waits for a request head, on a fresh connection and between
//!   keep-alive requests alike, so it is also the idle keep-alive timeout: a connection that
//!   sends nothing, or half a request, is closed after it.
//! - At most `max_connections` connections are open. When one more arrives, the *oldest
//!   connection of the peer address holding the most* is closed to make room (and the same
//!   when `accept` runs out of file descriptors). The host controller holds a handful of
//!   connections, so it is never the one evicted while a neighbour floods: its requests
//!   always get in, whatever the neighbour's numbers. (A per-peer refusal would need a
//!   per-peer limit that a neighbour with several addresses on the bridge could add up past.)
//! - The soft open-file limit is raised ([`raise_nofile`]) and the cap is kept below it with
//!   room for the files, sockets and PTYs the routes themselves open.
//! - Accept errors other than a dropped connection are logged at most once a second and
//!   retried with a growing pause (no busy loop).
//! - On SIGTERM/SIGINT: stop accepting, let requests in flight finish ([`SHUTDOWN_GRACE`]).
//!
//! The same loop serves the vsock listener ([`Accept`] is implemented for both): one
//! [`Registry`] for both transports, since the open-file limit they share is the real bound; a
//! vsock peer is keyed by its CID ([`Peer::Cid`]), so a flood over TCP never evicts the host's
//! vsock connections and vice versa. Every request carries its connection's [`Peer`] as an
//! extension (the guard relaxes the Host check for vsock, see `guard.rs`).

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// Longest wait for a complete request head, and for the next request on a kept-alive
/// connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default connection cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// File descriptors kept out of the connection cap (state files, the supervisor's control
/// socket, the streamer's socket per proxied request, OAuth PTYs and pipes, the journal).
pub const FD_RESERVE: u64 = 256;
/// The soft open-file limit asked for: the default cap plus its reserve, twice over. Not
/// simply the hard limit: the login CLIs and the browser inherit it, and some programs size
/// tables by it.
pub const NOFILE_WANTED: u64 = 8192;
/// How long requests in flight may finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Listen backlog asked for (the kernel caps it at `net.core.somaxconn`, 4096 by default):
/// room for a burst of a thousand connections from a neighbour on top of the host's, so the
/// host's SYN is queued rather than dropped (and retried only a second later) while the
/// accept loop catches up.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (SO_REUSEADDR, like `TcpListener::bind`) with [`LISTEN_BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let sock = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(LISTEN_BACKLOG)
}

/// Who is at the other end of a connection: the key the [`Registry`] counts by, and a request
/// extension the routes may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP peer's address.
    Ip(IpAddr),
    /// A vsock peer's CID (2 = the host).
    Cid(u32),
}

impl From<IpAddr> for Peer {
    fn from(ip: IpAddr) -> Peer {
        Peer::Ip(ip)
    }
}

/// A listening socket the accept loop can serve: TCP or vsock.
pub trait Accept: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Stream, Peer)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, Peer::Ip(peer.ip())))
    }
}

/// Connection counters for `/metrics`.
#[derive(Default)]
pub struct ConnStats {
    pub accepted: AtomicU64,
    pub evicted: AtomicU64,
    pub open: AtomicU64,
    pub accept_errors: AtomicU64,
}

/// Raises the soft RLIMIT_NOFILE to `min(hard, NOFILE_WANTED)` (never lowers it); returns
/// (before, after).
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    let want = hard.min(NOFILE_WANTED);
    if want > soft {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).map_err(std::io::Error::from)?;
        return Ok((soft, want));
    }
    Ok((soft, soft))
}

/// The cap that fits under the soft open-file limit `nofile`.
pub fn effective_cap(wanted: usize, nofile: u64) -> usize {
    let room = nofile.saturating_sub(FD_RESERVE).max(16);
    wanted.clamp(1, usize::try_from(room).unwrap_or(usize::MAX))
}

/// Open connections by peer address, oldest first, so the biggest holder can give one up.
pub struct Registry {
    cap: usize,
    inner: Mutex<Inner>,
    stats: Arc<ConnStats>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    total: usize,
    peers: HashMap<Peer, VecDeque<(u64, Arc<Notify>)>>,
}

/// One admitted connection; dropping it gives its place back.
pub struct Ticket {
    registry: Arc<Registry>,
    peer: Peer,
    id: u64,
    evict: Arc<Notify>,
}

impl Registry {
    pub fn new(cap: usize, stats: Arc<ConnStats>) -> Arc<Registry> {
        Arc::new(Registry {
            cap: cap.max(1),
            inner: Mutex::new(Inner::default()),
            stats,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a connection from `peer`, closing another one first when full.
    pub fn admit(self: &Arc<Self>, peer: impl Into<Peer>) -> Ticket {
        let peer = peer.into();
        let mut inner = self.lock();
        while inner.total >= self.cap {
            if !self.evict_locked(&mut inner) {
                break;
            }
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let evict = Arc::new(Notify::new());
        inner
            .peers
            .entry(peer)
            .or_default()
            .push_back((id, evict.clone()));
        inner.total += 1;
        self.stats.open.store(inner.total as u64, Relaxed);
        Ticket {
            registry: self.clone(),
            peer,
            id,
            evict,
        }
    }

    /// Closes the oldest connection of the peer with the most; false when there is none.
    pub fn evict_one(&self) -> bool {
        let mut inner = self.lock();
        self.evict_locked(&mut inner)
    }

    fn evict_locked(&self, inner: &mut Inner) -> bool {
        let Some(peer) = inner
            .peers
            .iter()
            .max_by_key(|(_, q)| q.len())
            .map(|(p, _)| *p)
        else {
            return false;
        };
        let Some(q) = inner.peers.get_mut(&peer) else {
            return false;
        };
        let Some((_, notify)) = q.pop_front() else {
            return false;
        };
        if q.is_empty() {
            inner.peers.remove(&peer);
        }
        inner.total -= 1;
        notify.notify_one();
        self.stats.evicted.fetch_add(1, Relaxed);
        self.stats.open.store(inner.total as u64, Relaxed);
        true
    }

    /// Open connections per peer (tests, diagnostics).
    pub fn counts(&self) -> HashMap<Peer, usize> {
        self.lock()
            .peers
            .iter()
            .map(|(p, q)| (*p, q.len()))
            .collect()
    }
}

impl Ticket {
    /// Resolves when the registry closed this connection to make room.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        let Some(q) = inner.peers.get_mut(&self.peer) else {
            return;
        };
        let Some(pos) = q.iter().position(|(id, _)| *id == self.id) else {
            return; // evicted: already counted out
        };
        q.remove(pos);
        if q.is_empty() {
            inner.peers.remove(&self.peer);
        }
        inner.total -= 1;
        self.registry.stats.open.store(inner.total as u64, Relaxed);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, with the bounds described above.
pub async fn serve<L: Accept>(
    listener: L,
    app: Router,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut errors = AcceptErrors::default();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    errors.pause = Duration::ZERO;
                    registry.stats.accepted.fetch_add(1, Relaxed);
                    let ticket = registry.admit(peer);
                    tasks.spawn(connection(stream, peer, app.clone(), ticket, stop_rx.clone()));
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    registry.stats.accept_errors.fetch_add(1, Relaxed);
                    // Out of descriptors (EMFILE/ENFILE) or memory: give one back, pause.
                    registry.evict_one();
                    let pause = errors.note(&e);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "connections still open after the shutdown grace; closing them"
        );
        tasks.abort_all();
    }
    Ok(())
}

/// One connection: HTTP/1.1 with the header timer, until done, evicted or shut down.
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: Peer,
    app: Router,
    ticket: Ticket,
    mut stop: watch::Receiver<bool>,
) {
    let tower = TowerToHyperService::new(app);
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer);
            hyper::service::Service::call(&tower, req)
        });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = ticket.evicted() => {
            tracing::debug!("connection closed to make room");
        }
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    )
}

/// Rate-limited logging and a growing pause for accept errors.
#[derive(Default)]
struct AcceptErrors {
    pause: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_millis(500);

    fn note(&mut self, e: &std::io::Error) -> Duration {
        self.pause = (self.pause * 2).clamp(Self::FIRST, Self::MAX);
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::error!(error = %e, suppressed = self.suppressed, pause_ms = self.pause.as_millis() as u64,
                "accept failed; closed the oldest connection of the biggest holder and retrying");
            self.last_log = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        self.pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_full_registry_evicts_the_oldest_of_the_biggest_holder() {
        let stats = Arc::new(ConnStats::default());
        let reg = Registry::new(4, stats.clone());
        let n = ip("192.168.100.3");
        let host = ip("192.168.100.1");
        let n1 = reg.admit(n);
        let _n2 = reg.admit(n);
        let _n3 = reg.admit(n);
        let h1 = reg.admit(host);
        assert_eq!(reg.counts()[&n.into()], 3);
        // Full: the host's next connection evicts the neighbour's oldest, not the host's.
        let h2 = reg.admit(host);
        assert_eq!(reg.counts()[&n.into()], 2);
        assert_eq!(reg.counts()[&host.into()], 2);
        assert_eq!(stats.evicted.load(Relaxed), 1);
        let notified = n1.evict.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), notified.notified())
                .await
                .expect("the evicted connection is told");
        });
        // Dropping an evicted ticket does not count it out twice.
        drop(n1);
        assert_eq!(stats.open.load(Relaxed), 4);
        drop(h1);
        assert_eq!(stats.open.load(Relaxed), 3);
        // Ties between peers evict someone, never fail.
        let _n4 = reg.admit(n);
        let _h3 = reg.admit(host);
        assert_eq!(stats.open.load(Relaxed), 4);
        drop(h2);
        assert!(reg.evict_one());
        assert_eq!(stats.open.load(Relaxed), 2);
    }

    #[test]
    fn the_cap_fits_under_the_file_limit() {
        assert_eq!(effective_cap(1024, 8192), 1024);
        assert_eq!(effective_cap(1024, 1024), 768);
        assert_eq!(effective_cap(1024, 100), 16);
        assert_eq!(effective_cap(0, 8192), 1);
    }
}
