//! `GuestClient`: typed calls to the agent's HTTP API (`guest-agent serve`, DESIGN.md §4).
//!
//! HTTP/1 over hyper on our own `TcpStream`: the connect error stays a plain `io::Error`, so
//! [`ClientError::class`] can tell "no route to host" from "refused" from "timed out", which
//! is what an operator needs to know about a VM that does not answer. Every call has one
//! timeout covering connect, request and body. One connection per call (`Connection: close`):
//! calls are rare and probes must not reuse a connection to a previous incarnation of the VM.

use bytes::Bytes;
use guest_proto::api::{
    HealthResponse, LogsResponse, ReadyResponse, RestartResponse, ServiceStatus, ServicesResponse,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// The agent's port when an address has none.
pub const DEFAULT_PORT: u16 = 8080;
/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest body read (logs are the biggest answers).
const BODY_LIMIT: usize = 8 << 20;

/// Where the agent listens: `192.168.100.9`, `192.168.100.9:8080`, `[fd00::9]:8080`,
/// optionally written as `http://.../`. IP addresses only: VMs are addressed by IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentAddr(pub SocketAddr);

/// An address that is not `IP[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address `{0}` is not IP[:PORT] (e.g. 192.168.100.9 or 192.168.100.9:8080)")]
pub struct AddrError(pub String);

impl FromStr for AgentAddr {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s.trim();
        let bare = bare.strip_prefix("http://").unwrap_or(bare);
        let bare = bare.strip_suffix('/').unwrap_or(bare);
        if let Ok(sa) = bare.parse::<SocketAddr>() {
            return Ok(AgentAddr(sa));
        }
        let ip = bare
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(bare);
        ip.parse::<IpAddr>()
            .map(|ip| AgentAddr(SocketAddr::new(ip, DEFAULT_PORT)))
            .map_err(|_| AddrError(s.to_string()))
    }
}

impl fmt::Display for AgentAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<SocketAddr> for AgentAddr {
    fn from(a: SocketAddr) -> Self {
        AgentAddr(a)
    }
}

/// What kind of failure, in the words an operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// EHOSTUNREACH / ENETUNREACH: nothing answers ARP for the VM's IP, or no route to it.
    NoRoute,
    /// ECONNREFUSED: the guest kernel is up, nothing listens on the port (yet).
    Refused,
    /// No answer in time (SYN unanswered, or the agent is stuck).
    TimedOut,
    /// The agent answered with an unexpected HTTP status.
    HttpStatus,
    /// Reset, protocol or body errors.
    Other,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::NoRoute => "no route to host",
            ErrorClass::Refused => "connection refused",
            ErrorClass::TimedOut => "timed out",
            ErrorClass::HttpStatus => "HTTP status",
            ErrorClass::Other => "error",
        })
    }
}

/// Which part of a request ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Response,
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {addr}: {class} ({source})")]
    Connect {
        addr: SocketAddr,
        class: ErrorClass,
        #[source]
        source: io::Error,
    },
    #[error("{addr}: timed out after {after:?} {}", match phase { Phase::Connect => "connecting", Phase::Response => "waiting for the answer" })]
    Timeout {
        addr: SocketAddr,
        phase: Phase,
        after: Duration,
    },
    /// Displayed with the body escaped ([`crate::text::Untrusted`]): it is the guest's text.
    #[error("{method} {path}: HTTP {status}: {}", crate::text::Untrusted(.body))]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        /// The body (the agent's `{"error": ...}`), cut to 500 bytes.
        body: String,
    },
    #[error("{method} {path}: {source}")]
    Http {
        method: Method,
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path}: answer is not the expected JSON: {source}")]
    Decode {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("service name `{0}` must be 1-64 of A-Z a-z 0-9 . _ @ -")]
    BadServiceName(String),
}

impl ClientError {
    /// The class of the failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            ClientError::Connect { class, .. } => *class,
            ClientError::Timeout { .. } => ErrorClass::TimedOut,
            ClientError::Status { .. } => ErrorClass::HttpStatus,
            _ => ErrorClass::Other,
        }
    }

    /// The HTTP status, for [`ClientError::Status`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Classifies a connect error.
