//! The clipboard through the stream, on real parts: Xvfb, the streamer in-process, headless
//! chromium opening `/viewer` as the viewer, and X clients of the test's own reading and
//! owning selections (x11rb).
//! - text pasted in the viewer page becomes the VM's CLIPBOARD and PRIMARY (non-ASCII too);
//! - text a VM program owns in CLIPBOARD is fetched by `viewer.getClipboard()`, and a VM text
//!   over the bound is refused, not cut;
//! - oversized and malformed clipboard events are dropped and counted in `/webrtc/status` and
//!   leave the streamer streaming and the clipboard working;
//! - Ctrl+V in the viewer pastes the viewer's text into a textarea of a (non-headless)
//!   chromium in the VM, and Ctrl+A, Ctrl+C there (typed in the viewer) puts what that
//!   chromium copied into the viewer's own clipboard;
//! - a message over the data channel's 64 KiB is refused by the viewer's browser itself.
//!
//! Fails (does not skip) when Xvfb or chromium is missing.

mod webrtc_common;

use guest_stream::input::MAX_CLIPBOARD;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use webrtc_common::*;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::*;
use x11rb::protocol::Event;
use x11rb::wrapper::ConnectionExt as _;

const W: u16 = 1280;
const H: u16 = 720;

fn atom(conn: &impl Connection, name: &str) -> Atom {
    conn.intern_atom(false, name.as_bytes())
        .expect("intern")
        .reply()
        .expect("atom")
        .atom
}

/// `selection` as UTF8_STRING, as a VM program reads it (None: no owner or refused).
fn read_selection(display: &str, selection: &str) -> Option<String> {
    let (conn, screen) = x11rb::connect(Some(display)).expect("connect reader");
    let root = conn.setup().roots[screen].root;
    let win = conn.generate_id().expect("id");
    conn.create_window(
        0,
        win,
        root,
        0,
        0,
        1,
        1,
        0,
        WindowClass::INPUT_ONLY,
        0,
        &Default::default(),
    )
    .expect("window");
    let (sel, utf8, prop) = (
        atom(&conn, selection),
        atom(&conn, "UTF8_STRING"),
        atom(&conn, "TEST_SEL"),
    );
    conn.convert_selection(win, sel, utf8, prop, x11rb::CURRENT_TIME)
        .expect("convert");
    conn.flush().expect("flush");
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        match conn.poll_for_event().expect("event") {
            Some(Event::SelectionNotify(n)) => {
                if n.property == x11rb::NONE {
                    return None;
                }
                let p = conn
                    .get_property(true, win, prop, AtomEnum::ANY, 0, 1 << 20)
                    .expect("get_property")
                    .reply()
                    .expect("property");
                return Some(String::from_utf8(p.value).expect("UTF-8 from the owner"));
            }
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    panic!("no SelectionNotify for {selection} within 3 s");
}

/// A VM program that copied `text`: owns CLIPBOARD until dropped and answers requests.
struct VmOwner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for VmOwner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn own_clipboard(display: &str, text: String) -> VmOwner {
    let (conn, screen) = x11rb::connect(Some(display)).expect("connect owner");
    let root = conn.setup().roots[screen].root;
    let win = conn.generate_id().expect("id");
    conn.create_window(
        0,
        win,
        root,
        0,
        0,
        1,
        1,
        0,
        WindowClass::INPUT_ONLY,
        0,
        &Default::default(),
    )
    .expect("window");
    let (clip, utf8, targets) = (
        atom(&conn, "CLIPBOARD"),
        atom(&conn, "UTF8_STRING"),
        atom(&conn, "TARGETS"),
    );
    conn.set_selection_owner(win, clip, x11rb::CURRENT_TIME)
        .expect("own");
    let owner = conn
        .get_selection_owner(clip)
        .expect("owner")
        .reply()
        .expect("owner");
    assert_eq!(owner.owner, win, "the test client owns CLIPBOARD");
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let thread = std::thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            let Ok(ev) = conn.poll_for_event() else {
                return;
            };
            let Some(Event::SelectionRequest(r)) = ev else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let ok = if r.target == targets {
                conn.change_property32(
                    PropMode::REPLACE,
                    r.requestor,
                    r.property,
                    AtomEnum::ATOM,
                    &[targets, utf8],
                )
                .is_ok()
            } else if r.target == utf8 {
                conn.change_property8(
                    PropMode::REPLACE,
                    r.requestor,
                    r.property,
                    utf8,
                    text.as_bytes(),
                )
                .is_ok()
            } else {
                false
            };
            let n = SelectionNotifyEvent {
                response_type: SELECTION_NOTIFY_EVENT,
                sequence: 0,
                time: r.time,
                requestor: r.requestor,
                selection: r.selection,
                target: r.target,
                property: if ok { r.property } else { x11rb::NONE },
            };
            let _ = conn.send_event(false, r.requestor, EventMask::NO_EVENT, n);
            let _ = conn.flush();
        }
    });
    VmOwner {
        stop,
        thread: Some(thread),
    }
}

