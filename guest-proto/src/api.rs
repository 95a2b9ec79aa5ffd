//! The agent's HTTP API bodies (`guest-agent serve`), shared with host-client.
//!
//! JSON field names are camelCase because the existing host controller reads the Node
//! agent's `{status, timestamp, activeSessions}`; those three keep their names exactly.

use crate::report::NetinitReport;
use serde::{Deserialize, Serialize};

/// `GET /health`. Always 200 while the agent runs; `status` says how it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// `"ok"` or `"degraded"` (a required service is not running).
    pub status: String,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub active_sessions: u32,
    #[serde(default)]
    pub uptime_seconds: Option<f64>,
    #[serde(default)]
    pub version: Option<String>,
    /// How the guarded routes are protected (`null` from agents that predate the field).
    #[serde(default)]
    pub auth: Option<AuthMode>,
    /// guest-netinit's state file, `null` when absent.
    #[serde(default)]
    pub network: Option<NetinitReport>,
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
    #[serde(default)]
    pub memory: Option<MemoryInfo>,
    /// The screen streamer (`guest-agent webrtc`) as `serve` last heard from it; `null` when
    /// this VM has no streamer (no supervised service named `webrtc` and nothing answering on
    /// its socket).
    #[serde(default)]
    pub webrtc: Option<WebrtcHealth>,
}

/// `webrtc` in `/health`: whether the streamer answers and who watches.
///
/// The streamer's process state (pid, restarts, crash-loop) is its entry in `services`; this
/// says what only the streamer itself knows. `serve` asks it over its unix socket when it
/// refreshes the `/health` snapshot and never waits more than a few tens of milliseconds: a
/// hung streamer shows the last answer, then `down`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebrtcHealth {
    pub state: WebrtcState,
    /// Connected viewers (WHEP and controller mode); 0 when `down`.
    pub viewers: u32,
    /// Encoded frames per second over the last second (unchanged screens are not encoded,
    /// so a still picture shows ~0); `null` when `down`.
    #[serde(default)]
    pub fps: Option<f32>,
    /// Why it is `down` ("no answer within 2 s", "connection refused"), or the capture
    /// pipeline's last error while `running` ("cannot open display :1").
    #[serde(default)]
    pub error: Option<String>,
}

/// `auth` in `/health`: what the guarded routes (everything but `/health`, `/ready` and
/// `/viewer`) ask of a caller. Never carries the token or its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// A bearer token from the token file or `guest_agent.token=`.
    Token,
    /// A bearer token whose SHA-256 is `guest_agent.token_sha256=` (the recommended form).
    TokenSha256,
    /// Explicitly opted out (`serve --insecure-no-auth` or `guest_agent.auth=none`): anyone
    /// who reaches the agent may use every route.
    #[serde(rename = "none")]
    Disabled,
    /// No token configured and no opt-out: the guarded routes refuse every caller (503).
    Unconfigured,
    /// The configuration is unusable (e.g. a malformed `guest_agent.token_sha256=`): the
    /// guarded routes refuse every caller (503) with the reason.
    Invalid,
    /// A value from a newer agent.
    #[serde(other)]
    Unknown,
}

/// `webrtc.state` in `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebrtcState {
    /// It answered its status request.
    Running,
    /// It is configured (a supervised service named `webrtc`) but did not answer: not started
    /// yet, restarting, or hung. When that service is `required` and the supervisor says it
    /// is running, `/health` is `degraded` and `/ready` gives the reason.
    Down,
}

/// `memory` in `/health`, from `/proc/meminfo` (failure F7: tiny VMs die of OOM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryInfo {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Lifecycle state of a supervised service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    Starting,
    Running,
    /// Exited; waiting out a backoff delay before the next start.
    Backoff,
    /// Failed too often in the window; still retried, slowly.
    CrashLoop,
    /// Exited and not restarted (restart policy says so, or shutting down).
    Stopped,
    /// Not known: a systemd unit while there is no system bus, or waiting for a dependency.
    Unknown,
}

/// One service as the supervisor sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    pub required: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// `"exit 1"`, `"signal 9 (KILL)"`, or `null` before the first exit.
    pub last_exit: Option<String>,
    /// RFC 3339: when it entered `state`.
    pub since: String,
    /// Summed over the service's process group.
    pub rss_bytes: Option<u64>,
    /// User + system CPU time of the process group's live processes.
    pub cpu_seconds: Option<f64>,
    /// A sentence on why it is in `state` ("liveness probe failed 3 times: connection refused").
    #[serde(default)]
    pub message: Option<String>,
    /// Set for services that are systemd units watched over D-Bus instead of children.
    #[serde(default)]
    pub systemd_unit: Option<String>,
}

/// `GET /services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicesResponse {
    pub services: Vec<ServiceStatus>,
}

/// Which pipe of the child a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line a service printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// RFC 3339, UTC, when the supervisor read it.
    pub timestamp: String,
    pub stream: LogStream,
    pub line: String,
}

/// `GET /services/:name/logs?lines=N`: the last N lines (oldest first) of the ring buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsResponse {
    pub service: String,
    pub lines: Vec<LogLine>,
}

/// `POST /services/:name/restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartResponse {
    pub service: String,
    /// What was done: `"restarted"` (a child), `"restart-unit-queued"` (a systemd unit).
    pub action: String,
}

/// `GET /ready`: 200 with `ready: true`, or 503 with the reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyResponse {
    pub ready: bool,
    /// One sentence per unmet condition ("required service serve is crash-loop").
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// Error body for every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