pub fn classify_io(e: &io::Error) -> ErrorClass {
    match e.raw_os_error() {
        Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => ErrorClass::NoRoute,
        // a `prohibit` route answers EACCES; `blackhole` answers EINVAL: both mean no route
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EINVAL) => ErrorClass::NoRoute,
        Some(libc::ECONNREFUSED) => ErrorClass::Refused,
        Some(libc::ETIMEDOUT) => ErrorClass::TimedOut,
        _ => match e.kind() {
            io::ErrorKind::ConnectionRefused => ErrorClass::Refused,
            io::ErrorKind::TimedOut => ErrorClass::TimedOut,
            _ => ErrorClass::Other,
        },
    }
}

/// An answer: status and body, not yet judged.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

/// `/ready`'s answer: 200 and 503 both carry a [`ReadyResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyStatus {
    pub status: u16,
    pub body: ReadyResponse,
}

/// A client for one agent.
#[derive(Debug, Clone)]
pub struct GuestClient {
    addr: SocketAddr,
    token: Option<String>,
    timeout: Duration,
}

impl GuestClient {
    pub fn new(addr: impl Into<AgentAddr>) -> Self {
        Self {
            addr: addr.into().0,
            token: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sends `Authorization: Bearer TOKEN` (every route but `/health` needs it when the agent
    /// has a token).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Per-request timeout (connect + answer + body).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.get_json("/health").await
    }

    /// `GET /ready`: `Ok` for 200 and 503 (with the reasons), `Err(Status)` otherwise
    /// (404 from an agent that predates `/ready`).
    pub async fn ready(&self) -> Result<ReadyStatus, ClientError> {
        let path = "/ready";
        let raw = self.request(Method::GET, path).await?;
        match raw.status {
            StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE => Ok(ReadyStatus {
                status: raw.status.as_u16(),
                body: decode(path, &raw.body)?,
            }),
            _ => Err(status_error(Method::GET, path, &raw)),
        }
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let raw = self.request_ok(Method::GET, "/metrics").await?;
        Ok(String::from_utf8_lossy(&raw.body).into_owned())
    }

    /// `GET /services`.
    pub async fn services(&self) -> Result<Vec<ServiceStatus>, ClientError> {
        let r: ServicesResponse = self.get_json("/services").await?;
        Ok(r.services)
    }

    /// `GET /services/NAME/logs[?lines=N]`.
    pub async fn service_logs(
        &self,
        name: &str,
        lines: Option<u32>,
    ) -> Result<LogsResponse, ClientError> {
        check_service_name(name)?;
        let path = match lines {
            Some(n) => format!("/services/{name}/logs?lines={n}"),
            None => format!("/services/{name}/logs"),
        };
        self.get_json(&path).await
    }

    /// `POST /services/NAME/restart`.
    pub async fn restart_service(&self, name: &str) -> Result<RestartResponse, ClientError> {
        check_service_name(name)?;
        let path = format!("/services/{name}/restart");
        let raw = self.request_ok(Method::POST, &path).await?;
        decode(&path, &raw.body)
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let raw = self.request_ok(Method::GET, path).await?;
        decode(path, &raw.body)
    }

    async fn request_ok(&self, method: Method, path: &str) -> Result<RawResponse, ClientError> {
        let raw = self.request(method.clone(), path).await?;
        if raw.status.is_success() {
            Ok(raw)
        } else {
            Err(status_error(method, path, &raw))
        }
    }

    /// One request on a fresh connection, all of it within the timeout.
    pub async fn request(&self, method: Method, path: &str) -> Result<RawResponse, ClientError> {
        self.request_json::<()>(method, path, None).await
    }

    /// [`GuestClient::request`] with `body`, when given, sent as JSON.
    pub async fn request_json<B: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<RawResponse, ClientError> {
        let start = Instant::now();
        let stream = match timeout(self.timeout, TcpStream::connect(self.addr)).await {
            Err(_) => {
                return Err(ClientError::Timeout {
                    addr: self.addr,
                    phase: Phase::Connect,
                    after: self.timeout,
                })
            }
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    addr: self.addr,
                    class: classify_io(&source),
                    source,
                })
            }
            Ok(Ok(s)) => s,
        };
        // Small requests: don't let Nagle hold them.
        let _ = stream.set_nodelay(true);
        let left = self.timeout.saturating_sub(start.elapsed());
        let http_err = |e: Box<dyn std::error::Error + Send + Sync>| ClientError::Http {
            method: method.clone(),
            path: path.to_string(),
            source: e,
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::CONNECTION, "close")
            .header(header::ACCEPT, "application/json");
        let bytes = match body {
            Some(b) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(b).map_err(|e| http_err(Box::new(e)))?)
            }
            None => Bytes::new(),
        };
        if let Some(t) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = builder
            .body(Full::new(bytes))
            .map_err(|e| http_err(Box::new(e)))?;
        let exchange = async {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| http_err(Box::new(e)))?;
            let call = async {
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| http_err(Box::new(e)))?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, BODY_LIMIT)
                    .collect()
                    .await
                    .map_err(http_err)?
                    .to_bytes();
                Ok::<_, ClientError>(RawResponse {
                    status: parts.status,
                    body,
                })
            };
            let mut call = std::pin::pin!(call);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = &mut call => r,
                c = &mut conn => match c {
                    Err(e) => Err(http_err(Box::new(e))),
                    // The connection ended cleanly: the answer is complete, or the call says why not.
                    Ok(()) => call.await,
                },
            }
        };
        match timeout(left, exchange).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                addr: self.addr,
                phase: Phase::Response,
                after: self.timeout,
            }),
        }
    }
}

