//! Viewer input against a real X server (Xvfb, no browser): keysyms the keyboard mapping
//! lacks are typed through a small fixed pool of spare keycodes (the mapping never changes
//! beyond it, and a held key is never rebound under the viewer's finger), and a flood of input
//! through the injector thread's queue stays within the queue's bound, is counted as dropped,
//! and leaves no key or button held.

mod webrtc_common;

use guest_stream::inject::Injector;
use guest_stream::inject_thread::InputSink;
use guest_stream::input::InputEvent::{self, *};
use guest_stream::input_queue::MAX_QUEUED;
use guest_stream::keycodes::MAX_SPARE;
use std::time::Duration;
use webrtc_common::*;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;

/// CJK ideographs as Unicode keysyms: no keycode in Xvfb's default (US) mapping.
const UNMAPPED: u32 = 0x100_4e00;

/// The whole keyboard mapping, one keysym list per keycode.
fn mapping(conn: &RustConnection) -> Vec<Vec<u32>> {
    let (min, max) = (conn.setup().min_keycode, conn.setup().max_keycode);
    let m = conn
        .get_keyboard_mapping(min, max - min + 1)
        .expect("GetKeyboardMapping")
        .reply()
        .expect("keyboard mapping");
    m.keysyms
        .chunks(usize::from(m.keysyms_per_keycode.max(1)))
        .map(<[u32]>::to_vec)
        .collect()
}

/// Keycodes the X server reports as down.
fn keys_down(conn: &RustConnection) -> Vec<u8> {
    let km = conn
        .query_keymap()
        .expect("QueryKeymap")
        .reply()
        .expect("keymap");
    (0..=255u8)
        .filter(|&c| km.keys[usize::from(c / 8)] & (1 << (c % 8)) != 0)
        .collect()
}

#[test]
fn unmapped_keysyms_reuse_a_small_pool_and_a_held_key_is_never_rebound() {
    let x = start_xvfb(320, 240);
    let (conn, _) = x11rb::connect(Some(&x.display)).expect("connect");
    let before = mapping(&conn);
    let unused = before.iter().filter(|s| s.iter().all(|&k| k == 0)).count();
    assert!(
        unused > MAX_SPARE,
        "Xvfb has only {unused} unused keycodes: the test needs more than the pool"
    );

    let mut inj = Injector::connect(Some(&x.display)).expect("injector");
    let pool = inj.spare_keycodes().len();
    // One unmapped key is held down while 500 others are typed.
    inj.apply(&[KeyDown(UNMAPPED)]).expect("press the held key");
    for k in 1..=500 {
        inj.apply(&[KeyDown(UNMAPPED + k), KeyUp(UNMAPPED + k)])
            .expect("type");
    }
    let after = mapping(&conn);
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    assert!(
        changed.len() <= MAX_SPARE,
        "{} keycodes were rebound (pool: {MAX_SPARE})",
        changed.len()
    );
    assert_eq!(pool, MAX_SPARE);
    let held = keys_down(&conn);
    assert_eq!(held.len(), 1, "only the held key is down: {held:?}");
    // The held key still types what it was pressed as.
    let min = conn.setup().min_keycode;
    let held_syms = &after[usize::from(held[0] - min)];
    assert_eq!(held_syms[0], UNMAPPED, "the held keycode was rebound");
    inj.apply(&[KeyUp(UNMAPPED)]).expect("release");
    assert_eq!(keys_down(&conn), Vec::<u8>::new(), "released");
    let c = inj.counters();
    assert_eq!(c.remaps, 501, "{c:?}");
    assert_eq!(c.no_keycode, 0, "{c:?}");
}

#[test]
fn an_input_flood_stays_bounded_and_leaves_nothing_held() {
    let x = start_xvfb(320, 240);
    let (conn, _) = x11rb::connect(Some(&x.display)).expect("connect");
    let sink = InputSink::start(Some(x.display.clone()));
    // Every press of a new unmapped keysym costs the injector a mapping change and a round
    // trip, so this arrives far faster than X takes it.
    let mut flood: Vec<InputEvent> = vec![KeyDown(0xffe3), ButtonDown(1)]; // Control_L, left
    for k in 0..20_000u32 {
        flood.push(Move {
            x: (k % 300) as u16,
            y: 10,
        });
        flood.push(KeyDown(UNMAPPED + k % 2000));
        flood.push(KeyUp(UNMAPPED + k % 2000));
    }
    for chunk in flood.chunks(30) {
        sink.send(chunk.to_vec());
    }
    sink.send(vec![KeyUp(0xffe3), ButtonUp(1)]);
    let st = wait_for("the queue to drain", Duration::from_secs(120), || {
        let s = sink.stats();
        (s.queue.queued == 0 && s.events > 0).then_some(s)
    });
    assert!(
        st.queue.queued_max <= MAX_QUEUED,
        "queue reached {} events (bound {MAX_QUEUED})",
        st.queue.queued_max
    );
    assert!(st.queue.dropped > 0, "the flood was not dropped: {st:?}");
    assert!(st.keys.remaps > 0, "{st:?}");
    assert_eq!(st.last_error, None, "{st:?}");
    // Control and the left button were pressed and released through the full queue.
    wait_for(
        "every key and button released",
        Duration::from_secs(30),
        || {
            let keys = keys_down(&conn);
            let ptr = conn
                .query_pointer(conn.setup().roots[0].root)
                .ok()?
                .reply()
                .ok()?;
            let buttons = u16::from(ptr.mask) & 0x1f00;
            (keys.is_empty() && buttons == 0).then_some(())
        },
    );
    eprintln!(
        "flood of {} events: {} injected, {} dropped, {} coalesced, queue max {} (bound {MAX_QUEUED}), {} remaps",
        flood.len() + 2,
        st.events,
        st.queue.dropped,
        st.queue.coalesced,
        st.queue.queued_max,
        st.keys.remaps
    );
}
