//! The cursor thread against a real Xvfb without a browser: subscriptions read through
//! `CursorSub::feed` as a viewer's channel would get them.
//! - with two viewers watching, it stays active until both left, then holds no connection;
//! - Xvfb killed while a viewer watches: the thread says why, and once an X server is back on
//!   the display it connects again by itself and the viewer gets the shape anew (serials
//!   restart with a new server) and the position.
//!
//! Fails (does not skip) when Xvfb is missing.

mod webrtc_common;

use guest_stream::cursor::{Cursor, CursorSub};
use guest_stream::cursor_msg::{parse_cursor, CursorMsg};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;
use webrtc_common::*;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt as _;
use x11rb::wrapper::ConnectionExt as _;

/// Xvfb on display `:n` (a number a previous Xvfb of ours had, now free).
fn xvfb_on(n: &str) -> Proc {
    need("Xvfb", "xvfb");
    let child = Command::new("Xvfb")
        .args([
            n,
            "-screen",
            "0",
            "640x480x24",
            "-nolisten",
            "tcp",
            "-noreset",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn Xvfb");
    let p = Proc(child);
    wait_for("Xvfb to take connections", Duration::from_secs(30), || {
        x11rb::connect(Some(n)).ok().map(|_| ())
    });
    p
}

fn warp(display: &str, x: i16, y: i16) {
    let (conn, screen) = x11rb::connect(Some(display)).expect("connect");
    let root = conn.setup().roots[screen].root;
    conn.warp_pointer(x11rb::NONE, root, 0, 0, 0, 0, x, y)
        .expect("warp");
    conn.sync().expect("sync");
}

/// Feeds `sub` into a channel of parsed messages, on `rt`.
fn watch(rt: &tokio::runtime::Runtime, sub: CursorSub) -> mpsc::UnboundedReceiver<CursorMsg> {
    let (tx, rx) = mpsc::unbounded_channel();
    rt.spawn(sub.feed(move |m| {
        let ok = parse_cursor(&m)
            .map(|c| tx.send(c).is_ok())
            .unwrap_or(false);
        async move { ok }
    }));
    rx
}

/// The next message within 10 s matching `f`.
fn next(
    rx: &mut mpsc::UnboundedReceiver<CursorMsg>,
    what: &str,
    f: impl Fn(&CursorMsg) -> bool,
) -> CursorMsg {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "gave up waiting for {what}");
        match rx.try_recv() {
            Ok(m) if f(&m) => return m,
            Ok(_) => {}
            Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("feed ended waiting for {what}: {e}"),
        }
    }
}

fn is_shape(m: &CursorMsg) -> bool {
    matches!(m, CursorMsg::Shape(_))
}

#[test]
fn the_cursor_thread_follows_viewers_and_survives_the_x_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let x = start_xvfb(640, 480);
    let display = x.display.clone();
    let cursor = Cursor::start(Some(display.clone()), 30.0);

    // Two viewers: each gets the shape and the position; one leaving keeps it active.
    let (a, b) = (cursor.subscribe(), cursor.subscribe());
    let (mut ra, rb) = (watch(&rt, a), watch(&rt, b));
    next(&mut ra, "the shape", is_shape);
    warp(&display, 100, 50);
    next(&mut ra, "the position", |m| {
        matches!(m, CursorMsg::Position { x: 100, y: 50, .. })
    });
    assert_eq!(cursor.stats().viewers, 2);
    drop(rb); // its feed fails on the next send and ends, dropping its subscription
    warp(&display, 101, 50);
    next(&mut ra, "the next position", |m| {
        matches!(m, CursorMsg::Position { x: 101, .. })
    });
    wait_for("one viewer left", Duration::from_secs(5), || {
        (cursor.stats().viewers == 1).then_some(())
    });
    assert!(cursor.stats().active);

    // The X server goes away under a watching viewer, and comes back on the same display.
    drop(x);
    let err = wait_for("the thread to notice", Duration::from_secs(10), || {
        cursor.stats().last_error
    });
    eprintln!("cursor: X gone: {err}");
    let images = cursor.stats().images;
    let _x2 = xvfb_on(&display);
    warp(&display, 200, 150);
    next(&mut ra, "the shape from the new server", is_shape);
    next(&mut ra, "the position on the new server", |m| {
        matches!(m, CursorMsg::Position { x: 200, y: 150, .. })
    });
    let s = cursor.stats();
    assert!(s.active && s.images > images, "{s:?}");

    // Everyone gone: idle, and no more polls.
    drop(ra);
    warp(&display, 10, 10); // the last feed finds its channel closed on this send
    let s = wait_for("idle", Duration::from_secs(5), || {
        let s = cursor.stats();
        (s.viewers == 0 && !s.active).then_some(s)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cursor.stats().polls, s.polls, "no polls while idle");
}
