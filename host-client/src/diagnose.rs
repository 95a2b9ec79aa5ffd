//! Reading a VM's console log: what went wrong (findings) and how far the boot got (timeline).
//!
//! The old controller destroyed VMs after 60 s of failed health checks while the reason sat
//! unread in the console log (failures F1, F5, F7 in DESIGN.md). This module turns that log
//! into findings, each with a cause, a severity, the evidence line and its number, and a fix
//! hint. It is pure (text in, data out) and incremental: [`Diagnoser`] takes lines one at a
//! time so `wait_ready` can follow a growing console file and stop at the first fatal finding;
//! [`diagnose`] is the one-shot form.

use crate::finding_set::FindingSet;
pub use crate::finding_set::MAX_FINDINGS;
pub use crate::hints::hint;
use crate::hints::{decode_exitcode, event_hit, found_to_finding, Found};
use crate::signatures::{self, Hit, PreKernel};
use crate::text::{cap, Untrusted, MAX_EVIDENCE};
use guest_proto::{Component, ConsoleEvent, Event};
use serde::Serialize;
use std::fmt;

/// Why a VM is (or may be) not ready. Serialised kebab-case for `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The console log is empty: the kernel was not told to print there.
    NoConsoleOutput,
    /// Only firmware / kernel setup lines (SeaBIOS, `Probing EDD`), no `Linux version`: the
    /// kernel never started (too little memory to decompress it, a broken image).
    KernelNotStarted,
    /// `VFS: Unable to mount root fs` / `Cannot open root device`.
    RootfsMountFailed,
    /// OOM killer, `System is deadlocked on memory` (failure F7).
    OutOfMemory,
    /// `No working init found`, `Requested init ... failed`, `Failed to execute /init`.
    NoInit,
    /// `Attempted to kill init!`: PID 1 exited.
    InitExited,
    /// Any other `Kernel panic - not syncing`.
    KernelPanic,
    /// An oops / BUG that did not (yet) panic.
    KernelBug,
    /// A kernel module the boot needs is not in the image (failure F1).
    ModuleMissing,
    /// No network interface appeared (or a tool could not find it: `ip`, ifupdown, ...).
    NoNetworkDevice,
    /// `Network is unreachable`: the guest has no route (its network was never configured).
    NetworkUnreachable,
    /// A DHCP client gave up (udhcpc, dhclient, systemd-networkd, NetworkManager).
    DhcpFailed,
    /// The boot reached userspace but the console never shows a network being configured
    /// (an image whose networking silently did nothing). Added at the end of the log.
    NoNetworkConfigured,
    /// guest-netinit stopped with an error.
    NetinitFailed,
    /// One guest-netinit step failed.
    NetinitStepFailed,
    /// Two sources configure the same interface (failure F2).
    NetworkConflict,
    /// guest-netinit warned (gateway silent, ...).
    NetinitWarning,
    /// systemd: `Failed to start X`, `X: Failed with result`.
    UnitFailed,
    /// systemd: `Dependency failed for X`.
    DependencyFailed,
    /// systemd dropped to emergency mode.
    EmergencyMode,
    /// A supervised service keeps crashing.
    ServiceCrashLoop,
    /// A supervised service is stopped or between restarts (from `/health`).
    ServiceDown,
    /// The agent did not answer `/health` at all.
    AgentUnreachable,
    /// The agent (or another guestkit component) stopped with an error.
    ComponentFailed,
    /// A `GUESTKIT:` line that does not parse (cut short, or a newer guestkit).
    MalformedEvent,
    /// More than [`MAX_FINDINGS`] distinct findings: the rest are counted here (`occurrences`:
    /// console lines left out; `line`/`evidence`: the first of them).
    FindingsSuppressed,
}

/// How bad a finding is. `Fatal`: the VM will not become ready without a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Fatal,
}

/// One thing the console log says went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub cause: Cause,
    pub severity: Severity,
    /// What it is about: the unit, module, service, interface or panic message.
    pub subject: Option<String>,
    /// 1-based line number of `evidence` in the console log.
    pub line: usize,
    /// The console line (colour codes removed) that shows it, cut to
    /// [`crate::text::MAX_EVIDENCE`] bytes.
    pub evidence: String,
    /// What to do about it.
    pub hint: String,
    /// How many lines said the same (same cause and subject); evidence is the most severe.
    pub occurrences: usize,
}

