//! The wait's second sources (issue 13): the agent over vsock and the pushed readiness line.
//! Both need no network in the guest; both can end the wait early, ready or diagnosed.

use super::{probe, LockOk, ProbeOutcome, State, WaitOptions};
use super::{Progress, ReadyVia, Stage};
use crate::client::{AgentAddr, ErrorClass, GuestClient};
use crate::diagnose::{Cause, Finding, Severity};
use crate::health_diag::netinit_failure_findings;
use crate::ready_push::ReadyListener;
use guest_proto::readiness::{AgentState, NetinitSummary};
use hyper::StatusCode;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// How the second transport or the pushed line ended the wait.
pub(super) enum SideEnd {
    /// Ready, at this address (the vsock one, or the waited-on one for a pushed line).
    Ready(AgentAddr, ReadyVia),
    /// The agent says netinit failed; `findings[0]` is the fatal one.
    Diagnosed {
        seen_in: String,
        findings: Vec<Finding>,
    },
}

/// Probes the agent at `vs` (vsock) until it is ready; `/health` first (public, and it carries
/// netinit's report): a failed netinit ends the wait when `tcp_primary`.
pub(super) async fn vsock_loop<F: FnMut(&Progress)>(
    vs: &AgentAddr,
    tcp_primary: bool,
    opts: &WaitOptions,
    end: Instant,
    state: &Mutex<State<F>>,
) -> SideEnd {
    let mut delay = opts.first_delay;
    let mut health_only = None;
    let mut answered = false;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let c = GuestClient::new(vs.clone())
            .with_token(opts.token.clone())
            .with_timeout(opts.attempt_timeout.min(left).max(Duration::from_millis(1)));
        let mut wait = delay;
        match c.health().await {
            Ok(h) => {
                if let Some(n) = h.network.as_ref().filter(|_| tcp_primary) {
                    let seen_in = format!("GET /health over {vs}");
                    let findings =
                        netinit_failure_findings(&NetinitSummary::from_report(n), &seen_in);
                    if !findings.is_empty() {
                        return SideEnd::Diagnosed {
                            seen_in: format!("the agent's /health over {vs}"),
                            findings,
                        };
                    }
                }
                match probe(&c, health_only).await {
                    ProbeOutcome::Ready(via) => return SideEnd::Ready(vs.clone(), via),
                    ProbeOutcome::Failed(e)
                        if health_only.is_none()
                            && matches!(
                                e.status(),
                                Some(StatusCode::NOT_FOUND)
                                    | Some(StatusCode::UNAUTHORIZED)
                                    | Some(StatusCode::FORBIDDEN)
                            ) =>
                    {
                        health_only = e.status().map(|s| s.as_u16());
                        continue;
                    }
                    ProbeOutcome::NotReady { status, reasons } => {
                        let mut st = state.lock_ok();
                        st.reach(Stage::AgentAnswering);
                        if !answered {
                            answered = true;
                            (st.on_progress)(&Progress::AnsweringOver {
                                addr: vs.clone(),
                                status,
                                reasons,
                            });
                        }
                    }
                    ProbeOutcome::Failed(_) => {}
                }
            }
            Err(e) => {
                if e.class() == ErrorClass::Refused {
                    wait = opts.refused_delay.unwrap_or(delay);
                }
            }
        }
        delay = (delay * 2).min(opts.max_delay);
        sleep(wait).await;
    }
}

/// Reads pushed readiness lines until one says ready (or, when `tcp_primary`, that netinit
/// failed). A line that cannot be read is shown as a warning and listening goes on.
pub(super) async fn push_loop<F: FnMut(&Progress)>(
    listener: &ReadyListener,
    addr: &AgentAddr,
    tcp_primary: bool,
    state: &Mutex<State<F>>,
) -> SideEnd {
    let seen_in = "pushed readiness line";
    loop {
        match listener.next().await {
            Ok(line) => {
                if let Some(n) = line.network.as_ref().filter(|_| tcp_primary) {
                    let findings = netinit_failure_findings(n, seen_in);
                    if !findings.is_empty() {
                        return SideEnd::Diagnosed {
                            seen_in: format!("the {seen_in}"),
                            findings,
                        };
                    }
                }
                if line.state == AgentState::Ready {
                    return SideEnd::Ready(
                        addr.clone(),
                        ReadyVia::Pushed {
                            line: Box::new(line),
                        },
                    );
                }
                let mut st = state.lock_ok();
                st.reach(Stage::AgentAnswering);
                (st.on_progress)(&Progress::Pushed {
                    line: Box::new(line),
                });
            }
            Err(e) => {
                let io = matches!(e, crate::ready_push::PushError::Io(_));
                let finding = Finding {
                    cause: Cause::MalformedEvent,
                    severity: Severity::Warning,
                    subject: Some(seen_in.into()),
                    line: 0,
                    evidence: crate::text::cap(&e.to_string(), crate::text::MAX_EVIDENCE),
                    hint: "the agent's pushed line could not be read; polling goes on".into(),
                    occurrences: 1,
                };
                (state.lock_ok().on_progress)(&Progress::Finding { finding });
                if io {
                    // accept() failing (e.g. out of descriptors): do not spin
                    sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
