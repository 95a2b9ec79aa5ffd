//! Viewers coming and going must leave nothing behind in the streamer (it runs for days;
//! webrtc-rs has leaked across peer connections before, webrtc-rs issue 906). One tab of
//! headless chromium opens `/viewer`, watches until frames decode, and leaves, several times:
//! by reloading (the page's pagehide sends the WHEP DELETE) and, every other round, with the
//! DELETE suppressed (a viewer that vanishes; the streamer must notice the connection end
//! by itself). After each round the status shows the new viewer alone; after the last, 0
//! viewers, an empty viewer map, no live peer connection and no encoder, and once the
//! browser is gone, no more tasks on the streamer's runtime than before the first viewer.
//! Memory growth is measured by `cargo xtask bench stream --reconnects N`, not here.

mod webrtc_common;

use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;
use webrtc_common::*;

const W: u16 = 320;
const H: u16 = 240;
const ROUNDS: usize = 6;

fn ids(st: &Value) -> Vec<String> {
    st["viewer_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn viewers_reconnecting_leave_no_peer_behind() {
    let x = start_xvfb(W, H);
    let _window = start_window(&x.display);
    let streamer = start_streamer(&x.display, W, H);
    let idle = wait_for("the streamer's status", Duration::from_secs(30), || {
        streamer_status(streamer.addr)
    });
    // Tasks on the streamer's runtime before any viewer: the listeners and this request.
    let idle_tasks = idle["tasks_alive"].as_u64().expect("tasks_alive");
    assert!(idle_tasks > 0, "{idle}");
    let url = format!("http://{}/viewer#token={TOKEN}", streamer.addr);
    let mut b = Browser::launch("about:blank");
    let mut seen: HashSet<String> = HashSet::new();
    for round in 0..ROUNDS {
        if round == 0 {
            b.eval(&format!("location.href = {}, true", json!(url)));
        } else {
            // Mark this page so the wait below can tell the new one from it.
            b.eval("window.oldPage = true");
            if round % 2 == 0 {
                // Leave without the WHEP DELETE: the streamer notices the connection end.
                b.eval("window.fetch = () => Promise.resolve(new Response()), true");
            }
            b.eval("location.reload(), true");
        }
        wait_for(
            &format!("the viewer page of round {round}"),
            Duration::from_secs(30),
            || {
                // try_eval: the poll may land while the old page is being torn down.
                (b.try_eval("typeof viewer === 'object' && typeof oldPage === 'undefined'")
                    == Some(json!(true)))
                .then_some(())
            },
        );
        b.eval("viewer.ready.then(() => true)");
        let s = wait_for(
            &format!("10 decoded frames in round {round}"),
            Duration::from_secs(60),
            || {
                let s = b.eval(STATS_JS);
                (s["framesDecoded"].as_u64().unwrap_or(0) >= 10).then_some(s)
            },
        );
        assert_eq!(s["frameWidth"], json!(W), "round {round}: {s}");
        // The previous round's viewer is gone (DELETE or noticed), this one is the only one.
        let t = std::time::Instant::now();
        let st = wait_for(
            &format!("only round {round}'s viewer in status"),
            Duration::from_secs(60),
            || {
                streamer_status(streamer.addr).filter(|st| {
                    st["viewers"] == json!(1) && ids(st).iter().all(|id| !seen.contains(id))
                })
            },
        );
        eprintln!(
            "round {round}: previous viewer gone {:?} after this one decoded",
            t.elapsed()
        );
        let id = ids(&st).pop().expect("one viewer id");
        assert!(seen.insert(id), "a new viewer each round: {st}");
        assert!(
            st["pipeline"]["encoders"].as_u64().unwrap_or(0) <= 1,
            "{st}"
        );
    }
    assert_eq!(seen.len(), ROUNDS);

    b.eval("location.href = 'about:blank', true");
    let st = wait_for(
        "0 viewers, no live peer, no encoder",
        Duration::from_secs(60),
        || {
            streamer_status(streamer.addr).filter(|st| {
                st["viewers"] == json!(0)
                    && st["peers_alive"] == json!(0)
                    && st["pipeline"]["encoders"] == json!(0)
            })
        },
    );
    assert!(ids(&st).is_empty(), "the viewer map is empty: {st}");
    assert_eq!(st["viewer_stats"], json!([]), "{st}");
    assert_eq!(st["pipeline"]["subscribers"], json!(0), "{st}");
    // With the browser gone (its keep-alive HTTP connections with it), the runtime is back to
    // the idle level: no task of any viewer's peer is left running.
    drop(b);
    wait_for(
        &format!("the streamer's tasks back to the idle {idle_tasks}"),
        Duration::from_secs(60),
        || {
            streamer_status(streamer.addr)
                .filter(|st| st["tasks_alive"].as_u64().unwrap_or(u64::MAX) <= idle_tasks)
        },
    );
}
