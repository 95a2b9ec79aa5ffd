//! The VM's side of the viewer's clipboard: one thread with its own X connection and an
//! unmapped window of ours that
//! - owns CLIPBOARD and PRIMARY with the latest text a viewer pasted (so Ctrl+V and a middle
//!   click both paste it) and answers `SelectionRequest`s for `TARGETS`, `UTF8_STRING`,
//!   `TEXT` and `STRING` (Latin-1, `?` for what it cannot carry);
//! - reads the VM's CLIPBOARD for a viewer (`ConvertSelection` to our window, then the
//!   property), time-bounded, as `UTF8_STRING` else `STRING`.
//!
//! Why a thread of its own: an owner must answer requests whenever they come, while the
//! injector thread sleeps until there is input. It waits in `poll(2)` on its X socket and a
//! wake-up socket the handles write to, so it costs nothing while idle.
//!
//! Text is bounded to [`MAX_CLIPBOARD`] both ways, under the X server's maximum request size,
//! so answers are one `ChangeProperty` and INCR transfers are never needed; an owner in the
//! VM that answers with INCR (its text is over 256 KiB or so) is reported as too large.
//! Ownership is taken at `CurrentTime` (as xclip does): ICCCM prefers an event's timestamp,
//! but no requester here asks for `TIMESTAMP` and the server orders it for us.
//!
//! A set is acknowledged once the server confirms we own CLIPBOARD (a round trip on our
//! connection), so a Ctrl+V the injector sends after it pastes the new text.

mod owner;

use super::input::ClipboardReply;
use owner::{Owner, XResult};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use x11rb::connection::Connection;

/// How long the VM's clipboard owner gets to answer a read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a viewer's request waits for the thread (it answers well within this).
const HANDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Requests waiting for the thread: at most one set and one get per viewer are in flight,
/// so this only fills when the thread is stuck.
const QUEUE: usize = 16;

/// Counters (part of `/webrtc/status` → `input.clipboard`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClipboardStats {
    /// Texts from viewers now owned in the VM.
    pub sets: u64,
    /// Reads of the VM's clipboard answered.
    pub gets: u64,
    /// Requests of VM programs answered with our text (or its targets).
    pub served: u64,
    /// Requests of VM programs refused (a target we do not offer, a selection we lost).
    pub refused: u64,
    /// Viewer requests dropped: the thread's queue was full, or that viewer's previous read
    /// is still running.
    pub busy: u64,
    /// We own CLIPBOARD now.
    pub owned: bool,
    pub last_error: Option<String>,
}

enum Cmd {
    Set(String, oneshot::Sender<Result<(), String>>),
    Get(oneshot::Sender<ClipboardReply>),
}

struct Shared {
    tx: mpsc::SyncSender<Cmd>,
    /// Written to wake the thread; closed with the last handle, which ends the thread.
    /// None when the thread could not be started (requests then fail at once).
    wake: Option<UnixStream>,
    stats: Arc<Mutex<ClipboardStats>>,
}

/// Cheap clonable handle to the clipboard thread.
#[derive(Clone)]
pub struct Clipboard {
    shared: Arc<Shared>,
}

impl Clipboard {
    /// Starts the thread for `display` (None: `$DISPLAY`); it connects on the first request
    /// and again after an X error.
    pub fn start(display: Option<String>) -> Clipboard {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let stats = Arc::new(Mutex::new(ClipboardStats::default()));
        let st = Arc::clone(&stats);
        let wake = match UnixStream::pair() {
            Ok((wake, wake_rx)) => {
                let _ = wake.set_nonblocking(true);
                let _ = wake_rx.set_nonblocking(true);
                std::thread::Builder::new()
                    .name("webrtc-clipboard".into())
                    .spawn(move || run(display, rx, wake_rx, &st))
                    .map(|_| wake)
                    .map_err(|e| format!("cannot start clipboard thread: {e}"))
            }
            Err(e) => Err(format!("cannot make the wake-up socket: {e}")),
        };
        let wake = wake.map_err(|e| note(&stats, e)).ok();
        Clipboard {
            shared: Arc::new(Shared { tx, wake, stats }),
        }
    }

    fn submit(&self, cmd: Cmd) -> bool {
        let Some(wake) = &self.shared.wake else {
            return false;
        };
        if self.shared.tx.try_send(cmd).is_err() {
            self.count_busy();
            return false;
        }
        let _ = (&*wake).write(&[1]);
        true
    }

    /// Makes `text` the VM's CLIPBOARD and PRIMARY; returns once the X server has it.
    pub async fn set(&self, text: String) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        if !self.submit(Cmd::Set(text, tx)) {
            return Err("clipboard thread busy".into());
        }
        match tokio::time::timeout(HANDLE_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("clipboard thread gone".into()),
            Err(_) => Err("clipboard thread did not answer".into()),
        }
    }

    /// The VM's CLIPBOARD text.
    pub async fn get(&self) -> ClipboardReply {
        let (tx, rx) = oneshot::channel();
        if !self.submit(Cmd::Get(tx)) {
            return ClipboardReply::Failed;
        }
        match tokio::time::timeout(HANDLE_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            _ => ClipboardReply::Failed,
        }
    }

    pub fn count_busy(&self) {
        if let Ok(mut s) = self.shared.stats.lock() {
            s.busy += 1;
        }
    }

    pub fn stats(&self) -> ClipboardStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

