//! Findings from what the agent says about itself (`GET /health`): the other half of "what
//! state is this VM in" (failure F5: the network worked, but nobody looked at the right thing).
//! The console says how the boot went; `/health` says how the VM is now: netinit's report
//! (failure, conflicts, a silent gateway), services down or crash-looping, a screen streamer
//! that runs but does not answer, memory running out.
//!
//! Findings from here have `line` 0 and evidence starting with `GET /health:`.

use crate::client::ClientError;
use crate::diagnose::{Cause, Finding, Severity};
use crate::text::{cap, MAX_EVIDENCE, MAX_HINT, MAX_SUBJECT};
use guest_proto::api::{HealthResponse, ServiceState, WebrtcState};
use guest_proto::readiness::NetinitSummary;
use guest_proto::Outcome;

/// Below this share of total memory available, warn (the 256 MiB VMs of F7 died there).
const LOW_MEMORY_PERCENT: u64 = 10;

fn finding(
    cause: Cause,
    severity: Severity,
    subject: Option<String>,
    evidence: String,
    hint: String,
) -> Finding {
    // The agent's strings are the guest's: bounded like console evidence.
    Finding {
        cause,
        severity,
        subject: subject.map(|s| cap(&s, MAX_SUBJECT)),
        line: 0,
        evidence: cap(&format!("GET /health: {evidence}"), MAX_EVIDENCE),
        hint: cap(&hint, MAX_HINT),
        occurrences: 1,
    }
}

/// Findings in a `/health` answer, in the order: network, services, streamer, memory.
pub fn health_findings(h: &HealthResponse) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(n) = &h.network {
        if n.outcome == Outcome::Failed {
            let (class, msg) = n
                .error
                .as_ref()
                .map(|e| (e.class.clone(), e.message.clone()))
                .unwrap_or_else(|| ("unknown".into(), "no error recorded".into()));
            out.push(finding(
                Cause::NetinitFailed,
                Severity::Error,
                Some(class.clone()),
                format!("network.outcome = failed ({class}): {msg}"),
                format!("guest-netinit failed: {msg}; the agent answers, so some network works: check which source configured it"),
            ));
        }
        for c in &n.conflicts {
            out.push(finding(
                Cause::NetworkConflict,
                Severity::Warning,
                Some(c.source.clone()),
                format!("network.conflicts: {} ({})", c.source, c.detail),
                format!(
                    "{} also configures the interface; guest-netinit resolved it: {}{}",
                    c.source,
                    c.resolution,
                    c.path
                        .as_ref()
                        .map(|p| format!("; remove {p} from the image to silence it"))
                        .unwrap_or_default()
                ),
            ));
        }
        if let Some(p) = n.probe.as_ref().filter(|p| !p.ok) {
            out.push(finding(
                Cause::NetinitWarning,
                Severity::Warning,
                Some("gateway".into()),
                format!(
                    "network.probe: gateway {} did not answer{}",
                    p.target,
                    p.error
                        .as_ref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ),
                "the guest's gateway did not answer ARP at boot: check the host bridge (fcbr0) has the gateway address and the TAP is enslaved to it".into(),
            ));
        }
        for w in &n.warnings {
            out.push(finding(
                Cause::NetinitWarning,
                Severity::Warning,
                None,
                format!("network.warnings: {w}"),
                w.clone(),
            ));
        }
    }
    for s in &h.services {
        let last = s.last_exit.as_deref().unwrap_or("none yet");
        let why = s
            .message
            .as_ref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        let evidence = format!(
            "services[{}].state = {:?} (required {}, restarts {}, last exit {last}){why}",
            s.name, s.state, s.required, s.restarts
        );
        let logs = format!("read its output: GET /services/{}/logs", s.name);
        let (cause, severity, hint) = match s.state {
            ServiceState::CrashLoop => (
                Cause::ServiceCrashLoop,
                if s.required {
                    Severity::Fatal
                } else {
                    Severity::Error
                },
                format!("service {} keeps exiting ({last}); {logs}", s.name),
            ),
            ServiceState::Backoff => (
                Cause::ServiceDown,
                Severity::Warning,
                format!(
                    "service {} exited ({last}) and is about to be restarted; {logs}",
                    s.name
                ),
            ),
            ServiceState::Stopped if s.required => (
                Cause::ServiceDown,
                Severity::Error,
                format!("required service {} is stopped ({last}); {logs}", s.name),
            ),
            _ => continue,
        };
        out.push(finding(
            cause,
            severity,
            Some(s.name.clone()),
            evidence,
            hint,
        ));
    }
    // `webrtc.state = down` adds news only while its service is not already reported above
    // (down because it is crash-looping or restarting is the service finding's story).
    if let Some(w) = h.webrtc.as_ref().filter(|w| w.state == WebrtcState::Down) {
        let svc = h.services.iter().find(|s| s.name == "webrtc");
        if svc.is_none_or(|s| s.state == ServiceState::Running) {
            let error = w.error.as_deref().unwrap_or("no error given");
            out.push(finding(
                Cause::ServiceDown,
                if svc.is_some_and(|s| s.required) {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                Some("webrtc".into()),
                format!("webrtc.state = down: {error}"),
                "the screen streamer runs but does not answer on its socket, so nobody can see or use the VM's screen: read its output (GET /services/webrtc/logs) and restart it (POST /services/webrtc/restart)".into(),
            ));
        }
    }
    if let Some(m) = &h.memory {
        if m.total_bytes > 0 && m.available_bytes * 100 < m.total_bytes * LOW_MEMORY_PERCENT {
            out.push(finding(
                Cause::OutOfMemory,
                Severity::Warning,
                Some("low memory".into()),
                format!(
                    "memory: {} MiB available of {} MiB",
                    m.available_bytes >> 20,
                    m.total_bytes >> 20
                ),
                "memory is nearly exhausted: raise mem_size_mib in the VM's machine-config before the OOM killer or a panic does it for you".into(),
            ));
        }
    }
    out
}

