//! Feeds the readiness pusher: recomputes the summary whenever the supervisor's `state.json`
//! or netinit's state file changes, and hands it on only when it differs from the last one.
//!
//! inotify on the two files' directories makes a change visible at once (the supervisor
//! replaces `state.json` by rename, which is an event in the directory); a 1 s poll covers a
//! directory that does not exist yet or an inotify that is unavailable.

use super::readiness::{summarize, Summary};
use crate::state::StateDir;
use guest_proto::readiness::AgentState;
use guest_proto::{Event, Level, NetinitReport};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const POLL: Duration = Duration::from_secs(1);

/// What the summary is read from.
pub struct Sources {
    pub state_dir: StateDir,
    pub netinit_state: PathBuf,
}

impl Sources {
    fn read(&self, was_ready: bool) -> Summary {
        let services = self.state_dir.read().map(|o| o.map(|s| s.services));
        let network = std::fs::read(&self.netinit_state)
            .ok()
            .and_then(|b| serde_json::from_slice::<NetinitReport>(&b).ok());
        summarize(
            services,
            &self.state_dir.state_file(),
            network.as_ref(),
            was_ready,
        )
    }
}

/// Runs until `shutdown` turns true (then sends a `shutting_down` summary) or the pusher is
/// gone. Prints the `ready` console step each time the agent becomes ready, right after the
/// summary is handed to the pusher.
pub async fn run(
    sources: Sources,
    tx: watch::Sender<Option<Summary>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
    let _watcher = watch_dirs(
        [
            sources.state_dir.0.as_path(),
            sources.netinit_state.parent().unwrap_or(Path::new("/")),
        ],
        ev_tx,
    );
    let mut was_ready = false;
    let mut last: Option<Summary> = None;
    loop {
        let s = sources.read(was_ready);
        if last.as_ref() != Some(&s) {
            let became_ready = s.state == AgentState::Ready && !was_ready;
            was_ready |= s.state == AgentState::Ready;
            if tx.send(Some(s.clone())).is_err() {
                return;
            }
            if became_ready {
                crate::console::emit(
                    Level::Info,
                    Event::Step {
                        step: "ready".into(),
                        ok: true,
                        duration_us: 0,
                        detail: "agent ready: every required service is running".into(),
                    },
                );
            }
            last = Some(s);
        }
        tokio::select! {
            r = ev_rx.recv() => {
                if r.is_none() {
                    // No watcher: poll only.
                    tokio::time::sleep(POLL).await;
                }
                while ev_rx.try_recv().is_ok() {}
            }
            () = tokio::time::sleep(POLL) => {}
            () = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                let mut s = last.unwrap_or_else(|| sources.read(was_ready));
                s.state = AgentState::ShuttingDown;
                let _ = tx.send(Some(s));
                return;
            }
        }
    }
}

/// An inotify watch on each existing directory; `None` when inotify is unavailable.
fn watch_dirs<'a>(
    dirs: impl IntoIterator<Item = &'a Path>,
    tx: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    let mut w = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .map_err(|e| tracing::debug!(error = %e, "inotify unavailable; polling state files"))
    .ok()?;
    for d in dirs {
        if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
            tracing::debug!(dir = %d.display(), error = %e, "not watched; polled");
        }
    }
    Some(w)
}

/// Starts the watcher and the pusher; the handle ends when the pusher does (after the
/// `shutting_down` line, once `stop` turned true).
pub fn spawn<C: super::readiness::Connector>(
    connector: C,
    sources: Sources,
    auth: guest_proto::api::AuthMode,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = watch::channel(None);
    let pusher = super::readiness::Pusher::new(connector, auth, std::time::Instant::now());
    tokio::spawn(run(sources, tx, stop));
    tokio::spawn(pusher.run(rx, crate::console::emit))
}
