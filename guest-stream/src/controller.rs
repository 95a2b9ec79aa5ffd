//! Controller-mode signaling: the host controller's polling protocol (what the old Python
//! helper spoke), polled in tens of milliseconds instead of once a second, and for as long as
//! the streamer runs (no exit after 60 s without a viewer).
//!
//! - `GET {controller}/api/webrtc/ice-servers` → `{iceServers:[{urls, username?, credential?}]}`
//!   (a bare array is accepted too; `urls` may be a string), fetched again for every new
//!   offer, so TURN credentials that expire are renewed (on a failed fetch the last list
//!   stays);
//! - poll `GET .../session/{id}/offer` → `{offer:{type,sdp}, candidates:[...]}` (404/204 or a
//!   null offer while there is none);
//! - `POST .../session/{id}/answer` `{answer:{type:"answer", sdp}}` (after ICE gathering, capped),
//!   or, when the offer is refused, `{answer:null, error:{code, message}}` so the frontend can
//!   show why instead of polling for an answer that never comes (`code`: `viewers_full`,
//!   `no_common_codec`, `bad_offer`, `negotiation_failed`);
//! - `POST .../session/{id}/candidate` `{candidate:{candidate, sdpMid, sdpMLineIndex}}` for each
//!   of our candidates (they are also in the answer);
//! - poll `GET .../session/{id}/candidates/browser` → `{candidates:[...]}` (or an array) while
//!   a viewer is connecting or connected.
//!
//! Every request has one deadline for all of it (connect, headers and body:
//! [`ControllerOptions::request_timeout`]) and a cap on the response body ([`MAX_BODY`]): a
//! controller, or whatever answers at its address, that stalls or talks for ever costs one
//! failed poll, after which polling goes on.

use super::peer::IceServer;
use super::server::Streamer;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("controller URL {0:?} must look like http://host:port")]
    Url(String),
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: bad JSON: {reason}")]
    Json { url: String, reason: String },
}

/// Where the controller is and which session we serve.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// `http://host:port` (plain HTTP on the host's bridge; no TLS inside the VM).
    pub base: String,
    pub session: String,
    /// Fastest poll interval (while something is happening).
    pub poll_min: Duration,
    /// Slowest poll interval (idle, backing off).
    pub poll_max: Duration,
    /// Longest one request may take, connect to last body byte.
    pub request_timeout: Duration,
}

/// Largest response body read from the controller (an offer with its candidates is a few
/// KiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// Default [`ControllerOptions::request_timeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Aborts the connection task of a request when the request ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A JSON response: status and parsed body (Null when empty or not JSON), all of it within
/// `timeout` and at most [`MAX_BODY`] bytes of body.
pub async fn request(
    method: Method,
    url: &str,
    body: Option<Value>,
    timeout: Duration,
) -> Result<(u16, Value), ControllerError> {
    match tokio::time::timeout(timeout, request_unbounded(method, url, body)).await {
        Ok(r) => r,
        Err(_) => Err(ControllerError::Http {
            url: url.to_string(),
            reason: format!("no complete response within {timeout:?}"),
        }),
    }
}