/// What the agent says about netinit when the network did not come up, reached another way
/// (over vsock: `/health` or the pushed readiness line). `seen_in` starts the evidence
/// (`GET /health over vsock:...`, `pushed readiness line`).
///
/// Same causes and subjects as the console's `GUESTKIT:` events for the same failure, so the
/// two diagnoses agree: `netinit-failed` (subject: the failure class, fatal: the network is
/// not coming up), plus `no-network-device` (subject: the interface) for `no-device` and
/// `module-missing` (subject: the module, from the `.ko` path the message names).
/// Empty unless `network.outcome` is `failed`.
pub fn netinit_failure_findings(n: &NetinitSummary, seen_in: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    if n.outcome != Outcome::Failed {
        return out;
    }
    let (class, code, msg) = n
        .failure
        .as_ref()
        .map(|e| (e.class.clone(), e.exit_code, e.message.clone()))
        .unwrap_or_else(|| ("unknown".into(), 0, "no error recorded".into()));
    let mk = |cause, severity, subject: Option<String>, evidence: String, hint: String| Finding {
        cause,
        severity,
        subject: subject.map(|s| cap(&s, MAX_SUBJECT)),
        line: 0,
        evidence: cap(&format!("{seen_in}: {evidence}"), MAX_EVIDENCE),
        hint: cap(&hint, MAX_HINT),
        occurrences: 1,
    };
    let advice = match class.as_str() {
        "bad-config" => "; fix the ip= boot argument (build it with `guestctl bootargs`)",
        "no-device" => "; check the VM config attaches a NIC",
        "module-missing" | "module-load" => {
            "; install the guest kernel's modules (virtio_net) in the image"
        }
        _ => "",
    };
    out.push(mk(
        Cause::NetinitFailed,
        Severity::Fatal,
        Some(class.clone()),
        format!("network.outcome = failed ({class}, exit {code}): {msg}"),
        format!("guest-netinit failed ({class}, exit {code}): {msg}{advice}"),
    ));
    if class == "no-device" {
        {
            let iface = n.interface.clone().unwrap_or_else(|| "eth0".into());
            out.push(mk(
                Cause::NoNetworkDevice,
                Severity::Fatal,
                Some(iface.clone()),
                format!("network.interface = {iface}: {msg}"),
                format!("{iface} did not appear: check that the VM config attaches a NIC (Firecracker network-interfaces, QEMU -device virtio-net-pci) and that virtio_net is in the image"),
            ));
        }
    }
    // the `.ko` the message names (module-missing, module-load, or no-device explaining why)
    if let Some((module, path)) = module_in(&msg) {
        out.push(mk(
            Cause::ModuleMissing,
            Severity::Error,
            Some(module.clone()),
            msg.clone(),
            format!("{path} is not in the image: install the modules of the guest's kernel under /lib/modules/<version> (or build {module} in); `guest-netinit check --root` catches this when the image is built"),
        ));
    }
    out
}

