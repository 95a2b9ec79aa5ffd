//! `ReadinessLine`: the one line `guest-agent serve` pushes to the host over vsock (CID 2,
//! `guest_agent.ready_port=`) when it is ready and again whenever its summary changes.
//!
//! Pushed instead of polled so the host learns "ready" (or "the network never came up, and
//! here is why") within a millisecond, even when the VM has no working NIC (failures F1, F3).
//! The line is a compact summary, not `/health`: the host that wants everything asks
//! `/health` over vsock. It carries netinit's outcome in the compact form the host needs to
//! act (class, device, the message naming the missing module's path or the bad `ip=` field).
//!
//! Wire form: one JSON object (camelCase, like [`crate::api`]) on ONE line ending in `\n`,
//! never longer than [`MAX_LINE_BYTES`]. serde_json escapes control characters, so a value
//! cannot break the line; [`ReadinessLine::bounded`] truncates every text field by its
//! *escaped* length and caps every list, so the bound holds for any input. Never carries a
//! token, a token hash or any other secret: the fields below are all there is.

use crate::api::{AuthMode, ServiceState};
use crate::report::{AddressReport, ConfigSource, NetinitReport, Outcome};
use serde::{Deserialize, Serialize};

/// Wire format version of [`ReadinessLine`]; bumped only on an incompatible change (fields
/// are added with `#[serde(default)]`, never renamed).
pub const READINESS_VERSION: u32 = 1;
/// Upper bound of a serialized line, `\n` included. Readers may refuse longer lines.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// At most this many services are listed; the rest are counted in `servicesOmitted`.
pub const MAX_SERVICES: usize = 32;
/// At most this many reasons (why not ready / degraded).
pub const MAX_REASONS: usize = 8;
/// At most this many addresses of the configured interface.
pub const MAX_ADDRESSES: usize = 4;
/// Escaped-length caps of the text fields.
pub const MAX_NAME: usize = 64;
pub const MAX_REASON: usize = 200;
pub const MAX_MESSAGE: usize = 512;
const MAX_SHORT: usize = 32;

/// The agent's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Serving, but required services are not running yet.
    Starting,
    /// `/ready` would answer 200.
    Ready,
    /// Was ready; a required service is no longer running (see `reasons`).
    Degraded,
    /// Stopping (SIGTERM, power-off): the host should not wait for more.
    ShuttingDown,
    /// A value from a newer agent.
    #[serde(other)]
    Unknown,
}

/// One service, as little as the host needs to tell "up" from "not up".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSummary {
    pub name: String,
    pub state: ServiceState,
    pub required: bool,
}

/// netinit's outcome, compact: what the host needs to say why the network is (not) up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetinitSummary {
    pub outcome: Outcome,
    /// The interface it configured or waited for (`eth0`).
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub source: Option<ConfigSource>,
    /// The first [`MAX_ADDRESSES`] addresses applied.
    #[serde(default)]
    pub addresses: Vec<AddressReport>,
    /// Set when `outcome` is `failed`.
    #[serde(default)]
    pub failure: Option<NetinitFailure>,
}

/// netinit's failure: the class (`bad-config`, `no-device`, `module-missing`, ...), its exit
/// code and the message, which names the missing module's path or the bad `ip=` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetinitFailure {
    pub class: String,
    pub exit_code: i32,
    pub message: String,
}

/// The pushed line. See the module doc for the wire form and its bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessLine {
    /// [`READINESS_VERSION`].
    pub version: u32,
    /// Increases by one with every line this agent process builds; the host keeps the
    /// highest it saw (a retried push may repeat a number, never go back).
    pub seq: u64,
    pub state: AgentState,
    /// The agent's version (`CARGO_PKG_VERSION`).
    pub agent_version: String,
    /// Milliseconds since `serve` started.
    pub uptime_ms: u64,
    /// How the guarded routes are protected; never the token itself.
    #[serde(default)]
    pub auth: Option<AuthMode>,
    #[serde(default)]
    pub services: Vec<ServiceSummary>,
    /// Services left out beyond [`MAX_SERVICES`].
    #[serde(default)]
    pub services_omitted: u32,
    /// `null` when guest-netinit wrote no state file (yet).
    #[serde(default)]
    pub network: Option<NetinitSummary>,
    /// One sentence per unmet condition, as `/ready` gives them.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// A line that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    #[error("readiness line is {len} bytes, more than the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("readiness line contains a newline before its end")]
    EmbeddedNewline,
    #[error("readiness line is not valid JSON for ReadinessLine: {0}")]
    Json(#[from] serde_json::Error),
}

impl NetinitSummary {
    /// The compact form of a state file.
    pub fn from_report(report: &NetinitReport) -> Self {
        NetinitSummary {
            outcome: report.outcome,
            interface: report.interface.clone(),
            source: report.source,
            addresses: report.addresses.clone(),
            failure: report.error.as_ref().map(|e| NetinitFailure {
                class: e.class.clone(),
                exit_code: e.exit_code,
                message: e.message.clone(),
            }),
        }
        .bounded()
    }

    fn bounded(mut self) -> Self {
        if let Some(i) = self.interface.as_mut() {
            truncate_escaped(i, MAX_SHORT);
        }
        self.addresses.truncate(MAX_ADDRESSES);
        if let Some(f) = self.failure.as_mut() {
            truncate_escaped(&mut f.class, MAX_SHORT);
            truncate_escaped(&mut f.message, MAX_MESSAGE);
        }
        self
    }
}

