//! The single thread that owns the XTEST connection. Peers hand it parsed events through a
//! bounded queue ([`super::input_queue`]: injection never blocks a network task, and a viewer
//! sending faster than X takes it costs dropped events, not memory); it connects lazily,
//! reconnects after an X error, and releases everything held when a viewer goes away.
//! The handle also carries the clipboard thread ([`super::clipboard`]), the cursor thread
//! ([`super::cursor`]) and the count of messages the parser refused, so a peer needs one
//! handle for all its data channel carries.

use super::clipboard::{Clipboard, ClipboardStats};
use super::cursor::{Cursor, CursorStats};
use super::inject::{InjectCounters, Injector};
use super::input::{InputError, InputEvent};
use super::input_queue::{InputQueue, QueueStats};
use std::sync::{Arc, Mutex};

/// Counters for /status and tests.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InputStats {
    pub events: u64,
    pub batches: u64,
    #[serde(flatten)]
    pub queue: QueueStats,
    #[serde(flatten)]
    pub keys: InjectCounters,
    /// Messages refused whole by the parser (any malformed event in them).
    pub malformed: u64,
    /// Of those, clipboard texts over the bound (`input::MAX_CLIPBOARD`).
    pub clipboard_too_large: u64,
    /// The last refusal, naming the event and field.
    pub last_malformed: Option<String>,
    pub clipboard: ClipboardStats,
    /// The VM's pointer sent to viewers (streamer → viewer, on the same channel).
    pub cursor: CursorStats,
    pub last_error: Option<String>,
}

struct Inner {
    queue: Arc<InputQueue>,
    stats: Arc<Mutex<InputStats>>,
    clipboard: Clipboard,
    cursor: Cursor,
}

impl Drop for Inner {
    /// The last handle is gone: the thread ends once it has injected what is queued.
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// Cheap clonable handle to the injector thread.
#[derive(Clone)]
pub struct InputSink {
    inner: Arc<Inner>,
}

impl InputSink {
    /// Starts the thread for `display` (None: `$DISPLAY`); the cursor position is polled 30
    /// times a second while a viewer watches it.
    pub fn start(display: Option<String>) -> InputSink {
        Self::start_with(display, 30.0)
    }

    /// [`InputSink::start`], polling the cursor position `fps` times a second (the stream's
    /// frame rate: a faster pointer could not be seen against the frames anyway).
    pub fn start_with(display: Option<String>, fps: f32) -> InputSink {
        let clipboard = Clipboard::start(display.clone());
        let cursor = Cursor::start(display.clone(), fps);
        let queue = Arc::new(InputQueue::default());
        let stats = Arc::new(Mutex::new(InputStats::default()));
        let (q, st) = (Arc::clone(&queue), Arc::clone(&stats));
        let spawned = std::thread::Builder::new()
            .name("webrtc-input".into())
            .spawn(move || run(display, &q, &st));
        if let Err(e) = spawned {
            if let Ok(mut s) = stats.lock() {
                s.last_error = Some(format!("cannot start input thread: {e}"));
            }
        }
        InputSink {
            inner: Arc::new(Inner {
                queue,
                stats,
                clipboard,
                cursor,
            }),
        }
    }

    /// Queues a viewer's events (moves coalesced, dropped past the queue's bound).
    pub fn send(&self, events: Vec<InputEvent>) {
        self.inner.queue.push_all(events);
    }

    /// A viewer left: release every key and button (after what it sent before).
    pub fn viewer_gone(&self) {
        self.inner.queue.push_all([InputEvent::ReleaseAll]);
    }

    /// The VM's clipboard (shared by all viewers).
    pub fn clipboard(&self) -> &Clipboard {
        &self.inner.clipboard
    }

    /// The VM's pointer (shared by all viewers).
    pub fn cursor(&self) -> &Cursor {
        &self.inner.cursor
    }

    /// Counts a message the parser refused.
    pub fn malformed(&self, e: &InputError) {
        if let Ok(mut s) = self.inner.stats.lock() {
            s.malformed += 1;
            if matches!(e, InputError::ClipboardTooLarge { .. }) {
                s.clipboard_too_large += 1;
            }
            s.last_malformed = Some(e.to_string());
        }
    }

    pub fn stats(&self) -> InputStats {
        let mut s = self
            .inner
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        s.queue = self.inner.queue.stats();
        s.clipboard = self.inner.clipboard.stats();
        s.cursor = self.inner.cursor.stats();
        s
    }
}

fn run(display: Option<String>, queue: &InputQueue, stats: &Mutex<InputStats>) {
    let mut inj: Option<Injector> = None;
    while let Some(events) = queue.wait_batch() {
        if inj.is_none() {
            match Injector::connect(display.as_deref()) {
                Ok(i) => inj = Some(i),
                Err(e) => {
                    if let Ok(mut s) = stats.lock() {
                        s.last_error = Some(e.to_string());
                    }
                    continue;
                }
            }
        }
        let Some(i) = inj.as_mut() else { continue };
        let r = i.apply(&events);
        if let Ok(mut s) = stats.lock() {
            s.events += events.len() as u64;
            s.batches += 1;
            s.keys = i.counters();
            if let Err(e) = &r {
                s.last_error = Some(e.to_string());
            }
        }
        if r.is_err() {
            inj = None;
        }
    }
}
