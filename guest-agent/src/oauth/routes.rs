//! The OAuth routes. The Node agent's paths and JSON, kept so the existing host controller
//! works unchanged, and `/v1/oauth/...` with the full session state. All of them go behind
//! the bearer token (the caller mounts [`router`] inside the guarded part); credentials
//! are only ever returned by `GET /credentials/get`.
//!
//! One exception, [`public`]: `GET /auth/callback`, the OAuth redirect the controller
//! relays from the user's browser, which cannot add a bearer token (issue 14 item 3). It is
//! mounted outside the token and outside the browser guard (the redirect *is* a cross-site
//! navigation); what protects it is the OAuth `state`: only a live session whose login URL
//! carried that `state` gets it, and only on its own CLI's callback port. Everything else is
//! a 4xx naming why: no `state` 400, a `state` no session has 404, its session ended 410,
//! its CLI takes no redirect 409.

use super::session::UrlSource;
use super::{callback, OAuth, OAuthError};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use guest_proto::api::ErrorBody;
use guest_proto::oauth::{
    AuthRequest, AuthResponse, CredentialsResponse, CredentialsStatus, OAuthUrlResponse,
    OpenUrlRequest, PasteCode, SessionState, SessionsResponse, StartSession, Waiting,
};
use std::sync::Arc;
use std::time::Duration;

/// How long `POST /auth/:provider` waits for the URL so it can be in the answer.
const START_WAIT: Duration = Duration::from_secs(5);

type Shared = Arc<OAuth>;

/// The routes, with their state applied (merge into the token-guarded router).
pub fn router<S: Clone + Send + Sync + 'static>(oauth: Arc<OAuth>) -> Router<S> {
    Router::new()
        .route("/auth/{provider}", post(auth_start))
        .route("/oauth-url", get(oauth_url))
        .route("/credentials/status", get(credentials_status))
        .route("/credentials/get", get(credentials_get))
        .route("/open-url", post(open_url))
        .route("/v1/oauth/providers", get(providers))
        .route("/v1/oauth/providers/{name}/status", get(provider_status))
        .route("/v1/oauth/sessions", get(list).post(v1_start))
        .route("/v1/oauth/sessions/{id}", get(v1_get).delete(v1_cancel))
        .route("/v1/oauth/sessions/{id}/cancel", post(v1_cancel))
        .route("/v1/oauth/sessions/{id}/code", post(v1_code))
        .with_state(oauth)
}

/// `GET /auth/callback`, to be mounted without the token and the browser guard (see the
/// module doc).
pub fn public<S: Clone + Send + Sync + 'static>(oauth: Arc<OAuth>) -> Router<S> {
    Router::new()
        .route("/auth/callback", get(auth_callback))
        .with_state(oauth)
}

#[derive(serde::Deserialize)]
struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(ErrorBody { error: msg.into() })).into_response()
}

fn oauth_error(e: OAuthError) -> Response {
    let code = match &e {
        OAuthError::UnknownProvider { .. } | OAuthError::NoSession(_) => StatusCode::NOT_FOUND,
        OAuthError::BadSessionId(_) | OAuthError::BadUrl(_) | OAuthError::Write(_) => {
            StatusCode::BAD_REQUEST
        }
        OAuthError::NoLiveSession | OAuthError::NotLive { .. } => StatusCode::CONFLICT,
        OAuthError::CredentialPath { .. } | OAuthError::Spawn { .. } | OAuthError::Io(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        // The image lacks the login user (or HOME is unusable): nothing to retry.
        OAuthError::User(_) => StatusCode::SERVICE_UNAVAILABLE,
        OAuthError::Stale(_) => StatusCode::CONFLICT,
        OAuthError::Callback(c) => match c {
            super::callback::CallbackError::NoState => StatusCode::BAD_REQUEST,
            super::callback::CallbackError::NoMatch => StatusCode::NOT_FOUND,
            super::callback::CallbackError::Ended { .. } => StatusCode::GONE,
            super::callback::CallbackError::NoListener(_) => StatusCode::CONFLICT,
        },
    };
    err(code, e.to_string())
}

/// `POST /auth/:provider {sessionId}` → `{success, sessionId, oauthUrl?}`.
async fn auth_start(
    State(o): State<Shared>,
    Path(provider): Path<String>,
    body: Option<Json<AuthRequest>>,
) -> Response {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    start_and_wait(&o, &provider, req.session_id).await
}

async fn start_and_wait(o: &Shared, provider: &str, id: Option<String>) -> Response {
    match o.start(provider, id).await {
        Ok(info) => {
            let info = o
                .wait_url(&info.session_id, START_WAIT)
                .await
                .unwrap_or(info);
            if info.state == SessionState::Failed {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(serde_json::json!({
                        "success": false,
                        "sessionId": info.session_id,
                        "error": info.reason,
                    })),
                )
                    .into_response();
            }
            Json(AuthResponse {
                success: true,
                session_id: info.session_id,
                oauth_url: info.oauth_url,
            })
            .into_response()
        }
        Err(OAuthError::Spawn {
            command,
            error,
            session,
        }) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({
                "success": false,
                "sessionId": session.session_id,
                "error": format!("cannot start `{command}`: {error}"),
            })),
        )
            .into_response(),
        Err(e) => oauth_error(e),
    }
}

