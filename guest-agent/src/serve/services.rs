//! `/services`, `/services/{name}/logs` and `/services/{name}/restart`: the supervisor's view
//! of its services. The list is read from `state.json`; logs and restarts are passed to the
//! supervisor's control socket, which owns the services (serve never signals a process).

use super::{error, App, Shared};
use crate::supervisor::control;
use axum::extract::{Path, Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use guest_proto::api::ServicesResponse;

pub(super) async fn list(State(app): State<Shared>) -> Response {
    match app.state_dir.read() {
        Ok(Some(st)) => Json(ServicesResponse {
            services: st.services,
        })
        .into_response(),
        Ok(None) => Json(ServicesResponse {
            services: Vec::new(),
        })
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct LinesQuery {
    lines: Option<usize>,
}

pub(super) async fn logs(
    State(app): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<LinesQuery>,
) -> Response {
    let n = q.lines.unwrap_or(100).min(control::MAX_LINES);
    let path = format!("/logs/{}?lines={n}", encode_segment(&name));
    forward(&app, Method::GET, &path).await
}

pub(super) async fn restart(State(app): State<Shared>, Path(name): Path<String>) -> Response {
    let path = format!("/restart/{}", encode_segment(&name));
    forward(&app, Method::POST, &path).await
}

/// Passes a request to the supervisor's control socket and its answer back.
async fn forward(app: &App, method: Method, path: &str) -> Response {
    match control::request(&app.state_dir.control_socket(), method, path).await {
        Ok((code, body)) => {
            (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Service names are `[A-Za-z0-9_.-]` (config enforces it); anything else is escaped.
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