/// A boot milestone seen on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Milestone {
    /// `Linux version ...`
    KernelStarted,
    /// `Run /init as init process`, systemd's first lines, or a guestkit component starting.
    Userspace,
    /// guest-netinit's `done` event.
    NetinitDone,
    /// the agent's `listening` event.
    AgentListening,
}

/// When a milestone was reached: its line and, when the line has one, the kernel timestamp.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub milestone: Milestone,
    pub line: usize,
    /// Seconds since kernel start, from a `[    1.234567]` prefix.
    pub kernel_time: Option<f64>,
    pub evidence: String,
}

/// Findings and timeline of a whole console log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    pub findings: Vec<Finding>,
    pub timeline: Vec<TimelineEntry>,
    /// Lines read.
    pub lines: usize,
}

impl Diagnosis {
    /// The most severe finding (the earliest among equals), if any.
    pub fn worst(&self) -> Option<&Finding> {
        worst(&self.findings)
    }
}

/// The most severe finding; among equals, the one whose evidence comes first.
pub fn worst(findings: &[Finding]) -> Option<&Finding> {
    findings
        .iter()
        .min_by_key(|f| (std::cmp::Reverse(f.severity), f.line))
}

/// Findings in a console log, in order of first appearance.
pub fn diagnose(console_text: &str) -> Vec<Finding> {
    analyze(console_text).findings
}

/// Boot milestones in a console log, in order.
pub fn timeline(console_text: &str) -> Vec<TimelineEntry> {
    analyze(console_text).timeline
}

/// Findings and timeline in one pass.
pub fn analyze(console_text: &str) -> Diagnosis {
    let mut d = Diagnoser::new();
    for line in console_text.split('\n') {
        d.push_line(line);
    }
    d.finish()
}

/// Incremental reader: feed whole lines as they arrive. Its memory and the size of its
/// diagnosis are bounded whatever the log holds (see [`MAX_FINDINGS`]).
#[derive(Debug, Default, Clone)]
pub struct Diagnoser {
    lines: usize,
    printed: bool,
    findings: FindingSet,
    timeline: Vec<TimelineEntry>,
    /// The first lines of the latest run of lines without a kernel timestamp.
    user_block: Vec<String>,
    user_block_closed: bool,
    /// The last firmware / kernel setup line (line number, text) and the furthest stage seen.
    pre_kernel: Option<(usize, String, PreKernel)>,
    /// A line only a running kernel (or its userspace) prints: timestamp, `Linux version`,
    /// a guestkit event.
    kernel_ran: bool,
    /// A line showing a network being configured (an address, a lease): see
    /// [`Cause::NoNetworkConfigured`].
    net_configured: bool,
    /// A `GUESTKIT:` event was seen: guestkit runs here and reports the network itself.
    guestkit: bool,
}