pub(crate) fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|source| ClientError::Decode {
        path: path.to_string(),
        source,
    })
}

pub(crate) fn status_error(method: Method, path: &str, raw: &RawResponse) -> ClientError {
    let text = String::from_utf8_lossy(&raw.body);
    let mut body: String = text.chars().take(500).collect();
    if let Ok(e) = serde_json::from_slice::<guest_proto::api::ErrorBody>(&raw.body) {
        body = e.error;
    }
    ClientError::Status {
        method,
        path: path.to_string(),
        status: raw.status,
        body,
    }
}

fn check_service_name(name: &str) -> Result<(), ClientError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ClientError::BadServiceName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a: AgentAddr = "192.168.100.9".parse().unwrap();
        assert_eq!(a.to_string(), "192.168.100.9:8080");
        let a: AgentAddr = "http://192.168.100.9:9000/".parse().unwrap();
        assert_eq!(a.to_string(), "192.168.100.9:9000");
        let a: AgentAddr = "[fd00::9]".parse().unwrap();
        assert_eq!(a.to_string(), "[fd00::9]:8080");
        let a: AgentAddr = "fd00::9".parse().unwrap();
        assert_eq!(a.0.port(), 8080);
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
    fn io_errors_are_classified() {
        let c = |errno| classify_io(&io::Error::from_raw_os_error(errno));
        assert_eq!(c(libc::ECONNREFUSED), ErrorClass::Refused);
        assert_eq!(c(libc::EHOSTUNREACH), ErrorClass::NoRoute);
        assert_eq!(c(libc::ENETUNREACH), ErrorClass::NoRoute);
        assert_eq!(c(libc::ETIMEDOUT), ErrorClass::TimedOut);
        assert_eq!(c(libc::ECONNRESET), ErrorClass::Other);
    }

    #[test]
    fn service_names_are_checked_before_any_request() {
        for bad in ["", "a/b", "../x", "a b", "x?y"] {
            assert!(matches!(
                check_service_name(bad),
                Err(ClientError::BadServiceName(_))
            ));
        }
        check_service_name("xvfb@1.service").unwrap();
    }
}
