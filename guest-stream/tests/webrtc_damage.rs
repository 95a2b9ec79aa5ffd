//! Damage-driven capture (issue 15 item 2) against a real Xvfb: a still screen reports no
//! change, so the streamer neither grabs nor hashes it on every tick; something drawn is
//! reported at once with its age on the display's clock; the pipeline of a running streamer
//! says it follows DAMAGE and gives the drawn → encoded figures the benchmark prints.

mod webrtc_common;

use guest_stream::capture::Capturer;
use serde_json::json;
use std::time::{Duration, Instant};
use webrtc_common::*;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt as _, CreateWindowAux, WindowClass};

#[test]
fn a_still_screen_reports_nothing_and_a_drawing_is_reported_at_once() {
    let x = start_xvfb(320, 240);
    let mut cap = Capturer::connect(Some(&x.display), 320, 240).expect("capturer");
    assert!(cap.uses_damage(), "Xvfb has DAMAGE");
    // The first report may be the screen's initial state; after it, the screen is still.
    let _ = cap.wait_change(Duration::from_millis(300)).expect("wait");
    cap.capture().expect("grab");
    assert!(
        !cap.wait_change(Duration::from_millis(500)).expect("wait"),
        "a still screen reported a change"
    );

    // Draw: a window mapped over the root.
    let (conn, n) = x11rb::connect(Some(&x.display)).expect("connect");
    let root = conn.setup().roots[n].root;
    let win = conn.generate_id().expect("id");
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        win,
        root,
        10,
        10,
        100,
        100,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new()
            .background_pixel(0x00ff_0000)
            .override_redirect(1),
    )
    .expect("window");
    conn.map_window(win).expect("map");
    conn.flush().expect("flush");
    let t = Instant::now();
    assert!(
        cap.wait_change(Duration::from_secs(10)).expect("wait"),
        "the drawing was not reported"
    );
    let waited = t.elapsed();
    let age = cap.damage_age();
    assert!(
        age.is_some(),
        "the report has an age on the display's clock"
    );
    // The grab after the report sees the window's red.
    let frame = cap.capture().expect("grab").to_vec();
    let px = (50 * 320 + 50) * 4;
    assert_eq!(&frame[px..px + 3], &[0, 0, 255], "BGRX red at (50,50)");
    eprintln!("drawing reported after {waited:?} (age {age:?})");
}

#[test]
fn the_streamer_follows_damage_and_reports_its_share() {
    let x = start_xvfb(640, 360);
    let _window = start_window(&x.display);
    let streamer = start_streamer(&x.display, 640, 360);
    let url = format!("http://{}/viewer#token={TOKEN}", streamer.addr);
    let mut b = Browser::launch(&url);
    wait_for("window.viewer", Duration::from_secs(30), || {
        (b.eval("typeof viewer") == json!("object")).then_some(())
    });
    b.eval("viewer.ready.then(() => true)");
    let st = wait_for(
        "the drawn → encoded figures",
        Duration::from_secs(60),
        || {
            let s = streamer_status(streamer.addr)?;
            (s["pipeline"]["damage_to_encoded_p50_ms"].is_number()).then_some(s)
        },
    );
    assert_eq!(st["pipeline"]["damage"], json!(true), "{st}");
    eprintln!(
        "drawn → encoded p50 {} ms, p95 {} ms",
        st["pipeline"]["damage_to_encoded_p50_ms"], st["pipeline"]["damage_to_encoded_p95_ms"]
    );
}
