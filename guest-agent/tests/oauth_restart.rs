//! Sessions across a restart of `serve` (issue 14 item 4): `kill -9` of the real serve
//! during a login, then serve again on the same state directory. The host asking about the
//! earlier sessions gets them, the live one ended ("the agent restarted"), never a 404 that
//! reads like a wrong id; an authenticated one still hands out its credentials; new logins
//! work beside them.

mod oauth_support;

use oauth_support::*;
use serde_json::json;

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
command = ["python3", "{{fixture}}", "--state", "before-restart", "--authorize", "{auth}", "--creds", "~/.fake/creds.json"]
credential_paths = ["~/.fake/creds.json"]
required_keys = ["tokens"]
url_patterns = ['http://127\.0\.0\.1:\d+/authorize\?[^\s]+']

[providers.other]
command = ["python3", "{{fixture}}", "--state", "done-before", "--authorize", "{auth}", "--creds", "~/.other/creds.json"]
credential_paths = ["~/.other/creds.json"]
required_keys = ["tokens"]
url_patterns = ['http://127\.0\.0\.1:\d+/authorize\?[^\s]+']
"#
    )
}

#[test]
fn earlier_sessions_are_ended_by_the_restart_not_forgotten() {
    let fake = FakeOAuthServer::start();
    let dir = test_dir();
    let d = dir.path();
    let s = RealServe::start(d, &config(&fake));
    // One login completed, one under way when serve dies.
    let (code, body) = s.post("/auth/other", json!({"sessionId": "done"}));
    assert_eq!(code, 200, "{body}");
    s.wait_session("done", "a URL", |v| v["oauthUrl"].is_string());
    let (code, page) = s.get(&format!("/auth/callback?code={CODE}&state=done-before"));
    assert_eq!(code, 200, "{page}");
    s.wait_session("done", "authenticated", |v| v["state"] == "authenticated");
    let (code, body) = s.post("/auth/fake", json!({"sessionId": "live"}));
    assert_eq!(code, 200, "{body}");
    let before = s.wait_session("live", "a URL", |v| v["oauthUrl"].is_string());
    s.kill9();

    let s = RealServe::start(d, &config(&fake));
    let (code, live) = s.get("/v1/oauth/sessions/live");
    assert_eq!(code, 200, "{live}\nlog:\n{}", s.log());
    assert_eq!(live["state"], "failed", "{live:#}");
    assert_eq!(live["reason"], "the agent restarted", "{live:#}");
    assert_eq!(live["oauthUrl"], before["oauthUrl"]);
    assert_eq!(live["createdAt"], before["createdAt"]);
    let states: Vec<&str> = live["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["starting", "url_ready", "failed"], "{live:#}");
    // The old controller's routes say the same.
    let (code, st) = s.get("/credentials/status?sessionId=live");
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["authenticated"], false);
    assert_eq!(st["waiting"], false);
    assert_eq!(st["reason"], "the agent restarted");
    let (code, e) = s.get("/oauth-url?sessionId=live");
    assert_eq!(code, 200, "the URL it had is still answered: {e}");
    let (code, e) = s.post("/v1/oauth/sessions/live/code", json!({"code": "x"}));
    assert_eq!(code, 409, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("the agent restarted"),
        "{e}"
    );
    // Its redirect, arriving late, is told the session ended.
    let (code, e) = http(
        s.addr,
        "GET",
        "/auth/callback?code=x&state=before-restart",
        None,
        None,
    );
    assert_eq!(code, 410, "{e}");

    // The completed login is as it was, credentials included.
    let (code, done) = s.get("/v1/oauth/sessions/done");
    assert_eq!(code, 200, "{done}");
    assert_eq!(done["state"], "authenticated", "{done:#}");
    let (code, c) = s.get("/credentials/get?sessionId=done");
    assert_eq!(code, 200, "{c}");
    assert!(c["credentials"].to_string().contains(CODE), "{c}");

    // A new login (same provider, same id) works beside them.
    let (code, body) = s.post("/auth/fake", json!({"sessionId": "live"}));
    assert_eq!(code, 200, "{body}");
    let again = s.wait_session("live", "a new URL", |v| {
        v["oauthUrl"].is_string() && v["state"] != "failed"
    });
    assert_ne!(again["createdAt"], before["createdAt"]);
    let (_, all) = s.get("/v1/oauth/sessions");
    assert_eq!(all["sessions"].as_array().unwrap().len(), 2, "{all:#}");

    // A graceful restart keeps them too.
    drop(s);
    let s = RealServe::start(d, &config(&fake));
    let (code, done) = s.get("/v1/oauth/sessions/done");
    assert_eq!(code, 200, "{done}");
    assert_eq!(done["state"], "authenticated");
    let (code, live) = s.get("/v1/oauth/sessions/live");
    assert_eq!(code, 200, "{live}");
    assert!(
        live["state"] == "failed" || live["state"] == "cancelled",
        "{live:#}"
    );
    let (code, nope) = s.get("/v1/oauth/sessions/never-was");
    assert_eq!(code, 404, "{nope}");
}
