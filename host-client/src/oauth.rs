//! OAuth calls to the agent (issue 7): start a login with a provider, follow the session,
//! cancel it, paste a code, fetch the credentials. The versioned `/v1/oauth/sessions` API
//! for the state, the Node agent's `/credentials/get` for the credentials.
//!
//! [`OAuthClient`] sends through a [`GuestClient`] (same token, timeout and classified
//! [`ClientError`]s); it adds the names check and the session types.

use crate::client::{decode, status_error, AgentAddr, ClientError, GuestClient, RawResponse};
use guest_proto::oauth::{
    CredentialsResponse, PasteCode, SessionInfo, SessionState, SessionsResponse, StartSession,
};
use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::time::Instant;

/// OAuth calls to one agent.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    http: GuestClient,
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
            http: GuestClient::new(addr),
        }
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.http = self.http.with_token(token);
        self
    }

    /// Per-request timeout. Starting a session waits up to 5 s on the agent for the URL
    /// only on `/auth/:provider`; `start` here answers at once.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.http = self.http.with_timeout(timeout);
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
        if raw.status == StatusCode::INTERNAL_SERVER_ERROR {
            if let Ok(s) = serde_json::from_slice::<SessionInfo>(&raw.body) {
                return Ok(s);
            }
        }
        Ok(Self::ok_json(Method::POST, "/v1/oauth/sessions", &raw)?)
    }

    /// `GET /v1/oauth/sessions`.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, OAuthClientError> {
        let path = "/v1/oauth/sessions";
        let raw = self.call::<()>(Method::GET, path, None).await?;
        let r: SessionsResponse = Self::ok_json(Method::GET, path, &raw)?;
        Ok(r.sessions)
    }

    /// `GET /v1/oauth/sessions/ID`.
    pub async fn session(&self, id: &str) -> Result<SessionInfo, OAuthClientError> {
        check("session id", id)?;
        let path = format!("/v1/oauth/sessions/{id}");
        let raw = self.call::<()>(Method::GET, &path, None).await?;
        Ok(Self::ok_json(Method::GET, &path, &raw)?)
    }

    /// `DELETE /v1/oauth/sessions/ID`: kills the CLI; answers with the ended session.
    pub async fn cancel(&self, id: &str) -> Result<SessionInfo, OAuthClientError> {
        check("session id", id)?;
        let path = format!("/v1/oauth/sessions/{id}");
        let raw = self.call::<()>(Method::DELETE, &path, None).await?;
        Ok(Self::ok_json(Method::DELETE, &path, &raw)?)
    }

    /// `POST /v1/oauth/sessions/ID/code`: types a pasted code into the CLI.
    pub async fn paste_code(&self, id: &str, code: &str) -> Result<SessionInfo, OAuthClientError> {
        check("session id", id)?;
        let path = format!("/v1/oauth/sessions/{id}/code");
        let body = PasteCode {
            code: code.to_string(),
        };
        let raw = self.call(Method::POST, &path, Some(&body)).await?;
        Ok(Self::ok_json(Method::POST, &path, &raw)?)
    }

    /// `GET /credentials/get?sessionId=ID`: the credentials of an authenticated session.
    pub async fn credentials(&self, id: &str) -> Result<CredentialsResponse, OAuthClientError> {
        check("session id", id)?;
        let path = format!("/credentials/get?sessionId={id}");
        let raw = self.call::<()>(Method::GET, &path, None).await?;
        Ok(Self::ok_json(Method::GET, &path, &raw)?)
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

    /// The decoded answer of a successful call; the agent's error otherwise.
    fn ok_json<T: DeserializeOwned>(
        method: Method,
        path: &str,
        raw: &RawResponse,
    ) -> Result<T, ClientError> {
        if !raw.status.is_success() {
            return Err(status_error(method, path, raw));
        }
        decode(path, &raw.body)
    }

    async fn call<B: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<RawResponse, ClientError> {
        self.http.request_json(method, path, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::SocketAddr;

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
