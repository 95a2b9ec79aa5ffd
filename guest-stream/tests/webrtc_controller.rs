//! Controller-mode signaling against a fake host controller: the streamer fetches ICE
//! servers, polls for the browser's offer, posts its answer and candidates; headless chromium
//! (a small page speaking the browser half of the controller protocol) then decodes video.

mod webrtc_common;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use webrtc_common::*;

#[derive(Default)]
struct Fake {
    ice_fetches: u32,
    offer: Option<Value>,
    answer: Option<Value>,
    candidates: Vec<Value>,
    sessions_seen: Vec<String>,
}
type S = Arc<Mutex<Fake>>;

const PAGE: &str = r#"<!doctype html><script>
window.pc = new RTCPeerConnection();
pc.addTransceiver("video", {direction: "recvonly"});
window.dc = pc.createDataChannel("input");
window.done = (async () => {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => { if (pc.iceGatheringState === "complete") r();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); });
  await fetch("/test/offer", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({type: "offer", sdp: pc.localDescription.sdp})});
  for (;;) {
    const r = await fetch("/test/answer");
    if (r.status === 200) { await pc.setRemoteDescription((await r.json()).answer); return true; }
    await new Promise(r => setTimeout(r, 50));
  }
})();
</script>"#;

fn fake_controller(state: S) -> Router {
    let api = Router::new()
        .route(
            "/api/webrtc/ice-servers",
            get(|State(s): State<S>| async move {
                s.lock().expect("fake").ice_fetches += 1;
                Json(json!({"iceServers": []}))
            }),
        )
        .route(
            "/api/webrtc/session/{id}/offer",
            get(|State(s): State<S>, Path(id): Path<String>| async move {
                let mut f = s.lock().expect("fake");
                f.sessions_seen.push(id);
                match &f.offer {
                    Some(o) => Json(json!({"offer": o, "candidates": []})).into_response(),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .route(
            "/api/webrtc/session/{id}/answer",
            post(|State(s): State<S>, Json(v): Json<Value>| async move {
                s.lock().expect("fake").answer = Some(v);
                Json(json!({"success": true}))
            }),
        )
        .route(
            "/api/webrtc/session/{id}/candidate",
            post(|State(s): State<S>, Json(v): Json<Value>| async move {
                s.lock().expect("fake").candidates.push(v);
                Json(json!({"success": true}))
            }),
        )
        .route(
            "/api/webrtc/session/{id}/candidates/browser",
            get(|| async { Json(json!({"candidates": []})) }),
        )
        // The browser half, for the test page.
        .route("/page", get(|| async { Html(PAGE) }))
        .route(
            "/test/offer",
            post(|State(s): State<S>, Json(v): Json<Value>| async move {
                s.lock().expect("fake").offer = Some(v);
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/test/answer",
            get(|State(s): State<S>| async move {
                match &s.lock().expect("fake").answer {
                    Some(a) => Json(a.clone()).into_response(),
                    None => StatusCode::NO_CONTENT.into_response(),
                }
            }),
        );
    api.with_state(state)
}

/// The fake controller on a free loopback port, on its own thread: its state and port.
fn serve_fake_controller() -> (S, u16) {
    let state: S = Arc::default();
    let port = free_port();
    let app = fake_controller(Arc::clone(&state));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("bind fake controller");
            axum::serve(l, app).await.expect("fake controller");
        });
    });
    (state, port)
}

#[test]
fn controller_mode_exchange_connects_a_browser() {
    let (state, port) = serve_fake_controller();

    let x = start_xvfb(640, 480);
    let _window = start_window(&x.display);
    let _streamer = start_streamer_with(
        &x.display,
        640,
        480,
        &[
            format!("--controller=http://127.0.0.1:{port}"),
            "--session-id=sess-42".into(),
        ],
    );
    // Polling starts without any viewer, and keeps going.
    wait_for(
        "the streamer polling for an offer",
        Duration::from_secs(30),
        || (state.lock().expect("fake").sessions_seen.len() >= 3).then_some(()),
    );

    let mut b = Browser::launch(&format!("http://127.0.0.1:{port}/page"));
    wait_for("the test page", Duration::from_secs(30), || {
        (b.eval("typeof done") == json!("object")).then_some(())
    });
    assert_eq!(b.eval("done"), json!(true));
    let stats = wait_for("25 decoded frames", Duration::from_secs(60), || {
        let s = b.eval(
            r#"(async () => { let r = {}; (await pc.getStats()).forEach(x => {
                 if (x.type === 'inbound-rtp' && x.kind === 'video') r = x; });
                 return {n: r.framesDecoded || 0, w: r.frameWidth, h: r.frameHeight}; })()"#,
        );
        (s["n"].as_u64().unwrap_or(0) >= 25).then_some(s)
    });
    assert_eq!(stats["w"], json!(640));
    assert_eq!(stats["h"], json!(480));

    let f = state.lock().expect("fake");
    assert!(f.ice_fetches >= 1, "ICE servers were fetched");
    assert!(f.sessions_seen.iter().all(|s| s == "sess-42"));
    let answer = f.answer.as_ref().expect("answer posted");
    assert_eq!(answer["answer"]["type"], json!("answer"));
    assert!(answer["answer"]["sdp"]
        .as_str()
        .unwrap_or("")
        .contains("a=candidate:"));
    assert!(
        f.candidates.iter().any(|c| c["candidate"]["candidate"]
            .as_str()
            .unwrap_or("")
            .contains("127.0.0.1")),
        "our loopback candidate posted: {:?}",
        f.candidates
    );
}