/// A paste in the viewer page, as the browser delivers one (a `paste` event with the text).
fn paste_js(text: &str) -> String {
    format!(
        "(() => {{ const dt = new DataTransfer(); dt.setData('text/plain', {t});
           document.body.dispatchEvent(new ClipboardEvent('paste', {{clipboardData: dt, bubbles: true, cancelable: true}}));
           return true; }})()",
        t = json!(text)
    )
}

fn input_stats(addr: SocketAddr) -> Value {
    streamer_status(addr).expect("status")["input"].clone()
}

#[test]
fn the_clipboard_goes_both_ways_bounded() {
    let x = start_xvfb(W, H);
    let _window = start_window(&x.display);
    let streamer = start_streamer(&x.display, W, H);
    let mut b = viewer_playing(streamer.addr);

    // (a) Viewer → VM: CLIPBOARD and PRIMARY, as a VM program reads them.
    let text = "pässwörd → €10 🔑 日本語\nsecond line";
    let t0 = Instant::now();
    b.eval(&paste_js(text));
    let got = wait_for(
        "the pasted text in CLIPBOARD",
        Duration::from_secs(10),
        || read_selection(&x.display, "CLIPBOARD").filter(|t| t == text),
    );
    eprintln!(
        "clipboard: viewer paste → CLIPBOARD in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(got, text);
    assert_eq!(read_selection(&x.display, "PRIMARY").as_deref(), Some(text));
    // What we own is what a read gives back.
    assert_eq!(b.eval("viewer.getClipboard()"), json!(text));

    // (c) VM → viewer: a VM program copied something.
    let copied = "copied in the VM ✓ ñ";
    let owner = own_clipboard(&x.display, copied.into());
    let t0 = Instant::now();
    assert_eq!(b.eval("viewer.getClipboard()"), json!(copied));
    eprintln!(
        "clipboard: VM CLIPBOARD → viewer in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    // We lost CLIPBOARD to it; PRIMARY is still ours.
    assert_eq!(read_selection(&x.display, "PRIMARY").as_deref(), Some(text));
    drop(owner);
    // A VM text over the bound is refused whole.
    let big = own_clipboard(&x.display, "y".repeat(MAX_CLIPBOARD + 10));
    let r =
        b.eval("viewer.getClipboard().then(t => 'text ' + t.length, e => 'error ' + e.message)");
    assert_eq!(r, json!("error the VM's clipboard is over the size bound"));
    drop(big);

    // (d) Oversized and malformed clipboard events: dropped, counted, and harmless.
    b.eval("viewer.setClipboard('ok before'); true");
    wait_for("'ok before' in CLIPBOARD", Duration::from_secs(10), || {
        read_selection(&x.display, "CLIPBOARD").filter(|t| t == "ok before")
    });
    let before = input_stats(streamer.addr);
    let over = MAX_CLIPBOARD + 1;
    assert_eq!(
        b.eval(&format!("viewer.setClipboard('z'.repeat({over}))")),
        json!(false),
        "the page refuses text over the bound itself"
    );
    for bytes in [
        format!("viewer.enc.clipboard('z'.repeat({over}))"), // over the bound, sent anyway
        "new Uint8Array([8, 0, 3, 0x61, 0xc3, 0x28])".into(), // not UTF-8
        "new Uint8Array([9, 0, 1, 0])".into(),               // a read with a payload
        "new Uint8Array([8, 0xff, 0xff, 0x61, 0x62])".into(), // length past the end
        "new Uint8Array([8, 0])".into(),                     // cut header
    ] {
        b.eval(&format!("viewer.send({bytes}); true"));
    }
    let after = wait_for(
        "5 malformed messages counted",
        Duration::from_secs(10),
        || {
            let s = input_stats(streamer.addr);
            (s["malformed"].as_u64() == Some(before["malformed"].as_u64().unwrap_or(0) + 5))
                .then_some(s)
        },
    );
    assert_eq!(after["clipboard_too_large"], json!(1), "{after}");
    assert!(
        after["last_malformed"]
            .as_str()
            .is_some_and(|m| m.contains("event at byte 0")),
        "{after}"
    );
    assert_eq!(
        read_selection(&x.display, "CLIPBOARD").as_deref(),
        Some("ok before"),
        "a refused set changes nothing"
    );
    // Over the data channel's message size (64 KiB, the answer's max-message-size): the
    // browser refuses to send it, and nothing changes.
    let r = b.eval(
        "(() => { try { viewer.send(viewer.enc.clipboard('z'.repeat(65535))); return 'sent'; } \
         catch (e) { return e.name; } })()",
    );
    eprintln!("clipboard: a 65538-byte message: {r}");
    // A flood of reads in one message: one runs, the rest are counted as busy.
    b.eval("viewer.send(new Uint8Array(Array(100).fill([9, 0, 0]).flat())); true");
    let s = wait_for("busy reads counted", Duration::from_secs(10), || {
        let s = input_stats(streamer.addr);
        (s["clipboard"]["busy"].as_u64().unwrap_or(0) >= 90).then_some(s)
    });
    eprintln!("clipboard stats after the abuse: {}", s["clipboard"]);
    // Still streaming, and the clipboard still works both ways.
    let n = b.eval(STATS_JS)["framesDecoded"].as_u64().unwrap_or(0);
    wait_for("frames after the abuse", Duration::from_secs(30), || {
        (b.eval(STATS_JS)["framesDecoded"].as_u64().unwrap_or(0) > n + 5).then_some(())
    });
    b.eval(&paste_js("after ✓"));
    wait_for("'after ✓' in CLIPBOARD", Duration::from_secs(10), || {
        read_selection(&x.display, "CLIPBOARD").filter(|t| t == "after ✓")
    });
    assert_eq!(b.eval("viewer.getClipboard()"), json!("after ✓"));
    let s = input_stats(streamer.addr);
    assert_eq!(s["last_error"], Value::Null, "{s}");
    assert_eq!(s["clipboard"]["last_error"], Value::Null, "{s}");
}

const PAGE: &str = r#"<!doctype html><html><head><title>paste</title></head>
<body style="margin:0"><textarea id="t" autofocus
 style="position:absolute;left:0;top:0;width:100%;height:100%;font-size:32px;border:0"></textarea>
<script>
const t = document.getElementById('t');
const report = (k, v) => fetch('/ev?' + k + '=' + encodeURIComponent(v)).catch(() => {});
t.addEventListener('input', () => report('value', t.value));
document.addEventListener('mousedown', () => report('mousedown', '1'));
report('loaded', '1');
</script></body></html>"#;

/// The `/ev?k=v` reports of [`PAGE`], in order.
type Reports = Arc<Mutex<Vec<(String, String)>>>;

/// Serves [`PAGE`] and records its reports.
fn page_server() -> (SocketAddr, Reports) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    std::thread::spawn(move || {
        for mut conn in l.incoming().flatten() {
            let mut first = String::new();
            let Ok(c) = conn.try_clone() else { continue };
            if BufReader::new(c).read_line(&mut first).is_err() {
                continue;
            }
            let path = first.split(' ').nth(1).unwrap_or("").to_string();
            if let Some((k, v)) = path.strip_prefix("/ev?").and_then(|q| q.split_once('=')) {
                let v = guest_agent::oauth::callback::percent_decode(v);
                ev.lock().expect("events").push((k.to_string(), v));
            }
            let body = if path == "/" { PAGE } else { "" };
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, events)
}

#[test]
fn ctrl_v_in_the_viewer_pastes_into_a_browser_in_the_vm() {
    need("chromium", "chromium");
    let x = start_xvfb(W, H);
    let (page, events) = page_server();
    let has = |k: &str, v: &str| {
        events
            .lock()
            .expect("events")
            .iter()
            .any(|(a, b)| a == k && b == v)
    };
    let _vm_browser = start_vm_chromium(&x.display, &format!("http://{page}/"), W, H);
    wait_for(
        "the VM's browser to load the page",
        Duration::from_secs(60),
        || has("loaded", "1").then_some(()),
    );

    let streamer = start_streamer(&x.display, W, H);
    let mut b = viewer_playing(streamer.addr);
    // A click into the textarea through the stream (focus for the VM's keyboard).
    b.eval(
        "viewer.send(viewer.enc.move(640, 360)); viewer.send(viewer.enc.buttonDown(1));
         viewer.send(viewer.enc.buttonUp(1)); true",
    );
    wait_for(
        "the click in the VM's browser",
        Duration::from_secs(30),
        || has("mousedown", "1").then_some(()),
    );

    b.eval("viewer.send(viewer.enc.keyDown(0x61)); viewer.send(viewer.enc.keyUp(0x61)); true");
    wait_for(
        "a typed 'a' in the VM's browser",
        Duration::from_secs(30),
        || has("value", "a").then_some(()),
    );
    // Ctrl+V in the viewer, with the text in the viewer's own clipboard: Control goes down
    // as the user presses it, the page holds the V back until the browser's paste event
    // sent the text, then the V reaches the VM.
    let text = "pasted through the stream: pässwörd €🔑";
    b.call(
        "Browser.grantPermissions",
        json!({"permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}),
    );
    b.eval(&format!(
        "navigator.clipboard.writeText({}).then(() => true)",
        json!(text)
    ));
    let key = |b: &mut Browser, t: &str, k: &str, code: &str, vk: u32, mods: u32| {
        b.call(
            "Input.dispatchKeyEvent",
            json!({"type": t, "key": k, "code": code, "windowsVirtualKeyCode": vk, "modifiers": mods}),
        );
    };
    let t0 = Instant::now();
    key(&mut b, "rawKeyDown", "Control", "ControlLeft", 17, 2);
    key(&mut b, "rawKeyDown", "v", "KeyV", 86, 2);
    key(&mut b, "keyUp", "v", "KeyV", 86, 2);
    key(&mut b, "keyUp", "Control", "ControlLeft", 17, 0);
    let limit = Instant::now() + Duration::from_secs(30);
    while !has("value", &format!("a{text}")) {
        assert!(
            Instant::now() < limit,
            "the pasted text never became the textarea's value in the VM's browser; it reported {:?}; status {}",
            events.lock().expect("events"),
            input_stats(streamer.addr)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "clipboard: Ctrl+V in the viewer → textarea in the VM's chromium in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );

    // Ctrl+A, Ctrl+C in the VM's browser through the viewer: the page fetches what the VM's
    // browser copied and writes it to the viewer's own clipboard.
    b.eval("navigator.clipboard.writeText('local before').then(() => true)");
    let t0 = Instant::now();
    key(&mut b, "rawKeyDown", "Control", "ControlLeft", 17, 2);
    for (k, code, vk) in [("a", "KeyA", 65), ("c", "KeyC", 67)] {
        key(&mut b, "rawKeyDown", k, code, vk, 2);
        key(&mut b, "keyUp", k, code, vk, 2);
    }
    key(&mut b, "keyUp", "Control", "ControlLeft", 17, 0);
    let want = json!(format!("a{text}"));
    let limit = Instant::now() + Duration::from_secs(30);
    loop {
        let local = b.eval("navigator.clipboard.readText()");
        if local == want {
            break;
        }
        assert!(
            Instant::now() < limit,
            "the viewer's clipboard is {local}, not the text copied in the VM; status {}",
            input_stats(streamer.addr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "clipboard: Ctrl+C in the VM's chromium → the viewer's clipboard in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    let s = input_stats(streamer.addr);
    assert!(s["clipboard"]["served"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert!(s["clipboard"]["gets"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert_eq!(s["malformed"], json!(0), "{s}");
}

/// A person on a Mac copies and pastes with Cmd: the viewer page sends Cmd as Control there
/// (the VM is Linux: Cmd+V must paste, not arrive as Super+V), and Meta as Meta elsewhere.
#[test]
fn cmd_on_a_mac_viewer_is_control_in_the_vm() {
    let x = start_xvfb(320, 240);
    let streamer = start_streamer(&x.display, 320, 240);
    let mut b = Browser::launch(&format!("http://{}/viewer#token={TOKEN}", streamer.addr));
    let keysyms = |b: &mut Browser| {
        wait_for("window.viewer", Duration::from_secs(30), || {
            (b.eval("typeof viewer") == json!("object")).then_some(())
        });
        b.eval(
            r#"[["Meta", "MetaLeft"], ["Meta", "MetaRight"], ["Control", "ControlLeft"], ["v", "KeyV"]]
                 .map(([key, code]) => viewer.keysym({ key, code }))"#,
        )
    };
    assert_eq!(keysyms(&mut b), json!([0xffeb, 0xffec, 0xffe3, 0x76]));
    b.call("Page.enable", json!({}));
    b.call(
        "Emulation.setUserAgentOverride",
        json!({"userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36", "platform": "MacIntel"}),
    );
    b.call("Page.reload", json!({}));
    wait_for("the Mac page", Duration::from_secs(30), || {
        (b.eval("navigator.platform") == json!("MacIntel")).then_some(())
    });
    assert_eq!(keysyms(&mut b), json!([0xffe3, 0xffe4, 0xffe3, 0x76]));
    // A Mac fires no keyup for a key pressed under Cmd: Cmd's own keyup releases it, or it
    // would stay pressed in the VM. The page's messages are caught by a stand-in channel.
    b.eval(
        "window.sent = []; viewer.dc = { readyState: 'open', send: (b) => \
         window.sent.push(Array.from(new Uint8Array(b))) }; true",
    );
    let key = |b: &mut Browser, t: &str, k: &str, code: &str, vk: u32, mods: u32| {
        b.call(
            "Input.dispatchKeyEvent",
            json!({"type": t, "key": k, "code": code, "windowsVirtualKeyCode": vk, "modifiers": mods}),
        );
    };
    key(&mut b, "rawKeyDown", "Meta", "MetaLeft", 91, 4);
    key(&mut b, "rawKeyDown", "a", "KeyA", 65, 4);
    key(&mut b, "keyUp", "Meta", "MetaLeft", 91, 0);
    let down = |k: u32| {
        json!([
            3,
            0,
            4,
            k >> 24,
            (k >> 16) & 0xff,
            (k >> 8) & 0xff,
            k & 0xff
        ])
    };
    let up = |k: u32| {
        json!([
            4,
            0,
            4,
            k >> 24,
            (k >> 16) & 0xff,
            (k >> 8) & 0xff,
            k & 0xff
        ])
    };
    assert_eq!(
        b.eval("window.sent"),
        json!([down(0xffe3), down(0x61), up(0x61), up(0xffe3)])
    );
}
