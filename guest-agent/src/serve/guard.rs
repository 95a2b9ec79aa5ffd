//! Browsers are not clients: checks on every guarded request, before the token.
//!
//! The agent's callers are the host controller and CLIs; a web page open in the VM's browser
//! (or anywhere that reaches the agent) must not be able to use it, token or not:
//! - **Host** must be an address of this machine (read from its interfaces, so an address
//!   configured after `serve` started counts), a loopback name or address, or a configured
//!   name (`serve --allowed-host`, `guest_agent.allowed_hosts=a,b`). A DNS-rebinding page
//!   sends its own domain name as Host, so it is refused (403).
//! - **Origin**, when present, must be the request's own origin (`http://` + Host): the
//!   `/viewer` page is same-origin; any other page's request carries its own origin (or
//!   `null`) and is refused (403 naming it). Chromium sends Origin on every POST/PUT/PATCH/
//!   DELETE and on CORS GETs; **Sec-Fetch-Site** `cross-site`/`same-site` is refused too (it
//!   also marks top-level navigations and `<img>` GETs, which carry no Origin).
//! - A state-changing request with a body must say it is JSON (`application/json`; WHEP:
//!   `application/sdp`), which a page cannot send cross-origin without a CORS preflight
//!   (415 naming the type). Body-less POSTs (`/services/:name/restart`, cancel, a bare
//!   `/auth/:provider`) need no Content-Type: the Origin rule is what stops a page there.
//!
//! None of this applies to `/health`, `/ready` and `/viewer` (open by design).
//!
//! Over **vsock** the Host allow-list is not checked (the other checks are): DNS rebinding
//! needs a browser to resolve a name to an address and connect to it over TCP; no browser
//! can open an AF_VSOCK socket (nor Firecracker's unix socket for it on the host), so a
//! vsock request never comes from a page, and the Host a vsock client sends (`localhost`,
//! `vsock`, the VM's name) names no address to check. The bearer token is required all the
//! same ([`super::auth`] does not look at the transport).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use guest_proto::api::ErrorBody;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kernel parameter with extra names the agent may be called by, comma-separated.
pub const ALLOWED_HOSTS_PARAM: &str = "guest_agent.allowed_hosts";
/// How long the interface addresses are reused before they are read again.
const ADDRS_TTL: Duration = Duration::from_secs(1);
/// A Host that is not in the cached list triggers a re-read when the list is older than this.
const ADDRS_RECHECK: Duration = Duration::from_millis(100);

/// The checks' configuration and the cached interface addresses.
pub struct Guard {
    /// Configured names, lower case, no trailing dot.
    names: Vec<String>,
    addrs: Mutex<(Instant, Vec<IpAddr>)>,
}

/// A refused request: status and message.
type Refusal = (StatusCode, String);

impl Guard {
    /// `names`: `--allowed-host` values and those of `guest_agent.allowed_hosts=`.
    pub fn new<I: IntoIterator<Item = String>>(names: I) -> Guard {
        let names = names
            .into_iter()
            .map(|n| normalise_name(&n))
            .filter(|n| !n.is_empty())
            .collect();
        Guard {
            names,
            addrs: Mutex::new((Instant::now(), local_addrs())),
        }
    }

    /// The names from the kernel command line file `cmdline` (missing file: none).
    pub fn names_from_cmdline(cmdline: &std::path::Path) -> Vec<String> {
        let text = std::fs::read_to_string(cmdline).unwrap_or_default();
        guest_proto::KernelCmdline::parse(&text)
            .get(ALLOWED_HOSTS_PARAM)
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Whether `host` (the Host header's host part, no port) names this agent.
    fn host_allowed(&self, host: &str) -> bool {
        let host = normalise_name(host);
        if host == "localhost" || self.names.contains(&host) {
            return true;
        }
        let Some(ip) = parse_ip(&host) else {
            return false;
        };
        if ip.is_loopback() || ipv4_mapped(ip).is_some_and(|v4| v4.is_loopback()) {
            return true;
        }
        let mut cached = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
        let age = cached.0.elapsed();
        if age > ADDRS_TTL || (age > ADDRS_RECHECK && !cached.1.contains(&ip)) {
            *cached = (Instant::now(), local_addrs());
        }
        cached.1.contains(&ip) || ipv4_mapped(ip).is_some_and(|v4| cached.1.contains(&v4.into()))
    }

    /// All checks for one request over TCP.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        self.check_via(method, path, headers, false)
    }

    /// All checks for one request; `vsock`: it came over AF_VSOCK (no Host allow-list, see
    /// the module doc).
    pub fn check_via(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        vsock: bool,
    ) -> Result<(), Refusal> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                (
                    StatusCode::BAD_REQUEST,
                    "a Host header is required".to_string(),
                )
            })?;
        let (host_name, host_port) = split_host_port(host).ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("malformed Host header {host:?}"),
            )
        })?;
        if !vsock && !self.host_allowed(host_name) {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "Host {host:?} is not an address of this machine, a loopback name or a \
                     configured name (serve --allowed-host NAME, or {ALLOWED_HOSTS_PARAM}=NAME,... \
                     on the kernel command line); refused as possible DNS rebinding"
                ),
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let text = origin.to_str().unwrap_or("<not text>");
            if !same_origin(text, host_name, host_port) {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!(
                        "cross-origin request from Origin {text:?} refused: the agent's API is \
                         for the host controller and CLIs, not web pages"
                    ),
                ));
            }
        }
        if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!("request from another site (Sec-Fetch-Site: {site}) refused"),
                ));
            }
        }
        if matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            check_content_type(method, path, headers)?;
        }
        Ok(())
    }
}

