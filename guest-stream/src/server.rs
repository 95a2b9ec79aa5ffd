//! The streamer's own HTTP surface, on a unix socket that `serve` proxies to (so a streamer
//! crash never takes the agent's HTTP down) and optionally on a TCP address:
//! - `POST /webrtc/whep` (WHEP, RFC 9725): SDP offer in, `201 Created` + SDP answer +
//!   `Location: /webrtc/whep/<id>` out;
//! - `DELETE /webrtc/whep/<id>`: ends that viewer;
//! - `GET /webrtc/status`: viewers, pipeline and input counters (JSON);
//! - `GET /viewer`: the plain HTML/JS viewer (static; it carries no secret, the token is given
//!   to it in the URL fragment `#token=` and sent as a bearer token on the WHEP requests).
//!
//! Everything but `/viewer` needs the agent's bearer token when one is configured.
//!
//! Viewer accounting: a WHEP POST reserves one of `max_viewers` slots atomically before any
//! SDP work (so concurrent POSTs cannot overshoot the cap) and refuses with 503 when none is
//! left. The negotiation runs in its own task that owns the slot: when the HTTP request is
//! cancelled (the client hung up) the finished peer is closed instead of being left to hold
//! the slot, a failed negotiation frees the slot when its guard drops, and a viewer that does
//! not connect within the peer options' `connect_timeout`, or whose connection fails or
//! closes later, is closed and removed.

use super::inject_thread::InputSink;
use super::peer::{self, PeerOptions, Viewer, ViewerState};
use super::pipeline::Pipeline;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{oneshot, Mutex};

/// The viewer page (no build step: one HTML file with inline JS).
pub use guest_proto::stream::VIEWER_HTML;

/// What the HTTP handlers share.
pub struct Streamer {
    pub pipeline: Pipeline,
    pub input: InputSink,
    pub peer: Mutex<PeerOptions>,
    pub max_viewers: usize,
    /// Viewer slots taken: negotiating plus registered, never above `max_viewers`.
    slots: Arc<AtomicUsize>,
    viewers: Mutex<HashMap<String, Registered>>,
    /// In controller mode, where every offer's ICE servers come from (base URL, request
    /// timeout): WHEP offers fetch them too, so their TURN credentials are as fresh as the
    /// controller's viewers' (not the list of the controller's last offer).
    ice_source: std::sync::OnceLock<(String, std::time::Duration)>,
}

/// A registered viewer with the slot it holds until it is removed.
struct Registered {
    viewer: Viewer,
    _slot: ViewerSlot,
}

/// One of the `max_viewers` slots; dropping it frees the slot.
pub struct ViewerSlot(Arc<AtomicUsize>);

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub viewers: usize,
    /// Offers being answered (each holds a viewer slot; `viewers + negotiating` never
    /// exceeds `max_viewers`).
    pub negotiating: usize,
    pub max_viewers: usize,
    pub viewer_ids: Vec<String>,
    /// Per viewer, sorted by id like `viewer_ids`.
    pub viewer_stats: Vec<ViewerStat>,
    /// Viewers' peer connections still alive in the process, including ones that left but
    /// whose webrtc-rs internals have not been released yet; 0 after all left = no leak.
    pub peers_alive: usize,
    /// Tasks alive on the streamer's tokio runtime (ours, webrtc-rs' and the HTTP
    /// connections'); it must come back to its idle level once viewers left.
    pub tasks_alive: usize,
    pub pipeline: super::pipeline::PipelineStats,
    pub input: super::inject_thread::InputStats,
}

#[derive(Debug, serde::Serialize)]
pub struct ViewerStat {
    pub id: String,
    pub connected: bool,
    /// The codec negotiated for this viewer (`h264`, `vp8`).
    pub codec: super::encode::Codec,
    pub frames_sent: u64,
}

impl Streamer {
    pub fn new(
        pipeline: Pipeline,
        input: InputSink,
        peer: PeerOptions,
        max_viewers: usize,
    ) -> Arc<Self> {
        Arc::new(Streamer {
            pipeline,
            input,
            peer: Mutex::new(peer),
            max_viewers,
            slots: Arc::new(AtomicUsize::new(0)),
            viewers: Mutex::new(HashMap::new()),
            ice_source: std::sync::OnceLock::new(),
        })
    }

    /// Fetch the ICE servers from this controller before answering any offer (set once, by
    /// controller mode).
    pub fn fetch_ice_servers_from(&self, base: String, timeout: std::time::Duration) {
        let _ = self.ice_source.set((base, timeout));
    }

    /// Refreshes the ICE servers from the controller, when there is one.
    async fn refresh_ice_servers(&self) {
        if let Some((base, t)) = self.ice_source.get() {
            super::controller::refresh_ice_servers(self, base, *t).await;
        }
    }

