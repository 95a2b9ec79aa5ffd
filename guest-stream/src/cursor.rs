//! The VM's pointer for the viewers: raw grabs of the X screen carry no pointer, so a viewer
//! clicking through a login could not see where the VM thinks it is. One thread with its own
//! X connection publishes the current shape and position; each viewer that asked for them
//! (the 0x0a event) is sent what changed ([`super::cursor_msg`] has the format).
//!
//! - **Shape**: XFixes `CursorNotify` on the root says the displayed cursor changed (with its
//!   serial); the image (`GetCursorImage`, premultiplied ARGB) is fetched once per serial and
//!   kept, so a pointer going back and forth between an arrow and an I-beam costs one reply
//!   each; a new cursor with a picture seen before goes out under the first one's serial.
//! - **Position**: `QueryPointer` once per frame interval (`--fps`), published when it moved.
//!   Polled because X has no event for "the pointer moved anywhere": core `MotionNotify` goes
//!   only to windows under the pointer that select it, and XInput 2 raw motion misses warps.
//!   One small round trip per frame interval is well under what the capture costs.
//!
//! Cost when nobody looks: nothing. The thread waits on a condition variable with no X
//! connection while no viewer asked for the cursor (no polling, no XFixes events queueing up
//! in the X server for a client that does not read), connects when the first one asks, and
//! closes the connection again within one interval of the last one leaving.

use super::cursor_msg::{CursorShape, CursorState, ViewerFeed};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xfixes::{self, ConnectionExt as _, CursorNotifyMask};
use x11rb::protocol::xproto::{ConnectionExt as _, Window};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;

/// Shapes kept by serial in the thread; cleared when full (a program making new cursors
/// without end must not grow the streamer).
const SHAPE_CACHE: usize = 64;
/// Wait before connecting again after the X server refused or went away.
const RETRY: Duration = Duration::from_secs(1);

/// Counters (part of `/webrtc/status` → `input.cursor`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CursorStats {
    /// Viewers that asked for the cursor now.
    pub viewers: usize,
    /// The thread holds an X connection and polls (only while `viewers > 0`).
    pub active: bool,
    /// Cursor images fetched from the X server (one per new serial).
    pub images: u64,
    /// `QueryPointer` round trips.
    pub polls: u64,
    /// Shape (0x81) and position (0x82) messages sent, over all viewers.
    pub shapes_sent: u64,
    pub positions_sent: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    images: AtomicU64,
    polls: AtomicU64,
    shapes_sent: AtomicU64,
    positions_sent: AtomicU64,
    active: AtomicBool,
}

struct Shared {
    /// Viewers subscribed; the thread sleeps while 0.
    viewers: Mutex<usize>,
    wake: Condvar,
    /// The last handle is gone: the thread ends.
    closed: AtomicBool,
    state: watch::Sender<CursorState>,
    counters: Counters,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    /// Records an error, logged once while it repeats (an X server that is down is retried
    /// every second while a viewer watches).
    fn note(&self, e: String) {
        if let Ok(mut l) = self.last_error.lock() {
            if l.as_deref() != Some(e.as_str()) {
                tracing::warn!("cursor: {e}");
            }
            *l = Some(e);
        }
    }

    fn viewers(&self) -> usize {
        self.viewers.lock().map(|n| *n).unwrap_or(0)
    }
}

struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
    }
}

/// Cheap clonable handle to the cursor thread.
#[derive(Clone)]
pub struct Cursor {
    inner: Arc<Inner>,
}

/// One viewer's subscription; dropping it (the viewer left or said stop) is what lets the
/// thread go idle.
pub struct CursorSub {
    shared: Arc<Shared>,
    rx: watch::Receiver<CursorState>,
}

impl Drop for CursorSub {
    fn drop(&mut self) {
        if let Ok(mut n) = self.shared.viewers.lock() {
            *n = n.saturating_sub(1);
        }
    }
}

impl Cursor {
    /// Starts the (idle) thread for `display` (None: `$DISPLAY`), polling the position `hz`
    /// times a second while someone watches.
    pub fn start(display: Option<String>, hz: f32) -> Cursor {
        let shared = Arc::new(Shared {
            viewers: Mutex::new(0),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            state: watch::Sender::new(CursorState::default()),
            counters: Counters::default(),
            last_error: Mutex::new(None),
        });
        let hz = if hz.is_finite() {
            hz.clamp(1.0, 240.0)
        } else {
            30.0
        };
        let tick = Duration::from_secs_f64(1.0 / f64::from(hz));
        let sh = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("webrtc-cursor".into())
            .spawn(move || run(display.as_deref(), tick, &sh));
        if let Err(e) = spawned {
            shared.note(format!("cannot start cursor thread: {e}"));
        }
        Cursor {
            inner: Arc::new(Inner { shared }),
        }
    }

