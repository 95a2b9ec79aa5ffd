//! The types [`crate::wait`] answers with: how the VM became ready, how far it got, what was
//! shown along the way, and why the wait failed. (Apart from the wait's logic to keep both
//! files readable.)

use crate::client::{AgentAddr, ErrorClass};
use crate::console::ConsoleError;
use crate::diagnose::{Finding, Milestone, TimelineEntry};
use crate::text::Untrusted;
use guest_proto::api::{HealthResponse, ReadyResponse};
use guest_proto::readiness::ReadinessLine;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

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
    /// The agent pushed a readiness line saying `ready` (no request made).
    Pushed { line: Box<ReadinessLine> },
}

/// The VM is ready.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    /// The address that answered ready (the TCP one, or [`crate::WaitOptions::vsock`]); the
    /// address waited on for a pushed line.
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
    /// A non-fatal console finding (or a pushed line that could not be read).
    Finding { finding: Finding },
    /// The first answer over the second transport ([`crate::WaitOptions::vsock`]) that is
    /// not "ready".
    AnsweringOver {
        addr: AgentAddr,
        status: u16,
        reasons: Vec<String>,
    },
    /// A pushed readiness line that does not end the wait (starting, degraded).
    Pushed { line: Box<ReadinessLine> },
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
    #[error("{addr}: {seen_in} shows a fatal error after {:.1}s: {finding}", .after.as_secs_f64())]
    Diagnosed {
        addr: AgentAddr,
        /// Where the fatal finding was seen: `the console log`, `the agent's /health over
        /// vsock:...`, `the pushed readiness line`.
        seen_in: String,
        after: Duration,
        finding: Box<Finding>,
        findings: Vec<Finding>,
        timeline: Vec<TimelineEntry>,
        last: Option<Box<ProbeFailure>>,
    },
    #[error(transparent)]
    Console(#[from] ConsoleError),
    /// The readiness socket could not be bound.
    #[error(transparent)]
    Push(#[from] crate::ready_push::PushError),
}

impl WaitError {
    /// Console findings collected before the failure.
    pub fn findings(&self) -> &[Finding] {
        match self {
            WaitError::Timeout { findings, .. } | WaitError::Diagnosed { findings, .. } => findings,
            WaitError::Console(_) | WaitError::Push(_) => &[],
        }
    }

    pub fn last(&self) -> Option<&ProbeFailure> {
        match self {
            WaitError::Timeout { last, .. } | WaitError::Diagnosed { last, .. } => last.as_deref(),
            WaitError::Console(_) | WaitError::Push(_) => None,
        }
    }
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
