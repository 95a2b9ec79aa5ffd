//! Who may use the guarded routes. Fails closed: with no token configured and no explicit
//! opt-out, every guarded request is refused (503, saying how to configure one).
//!
//! Where the token comes from, first match wins:
//! 1. the token file (`/run/guest-agent/token`, root-only), in clear;
//! 2. `guest_agent.token_sha256=<64 hex>` on the kernel command line: the SHA-256 of the
//!    token, so the serial console, `/proc/cmdline` and the host's process list only ever show
//!    the hash (the recommended form for the command line); a malformed value refuses every
//!    request (it never falls back to "open");
//! 3. `guest_agent.token=` in clear (kept for existing controllers; warned about);
//! 4. the opt-out `serve --insecure-no-auth` or `guest_agent.auth=none`: no check at all,
//!    reported in `/health` as `auth: "none"` and warned about on the console.
//!
//! The presented bearer is hashed and the digests compared in constant time (`subtle`), for
//! clear tokens too, so neither the answer time nor the token's length leaks.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use guest_proto::api::{AuthMode, ErrorBody};
use guest_proto::KernelCmdline;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Kernel parameter with the token in clear.
pub const TOKEN_PARAM: &str = "guest_agent.token";
/// Kernel parameter with the token's SHA-256 (hex).
pub const TOKEN_SHA256_PARAM: &str = "guest_agent.token_sha256";
/// Kernel parameter of the opt-out: `guest_agent.auth=none`.
pub const AUTH_PARAM: &str = "guest_agent.auth";

/// How to configure a token; part of every "no token" answer and warning.
pub const HOW_TO_CONFIGURE: &str = "configure a token: write it to the token file \
(serve --token-file, default /run/guest-agent/token), or put guest_agent.token_sha256=<hex \
SHA-256 of the token> on the kernel command line; or opt out of authentication explicitly \
with `serve --insecure-no-auth` or guest_agent.auth=none";

/// The access policy of the guarded routes. `Debug` never shows a token or a digest.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// SHA-256 of the expected bearer; `mode` says whether it was given in clear or hashed.
    Bearer { digest: [u8; 32], mode: AuthMode },
    /// Explicit opt-out: no check.
    Disabled,
    /// Nothing configured: refuse all.
    Unconfigured,
    /// Unusable configuration: refuse all, saying why.
    Invalid(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Invalid(why) => write!(f, "Invalid({why:?})"),
            other => write!(f, "{:?}", other.mode()),
        }
    }
}

/// What [`load`] found: the policy, where it came from, and warnings for the console.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub auth: Auth,
    /// "token file /run/guest-agent/token", "kernel command line guest_agent.token_sha256", ...
    pub source: String,
    pub warnings: Vec<String>,
}

impl Auth {
    /// A clear token (empty = none configured, which refuses all).
    pub fn token(token: &str) -> Auth {
        if token.is_empty() {
            return Auth::Unconfigured;
        }
        Auth::Bearer {
            digest: sha256(token.as_bytes()),
            mode: AuthMode::Token,
        }
    }

    /// A hex SHA-256 (`guest_agent.token_sha256=`); malformed = [`Auth::Invalid`] naming it.
    pub fn sha256_hex(hex: &str) -> Auth {
        match parse_hex32(hex) {
            Some(digest) => Auth::Bearer {
                digest,
                mode: AuthMode::TokenSha256,
            },
            None => Auth::Invalid(format!(
                "{TOKEN_SHA256_PARAM} must be 64 hex digits (the SHA-256 of the token, e.g. \
                 from `printf %s TOKEN | sha256sum`), got {} characters; every guarded \
                 request is refused until it is fixed",
                hex.chars().count()
            )),
        }
    }

    /// What `/health` says.
    pub fn mode(&self) -> AuthMode {
        match self {
            Auth::Bearer { mode, .. } => *mode,
            Auth::Disabled => AuthMode::Disabled,
            Auth::Unconfigured => AuthMode::Unconfigured,
            Auth::Invalid(_) => AuthMode::Invalid,
        }
    }