    /// A viewer wants the cursor: wakes the thread if it was idle.
    pub fn subscribe(&self) -> CursorSub {
        let shared = Arc::clone(&self.inner.shared);
        if let Ok(mut n) = shared.viewers.lock() {
            *n += 1;
        }
        shared.wake.notify_all();
        let rx = shared.state.subscribe();
        CursorSub { shared, rx }
    }

    pub fn stats(&self) -> CursorStats {
        let s = &self.inner.shared;
        let c = &s.counters;
        CursorStats {
            viewers: s.viewers(),
            active: c.active.load(Ordering::SeqCst),
            images: c.images.load(Ordering::SeqCst),
            polls: c.polls.load(Ordering::SeqCst),
            shapes_sent: c.shapes_sent.load(Ordering::SeqCst),
            positions_sent: c.positions_sent.load(Ordering::SeqCst),
            last_error: s.last_error.lock().ok().and_then(|l| l.clone()),
        }
    }
}

impl CursorSub {
    /// Sends this viewer the cursor as it changes until `send` fails (the channel closed) or
    /// the task is aborted. `send` gets one framed message at a time.
    pub async fn feed<F, Fut>(mut self, mut send: F)
    where
        F: FnMut(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut feed = ViewerFeed::default();
        loop {
            let st = self.rx.borrow_and_update().clone();
            for m in feed.update(&st) {
                let c = &self.shared.counters;
                if m.first() == Some(&super::cursor_msg::CURSOR_SHAPE) {
                    c.shapes_sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.positions_sent.fetch_add(1, Ordering::Relaxed);
                }
                if !send(m).await {
                    return;
                }
            }
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }
}

type XResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The thread's X connection and the shapes it has fetched.
struct X {
    conn: RustConnection,
    root: Window,
    shapes: HashMap<u32, Arc<CursorShape>>,
}

impl X {
    fn connect(display: Option<&str>) -> XResult<X> {
        let (conn, screen) = x11rb::connect(display)?;
        let root = conn.setup().roots[screen].root;
        if conn
            .extension_information(xfixes::X11_EXTENSION_NAME)?
            .is_none()
        {
            return Err("the X server has no XFIXES extension".into());
        }
        // XFixes wants the version asked before any other request; cursor notification and
        // images are in every version (1.0+).
        conn.xfixes_query_version(5, 0)?.reply()?;
        conn.xfixes_select_cursor_input(root, CursorNotifyMask::DISPLAY_CURSOR)?;
        conn.flush()?;
        Ok(X {
            conn,
            root,
            shapes: HashMap::new(),
        })
    }

    /// The cursor on screen now (by the serial the reply names, which may be newer than the
    /// event's).
    fn shape(&mut self, counters: &Counters) -> XResult<Arc<CursorShape>> {
        let r = self.conn.xfixes_get_cursor_image()?.reply()?;
        counters.images.fetch_add(1, Ordering::Relaxed);
        let s = CursorShape::from_argb(
            r.cursor_serial,
            r.width,
            r.height,
            r.xhot,
            r.yhot,
            &r.cursor_image,
        );
        // Programs make new X cursors for pictures they showed before (Chromium does for a
        // page's own CSS cursor on every hover): the same picture keeps its first serial, so
        // a viewer is not sent it again. At most SHAPE_CACHE compares, once per new serial.
        let s = match self.shapes.values().find(|o| o.same_picture(&s)) {
            Some(o) => Arc::clone(o),
            None => Arc::new(s),
        };
        if self.shapes.len() >= SHAPE_CACHE {
            self.shapes.clear();
        }
        self.shapes.insert(r.cursor_serial, Arc::clone(&s));
        Ok(s)
    }

    fn pointer(&self, counters: &Counters) -> XResult<(u16, u16)> {
        let r = self.conn.query_pointer(self.root)?.reply()?;
        counters.polls.fetch_add(1, Ordering::Relaxed);
        let c = |v: i16| v.max(0) as u16;
        Ok((c(r.root_x), c(r.root_y)))
    }