impl Diagnoser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one line (without its `\n`; a trailing `\r` and ANSI codes are removed).
    /// Returns the finding this line created or made more severe, if any.
    pub fn push_line(&mut self, raw: &str) -> Option<&Finding> {
        self.lines += 1;
        let line = clean_line(raw);
        if line.trim().is_empty() {
            return None;
        }
        self.printed = true;
        let n = self.lines;
        // Parsed once: a flood of (long) event lines must not cost three JSON parses each.
        let event = ConsoleEvent::find_in_line(&line);
        self.note_milestone(&line, n, event.as_ref());
        self.note_pre_kernel(&line, n, event.is_some());
        self.guestkit |= matches!(event, Some(Ok(_)));
        let hit = match event {
            Some(Ok(ev)) => event_hit(&ev),
            Some(Err(_)) => Some(Found {
                hit: Hit {
                    cause: Cause::MalformedEvent,
                    severity: Severity::Info,
                    subject: None,
                },
                hint: "a GUESTKIT event line did not parse: cut short by the console, or written by a newer guestkit".into(),
            }),
            None => signatures::match_line(&line).map(|hit| {
                let mut hint = hint(hit.cause, hit.subject.as_deref());
                if hit.cause == Cause::InitExited {
                    hint = self.init_exit_hint(hit.subject.as_deref(), hint);
                }
                Found { hint, hit }
            }),
        };
        self.note_user_output(&line);
        if !self.net_configured && signatures::net::configures_network(&line) {
            self.net_configured = true;
        }

        let hit = hit?;
        self.findings.record(found_to_finding(hit, n, &line))
    }

    fn note_pre_kernel(&mut self, line: &str, n: usize, is_event: bool) {
        if self.kernel_ran {
            return;
        }
        if kernel_timestamp(line).is_some() || line.contains("Linux version ") || is_event {
            self.kernel_ran = true;
        } else if let Some(stage) = signatures::pre_kernel(line) {
            let furthest = match &self.pre_kernel {
                Some((_, _, seen)) => stage.max(*seen),
                None => stage,
            };
            self.pre_kernel = Some((n, cap(line, MAX_EVIDENCE), furthest));
        }
    }

    /// Userspace output (lines without a kernel timestamp) since the last kernel line: what
    /// init printed before dying is the best clue to why it died.
    fn note_user_output(&mut self, line: &str) {
        if kernel_timestamp(line).is_some() {
            self.user_block_closed = true;
        } else {
            if self.user_block_closed {
                self.user_block.clear();
                self.user_block_closed = false;
            }
            if self.user_block.len() < 3 {
                self.user_block.push(line.chars().take(300).collect());
            }
        }
    }

    fn init_exit_hint(&self, subject: Option<&str>, base: String) -> String {
        let mut out = base;
        if let Some(status) = subject.and_then(decode_exitcode) {
            out = out.replacen("PID 1 ended", &status, 1);
        }
        if let Some(first) = self.user_block.first() {
            out.push_str(&format!("; init's last output: `{first}`"));
        }
        out
    }

    /// Findings so far (at most [`MAX_FINDINGS`]), in order of creation.
    pub fn findings(&self) -> &[Finding] {
        self.findings.as_slice()
    }

    /// A mark for [`Diagnoser::findings_since`]: how many findings were created so far.
    pub fn findings_mark(&self) -> u64 {
        self.findings.created()
    }

    /// The findings created since `mark` (from [`Diagnoser::findings_mark`]) that are kept.
    pub fn findings_since(&self, mark: u64) -> &[Finding] {
        self.findings.since(mark)
    }

    /// Milestones so far.
    pub fn timeline(&self) -> &[TimelineEntry] {
        &self.timeline
    }

    /// The earliest fatal finding so far.
    pub fn fatal(&self) -> Option<&Finding> {
        worst(self.findings.as_slice()).filter(|f| f.severity == Severity::Fatal)
    }

    /// Lines read so far.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// The findings so far plus, for a log with nothing in it, the "nothing printed" finding,
    /// and for a log with only firmware lines, the "kernel never started" one. (Not findings
    /// while following a boot: every boot prints nothing, then firmware lines, at first.)
    pub fn snapshot(&self) -> Diagnosis {
        let mut findings = self.findings.as_slice().to_vec();
        findings.extend(self.findings.summary());
        if let (Some((line, evidence, stage)), false) = (&self.pre_kernel, self.kernel_ran) {
            let subject = match stage {
                PreKernel::Firmware => "firmware only",
                PreKernel::KernelSetup => "kernel setup ran",
            };
            findings.push(Finding {
                cause: Cause::KernelNotStarted,
                severity: Severity::Error,
                subject: Some(subject.into()),
                line: *line,
                evidence: evidence.clone(),
                hint: hint(Cause::KernelNotStarted, Some(subject)),
                occurrences: 1,
            });
        }
        if let Some(f) = self.no_network_finding(&findings) {
            findings.push(f);
        }
        if !self.printed {
            findings.push(Finding {
                cause: Cause::NoConsoleOutput,
                severity: Severity::Error,
                subject: None,
                line: 0,
                evidence: String::new(),
                hint: hint(Cause::NoConsoleOutput, None),
                occurrences: 1,
            });
        }
        Diagnosis {
            findings,
            timeline: self.timeline.clone(),
            lines: self.lines,
        }
    }

    /// A boot that reached userspace while nothing on the console shows a network being
    /// configured, and no finding already says why: an image whose networking silently did
    /// nothing must not read as "no problems found". (Not when the boot failed fatally, nor
    /// on a console guestkit writes to: its events report the network.)
    fn no_network_finding(&self, findings: &[Finding]) -> Option<Finding> {
        let userspace = self
            .timeline
            .iter()
            .find(|e| e.milestone == Milestone::Userspace)?;
        // guestkit's own events say how its network went (or it is still going)
        let guestkit_net = self.guestkit;
        let explained = findings.iter().any(|f| {
            f.severity == Severity::Fatal
                || matches!(
                    f.cause,
                    Cause::ModuleMissing
                        | Cause::NoNetworkDevice
                        | Cause::NetworkUnreachable
                        | Cause::DhcpFailed
                        | Cause::NetinitFailed
                        | Cause::NetinitStepFailed
                )
        });
        if self.net_configured || guestkit_net || explained {
            return None;
        }
        Some(Finding {
            cause: Cause::NoNetworkConfigured,
            severity: Severity::Warning,
            subject: None,
            line: userspace.line,
            evidence: userspace.evidence.clone(),
            hint: hint(Cause::NoNetworkConfigured, None),
            occurrences: 1,
        })
    }

    /// Ends the log; see [`Diagnoser::snapshot`].
    pub fn finish(self) -> Diagnosis {
        self.snapshot()
    }

    fn note_milestone(
        &mut self,
        line: &str,
        n: usize,
        event: Option<&Result<ConsoleEvent, serde_json::Error>>,
    ) {
        let milestone = if line.contains("Linux version ") {
            Some(Milestone::KernelStarted)
        } else if (line.contains("Run /") && line.contains(" as init process"))
            || line.contains("systemd[1]:")
            || line.starts_with("Welcome to ")
        {
            Some(Milestone::Userspace)
        } else {
            match event {
                Some(Ok(ev)) => match ev.event {
                    Event::Done { .. } if ev.src == Component::Netinit => {
                        Some(Milestone::NetinitDone)
                    }
                    Event::Listening { .. } => Some(Milestone::AgentListening),
                    _ => Some(Milestone::Userspace),
                },
                _ => None,
            }
        };
        if let Some(m) = milestone {
            if !self.timeline.iter().any(|e| e.milestone == m) {
                self.timeline.push(TimelineEntry {
                    milestone: m,
                    line: n,
                    kernel_time: event_kernel_timestamp(line),
                    evidence: cap(line, MAX_EVIDENCE),
                });
            }
        }
    }
}

