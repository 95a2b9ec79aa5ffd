//! The stream's input reaches Firefox (issue 14 item 5): Xvfb, Debian's Firefox ESR started
//! the way the agent starts the VM's browser (`oauth::browser::open`: kiosk, the session's
//! profile, as the login user when root) on a page whose one text field fills the window
//! and reports what happens to it (mousedown, keydown, its value) to a loopback server; the
//! streamer in-process; headless Chromium playing `/viewer` as the person's browser. A
//! click and typed text in the viewer must end up as the text field's value in Firefox.
//! Fails (does not skip) when Xvfb, chromium or firefox-esr is missing.

// The login-user helpers of guest-agent's OAuth tests: Firefox is started as the agent starts it.
#[path = "../../guest-agent/tests/oauth_support/mod.rs"]
mod oauth_support;
mod webrtc_common;

use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use webrtc_common::*;

const W: u16 = 1280;
const H: u16 = 720;
const TYPED: &str = "hello firefox 42";

const PAGE: &str = r#"<!doctype html><html><head><title>input</title></head>
<body style="margin:0"><input id="t" autofocus
 style="position:absolute;left:0;top:0;width:100%;height:100%;font-size:48px;border:0">
<script>
const t = document.getElementById('t');
const report = (k, v) => fetch('/ev?' + k + '=' + encodeURIComponent(v)).catch(() => {});
t.addEventListener('input', () => report('value', t.value));
document.addEventListener('keydown', e => report('keydown', e.key));
document.addEventListener('mousedown', e => report('mousedown', e.clientX + ',' + e.clientY));
report('loaded', '1');
</script></body></html>"#;

/// Serves [`PAGE`] and records `/ev?k=v` reports, in order.
struct PageServer {
    addr: SocketAddr,
    events: Arc<Mutex<Vec<(String, String)>>>,
}

impl PageServer {
    fn start() -> PageServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        std::thread::spawn(move || {
            for mut conn in l.incoming().flatten() {
                let mut first = String::new();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                if r.read_line(&mut first).is_err() {
                    continue;
                }
                let path = first.split(' ').nth(1).unwrap_or("").to_string();
                if let Some(q) = path.strip_prefix("/ev?") {
                    if let Some((k, v)) = q.split_once('=') {
                        let v = guest_agent::oauth::callback::percent_decode(v);
                        ev.lock().unwrap().push((k.to_string(), v));
                    }
                }
                let body = if path == "/" { PAGE } else { "" };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        PageServer { addr, events }
    }

    fn has(&self, k: &str, v: &str) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|(a, b)| a == k && b == v)
    }

    fn all(&self) -> Vec<(String, String)> {
        self.events.lock().unwrap().clone()
    }
}

