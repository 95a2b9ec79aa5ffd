//! `guest-agent serve` (the real binary) refusing what it must (issue 12 items 1-3): no token
//! configured = guarded routes refused with the way out; the opt-out is explicit and shown;
//! a hashed token on the kernel command line; requests with the exact headers Chromium sends
//! from another page (cross-origin no-cors POST, DNS rebinding Host, a text/plain "JSON" body).

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "s3cret";
/// `printf %s s3cret | sha256sum`
const TOKEN_SHA256: &str = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";

struct Serve {
    child: Child,
    addr: String,
    out: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// stdout and stderr so far (console events and logs).
    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }
}

/// `serve` alone on a free loopback port; `token`: the token file's contents; `cmdline`:
/// the kernel command line file's.
fn serve(token: Option<&str>, cmdline: &str, extra: &[&str]) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if let Some(t) = token {
        std::fs::write(d.join("token"), t).unwrap();
    }
    std::fs::write(d.join("cmdline"), cmdline).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(d)
        .arg("--token-file")
        .arg(d.join("token"))
        .arg("--cmdline")
        .arg(d.join("cmdline"))
        .arg("--netinit-state")
        .arg(d.join("netinit.json"))
        .arg("--oauth-config")
        .arg(d.join("oauth.toml"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let out = out.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if let Some(Ok(ev)) = guest_proto::ConsoleEvent::find_in_line(&line) {
                    if let guest_proto::Event::Listening { addr } = ev.event {
                        let _ = tx.send(addr);
                    }
                }
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
    }
    let addr = rx.recv_timeout(DEADLINE).expect("serve's listening event");
    Serve {
        child,
        addr,
        out,
        _dir: dir,
    }
}

/// A raw request (`head` without the request line's CRLF-CRLF end), `body` appended.
fn raw(addr: &str, head: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        text.split_once("\r\n\r\n").map_or("", |x| x.1).to_string(),
    )
}

fn health_auth(addr: &str) -> String {
    let (code, body) = http(addr, "GET", "/health", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["auth"].as_str().unwrap_or("<absent>").to_string()
}

#[test]
fn without_a_token_guarded_routes_refuse_and_say_how_to_configure_one() {
    let s = serve(None, "console=ttyS0\n", &[]);
    for (method, path) in [
        ("GET", "/services"),
        ("GET", "/credentials/get"),
        ("POST", "/services/x/restart"),
        ("POST", "/webrtc/whep"),
    ] {
        let (code, body) = http(&s.addr, method, path, Some("anything")).unwrap();
        assert_eq!(code, 503, "{method} {path}: {body}");
        for needle in [
            "/run/guest-agent/token",
            "guest_agent.token_sha256",
            "--insecure-no-auth",
        ] {
            assert!(body.contains(needle), "{method} {path}: {body}");
        }
    }
    assert_eq!(health_auth(&s.addr), "unconfigured");
    assert!(
        s.output().contains("no API token"),
        "warned at start:\n{}",
        s.output()
    );
}

#[test]
fn the_opt_out_is_explicit_reported_in_health_and_warned_about() {
    for (cmdline, flag) in [
        ("console=ttyS0\n", &["--insecure-no-auth"][..]),
        ("console=ttyS0 guest_agent.auth=none\n", &[][..]),
    ] {
        let s = serve(None, cmdline, flag);
        let (code, body) = http(&s.addr, "GET", "/services", None).unwrap();
        assert_eq!(code, 200, "{body}");
        assert_eq!(health_auth(&s.addr), "none");
        let out = s.output();
        assert!(
            out.contains("\"ev\":\"warning\"") && out.contains("authentication is OFF"),
            "console warning:\n{out}"
        );
    }
}

#[test]
fn a_hashed_token_on_the_command_line_checks_the_bearer() {
    let cmdline = format!("console=ttyS0 guest_agent.token_sha256={TOKEN_SHA256} quiet\n");
    let s = serve(None, &cmdline, &[]);
    assert_eq!(health_auth(&s.addr), "token_sha256");
    assert_eq!(
        http(&s.addr, "GET", "/services", Some(TOKEN)).unwrap().0,
        200
    );
    assert_eq!(
        http(&s.addr, "GET", "/services", Some(TOKEN_SHA256))
            .unwrap()
            .0,
        401,
        "the hash is not the token"
    );
    assert_eq!(http(&s.addr, "GET", "/services", None).unwrap().0, 401);
    drop(s);
    // Malformed: refused (never open), naming the parameter, even with the opt-out.
    let s = serve(
        None,
        "guest_agent.token_sha256=abc guest_agent.auth=none\n",
        &["--insecure-no-auth"],
    );
    let (code, body) = http(&s.addr, "GET", "/services", Some(TOKEN)).unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("guest_agent.token_sha256"), "{body}");
    assert_eq!(health_auth(&s.addr), "invalid");
}

