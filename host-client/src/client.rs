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
use std::time::Duration;
use tokio::time::{timeout, Instant};

pub use crate::transport::{AddrError, AgentAddr, DEFAULT_PORT};
use crate::transport::{ConnectError, VsockHandshakeError};

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest body read (logs are the biggest answers).
const BODY_LIMIT: usize = 8 << 20;

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
        addr: AgentAddr,
        class: ErrorClass,
        #[source]
        source: io::Error,
    },
    /// The hybrid vsock socket answered, but not with `OK <port>` (or closed: no listener).
    #[error("{addr}: {source}")]
    Handshake {
        addr: AgentAddr,
        #[source]
        source: VsockHandshakeError,
    },
    #[error("{addr}: timed out after {after:?} {}", match phase { Phase::Connect => "connecting", Phase::Response => "waiting for the answer" })]
    Timeout {
        addr: AgentAddr,
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
            // Nothing accepted on the guest port: like a refused TCP connection, the VM is up
            // and the agent is about to listen.
            ClientError::Handshake {
                source: VsockHandshakeError::NoListener { .. },
                ..
            } => ErrorClass::Refused,
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

/// Classifies a connect error to `addr`: over AF_VSOCK a reset is what a port without a
/// listener answers (the guest is up), so it counts as refused.
fn classify_connect(addr: &AgentAddr, e: &io::Error) -> ErrorClass {
    match (addr, e.raw_os_error()) {
        (AgentAddr::Vsock { .. }, Some(libc::ECONNRESET)) => ErrorClass::Refused,
        _ => classify_io(e),
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
    addr: AgentAddr,
    token: Option<String>,
    timeout: Duration,
}

impl GuestClient {
    pub fn new(addr: impl Into<AgentAddr>) -> Self {
        Self {
            addr: addr.into(),
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

    pub fn addr(&self) -> &AgentAddr {
        &self.addr
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
        let stream = match timeout(self.timeout, self.addr.connect()).await {
            Err(_) => {
                return Err(ClientError::Timeout {
                    addr: self.addr.clone(),
                    phase: Phase::Connect,
                    after: self.timeout,
                })
            }
            Ok(Err(ConnectError::Io(source))) => {
                return Err(ClientError::Connect {
                    class: classify_connect(&self.addr, &source),
                    addr: self.addr.clone(),
                    source,
                })
            }
            Ok(Err(ConnectError::Handshake(source))) => {
                return Err(ClientError::Handshake {
                    addr: self.addr.clone(),
                    source,
                })
            }
            Ok(Ok(s)) => s,
        };
        let left = self.timeout.saturating_sub(start.elapsed());
        let http_err = |e: Box<dyn std::error::Error + Send + Sync>| ClientError::Http {
            method: method.clone(),
            path: path.to_string(),
            source: e,
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.addr.host_header())
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
                addr: self.addr.clone(),
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