/// `GET /oauth-url?sessionId=` → 200 `{oauthUrl}` / 202 `{waiting:true}`.
async fn oauth_url(State(o): State<Shared>, Query(q): Query<SessionQuery>) -> Response {
    let info = match o.get(q.session_id.as_deref()) {
        Ok(i) => i,
        Err(e) => return oauth_error(e),
    };
    match info.oauth_url {
        Some(url) => {
            o.url_handed_out(&info.session_id);
            Json(OAuthUrlResponse { oauth_url: url }).into_response()
        }
        None if info.state.is_terminal() => err(
            StatusCode::CONFLICT,
            format!(
                "session {} is {} without a URL{}",
                info.session_id,
                info.state,
                info.reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
        ),
        None => (
            StatusCode::ACCEPTED,
            Json(Waiting {
                waiting: true,
                state: Some(info.state),
            }),
        )
            .into_response(),
    }
}

/// `GET /credentials/status?sessionId=`.
async fn credentials_status(State(o): State<Shared>, Query(q): Query<SessionQuery>) -> Response {
    let info = match o.get(q.session_id.as_deref()) {
        Ok(i) => i,
        Err(e) => return oauth_error(e),
    };
    if info.state == SessionState::Authenticated {
        let modified_at = info.credentials_path.as_ref().and_then(|p| {
            // The login user owns that directory: never follow a link it planted.
            std::fs::symlink_metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .map(crate::state::rfc3339)
        });
        return Json(CredentialsStatus {
            authenticated: true,
            waiting: None,
            path: info.credentials_path,
            modified_at,
            provider: Some(info.provider),
            state: Some(info.state),
            reason: None,
        })
        .into_response();
    }
    Json(CredentialsStatus {
        authenticated: false,
        waiting: Some(!info.state.is_terminal()),
        path: None,
        modified_at: None,
        provider: Some(info.provider),
        state: Some(info.state),
        reason: info.reason,
    })
    .into_response()
}

/// `GET /credentials/get?sessionId=`: the file's JSON (only for an authenticated session).
async fn credentials_get(State(o): State<Shared>, Query(q): Query<SessionQuery>) -> Response {
    match o.credentials(q.session_id.as_deref()) {
        Ok((info, found)) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(CredentialsResponse {
                success: true,
                provider: info.provider,
                path: found.path.display().to_string(),
                modified_at: crate::state::rfc3339(found.modified),
                credentials: found.json,
            }),
        )
            .into_response(),
        Err(e) => oauth_error(e),
    }
}

/// `POST /open-url {url, sessionId}`.
async fn open_url(State(o): State<Shared>, Json(req): Json<OpenUrlRequest>) -> Response {
    match o.open_url(&req, UrlSource::Api).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => oauth_error(e),
    }
}

/// `GET /auth/callback?…&state=S` (no token): relayed to the CLI listener of the live
/// session whose login URL carried `state=S`; 400 without `state`, 404 when no session has
/// it, 410 when its session has ended, 409 when its CLI takes no redirect.
async fn auth_callback(State(o): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let (id, port, path) = match o.callback_target(q.as_deref()) {
        Ok(t) => t,
        Err(e) => return oauth_error(e),
    };
    match callback::forward(port, &path, q.as_deref()).await {
        Ok(r) => {
            tracing::info!(session = %id, port, status = %r.status, "OAuth callback relayed to the CLI");
            let mut resp = (r.status, r.body).into_response();
            let h = resp.headers_mut();
            for (name, v) in [
                (header::CONTENT_TYPE, r.content_type),
                (header::LOCATION, r.location),
            ] {
                if let Some(v) = v.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
                    h.insert(name, v);
                }
            }
            resp
        }
        Err(e) => err(StatusCode::BAD_GATEWAY, e),
    }
}

async fn providers(State(o): State<Shared>) -> Response {
    Json(serde_json::json!({
        "providers": o.config().providers.keys().collect::<Vec<_>>()
    }))
    .into_response()
}

/// `GET /v1/oauth/providers/:name/status`: the provider's own status command.
async fn provider_status(State(o): State<Shared>, Path(name): Path<String>) -> Response {
    let Some(p) = o.config().providers.get(&name) else {
        return oauth_error(OAuthError::UnknownProvider {
            name,
            known: o
                .config()
                .providers
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let user = match o.login_user() {
        Ok(u) => u,
        Err(e) => return oauth_error(e),
    };
    match super::status::run(o.config(), p, &user).await {
        Some(s) => Json(s).into_response(),
        None => err(
            StatusCode::NOT_FOUND,
            format!("provider `{name}` has no status_command"),
        ),
    }
}

async fn list(State(o): State<Shared>) -> Response {
    Json(SessionsResponse { sessions: o.list() }).into_response()
}

/// `POST /v1/oauth/sessions {provider, sessionId?}` → the session (201).
async fn v1_start(State(o): State<Shared>, Json(req): Json<StartSession>) -> Response {
    match o.start(&req.provider, req.session_id).await {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(OAuthError::Spawn { session, .. }) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(*session)).into_response()
        }
        Err(e) => oauth_error(e),
    }
}

async fn v1_get(State(o): State<Shared>, Path(id): Path<String>) -> Response {
    match o.get(Some(&id)) {
        Ok(info) => Json(info).into_response(),
        Err(e) => oauth_error(e),
    }
}

async fn v1_cancel(State(o): State<Shared>, Path(id): Path<String>) -> Response {
    if let Err(e) = o.cancel(&id, "cancelled through the API") {
        return oauth_error(e);
    }
    // Answer with the ended session (the runner ends it promptly; bounded wait).
    let mut n = 0;
    loop {
        match o.get(Some(&id)) {
            Ok(info) if info.state.is_terminal() || n >= 100 => return Json(info).into_response(),
            Ok(_) => {}
            Err(e) => return oauth_error(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        n += 1;
    }
}

async fn v1_code(
    State(o): State<Shared>,
    Path(id): Path<String>,
    Json(req): Json<PasteCode>,
) -> Response {
    match o.paste_code(&id, &req.code).await {
        Ok(info) => Json(info).into_response(),
        Err(e) => oauth_error(e),
    }
}
