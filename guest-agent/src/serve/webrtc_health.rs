//! The `webrtc` field of `/health`: `serve` asks the streamer `GET /webrtc/status` on its unix
//! socket when it refreshes the snapshot. The request runs in its own task; the snapshot waits
//! for it at most [`WAIT_BUDGET`] and otherwise uses the previous answer, so a hung streamer
//! never slows `/health` (it turns `down` once the request has gone unanswered for
//! [`HUNG_AFTER`]). A missing socket with no streamer service configured means "this VM has no
//! streamer" and gives `null`.

use guest_proto::api::{ServiceState, ServiceStatus, WebrtcHealth, WebrtcState};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Longest a snapshot waits for the streamer's answer.
pub const WAIT_BUDGET: Duration = Duration::from_millis(50);
/// A status request unanswered this long makes the streamer `down`.
pub const HUNG_AFTER: Duration = Duration::from_secs(2);
/// Environment variable naming the streamer's supervised service (default `webrtc`).
pub const SERVICE_ENV: &str = "GUEST_AGENT_WEBRTC_SERVICE";
/// Largest status body read.
const MAX_BODY: usize = 64 * 1024;

/// What one status request found.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    Answered(WebrtcHealth),
    /// Nothing listens on the socket (no such file, connection refused).
    Absent(String),
    /// Something is there but the answer did not come or made no sense.
    Failed(String),
}

/// The fields of the streamer's `/webrtc/status` read here.
#[derive(serde::Deserialize)]
struct StatusDoc {
    viewers: u32,
    pipeline: PipelineDoc,
}

#[derive(serde::Deserialize)]
struct PipelineDoc {
    #[serde(default)]
    fps: f32,
    #[serde(default)]
    last_error: Option<String>,
}

/// The last answer and whether a request is under way (`serve`-wide, one at a time).
pub struct Probe {
    socket: PathBuf,
    pub service: String,
    last: Mutex<Option<Observed>>,
    /// Sends `true` while a request is in flight; a snapshot waits for `false`.
    busy: watch::Sender<bool>,
}

impl Probe {
    pub fn new(socket: PathBuf, service: String) -> Arc<Probe> {
        Arc::new(Probe {
            socket,
            service,
            last: Mutex::new(None),
            busy: watch::channel(false).0,
        })
    }

    /// The socket from `GUEST_AGENT_WEBRTC_SOCKET`, the service name from [`SERVICE_ENV`].
    pub fn from_env() -> Arc<Probe> {
        let service = std::env::var(SERVICE_ENV)
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "webrtc".into());
        Probe::new(super::stream_proxy::socket(), service)
    }

    /// Starts a request unless one is under way, waits for it up to [`WAIT_BUDGET`], and
    /// returns the latest answer (None before any request finished).
    pub async fn observe(self: &Arc<Self>) -> Option<Observed> {
        let mut rx = self.busy.subscribe();
        if !*rx.borrow_and_update() {
            self.busy.send_replace(true);
            let me = Arc::clone(self);
            tokio::spawn(async move {
                let r = match tokio::time::timeout(HUNG_AFTER, fetch(&me.socket)).await {
                    Ok(r) => r,
                    Err(_) => Observed::Failed(format!(
                        "no answer on {} within {} s",
                        me.socket.display(),
                        HUNG_AFTER.as_secs()
                    )),
                };
                *me.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                me.busy.send_replace(false);
            });
        }
        let _ = tokio::time::timeout(WAIT_BUDGET, rx.wait_for(|busy| !busy)).await;
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `GET /webrtc/status` on the unix socket.
async fn fetch(socket: &std::path::Path) -> Observed {
    let stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Observed::Absent(format!("nothing listens on {}: {e}", socket.display()))
        }
        Err(e) => return Observed::Failed(format!("{}: {e}", socket.display())),
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return Observed::Failed("the streamer did not speak HTTP".into());
    };
    tokio::spawn(conn);
    let req = hyper::Request::get("/webrtc/status")
        .header(hyper::header::HOST, "webrtc")
        .body(Empty::<Bytes>::new());
    let Ok(req) = req else {
        return Observed::Failed("cannot build the status request".into());
    };
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return Observed::Failed(format!("status request failed: {e}")),
    };
    let code = resp.status();
    let body = match http_body_util::Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return Observed::Failed(format!("status body: {e}")),
    };
    if !code.is_success() {
        return Observed::Failed(format!("status request answered {code}"));
    }
    parse_status(&body)
}

/// Reads the streamer's status document.
pub fn parse_status(body: &[u8]) -> Observed {
    match serde_json::from_slice::<StatusDoc>(body) {
        Ok(d) => Observed::Answered(WebrtcHealth {
            state: WebrtcState::Running,
            viewers: d.viewers,
            fps: Some((d.pipeline.fps * 10.0).round() / 10.0),
            error: d.pipeline.last_error,
        }),
        Err(e) => Observed::Failed(format!("status document unreadable: {e}")),
    }
}

