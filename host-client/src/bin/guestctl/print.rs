//! guestctl's human output of health, diagnose and tap gc, and its JSON: every string that
//! came from the guest is escaped ([`Untrusted`] for one-line fields, `say!` for the rest).

use host_client::tap;
use host_client::text::Untrusted;

/// JSON for the terminal: `host_client::text::to_json` (DEL, C1 and bidi controls escaped
/// as `\u....`, which serde_json leaves raw).
pub fn to_json<T: serde::Serialize + ?Sized>(value: &T, pretty: bool) -> anyhow::Result<String> {
    Ok(host_client::text::to_json(value, pretty)?)
}

pub fn print_health(h: &guest_proto::api::HealthResponse) {
    say!("status: {}", Untrusted(&h.status));
    if let Some(v) = &h.version {
        say!("version: {}", Untrusted(v));
    }
    if let Some(u) = h.uptime_seconds {
        say!("uptime: {u:.0}s");
    }
    say!("active sessions: {}", h.active_sessions);
    if let Some(m) = &h.memory {
        say!(
            "memory: {} MiB available of {} MiB",
            m.available_bytes >> 20,
            m.total_bytes >> 20
        );
    }
    if let Some(n) = &h.network {
        let addrs: Vec<String> = n
            .addresses
            .iter()
            .map(|a| format!("{}/{}", a.address, a.prefix_len))
            .collect();
        say!(
            "network: {:?} on {} {}",
            n.outcome,
            Untrusted(n.interface.as_deref().unwrap_or("-")),
            addrs.join(" ")
        );
        for c in &n.conflicts {
            say!(
                "  conflict: {} {}: {}",
                Untrusted(&c.source),
                Untrusted(&c.detail),
                Untrusted(&c.resolution)
            );
        }
    }
    for s in &h.services {
        say!(
            "service {}: {:?} (restarts {}, last exit {})",
            Untrusted(&s.name),
            s.state,
            s.restarts,
            Untrusted(s.last_exit.as_deref().unwrap_or("-"))
        );
    }
}

pub fn print_diagnosis(findings: &[host_client::Finding], timeline: &[host_client::TimelineEntry]) {
    if timeline.is_empty() {
        say!("boot: no milestone seen");
    }
    for e in timeline {
        let kt = e
            .kernel_time
            .map(|k| format!(" at {k:.3}s"))
            .unwrap_or_default();
        say!("boot: {} (line {}{kt})", e.milestone, e.line);
    }
    if findings.is_empty() {
        say!("no problems found");
    }
    for f in findings {
        say!("{f}");
    }
}

pub fn print_gc(r: &tap::GcReport) {
    if r.devices.is_empty() {
        say!("no TUN/TAP devices");
    }
    for d in &r.devices {
        let who: Vec<String> = d
            .holders
            .iter()
            .map(|h| format!("{} ({})", h.pid, h.comm))
            .collect();
        let state = if d.is_stale() {
            "STALE".to_string()
        } else {
            format!("held by {}", who.join(", "))
        };
        say!(
            "{:15} {} {}{} {state}",
            d.name,
            d.kind,
            if d.persistent { "persistent " } else { "" },
            d.master
                .as_deref()
                .map(|m| format!("on {m}"))
                .unwrap_or_default()
        );
    }
    if !r.applied && !r.stale.is_empty() {
        say!("dry run: would remove {} (use --apply)", r.stale.join(" "));
    }
    for n in &r.removed {
        say!("removed {n}");
    }
    for (n, e) in &r.failed {
        tell!("could not remove {n}: {e}");
    }
}
