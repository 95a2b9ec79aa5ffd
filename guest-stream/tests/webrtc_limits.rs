//! Viewer accounting under pressure, without a browser or an X display (capture starts only
//! once a viewer connects): `--max-viewers` holds when many WHEP offers arrive at once, a
//! viewer that never connects gives its slot back after the connect timeout, and an offer
//! whose HTTP request is cancelled mid-negotiation leaves no viewer and no peer behind.
//!
//! `peers_alive` counts peer connections in the whole process, so the tests of this file run
//! one at a time.

mod webrtc_common;

use serde_json::Value;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};
use webrtc_common::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

/// Waits until the streamer has no viewer, no negotiation and no live peer connection.
fn wait_empty(s: &BareStreamer, limit: Duration, what: &str) -> Value {
    let end = Instant::now() + limit;
    loop {
        let st = streamer_status(s.addr).unwrap_or_default();
        if num(&st["viewers"]) == 0 && num(&st["negotiating"]) == 0 && num(&st["peers_alive"]) == 0
        {
            return st;
        }
        assert!(Instant::now() < end, "gave up waiting for {what}: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ends every viewer (WHEP DELETE) and waits until nothing is left, so the next test starts
/// from no live peer.
fn close_all(s: &BareStreamer) {
    let ids = streamer_status(s.addr).expect("status")["viewer_ids"].clone();
    for id in ids.as_array().into_iter().flatten() {
        let (code, _) = http(
            s.addr,
            "DELETE",
            &format!("/webrtc/whep/{}", id.as_str().unwrap_or("")),
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            "",
        );
        assert!(code == 204 || code == 404, "DELETE {id}: {code}");
    }
    wait_empty(s, Duration::from_secs(30), "every viewer closed");
}

#[test]
fn max_viewers_holds_under_20_concurrent_offers() {
    let _g = serial();
    let mut opts = loopback_peer_options();
    opts.connect_timeout = Duration::from_secs(120);
    let s = start_bare_streamer(opts, 4);
    let start = Arc::new(Barrier::new(20));
    let posts: Vec<_> = (0..20)
        .map(|_| {
            let (addr, start) = (s.addr, Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                post_offer(addr)
            })
        })
        .collect();
    let results: Vec<(u16, String)> = posts
        .into_iter()
        .map(|t| t.join().expect("POST thread"))
        .collect();
    let created = results.iter().filter(|(c, _)| *c == 201).count();
    let refused: Vec<&String> = results
        .iter()
        .filter(|(c, _)| *c == 503)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        created,
        4,
        "201s: {created}; codes: {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert_eq!(refused.len(), 16, "{results:?}");
    assert!(
        refused.iter().all(|b| b.contains("already 4 viewers")),
        "{refused:?}"
    );
    for (_, b) in results.iter().filter(|(c, _)| *c == 201) {
        assert!(b.contains("Location: /webrtc/whep/") || b.contains("location: /webrtc/whep/"));
        assert!(
            b.contains("a=candidate:"),
            "answer with our candidates: {b}"
        );
    }
    let st = streamer_status(s.addr).expect("status");
    assert_eq!(num(&st["viewers"]), 4, "{st}");
    assert_eq!(num(&st["negotiating"]), 0, "{st}");
    assert_eq!(num(&st["peers_alive"]), 4, "{st}");
    // Full: one more is refused too, then ending one viewer lets the next in.
    assert_eq!(post_offer(s.addr).0, 503);
    let id = st["viewer_ids"][0]
        .as_str()
        .expect("a viewer id")
        .to_string();
    let (code, _) = http(
        s.addr,
        "DELETE",
        &format!("/webrtc/whep/{id}"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    );
    assert_eq!(code, 204);
    assert_eq!(post_offer(s.addr).0, 201, "the freed slot is usable");
    close_all(&s);
}

#[test]
fn a_viewer_that_never_connects_is_closed_and_frees_its_slot() {
    let _g = serial();
    let mut opts = loopback_peer_options();
    opts.connect_timeout = Duration::from_secs(2);
    let s = start_bare_streamer(opts, 1);
    let t0 = Instant::now();
    let (code, body) = post_offer(s.addr);
    assert_eq!(code, 201, "{body}");
    let st = streamer_status(s.addr).expect("status");
    assert_eq!(num(&st["viewers"]), 1, "{st}");
    assert_eq!(post_offer(s.addr).0, 503, "the one slot is taken");
    // Nothing ever answers the offer's ICE: after the connect timeout the peer is closed.
    wait_empty(
        &s,
        Duration::from_secs(30),
        "the unconnected viewer to be closed",
    );
    eprintln!(
        "unconnected viewer closed {:?} after its offer",
        t0.elapsed()
    );
    assert_eq!(post_offer(s.addr).0, 201, "its slot was given back");
    close_all(&s);
}

#[test]
fn a_cancelled_offer_leaves_no_viewer_and_no_peer() {
    let _g = serial();
    // A STUN server that never answers keeps ICE gathering (and so the answer) waiting for
    // the gather timeout: the request is cancelled while the peer is being negotiated.
    let stun = std::net::UdpSocket::bind("127.0.0.1:0").expect("silent STUN socket");
    let mut opts = loopback_peer_options();
    opts.ice_servers = vec![guest_stream::peer::IceServer {
        urls: vec![format!("stun:{}", stun.local_addr().expect("stun addr"))],
        ..Default::default()
    }];
    opts.gather_timeout = Duration::from_secs(3);
    // Far longer than the test waits: only the cancellation can end this viewer in time.
    opts.connect_timeout = Duration::from_secs(600);
    let s = start_bare_streamer(opts, 1);

    let mut c = TcpStream::connect(s.addr).expect("connect");
    let req = format!(
        "POST /webrtc/whep HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{H264_OFFER}",
        s.addr,
        H264_OFFER.len()
    );
    c.write_all(req.as_bytes()).expect("send the offer");
    let st = wait_for(
        "the offer being negotiated",
        Duration::from_secs(10),
        || streamer_status(s.addr).filter(|st| num(&st["negotiating"]) == 1),
    );
    assert_eq!(num(&st["viewers"]), 0, "{st}");
    // The viewer hangs up before the answer.
    drop(c);
    let t0 = Instant::now();
    wait_empty(
        &s,
        Duration::from_secs(60),
        "the cancelled offer's peer to be closed",
    );
    eprintln!(
        "cancelled offer cleaned up {:?} after the hang-up",
        t0.elapsed()
    );
    // And its slot is free again (max_viewers is 1).
    let (code, body) = post_offer(s.addr);
    assert_eq!(code, 201, "{body}");
    close_all(&s);
}
