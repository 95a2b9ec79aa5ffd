//! VP8 next to H.264 (issue 15 item 1): two tabs of one headless Chromium watch the same
//! streamer, one restricted to VP8 by the viewer page's `?codec=vp8` (which calls
//! `RTCRtpTransceiver.setCodecPreferences`, so its offer has no H.264), the other offering
//! what Chromium offers (H.264 among others). Each must decode frames of its own codec
//! (inbound-rtp's codec mimeType) at the configured size, and the streamer must run exactly
//! two encoders, one per codec, each viewer counted under its codec; when the VP8 viewer leaves
//! its encoder goes and the H.264 viewer plays on.
//!
//! The size is not a multiple of 16 (360 = 22.5 macroblocks), so both encoders' cropping is
//! exercised too.

mod webrtc_common;

use serde_json::{json, Value};
use std::time::Duration;
use webrtc_common::*;

const W: u16 = 640;
const H: u16 = 360;

/// The inbound video stats of `viewer.pc`, with the codec they were decoded with.
const CODEC_STATS_JS: &str = r#"(async () => {
  const s = await viewer.pc.getStats(); let r = null;
  s.forEach(x => { if (x.type === 'inbound-rtp' && x.kind === 'video') r = x; });
  const c = r && r.codecId ? s.get(r.codecId) : null;
  return { mimeType: c ? c.mimeType : null, framesDecoded: r ? (r.framesDecoded || 0) : 0,
           frameWidth: r ? (r.frameWidth || 0) : 0, frameHeight: r ? (r.frameHeight || 0) : 0,
           state: viewer.pc.connectionState };
})()"#;

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Waits until the page has decoded at least `at_least` frames; returns its stats.
fn decoded(p: &mut Page, at_least: u64, what: &str) -> Value {
    wait_for(what, Duration::from_secs(90), || {
        let s = p.eval(CODEC_STATS_JS);
        (num(&s["framesDecoded"]) >= at_least).then_some(s)
    })
}

/// The codec of each viewer in the status, sorted.
fn viewer_codecs(st: &Value) -> Vec<String> {
    let mut v: Vec<String> = st["viewer_stats"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v["codec"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `pipeline.codecs[]` entry of `codec`.
fn codec_stats<'a>(st: &'a Value, codec: &str) -> &'a Value {
    st["pipeline"]["codecs"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["codec"] == json!(codec)))
        .unwrap_or(&Value::Null)
}

#[test]
fn a_vp8_viewer_and_an_h264_viewer_share_the_display_with_one_encoder_each() {
    let x = start_xvfb(W, H);
    let _window = start_window(&x.display);
    let streamer = start_streamer(&x.display, W, H);
    wait_for("the streamer's status", Duration::from_secs(30), || {
        streamer_status(streamer.addr)
    });

    let b = Browser::launch("about:blank");
    // The query form: DevTools' /json/new would cut a `&codec=` off the fragment.
    let mut vp8 = b.open_tab(&format!(
        "http://{}/viewer?codec=vp8#token={TOKEN}",
        streamer.addr
    ));
    let mut h264 = b.open_tab(&format!("http://{}/viewer#token={TOKEN}", streamer.addr));

    for (name, t) in [("vp8", &mut vp8), ("h264", &mut h264)] {
        wait_for("window.viewer", Duration::from_secs(30), || {
            (t.eval("typeof viewer") == json!("object")).then_some(())
        });
        t.eval("viewer.ready.then(() => true)");
        let offer = t.eval("viewer.pc.localDescription.sdp");
        let offer = offer.as_str().unwrap_or("");
        assert!(
            offer.contains(" VP8/90000"),
            "{name} tab offers VP8: {offer}"
        );
        assert_eq!(
            offer.contains(" H264/90000"),
            name == "h264",
            "only the unrestricted tab offers H.264: {offer}"
        );
    }
    for (name, mime, t) in [
        ("vp8", "video/VP8", &mut vp8),
        ("h264", "video/H264", &mut h264),
    ] {
        let s = decoded(t, 25, &format!("25 decoded frames in the {name} tab"));
        assert_eq!(s["mimeType"], json!(mime), "{name} tab: {s}");
        assert_eq!(s["frameWidth"], json!(W), "{name} tab: {s}");
        assert_eq!(s["frameHeight"], json!(H), "{name} tab: {s}");
    }

    let both = wait_for(
        "2 connected viewers in status",
        Duration::from_secs(60),
        || {
            streamer_status(streamer.addr).filter(|s| {
                s["viewers"] == json!(2)
                    && s["viewer_stats"]
                        .as_array()
                        .is_some_and(|a| a.iter().all(|v| v["connected"] == json!(true)))
            })
        },
    );
    assert_eq!(viewer_codecs(&both), ["h264", "vp8"], "{both}");
    let p = &both["pipeline"];
    assert_eq!(p["encoders"], json!(2), "one encoder per codec: {both}");
    assert_eq!(p["encoders_in_use"], json!(["h264", "vp8"]), "{both}");
    for codec in ["h264", "vp8"] {
        let c = codec_stats(&both, codec);
        assert_eq!(c["encoders"], json!(1), "{codec}: {both}");
        assert_eq!(c["subscribers"], json!(1), "{codec}: {both}");
        assert!(num(&c["frames_encoded"]) > 0, "{codec}: {both}");
        assert!(num(&c["keyframes"]) >= 1, "{codec}: {both}");
    }

    // Both keep decoding side by side.
    for (name, t) in [("vp8", &mut vp8), ("h264", &mut h264)] {
        let n = num(&t.eval(CODEC_STATS_JS)["framesDecoded"]);
        let s = decoded(t, n + 25, &format!("the {name} tab to keep decoding"));
        assert_eq!(s["state"], json!("connected"), "{name}: {s}");
    }

    // The VP8 viewer leaves: its encoder goes, H.264 plays on.
    b.close_tab(vp8);
    let one = wait_for(
        "1 viewer and only the H.264 encoder",
        Duration::from_secs(60),
        || {
            streamer_status(streamer.addr).filter(|s| {
                s["viewers"] == json!(1) && s["pipeline"]["encoders_in_use"] == json!(["h264"])
            })
        },
    );
    assert_eq!(viewer_codecs(&one), ["h264"], "{one}");
    assert_eq!(one["pipeline"]["encoders"], json!(1), "{one}");
    let n = num(&h264.eval(CODEC_STATS_JS)["framesDecoded"]);
    let s = decoded(&mut h264, n + 25, "the H.264 tab to keep decoding");
    assert_eq!(s["mimeType"], json!("video/H264"), "{s}");
}
