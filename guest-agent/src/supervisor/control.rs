//! The control socket (`control.sock` in the state dir): what `serve` asks the supervisor
//! for that a state file cannot give — a service's log ring, and restarts. HTTP/1 over a
//! unix socket (axum on the server side, hyper on the client) so the JSON bodies are the
//! public API types and `serve` passes answers straight through.
//!
//! Routes: `GET /logs/{name}?lines=N` → `LogsResponse`, `POST /restart/{name}` →
//! `RestartResponse`; errors are `ErrorBody` with 404/503.

use super::Shared;
use crate::config::Run;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use guest_proto::api::{ErrorBody, LogsResponse, RestartResponse};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use std::sync::Arc;

/// Most lines one request returns.
pub const MAX_LINES: usize = 10_000;

#[derive(serde::Deserialize)]
struct LinesQuery {
    lines: Option<usize>,
}

fn error(code: StatusCode, msg: String) -> Response {
    (code, Json(ErrorBody { error: msg })).into_response()
}

/// Serves the control socket until the process ends.
pub async fn serve(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    let app = axum::Router::new()
        .route("/logs/{name}", axum::routing::get(logs))
        .route("/restart/{name}", axum::routing::post(restart))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("control socket: {e}");
    }
}

async fn logs(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<LinesQuery>,
) -> Response {
    let Some(slot) = shared.slot(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no service named `{name}`"));
    };
    let n = q.lines.unwrap_or(100).min(MAX_LINES);
    let lines = slot.logs.lock().unwrap_or_else(|p| p.into_inner()).tail(n);
    Json(LogsResponse {
        service: name,
        lines,
    })
    .into_response()
}

async fn restart(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let Some(slot) = shared.slot(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no service named `{name}`"));
    };
    match &slot.spec.run {
        Run::Command { .. } => match slot.restart_tx.try_send(()) {
            Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                Json(RestartResponse {
                    service: name,
                    action: "restarted".into(),
                })
                .into_response()
            }
            Err(_) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "supervisor is shutting down".into(),
            ),
        },
        Run::SystemdUnit(unit) => match shared.systemd.restart(unit).await {
            Ok(()) => Json(RestartResponse {
                service: name,
                action: "restart-unit-queued".into(),
            })
            .into_response(),
            Err(e) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot restart {unit}: {e}"),
            ),
        },
    }
}

/// One request to the control socket; returns status and body bytes.
pub async fn request(
    socket: &std::path::Path,
    method: hyper::Method,
    path: &str,
) -> Result<(StatusCode, Bytes), String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("supervisor control socket {}: {e}", socket.display()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "supervisor")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let out = async {
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    conn.abort();
    out
}