/// A state-changing request with a body must carry the media type the route reads.
fn check_content_type(method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    let needed = if path == "/webrtc/whep" || path.starts_with("/webrtc/whep/") {
        "application/sdp"
    } else {
        "application/json"
    };
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    let given = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("<not text>"));
    let media = given.map(|g| {
        g.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match media {
        Some(m) if m == needed => Ok(()),
        None if !has_body => Ok(()),
        _ => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "{method} {path} with a body needs Content-Type: {needed} (got {})",
                given.map_or("none".to_string(), |g| format!("{g:?}"))
            ),
        )),
    }
}

/// Middleware for the guarded routes.
pub async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let vsock = matches!(
        req.extensions().get::<super::listener::Peer>(),
        Some(super::listener::Peer::Cid(_))
    );
    match guard.check_via(req.method(), req.uri().path(), req.headers(), vsock) {
        Ok(()) => next.run(req).await,
        Err((code, msg)) => {
            tracing::warn!(method = %req.method(), path = %req.uri().path(), status = code.as_u16(), reason = %msg, "request refused");
            (code, Json(ErrorBody { error: msg })).into_response()
        }
    }
}

fn normalise_name(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn parse_ip(host: &str) -> Option<IpAddr> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let bare = bare.unwrap_or(host);
    // A zone (`fe80::1%eth0`) does not change which address it is.
    let bare = bare.split('%').next().unwrap_or(bare);
    bare.parse().ok()
}

fn ipv4_mapped(ip: IpAddr) -> Option<std::net::Ipv4Addr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        IpAddr::V4(_) => None,
    }
}

/// `host[:port]` / `[v6][:port]` → (host, port); `None` when malformed.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.starts_with('[') {
        let end = s.find(']')?;
        let (h, rest) = s.split_at(end + 1);
        return match rest {
            "" => Some((h, None)),
            p => Some((h, Some(p.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p.parse().ok()?))),
        Some(_) => None,
        None => Some((s, None)),
    }
}

/// Whether `origin` (`scheme://host[:port]`) is the origin of a request to `host:port` over
/// plain HTTP (the agent serves no TLS).
fn same_origin(origin: &str, host: &str, port: Option<u16>) -> bool {
    let Some(rest) = origin.strip_prefix("http://") else {
        return false;
    };
    let Some((o_host, o_port)) = split_host_port(rest.trim_end_matches('/')) else {
        return false;
    };
    normalise_name(o_host) == normalise_name(host) && o_port.unwrap_or(80) == port.unwrap_or(80)
}

