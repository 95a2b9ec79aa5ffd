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
//!   chunks, so the wait returns on time whatever the guest prints;
//! - with [`WaitOptions::vsock`], the agent is also asked over vsock, which needs no network
//!   in the guest: ready when it is ready on either; when a TCP address is waited on and
//!   the agent's `/health` over vsock says netinit failed, the wait ends at once with the
//!   agent's own diagnosis (no device, the missing module's path, the bad `ip=` field)
//!   instead of at the deadline;
//! - with [`WaitOptions::ready_socket`], the line the agent pushes (`<uds_path>_<port>`) is
//!   read as it arrives: `ready` ends the wait without any request, a netinit failure in it
//!   ends it as above.

use crate::client::{AgentAddr, ClientError, ErrorClass, GuestClient};
use crate::console::{ConsoleError, ConsoleFollower};
use crate::diagnose::Finding;
use crate::ready_push::ReadyListener;
use hyper::StatusCode;
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
    /// A second way to the agent, usually `vsock:/PATH:PORT` or `vsock:CID:PORT`, probed
    /// alongside `addr` with the same delays.
    pub vsock: Option<AgentAddr>,
    /// Listen on this unix socket for the agent's pushed readiness line (Firecracker's
    /// `<uds_path>_<ready_port>`, see [`crate::ready_push`]); bound for the wait's duration.
    pub ready_socket: Option<PathBuf>,
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
            vsock: None,
            ready_socket: None,
        }
    }
}

#[path = "wait_types.rs"]
mod types;
pub use types::{ProbeFailure, Progress, Ready, ReadyVia, Stage, WaitError};
#[path = "wait_side.rs"]
mod side;
use side::{push_loop, vsock_loop, SideEnd};

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
    let listener = match &opts.ready_socket {
        Some(p) => Some(ReadyListener::bind(p)?),
        None => None,
    };
    // A netinit failure ends the wait only when a TCP address is waited on: over vsock alone
    // the agent may be all the caller needs.
    let tcp_primary = addr.tcp().is_some();
    let waited_on = addr.clone();

    let side_loop = async {
        let v = async {
            match &opts.vsock {
                Some(vs) => vsock_loop(vs, tcp_primary, opts, end, &state).await,
                None => std::future::pending().await,
            }
        };
        let p = async {
            match &listener {
                Some(l) => push_loop(l, &waited_on, tcp_primary, &state).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            a = v => a,
            b = p => b,
        }
    };

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
    let mut addr = addr;
    let outcome = {
        let probe_loop = std::pin::pin!(probe_loop);
        let console_loop = std::pin::pin!(console_loop);
        let side_loop = std::pin::pin!(side_loop);
        tokio::select! {
            via = probe_loop => Ok(via),
            fatal = console_loop => Err(fatal.map(Some)),
            side = side_loop => match side {
                SideEnd::Ready(answered, via) => {
                    addr = answered;
                    Ok(via)
                }
                SideEnd::Diagnosed { seen_in, findings: side } => {
                    let (mut findings, timeline) = snapshot(&console);
                    let finding = side[0].clone();
                    for f in side {
                        if !findings.iter().any(|g| g.cause == f.cause && g.subject == f.subject) {
                            findings.push(f);
                        }
                    }
                    let st = state.lock_ok();
                    return Err(WaitError::Diagnosed {
                        addr,
                        seen_in,
                        after: start.elapsed(),
                        finding: Box::new(finding),
                        findings,
                        timeline,
                        last: st.last.clone().map(Box::new),
                    });
                }
            },
            _ = sleep_until(end) => Err(Ok(None)),
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
                        seen_in: "the console log".into(),
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
