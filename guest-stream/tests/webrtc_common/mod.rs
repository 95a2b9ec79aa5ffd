//! Shared fixtures of the streamer tests: Xvfb, an X window that changes colour and records
//! the input it receives, the streamer run in-process, and ([`chromium`]) headless chromium
//! driven over CDP.
//! Missing programs fail the test loudly (they are CI dependencies, not optional).
#![allow(dead_code)]

use serde_json::Value;
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
mod chromium;
#[allow(unused_imports)]
pub use bare::*;
#[allow(unused_imports)] // tests without a browser use none of it
pub use chromium::*;

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
