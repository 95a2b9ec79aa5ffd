//! The hybrid vsock transport (`vsock:/path/v.sock:PORT`) against a stand-in for the VM's
//! device (tests/common/hybrid.rs): the CONNECT line, HTTP on the same stream with the
//! token, and each way the device can misbehave as its own readable error. Also guestctl's
//! address parsing for the three forms. Plain AF_VSOCK is parsed only: this machine has no
//! vsock loopback, and CID 2 is the real outside host.

mod common;

use common::hybrid::{device, Port};
use host_client::oauth::OAuthClient;
use host_client::transport::VsockHandshakeError;
use host_client::{AgentAddr, ClientError, ErrorClass, GuestClient};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Seen = Arc<Mutex<Vec<String>>>;

/// A stand-in agent that records request heads: `/health` ok, `/v1/oauth/sessions` empty.
async fn agent() -> (SocketAddr, Seen) {
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
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                s.lock().unwrap().push(head);
                let body = match path.as_str() {
                    "/health" => common::health("ok"),
                    "/v1/oauth/sessions" => r#"{"sessions":[]}"#.to_string(),
                    _ => r#"{"error":"not found"}"#.to_string(),
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

fn vsock(path: &std::path::Path, port: u32) -> AgentAddr {
    format!("vsock:{}:{port}", path.display()).parse().unwrap()
}

#[tokio::test]
async fn http_over_the_hybrid_socket_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, heads) = agent().await;
    let dev = device(dir.path(), HashMap::from([(8080, Port::Agent(agent))]));
    let c = GuestClient::new(vsock(&dev.path, 8080)).with_token(Some("tok".into()));
    let h = c.health().await.unwrap();
    assert_eq!(h.status, "ok");
    let sessions = OAuthClient::new(vsock(&dev.path, 8080))
        .with_token(Some("tok".into()))
        .sessions()
        .await
        .unwrap();
    assert!(sessions.is_empty());
    assert_eq!(
        *dev.seen.lock().unwrap(),
        vec!["CONNECT 8080".to_string(), "CONNECT 8080".to_string()]
    );
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2);
    for h in &heads {
        let h = h.to_ascii_lowercase();
        // the agent's Host guard accepts loopback names; vsock has no host name
        assert!(h.contains("host: localhost\r\n"), "{h}");
        assert!(h.contains("authorization: bearer tok\r\n"), "{h}");
    }
}

#[tokio::test]
async fn a_reply_in_slow_pieces_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, _) = agent().await;
    let dev = device(
        dir.path(),
        HashMap::from([(8080, Port::Slow(agent, Duration::from_millis(15)))]),
    );
    let h = GuestClient::new(vsock(&dev.path, 8080))
        .health()
        .await
        .unwrap();
    assert_eq!(h.status, "ok");
}

#[tokio::test]
async fn a_wrong_reply_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device(
        dir.path(),
        HashMap::from([
            (1, Port::Reply(b"ERR connection refused\n".to_vec())),
            (2, Port::Reply(b"OK port\n".to_vec())),
            (3, Port::Reply(b"OK 10".to_vec())),
            (4, Port::Reply(vec![b'x'; 200])),
        ]),
    );
    let path = dev.path.clone();
    let err = |port| {
        let path = path.clone();
        async move {
            GuestClient::new(vsock(&path, port))
                .health()
                .await
                .unwrap_err()
        }
    };
    let e = err(1).await;
    assert!(matches!(e, ClientError::Handshake { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Other);
    assert_eq!(
        e.to_string(),
        format!(
            "vsock:{}:1: vsock handshake: the VM's device answered `ERR connection refused` instead of OK <port>",
            dev.path.display()
        )
    );
    let e = err(2).await.to_string();
    assert!(e.contains("`port` is not a port number"), "{e}");
    let e = err(3).await;
    assert!(
        matches!(&e, ClientError::Handshake { source: VsockHandshakeError::Truncated { partial, .. }, .. } if partial == "OK 10"),
        "{e:?}"
    );
    let e = err(4).await.to_string();
    assert!(e.contains("without a newline (at most 64 expected)"), "{e}");
}

#[tokio::test]
async fn close_after_connect_is_no_listener_and_counts_as_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device(dir.path(), HashMap::from([(8080, Port::Close)]));
    let e = GuestClient::new(vsock(&dev.path, 8080))
        .health()
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Refused);
    assert!(
        e.to_string().contains("no listener on guest port 8080"),
        "{e}"
    );
}

#[tokio::test]
async fn a_missing_socket_or_a_silent_device_are_connect_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    let e = GuestClient::new(vsock(&missing, 8080))
        .health()
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("none.sock"), "{e}");
    // a device that accepts and never answers: the timeout covers the handshake
    let path = dir.path().join("mute.sock");
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let t = Instant::now();
    let e = GuestClient::new(vsock(&path, 8080))
        .with_timeout(Duration::from_millis(300))
        .health()
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::TimedOut, "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
}

fn guestctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args(args)
        .env_remove("GUESTCTL_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn guestctl_takes_every_form_and_names_the_bad_part() {
    for (addr, part) in [
        ("vsock:/run/v.sock:http", "the port `http` is not a number"),
        ("vsock:/run/v.sock", "no port"),
        ("vsock:2:8080", "CID 2 is not a VM's"),
        ("vsock:vm7:8080", "`vm7` is neither a context id"),
        ("vm7", "is not IP[:PORT]"),
    ] {
        for args in [
            vec!["health", addr],
            vec!["wait", addr, "--timeout", "1s"],
            vec!["oauth", "status", addr],
            vec!["credentials", addr, "s1"],
        ] {
            let o = guestctl(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(part), "{args:?}: {err}");
        }
    }
}

#[test]
fn guestctl_health_over_hybrid_vsock() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = rt.block_on(async {
        let (agent, _) = agent().await;
        device(dir.path(), HashMap::from([(8080, Port::Agent(agent))])).path
    });
    let addr = format!("vsock:{}:8080", path.display());
    let o = guestctl(&["health", &addr]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok"));
    let o = guestctl(&["diagnose", "/dev/null", "--addr", &addr]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("did not answer"), "{out}");
    // no listener on another port: health exits 5 and says so
    let addr = format!("vsock:{}:9", path.display());
    let o = guestctl(&["health", &addr]);
    assert_eq!(o.status.code(), Some(5));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no listener on guest port 9"), "{err}");
    drop(rt);
}
