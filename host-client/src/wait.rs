//! `wait_ready`: wait for a VM's agent to be ready, with a deadline, and say why not.
//!
//! The old controller polled `/health` for ~60 s and destroyed the VM without a reason. Here:
//! - probes with a short per-attempt timeout (200 ms) and retries that start at a few ms and
//!   back off to 250 ms; a *refused* connection is retried every 10 ms instead, because it
//!   says the guest kernel is up and the agent is about to bind (one RST is cheap), and that
//!   is the moment whose detection lag matters;
//! - success is `/ready` 200, or `/health` `status: ok` when `/ready` is 404 (an agent from
//!   before `/ready`) or 401/403 (no token given);
//! - the console log is followed meanwhile, and a fatal finding (kernel panic, netinit
//!   failure, crash loop) ends the wait at once with the diagnosis, after one last probe (so a
//!   stale panic in a reused log cannot fail a VM that is in fact ready);
//! - on timeout the error carries the last probe error, classified, and the findings so far;
//! - a flooded console is read a bounded chunk at a time with the deadline checked between
//!   chunks, so the wait returns on time whatever the guest prints.

use crate::client::{AgentAddr, ClientError, ErrorClass, GuestClient};
use crate::console::{ConsoleError, ConsoleFollower};
use crate::diagnose::{Finding, Milestone, TimelineEntry};
use crate::text::Untrusted;
use guest_proto::api::{HealthResponse, ReadyResponse};
use hyper::StatusCode;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::{sleep, sleep_until, Instant};

/// Tuning for [`wait_ready_with`]. `Default` gives the documented behaviour.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    /// Total time to wait from the call.
    pub deadline: Duration,
    /// The VM's console log, followed while waiting.
    pub console: Option<PathBuf>,
    /// Bearer token for `/ready`.
    pub token: Option<String>,
    /// Timeout of one probe.
    pub attempt_timeout: Duration,
    /// First retry delay; doubled after each failure up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Retry delay after a refused connection; `None`: back off as after any failure.
    pub refused_delay: Option<Duration>,
    /// How often the console file is read.
    pub console_poll: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(60),
            console: None,
            token: None,
            attempt_timeout: Duration::from_millis(200),
            first_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(250),
            refused_delay: Some(Duration::from_millis(10)),
            console_poll: Duration::from_millis(25),
        }
    }
}

/// How readiness was established.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "via", rename_all = "kebab-case")]
pub enum ReadyVia {
    /// `/ready` answered 200.
    Ready { body: ReadyResponse },
    /// `/health` said `ok` (`/ready` answered `ready_status`: 404 old agent, 401/403 no token).
    Health {
        ready_status: u16,
        body: Box<HealthResponse>,
    },
}

/// The VM is ready.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    pub addr: AgentAddr,
    #[serde(serialize_with = "ser_secs")]
    pub elapsed: Duration,
    pub attempts: u32,
    #[serde(flatten)]
    pub via: ReadyVia,
    /// Non-fatal findings in the console log (warnings, conflicts).
    pub findings: Vec<Finding>,
    pub timeline: Vec<TimelineEntry>,
}

/// The last failed probe, classified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeFailure {
    pub class: ErrorClass,
    /// For [`ErrorClass::HttpStatus`], and for a 503 from `/ready`.
    pub status: Option<u16>,
    /// The full message.
    pub message: String,
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Connect and timeout messages already say "connection refused", "timed out", ...
        match (self.class, self.status) {
            // `message` may hold the agent's words (503 reasons): shown escaped.
            (ErrorClass::HttpStatus, Some(s)) if !self.message.contains("HTTP") => {
                write!(f, "HTTP {s}: {}", Untrusted(&self.message))
            }
            _ => Untrusted(&self.message).fmt(f),
        }
    }
}

/// How far the VM got, from the console and the probes (in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    KernelStarted,
    Userspace,
    NetinitDone,
    AgentListening,
    /// The agent answers HTTP but is not ready yet.
    AgentAnswering,
    Ready,
}

