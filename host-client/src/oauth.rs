//! OAuth calls to the agent (issue 7): start a login with a provider, follow the session,
//! cancel it, paste a code, fetch the credentials. The versioned `/v1/oauth/sessions` API
//! for the state, the Node agent's `/credentials/get` for the credentials.
//!
//! [`OAuthClient`] carries its own token and a small HTTP/1 exchange because these calls
//! send JSON bodies, which [`GuestClient::request`](crate::GuestClient::request) does not
//! (yet): errors are the same [`ClientError`]s, classified the same way.

use crate::client::{classify_io, AgentAddr, ClientError, Phase, DEFAULT_TIMEOUT};
use bytes::Bytes;
use guest_proto::oauth::{
    CredentialsResponse, PasteCode, SessionInfo, SessionState, SessionsResponse, StartSession,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

const BODY_LIMIT: usize = 4 << 20;

/// OAuth calls to one agent.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    addr: SocketAddr,
    token: Option<String>,
    timeout: Duration,
}

/// Session ids and provider names go into paths: checked before any request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{value}` must be 1-128 of A-Z a-z 0-9 . _ -")]
pub struct BadName {
    pub what: &'static str,
    pub value: String,
}

/// Errors of the OAuth calls.
#[derive(Debug, thiserror::Error)]
pub enum OAuthClientError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    BadName(#[from] BadName),
}

fn check(what: &'static str, value: &str) -> Result<(), BadName> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(BadName {
            what,
            value: value.to_string(),
        })
    }
}

