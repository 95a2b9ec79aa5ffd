//! `serve`'s side of the streamer: forwards `/webrtc/*` to the streamer's unix socket (the
//! streamer is its own supervised process, so its crash costs the viewers their stream but
//! never the agent's HTTP), and serves the static `/viewer` page itself. The socket is
//! [`guest_proto::stream::DEFAULT_SOCKET`] unless `GUEST_AGENT_WEBRTC_SOCKET` names another.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use guest_proto::stream::SOCKET_ENV;

/// Largest request forwarded (an SDP offer is a few KiB).
const MAX_BODY: usize = 256 * 1024;

/// The streamer's socket as `serve` sees it ([`SOCKET_ENV`], else the default).
pub fn socket() -> PathBuf {
    std::env::var_os(SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(guest_proto::stream::DEFAULT_SOCKET))
}

/// Routes that need the agent's token (merge into the guarded router).
pub fn guarded<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/webrtc/whep", post(forward))
        .route("/webrtc/whep/{id}", delete(forward))
        .route("/webrtc/status", get(forward))
        .with_state(Arc::new(socket()))
}

/// The viewer page: static, no secret in it (the token arrives in the URL fragment).
pub fn public<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(
        "/viewer",
        get(|| async { Html(guest_proto::stream::VIEWER_HTML) }),
    )
}

fn unavailable(why: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
        axum::Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

async fn forward(State(sock): State<Arc<PathBuf>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")).into_response();
        }
    };
    let stream = match tokio::net::UnixStream::connect(sock.as_path()).await {
        Ok(s) => s,
        Err(e) => {
            return unavailable(format!(
                "webrtc streamer is not running ({}: {e})",
                sock.display()
            ))
        }
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return unavailable("webrtc streamer did not speak HTTP".into());
    };
    tokio::spawn(conn);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut out = hyper::Request::builder()
        .method(parts.method)
        .uri(path)
        .header(header::HOST, "webrtc");
    for name in [header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    let Ok(out) = out.body(Full::new(body)) else {
        return unavailable("cannot build the forwarded request".into());
    };
    // Answering waits for ICE gathering (capped at 2.5 s by the streamer).
    let resp = match tokio::time::timeout(Duration::from_secs(15), sender.send_request(out)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return unavailable(format!("webrtc streamer failed the request: {e}")),
        Err(_) => return unavailable("webrtc streamer did not answer within 15 s".into()),
    };
    let (rparts, rbody) = resp.into_parts();
    let bytes: Bytes = match rbody.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => return unavailable(format!("webrtc streamer response: {e}")),
    };
    let mut r = Response::builder().status(rparts.status);
    for name in [header::CONTENT_TYPE, header::LOCATION] {
        if let Some(v) = rparts.headers.get(&name) {
            r = r.header(name, v);
        }
    }
    // The WHEP answer's ICE servers (`Link: <url>; rel="ice-server"`, one header each).
    for v in rparts.headers.get_all(header::LINK) {
        r = r.header(header::LINK, v);
    }
    r.body(Body::from(bytes))
        .unwrap_or_else(|_| unavailable("bad response from the streamer".into()))
}
