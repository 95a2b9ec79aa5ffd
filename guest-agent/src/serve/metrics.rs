//! Request counters and latency per route, lock-free (atomics), and the Prometheus text
//! for `GET /metrics` (with the supervisor's per-service figures).

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use guest_proto::api::{ServiceState, ServiceStatus};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// Routes we count by name; anything else is `other`.
pub const ROUTES: [&str; 8] = [
    "/health",
    "/ready",
    "/metrics",
    "/services",
    "/services/{name}/logs",
    "/services/{name}/restart",
    "other",
    "unmatched",
];
/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 6] = [0.0005, 0.001, 0.005, 0.025, 0.1, 1.0];

#[derive(Default)]
struct RouteStats {
    /// By status class 1xx..5xx.
    by_class: [AtomicU64; 5],
    sum_us: AtomicU64,
    buckets: [AtomicU64; 6],
}

/// All counters.
#[derive(Default)]
pub struct Metrics {
    routes: [RouteStats; 8],
}

impl Metrics {
    pub fn record(&self, route: &str, status: u16, secs: f64) {
        let i = ROUTES.iter().position(|r| *r == route).unwrap_or(6);
        let r = &self.routes[i];
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        r.by_class[class].fetch_add(1, Relaxed);
        r.sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
        for (b, bound) in r.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                b.fetch_add(1, Relaxed);
            }
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self, uptime: f64, services: &[ServiceStatus]) -> String {
        let mut s = String::with_capacity(4096);
        let _ = writeln!(
            s,
            "# HELP guest_agent_uptime_seconds Seconds since this agent started."
        );
        let _ = writeln!(
            s,
            "# TYPE guest_agent_uptime_seconds gauge\nguest_agent_uptime_seconds {uptime:.3}"
        );
        let _ = writeln!(
            s,
            "# HELP guest_agent_service_up 1 when the service is running."
        );
        let _ = writeln!(s, "# TYPE guest_agent_service_up gauge");
        for v in services {
            let up = u8::from(v.state == ServiceState::Running);
            let _ = writeln!(s, "guest_agent_service_up{{service=\"{}\"}} {up}", v.name);
        }
        let _ = writeln!(
            s,
            "# HELP guest_agent_service_restarts_total Restarts by the supervisor."
        );
        let _ = writeln!(s, "# TYPE guest_agent_service_restarts_total counter");
        for v in services {
            let _ = writeln!(
                s,
                "guest_agent_service_restarts_total{{service=\"{}\"}} {}",
                v.name, v.restarts
            );
        }
        let _ = writeln!(
            s,
            "# HELP guest_agent_service_rss_bytes Resident memory of the service's process group."
        );
        let _ = writeln!(s, "# TYPE guest_agent_service_rss_bytes gauge");
        for v in services {
            if let Some(rss) = v.rss_bytes {
                let _ = writeln!(
                    s,
                    "guest_agent_service_rss_bytes{{service=\"{}\"}} {rss}",
                    v.name
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP guest_agent_service_cpu_seconds CPU time of the service's process group."
        );
        let _ = writeln!(s, "# TYPE guest_agent_service_cpu_seconds gauge");
        for v in services {
            if let Some(cpu) = v.cpu_seconds {
                let _ = writeln!(
                    s,
                    "guest_agent_service_cpu_seconds{{service=\"{}\"}} {cpu:.3}",
                    v.name
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP guest_agent_http_requests_total HTTP requests by route and status class."
        );
        let _ = writeln!(s, "# TYPE guest_agent_http_requests_total counter");
        for (route, r) in ROUTES.iter().zip(&self.routes) {
            for (c, n) in r.by_class.iter().enumerate() {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        s,
                        "guest_agent_http_requests_total{{route=\"{route}\",code=\"{}xx\"}} {n}",
                        c + 1
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "# HELP guest_agent_http_request_duration_seconds Time to answer, by route."
        );
        let _ = writeln!(
            s,
            "# TYPE guest_agent_http_request_duration_seconds histogram"
        );
        for (route, r) in ROUTES.iter().zip(&self.routes) {
            let count: u64 = r.by_class.iter().map(|n| n.load(Relaxed)).sum();
            if count == 0 {
                continue;
            }
            for (b, bound) in r.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    s,
                    "guest_agent_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    b.load(Relaxed)
                );
            }
            let _ = writeln!(s, "guest_agent_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}");
            let sum = r.sum_us.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(
                s,
                "guest_agent_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum:.6}"
            );
            let _ = writeln!(
                s,
                "guest_agent_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
        s
    }
}

/// Middleware: counts every request under its matched route.
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let t = Instant::now();
    let res = next.run(req).await;
    m.record(&route, res.status().as_u16(), t.elapsed().as_secs_f64());
    res
}

/// The listener's counters in Prometheus text.
pub fn connection_metrics(out: &mut String, c: &super::listener::ConnStats) {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    for (name, kind, help, v) in [
        (
            "guest_agent_http_connections_open",
            "gauge",
            "Open HTTP connections.",
            &c.open,
        ),
        (
            "guest_agent_http_connections_accepted_total",
            "counter",
            "HTTP connections accepted.",
            &c.accepted,
        ),
        (
            "guest_agent_http_connections_evicted_total",
            "counter",
            "Connections closed to make room under the cap (oldest of the peer holding the most).",
            &c.evicted,
        ),
        (
            "guest_agent_http_accept_errors_total",
            "counter",
            "accept() failures other than a dropped connection (EMFILE, ...).",
            &c.accept_errors,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
            v.load(Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histogram_render() {
        let m = Metrics::default();
        m.record("/health", 200, 0.0002);
        m.record("/health", 200, 0.002);
        m.record("/services", 401, 0.0001);
        let text = m.render(1.5, &[]);
        assert!(
            text.contains("guest_agent_http_requests_total{route=\"/health\",code=\"2xx\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("guest_agent_http_requests_total{route=\"/services\",code=\"4xx\"} 1")
        );
        assert!(text.contains(
            "guest_agent_http_request_duration_seconds_bucket{route=\"/health\",le=\"0.001\"} 1"
        ));
        assert!(
            text.contains("guest_agent_http_request_duration_seconds_count{route=\"/health\"} 2")
        );
        assert!(text.contains("guest_agent_uptime_seconds 1.500"));
    }
}
