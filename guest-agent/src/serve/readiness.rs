//! Readiness pushed, not polled: `serve` connects to the host (CID 2, `guest_agent.ready_port=`)
//! and writes one [`ReadinessLine`] when it starts serving, and again whenever the summary
//! changes (its state, a service's state, netinit's outcome).
//!
//! Bounded in every direction, because the host may not listen at all:
//! - one task, so at most one connection in flight; changes that arrive meanwhile are
//!   coalesced (a `watch` channel keeps only the newest summary) and the next push carries
//!   the newest state with a new `seq`;
//! - connect within [`CONNECT_TIMEOUT`], write within [`WRITE_TIMEOUT`];
//! - a failed push is retried with a growing pause ([`Backoff`], 50 ms doubling to 5 s) until
//!   one gets through; ECONNREFUSED/ECONNRESET (nobody listening yet) are normal;
//! - one console warning per *change* of failure kind, and one `readiness pushed seq=N`
//!   event per line delivered: no log spam while a host is away.
//!
//! The summary is recomputed as soon as the supervisor's `state.json` or netinit's state file
//! changes (inotify on their directories, plus a 1 s poll as a fallback), and the push is the
//! first thing done with a changed summary: the line leaves well within a millisecond of the
//! moment `serve` sees the agent ready (the `ready` console step is printed after the write).

use guest_proto::api::{AuthMode, ServiceState};
use guest_proto::readiness::{
    AgentState, NetinitSummary, ReadinessLine, ServiceSummary, READINESS_VERSION,
};
use guest_proto::{Event, Level, NetinitReport};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a line is written: one fresh connection per line. Abstracted so a test can plug a
/// unix socket or an in-memory pipe (this machine must never connect to a real CID 2).
pub trait Connector: Send + Sync + 'static {
    type Conn: AsyncWrite + Unpin + Send;
    fn connect(&self) -> Pin<Box<dyn Future<Output = std::io::Result<Self::Conn>> + Send + '_>>;
    /// For the console: `vsock:2:8081`.
    fn describe(&self) -> String;
}

/// The real one: AF_VSOCK to the host.
pub struct VsockConnector {
    pub cid: u32,
    pub port: u32,
}

impl Connector for VsockConnector {
    type Conn = tokio_vsock::VsockStream;
    fn connect(&self) -> Pin<Box<dyn Future<Output = std::io::Result<Self::Conn>> + Send + '_>> {
        Box::pin(tokio_vsock::VsockStream::connect(
            tokio_vsock::VsockAddr::new(self.cid, self.port),
        ))
    }
    fn describe(&self) -> String {
        format!("vsock:{}:{}", self.cid, self.port)
    }
}

/// What a change is judged by: the line minus `seq` and `uptimeMs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub state: AgentState,
    pub services: Vec<ServiceSummary>,
    pub network: Option<NetinitSummary>,
    pub reasons: Vec<String>,
}

/// Growing pause between failed pushes.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(50);
    pub const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }
    /// The pause before the next attempt; doubles up to [`Self::MAX`].
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a push failed, coarse enough that a host that stays away is one warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    ConnectTimeout,
    Refused,
    Reset,
    WriteTimeout,
    Other(std::io::ErrorKind),
}

impl FailureKind {
    fn of(e: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused => FailureKind::Refused,
            ConnectionReset | ConnectionAborted | BrokenPipe => FailureKind::Reset,
            k => FailureKind::Other(k),
        }
    }
}

/// Builds lines (numbering them) and pushes them.
pub struct Pusher<C: Connector> {
    connector: C,
    started: Instant,
    agent_version: String,
    auth: AuthMode,
    seq: u64,
    last_failure: Option<FailureKind>,
}

impl<C: Connector> Pusher<C> {
    pub fn new(connector: C, auth: AuthMode, started: Instant) -> Self {
        Pusher {
            connector,
            started,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            auth,
            seq: 0,
            last_failure: None,
        }
    }

