//! `GET /auth/callback`: when the OAuth redirect reaches the agent instead of the CLI
//! (the host relays it), it is passed to the CLI's localhost listener, whose port and path
//! come from the login URL's `redirect_uri` (gemini picks a random port) or the provider's
//! fixed port (codex: 1455). It goes to the live session whose login URL carried the same
//! OAuth `state` (issue 12 item 6): with two logins under way, the newest one is not
//! necessarily the one the redirect belongs to, and a redirect nobody asked for goes
//! nowhere. The route needs no bearer token (a browser cannot add one, issue 14 item 3):
//! the `state`, unguessable and known only to the CLI, the provider and the user's
//! browser, is what admits a request, and it only ever reaches that session's own port.

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Largest answer relayed back.
const LIMIT: usize = 1 << 20;

/// Why a callback is not relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the callback has no `state` parameter: it cannot be matched to a login")]
    NoState,
    #[error("no OAuth session has this `state`: the redirect does not belong to a login of this agent (or that login is forgotten)")]
    NoMatch,
    #[error("the OAuth session this `state` belongs to has ended ({state}): a finished, cancelled or replaced login takes no redirect")]
    Ended { state: String },
    #[error("session `{0}` has no localhost callback to relay to (its CLI takes a pasted code)")]
    NoListener(String),
}

/// The decoded value of `name` in a query string (`a=1&b=2`), the first one.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(percent_decode)
}

/// The decoded value of query parameter `name` of `url`.
pub fn url_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query_param(query.split('#').next().unwrap_or(query), name)
}

fn unhex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `%XX` and `+` decoding of a query value.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (unhex(b[i + 1]), unhex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The CLI's callback (port, path) from a login URL's `redirect_uri`, when it points at
/// this machine (`localhost`, `127.0.0.1`, `[::1]`) with an explicit port.
pub fn target(url: &str) -> Option<(u16, String)> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    let value = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("redirect_uri="))?;
    let redirect = percent_decode(value);
    let rest = redirect.strip_prefix("http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = hostport.rsplit_once(':')?;
    if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
        return None;
    }
    let path = path.split('?').next().unwrap_or(path);
    Some((port.parse().ok()?, path.to_string()))
}

/// An answer from the CLI's listener.
pub struct Relayed {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub location: Option<String>,
    pub body: Bytes,
}

/// `GET http://127.0.0.1:PORT{path}?{query}`.
pub async fn forward(port: u16, path: &str, query: Option<&str>) -> Result<Relayed, String> {
    let uri = match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_string(),
    };
    let call = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("the CLI's callback on 127.0.0.1:{port}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::get(&uri)
            .header(header::HOST, format!("localhost:{port}"))
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, LIMIT)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let h = |n: header::HeaderName| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Ok(Relayed {
            status: parts.status,
            content_type: h(header::CONTENT_TYPE),
            location: h(header::LOCATION),
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(8), call)
        .await
        .map_err(|_| format!("the CLI's callback on 127.0.0.1:{port} did not answer"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_gives_port_and_path() {
        assert_eq!(
            target("https://accounts.google.com/o/oauth2/v2/auth?client_id=x&redirect_uri=http%3A%2F%2Flocalhost%3A4321%2Foauth2callback&state=s"),
            Some((4321, "/oauth2callback".to_string()))
        );
        assert_eq!(
            target("https://auth.openai.com/oauth/authorize?redirect_uri=http://localhost:1455/auth/callback"),
            Some((1455, "/auth/callback".to_string()))
        );
        assert_eq!(
            target("https://x/?redirect_uri=https%3A%2F%2Fconsole.anthropic.com%2Foauth%2Fcode%2Fcallback"),
            None
        );
        assert_eq!(
            target("https://x/?redirect_uri=http%3A%2F%2Fevil.com%3A80%2F"),
            None
        );
        assert_eq!(target("https://x/"), None);
    }

    #[test]
    fn state_is_read_from_the_login_url_and_the_callback() {
        let url = "https://a/authorize?client_id=x&xstate=no&state=ab%2Bc&redirect_uri=http%3A%2F%2Flocalhost%3A1%2Fcb#state=frag";
        assert_eq!(url_param(url, "state").as_deref(), Some("ab+c"));
        assert_eq!(
            query_param("code=1&state=s1", "state").as_deref(),
            Some("s1")
        );
        assert_eq!(query_param("code=1&mystate=s1", "state"), None);
        assert_eq!(url_param("https://a/authorize", "state"), None);
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
