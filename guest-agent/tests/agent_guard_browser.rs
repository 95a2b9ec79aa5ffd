//! A real page in headless Chromium cannot use the agent (issue 12 item 3), even when the
//! agent runs without a token (`--insecure-no-auth`, the worst case): from a page on another
//! origin (`http://127.0.0.1:OTHER/`), no-cors POSTs to restart a service and start logins,
//! a text/plain "JSON" body and a form POST; and from a DNS-rebinding page (`rebind.test`
//! mapped to 127.0.0.1 by Chromium's resolver rules, loading the agent's own public `/viewer`),
//! same-origin requests to guarded routes. The service is not restarted, no login session
//! starts, and the same restart sent the host controller's way does work.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Headless Chromium with one CDP page connection; killed on drop.
struct Chromium {
    child: Child,
    ws: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    // DevTools keeps the connection open: read the head, then Content-Length bytes.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if len.is_some_and(|n| body.len() >= n) {
                return Some(body.to_string());
            }
        }
    }
    let text = String::from_utf8_lossy(&raw);
    text.split_once("\r\n\r\n").map(|x| x.1.to_string())
}

impl Chromium {
    fn launch(url: &str, extra: &[&str]) -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
            ])
            .args(extra)
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium is required by this test: apt-get install -y chromium");
        let port_file = profile.path().join("DevToolsActivePort");
        let start = Instant::now();
        let ws_url = loop {
            let found = std::fs::read_to_string(&port_file).ok().and_then(|t| {
                let port: u16 = t.lines().next()?.trim().parse().ok()?;
                let list = get(([127, 0, 0, 1], port).into(), "/json/list")?;
                let list: Value = serde_json::from_str(&list).ok()?;
                let page = list.as_array()?.iter().find(|t| t["type"] == "page")?;
                Some((port, page["webSocketDebuggerUrl"].as_str()?.to_string()))
            });
            if let Some(f) = found {
                break f;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "chromium's CDP page"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let stream = TcpStream::connect(("127.0.0.1", ws_url.0)).unwrap();
        let (ws, _) = tungstenite::client(ws_url.1.as_str(), stream).expect("CDP handshake");
        Chromium {
            child,
            ws,
            next_id: 1,
            _profile: profile,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// The CDP answer, or its error (e.g. the page navigated away while it ran).
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(tungstenite::Message::text(msg)).unwrap();
        loop {
            let m = self.ws.read().expect("CDP read");
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap();
            if v["id"] == id {
                if v.get("error").is_some() {
                    return Err(v);
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// Evaluates `expr` (promises awaited) once the page has loaded.
    fn eval(&mut self, expr: &str) -> Value {
        self.try_eval(expr)
            .unwrap_or_else(|e| panic!("JS failed: {e}"))
    }

    fn try_eval(&mut self, expr: &str) -> Result<Value, Value> {
        let start = Instant::now();
        loop {
            let r = self.call(
                "Runtime.evaluate",
                json!({"expression": "document.readyState", "returnByValue": true}),
            );
            if r["result"]["value"] == "complete" {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "page load");
            std::thread::sleep(Duration::from_millis(50));
        }
        let r = self.try_call(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        )?;
        if r.get("exceptionDetails").is_some() {
            return Err(r);
        }
        Ok(r["result"]["value"].clone())
    }
}

/// A page on another origin: a blank HTML page served on a free loopback port.
fn other_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let body = "<!doctype html><title>elsewhere</title><p>another origin</p>";
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn pages_in_chromium_cannot_restart_services_or_start_logins() {
    let agent = Agent::start(
        r#"
[services.serve]
command = ["{bin}", "serve", "--listen", "127.0.0.1:0", "--token-file", "{dir}/none", "--cmdline", "{dir}/none", "--netinit-state", "{dir}/netinit.json", "--oauth-config", "{dir}/oauth.toml", "--insecure-no-auth"]
required = true

[services.chatty]
command = ["sh", "-c", "sleep 1000"]
"#,
    );
    let addr = agent.listening_addr();
    let port = addr.rsplit(':').next().unwrap().to_string();
    let pid = agent.wait("chatty running", |a| {
        a.service("chatty").and_then(|s| s.pid)
    });

    // 1. A page on another origin.
    let page = other_origin();
    let mut b = Chromium::launch(
        &format!("http://{page}/"),
        &["--host-resolver-rules=MAP rebind.test 127.0.0.1"],
    );
    let js = format!(
        r#"(async () => {{
  const base = 'http://127.0.0.1:{port}';
  const out = [];
  const tries = [
    ['/services/chatty/restart', {{method: 'POST', mode: 'no-cors'}}],
    ['/auth/codex', {{method: 'POST', mode: 'no-cors'}}],
    ['/v1/oauth/sessions', {{method: 'POST', mode: 'no-cors', body: JSON.stringify({{provider: 'codex'}})}}],
    ['/v1/oauth/sessions/x/cancel', {{method: 'POST', mode: 'no-cors'}}],
  ];
  for (const [p, o] of tries) {{
    try {{ const r = await fetch(base + p, o); out.push(p + ' ' + r.type); }}
    catch (e) {{ out.push(p + ' error ' + e); }}
  }}
  return out;
}})()"#
    );
    // (The evaluation's own result does not matter, only what reached the agent.)
    let sent = b.try_eval(&js);
    eprintln!("cross-origin page sent: {sent:?}");
    // A form POST (a navigation of the whole page, so its own evaluation), submitted again
    // every 2 s until the agent's answer is the page (Chromium sometimes drops a submit made
    // right after the page's fetches).
    let submit = format!(
        "(() => {{ const f = document.createElement('form'); f.method = 'POST'; \
         f.action = 'http://127.0.0.1:{port}/services/chatty/restart'; \
         document.body.appendChild(f); f.submit(); return 1; }})()"
    );
    let start = Instant::now();
    let mut last_submit: Option<Instant> = None;
    while b.try_eval("location.pathname").ok() != Some(json!("/services/chatty/restart")) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the form POST never navigated: {:?}",
            b.try_eval("[location.href, document.title]")
        );
        if last_submit.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
            let _ = b.try_call("Runtime.evaluate", json!({ "expression": submit }));
            last_submit = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    untouched(&agent, &addr, pid);

    // 2. DNS rebinding: the agent's own public /viewer under the attacker's name.
    b.call(
        "Page.navigate",
        json!({"url": format!("http://rebind.test:{port}/viewer")}),
    );
    std::thread::sleep(Duration::from_millis(500));
    let rebound = b.eval(
        r#"(async () => {
  const a = await fetch('/services');
  const r = await fetch('/services/chatty/restart', {method: 'POST'});
  return [location.host, a.status, r.status, await r.text()];
})()"#,
    );
    eprintln!("rebinding page got: {rebound}");
    assert_eq!(rebound[1], 403, "{rebound}");
    assert_eq!(rebound[2], 403, "{rebound}");
    assert!(
        rebound[3].as_str().unwrap_or("").contains("rebind.test"),
        "{rebound}"
    );

    untouched(&agent, &addr, pid);
    let (_, metrics) = http(&addr, "GET", "/metrics", None).unwrap();
    let refused = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "guest_agent_http_requests_total{route=\"/services/{name}/restart\",code=\"4xx\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        refused >= 3,
        "the page's restarts (fetch, form, rebinding) were refused: {refused}\n{metrics}"
    );

    // The controller's way (no Origin, the agent's address as Host) does restart it.
    let (code, body) = http(&addr, "POST", "/services/chatty/restart", None).unwrap();
    assert_eq!(code, 200, "{body}");
    agent.wait("chatty restarted by the controller", |a| {
        a.service("chatty").filter(|s| s.restarts == 1)
    });
}

/// Nothing happened: same pid, no restart, no login session.
fn untouched(agent: &Agent, addr: &str, pid: u32) {
    std::thread::sleep(Duration::from_millis(500));
    let chatty = agent.service("chatty").expect("chatty");
    assert_eq!(
        (chatty.pid, chatty.restarts),
        (Some(pid), 0),
        "a page restarted the service: {chatty:?}"
    );
    let (code, body) = http(addr, "GET", "/v1/oauth/sessions", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let sessions: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        sessions["sessions"],
        json!([]),
        "a page started a login: {body}"
    );
}
