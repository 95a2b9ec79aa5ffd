//! The controller relays the OAuth redirect (issue 14 item 3): through the real
//! `guest-agent serve`, `GET /auth/callback` needs no bearer token (a browser cannot add
//! one, and a relayed redirect is a cross-site navigation with the controller's Host), but
//! only the live session whose login URL carried the `state` gets it, on its own CLI's
//! port; everything else is a 4xx naming why, and every other route still wants the token.

mod oauth_support;

use oauth_support::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

fn config(fake: &FakeOAuthServer) -> String {
    let auth = fake.authorize_url();
    format!(
        r#"
home = "{{home}}"
display = ":4242"
browser = ["{{dir}}/no-such-browser"]
shim_command = ["{{bin}}", "open-url"]
deadline_secs = 120

[providers.fake]
command = ["python3", "{{fixture}}", "--state", "relay-st4te-0123456789abcdef", "--authorize", "{auth}", "--creds", "~/.fake/creds.json"]
credential_paths = ["~/.fake/creds.json"]
required_keys = ["tokens"]
url_patterns = ['http://127\.0\.0\.1:\d+/authorize\?[^\s]+']
"#
    )
}

/// A GET as a browser following a redirect sends it: no token, another site's navigation,
/// the Host it was sent to (the controller's name).
fn browser_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: controller.example\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, body.to_string())
}

#[test]
fn the_callback_needs_no_token_but_a_live_sessions_state() {
    let fake = FakeOAuthServer::start();
    let dir = test_dir();
    let s = RealServe::start(dir.path(), &config(&fake));
    let (code, body) = s.post("/auth/fake", json!({"sessionId": "r1"}));
    assert_eq!(code, 200, "{body}");
    let r1 = s.wait_session("r1", "a URL", |v| v["oauthUrl"].is_string());
    assert!(
        r1["oauthUrl"]
            .as_str()
            .unwrap()
            .contains("state=relay-st4te-0123456789abcdef"),
        "{r1}"
    );

    // Every other route still wants the token.
    for (m, p) in [
        ("GET", "/v1/oauth/sessions"),
        ("GET", "/v1/oauth/sessions/r1"),
        ("GET", "/oauth-url?sessionId=r1"),
        ("GET", "/credentials/get?sessionId=r1"),
        ("POST", "/auth/fake"),
        ("POST", "/open-url"),
    ] {
        let (code, _) = http(s.addr, m, p, None, Some(json!({})));
        assert_eq!(code, 401, "{m} {p} without a token");
    }

    // Without the token: no state, a state nobody has, each refused naming why.
    let (code, body) = browser_get(s.addr, "/auth/callback?code=x");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no `state`"), "{body}");
    let (code, body) = browser_get(s.addr, "/auth/callback?code=x&state=guessed");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no OAuth session has this `state`"), "{body}");
    assert_eq!(
        s.wait_session("r1", "still waiting", |_| true)["state"],
        "url_ready"
    );

    // The redirect with the session's state, as the controller relays it: forwarded to
    // that session's CLI, whose answer comes back; the login completes.
    let (code, page) = browser_get(
        s.addr,
        &format!("/auth/callback?code={CODE}&state=relay-st4te-0123456789abcdef"),
    );
    assert_eq!(code, 200, "{page}\nlog:\n{}", s.log());
    s.wait_session("r1", "authenticated", |v| v["state"] == "authenticated");
    let (code, c) = s.get("/credentials/get?sessionId=r1");
    assert_eq!(code, 200, "{c}");
    assert!(c["credentials"].to_string().contains(CODE), "{c}");

    // Once ended, its state is refused, saying so.
    let (code, body) = browser_get(
        s.addr,
        "/auth/callback?code=again&state=relay-st4te-0123456789abcdef",
    );
    assert_eq!(code, 410, "{body}");
    assert!(body.contains("has ended (authenticated)"), "{body}");
}
