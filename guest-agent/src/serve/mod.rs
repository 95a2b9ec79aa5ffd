//! `guest-agent serve`: the HTTP agent on :8080. Binds first (the host polls `/health`
//! from the moment the VM boots), prints a `listening` console event, then answers:
//! `/health` (the Node agent's fields, plus ours) and `/ready` open; `/metrics`,
//! `/services`, `/services/{name}/logs`, `/services/{name}/restart` (and the OAuth and WHEP
//! routes) guarded: first [`guard`] (Host, Origin, Content-Type: browsers are not clients),
//! then [`auth`] (the bearer token; no token configured = refused, unless explicitly opted
//! out). Connections are bounded by [`listener`].
//!
//! Service state comes from the supervisor's `state.json`; logs and restarts go through
//! its control socket. `/health` and `/ready` use a snapshot at most 250 ms old, so a
//! flood of health checks costs no file reads. The snapshot also asks the screen streamer
//! how it is ([`webrtc_health`]), waiting for it no more than 50 ms.
//!
//! The same routes are served over AF_VSOCK ([`vsock`], bound after TCP, never delaying it),
//! and the agent's readiness is pushed to the host over vsock when asked for ([`readiness`]).

pub mod auth;
pub mod guard;
pub mod listener;
pub mod metrics;
pub mod readiness;
pub mod readiness_watch;
mod services;
pub mod stream_proxy;
pub mod vsock;
pub mod webrtc_health;

