//! Several viewers at once (issue 8: "each gets its own peer; the capture/encode work is
//! shared"): two tabs of one headless chromium open `/viewer` on the same streamer. Both must
//! decode frames at the configured resolution, the streamer's status must count 2 viewers,
//! then 1 when a tab closes, then 0.
//!
//! The sharing is checked by structure, not by timing: while both watch, the process holds
//! exactly one H.264 encoder (`pipeline.encoders`, a gauge of live encoder instances), and over
//! a window the frames written to the two viewers' tracks outnumber the frames encoded (each
//! encoded frame fans out to both; with an encoder per viewer every sent frame would have
//! been encoded for it, so sent ≤ encoded). Once everyone left, no peer connection and no
//! encoder is left alive.

mod webrtc_common;

use serde_json::{json, Value};
use std::time::Duration;
use webrtc_common::*;

const W: u16 = 640;
const H: u16 = 360;

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Frames sent to each viewer, by id.
fn sent_by_viewer(st: &Value) -> Vec<(String, u64)> {
    st["viewer_stats"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    (
                        v["id"].as_str().unwrap_or("").to_string(),
                        num(&v["frames_sent"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn decoded(p: &mut Page, at_least: u64, what: &str) -> Value {
    wait_for(what, Duration::from_secs(90), || {
        let s = p.eval(STATS_JS);
        (num(&s["framesDecoded"]) >= at_least).then_some(s)
    })
}

#[test]
fn two_viewers_share_one_encoder_and_leave_nothing_behind() {
    let x = start_xvfb(W, H);
    let _window = start_window(&x.display);
    let streamer = start_streamer(&x.display, W, H);
    let idle = wait_for("the streamer's status", Duration::from_secs(30), || {
        streamer_status(streamer.addr)
    });
    assert_eq!(idle["viewers"], json!(0), "{idle}");
    assert_eq!(
        idle["pipeline"]["encoders"],
        json!(0),
        "idle: no encoder {idle}"
    );

    let url = format!("http://{}/viewer#token={TOKEN}", streamer.addr);
    let b = Browser::launch("about:blank");
    let mut tab1 = b.open_tab(&url);
    let mut tab2 = b.open_tab(&url);
    let mut tabs = [&mut tab1, &mut tab2];

    for (i, t) in tabs.iter_mut().enumerate() {
        wait_for("window.viewer", Duration::from_secs(30), || {
            (t.eval("typeof viewer") == json!("object")).then_some(())
        });
        t.eval("viewer.ready.then(() => true)");
        let s = decoded(t, 25, &format!("25 decoded frames in tab {i}"));
        assert_eq!(s["frameWidth"], json!(W), "tab {i}: {s}");
        assert_eq!(s["frameHeight"], json!(H), "tab {i}: {s}");
    }
    let st = wait_for("2 viewers in status", Duration::from_secs(60), || {
        streamer_status(streamer.addr).filter(|s| s["viewers"] == json!(2))
    });
    let both = wait_for("both viewers connected", Duration::from_secs(30), || {
        streamer_status(streamer.addr).filter(|s| {
            s["viewers"] == json!(2)
                && s["viewer_stats"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|v| v["connected"] == json!(true)))
        })
    });
    assert_eq!(both["pipeline"]["subscribers"], json!(2), "{both}");
    assert_eq!(
        both["pipeline"]["encoders"],
        json!(1),
        "one shared encoder: {both}"
    );
    assert!(num(&st["peers_alive"]) >= 2, "{st}");

    // The window: until each viewer has been sent 30 more frames.
    let s0 = both;
    let before = sent_by_viewer(&s0);
    assert_eq!(before.len(), 2, "{s0}");
    let s1 = wait_for(
        "30 frames sent to each viewer",
        Duration::from_secs(90),
        || {
            let s = streamer_status(streamer.addr)?;
            let now = sent_by_viewer(&s);
            let grown = before
                .iter()
                .all(|(id, n)| now.iter().any(|(id2, m)| id2 == id && *m >= n + 30));
            grown.then_some(s)
        },
    );
    let d_enc = num(&s1["pipeline"]["frames_encoded"]) - num(&s0["pipeline"]["frames_encoded"]);
    let d_sent = num(&s1["pipeline"]["frames_sent"]) - num(&s0["pipeline"]["frames_sent"]);
    eprintln!("window: {d_enc} frames encoded, {d_sent} sent to the 2 viewers");
    assert!(d_enc > 0, "frames were encoded in the window: {s0} / {s1}");
    assert!(
        d_sent > d_enc,
        "each encoded frame goes to both viewers: {d_sent} sent vs {d_enc} encoded ({s0} / {s1})"
    );
    assert_eq!(s1["pipeline"]["encoders"], json!(1), "{s1}");
    // Both pages still decode.
    for (i, t) in tabs.iter_mut().enumerate() {
        let n = num(&t.eval(STATS_JS)["framesDecoded"]);
        decoded(t, n + 10, &format!("tab {i} to keep decoding"));
    }

    // One viewer leaves (its tab closes): 1 viewer, the other still decodes.
    b.close_tab(tab2);
    let one = wait_for(
        "1 viewer after a tab closed",
        Duration::from_secs(60),
        || streamer_status(streamer.addr).filter(|s| s["viewers"] == json!(1)),
    );
    assert_eq!(one["pipeline"]["encoders"], json!(1), "{one}");
    let n = num(&tab1.eval(STATS_JS)["framesDecoded"]);
    let s = decoded(&mut tab1, n + 25, "the remaining tab to keep decoding");
    assert_eq!(s["state"], json!("connected"), "{s}");

    // The other leaves too: 0 viewers, and nothing left alive: no peer connection, no
    // encoder (the pipeline idles without viewers).
    tab1.eval("location.href = 'about:blank', true");
    let zero = wait_for("0 viewers", Duration::from_secs(60), || {
        streamer_status(streamer.addr).filter(|s| s["viewers"] == json!(0))
    });
    assert!(
        zero["viewer_stats"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{zero}"
    );
    wait_for(
        "no peer connection and no encoder left",
        Duration::from_secs(60),
        || {
            streamer_status(streamer.addr)
                .filter(|s| s["peers_alive"] == json!(0) && s["pipeline"]["encoders"] == json!(0))
        },
    );
}