    pub async fn status(&self) -> Status {
        let v = self.viewers.lock().await;
        let mut ids: Vec<String> = v.keys().cloned().collect();
        ids.sort();
        let viewer_stats = ids
            .iter()
            .filter_map(|id| {
                let viewer = &v.get(id)?.viewer;
                Some(ViewerStat {
                    id: id.clone(),
                    connected: *viewer.state.borrow() == ViewerState::Connected,
                    codec: viewer.codec,
                    frames_sent: viewer.frames_sent.load(std::sync::atomic::Ordering::SeqCst),
                })
            })
            .collect();
        Status {
            viewers: v.len(),
            negotiating: self.slots.load(Ordering::SeqCst).saturating_sub(v.len()),
            max_viewers: self.max_viewers,
            viewer_ids: ids,
            viewer_stats,
            peers_alive: peer::live_peers(),
            tasks_alive: tokio::runtime::Handle::try_current()
                .map(|h| h.metrics().num_alive_tasks())
                .unwrap_or(0),
            pipeline: self.pipeline.stats(),
            input: self.input.stats(),
        }
    }

    /// Takes a viewer slot, or says the streamer is full. Atomic: of any number of
    /// concurrent callers at most `max_viewers` get one.
    pub fn reserve(&self) -> Result<ViewerSlot, AddError> {
        let max = self.max_viewers;
        self.slots
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ViewerSlot(Arc::clone(&self.slots)))
            .map_err(|_| AddError::Full(max))
    }

    /// Answers an offer and registers the viewer; it is removed when its connection ends or
    /// does not come up in time. Cancel-safe: dropping this future before it returns closes
    /// the viewer it was making.
    pub async fn add_viewer(self: &Arc<Self>, offer: String) -> Result<(String, String), AddError> {
        let slot = self.reserve()?;
        let me = Arc::clone(self);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let r = me.negotiate(offer, slot).await;
            if let Err(Ok((id, _))) = tx.send(r) {
                tracing::info!("viewer {id}: the offer's request went away; closing the peer");
                me.remove_viewer(&id).await;
            }
        });
        rx.await.unwrap_or(Err(AddError::Aborted))
    }

    async fn negotiate(
        self: &Arc<Self>,
        offer: String,
        slot: ViewerSlot,
    ) -> Result<(String, String), AddError> {
        let opts = self.peer.lock().await.clone();
        let (viewer, answer) = peer::accept_offer(offer, &self.pipeline, &self.input, &opts)
            .await
            .map_err(AddError::Peer)?;
        let id = format!("{:016x}", fastrand::u64(..));
        let mut state = viewer.state.clone();
        self.viewers.lock().await.insert(
            id.clone(),
            Registered {
                viewer,
                _slot: slot,
            },
        );
        let me = Arc::clone(self);
        let vid = id.clone();
        let limit = opts.connect_timeout;
        tokio::spawn(async move {
            let first =
                tokio::time::timeout(limit, state.wait_for(|s| *s != ViewerState::Connecting))
                    .await
                    .map(|r| r.map(|s| *s).unwrap_or(ViewerState::Gone));
            match first {
                Ok(ViewerState::Connected) => {
                    let _ = state.wait_for(|s| *s == ViewerState::Gone).await;
                }
                Ok(_) => tracing::info!("viewer {vid}: connection failed"),
                Err(_) => tracing::info!("viewer {vid}: not connected within {limit:?}"),
            }
            me.remove_viewer(&vid).await;
        });
        Ok((id, answer))
    }

    /// ICE servers for the viewers that connect from now on (controller mode).
    pub async fn set_ice_servers(&self, servers: Vec<peer::IceServer>) {
        self.peer.lock().await.ice_servers = servers;
    }

    pub async fn has_viewer(&self, id: &str) -> bool {
        self.viewers.lock().await.contains_key(id)
    }

    /// Adds a trickled remote candidate to a viewer's connection.
    pub async fn add_candidate(
        &self,
        id: &str,
        candidate: rtc::peer_connection::transport::RTCIceCandidateInit,
    ) {
        let pc = self
            .viewers
            .lock()
            .await
            .get(id)
            .map(|v| Arc::clone(&v.viewer.pc));
        if let Some(pc) = pc {
            if let Err(e) = pc.add_ice_candidate(candidate).await {
                tracing::debug!("remote candidate: {e}");
            }
        }
    }

    /// Closes a viewer; false when there was none by that id.
    pub async fn remove_viewer(&self, id: &str) -> bool {
        let v = self.viewers.lock().await.remove(id);
        match v {
            Some(Registered { viewer, _slot }) => {
                viewer.close().await;
                self.input.viewer_gone();
                // The slot frees here, once the peer is closed.
                true
            }
            None => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("already {0} viewers (max_viewers)")]
    Full(usize),
    #[error(transparent)]
    Peer(peer::PeerError),
    #[error("the negotiation task ended without an answer")]
    Aborted,
}

impl AddError {
    /// A stable code for a refusal, for frontends to branch on (the message says the rest).
    pub fn code(&self) -> &'static str {
        match self {
            AddError::Full(_) => "viewers_full",
            AddError::Peer(peer::PeerError::NoCommonCodec { .. }) => "no_common_codec",
            AddError::Peer(peer::PeerError::Offer(_)) => "bad_offer",
            AddError::Peer(_) | AddError::Aborted => "negotiation_failed",
        }
    }
}