use crate::oauth::config::OAuthConfig;
use crate::oauth::OAuth;
use crate::state::{rfc3339, StateDir};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use guest_proto::api::{
    AuthMode, ErrorBody, MemoryInfo, ReadyResponse, ServiceState, ServiceStatus, WebrtcHealth,
};
use guest_proto::{Event, Level, NetinitReport};
use metrics::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How long a `/health` snapshot is reused.
const SNAPSHOT_TTL: Duration = Duration::from_millis(250);
/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Longest a request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of `serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub token_file: PathBuf,
    pub cmdline: PathBuf,
    pub netinit_state: PathBuf,
    /// OAuth settings (`/etc/guest-agent/oauth.toml`; missing = built-in providers).
    pub oauth_config: PathBuf,
    /// Explicit opt-out of authentication (`--insecure-no-auth`).
    pub insecure_no_auth: bool,
    /// Names the agent may be called by besides its addresses and loopback (`--allowed-host`).
    pub allowed_hosts: Vec<String>,
    /// Connection cap (`--max-connections`), lowered to fit the open-file limit.
    pub max_connections: usize,
    /// `--vsock-port` / `--ready-port` (the kernel command line wins over them).
    pub vsock_flags: vsock::PortChoices,
    /// The agent's config file, for its `[serve]` table (missing file: defaults).
    pub config: PathBuf,
}

/// What `/health` and `/ready` are computed from.
struct Snapshot {
    taken: Instant,
    services: Vec<ServiceStatus>,
    /// Why readiness cannot be known or is not given; empty when ready.
    reasons: Vec<String>,
    degraded: bool,
    /// `,"network":…,"services":[…],"memory":{…},"webrtc":…}`: the part of `/health` that only
    /// changes with the snapshot, serialised once per snapshot instead of per request.
    health_tail: String,
}

/// The snapshot-dependent fields of [`HealthResponse`], in its field order.
#[derive(serde::Serialize)]
struct HealthTail<'a> {
    network: &'a Option<NetinitReport>,
    services: &'a [ServiceStatus],
    memory: &'a Option<MemoryInfo>,
    webrtc: &'a Option<WebrtcHealth>,
}

struct App {
    started: Instant,
    state_dir: StateDir,
    netinit_state: PathBuf,
    metrics: Arc<Metrics>,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Held while a snapshot is taken, so concurrent requests take one, not one each.
    refreshing: tokio::sync::Mutex<()>,
    webrtc: Arc<webrtc_health::Probe>,
    oauth: Arc<OAuth>,
    auth_mode: AuthMode,
    conns: Arc<listener::ConnStats>,
}

type Shared = Arc<App>;

/// Binds, then serves until SIGTERM/SIGINT.
pub async fn run(opts: ServeOptions) -> anyhow::Result<()> {
    let listener = listener::bind(opts.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", opts.listen))?;
    let addr = listener.local_addr()?;
    crate::console::emit(
        Level::Info,
        Event::Listening {
            addr: addr.to_string(),
        },
    );
    let loaded = auth::load(&opts.token_file, &opts.cmdline, opts.insecure_no_auth);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
        crate::console::emit(
            Level::Warn,
            Event::Warning {
                message: format!("serve: {w}"),
            },
        );
    }
    let nofile = match listener::raise_nofile() {
        Ok((before, after)) => {
            tracing::info!(before, after, "open-file limit (soft)");
            after
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit; assuming 1024");
            1024
        }
    };
    let cap = listener::effective_cap(opts.max_connections, nofile);
    let stats = Arc::new(listener::ConnStats::default());
    tracing::info!(%addr, auth = ?loaded.auth.mode(), from = %loaded.source, max_connections = cap,
        header_timeout_s = listener::HEADER_TIMEOUT.as_secs(), "serving");
    let auth_mode = loaded.auth.mode();
    let app = router(&opts, loaded.auth, stats.clone());
    let registry = listener::Registry::new(cap, stats);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let settings = vsock_settings(&opts);
    if let Some(port) = settings.listen_port {
        let (app, registry, stop) = (app.clone(), registry.clone(), stop.clone());
        // Its own task: TCP is already listening and is served below whatever this does.
        tokio::spawn(vsock::listen_and_serve(port, vsock::bind, move |l| {
            listener::serve(l, app, registry, stopped(stop))
        }));
    }
    let pusher = settings.ready_port.map(|port| {
        readiness_watch::spawn(
            readiness::VsockConnector {
                cid: vsock::HOST_CID,
                port,
            },
            readiness_watch::Sources {
                state_dir: StateDir(opts.state_dir.clone()),
                netinit_state: opts.netinit_state.clone(),
            },
            auth_mode,
            stop.clone(),
        )
    });
    listener::serve(listener, app, registry, stopped(stop)).await?;
    if let Some(p) = pusher {
        // The `shutting_down` line went out while requests drained; wait for it, bounded.
        let _ =
            tokio::time::timeout(readiness::CONNECT_TIMEOUT + readiness::WRITE_TIMEOUT, p).await;
    }
    Ok(())
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The vsock ports: command line, flags, `[serve]` of the config file, defaults; each
/// problem is one warning event.
fn vsock_settings(opts: &ServeOptions) -> vsock::VsockSettings {
    let mut warnings = Vec::new();
    let file = match crate::config::load(&opts.config) {
        Ok(c) => vsock::PortChoices {
            vsock_port: c.serve.vsock_port,
            ready_port: c.serve.ready_port,
        },
        Err(e) if e.line == 0 && !opts.config.exists() => vsock::PortChoices::default(),
        Err(e) => {
            warnings.push(format!("{e}; its [serve] vsock ports are not used"));
            vsock::PortChoices::default()
        }
    };
    let (settings, more) = vsock::VsockSettings::load(&opts.cmdline, opts.vsock_flags, file);
    warnings.extend(more);
    for w in warnings {
        tracing::warn!("{w}");
        crate::console::emit(
            Level::Warn,
            Event::Warning {
                message: format!("serve: {w}"),
            },
        );
    }
    settings
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The OAuth session manager: a bad `oauth.toml` is reported and the built-in providers
/// are used, so `/health` keeps answering. The shim's socket is bound when a runtime runs.
fn oauth_manager(opts: &ServeOptions) -> Arc<OAuth> {
    let cfg = OAuthConfig::load(&opts.oauth_config).unwrap_or_else(|e| {
        tracing::error!(error = %e, "OAuth config unusable; using the built-in providers");
        OAuthConfig::defaults()
    });
    let oauth = OAuth::new(cfg, &opts.state_dir);
    if tokio::runtime::Handle::try_current().is_ok() {
        if let Err(e) = oauth.listen_shim() {
            tracing::error!(socket = %oauth.socket_path().display(), error = %e,
                "cannot listen for the OAuth browser shim; URLs come from the CLI's output only");
        }
    }
    oauth
}

/// The full route table (public for in-process tests); `conns` feeds `/metrics`.
pub fn router(opts: &ServeOptions, auth: auth::Auth, conns: Arc<listener::ConnStats>) -> Router {
    let metrics = Arc::new(Metrics::default());
    let oauth = oauth_manager(opts);
    let app = Arc::new(App {
        started: Instant::now(),
        state_dir: StateDir(opts.state_dir.clone()),
        netinit_state: opts.netinit_state.clone(),
        metrics: metrics.clone(),
        snapshot: RwLock::new(None),
        refreshing: tokio::sync::Mutex::new(()),
        webrtc: webrtc_health::Probe::from_env(),
        oauth: oauth.clone(),
        auth_mode: auth.mode(),
        conns,
    });
    let mut names = opts.allowed_hosts.clone();
    names.extend(guard::Guard::names_from_cmdline(&opts.cmdline));
    let guard = Arc::new(guard::Guard::new(names));
    let guarded = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/services", get(services::list))
        .route("/services/{name}/logs", get(services::logs))
        .route("/services/{name}/restart", post(services::restart))
        .merge(stream_proxy::guarded())
        .merge(crate::oauth::routes::router(oauth.clone()))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(auth),
            auth::require_auth,
        ))
        // Added last, so it runs first: a page is refused whether or not it has the token.
        .route_layer(axum::middleware::from_fn_with_state(guard, guard::check));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(stream_proxy::public())
        // The OAuth redirect relay: no token, no guard; its `state` admits it (oauth::routes).
        .merge(crate::oauth::routes::public(oauth))
        .merge(guarded)
        .with_state(app)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

impl App {
    fn cached_snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|s| s.taken.elapsed() < SNAPSHOT_TTL)
            .cloned()
    }

    async fn snapshot(&self) -> Arc<Snapshot> {
        if let Some(s) = self.cached_snapshot() {
            return s;
        }
        let _one = self.refreshing.lock().await;
        if let Some(s) = self.cached_snapshot() {
            return s;
        }
        let observed = self.webrtc.observe().await;
        let fresh = Arc::new(self.take_snapshot(observed));
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
        fresh
    }

    fn take_snapshot(&self, webrtc: Option<webrtc_health::Observed>) -> Snapshot {
        let mut reasons = Vec::new();
        let services = match self.state_dir.read() {
            Ok(Some(st)) => st.services,
            Ok(None) => {
                reasons.push(format!(
                    "no supervisor state at {} (is `guest-agent supervise` running?)",
                    self.state_dir.state_file().display()
                ));
                Vec::new()
            }
            Err(e) => {
                reasons.push(format!("supervisor state unreadable: {e}"));
                Vec::new()
            }
        };
        let mut degraded = false;
        for s in services
            .iter()
            .filter(|s| s.required && s.state != ServiceState::Running)
        {
            degraded = true;
            let state = serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(String::from));
            let mut r = format!(
                "required service {} is {}",
                s.name,
                state.unwrap_or_default()
            );
            if let Some(m) = &s.message {
                r.push_str(": ");
                r.push_str(m);
            }
            reasons.push(r);
        }
        let network = std::fs::read(&self.netinit_state)
            .ok()
            .and_then(|b| serde_json::from_slice::<NetinitReport>(&b).ok());
        let memory = {
            use procfs::Current;
            procfs::Meminfo::current().ok().map(|m| MemoryInfo {
                total_bytes: m.mem_total,
                available_bytes: m.mem_available.unwrap_or(m.mem_free),
            })
        };
        let (webrtc, webrtc_reason) =
            webrtc_health::health_field(webrtc, &services, &self.webrtc.service);
        if let Some(r) = webrtc_reason {
            degraded = true;
            reasons.push(r);
        }
        let health_tail = health_tail(&network, &services, &memory, &webrtc);
        Snapshot {
            taken: Instant::now(),
            services,
            reasons,
            degraded,
            health_tail,
        }
    }
}

/// `GET /health`: the same JSON as [`HealthResponse`] (a test holds them equal), built
/// from a per-request head and the snapshot's pre-serialised tail.
async fn health(State(app): State<Shared>) -> Response {
    let snap = app.snapshot().await;
    let body = health_body(
        &snap.health_tail,
        snap.degraded,
        app.auth_mode,
        app.oauth.active_sessions(),
        SystemTime::now(),
        app.started.elapsed().as_secs_f64(),
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn health_tail(
    network: &Option<NetinitReport>,
    services: &[ServiceStatus],
    memory: &Option<MemoryInfo>,
    webrtc: &Option<WebrtcHealth>,
) -> String {
    match serde_json::to_string(&HealthTail {
        network,
        services,
        memory,
        webrtc,
    }) {
        Ok(j) => format!(",{}", &j[1..]),
        Err(e) => format!(",\"error\":{:?}}}", e.to_string()),
    }
}

fn health_body(
    tail: &str,
    degraded: bool,
    auth: AuthMode,
    active_sessions: u32,
    now: SystemTime,
    uptime: f64,
) -> String {
    let head = format!(
        r#"{{"status":"{}","timestamp":"{}","activeSessions":{},"uptimeSeconds":{},"version":"{}","auth":{}"#,
        if degraded { "degraded" } else { "ok" },
        rfc3339(now),
        active_sessions,
        // serde's float form (`1.0`, not Display's `1`), as in `HealthResponse`.
        serde_json::to_string(&uptime).unwrap_or_else(|_| "null".into()),
        env!("CARGO_PKG_VERSION"),
        serde_json::to_string(&auth).unwrap_or_else(|_| "null".into()),
    );
    let mut body = String::with_capacity(head.len() + tail.len());
    body.push_str(&head);
    body.push_str(tail);
    body
}

async fn ready(State(app): State<Shared>) -> Response {
    let snap = app.snapshot().await;
    let body = ReadyResponse {
        ready: snap.reasons.is_empty(),
        reasons: snap.reasons.clone(),
    };
    let code = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics_text(State(app): State<Shared>) -> Response {
    let mut text = app.metrics.render(
        app.started.elapsed().as_secs_f64(),
        &app.snapshot().await.services,
    );
    metrics::connection_metrics(&mut text, &app.conns);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// An error answer with the `{"error": ...}` body every route uses.
fn error(code: StatusCode, msg: String) -> Response {
    (code, Json(ErrorBody { error: msg })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_proto::api::HealthResponse;

    /// The hand-assembled `/health` is exactly what serde makes of `HealthResponse`.
    #[test]
    fn health_body_equals_the_serde_form() {
        let services = vec![ServiceStatus {
            name: "serve".into(),
            state: ServiceState::Running,
            required: true,
            pid: Some(12),
            restarts: 2,
            last_exit: Some("exit 1".into()),
            since: "2026-01-01T00:00:00.000Z".into(),
            rss_bytes: Some(4096),
            cpu_seconds: Some(0.25),
            message: Some("a \"quoted\" message".into()),
            systemd_unit: None,
        }];
        let memory = Some(MemoryInfo {
            total_bytes: 10,
            available_bytes: 5,
        });
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let webrtc = Some(WebrtcHealth {
            state: guest_proto::api::WebrtcState::Running,
            viewers: 1,
            fps: Some(29.5),
            error: Some("a \"quoted\" error".into()),
        });
        let tail = health_tail(&None, &services, &memory, &webrtc);
        let body = health_body(&tail, true, AuthMode::TokenSha256, 3, now, 12.5);
        let typed = HealthResponse {
            status: "degraded".into(),
            timestamp: "2023-11-14T22:13:20.123Z".into(),
            active_sessions: 3,
            uptime_seconds: Some(12.5),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            auth: Some(AuthMode::TokenSha256),
            network: None,
            services,
            memory,
            webrtc,
        };
        assert_eq!(body, serde_json::to_string(&typed).unwrap());
        // And with no streamer.
        let body = health_body(
            &health_tail(&None, &[], &None, &None),
            false,
            AuthMode::Disabled,
            0,
            now,
            1.0,
        );
        let typed = HealthResponse {
            status: "ok".into(),
            active_sessions: 0,
            uptime_seconds: Some(1.0),
            services: Vec::new(),
            memory: None,
            webrtc: None,
            auth: Some(AuthMode::Disabled),
            ..typed
        };
        assert_eq!(body, serde_json::to_string(&typed).unwrap());
    }
}