#[test]
fn requests_a_browser_page_makes_are_refused_token_or_not() {
    let t = serve(Some(TOKEN), "console=ttyS0\n", &[]);
    let open = serve(None, "console=ttyS0\n", &["--insecure-no-auth"]);
    for (s, auth) in [
        (&t, format!("\r\nAuthorization: Bearer {TOKEN}")),
        (&open, String::new()),
    ] {
        let a = &s.addr;
        // fetch('http://127.0.0.1:PORT/…', {method:'POST', mode:'no-cors'}) from another page,
        // headers as Chromium sends them.
        for path in [
            "/services/chatty/restart",
            "/auth/codex",
            "/v1/oauth/sessions/x/cancel",
        ] {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {a}\r\nOrigin: http://evil.example\r\n\
                 Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: empty\r\n\
                 Accept: */*\r\nUser-Agent: Mozilla/5.0 HeadlessChrome{auth}"
            );
            let (code, body) = raw(a, &head, "");
            assert_eq!(code, 403, "{path}: {body}");
            assert!(
                body.contains("http://evil.example"),
                "names the origin: {body}"
            );
        }
        // A form/text body that looks like JSON (no preflight needed for text/plain).
        let head = format!(
            "POST /v1/oauth/sessions HTTP/1.1\r\nHost: {a}\r\nContent-Type: text/plain;charset=UTF-8{auth}"
        );
        let (code, body) = raw(a, &head, r#"{"provider":"codex"}"#);
        assert_eq!(code, 415, "{body}");
        assert!(body.contains("application/json"), "{body}");
        // DNS rebinding: the page's own name as Host, same-origin in the browser's eyes.
        let port = a.rsplit(':').next().unwrap();
        let head = format!(
            "GET /services HTTP/1.1\r\nHost: rebind.example:{port}\r\nSec-Fetch-Site: same-origin{auth}"
        );
        let (code, body) = raw(a, &head, "");
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("rebind.example"), "{body}");
        // A top-level navigation from another site to the callback relay passes the guard
        // (issue 14 item 3: the relayed redirect is one); its OAuth `state` is the check.
        let head = format!(
            "GET /auth/callback?code=x HTTP/1.1\r\nHost: {a}\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate{auth}"
        );
        assert_eq!(raw(a, &head, "").0, 400);
        // What the host controller / guestctl send passes the guard: JSON with its type,
        // body-less restart without one.
        let head = format!(
            "POST /v1/oauth/sessions HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json{auth}"
        );
        let (code, body) = raw(a, &head, r#"{"provider":"nope"}"#);
        assert_eq!(code, 404, "unknown provider, past the guard: {body}");
        let head = format!("POST /services/chatty/restart HTTP/1.1\r\nHost: {a}{auth}");
        let (code, body) = raw(a, &head, "");
        assert_eq!(code, 503, "no supervisor here, past the guard: {body}");
        // The /viewer page (same origin) posting its WHEP offer reaches the proxy.
        let head = format!(
            "POST /webrtc/whep HTTP/1.1\r\nHost: {a}\r\nOrigin: http://{a}\r\nSec-Fetch-Site: same-origin\r\nContent-Type: application/sdp{auth}"
        );
        let (code, body) = raw(a, &head, "v=0\r\n");
        assert!(code != 403 && code != 415, "{code}: {body}");
    }
}

/// The header-read timeout is also the idle keep-alive timeout: a connection that got its
/// answer and then sends nothing is closed after it (5 s), as is one that never sends.
#[test]
fn idle_connections_are_closed_after_the_header_timeout() {
    let s = serve(Some(TOKEN), "console=ttyS0\n", &[]);
    let mut kept = std::net::TcpStream::connect(&s.addr).unwrap();
    write!(kept, "GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr).unwrap();
    let silent = std::net::TcpStream::connect(&s.addr).unwrap();
    let start = std::time::Instant::now();
    let mut answered = false;
    let mut closed = Vec::new();
    for (name, mut c) in [
        ("kept-alive", kept.try_clone().unwrap()),
        ("silent", silent),
    ] {
        c.set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answered |= String::from_utf8_lossy(&buf[..n]).contains("200 OK"),
                Err(e) => panic!("{name}: not closed: {e}"),
            }
        }
        closed.push((name, start.elapsed()));
    }
    drop(kept);
    eprintln!("closed after {closed:?}");
    assert!(answered, "the kept-alive connection got its answer first");
    for (name, after) in closed {
        assert!(
            after >= std::time::Duration::from_secs(4) && after < std::time::Duration::from_secs(9),
            "{name} closed after {after:?}, expected ~5 s"
        );
    }
}
