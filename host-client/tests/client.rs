//! GuestClient against a stand-in agent that records what it was sent: every route, the
//! bearer token, typed bodies, error statuses with the agent's `{"error": ...}` text.

use host_client::{ClientError, ErrorClass, GuestClient};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Seen = Arc<Mutex<Vec<String>>>;

/// Answers by request line; records each request head.
async fn stand_in() -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let line = head.lines().next().unwrap_or_default().to_string();
                s.lock().unwrap().push(head);
                let (status, body): (u16, &str) = match line.as_str() {
                    "GET /services HTTP/1.1" => (
                        200,
                        r#"{"services":[{"name":"serve","state":"running","required":true,"pid":42,"restarts":0,"lastExit":null,"since":"2026-11-21T23:00:00Z","rssBytes":1000,"cpuSeconds":0.5}]}"#,
                    ),
                    "GET /services/xvfb/logs?lines=2 HTTP/1.1" => (
                        200,
                        r#"{"service":"xvfb","lines":[{"timestamp":"2026-11-21T23:00:00Z","stream":"stderr","line":"started"}]}"#,
                    ),
                    "POST /services/xvfb/restart HTTP/1.1" => {
                        (200, r#"{"service":"xvfb","action":"restarted"}"#)
                    }
                    "GET /metrics HTTP/1.1" => (200, "guest_agent_up 1\n"),
                    "GET /slow HTTP/1.1" => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        (200, "{}")
                    }
                    _ => (404, r#"{"error":"no such service: nope"}"#),
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn every_route_typed_with_the_token() {
    let (addr, seen) = stand_in().await;
    let c = GuestClient::new(addr).with_token(Some("tok".into()));
    let services = c.services().await.unwrap();
    assert_eq!(services[0].name, "serve");
    assert_eq!(services[0].pid, Some(42));
    let logs = c.service_logs("xvfb", Some(2)).await.unwrap();
    assert_eq!(logs.lines[0].line, "started");
    let r = c.restart_service("xvfb").await.unwrap();
    assert_eq!(r.action, "restarted");
    assert_eq!(c.metrics().await.unwrap(), "guest_agent_up 1\n");
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 4);
    for h in &heads {
        assert!(
            h.to_ascii_lowercase()
                .contains("authorization: bearer tok\r\n"),
            "{h}"
        );
    }

    let err = c.service_logs("nope", None).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::HttpStatus);
    assert_eq!(
        err.to_string(),
        "GET /services/nope/logs: HTTP 404 Not Found: no such service: nope"
    );
    // a bad name never reaches the wire
    let before = seen.lock().unwrap().len();
    assert!(matches!(
        c.restart_service("../etc").await,
        Err(ClientError::BadServiceName(_))
    ));
    assert_eq!(seen.lock().unwrap().len(), before);
}

#[tokio::test]
async fn no_token_no_header_and_the_timeout_covers_the_answer() {
    let (addr, seen) = stand_in().await;
    let c = GuestClient::new(addr).with_timeout(Duration::from_millis(200));
    let err = c.request(hyper::Method::GET, "/slow").await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::TimedOut);
    assert!(err.to_string().contains("waiting for the answer"), "{err}");
    let heads = seen.lock().unwrap().clone();
    assert!(
        !heads[0].to_ascii_lowercase().contains("authorization"),
        "{}",
        heads[0]
    );
}