impl From<Milestone> for Stage {
    fn from(m: Milestone) -> Self {
        match m {
            Milestone::KernelStarted => Stage::KernelStarted,
            Milestone::Userspace => Stage::Userspace,
            Milestone::NetinitDone => Stage::NetinitDone,
            Milestone::AgentListening => Stage::AgentListening,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::KernelStarted => Milestone::KernelStarted.fmt(f),
            Stage::Userspace => Milestone::Userspace.fmt(f),
            Stage::NetinitDone => Milestone::NetinitDone.fmt(f),
            Stage::AgentListening => Milestone::AgentListening.fmt(f),
            Stage::AgentAnswering => f.write_str("agent answering, not ready yet"),
            Stage::Ready => f.write_str("ready"),
        }
    }
}

/// Something `guestctl wait` shows as it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "progress", rename_all = "kebab-case")]
pub enum Progress {
    /// A console milestone.
    Milestone { entry: TimelineEntry },
    /// The first answer that is not "ready" (503 reasons, or health `degraded`).
    Answering { status: u16, reasons: Vec<String> },
    /// A non-fatal console finding.
    Finding { finding: Finding },
}

/// Why the wait failed. (`last` is boxed to keep the error small: it travels in `Result`s.)
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("{addr} not ready after {:.1}s ({attempts} attempts); last error: {}; reached: {}",
        .waited.as_secs_f64(),
        .last.as_ref().map(|l| l.to_string()).unwrap_or_else(|| "none (no attempt finished)".into()),
        .stage.map(|s| s.to_string()).unwrap_or_else(|| "nothing seen".into()))]
    Timeout {
        addr: AgentAddr,
        waited: Duration,
        attempts: u32,
        last: Option<Box<ProbeFailure>>,
        /// The furthest stage seen.
        stage: Option<Stage>,
        /// Console findings so far (including "nothing printed" for an empty log).
        findings: Vec<Finding>,
        timeline: Vec<TimelineEntry>,
    },
    #[error("{addr}: the console log shows a fatal error after {:.1}s: {finding}", .after.as_secs_f64())]
    Diagnosed {
        addr: AgentAddr,
        after: Duration,
        finding: Box<Finding>,
        findings: Vec<Finding>,
        timeline: Vec<TimelineEntry>,
        last: Option<Box<ProbeFailure>>,
    },
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

impl WaitError {
    /// Console findings collected before the failure.
    pub fn findings(&self) -> &[Finding] {
        match self {
            WaitError::Timeout { findings, .. } | WaitError::Diagnosed { findings, .. } => findings,
            WaitError::Console(_) => &[],
        }
    }

    pub fn last(&self) -> Option<&ProbeFailure> {
        match self {
            WaitError::Timeout { last, .. } | WaitError::Diagnosed { last, .. } => last.as_deref(),
            WaitError::Console(_) => None,
        }
    }
}

/// Waits until the agent at `addr` is ready, for at most `deadline`, following `console`.
pub async fn wait_ready(
    addr: impl Into<crate::client::AgentAddr>,
    deadline: Duration,
    console: Option<&Path>,
) -> Result<Ready, WaitError> {
    let opts = WaitOptions {
        deadline,
        console: console.map(Path::to_path_buf),
        ..WaitOptions::default()
    };
    wait_ready_with(addr, &opts, |_| {}).await
}

/// What one probe found.
enum ProbeOutcome {
    Ready(ReadyVia),
    NotReady { status: u16, reasons: Vec<String> },
    Failed(ClientError),
}

/// Shared between the probe loop and the console loop (same task; the lock is never held
/// across an await, it is a Mutex rather than a RefCell so the wait future is `Send`).
struct State<F> {
    attempts: u32,
    last: Option<ProbeFailure>,
    stage: Option<Stage>,
    answered: bool,
    /// `/ready` is 404/401/403: use `/health` (the status `/ready` gave).
    health_only: Option<u16>,
    on_progress: F,
}

/// What the probe loop does after an attempt.
enum Next {
    Done(ReadyVia),
    /// Ask again at once (switching to `/health`).
    Now,
    After(Duration),
}