/// The first `.ko` path in `msg` and its module name: `/lib/.../virtio_net.ko.xz` →
/// (`virtio_net`, the path).
pub(crate) fn module_in(msg: &str) -> Option<(String, String)> {
    msg.split(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | ',' | ';' | '(' | ')' | '`'))
        .map(|w| w.trim_end_matches([':', '.']))
        .find_map(|w| {
            let file = w.rsplit('/').next()?;
            let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .find_map(|ext| file.strip_suffix(ext))?;
            (!stem.is_empty()).then(|| (stem.replace('-', "_"), w.to_string()))
        })
}

/// The finding for an agent that did not answer `/health` at all.
pub fn unreachable_finding(e: &ClientError) -> Finding {
    finding(
        Cause::AgentUnreachable,
        Severity::Error,
        Some(e.class().to_string()),
        e.to_string(),
        match e.class() {
            crate::ErrorClass::Refused => "the guest kernel answers but nothing listens on the agent's port: is guest-agent running? (see the console for its crash)".into(),
            crate::ErrorClass::NoRoute | crate::ErrorClass::TimedOut => "nothing answers at this address: wrong IP, the VM's network is not configured (see netinit in the console), or the TAP is not on the bridge".into(),
            _ => "the agent answered oddly: check its version and logs".into(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netinit_failure_over_vsock_names_class_device_and_module() {
        use guest_proto::readiness::NetinitFailure;
        let sum = |class: &str, msg: &str| NetinitSummary {
            outcome: Outcome::Failed,
            interface: Some("eth0".into()),
            source: None,
            addresses: vec![],
            failure: Some(NetinitFailure {
                class: class.into(),
                exit_code: 4,
                message: msg.into(),
            }),
        };
        let f = netinit_failure_findings(
            &sum("module-missing", "virtio_net not loaded: /lib/modules/6.1.0-31-amd64/kernel/drivers/net/virtio_net.ko.xz does not exist"),
            "GET /health over vsock:/v.sock:8080",
        );
        let got: Vec<_> = f
            .iter()
            .map(|f| (f.cause, f.severity, f.subject.clone().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Cause::NetinitFailed,
                    Severity::Fatal,
                    "module-missing".into()
                ),
                (Cause::ModuleMissing, Severity::Error, "virtio_net".into()),
            ]
        );
        assert!(f[1].hint.starts_with("/lib/modules/6.1.0-31-amd64/kernel/drivers/net/virtio_net.ko.xz is not in the image"), "{}", f[1].hint);
        assert!(f[0]
            .evidence
            .starts_with("GET /health over vsock:/v.sock:8080: network.outcome = failed"));
        let f =
            netinit_failure_findings(&sum("no-device", "eth0 did not appear within 5000 ms"), "x");
        assert_eq!(f[1].cause, Cause::NoNetworkDevice);
        assert_eq!(f[1].subject.as_deref(), Some("eth0"));
        let f = netinit_failure_findings(
            &sum(
                "bad-config",
                "ip=: field 7 (autoconf) `undefined` is not off/none/dhcp",
            ),
            "x",
        );
        assert_eq!(f.len(), 1);
        assert!(f[0].hint.contains("`undefined`") && f[0].hint.contains("guestctl bootargs"));
        let mut ok = sum("x", "y");
        ok.outcome = Outcome::Configured;
        assert!(netinit_failure_findings(&ok, "x").is_empty());
    }

    fn health(json: &str) -> HealthResponse {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_healthy_answer_has_no_findings() {
        let h = health(
            r#"{"status":"ok","timestamp":"t","activeSessions":0,"memory":{"totalBytes":268435456,"availableBytes":134217728}}"#,
        );
        assert!(health_findings(&h).is_empty());
    }

    #[test]
    fn long_strings_from_the_agent_are_cut() {
        let long = "w".repeat(100_000);
        let h = health(&format!(
            r#"{{"status":"degraded","timestamp":"t","activeSessions":0,"services":[{{"name":"{long}","state":"crash-loop","required":true,"pid":null,"restarts":7,"lastExit":"{long}","since":"t","rssBytes":null,"cpuSeconds":null}}]}}"#
        ));
        let f = health_findings(&h);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].evidence.len() < MAX_EVIDENCE + 40,
            "{}",
            f[0].evidence.len()
        );
        assert!(f[0].hint.len() < MAX_HINT + 40, "{}", f[0].hint.len());
        assert!(f[0].subject.as_ref().unwrap().len() < MAX_SUBJECT + 40);
    }

    #[test]
    fn crash_loop_stopped_and_low_memory() {
        let svc = |name: &str, state: &str, required: bool| {
            format!(
                r#"{{"name":"{name}","state":"{state}","required":{required},"pid":null,"restarts":7,"lastExit":"exit 1","since":"t","rssBytes":null,"cpuSeconds":null}}"#
            )
        };
        let h = health(&format!(
            r#"{{"status":"degraded","timestamp":"t","activeSessions":0,"services":[{},{},{},{}],"memory":{{"totalBytes":268435456,"availableBytes":10485760}}}}"#,
            svc("serve", "running", true),
            svc("webrtc", "crash-loop", false),
            svc("xvfb", "stopped", true),
            svc("oauth", "crash-loop", true),
        ));
        let got: Vec<_> = health_findings(&h)
            .into_iter()
            .map(|f| (f.cause, f.severity, f.subject.unwrap_or_default()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Cause::ServiceCrashLoop, Severity::Error, "webrtc".into()),
                (Cause::ServiceDown, Severity::Error, "xvfb".into()),
                (Cause::ServiceCrashLoop, Severity::Fatal, "oauth".into()),
                (Cause::OutOfMemory, Severity::Warning, "low memory".into()),
            ]
        );
    }

    #[test]
    fn a_streamer_that_runs_but_does_not_answer_is_reported_once() {
        let with = |state: &str, webrtc: &str| {
            health(&format!(
                r#"{{"status":"ok","timestamp":"t","activeSessions":0,"services":[{{"name":"webrtc","state":"{state}","required":true,"pid":null,"restarts":0,"lastExit":null,"since":"t","rssBytes":null,"cpuSeconds":null}}],"webrtc":{webrtc}}}"#
            ))
        };
        let down = r#"{"state":"down","viewers":0,"fps":null,"error":"no answer within 2 s"}"#;
        let f = health_findings(&with("running", down));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            (f[0].cause, f[0].severity, f[0].subject.as_deref()),
            (Cause::ServiceDown, Severity::Error, Some("webrtc"))
        );
        assert!(f[0].evidence.contains("no answer within 2 s"), "{f:?}");
        // Crash-looping: the service finding alone.
        let f = health_findings(&with("crash-loop", down));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].cause, Cause::ServiceCrashLoop);
        // Running and answering, or no streamer at all: nothing.
        let up = r#"{"state":"running","viewers":1,"fps":30.0,"error":null}"#;
        assert!(health_findings(&with("running", up)).is_empty());
        assert!(health_findings(&with("running", "null")).is_empty());
    }
}