/// The ICE servers as WHEP `Link` header values (RFC 9725 §4.6): `<URL>; rel="ice-server"`,
/// with `username`, `credential` and `credential-type="password"` when there are
/// credentials. Values with a quote, backslash or control character are left out (a header
/// must not be split or broken by a value).
pub fn ice_server_links(servers: &[peer::IceServer]) -> Vec<String> {
    let ok = |v: &str| {
        !v.chars()
            .any(|c| c == '"' || c == '\\' || c == '>' || c.is_control())
    };
    let mut out = Vec::new();
    for s in servers {
        let creds = match (&s.username, &s.credential) {
            (Some(u), Some(c)) if ok(u) && ok(c) => Some(format!(
                "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
            )),
            (None, None) => Some(String::new()),
            _ => None,
        };
        let Some(creds) = creds else { continue };
        for url in s.urls.iter().filter(|u| ok(u) && !u.contains(' ')) {
            out.push(format!("<{url}>; rel=\"ice-server\"{creds}"));
        }
    }
    out
}

/// The streamer's routes; `token` None = no check (unix socket behind `serve`).
pub fn router(streamer: Arc<Streamer>, token: Option<String>) -> Router {
    let token = Arc::new(token);
    let guarded = Router::new()
        .route("/webrtc/whep", post(whep_post))
        .route("/webrtc/whep/{id}", delete(whep_delete))
        .route("/webrtc/status", get(status))
        .with_state(Arc::clone(&streamer))
        .layer(axum::middleware::from_fn_with_state(token, require_token));
    Router::new()
        .route("/viewer", get(|| async { Html(VIEWER_HTML) }))
        .merge(guarded)
}

async fn require_token(
    State(token): State<Arc<Option<String>>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(expected) = token.as_deref() {
        let h = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !crate::auth::authorized(expected, h) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token (Authorization: Bearer <token>)\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn whep_post(State(s): State<Arc<Streamer>>, headers: HeaderMap, body: String) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/sdp") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/sdp, got {ct:?}\n"),
        )
            .into_response();
    }
    if !body.starts_with("v=0") {
        return (
            StatusCode::BAD_REQUEST,
            "body is not an SDP offer (no v=0)\n",
        )
            .into_response();
    }
    s.refresh_ice_servers().await;
    match s.add_viewer(body).await {
        Ok((id, answer)) => {
            let links = ice_server_links(&s.peer.lock().await.ice_servers);
            let mut r = (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_string()),
                    (header::LOCATION, format!("/webrtc/whep/{id}")),
                ],
                answer,
            )
                .into_response();
            for l in links {
                if let Ok(v) = header::HeaderValue::from_str(&l) {
                    r.headers_mut().append(header::LINK, v);
                }
            }
            r
        }
        Err(AddError::Full(n)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("already {n} viewers (max_viewers)\n"),
        )
            .into_response(),
        Err(AddError::Peer(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(e @ AddError::Aborted) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

async fn whep_delete(State(s): State<Arc<Streamer>>, Path(id): Path<String>) -> StatusCode {
    if s.remove_viewer(&id).await {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn status(State(s): State<Arc<Streamer>>) -> Json<Status> {
    Json(s.status().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_become_whep_link_headers() {
        let servers = vec![
            peer::IceServer {
                urls: vec!["stun:stun.example.net:3478".into()],
                username: None,
                credential: None,
            },
            peer::IceServer {
                urls: vec![
                    "turn:turn.example.net:3478?transport=udp".into(),
                    "turns:turn.example.net:5349".into(),
                ],
                username: Some("1700000000:vm-7".into()),
                credential: Some("c2VjcmV0".into()),
            },
            // A value that would break the header is left out, with its URLs.
            peer::IceServer {
                urls: vec!["turn:evil:1".into()],
                username: Some("u\"; rel=\"x".into()),
                credential: Some("c".into()),
            },
            peer::IceServer {
                urls: vec!["stun:a b".into(), "stun:ok:1".into()],
                username: None,
                credential: None,
            },
        ];
        assert_eq!(
            ice_server_links(&servers),
            vec![
                r#"<stun:stun.example.net:3478>; rel="ice-server""#.to_string(),
                r#"<turn:turn.example.net:3478?transport=udp>; rel="ice-server"; username="1700000000:vm-7"; credential="c2VjcmV0"; credential-type="password""#.to_string(),
                r#"<turns:turn.example.net:5349>; rel="ice-server"; username="1700000000:vm-7"; credential="c2VjcmV0"; credential-type="password""#.to_string(),
                r#"<stun:ok:1>; rel="ice-server""#.to_string(),
            ]
        );
    }

    #[test]
    fn refusals_have_stable_codes() {
        assert_eq!(AddError::Full(4).code(), "viewers_full");
        assert_eq!(
            AddError::Peer(peer::PeerError::NoCommonCodec { offered: vec![] }).code(),
            "no_common_codec"
        );
        assert_eq!(
            AddError::Peer(peer::PeerError::Offer("x".into())).code(),
            "bad_offer"
        );
        assert_eq!(AddError::Aborted.code(), "negotiation_failed");
    }
}