/// Reads one request head from `s`; its request line.
fn read_head(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A controller (or whatever answers at its address) that sends the headers of its first
/// answer and then stalls the body for ever: the streamer's request must end on its own
/// deadline (10 s), drop that connection, and poll again.
#[test]
fn a_stalled_controller_answer_does_not_stop_polling() {
    use std::io::{Read, Write};
    use std::time::Instant;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let stalled_closed: Arc<Mutex<Option<Instant>>> = Arc::default();
    {
        let (requests, stalled_closed) = (Arc::clone(&requests), Arc::clone(&stalled_closed));
        std::thread::spawn(move || {
            for (i, conn) in listener.incoming().enumerate() {
                let Ok(mut s) = conn else { continue };
                let line = read_head(&mut s);
                requests
                    .lock()
                    .expect("requests")
                    .push((Instant::now(), line));
                if i == 0 {
                    let closed = Arc::clone(&stalled_closed);
                    std::thread::spawn(move || {
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                              Content-Length: 100\r\n\r\n{\"iceServers\":",
                        );
                        // Silent from here; a read ends when the streamer hangs up.
                        let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
                        let mut b = [0u8; 64];
                        if let Ok(0) = s.read(&mut b) {
                            *closed.lock().expect("closed") = Some(Instant::now());
                        }
                    });
                } else {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        });
    }
    let _streamer = start_streamer_with(
        ":9999",
        320,
        240,
        &[
            format!("--controller=http://127.0.0.1:{port}"),
            "--session-id=stall".into(),
        ],
    );
    let first = wait_for("the first request", Duration::from_secs(30), || {
        requests.lock().expect("requests").first().cloned()
    });
    assert!(
        first.1.contains("/api/webrtc/session/stall/offer"),
        "{first:?}"
    );
    // Polling resumes after the stalled request's deadline (10 s), not never.
    let n = wait_for(
        "polling to go on past the stalled answer",
        Duration::from_secs(45),
        || {
            let r = requests.lock().expect("requests");
            (r.len() >= 3).then_some(r.len())
        },
    );
    let closed = wait_for(
        "the stalled connection to be closed",
        Duration::from_secs(10),
        || *stalled_closed.lock().expect("closed"),
    );
    let second = requests.lock().expect("requests")[1].clone();
    eprintln!(
        "{n} requests; the stalled one closed after {:?}, the next came {:?} after the first",
        closed - first.0,
        second.0 - first.0
    );
    assert!(
        second.1.contains("/api/webrtc/session/stall/offer"),
        "the offer asked again: {second:?}"
    );
}

/// A VP9-only offer (neither H.264 nor VP8, the two codecs the streamer encodes) in the old
/// controller's format.
fn vp9_offer(n: u32) -> Value {
    let sdp = format!(
        "v=0\r\no=- {n} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
         a=rtpmap:96 VP9/90000\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         a=setup:actpass\r\n"
    );
    json!({"type": "offer", "sdp": sdp})
}

/// The 404 loop of the old incident reports: an offer the streamer refuses is answered to
/// the controller with the reason, and each new offer fetches the ICE servers again (TURN
/// credentials expire).
#[test]
fn a_refused_offer_is_answered_with_its_reason_and_each_offer_fetches_ice_servers() {
    let (state, port) = serve_fake_controller();
    let streamer = start_streamer_with(
        ":9998",
        320,
        240,
        &[
            format!("--controller=http://127.0.0.1:{port}"),
            "--session-id=refuse".into(),
        ],
    );
    wait_for("polling", Duration::from_secs(30), || {
        (state.lock().expect("fake").sessions_seen.len() >= 3).then_some(())
    });
    assert_eq!(
        state.lock().expect("fake").ice_fetches,
        0,
        "no offer yet: no ICE fetch"
    );
    for n in 1..=2u32 {
        {
            let mut f = state.lock().expect("fake");
            f.answer = None;
            f.offer = Some(vp9_offer(n));
        }
        let answer = wait_for("the refusal", Duration::from_secs(30), || {
            state.lock().expect("fake").answer.clone()
        });
        assert_eq!(answer["answer"], Value::Null, "{answer}");
        assert_eq!(
            answer["error"]["code"],
            json!("no_common_codec"),
            "{answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("offered: VP9"),
            "the reason names what was offered: {answer}"
        );
        assert_eq!(
            state.lock().expect("fake").ice_fetches,
            n,
            "one ICE servers fetch per offer"
        );
    }
    // A WHEP offer to a streamer in controller mode fetches the controller's list too (its
    // TURN credentials must be as fresh as the controller's viewers'), refused or not.
    let sdp = vp9_offer(3)["sdp"].as_str().unwrap_or_default().to_string();
    let auth = format!("Bearer {TOKEN}");
    let (code, text) = http(
        streamer.addr,
        "POST",
        "/webrtc/whep",
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        &sdp,
    );
    assert_eq!(code, 400, "{text}");
    assert_eq!(
        state.lock().expect("fake").ice_fetches,
        3,
        "a WHEP offer fetches the controller's ICE servers"
    );
}
