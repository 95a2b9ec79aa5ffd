//! A minimal HTTP/1.1 agent stand-in for the wait tests: answers `/ready` and `/health` with
//! whatever the test scripts, counts requests, closes each connection after one answer.

#![allow(dead_code)]

pub mod hybrid;
pub mod netns;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the stand-in answers request number `n` (0-based) for `path`: (status, JSON body).
pub type Script = dyn Fn(&str, u32) -> (u16, String) + Send + Sync;

pub fn ready_ok(path: &str, _n: u32) -> (u16, String) {
    match path {
        "/ready" => (200, r#"{"ready":true,"reasons":[]}"#.into()),
        "/health" => (200, health("ok")),
        _ => (404, r#"{"error":"not found"}"#.into()),
    }
}

pub fn health(status: &str) -> String {
    format!(r#"{{"status":"{status}","timestamp":"2026-11-21T23:00:00Z","activeSessions":0}}"#)
}

/// A port nothing listens on (bound then released).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Serves `script` on `listener` until the task is dropped; returns the request counter.
pub fn serve(listener: TcpListener, script: Arc<Script>) -> Arc<AtomicU32> {
    let count = Arc::new(AtomicU32::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            let n = c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let text = String::from_utf8_lossy(&buf);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = script(&path, n);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    count
}