/// The `/health` field, and the readiness reason it adds: `down` with a required streamer
/// service that the supervisor calls running (when the supervisor says it is not running, its
/// own required-service reason already covers it).
pub fn health_field(
    observed: Option<Observed>,
    services: &[ServiceStatus],
    service: &str,
) -> (Option<WebrtcHealth>, Option<String>) {
    let svc = services.iter().find(|s| s.name == service);
    let down = |error: String| WebrtcHealth {
        state: WebrtcState::Down,
        viewers: 0,
        fps: None,
        error: Some(error),
    };
    let field = match observed {
        Some(Observed::Answered(h)) => return (Some(h), None),
        Some(Observed::Absent(_)) if svc.is_none() => return (None, None),
        None if svc.is_none() => return (None, None),
        Some(Observed::Absent(e)) | Some(Observed::Failed(e)) => down(e),
        None => down("no answer yet".into()),
    };
    let reason = svc
        .filter(|s| s.required && s.state == ServiceState::Running)
        .map(|s| {
            format!(
                "required service {} is running but the streamer is down: {}",
                s.name,
                field.error.as_deref().unwrap_or_default()
            )
        });
    (Some(field), reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, state: ServiceState, required: bool) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            state,
            required,
            pid: None,
            restarts: 0,
            last_exit: None,
            since: "t".into(),
            rss_bytes: None,
            cpu_seconds: None,
            message: None,
            systemd_unit: None,
        }
    }

    #[test]
    fn an_answer_gives_viewers_fps_and_the_pipeline_error() {
        let body = br#"{"viewers":2,"viewer_ids":["a","b"],"pipeline":{"running":true,"fps":29.96,"last_error":"x"},"input":{}}"#;
        let (f, reason) = health_field(Some(parse_status(body)), &[], "webrtc");
        assert_eq!(
            f,
            Some(WebrtcHealth {
                state: WebrtcState::Running,
                viewers: 2,
                fps: Some(30.0),
                error: Some("x".into()),
            })
        );
        assert_eq!(reason, None);
        assert!(matches!(
            parse_status(b"{\"viewers\":\"x\"}"),
            Observed::Failed(e) if e.contains("unreadable")
        ));
    }

    #[test]
    fn no_streamer_and_no_service_is_null_a_configured_one_is_down() {
        let absent = Some(Observed::Absent("nothing listens".into()));
        assert_eq!(health_field(absent.clone(), &[], "webrtc"), (None, None));
        let other = [svc("xvfb", ServiceState::Running, true)];
        assert_eq!(health_field(absent.clone(), &other, "webrtc"), (None, None));

        // Configured, not required, crash-looping: down, no extra reason.
        let s = [svc("webrtc", ServiceState::CrashLoop, false)];
        let (f, reason) = health_field(absent.clone(), &s, "webrtc");
        let f = f.expect("field");
        assert_eq!(f.state, WebrtcState::Down);
        assert_eq!(f.error.as_deref(), Some("nothing listens"));
        assert_eq!(reason, None);

        // Required but not running: the supervisor's reason covers it.
        let s = [svc("webrtc", ServiceState::Backoff, true)];
        assert_eq!(health_field(absent.clone(), &s, "webrtc").1, None);

        // Required, running, not answering: that is news.
        let s = [svc("webrtc", ServiceState::Running, true)];
        let hung = Some(Observed::Failed("no answer within 2 s".into()));
        let (f, reason) = health_field(hung, &s, "webrtc");
        assert_eq!(f.map(|f| f.state), Some(WebrtcState::Down));
        let reason = reason.expect("reason");
        assert!(
            reason.contains("webrtc") && reason.contains("no answer"),
            "{reason}"
        );
        // The service name is configurable.
        let s = [svc("screen", ServiceState::Running, true)];
        assert!(health_field(absent, &s, "screen").1.is_some());
    }

    #[tokio::test]
    async fn a_hung_streamer_does_not_hold_the_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("webrtc.sock");
        // Accepts connections and never answers.
        let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
        let _accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let probe = Probe::new(sock, "webrtc".into());
        // Nothing answered yet: no observation, and observe() came back without the answer.
        assert_eq!(probe.observe().await, None);
        assert!(*probe.busy.borrow(), "the request is still under way");
        // A second snapshot does not start a second request.
        assert_eq!(probe.observe().await, None);
        // After HUNG_AFTER the request gives up, and it is a failure.
        let mut busy = probe.busy.subscribe();
        let _ = busy.wait_for(|b| !b).await;
        let last = probe.last.lock().expect("last").clone();
        match last {
            Some(Observed::Failed(e)) => assert!(e.contains("no answer"), "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_missing_socket_is_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let probe = Probe::new(dir.path().join("none.sock"), "webrtc".into());
        let seen = loop {
            if let Some(o) = probe.observe().await {
                break o;
            }
        };
        assert!(matches!(seen, Observed::Absent(_)), "{seen:?}");
    }
}
