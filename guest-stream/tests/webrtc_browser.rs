//! The streamer against a real browser: Xvfb with a window whose colour changes every frame,
//! the streamer (in-process) capturing it, and headless chromium opening `/viewer` (the real
//! page) as the viewer. Frames must arrive at the configured resolution, and a click and a key
//! pressed in the viewer must arrive in the X display, and a flood of input on the data
//! channel must stay within the input queue's bound and leave no key held. `serve` (the real
//! binary, pointed at the streamer's socket) shows the viewer in `/health` while it watches,
//! and 0 once it left.

mod webrtc_common;

use guest_stream::input_queue::MAX_QUEUED;
use serde_json::json;
use std::time::Duration;
use webrtc_common::*;

const W: u16 = 1280;
const H: u16 = 720;

#[test]
fn viewer_page_plays_the_display_and_sends_input_back() {
    let x = start_xvfb(W, H);
    let display = x.display.clone();
    let window = start_window(&x.display);
    let streamer = start_streamer(&x.display, W, H);
    let serve = start_serve(&streamer.dir.path().join("webrtc.sock"));
    let h = wait_for(
        "the idle streamer in /health",
        Duration::from_secs(30),
        || health(serve.addr).filter(|h| h["webrtc"]["state"] == "running"),
    );
    assert_eq!(h["webrtc"]["viewers"], json!(0), "{h}");

    // The token guards WHEP; the page itself is static.
    let (code, _) = http(
        streamer.addr,
        "POST",
        "/webrtc/whep",
        &[("Content-Type", "application/sdp")],
        "v=0\r\n",
    );
    assert_eq!(code, 401, "WHEP without the token");
    let (code, body) = http(streamer.addr, "GET", "/viewer", &[], "");
    assert_eq!(code, 200);
    assert!(body.contains("webrtc/whep"));

    let url = format!("http://{}/viewer#token={TOKEN}", streamer.addr);
    let mut b = Browser::launch(&url);
    wait_for("window.viewer", Duration::from_secs(30), || {
        (b.eval("typeof viewer") == json!("object")).then_some(())
    });
    b.eval("viewer.ready.then(() => true)");

    let first = wait_for("25 decoded frames", Duration::from_secs(60), || {
        let s = b.eval(STATS_JS);
        (s["framesDecoded"].as_u64().unwrap_or(0) >= 25).then_some(s)
    });
    assert_eq!(first["frameWidth"], json!(W), "stats: {first}");
    assert_eq!(first["frameHeight"], json!(H), "stats: {first}");
    let n1 = first["framesDecoded"].as_u64().unwrap_or(0);
    let later = wait_for("frames to keep coming", Duration::from_secs(30), || {
        let s = b.eval(STATS_JS);
        (s["framesDecoded"].as_u64().unwrap_or(0) >= n1 + 25).then_some(s)
    });
    assert_eq!(later["state"], json!("connected"));
    // The answer negotiated the playout-delay extension Chromium offered (render on decode).
    let answer = b.eval("viewer.pc.remoteDescription.sdp");
    assert!(
        answer
            .as_str()
            .is_some_and(|sdp| sdp.contains("rtp-hdrext/playout-delay")),
        "{answer}"
    );

    // Status shows one viewer.
    let (code, status) = http(
        streamer.addr,
        "GET",
        "/webrtc/status",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    );
    assert_eq!(code, 200, "{status}");
    assert!(status.contains("\"viewers\":1"), "{status}");
    // And serve's /health shows it, with frames flowing.
    let h = wait_for("one viewer in /health", Duration::from_secs(30), || {
        health(serve.addr).filter(|h| h["webrtc"]["viewers"] == json!(1))
    });
    assert_eq!(h["webrtc"]["state"], "running", "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    let h = wait_for("fps in /health", Duration::from_secs(30), || {
        health(serve.addr).filter(|h| h["webrtc"]["fps"].as_f64().unwrap_or(0.0) > 0.0)
    });
    assert_eq!(h["webrtc"]["viewers"], json!(1), "{h}");

    // Input: the data channel must be open, then a real click and key press in the page.
    wait_for("the input data channel", Duration::from_secs(30), || {
        (b.eval("viewer.dc.readyState") == json!("open")).then_some(())
    });
    let vp = b.eval("[innerWidth, innerHeight]");
    let (vw, vh) = (vp[0].as_f64().unwrap_or(0.0), vp[1].as_f64().unwrap_or(0.0));
    // Click at a point a quarter into the video; expected X coordinates by the page's
    // letterbox mapping (object-fit: contain).
    let s = (vw / f64::from(W)).min(vh / f64::from(H));
    let (ox, oy) = ((vw - f64::from(W) * s) / 2.0, (vh - f64::from(H) * s) / 2.0);
    let (px, py) = (ox + 320.0 * s + 0.5, oy + 180.0 * s + 0.5);
    let (ex, ey) = (
        ((px - ox) / s).floor() as i16,
        ((py - oy) / s).floor() as i16,
    );
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
    for t in ["keyDown", "keyUp"] {
        b.call(
            "Input.dispatchKeyEvent",
            json!({"type": t, "key": "q", "code": "KeyQ", "text": "q", "windowsVirtualKeyCode": 81}),
        );
    }
    let seen = wait_for(
        "the click and the key in the X display",
        Duration::from_secs(30),
        || {
            let seen = window.seen.lock().expect("seen").clone();
            let click = seen
                .iter()
                .any(|e| matches!(e, Seen::ButtonPress { button: 1, .. }));
            let key = seen.contains(&Seen::KeyPress { keysym: 0x71 });
            (click && key).then_some(seen)
        },
    );
    let Some(Seen::ButtonPress { x, y, .. }) =
        seen.iter().find(|e| matches!(e, Seen::ButtonPress { .. }))
    else {
        unreachable!("checked above")
    };
    assert!(
        (x - ex).abs() <= 1 && (y - ey).abs() <= 1,
        "click at ({x},{y}), expected ({ex},{ey}); seen {seen:?}"
    );

    // A flood on the real data channel: 5 messages of 2802 events each (Control held around
    // 1400 keysyms without a keycode, each a mapping change for the injector). The queue stays
    // within its bound and counts what it dropped, Control is released through the full
    // queue, and input still works afterwards.
    let n = b.eval(
        r#"(() => { const e = viewer.enc, parts = [e.keyDown(0xffe3)];
          for (let i = 0; i < 1400; i++) parts.push(e.keyDown(0x1004e00 + i), e.keyUp(0x1004e00 + i));
          parts.push(e.keyUp(0xffe3));
          const b = new Uint8Array(parts.reduce((a, p) => a + p.length, 0)); let o = 0;
          for (const p of parts) { b.set(p, o); o += p.length; }
          for (let k = 0; k < 5; k++) viewer.send(b);
          return b.length; })()"#,
    );
    assert_eq!(n, json!(2802 * 7));
    let input = wait_for("the flood to be taken", Duration::from_secs(60), || {
        let st = streamer_status(streamer.addr)?;
        let i = st["input"].clone();
        let seen = i["events"].as_u64()? + i["dropped"].as_u64()? + i["coalesced"].as_u64()?;
        (i["queued"] == json!(0) && seen >= 5 * 2802).then_some(i)
    });
    assert!(
        input["queued_max"].as_u64().unwrap_or(u64::MAX) <= MAX_QUEUED as u64,
        "{input}"
    );
    assert!(input["dropped"].as_u64().unwrap_or(0) > 0, "{input}");
    assert!(input["remaps"].as_u64().unwrap_or(0) > 0, "{input}");
    eprintln!("data channel flood: {input}");
    let (xc, _) = x11rb::connect(Some(&display)).expect("X connection");
    wait_for(
        "no key held after the flood",
        Duration::from_secs(30),
        || {
            use x11rb::protocol::xproto::ConnectionExt as _;
            let km = xc.query_keymap().ok()?.reply().ok()?;
            km.keys.iter().all(|&b| b == 0).then_some(())
        },
    );
    for t in ["keyDown", "keyUp"] {
        b.call(
            "Input.dispatchKeyEvent",
            json!({"type": t, "key": "w", "code": "KeyW", "text": "w", "windowsVirtualKeyCode": 87}),
        );
    }
    wait_for("a key after the flood", Duration::from_secs(30), || {
        let seen = window.seen.lock().expect("seen");
        seen.contains(&Seen::KeyPress { keysym: 0x77 })
            .then_some(())
    });

    // The viewer leaves (the page's pagehide sends the WHEP DELETE): 0 viewers in /health.
    b.eval("location.href = 'about:blank', true");
    let h = wait_for("0 viewers in /health", Duration::from_secs(60), || {
        health(serve.addr).filter(|h| h["webrtc"]["viewers"] == json!(0))
    });
    assert_eq!(h["webrtc"]["state"], "running", "{h}");
}