impl<F: FnMut(&Progress)> State<F> {
    /// Books one probe's outcome; says when to probe again.
    fn record(&mut self, outcome: ProbeOutcome, delay: Duration, opts: &WaitOptions) -> Next {
        self.attempts += 1;
        match outcome {
            ProbeOutcome::Ready(via) => Next::Done(via),
            ProbeOutcome::NotReady { status, reasons } => {
                self.reach(Stage::AgentAnswering);
                if !self.answered {
                    self.answered = true;
                    (self.on_progress)(&Progress::Answering {
                        status,
                        reasons: reasons.clone(),
                    });
                }
                self.last = Some(ProbeFailure {
                    class: ErrorClass::HttpStatus,
                    status: Some(status),
                    message: if reasons.is_empty() {
                        "not ready".into()
                    } else {
                        reasons.join("; ")
                    },
                });
                Next::After(delay)
            }
            ProbeOutcome::Failed(e) => {
                let class = e.class();
                if let Some(s) = e.status() {
                    let fallback = matches!(
                        s,
                        StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                    );
                    if self.health_only.is_none() && fallback {
                        self.health_only = Some(s.as_u16());
                        return Next::Now;
                    }
                    self.reach(Stage::AgentAnswering);
                }
                self.last = Some(ProbeFailure {
                    class,
                    status: e.status().map(|s| s.as_u16()),
                    message: e.to_string(),
                });
                match opts.refused_delay {
                    Some(d) if class == ErrorClass::Refused => Next::After(d),
                    _ => Next::After(delay),
                }
            }
        }
    }

    fn reach(&mut self, stage: Stage) {
        self.stage = Some(match self.stage {
            Some(s) if s >= stage => s,
            _ => stage,
        });
    }
}

/// [`wait_ready`] with options and a progress callback.
pub async fn wait_ready_with<F: FnMut(&Progress)>(
    addr: impl Into<crate::client::AgentAddr>,
    opts: &WaitOptions,
    on_progress: F,
) -> Result<Ready, WaitError> {
    let addr: AgentAddr = addr.into();
    let start = Instant::now();
    let end = start + opts.deadline;
    let client = GuestClient::new(addr.clone())
        .with_token(opts.token.clone())
        .with_timeout(opts.attempt_timeout);
    let state = Mutex::new(State {
        attempts: 0,
        last: None,
        stage: None,
        answered: false,
        health_only: None,
        on_progress,
    });
    let console = Mutex::new(opts.console.as_ref().map(ConsoleFollower::new));

    let probe_loop = async {
        let mut delay = opts.first_delay;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let c = client
                .clone()
                .with_timeout(opts.attempt_timeout.min(left).max(Duration::from_millis(1)));
            let health_only = state.lock_ok().health_only;
            let outcome = probe(&c, health_only).await;
            let next = state.lock_ok().record(outcome, delay, opts);
            match next {
                Next::Done(via) => return via,
                Next::Now => continue,
                Next::After(d) => {
                    delay = (delay * 2).min(opts.max_delay);
                    sleep(d).await;
                }
            }
        }
    };

    let console_loop = async {
        if console.lock_ok().is_none() {
            return std::future::pending::<Result<Box<Finding>, ConsoleError>>().await;
        }
        let mut seen = Seen::default();
        loop {
            if Instant::now() >= end {
                // Time is up: leave the answer to the deadline branch, even mid-flood.
                return std::future::pending().await;
            }
            let (fatal, more) = poll_console(&console, &state, &mut seen)?;
            if let Some(fatal) = fatal {
                return Ok(fatal);
            }
            if more {
                // A flooded log: read on, but let the probes and the deadline run between reads.
                tokio::task::yield_now().await;
            } else {
                sleep(opts.console_poll).await;
            }
        }
    };

    let outcome = {
        let probe_loop = std::pin::pin!(probe_loop);
        let console_loop = std::pin::pin!(console_loop);
        tokio::select! {
            via = probe_loop => Ok(via),
            fatal = console_loop => Err(fatal.map(Some)),
            _ = sleep_until(end) => Err(Ok(None)),
        }
    };
    let snapshot = |console: &Mutex<Option<ConsoleFollower>>| {
        let mut c = console.lock_ok();
        match c.as_mut() {
            Some(c) => {
                // Read what arrived since the last poll; an unreadable log was already reported.
                let _ = c.poll();
                c.flush();
                let d = c.diagnoser().snapshot();
                (d.findings, d.timeline)
            }
            None => (Vec::new(), Vec::new()),
        }
    };
    let via = match outcome {
        Ok(via) => via,
        Err(Err(e)) => return Err(WaitError::Console(e)),
        Err(Ok(fatal)) => {
            // Fatal finding (or timeout: `None`). One last probe, unless time is up.
            let health_only = state.lock_ok().health_only;
            let confirmed = match fatal {
                Some(_) => match probe(&client, health_only).await {
                    ProbeOutcome::Ready(via) => Some(via),
                    _ => None,
                },
                None => None,
            };
            match (confirmed, fatal) {
                (Some(via), _) => via,
                (None, Some(finding)) => {
                    let (findings, timeline) = snapshot(&console);
                    let st = state.lock_ok();
                    return Err(WaitError::Diagnosed {
                        addr,
                        after: start.elapsed(),
                        finding: Box::new(*finding),
                        findings,
                        timeline,
                        last: st.last.clone().map(Box::new),
                    });
                }
                (None, None) => {
                    let (findings, timeline) = snapshot(&console);
                    let st = state.lock_ok();
                    return Err(WaitError::Timeout {
                        addr,
                        waited: start.elapsed(),
                        attempts: st.attempts,
                        last: st.last.clone().map(Box::new),
                        stage: st.stage,
                        findings,
                        timeline,
                    });
                }
            }
        }
    };
    let (findings, timeline) = snapshot(&console);
    let st = state.lock_ok();
    Ok(Ready {
        addr,
        elapsed: start.elapsed(),
        attempts: st.attempts,
        via,
        findings,
        timeline,
    })
}

