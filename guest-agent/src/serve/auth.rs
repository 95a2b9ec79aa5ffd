//! The bearer token: from `/run/guest-agent/token`, else the kernel cmdline
//! `guest_agent.token=`; none configured means no check. Compared in constant time
//! (`subtle`) so the answer time says nothing about how much of a guess was right.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use guest_proto::api::ErrorBody;
use guest_proto::KernelCmdline;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Where the token came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(String),
    Cmdline,
    None,
}

/// Reads the token: the file wins; an empty file or value counts as none.
pub fn load_token(file: &Path, cmdline: &Path) -> (Option<String>, TokenSource) {
    if let Ok(text) = std::fs::read_to_string(file) {
        let t = text.trim();
        if !t.is_empty() {
            return (
                Some(t.to_string()),
                TokenSource::File(file.display().to_string()),
            );
        }
    }
    if let Ok(text) = std::fs::read_to_string(cmdline) {
        if let Some(t) = KernelCmdline::parse(&text).get("guest_agent.token") {
            if !t.is_empty() {
                return (Some(t.to_string()), TokenSource::Cmdline);
            }
        }
    }
    (None, TokenSource::None)
}

/// `true` when `header_value` is `Bearer <expected>`.
pub fn authorized(expected: &str, header_value: Option<&str>) -> bool {
    let Some(given) = header_value.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    given.trim().as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Middleware for the guarded routes.
pub async fn require_token(
    State(token): State<Arc<Option<String>>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(expected) = token.as_deref() {
        let h = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !authorized(expected, h) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(ErrorBody {
                    error: "missing or wrong bearer token (Authorization: Bearer <token>)".into(),
                }),
            )
                .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_must_match_exactly() {
        assert!(authorized("s3cret", Some("Bearer s3cret")));
        assert!(!authorized("s3cret", Some("Bearer s3cre")));
        assert!(!authorized("s3cret", Some("Bearer s3cretX")));
        assert!(!authorized("s3cret", Some("Basic s3cret")));
        assert!(!authorized("s3cret", None));
    }

    #[test]
    fn file_wins_over_cmdline_and_cmdline_is_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let cmdline = dir.path().join("cmdline");
        std::fs::write(&cmdline, "console=ttyS0 guest_agent.token=fromcmd quiet\n").unwrap();
        assert_eq!(
            load_token(&file, &cmdline),
            (Some("fromcmd".into()), TokenSource::Cmdline)
        );
        std::fs::write(&file, "fromfile\n").unwrap();
        assert_eq!(load_token(&file, &cmdline).0.as_deref(), Some("fromfile"));
        std::fs::write(&cmdline, "console=ttyS0\n").unwrap();
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(load_token(&file, &cmdline), (None, TokenSource::None));
    }
}