    /// The next line for `s`: `seq` goes up by one per line built.
    pub fn line(&mut self, s: &Summary) -> ReadinessLine {
        self.seq += 1;
        ReadinessLine {
            version: READINESS_VERSION,
            seq: self.seq,
            state: s.state,
            agent_version: self.agent_version.clone(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            auth: Some(self.auth),
            services: s.services.clone(),
            services_omitted: 0,
            network: s.network.clone(),
            reasons: s.reasons.clone(),
        }
        .bounded()
    }

    /// One bounded attempt: connect, write the whole line, shut the write side.
    pub async fn push_once(&self, line: &str) -> Result<(), FailureKind> {
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, self.connector.connect()).await {
            Err(_) => return Err(FailureKind::ConnectTimeout),
            Ok(Err(e)) => return Err(FailureKind::of(&e)),
            Ok(Ok(c)) => c,
        };
        let write = async {
            conn.write_all(line.as_bytes()).await?;
            conn.flush().await?;
            conn.shutdown().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Err(_) => Err(FailureKind::WriteTimeout),
            Ok(Err(e)) => Err(FailureKind::of(&e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Records the outcome of an attempt; returns the console event to print, if any: one per
    /// delivered line, one per change of failure kind.
    fn note(&mut self, seq: u64, r: Result<(), FailureKind>) -> Option<(Level, Event)> {
        match r {
            Ok(()) => {
                self.last_failure = None;
                Some((
                    Level::Info,
                    Event::Step {
                        step: "readiness".into(),
                        ok: true,
                        duration_us: 0,
                        detail: format!(
                            "readiness pushed seq={seq} to {}",
                            self.connector.describe()
                        ),
                    },
                ))
            }
            Err(kind) if self.last_failure == Some(kind) => None,
            Err(kind) => {
                self.last_failure = Some(kind);
                Some((
                    Level::Warn,
                    Event::Warning {
                        message: format!(
                            "readiness push to {} failed: {}; retrying with backoff (further \
                             failures of this kind are not reported)",
                            self.connector.describe(),
                            describe(kind)
                        ),
                    },
                ))
            }
        }
    }

    /// Pushes every summary `rx` sees until the sender is dropped: the newest one, retried
    /// until delivered, then waits for the next change. `emit` prints console events.
    pub async fn run(
        mut self,
        mut rx: watch::Receiver<Option<Summary>>,
        emit: impl Fn(Level, Event) + Send,
    ) {
        let mut backoff = Backoff::new();
        loop {
            let Some(summary) = rx.borrow_and_update().clone() else {
                if rx.changed().await.is_err() {
                    return;
                }
                continue;
            };
            let line = self.line(&summary);
            let seq = line.seq;
            let text = match line.to_line() {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "readiness line not sendable");
                    if rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let r = self.push_once(&text).await;
            let ok = r.is_ok();
            if let Some((lvl, ev)) = self.note(seq, r) {
                emit(lvl, ev);
            }
            if ok {
                backoff.reset();
                if summary.state == AgentState::ShuttingDown || rx.changed().await.is_err() {
                    return;
                }
            } else {
                let pause = backoff.step();
                tracing::debug!(
                    seq,
                    pause_ms = pause.as_millis() as u64,
                    "readiness push failed"
                );
                // A change during the pause does not cut it short: the retry carries it.
                tokio::time::sleep(pause).await;
                if rx.has_changed().is_err() {
                    return;
                }
            }
        }
    }
}

fn describe(k: FailureKind) -> String {
    match k {
        FailureKind::ConnectTimeout => format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        FailureKind::Refused => "connection refused (the host is not listening yet)".into(),
        FailureKind::Reset => "connection reset (the host is not listening yet)".into(),
        FailureKind::WriteTimeout => format!("write not done within {} s", WRITE_TIMEOUT.as_secs()),
        FailureKind::Other(k) => format!("{k}"),
    }
}

/// The summary from the supervisor's services (or why they are unknown) and netinit's
/// report. `was_ready` turns "not ready" into `degraded` instead of `starting`.
pub fn summarize(
    services: Result<Option<Vec<guest_proto::api::ServiceStatus>>, String>,
    state_file: &std::path::Path,
    network: Option<&NetinitReport>,
    was_ready: bool,
) -> Summary {
    let mut reasons = Vec::new();
    let services = match services {
        Ok(Some(s)) => s,
        Ok(None) => {
            reasons.push(format!(
                "no supervisor state at {} (is `guest-agent supervise` running?)",
                state_file.display()
            ));
            Vec::new()
        }
        Err(e) => {
            reasons.push(format!("supervisor state unreadable: {e}"));
            Vec::new()
        }
    };
    for s in services
        .iter()
        .filter(|s| s.required && s.state != ServiceState::Running)
    {
        let state = serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        reasons.push(format!("required service {} is {state}", s.name));
    }
    let state = match (reasons.is_empty(), was_ready) {
        (true, _) => AgentState::Ready,
        (false, true) => AgentState::Degraded,
        (false, false) => AgentState::Starting,
    };
    Summary {
        state,
        services: services
            .iter()
            .map(|s| ServiceSummary {
                name: s.name.clone(),
                state: s.state,
                required: s.required,
            })
            .collect(),
        network: network.map(NetinitSummary::from_report),
        reasons,
    }
}

#[cfg(test)]
#[path = "readiness_tests.rs"]
mod tests;