/// What of the console was already reported as progress.
#[derive(Default)]
struct Seen {
    /// [`ConsoleFollower::generation`] they belong to.
    generation: u64,
    milestones: usize,
    /// [`crate::Diagnoser::findings_mark`] after the last report.
    findings: u64,
}

/// Reads new console lines (at most [`crate::console::MAX_READ`] bytes), reports new
/// milestones and non-fatal findings; returns the fatal finding if there is one, and whether
/// the file holds more to read.
fn poll_console<F: FnMut(&Progress)>(
    console: &Mutex<Option<ConsoleFollower>>,
    state: &Mutex<State<F>>,
    seen: &mut Seen,
) -> Result<(Option<Box<Finding>>, bool), ConsoleError> {
    let mut cons = console.lock_ok();
    let Some(c) = cons.as_mut() else {
        return Ok((None, false));
    };
    if !c.poll()? {
        return Ok((None, c.pending()));
    }
    if c.generation() != seen.generation {
        // the log started over (new boot)
        *seen = Seen {
            generation: c.generation(),
            ..Seen::default()
        };
    }
    let d = c.diagnoser();
    let mut st = state.lock_ok();
    for entry in &d.timeline()[seen.milestones..] {
        st.reach(entry.milestone.into());
        (st.on_progress)(&Progress::Milestone {
            entry: entry.clone(),
        });
    }
    seen.milestones = d.timeline().len();
    for f in d.findings_since(seen.findings) {
        if f.severity < crate::Severity::Fatal {
            (st.on_progress)(&Progress::Finding { finding: f.clone() });
        }
    }
    seen.findings = d.findings_mark();
    Ok((d.fatal().map(|f| Box::new(f.clone())), c.pending()))
}

/// One readiness probe.
async fn probe(client: &GuestClient, health_only: Option<u16>) -> ProbeOutcome {
    if let Some(ready_status) = health_only {
        return match client.health().await {
            Ok(h) if h.status == "ok" => ProbeOutcome::Ready(ReadyVia::Health {
                ready_status,
                body: Box::new(h),
            }),
            Ok(h) => ProbeOutcome::NotReady {
                status: 200,
                reasons: vec![format!("health status is {}", h.status)],
            },
            Err(e) => ProbeOutcome::Failed(e),
        };
    }
    match client.ready().await {
        Ok(r) if r.status == 200 && r.body.ready => {
            ProbeOutcome::Ready(ReadyVia::Ready { body: r.body })
        }
        Ok(r) => ProbeOutcome::NotReady {
            status: r.status,
            reasons: r.body.reasons,
        },
        Err(e) => ProbeOutcome::Failed(e),
    }
}

/// `lock()` that shrugs off poisoning: the loops run in one task, a panic ends them all.
trait LockOk<T> {
    fn lock_ok(&self) -> MutexGuard<'_, T>;
}

impl<T> LockOk<T> for Mutex<T> {
    fn lock_ok(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    /// A host controller spawns waits on a multi-threaded runtime: the future must be Send.
    #[test]
    fn wait_future_is_send() {
        fn send<T: Send>(_: &T) {}
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let f = super::wait_ready(addr, std::time::Duration::from_millis(1), None);
        send(&f);
        let opts = super::WaitOptions::default();
        let g = super::wait_ready_with(addr, &opts, |_| {});
        send(&g);
    }
}
