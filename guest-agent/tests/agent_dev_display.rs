//! `guest-agent supervise --dev --display WxH` (issue 11): the browser VM's screen services on
//! a developer's machine without a VM — Xvfb, openbox when installed, the streamer, `serve` —
//! and the viewer URL printed. Fails (does not skip) without Xvfb: a CI dependency.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn get(addr: &str, path: &str, token: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    )
}

#[test]
fn dev_display_runs_xvfb_the_streamer_and_serve_and_prints_the_viewer_url() {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_guest-agent"))
        .args(["supervise", "--dev", "--display", "640x360", "--state-dir"])
        .arg(state.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn guest-agent supervise --dev");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let end = Instant::now() + Duration::from_secs(60);
    let url = loop {
        let line = rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .expect("no viewer URL printed");
        if let Some(u) = line.split("viewer: ").nth(1) {
            break u.to_string();
        }
    };
    let rest = url.strip_prefix("http://").expect("http URL");
    let (addr, frag) = rest
        .split_once("/viewer#token=")
        .expect("viewer URL with the token");
    let token = std::fs::read_to_string(state.path().join("token")).unwrap();
    assert_eq!(frag, token.trim(), "the URL carries the dev token");
    let openbox = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("openbox").is_file()))
        .unwrap_or(false);
    let mut want = vec!["serve", "xvfb", "webrtc"];
    if openbox {
        want.push("openbox");
    }
    let end = Instant::now() + Duration::from_secs(60);
    let health = loop {
        let (code, body) = get(addr, "/health", frag);
        let h: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let running = |n: &str| {
            h["services"]
                .as_array()
                .is_some_and(|l| l.iter().any(|s| s["name"] == n && s["state"] == "running"))
        };
        if code == 200 && want.iter().all(|n| running(n)) && h["webrtc"]["state"] == "running" {
            break h;
        }
        assert!(Instant::now() < end, "not all of {want:?} running: {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The streamer answers through serve, with the token.
    let (code, status) = get(addr, "/webrtc/status", frag);
    assert_eq!(code, 200, "{status}");
    assert!(status.contains("\"pipeline\""), "{status}");
    let (code, _) = get(addr, "/webrtc/status", "wrong");
    assert_eq!(code, 401);
    eprintln!("dev screen services: {}", health["services"]);
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < end,
            "supervise --dev did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