    /// Whether a request with this `Authorization` header value may pass; the refusal
    /// (status, message) otherwise.
    pub fn check(&self, header_value: Option<&str>) -> Result<(), (StatusCode, String)> {
        match self {
            Auth::Disabled => Ok(()),
            Auth::Unconfigured => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("this agent has no API token, so it refuses every request but /health, /ready and /viewer; {HOW_TO_CONFIGURE}"),
            )),
            Auth::Invalid(why) => Err((StatusCode::SERVICE_UNAVAILABLE, why.clone())),
            Auth::Bearer { digest, .. } => {
                let given = header_value.and_then(|h| h.strip_prefix("Bearer "));
                match given {
                    Some(g) if bool::from(sha256(g.trim().as_bytes()).ct_eq(digest)) => Ok(()),
                    _ => Err((
                        StatusCode::UNAUTHORIZED,
                        "missing or wrong bearer token (Authorization: Bearer <token>)".into(),
                    )),
                }
            }
        }
    }
}

/// Reads the policy: token file, then `guest_agent.token_sha256=`, then `guest_agent.token=`,
/// then the opt-out (`insecure_flag` or `guest_agent.auth=none`), else unconfigured.
pub fn load(file: &Path, cmdline: &Path, insecure_flag: bool) -> Loaded {
    let mut warnings = Vec::new();
    let params = std::fs::read_to_string(cmdline)
        .map(|t| KernelCmdline::parse(&t))
        .unwrap_or_else(|_| KernelCmdline::parse(""));
    let opt_out_param = match params.get(AUTH_PARAM) {
        None => false,
        Some("none") => true,
        Some(other) => {
            warnings.push(format!(
                "{AUTH_PARAM}={other:?} is not understood (only `none` is); ignored"
            ));
            false
        }
    };
    let configured = from_file_or_cmdline(file, &params, &mut warnings);
    match configured {
        Some((auth, source)) => {
            if insecure_flag || opt_out_param {
                warnings.push(
                    "a token is configured, so the opt-out (--insecure-no-auth / \
                     guest_agent.auth=none) is ignored"
                        .into(),
                );
            }
            Loaded {
                auth,
                source,
                warnings,
            }
        }
        None if insecure_flag || opt_out_param => {
            let how = if insecure_flag {
                "--insecure-no-auth"
            } else {
                "guest_agent.auth=none"
            };
            warnings.push(format!(
                "authentication is OFF ({how}): anyone who can reach this agent may read \
                 credentials, start logins and restart services; {HOW_TO_CONFIGURE}"
            ));
            Loaded {
                auth: Auth::Disabled,
                source: how.into(),
                warnings,
            }
        }
        None => {
            warnings.push(format!(
                "no API token: every guarded route answers 503; {HOW_TO_CONFIGURE}"
            ));
            Loaded {
                auth: Auth::Unconfigured,
                source: "none".into(),
                warnings,
            }
        }
    }
}