fn note(stats: &Mutex<ClipboardStats>, e: String) {
    tracing::warn!("clipboard: {e}");
    if let Ok(mut s) = stats.lock() {
        s.last_error = Some(e);
    }
}

fn run(
    display: Option<String>,
    rx: mpsc::Receiver<Cmd>,
    mut wake: UnixStream,
    stats: &Mutex<ClipboardStats>,
) {
    let mut x: Option<Owner> = None;
    loop {
        let r = step(display.as_deref(), &rx, &mut x, stats);
        match r {
            Ok(true) => {}
            Ok(false) => return, // every handle is gone
            Err(e) => {
                note(stats, e.to_string());
                if let Some(mut o) = x.take() {
                    o.finish(ClipboardReply::Failed);
                }
            }
        }
        if let Ok(mut s) = stats.lock() {
            s.owned = x.as_ref().is_some_and(|o| o.owns[0]);
        }
        let timeout = x
            .as_ref()
            .and_then(|o| o.pending.as_ref())
            .map(|p| p.deadline.saturating_duration_since(Instant::now()))
            .map(|d| d.as_millis().min(1000) as i32 + 1)
            .unwrap_or(-1);
        let mut fds = vec![libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(o) = &x {
            fds.push(libc::pollfd {
                fd: o.conn.stream().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a live, correctly sized array of pollfd for the whole call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        let mut buf = [0u8; 64];
        while let Ok(n) = wake.read(&mut buf) {
            if n == 0 {
                break; // the handles are gone: `step` sees the channel closed
            }
        }
    }
}

/// One round: X events, queued requests, the X events they brought, then a timed-out read.
/// False once the handles are gone.
fn step(
    display: Option<&str>,
    rx: &mpsc::Receiver<Cmd>,
    x: &mut Option<Owner>,
    stats: &Mutex<ClipboardStats>,
) -> XResult<bool> {
    // Events first: a read must not answer with our text once a SelectionClear is waiting.
    if let Some(o) = x.as_mut() {
        while let Some(ev) = o.conn.poll_for_event()? {
            o.event(ev, stats)?;
        }
    }
    loop {
        let cmd = match rx.try_recv() {
            Ok(c) => c,
            Err(mpsc::TryRecvError::Empty) => break,
            Err(mpsc::TryRecvError::Disconnected) => return Ok(false),
        };
        if x.is_none() {
            match Owner::connect(display) {
                Ok(o) => *x = Some(o),
                Err(e) => {
                    let msg = format!("cannot connect to X display: {e}");
                    note(stats, msg.clone());
                    match cmd {
                        Cmd::Set(_, tx) => drop(tx.send(Err(msg))),
                        Cmd::Get(tx) => drop(tx.send(ClipboardReply::Failed)),
                    }
                    continue;
                }
            }
        }
        let Some(o) = x.as_mut() else { continue };
        match cmd {
            Cmd::Set(text, tx) => {
                let r = o.set(text);
                let ok = matches!(r, Ok(true));
                if let Ok(mut s) = stats.lock() {
                    s.sets += u64::from(ok);
                }
                let _ = tx.send(match &r {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("another client took CLIPBOARD at once".into()),
                    Err(e) => Err(e.to_string()),
                });
                r?;
            }
            Cmd::Get(tx) => {
                if let Ok(mut s) = stats.lock() {
                    s.gets += 1;
                }
                o.get(tx)?;
            }
        }
    }
    let Some(o) = x.as_mut() else {
        return Ok(true);
    };
    while let Some(ev) = o.conn.poll_for_event()? {
        o.event(ev, stats)?;
    }
    if o.pending
        .as_ref()
        .is_some_and(|p| Instant::now() >= p.deadline)
    {
        o.finish(ClipboardReply::Failed);
    }
    o.conn.flush()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without an X server requests fail at once, naming why, and the thread stays usable.
    #[test]
    fn without_a_display_requests_fail_and_say_why() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let c = Clipboard::start(Some(":9999".into()));
        rt.block_on(async {
            let e = c.set("x".into()).await.expect_err("no display");
            assert!(e.starts_with("cannot connect to X display"), "{e}");
            assert_eq!(c.get().await, ClipboardReply::Failed);
            assert!(c.set("y".into()).await.is_err());
        });
        let s = c.stats();
        assert_eq!((s.sets, s.gets, s.busy), (0, 0, 0));
        assert!(s.last_error.is_some_and(|e| e.contains("X display")));
    }
}