    /// Handles queued events; the serial of the newest cursor change, if any. Replies read
    /// since the last poll may have queued events inside x11rb, so this runs before every
    /// wait on the socket.
    fn events(&self) -> XResult<Option<u32>> {
        let mut serial = None;
        while let Some(ev) = self.conn.poll_for_event()? {
            match ev {
                Event::XfixesCursorNotify(n) => serial = Some(n.cursor_serial),
                Event::Error(e) => return Err(format!("X error: {e:?}").into()),
                _ => {}
            }
        }
        Ok(serial)
    }
}

fn publish(shared: &Shared, f: impl FnOnce(&mut CursorState) -> bool) {
    shared.state.send_if_modified(f);
}

fn run(display: Option<&str>, tick: Duration, shared: &Shared) {
    let mut epoch = 0u64;
    loop {
        // Idle: no connection, no polling, until a viewer asks.
        {
            let Ok(mut n) = shared.viewers.lock() else {
                return;
            };
            while *n == 0 && !shared.closed.load(Ordering::SeqCst) {
                shared.counters.active.store(false, Ordering::SeqCst);
                n = match shared.wake.wait(n) {
                    Ok(n) => n,
                    Err(_) => return,
                };
            }
        }
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        epoch += 1;
        let r = serve_viewers(display, tick, shared, epoch);
        // Nothing stale for a viewer that comes later: it waits for a connection's state.
        publish(shared, |st| {
            *st = CursorState::default();
            true
        });
        match r {
            Ok(()) => {}
            Err(e) => {
                shared.note(e.to_string());
                shared.counters.active.store(false, Ordering::SeqCst);
                // Wait before connecting again, but wake at once when closed.
                if let Ok(n) = shared.viewers.lock() {
                    let _ = shared.wake.wait_timeout(n, RETRY);
                }
            }
        }
    }
}

/// Connected: publishes the cursor until no viewer is left (Ok) or X fails (Err).
fn serve_viewers(
    display: Option<&str>,
    tick: Duration,
    shared: &Shared,
    epoch: u64,
) -> XResult<()> {
    let c = &shared.counters;
    let mut x = X::connect(display).map_err(|e| format!("cannot connect to X display: {e}"))?;
    c.active.store(true, Ordering::SeqCst);
    let shape = x.shape(c)?;
    let pos = x.pointer(c)?;
    publish(shared, |st| {
        *st = CursorState {
            epoch,
            shape: Some(shape),
            pos: Some(pos),
        };
        true
    });
    let mut next = Instant::now() + tick;
    while shared.viewers() > 0 && !shared.closed.load(Ordering::SeqCst) {
        // Shape changes (each fetch may queue more events, hence the loop).
        while let Some(serial) = x.events()? {
            let s = match x.shapes.get(&serial) {
                Some(s) => Arc::clone(s),
                None => x.shape(c)?,
            };
            publish(shared, |st| {
                let changed = st.shape.as_ref().map(|o| o.serial) != Some(s.serial);
                st.shape = Some(s);
                changed
            });
        }
        let now = Instant::now();
        if now >= next {
            let pos = Some(x.pointer(c)?);
            publish(shared, |st| std::mem::replace(&mut st.pos, pos) != pos);
            // Behind (a slow reply): the next poll a full interval on, not at once.
            next = if next + tick > now {
                next + tick
            } else {
                now + tick
            };
            continue; // drain what the reply brought before sleeping
        }
        let ms = next.saturating_duration_since(now).as_millis().min(1000) as i32 + 1;
        let mut pfd = libc::pollfd {
            fd: x.conn.stream().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a live pollfd for the whole call.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without an X server the thread says why, keeps retrying only while someone watches,
    /// and goes idle when the viewer leaves.
    #[test]
    fn without_a_display_it_says_why_and_goes_idle() {
        let c = Cursor::start(Some(":9999".into()), 30.0);
        assert_eq!(c.stats().viewers, 0);
        let sub = c.subscribe();
        let end = Instant::now() + Duration::from_secs(5);
        while c.stats().last_error.is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        let s = c.stats();
        assert!(
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("cannot connect to X display")),
            "{s:?}"
        );
        assert_eq!((s.viewers, s.polls, s.images), (1, 0, 0));
        drop(sub);
        assert_eq!(c.stats().viewers, 0);
        assert!(!c.stats().active);
    }
}
