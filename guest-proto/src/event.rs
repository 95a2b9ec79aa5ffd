//! Console event lines: how guestkit components tell the host what happened, through the
//! one channel that always exists, the serial console (failure F4: invisible logs).
//!
//! A line is `GUESTKIT: ` followed by one JSON object on one line, e.g.
//! `GUESTKIT: {"src":"netinit","lvl":"info","ev":"done","interface":"eth0","duration_us":1830}`.
//! It may be preceded by anything (a kernel timestamp `[    1.234567] `, a systemd prefix),
//! so a reader looks for the prefix anywhere in the line. Lines stay under ~900 bytes
//! because `/dev/kmsg` cuts records at 1 KiB.

use crate::report::FailureReport;
use serde::{Deserialize, Serialize};

/// Marks an event line; searched for anywhere in a console line.
pub const EVENT_PREFIX: &str = "GUESTKIT: ";

/// Which component emitted the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Netinit,
    Agent,
    Webrtc,
}

/// Severity, mapped to a kernel log level when written to `/dev/kmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Error,
    Warn,
    Info,
}

/// What happened. Tagged by `ev`; fields are added, never renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "kebab-case")]
pub enum Event {
    /// A component started (its version).
    Start { version: String },
    /// One step finished.
    Step {
        step: String,
        ok: bool,
        duration_us: u64,
        detail: String,
    },
    /// Two sources configure the same interface.
    Conflict {
        source: String,
        path: Option<String>,
        detail: String,
        resolution: String,
    },
    /// A kernel module needed for the network is not in the image (failure F1).
    ModuleMissing { module: String, path: String },
    /// No network interface appeared before the deadline.
    NoDevice { interface: String, waited_ms: u64 },
    /// Something worth a look that did not stop the run (gateway silent, ...).
    Warning { message: String },
    /// netinit finished: the network is configured.
    Done {
        interface: Option<String>,
        addresses: Vec<String>,
        duration_us: u64,
    },
    /// A component stopped with an error.
    Failed {
        #[serde(flatten)]
        failure: FailureReport,
    },
    /// The agent's HTTP listener is bound.
    Listening { addr: String },
    /// A supervised service keeps crashing.
    CrashLoop {
        service: String,
        restarts: u32,
        last_exit: String,
    },
}

/// One event line: who, how severe, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleEvent {
    pub src: Component,
    pub lvl: Level,
    #[serde(flatten)]
    pub event: Event,
}

impl ConsoleEvent {
    pub fn new(src: Component, lvl: Level, event: Event) -> Self {
        Self { src, lvl, event }
    }

    /// The full line, prefix included, no trailing newline.
    pub fn to_line(&self) -> String {
        // Serialising plain enums and strings cannot fail.
        let json =
            serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"ser-error\":\"{e}\"}}"));
        format!("{EVENT_PREFIX}{json}")
    }

    /// Finds an event in a console line (anything may come before the prefix).
    /// `None` for lines without the prefix; `Some(Err)` for a prefixed line that does not
    /// parse (cut short by the console, or from a newer guestkit with unknown events).
    pub fn find_in_line(line: &str) -> Option<Result<ConsoleEvent, serde_json::Error>> {
        let at = line.find(EVENT_PREFIX)?;
        let json = line[at + EVENT_PREFIX.len()..].trim_end_matches(['\r', '\n']);
        Some(serde_json::from_str(json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_round_trips_behind_a_kernel_timestamp() {
        let ev = ConsoleEvent::new(
            Component::Netinit,
            Level::Error,
            Event::ModuleMissing {
                module: "virtio_net".into(),
                path: "/lib/modules/6.1.0-28-cloud-amd64/kernel/drivers/net/virtio_net.ko".into(),
            },
        );
        let line = format!("[    1.234567] {}\r", ev.to_line());
        assert_eq!(ConsoleEvent::find_in_line(&line).unwrap().unwrap(), ev);
    }

    #[test]
    fn failed_event_flattens_the_failure() {
        let ev = ConsoleEvent::new(
            Component::Netinit,
            Level::Error,
            Event::Failed {
                failure: FailureReport {
                    class: "bad-config".into(),
                    exit_code: 3,
                    message: "gateway: `undefined` is not an IPv4 address".into(),
                },
            },
        );
        let line = ev.to_line();
        assert!(line.contains(r#""ev":"failed""#), "{line}");
        assert!(line.contains(r#""exit_code":3"#), "{line}");
        assert_eq!(ConsoleEvent::find_in_line(&line).unwrap().unwrap(), ev);
    }

    #[test]
    fn plain_lines_are_not_events_and_cut_lines_are_errors() {
        assert!(ConsoleEvent::find_in_line("[    0.000000] Linux version 6.1.0").is_none());
        assert!(
            ConsoleEvent::find_in_line("GUESTKIT: {\"src\":\"netinit\",\"lv")
                .unwrap()
                .is_err()
        );
    }
}