async fn request_unbounded(
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<(u16, Value), ControllerError> {
    let err = |reason: String| ControllerError::Http {
        url: url.to_string(),
        reason,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ControllerError::Url(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| err(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| err(e.to_string()))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| err(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| err(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                err(format!("response body over {MAX_BODY} bytes"))
            } else {
                err(e.to_string())
            }
        })?
        .to_bytes();
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok((status, v))
}

/// Parses an ICE server list (object with `iceServers` or a bare array): the controller's
/// answer and `--ice-servers-file`. An entry a browser would refuse (`RTCPeerConnection`
/// throws on it, so the viewer would get no peer at all) is an error naming it: a URL that is
/// not `stun:`/`stuns:`/`turn:`/`turns:`, a TURN server without username and credential, a
/// field of the wrong type. Credentials are never echoed.
pub fn parse_ice_servers(v: &Value) -> Result<Vec<IceServer>, String> {
    let list = v
        .get("iceServers")
        .or_else(|| v.get("ice_servers"))
        .unwrap_or(v);
    let Some(items) = list.as_array() else {
        return Err("expected an array of ICE servers or {iceServers: [...]}".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, s)| parse_ice_server(i, s))
        .collect()
}

fn parse_ice_server(i: usize, s: &Value) -> Result<IceServer, String> {
    let urls: Vec<String> = match &s["urls"] {
        Value::String(u) => vec![u.clone()],
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(j, u)| {
                u.as_str()
                    .map(String::from)
                    .ok_or_else(|| format!("iceServers[{i}].urls[{j}]: not a string"))
            })
            .collect::<Result<_, _>>()?,
        Value::Null => return Err(format!("iceServers[{i}].urls: missing")),
        _ => {
            return Err(format!(
                "iceServers[{i}].urls: not a string or a list of strings"
            ))
        }
    };
    if urls.is_empty() {
        return Err(format!("iceServers[{i}].urls: empty"));
    }
    let text = |field: &str| match &s[field] {
        Value::Null => Ok(None),
        Value::String(v) => Ok(Some(v.clone())),
        _ => Err(format!("iceServers[{i}].{field}: not a string")),
    };
    let (username, credential) = (text("username")?, text("credential")?);
    for (j, url) in urls.iter().enumerate() {
        let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
        match scheme.as_str() {
            "stun" | "stuns" => {}
            "turn" | "turns" if username.is_some() && credential.is_some() => {}
            "turn" | "turns" => {
                return Err(format!(
                    "iceServers[{i}]: {scheme}: server {url:?} needs both username and credential"
                ))
            }
            _ => {
                return Err(format!(
                    "iceServers[{i}].urls[{j}]: {url:?} is not a stun:, stuns:, turn: or turns: URL"
                ))
            }
        }
    }
    Ok(IceServer {
        urls,
        username,
        credential,
    })
}

/// ICE candidates in a JSON value: `[...]` or `{candidates:[...]}`; strings or init objects.
pub fn parse_candidates(v: &Value) -> Vec<rtc::peer_connection::transport::RTCIceCandidateInit> {
    let list = v.get("candidates").unwrap_or(v);
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| match c {
                    Value::String(s) => {
                        Some(rtc::peer_connection::transport::RTCIceCandidateInit {
                            candidate: s.clone(),
                            ..Default::default()
                        })
                    }
                    Value::Object(_) => serde_json::from_value(c.clone()).ok(),
                    _ => None,
                })
                .filter(|c: &rtc::peer_connection::transport::RTCIceCandidateInit| {
                    !c.candidate.is_empty()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Our candidates, from the `a=candidate:` lines of the answer, with their m-line index/mid.
pub fn sdp_candidates(sdp: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut mline: i64 = -1;
    let mut mid: Option<String> = None;
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            mline += 1;
            mid = None;
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.to_string());
        } else if let Some(c) = line.strip_prefix("a=") {
            if c.starts_with("candidate:") && mline >= 0 {
                out.push(json!({"candidate": c, "sdpMid": mid, "sdpMLineIndex": mline}));
            }
        }
    }
    out
}

/// Fetches the controller's ICE servers for the offer about to be answered; on failure the
/// last list stays (a controller that is briefly away must not cost the viewer its TURN).
pub(crate) async fn refresh_ice_servers(streamer: &Streamer, base: &str, t: Duration) {
    match request(
        Method::GET,
        &format!("{base}/api/webrtc/ice-servers"),
        None,
        t,
    )
    .await
    {
        Ok((200, v)) => match parse_ice_servers(&v) {
            Ok(servers) => streamer.set_ice_servers(servers).await,
            Err(e) => tracing::warn!("controller ice-servers: {e}; keeping the last list"),
        },
        Ok((code, _)) => {
            tracing::warn!("controller ice-servers: HTTP {code}; keeping the last list")
        }
        Err(e) => tracing::warn!("controller ice-servers: {e}; keeping the last list"),
    }
}