impl ReadinessLine {
    /// Caps every list and truncates every text field (by its JSON-escaped length, at a char
    /// boundary) so that [`Self::to_line`] fits [`MAX_LINE_BYTES`] whatever the input.
    pub fn bounded(mut self) -> Self {
        truncate_escaped(&mut self.agent_version, MAX_SHORT);
        if self.services.len() > MAX_SERVICES {
            let extra = self.services.len() - MAX_SERVICES;
            self.services_omitted = self
                .services_omitted
                .saturating_add(u32::try_from(extra).unwrap_or(u32::MAX));
            self.services.truncate(MAX_SERVICES);
        }
        for s in &mut self.services {
            truncate_escaped(&mut s.name, MAX_NAME);
        }
        self.reasons.truncate(MAX_REASONS);
        for r in &mut self.reasons {
            truncate_escaped(r, MAX_REASON);
        }
        self.network = self.network.map(NetinitSummary::bounded);
        self
    }

    /// The wire form: bounded, one JSON line ending in `\n`.
    pub fn to_line(&self) -> Result<String, ReadinessError> {
        let mut s = serde_json::to_string(&self.clone().bounded())?;
        s.push('\n');
        if s.len() > MAX_LINE_BYTES {
            return Err(ReadinessError::TooLong {
                len: s.len(),
                max: MAX_LINE_BYTES,
            });
        }
        Ok(s)
    }

    /// Reads one line as received (the trailing `\n`, or `\r\n`, is optional). Refuses lines
    /// over [`MAX_LINE_BYTES`] and a newline inside the line.
    pub fn parse(line: &[u8]) -> Result<Self, ReadinessError> {
        if line.len() > MAX_LINE_BYTES {
            return Err(ReadinessError::TooLong {
                len: line.len(),
                max: MAX_LINE_BYTES,
            });
        }
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.contains(&b'\n') {
            return Err(ReadinessError::EmbeddedNewline);
        }
        Ok(serde_json::from_slice(body)?)
    }
}

/// The number of bytes `c` takes inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Truncates `s` so its JSON-escaped form is at most `max` bytes, at a char boundary; a
/// truncated value ends in `…` so a reader sees it was cut.
fn truncate_escaped(s: &mut String, max: usize) {
    let total: usize = s.chars().map(escaped_len).sum();
    if total <= max {
        return;
    }
    let budget = max.saturating_sub('…'.len_utf8());
    let mut used = 0;
    let mut cut = 0;
    for (i, c) in s.char_indices() {
        let l = escaped_len(c);
        if used + l > budget {
            break;
        }
        used += l;
        cut = i + c.len_utf8();
    }
    s.truncate(cut);
    s.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReadinessLine {
        ReadinessLine {
            version: READINESS_VERSION,
            seq: 7,
            state: AgentState::Ready,
            agent_version: "0.1.0".into(),
            uptime_ms: 1234,
            auth: Some(AuthMode::TokenSha256),
            services: vec![ServiceSummary {
                name: "serve".into(),
                state: ServiceState::Running,
                required: true,
            }],
            services_omitted: 0,
            network: Some(NetinitSummary {
                outcome: Outcome::Failed,
                interface: Some("eth0".into()),
                source: None,
                addresses: vec![],
                failure: Some(NetinitFailure {
                    class: "module-missing".into(),
                    exit_code: 5,
                    message:
                        "virtio_net missing at /lib/modules/6.1.0/kernel/drivers/net/virtio_net.ko"
                            .into(),
                }),
            }),
            reasons: vec![],
        }
    }

    #[test]
    fn wire_form_is_camel_case_one_line() {
        let line = sample().to_line().unwrap();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        for key in [
            "\"agentVersion\":\"0.1.0\"",
            "\"uptimeMs\":1234",
            "\"auth\":\"token_sha256\"",
            "\"state\":\"ready\"",
            "\"exitCode\":5",
            "\"class\":\"module-missing\"",
            "\"seq\":7",
        ] {
            assert!(line.contains(key), "{key} missing in {line}");
        }
        assert_eq!(ReadinessLine::parse(line.as_bytes()).unwrap(), sample());
    }

    #[test]
    fn parse_refuses_long_and_embedded_newlines() {
        let long = vec![b' '; MAX_LINE_BYTES + 1];
        assert!(matches!(
            ReadinessLine::parse(&long),
            Err(ReadinessError::TooLong { .. })
        ));
        assert!(matches!(
            ReadinessLine::parse(b"{}\n{}\n"),
            Err(ReadinessError::EmbeddedNewline)
        ));
        let err = ReadinessLine::parse(b"{\"version\":1}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("seq") || err.contains("missing field"),
            "{err}"
        );
    }

    #[test]
    fn unknown_state_from_newer_agent_is_read() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_line().unwrap()).unwrap();
        v["state"] = "hibernating".into();
        v["newField"] = 1.into();
        let line = ReadinessLine::parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(line.state, AgentState::Unknown);
    }

    #[test]
    fn truncation_counts_escapes_and_marks_the_cut() {
        let mut s = "\u{1}".repeat(100);
        truncate_escaped(&mut s, 64);
        assert!(s.ends_with('…'));
        let esc = serde_json::to_string(&s).unwrap().len() - 2;
        assert!(esc <= 64, "{esc}");
        let mut short = "abc".to_string();
        truncate_escaped(&mut short, 64);
        assert_eq!(short, "abc");
    }

    #[test]
    fn too_many_services_are_counted_not_sent() {
        let mut l = sample();
        l.services = (0..40)
            .map(|i| ServiceSummary {
                name: format!("s{i}"),
                state: ServiceState::Running,
                required: false,
            })
            .collect();
        let b = l.bounded();
        assert_eq!(b.services.len(), MAX_SERVICES);
        assert_eq!(b.services_omitted, 8);
    }
}