/// Removes ANSI escape sequences (systemd colours `[FAILED]`), control characters and a
/// trailing `\r`.
pub fn clean_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates, then one final byte in @..~
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// The kernel timestamp of the event on `line`: the one right before its `GUESTKIT: ` prefix.
/// The serial console interleaves writers, so a kernel line can land after another process's
/// unfinished line (`...ran_ms=220[    2.815047] GUESTKIT: {...}`, seen in CI).
pub fn event_kernel_timestamp(line: &str) -> Option<f64> {
    let before = line
        .find(guest_proto::event::EVENT_PREFIX)
        .map_or(line, |at| &line[..at]);
    match before.rfind('[') {
        Some(i) => kernel_timestamp(&before[i..]),
        None => kernel_timestamp(line),
    }
}

/// Seconds from a kernel timestamp prefix `[    1.234567]` at the start of the line.
pub fn kernel_timestamp(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    let end = rest.find(']')?;
    let stamp = rest[..end].trim();
    let (secs, frac) = stamp.split_once('.')?;
    if secs.is_empty()
        || frac.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    stamp.parse().ok()
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Fatal => "FATAL",
        })
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The serde name, so text and JSON output agree.
        let name = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&name)
    }
}

impl fmt::Display for Milestone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Milestone::KernelStarted => "kernel started",
            Milestone::Userspace => "userspace started",
            Milestone::NetinitDone => "network configured (netinit done)",
            Milestone::AgentListening => "agent listening",
        })
    }
}

/// Two lines; the guest's words (subject, evidence, hint) escaped ([`Untrusted`]).
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.severity, self.cause)?;
        if let Some(s) = &self.subject {
            write!(f, " [{}]", Untrusted(s))?;
        }
        if self.line > 0 {
            write!(f, " at line {}: {}", self.line, Untrusted(&self.evidence))?;
        }
        if self.occurrences > 1 {
            write!(f, " (x{})", self.occurrences)?;
        }
        write!(f, "\n    fix: {}", Untrusted(&self.hint))
    }
}

#[cfg(test)]
#[path = "diagnose_tests.rs"]
mod tests;