/// Polls the controller for offers until the process ends. Never returns Ok.
pub async fn run(streamer: Arc<Streamer>, opts: ControllerOptions) -> Result<(), ControllerError> {
    let base = opts.base.trim_end_matches('/').to_string();
    if !base.starts_with("http://") {
        return Err(ControllerError::Url(base));
    }
    let session = format!("{base}/api/webrtc/session/{}", opts.session);
    let t = opts.request_timeout;
    streamer.fetch_ice_servers_from(base.clone(), t);
    let mut delay = opts.poll_min;
    let mut last_offer: Option<String> = None;
    let mut current: Option<String> = None;
    let mut seen_candidates = 0usize;
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(opts.poll_max);
        // The current viewer's trickled browser candidates.
        if let Some(id) = &current {
            if !streamer.has_viewer(id).await {
                current = None;
            } else if let Ok((200, v)) = request(
                Method::GET,
                &format!("{session}/candidates/browser"),
                None,
                t,
            )
            .await
            {
                let cands = parse_candidates(&v);
                if cands.len() > seen_candidates {
                    for c in &cands[seen_candidates..] {
                        streamer.add_candidate(id, c.clone()).await;
                    }
                    seen_candidates = cands.len();
                    delay = opts.poll_min;
                }
            }
        }
        let (code, v) = match request(Method::GET, &format!("{session}/offer"), None, t).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("{e}");
                continue;
            }
        };
        let Some(sdp) = (code == 200)
            .then(|| v["offer"]["sdp"].as_str().map(String::from))
            .flatten()
        else {
            continue;
        };
        if last_offer.as_deref() == Some(sdp.as_str()) {
            continue;
        }
        last_offer = Some(sdp.clone());
        delay = opts.poll_min;
        if let Some(old) = current.take() {
            streamer.remove_viewer(&old).await;
        }
        refresh_ice_servers(&streamer, &base, t).await;
        let (id, answer) = match streamer.add_viewer(sdp).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("controller offer refused: {e}");
                let body =
                    json!({"answer": null, "error": {"code": e.code(), "message": e.to_string()}});
                if let Err(e) =
                    request(Method::POST, &format!("{session}/answer"), Some(body), t).await
                {
                    tracing::warn!("posting the refusal: {e}");
                }
                continue;
            }
        };
        for c in parse_candidates(&v) {
            streamer.add_candidate(&id, c).await;
        }
        seen_candidates = 0;
        let body = json!({"answer": {"type": "answer", "sdp": answer}});
        if let Err(e) = request(Method::POST, &format!("{session}/answer"), Some(body), t).await {
            tracing::warn!("posting the answer: {e}");
        }
        for c in sdp_candidates(&answer) {
            let _ = request(
                Method::POST,
                &format!("{session}/candidate"),
                Some(json!({ "candidate": c })),
                t,
            )
            .await;
        }
        current = Some(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_both_shapes() {
        let v = json!({"iceServers": [{"urls": "stun:a:3478"}, {"urls": ["turn:b:3478?transport=udp"], "username": "u", "credential": "c"}]});
        let s = parse_ice_servers(&v).expect("parse");
        assert_eq!(s[0].urls, vec!["stun:a:3478"]);
        assert_eq!(s[1].username.as_deref(), Some("u"));
        assert_eq!(parse_ice_servers(&json!([])).expect("array"), vec![]);
        assert_eq!(
            parse_ice_servers(&json!({"iceServers": [{"nourls": 1}]}))
                .err()
                .as_deref(),
            Some("iceServers[0].urls: missing")
        );
    }

    #[test]
    fn an_ice_server_a_browser_would_refuse_is_named() {
        let err = |v: Value| parse_ice_servers(&v).expect_err("must fail");
        assert_eq!(
            err(json!([{"urls": 42}])),
            "iceServers[0].urls: not a string or a list of strings"
        );
        assert_eq!(
            err(json!([{"urls": "stun:a:1"}, {"urls": ["stun:b:1", 7]}])),
            "iceServers[1].urls[1]: not a string"
        );
        assert_eq!(err(json!([{"urls": []}])), "iceServers[0].urls: empty");
        assert_eq!(
            err(json!([{"urls": ["stun:a:1", "http://a/"]}])),
            r#"iceServers[0].urls[1]: "http://a/" is not a stun:, stuns:, turn: or turns: URL"#
        );
        let no_credential = err(json!([{"urls": "turn:t:3478", "username": "u"}]));
        assert_eq!(
            no_credential,
            r#"iceServers[0]: turn: server "turn:t:3478" needs both username and credential"#
        );
        let bad_type = err(json!([{"urls": "turn:t:3478", "username": "u", "credential": 5}]));
        assert_eq!(bad_type, "iceServers[0].credential: not a string");
        // A credential is never part of an error.
        let secret = err(json!([{"urls": "turns:t:5349", "credential": "s3cret"}]));
        assert!(!secret.contains("s3cret"), "{secret}");
        // What browsers take passes, whatever the case of the scheme.
        let ok = parse_ice_servers(&json!([
            {"urls": "STUN:a:1"},
            {"urls": ["turns:t:5349?transport=tcp"], "username": "u", "credential": "c"}
        ]))
        .expect("valid list");
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn candidates_from_sdp_carry_mline_and_mid() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\na=candidate:2 1 udp 2130706431 127.0.0.1 40001 typ host\r\n";
        let c = sdp_candidates(sdp);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1]["sdpMLineIndex"], json!(1));
        assert_eq!(c[1]["sdpMid"], json!("1"));
        assert!(c[0]["candidate"]
            .as_str()
            .unwrap_or("")
            .starts_with("candidate:1 "));
    }

    #[test]
    fn browser_candidates_accept_strings_and_objects() {
        let v = json!({"candidates": ["candidate:1 1 udp 1 10.0.0.1 5 typ host", {"candidate": "candidate:2 1 udp 1 10.0.0.1 6 typ host", "sdpMid": "0", "sdpMLineIndex": 0}, {"candidate": ""}]});
        let c = parse_candidates(&v);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].sdp_mid.as_deref(), Some("0"));
    }

    /// A one-connection HTTP server on loopback: reads the request head, writes `head`, then
    /// runs `then` on the socket; returns its address and `then`'s result.
    async fn fake_server<F, Fut>(
        head: &'static str,
        then: F,
    ) -> (String, tokio::task::JoinHandle<u64>)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = u64> + Send,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read request");
                assert!(n > 0, "client closed before the request head");
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(head.as_bytes()).await.expect("write head");
            then(s).await
        });
        (format!("http://{addr}/api/x"), task)
    }

    #[tokio::test]
    async fn a_body_that_stalls_ends_the_request_within_its_deadline() {
        let (url, _server) = fake_server(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"offer\":",
            |s| async move {
                // Keep the connection open and silent.
                std::future::pending::<()>().await;
                drop(s);
                0
            },
        )
        .await;
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            request(Method::GET, &url, None, Duration::from_millis(500)),
        )
        .await
        .expect("request() must end on its own deadline");
        match r {
            Err(ControllerError::Http { reason, .. }) => {
                assert!(reason.contains("no complete response"), "{reason}")
            }
            other => panic!("expected a deadline error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_endless_body_is_cut_at_the_cap() {
        let (url, server) = fake_server(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            |mut s| async move {
                use tokio::io::AsyncWriteExt;
                // 64 MiB at most, so that a client without the cap ends too (with an Ok).
                let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                let mut sent = 0u64;
                while sent < 64 * 1024 * 1024 && s.write_all(chunk.as_bytes()).await.is_ok() {
                    sent += 0x10000;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
                sent
            },
        )
        .await;
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            request(Method::GET, &url, None, Duration::from_secs(10)),
        )
        .await
        .expect("request() ends");
        match r {
            Err(ControllerError::Http { reason, .. }) => {
                assert!(reason.contains("over 1048576 bytes"), "{reason}")
            }
            other => panic!("expected the body cap, got {other:?}"),
        }
        // The connection was dropped right there: the server wrote the cap plus what the
        // socket buffers held, not what 5 s of loopback carry.
        let sent = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server saw the connection end")
            .expect("server task");
        assert!(sent < 64 * 1024 * 1024, "server wrote {sent} bytes");
    }

    #[tokio::test]
    async fn a_normal_answer_is_parsed() {
        let (url, _server) = fake_server(
            "HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"iceServers\":[]}",
            |s| async move {
                drop(s);
                0
            },
        )
        .await;
        let (code, v) = request(Method::GET, &url, None, Duration::from_secs(5))
            .await
            .expect("request");
        assert_eq!(code, 200);
        assert_eq!(v, json!({"iceServers": []}));
    }
}
