//! Chromium in the streamer tests: headless, driven over CDP (the viewer's browser), or on
//! the test's display as the VM's browser.

use super::{http, need, wait_for, Proc};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A Chromium on the test's display, as the VM's browser: an app window at 0,0 filling
/// `w`x`h`, on its own profile (removed with it); killed on drop.
pub struct VmChromium {
    _proc: Proc,
    _profile: tempfile::TempDir,
}

pub fn start_vm_chromium(display: &str, url: &str, w: u16, h: u16) -> VmChromium {
    need("chromium", "chromium");
    let profile = tempfile::tempdir().expect("profile");
    let child = Command::new("chromium")
        .env("DISPLAY", display)
        .args([
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--password-store=basic",
            "--window-position=0,0",
            &format!("--window-size={w},{h}"),
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--app={url}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromium in the VM display");
    VmChromium {
        _proc: Proc(child),
        _profile: profile,
    }
}

/// Headless chromium with a CDP connection to its first page.
pub struct Browser {
    page: Page,
    /// The DevTools HTTP endpoint (for more tabs).
    pub devtools: SocketAddr,
    _proc: Proc,
    _profile: tempfile::TempDir,
}

/// A CDP connection to one page (tab).
pub struct Page {
    ws: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
    /// The DevTools target id (to close the tab).
    pub target: String,
}

impl Page {
    fn connect(devtools: SocketAddr, ws_url: &str, target: String) -> Page {
        let stream = TcpStream::connect(devtools).expect("connect CDP");
        let (ws, _) = tungstenite::client(ws_url, stream).expect("CDP handshake");
        Page {
            ws,
            next_id: 1,
            target,
        }
    }

    /// Sends a CDP command and returns its result (events in between are dropped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|v| panic!("{method} failed: {v}"))
    }

    /// [`Page::call`], with the CDP error answer as `Err` (e.g. "Inspected target navigated
    /// or closed" while the page reloads).
    pub fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(tungstenite::Message::text(msg))
            .expect("CDP send");
        loop {
            let m = self.ws.read().expect("CDP read");
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).expect("CDP JSON");
            if v["id"] == id {
                if v.get("error").is_some() {
                    return Err(v);
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// Evaluates `expr` for a poll while the page may be navigating: `None` when the
    /// evaluation was cut by the navigation or threw (the old page going away).
    pub fn try_eval(&mut self, expr: &str) -> Option<Value> {
        let r = self
            .try_call(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .ok()?;
        if r.get("exceptionDetails").is_some() {
            return None;
        }
        Some(r["result"]["value"].clone())
    }

    /// Evaluates a JS expression (promises awaited) and returns its JSON value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "JS `{expr}` threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }
}

impl Browser {
    pub fn launch(url: &str) -> Browser {
        need("chromium", "chromium");
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--autoplay-policy=no-user-gesture-required",
                "--allow-loopback-in-peer-connection",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--window-size=1280,720",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromium");
        let proc = Proc(child);
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = wait_for(
            "chromium's DevToolsActivePort",
            Duration::from_secs(60),
            || {
                std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            },
        );
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let (ws_url, target) = wait_for("a page target", Duration::from_secs(30), || {
            let (code, text) = http(addr, "GET", "/json/list", &[], "");
            if code != 200 {
                return None;
            }
            let body = text.split("\r\n\r\n").nth(1)?;
            let list: Value = serde_json::from_str(body).ok()?;
            list.as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| {
                    Some((
                        t["webSocketDebuggerUrl"].as_str()?.to_string(),
                        t["id"].as_str()?.to_string(),
                    ))
                })
        });
        Browser {
            page: Page::connect(addr, &ws_url, target),
            devtools: addr,
            _proc: proc,
            _profile: profile,
        }
    }

    /// Sends a CDP command to the first page and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.page.call(method, params)
    }

    /// Evaluates a JS expression in the first page (promises awaited).
    pub fn eval(&mut self, expr: &str) -> Value {
        self.page.eval(expr)
    }

    /// [`Page::try_eval`] on the first page.
    pub fn try_eval(&mut self, expr: &str) -> Option<Value> {
        self.page.try_eval(expr)
    }

    /// Opens `url` in a new tab of the same browser (`PUT /json/new`).
    pub fn open_tab(&self, url: &str) -> Page {
        let (code, text) = http(self.devtools, "PUT", &format!("/json/new?{url}"), &[], "");
        assert_eq!(code, 200, "open a tab: {text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        let t: Value = serde_json::from_str(body).expect("/json/new JSON");
        let ws_url = t["webSocketDebuggerUrl"].as_str().expect("tab's CDP URL");
        let target = t["id"].as_str().expect("tab's id").to_string();
        Page::connect(self.devtools, ws_url, target)
    }

    /// Closes a tab opened with [`Browser::open_tab`] (its pagehide runs, as on a real close).
    pub fn close_tab(&self, page: Page) {
        let (code, text) = http(
            self.devtools,
            "GET",
            &format!("/json/close/{}", page.target),
            &[],
            "",
        );
        assert_eq!(code, 200, "close tab {}: {text}", page.target);
    }
}

/// JS returning the inbound video stats of `viewer.pc`.
pub const STATS_JS: &str = r#"(async () => {
  const s = await viewer.pc.getStats(); let r = {};
  s.forEach(x => { if (x.type === 'inbound-rtp' && x.kind === 'video') r = x; });
  return { framesDecoded: r.framesDecoded || 0, frameWidth: r.frameWidth || 0,
           frameHeight: r.frameHeight || 0, freezeCount: r.freezeCount || 0,
           state: viewer.pc.connectionState, dc: viewer.dc.readyState };
})()"#;

/// The viewer page of the streamer at `addr` in headless chromium: connected, decoding, its
/// input channel open.
pub fn viewer_playing(addr: SocketAddr) -> Browser {
    let mut b = Browser::launch(&format!("http://{addr}/viewer#token={}", super::TOKEN));
    wait_for("window.viewer", Duration::from_secs(30), || {
        (b.eval("typeof viewer") == json!("object")).then_some(())
    });
    b.eval("viewer.ready.then(() => true)");
    wait_for("decoded frames", Duration::from_secs(60), || {
        let s = b.eval(super::STATS_JS);
        (s["framesDecoded"].as_u64().unwrap_or(0) >= 5).then_some(())
    });
    wait_for("the input data channel", Duration::from_secs(30), || {
        (b.eval("viewer.dc.readyState") == json!("open")).then_some(())
    });
    b
}