fn from_file_or_cmdline(
    file: &Path,
    params: &KernelCmdline,
    warnings: &mut Vec<String>,
) -> Option<(Auth, String)> {
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => {
            return Some((
                Auth::token(text.trim()),
                format!("token file {}", file.display()),
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // Present but unreadable: refuse rather than fall through to something weaker.
        Err(e) => {
            return Some((
                Auth::Invalid(format!(
                    "token file {} unreadable ({e}); every guarded request is refused",
                    file.display()
                )),
                format!("token file {}", file.display()),
            ))
        }
    }
    if let Some(hex) = params.get(TOKEN_SHA256_PARAM) {
        if params.get(TOKEN_PARAM).is_some() {
            warnings.push(format!(
                "both {TOKEN_SHA256_PARAM} and {TOKEN_PARAM} are set; the hash is used"
            ));
        }
        return Some((
            Auth::sha256_hex(hex),
            format!("kernel command line {TOKEN_SHA256_PARAM}"),
        ));
    }
    match params.get(TOKEN_PARAM) {
        Some(t) if !t.is_empty() => {
            warnings.push(format!(
                "the token is in clear on the kernel command line ({TOKEN_PARAM}=), readable in \
                 /proc/cmdline by every process and shown on the console; prefer \
                 {TOKEN_SHA256_PARAM}=<hex SHA-256 of the token>"
            ));
            Some((Auth::token(t), format!("kernel command line {TOKEN_PARAM}")))
        }
        _ => None,
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.trim().as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn refuse(code: StatusCode, msg: String) -> Response {
    let mut r = (code, Json(ErrorBody { error: msg })).into_response();
    if code == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// Middleware for the guarded routes.
pub async fn require_auth(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let h = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.check(h) {
        Ok(()) => next.run(req).await,
        Err((code, msg)) => refuse(code, msg),
    }
}

/// The same for a clear token given as `Option` (test harnesses); `None` refuses all.
pub async fn require_token(
    State(token): State<Arc<Option<String>>>,
    req: Request,
    next: Next,
) -> Response {
    let auth = Auth::token(token.as_deref().unwrap_or(""));
    require_auth(State(Arc::new(auth)), req, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn nothing_configured_refuses_everyone_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let l = load(&dir.path().join("none"), &dir.path().join("none"), false);
        assert_eq!(l.auth, Auth::Unconfigured);
        let (code, msg) = l.auth.check(Some("Bearer anything")).unwrap_err();
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        for needle in [
            "token file",
            "guest_agent.token_sha256",
            "--insecure-no-auth",
        ] {
            assert!(msg.contains(needle), "{msg}");
        }
        assert_eq!(l.auth.check(None).unwrap_err().0, code);
        assert_eq!(l.auth.mode(), AuthMode::Unconfigured);
    }

    #[test]
    fn the_opt_out_is_explicit_flag_or_kernel_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("none");
        let l = load(&none, &none, true);
        assert_eq!(l.auth, Auth::Disabled);
        assert!(l.auth.check(None).is_ok());
        assert!(l
            .warnings
            .iter()
            .any(|w| w.contains("authentication is OFF")));
        let cmd = write(
            dir.path(),
            "cmdline",
            "console=ttyS0 guest_agent.auth=none\n",
        );
        assert_eq!(load(&none, &cmd, false).auth.mode(), AuthMode::Disabled);
        // Anything else is not an opt-out.
        let cmd = write(dir.path(), "cmdline", "guest_agent.auth=off\n");
        let l = load(&none, &cmd, false);
        assert_eq!(l.auth, Auth::Unconfigured);
        assert!(l.warnings.iter().any(|w| w.contains("not understood")));
        // A configured token wins over the opt-out.
        let file = write(dir.path(), "token", "t0k\n");
        let l = load(&file, &none, true);
        assert_eq!(l.auth.mode(), AuthMode::Token);
        assert!(l.auth.check(None).is_err());
    }

    #[test]
    fn file_wins_over_cmdline_and_cmdline_is_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let cmdline = write(
            dir.path(),
            "cmdline",
            "console=ttyS0 guest_agent.token=fromcmd quiet\n",
        );
        let l = load(&file, &cmdline, false);
        assert!(l.auth.check(Some("Bearer fromcmd")).is_ok());
        assert!(l.warnings.iter().any(|w| w.contains("in clear")));
        std::fs::write(&file, "fromfile\n").unwrap();
        let l = load(&file, &cmdline, false);
        assert!(l.auth.check(Some("Bearer fromfile")).is_ok());
        assert!(l.auth.check(Some("Bearer fromcmd")).is_err());
        std::fs::write(&cmdline, "console=ttyS0\n").unwrap();
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(load(&file, &cmdline, false).auth, Auth::Unconfigured);
    }

    #[test]
    fn the_hash_on_the_cmdline_checks_the_bearer() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("none");
        // `printf %s s3cret | sha256sum`
        let hex = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";
        assert_eq!(to_hex(&sha256(b"s3cret")), hex);
        let cmd = write(
            dir.path(),
            "cmdline",
            &format!(
                "console=ttyS0 guest_agent.token_sha256={} quiet",
                hex.to_uppercase()
            ),
        );
        let l = load(&none, &cmd, false);
        assert_eq!(l.auth.mode(), AuthMode::TokenSha256);
        assert!(l.auth.check(Some("Bearer s3cret")).is_ok());
        assert!(l.auth.check(Some("Bearer s3cret ")).is_ok(), "trimmed");
        assert_eq!(
            l.auth.check(Some("Bearer s3cre")).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        // The hash itself is not the token.
        assert!(l.auth.check(Some(&format!("Bearer {hex}"))).is_err());
        // Nothing secret in Debug.
        assert_eq!(format!("{:?}", l.auth), "TokenSha256");
        assert!(!format!("{l:?}").contains(&hex[..16]));
    }

    #[test]
    fn a_malformed_hash_fails_closed_naming_the_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("none");
        for bad in ["abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            let cmd = write(
                dir.path(),
                "cmdline",
                &format!(
                    "guest_agent.token_sha256={bad} guest_agent.auth=none guest_agent.token=x"
                ),
            );
            let l = load(&none, &cmd, true);
            assert_eq!(l.auth.mode(), AuthMode::Invalid, "{bad}");
            let (code, msg) = l.auth.check(Some("Bearer x")).unwrap_err();
            assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
            assert!(msg.contains("guest_agent.token_sha256"), "{msg}");
        }
    }

    fn to_hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
