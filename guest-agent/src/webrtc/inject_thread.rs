//! The single thread that owns the XTEST connection. Peers hand it parsed events through a
//! channel (injection never blocks a network task); it connects lazily, reconnects after an
//! X error, and releases everything held when a viewer goes away.

use super::inject::Injector;
use super::input::InputEvent;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

enum Cmd {
    Events(Vec<InputEvent>),
    ViewerGone,
}

/// Counters for /status and tests.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InputStats {
    pub events: u64,
    pub batches: u64,
    pub last_error: Option<String>,
}

/// Cheap clonable handle to the injector thread.
#[derive(Clone)]
pub struct InputSink {
    tx: mpsc::Sender<Cmd>,
    stats: Arc<Mutex<InputStats>>,
}

impl InputSink {
    /// Starts the thread for `display` (None: `$DISPLAY`).
    pub fn start(display: Option<String>) -> InputSink {
        let (tx, rx) = mpsc::channel::<Cmd>();
        let stats = Arc::new(Mutex::new(InputStats::default()));
        let st = Arc::clone(&stats);
        let spawned = std::thread::Builder::new()
            .name("webrtc-input".into())
            .spawn(move || {
                let mut inj: Option<Injector> = None;
                for cmd in rx {
                    if inj.is_none() {
                        match Injector::connect(display.as_deref()) {
                            Ok(i) => inj = Some(i),
                            Err(e) => {
                                if let Ok(mut s) = st.lock() {
                                    s.last_error = Some(e.to_string());
                                }
                                continue;
                            }
                        }
                    }
                    let Some(i) = inj.as_mut() else { continue };
                    let r = match &cmd {
                        Cmd::Events(evs) => i.apply(evs),
                        Cmd::ViewerGone => i.release_all(),
                    };
                    if let Ok(mut s) = st.lock() {
                        if let Cmd::Events(evs) = &cmd {
                            s.events += evs.len() as u64;
                            s.batches += 1;
                        }
                        if let Err(e) = &r {
                            s.last_error = Some(e.to_string());
                        }
                    }
                    if r.is_err() {
                        inj = None;
                    }
                }
            });
        if let Err(e) = spawned {
            if let Ok(mut s) = stats.lock() {
                s.last_error = Some(format!("cannot start input thread: {e}"));
            }
        }
        InputSink { tx, stats }
    }

    pub fn send(&self, events: Vec<InputEvent>) {
        if !events.is_empty() {
            let _ = self.tx.send(Cmd::Events(events));
        }
    }

    pub fn viewer_gone(&self) {
        let _ = self.tx.send(Cmd::ViewerGone);
    }

    pub fn stats(&self) -> InputStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
