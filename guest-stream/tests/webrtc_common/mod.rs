//! Shared fixtures of the streamer tests: Xvfb, an X window that changes colour and records
//! the input it receives, the streamer run in-process, and headless chromium driven over CDP.
//! Missing programs fail the test loudly (they are CI dependencies, not optional).
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::*;
use x11rb::protocol::Event;

mod bare;
#[allow(unused_imports)]
pub use bare::*;

pub const TOKEN: &str = "webrtc-test-token";

/// Fails the test when `prog` is not installed.
pub fn need(prog: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{prog} is required by this test: apt-get install -y {package}"
    );
}

/// Polls `f` every 50 ms until it returns Some, failing after `limit` with `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child killed on drop.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Xvfb on a free display number (it picks one and tells us through -displayfd).
pub struct Xvfb {
    pub display: String,
    _proc: Proc,
}

pub fn start_xvfb(width: u16, height: u16) -> Xvfb {
    need("Xvfb", "xvfb");
    let mut child = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            &format!("{width}x{height}x24"),
            "-nolisten",
            "tcp",
            "-noreset",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn Xvfb");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("Xvfb stdout"))
        .read_line(&mut line)
        .expect("read display number from Xvfb");
    let n: u32 = line.trim().parse().expect("Xvfb printed a display number");
    Xvfb {
        display: format!(":{n}"),
        _proc: Proc(child),
    }
}

/// What the test window saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    ButtonPress { button: u8, x: i16, y: i16 },
    KeyPress { keysym: u32 },
}

/// A full-screen window that changes colour every frame and records clicks and keys.
pub struct TestWindow {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TestWindow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn start_window(display: &str) -> TestWindow {
    let (conn, screen_num) = x11rb::connect(Some(display)).expect("connect test window");
    let screen = conn.setup().roots[screen_num].clone();
    let win = conn.generate_id().expect("id");
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        win,
        screen.root,
        0,
        0,
        screen.width_in_pixels,
        screen.height_in_pixels,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new()
            .background_pixel(0x0020_4080)
            .override_redirect(1)
            .event_mask(EventMask::BUTTON_PRESS | EventMask::KEY_PRESS | EventMask::EXPOSURE),
    )
    .expect("create window");
    conn.map_window(win).expect("map");
    conn.flush().expect("flush");
    // Viewable once the first Expose arrives; then it can take the focus.
    loop {
        if let Event::Expose(_) = conn.wait_for_event().expect("event") {
            break;
        }
    }
    conn.set_input_focus(InputFocus::PARENT, win, x11rb::CURRENT_TIME)
        .expect("focus");
    let (min, max) = (conn.setup().min_keycode, conn.setup().max_keycode);
    let map = conn
        .get_keyboard_mapping(min, max - min + 1)
        .expect("keymap")
        .reply()
        .expect("keymap reply");
    conn.flush().expect("flush");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
    let thread = std::thread::spawn(move || {
        let per = map.keysyms_per_keycode as usize;
        let mut i: u32 = 0;
        while !st.load(Ordering::SeqCst) {
            i = i.wrapping_add(1);
            let colour = (i.wrapping_mul(0x0003_0507)) & 0x00ff_ffff;
            let _ = conn.change_window_attributes(
                win,
                &ChangeWindowAttributesAux::new().background_pixel(colour),
            );
            let _ = conn.clear_area(false, win, 0, 0, 0, 0);
            let _ = conn.flush();
            while let Ok(Some(ev)) = conn.poll_for_event() {
                let rec = match ev {
                    Event::ButtonPress(b) => Some(Seen::ButtonPress {
                        button: b.detail,
                        x: b.event_x,
                        y: b.event_y,
                    }),
                    Event::KeyPress(k) => {
                        let idx = (k.detail - min) as usize * per;
                        Some(Seen::KeyPress {
                            keysym: map.keysyms.get(idx).copied().unwrap_or(0),
                        })
                    }
                    _ => None,
                };
                if let Some(r) = rec {
                    s.lock().expect("seen").push(r);
                }
            }
            std::thread::sleep(Duration::from_millis(33));
        }
    });
    TestWindow {
        seen,
        stop,
        thread: Some(thread),
    }
}

/// A free loopback TCP port (bound and released).
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Minimal HTTP/1.1 request (one per connection); returns (status, headers + body text),
/// status 0 when nothing listens.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new()); // not listening (yet)
    };
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if method != "GET" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write");
    let mut r = BufReader::new(s);
    let mut head = String::new();
    let mut len = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).expect("read header") == 0 {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            }
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).expect("read body");
        }
        None => {
            let _ = r.read_to_end(&mut body);
        }
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head + &String::from_utf8_lossy(&body))
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

/// The streamer run in-process on its own runtime thread, TCP on 127.0.0.1:`port`.
pub struct StreamerInProc {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

pub fn start_streamer(display: &str, width: u16, height: u16) -> StreamerInProc {
    start_streamer_with(display, width, height, &[])
}

/// As [`start_streamer`], with extra command-line arguments.
pub fn start_streamer_with(
    display: &str,
    width: u16,
    height: u16,
    extra: &[String],
) -> StreamerInProc {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct A {
        #[command(flatten)]
        w: guest_stream::WebrtcArgs,
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut argv = vec![
        "guest-stream".to_string(),
        format!("--display={display}"),
        format!("--width={width}"),
        format!("--height={height}"),
        format!("--socket={}", dir.path().join("webrtc.sock").display()),
        format!("--listen={addr}"),
        "--ice-ip=127.0.0.1".into(),
        format!("--token-file={}", dir.path().join("token").display()),
        format!("--cmdline={}", dir.path().join("no-cmdline").display()),
    ];
    argv.extend(extra.iter().cloned());
    let args = A::parse_from(argv).w;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        if let Err(e) = rt.block_on(guest_stream::run(args)) {
            panic!("streamer failed: {e}");
        }
    });
    wait_for("the streamer's HTTP", Duration::from_secs(30), || {
        TcpStream::connect(addr).ok()
    });
    StreamerInProc { addr, dir }
}

/// `guest-agent serve` (the real binary, no supervisor) on a free port, proxying to the
/// streamer socket `socket`; killed on drop.
pub struct ServeChild {
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    _proc: Proc,
}

pub fn start_serve(socket: &std::path::Path) -> ServeChild {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("token"), TOKEN).expect("token");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let child = Command::new(guestkit_tests::bins::bin("guest-agent"))
        .arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--state-dir")
        .arg(d)
        .arg("--token-file")
        .arg(d.join("token"))
        .arg("--cmdline")
        .arg(d.join("no-cmdline"))
        .arg("--netinit-state")
        .arg(d.join("netinit.json"))
        .arg("--oauth-config")
        .arg(d.join("oauth.toml"))
        .env("GUEST_AGENT_WEBRTC_SOCKET", socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let proc = Proc(child);
    wait_for("serve's /health", Duration::from_secs(30), || {
        (http(addr, "GET", "/health", &[], "").0 == 200).then_some(())
    });
    ServeChild {
        addr,
        _dir: dir,
        _proc: proc,
    }
}

/// serve's `/health` as JSON (None until it answers 200 with JSON).
pub fn health(addr: SocketAddr) -> Option<Value> {
    let (code, text) = http(addr, "GET", "/health", &[], "");
    if code != 200 {
        return None;
    }
    serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
}

/// The streamer's `GET /webrtc/status` as JSON (None until it answers 200).
pub fn streamer_status(addr: SocketAddr) -> Option<Value> {
    let (code, text) = http(
        addr,
        "GET",
        "/webrtc/status",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    );
    if code != 200 {
        return None;
    }
    serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
}