/// Every address of every interface (getifaddrs), IPv4 and IPv6.
fn local_addrs() -> Vec<IpAddr> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ifa in list {
        let Some(addr) = ifa.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            out.push(IpAddr::V6(v6.ip()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn code(g: &Guard, m: Method, path: &str, h: &[(&str, &str)]) -> u16 {
        match g.check(&m, path, &headers(h)) {
            Ok(()) => 200,
            Err((c, _)) => c.as_u16(),
        }
    }

    #[test]
    fn host_must_be_this_machine_loopback_or_configured() {
        let g = Guard::new(["VM-1.internal.".to_string()]);
        for ok in [
            "127.0.0.1:8080",
            "127.9.9.9",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:8080",
            "vm-1.internal:8080",
        ] {
            assert_eq!(
                code(&g, Method::GET, "/services", &[("host", ok)]),
                200,
                "{ok}"
            );
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "192.0.2.77:8080",
            "localhost.evil",
        ] {
            assert_eq!(
                code(&g, Method::GET, "/services", &[("host", bad)]),
                403,
                "{bad}"
            );
        }
        assert_eq!(code(&g, Method::GET, "/services", &[]), 400);
        assert_eq!(
            code(&g, Method::GET, "/services", &[("host", "a:b:c")]),
            400
        );
    }

    #[test]
    fn names_come_from_the_kernel_command_line_too() {
        let dir = tempfile::tempdir().unwrap();
        let cmdline = dir.path().join("cmdline");
        std::fs::write(
            &cmdline,
            "console=ttyS0 guest_agent.allowed_hosts=vm-1.internal,Other.Example. quiet\n",
        )
        .unwrap();
        let g = Guard::new(Guard::names_from_cmdline(&cmdline));
        for ok in ["vm-1.internal:8080", "other.example"] {
            assert_eq!(
                code(&g, Method::GET, "/services", &[("host", ok)]),
                200,
                "{ok}"
            );
        }
        assert_eq!(
            code(&g, Method::GET, "/services", &[("host", "vm-2.internal")]),
            403
        );
        assert!(Guard::names_from_cmdline(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn an_address_of_an_interface_is_allowed() {
        let g = Guard::new(Vec::new());
        let addrs = local_addrs();
        assert!(addrs.iter().any(|a| a.is_loopback()), "{addrs:?}");
        for a in addrs {
            let host = match a {
                IpAddr::V4(v4) => format!("{v4}:8080"),
                IpAddr::V6(v6) => format!("[{v6}]:8080"),
            };
            assert_eq!(
                code(&g, Method::GET, "/services", &[("host", &host)]),
                200,
                "{host}"
            );
        }
    }

    #[test]
    fn cross_origin_and_cross_site_are_refused_same_origin_passes() {
        let g = Guard::new(Vec::new());
        let h = ("host", "127.0.0.1:8080");
        // What Chromium sends for fetch('http://127.0.0.1:8080/...', {method:'POST',
        // mode:'no-cors'}) from a page on another origin.
        let chromium_no_cors = [
            h,
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
            ("content-length", "0"),
        ];
        for path in [
            "/services/x/restart",
            "/auth/codex",
            "/v1/oauth/sessions/a/cancel",
        ] {
            assert_eq!(
                code(&g, Method::POST, path, &chromium_no_cors),
                403,
                "{path}"
            );
        }
        // Same host, other port: another origin (a dev server in the VM).
        let other_port = [h, ("origin", "http://127.0.0.1:3000")];
        assert_eq!(
            code(&g, Method::POST, "/services/x/restart", &other_port),
            403
        );
        assert_eq!(
            code(&g, Method::POST, "/auth/codex", &[h, ("origin", "null")]),
            403
        );
        // A GET navigation from another site (no Origin) to a guarded route.
        let nav = [
            h,
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
        ];
        assert_eq!(code(&g, Method::GET, "/auth/callback", &nav), 403);
        // The /viewer page (same origin) posting its offer, and the host controller.
        let viewer = [
            h,
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/sdp"),
            ("content-length", "1234"),
        ];
        assert_eq!(code(&g, Method::POST, "/webrtc/whep", &viewer), 200);
        let controller = [("host", "localhost"), ("content-length", "0")];
        assert_eq!(
            code(&g, Method::POST, "/services/x/restart", &controller),
            200
        );
        let default_port = [("host", "localhost"), ("origin", "http://localhost:80")];
        assert_eq!(code(&g, Method::GET, "/services", &default_port), 200);
    }

    #[test]
    fn a_body_needs_the_content_type_the_route_reads() {
        let g = Guard::new(Vec::new());
        let h = ("host", "127.0.0.1:8080");
        let json = [
            h,
            ("content-type", "application/json; charset=utf-8"),
            ("content-length", "20"),
        ];
        assert_eq!(code(&g, Method::POST, "/auth/codex", &json), 200);
        let text = [
            h,
            ("content-type", "text/plain;charset=UTF-8"),
            ("content-length", "20"),
        ];
        let (c, msg) = g
            .check(&Method::POST, "/auth/codex", &headers(&text))
            .unwrap_err();
        assert_eq!(c.as_u16(), 415);
        assert!(
            msg.contains("application/json") && msg.contains("text/plain"),
            "{msg}"
        );
        let none = [h, ("content-length", "20")];
        assert_eq!(code(&g, Method::POST, "/open-url", &none), 415);
        let chunked = [h, ("transfer-encoding", "chunked")];
        assert_eq!(code(&g, Method::POST, "/open-url", &chunked), 415);
        let form = [
            h,
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-length", "3"),
        ];
        assert_eq!(code(&g, Method::POST, "/v1/oauth/sessions", &form), 415);
        // WHEP reads SDP.
        let sdp_as_json = [
            h,
            ("content-type", "application/json"),
            ("content-length", "3"),
        ];
        assert_eq!(code(&g, Method::POST, "/webrtc/whep", &sdp_as_json), 415);
        // Body-less: nothing needed (host-client's restart, DELETE of a WHEP session).
        assert_eq!(
            code(
                &g,
                Method::POST,
                "/services/x/restart",
                &[h, ("content-length", "0")]
            ),
            200
        );
        assert_eq!(code(&g, Method::DELETE, "/webrtc/whep/abc", &[h]), 200);
        // GETs are not checked for a type.
        assert_eq!(
            code(
                &g,
                Method::GET,
                "/services",
                &[h, ("content-type", "text/plain")]
            ),
            200
        );
    }

    #[test]
    fn host_and_origin_parsing() {
        assert_eq!(split_host_port("a:80"), Some(("a", Some(80))));
        assert_eq!(split_host_port("[::1]"), Some(("[::1]", None)));
        assert_eq!(split_host_port("[::1]:8"), Some(("[::1]", Some(8))));
        assert_eq!(split_host_port("a:"), None);
        assert_eq!(split_host_port("[::1]x"), None);
        assert!(same_origin("http://[::1]:8080", "[::1]", Some(8080)));
        assert!(!same_origin("https://a:8080", "a", Some(8080)));
        assert!(!same_origin("http://a:8081", "a", Some(8080)));
        assert!(!same_origin("http://a.evil:8080", "a", Some(8080)));
    }
}