fn firefox() -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v firefox-esr"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "firefox-esr is not installed: `apt-get install -y --no-install-recommends firefox-esr` (this test types into it through the stream)"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn keys_typed_in_the_viewer_reach_a_text_field_in_firefox() {
    use guest_agent::oauth::{browser, pty::Track, user::LoginUser};
    let ff = firefox();
    let x = start_xvfb(W, H);
    let page = PageServer::start();

    // Firefox as the agent starts it: its home and profile the login user's.
    oauth_support::ensure_login_user();
    let dir = oauth_support::test_dir();
    let home = dir.path().join("home");
    let user = LoginUser::resolve(oauth_support::LOGIN_USER).unwrap();
    user.prepare_home(&home, &dir.path().join("state")).unwrap();
    let launch = browser::Launch {
        display: &x.display,
        user: &user,
        home: &home,
        session: "input-1",
        proxy: None,
        track: Track {
            marker: &format!("ff-input-{:016x}", fastrand::u64(..)),
            what: "browser",
            records: None,
        },
    };
    let started = Instant::now();
    let (info, ff_proc) = browser::open(&[ff], &format!("http://{}/", page.addr), &launch);
    assert!(info.error.is_none(), "{info:?}");
    let _ff_proc = ff_proc.expect("firefox started");
    wait_for("Firefox to load the page", Duration::from_secs(60), || {
        page.has("loaded", "1").then_some(())
    });
    eprintln!(
        "firefox: page loaded {:.2} s after the start",
        started.elapsed().as_secs_f64()
    );

    let streamer = start_streamer(&x.display, W, H);
    let url = format!("http://{}/viewer#token={TOKEN}", streamer.addr);
    let mut b = Browser::launch(&url);
    wait_for("window.viewer", Duration::from_secs(30), || {
        (b.eval("typeof viewer") == json!("object")).then_some(())
    });
    b.eval("viewer.ready.then(() => true)");
    wait_for("decoded frames", Duration::from_secs(60), || {
        let s = b.eval(STATS_JS);
        (s["framesDecoded"].as_u64().unwrap_or(0) >= 10).then_some(())
    });
    wait_for("the input data channel", Duration::from_secs(30), || {
        (b.eval("viewer.dc.readyState") == json!("open")).then_some(())
    });

    // A click into the text field (a quarter into the video: inside Firefox's window).
    let vp = b.eval("[innerWidth, innerHeight]");
    let (vw, vh) = (vp[0].as_f64().unwrap_or(0.0), vp[1].as_f64().unwrap_or(0.0));
    let s = (vw / f64::from(W)).min(vh / f64::from(H));
    let (ox, oy) = ((vw - f64::from(W) * s) / 2.0, (vh - f64::from(H) * s) / 2.0);
    let (px, py) = (ox + 320.0 * s + 0.5, oy + 180.0 * s + 0.5);
    for (t, extra) in [
        ("mouseMoved", json!({})),
        ("mousePressed", json!({"button": "left", "clickCount": 1})),
        ("mouseReleased", json!({"button": "left", "clickCount": 1})),
    ] {
        let mut p = json!({"type": t, "x": px, "y": py});
        if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        b.call("Input.dispatchMouseEvent", p);
    }
    wait_for("the click in Firefox", Duration::from_secs(30), || {
        page.all()
            .iter()
            .any(|(k, _)| k == "mousedown")
            .then_some(())
    });

    // Typed text.
    let typing = Instant::now();
    for c in TYPED.chars() {
        let (key, code, vk) = match c {
            ' ' => (" ".to_string(), "Space".to_string(), 32),
            d if d.is_ascii_digit() => (d.to_string(), format!("Digit{d}"), d as u32),
            l => (
                l.to_string(),
                format!("Key{}", l.to_ascii_uppercase()),
                l.to_ascii_uppercase() as u32,
            ),
        };
        for t in ["keyDown", "keyUp"] {
            let mut p = json!({"type": t, "key": key, "code": code, "windowsVirtualKeyCode": vk});
            if t == "keyDown" {
                p["text"] = json!(key);
            }
            b.call("Input.dispatchKeyEvent", p);
        }
    }
    let limit = Instant::now() + Duration::from_secs(30);
    while !page.has("value", TYPED) {
        assert!(
            Instant::now() < limit,
            "the text typed in the viewer never became the field's value in Firefox; the page reported {:?}",
            page.all()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "firefox: {:?} typed through the stream in {:.2} s ({} key events)",
        TYPED,
        typing.elapsed().as_secs_f64(),
        TYPED.len() * 2
    );

    // Shifted keys as a person types them (Shift held), and characters the display's
    // keymap lacks (the injector binds a spare keycode to them first).
    let shift = |b: &mut Browser, t: &str| {
        b.call(
            "Input.dispatchKeyEvent",
            json!({"type": t, "key": "Shift", "code": "ShiftLeft", "windowsVirtualKeyCode": 16}),
        );
    };
    let key = |b: &mut Browser, k: &str, code: &str| {
        for t in ["keyDown", "keyUp"] {
            let mut p = json!({"type": t, "key": k, "code": code});
            if t == "keyDown" {
                p["text"] = json!(k);
            }
            b.call("Input.dispatchKeyEvent", p);
        }
    };
    shift(&mut b, "keyDown");
    key(&mut b, "H", "KeyH");
    key(&mut b, "@", "Digit2");
    shift(&mut b, "keyUp");
    key(&mut b, "é", "");
    key(&mut b, "€", "");
    key(&mut b, "ß", "");
    let want = format!("{TYPED}H@é€ß");
    let limit = Instant::now() + Duration::from_secs(30);
    while !page.has("value", &want) {
        assert!(
            Instant::now() < limit,
            "{want:?} never became the field's value in Firefox; the page reported {:?}",
            page.all()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let keydowns: Vec<String> = page
        .all()
        .into_iter()
        .filter(|(k, _)| k == "keydown")
        .map(|(_, v)| v)
        .collect();
    eprintln!("firefox: field value {want:?}; keydown events seen by the page: {keydowns:?}");
}
