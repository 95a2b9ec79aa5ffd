//! `guestctl wait`: follows host-client's `wait_ready` and prints each step as it happens
//! (milestones from the console, the agent's own reasons, pushed readiness lines), then the
//! outcome as an exit status: 0 ready, 3 timeout, 4 diagnosed (the VM will not get there).
//! Everything quoted from the guest is escaped ([`Untrusted`]).

use super::print::to_json;
use super::{bad, runtime};
use anyhow::anyhow;
use host_client::text::Untrusted;
use host_client::wait::{Progress, ReadyVia, WaitOptions};
use host_client::{AgentAddr, WaitError};
use std::time::Instant;

/// Waits for the agent at `addr`; the exit status to end with.
pub fn wait(addr: AgentAddr, opts: &WaitOptions, json: bool) -> anyhow::Result<u8> {
    let start = Instant::now();
    let show = |p: &Progress| {
        let t = start.elapsed().as_secs_f64();
        if json {
            if let Ok(s) = to_json(p, false) {
                say!("{s}");
            }
            return;
        }
        match p {
            Progress::Milestone { entry } => {
                let kt = entry
                    .kernel_time
                    .map(|k| format!(", kernel time {k:.3}s"))
                    .unwrap_or_default();
                say!(
                    "[{t:7.2}s] {} (console line {}{kt})",
                    entry.milestone,
                    entry.line
                );
            }
            Progress::Answering { status, reasons } => {
                let reasons: Vec<_> = reasons.iter().map(|r| Untrusted(r).to_string()).collect();
                say!(
                    "[{t:7.2}s] agent answering (HTTP {status}), not ready: {}",
                    reasons.join("; ")
                );
            }
            Progress::Finding { finding } => say!("[{t:7.2}s] {finding}"),
            Progress::AnsweringOver {
                addr,
                status,
                reasons,
            } => {
                let reasons: Vec<_> = reasons.iter().map(|r| Untrusted(r).to_string()).collect();
                say!(
                    "[{t:7.2}s] agent answering over {addr} (HTTP {status}), not ready: {}",
                    reasons.join("; ")
                );
            }
            Progress::Pushed { line } => {
                let reasons: Vec<_> = line
                    .reasons
                    .iter()
                    .map(|r| Untrusted(r).to_string())
                    .collect();
                say!(
                    "[{t:7.2}s] agent pushed state {:?} (seq {}){}{}",
                    line.state,
                    line.seq,
                    if reasons.is_empty() { "" } else { ": " },
                    reasons.join("; ")
                );
            }
        }
    };
    match runtime()?.block_on(host_client::wait_ready_with(addr, opts, show)) {
        Ok(r) => {
            if json {
                let v = serde_json::json!({"result": "ready", "ready": r});
                say!("{}", to_json(&v, false)?);
            } else {
                let via = match &r.via {
                    ReadyVia::Ready { .. } => "/ready".to_string(),
                    ReadyVia::Health { ready_status, .. } => {
                        format!("/health ok (/ready answered {ready_status})")
                    }
                    ReadyVia::Pushed { line } => format!("pushed readiness line, seq {}", line.seq),
                };
                say!(
                    "[{:7.2}s] ready at {} ({via}, {} attempts)",
                    r.elapsed.as_secs_f64(),
                    r.addr,
                    r.attempts
                );
            }
            Ok(0)
        }
        Err(e) => {
            let (code, result) = match &e {
                WaitError::Timeout { .. } => (3, "timeout"),
                WaitError::Diagnosed { .. } => (4, "diagnosed"),
                WaitError::Console(_) => return Err(bad(e)),
                WaitError::Push(_) => return Err(anyhow!(e)),
            };
            if json {
                let v = serde_json::json!({
                    "result": result,
                    "error": e.to_string(),
                    "last": e.last(),
                    "findings": e.findings(),
                });
                say!("{}", to_json(&v, false)?);
            } else {
                tell!("guestctl: {e}");
                for f in e.findings() {
                    tell!("  {f}");
                }
            }
            Ok(code)
        }
    }
}