impl OAuthClient {
    pub fn new(addr: impl Into<AgentAddr>) -> Self {
        Self {
            addr: addr.into().0,
            token: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Per-request timeout. Starting a session waits up to 5 s on the agent for the URL
    /// only on `/auth/:provider`; `start` here answers at once.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `POST /v1/oauth/sessions`: starts (or replaces) the provider's session.
    pub async fn start(
        &self,
        provider: &str,
        session_id: Option<&str>,
    ) -> Result<SessionInfo, OAuthClientError> {
        check("provider", provider)?;
        if let Some(id) = session_id {
            check("session id", id)?;
        }
        let body = StartSession {
            provider: provider.to_string(),
            session_id: session_id.map(String::from),
        };
        let raw = self
            .call(Method::POST, "/v1/oauth/sessions", Some(&body))
            .await?;
        // A CLI that cannot start is a failed session (500 with the session body).
        if raw.0 == StatusCode::INTERNAL_SERVER_ERROR {
            if let Ok(s) = serde_json::from_slice::<SessionInfo>(&raw.1) {
                return Ok(s);
            }
        }
        Ok(self.ok_json(Method::POST, "/v1/oauth/sessions", raw)?)
    }

    /// `GET /v1/oauth/sessions`.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, OAuthClientError> {
        let path = "/v1/oauth/sessions";
        let raw = self.call::<()>(Method::GET, path, None).await?;
        let r: SessionsResponse = self.ok_json(Method::GET, path, raw)?;
        Ok(r.sessions)
    }

    /// `GET /v1/oauth/sessions/ID`.
    pub async fn session(&self, id: &str) -> Result<SessionInfo, OAuthClientError> {
        check("session id", id)?;
        let path = format!("/v1/oauth/sessions/{id}");
        let raw = self.call::<()>(Method::GET, &path, None).await?;
        Ok(self.ok_json(Method::GET, &path, raw)?)
    }

    /// `DELETE /v1/oauth/sessions/ID`: kills the CLI; answers with the ended session.
    pub async fn cancel(&self, id: &str) -> Result<SessionInfo, OAuthClientError> {
        check("session id", id)?;
        let path = format!("/v1/oauth/sessions/{id}");
        let raw = self.call::<()>(Method::DELETE, &path, None).await?;
        Ok(self.ok_json(Method::DELETE, &path, raw)?)
    }

    /// `POST /v1/oauth/sessions/ID/code`: types a pasted code into the CLI.
    pub async fn paste_code(&self, id: &str, code: &str) -> Result<SessionInfo, OAuthClientError> {
        check("session id", id)?;
        let path = format!("/v1/oauth/sessions/{id}/code");
        let body = PasteCode {
            code: code.to_string(),
        };
        let raw = self.call(Method::POST, &path, Some(&body)).await?;
        Ok(self.ok_json(Method::POST, &path, raw)?)
    }

    /// `GET /credentials/get?sessionId=ID`: the credentials of an authenticated session.
    pub async fn credentials(&self, id: &str) -> Result<CredentialsResponse, OAuthClientError> {
        check("session id", id)?;
        let path = format!("/credentials/get?sessionId={id}");
        let raw = self.call::<()>(Method::GET, &path, None).await?;
        Ok(self.ok_json(Method::GET, &path, raw)?)
    }

    /// Polls the session every `every` until it ends or `max` passes; `on_change` sees
    /// each new state. Returns the last state seen.
    pub async fn wait_end(
        &self,
        id: &str,
        every: Duration,
        max: Duration,
        mut on_change: impl FnMut(&SessionInfo),
    ) -> Result<SessionInfo, OAuthClientError> {
        let start = Instant::now();
        let mut last: Option<(SessionState, Option<String>)> = None;
        loop {
            let s = self.session(id).await?;
            let key = (s.state, s.oauth_url.clone());
            if last.as_ref() != Some(&key) {
                on_change(&s);
                last = Some(key);
            }
            if s.state.is_terminal() || start.elapsed() >= max {
                return Ok(s);
            }
            tokio::time::sleep(every).await;
        }
    }

    fn ok_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        (status, body): (StatusCode, Bytes),
    ) -> Result<T, ClientError> {
        if !status.is_success() {
            let mut text: String = String::from_utf8_lossy(&body).chars().take(500).collect();
            if let Ok(e) = serde_json::from_slice::<guest_proto::api::ErrorBody>(&body) {
                text = e.error;
            }
            return Err(ClientError::Status {
                method,
                path: path.to_string(),
                status,
                body: text,
            });
        }
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
            path: path.to_string(),
            source,
        })
    }

    /// One request on a fresh connection, all within the timeout.
    async fn call<B: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let start = Instant::now();
        let http_err = |e: Box<dyn std::error::Error + Send + Sync>| ClientError::Http {
            method: method.clone(),
            path: path.to_string(),
            source: e,
        };
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
        let _ = stream.set_nodelay(true);
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| http_err(Box::new(e)))?),
            None => Bytes::new(),
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::CONNECTION, "close")
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = builder
            .body(Full::new(bytes))
            .map_err(|e| http_err(Box::new(e)))?;
        let left = self.timeout.saturating_sub(start.elapsed());
        let exchange = async {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| http_err(Box::new(e)))?;
            tokio::spawn(conn);
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
            Ok((parts.status, body))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// One-shot server: records the raw request, answers `status` with `body`.
    fn serve_once(status: &str, body: &str) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head, then as much body as Content-Length says.
            loop {
                let n = c.read(&mut buf).unwrap();
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).to_string();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if rest.len() >= len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            c.write_all(resp.as_bytes()).unwrap();
            String::from_utf8_lossy(&raw).to_string()
        });
        (addr, t)
    }

    const SESSION: &str = r#"{"sessionId":"s1","provider":"codex","state":"starting","createdAt":"t","updatedAt":"t","deadline":"t","pid":7}"#;

    #[tokio::test]
    async fn start_posts_json_with_the_token_and_decodes_the_session() {
        let (addr, t) = serve_once("201 Created", SESSION);
        let c = OAuthClient::new(addr).with_token(Some("tok".into()));
        let s = c.start("codex", Some("s1")).await.unwrap();
        assert_eq!(s.session_id, "s1");
        assert_eq!(s.state, SessionState::Starting);
        assert_eq!(s.pid, Some(7));
        let req = t.join().unwrap();
        assert!(
            req.starts_with("POST /v1/oauth/sessions HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.contains("authorization: Bearer tok\r\n"), "{req}");
        assert!(req.contains("content-type: application/json\r\n"), "{req}");
        assert!(
            req.ends_with(r#"{"provider":"codex","sessionId":"s1"}"#),
            "{req}"
        );
    }

    #[tokio::test]
    async fn agent_errors_keep_the_status_and_message() {
        let (addr, t) = serve_once("409 Conflict", r#"{"error":"session `s1` is cancelled"}"#);
        let c = OAuthClient::new(addr);
        let e = c.paste_code("s1", "abc").await.unwrap_err();
        match e {
            OAuthClientError::Client(ce) => {
                assert_eq!(ce.status(), Some(StatusCode::CONFLICT));
                assert!(ce.to_string().contains("session `s1` is cancelled"), "{ce}");
            }
            other => panic!("{other}"),
        }
        let req = t.join().unwrap();
        assert!(req.starts_with("POST /v1/oauth/sessions/s1/code "), "{req}");
        assert!(req.ends_with(r#"{"code":"abc"}"#), "{req}");
        assert!(!req.contains("authorization"), "no token, no header: {req}");
    }

    #[tokio::test]
    async fn bad_ids_never_reach_the_network() {
        // Nothing listens on port 9 of TEST-NET: a request would fail differently.
        let c = OAuthClient::new("192.0.2.1:9".parse::<SocketAddr>().unwrap());
        assert!(matches!(
            c.cancel("../x").await,
            Err(OAuthClientError::BadName(_))
        ));
    }

    #[test]
    fn names_are_checked_before_any_request() {
        assert!(check("session id", "s-1.a_b").is_ok());
        assert_eq!(
            check("session id", "a/b").unwrap_err().to_string(),
            "session id `a/b` must be 1-128 of A-Z a-z 0-9 . _ -"
        );
        assert!(check("provider", "").is_err());
    }
}
