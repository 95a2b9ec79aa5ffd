//! The whole login with a real browser: under Xvfb, Debian's Chromium is the VM browser.
//! A session started through the API runs the fake provider CLI, which calls `$BROWSER`;
//! the shim (`guest-agent open-url`) hands the URL to the agent, which opens it in
//! Chromium; Chromium loads the fake OAuth server's authorize page (we check the server saw
//! Chromium's User-Agent), follows its redirect to the CLI's localhost callback; the CLI
//! writes its credentials file; inotify notices; `GET /credentials/get` returns them with
//! the token and 401 without. Fails (does not skip) when Xvfb or Chromium is missing.

mod oauth_support;

use oauth_support::*;
use serde_json::json;

#[test]
fn login_through_chromium_on_a_virtual_display() {
    let x = Xvfb::start();
    let fake = FakeOAuthServer::start();
    let profile = tempfile::tempdir().unwrap();
    // Chromium runs as the login user (as root; see oauth_support): its profile is its own.
    give_to_login_user(profile.path());
    let browser: Vec<String> = chromium(profile.path())
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    let config = format!(
        r#"
home = "{{home}}"
display = "{display}"
browser = [{browser}]
shim_command = ["{{bin}}", "open-url"]
deadline_secs = 120

[providers.fake]
command = ["python3", "{{fixture}}", "--authorize", "{auth}", "--creds", "~/.fake/creds.json"]
credential_paths = ["~/.fake/creds.json"]
required_keys = ["tokens"]
url_patterns = ['http://127\.0\.0\.1:\d+/authorize\?[^\s]+']
"#,
        display = x.display,
        browser = browser.join(", "),
        auth = fake.authorize_url(),
    );
    let a = Agent::start(&config);

    let (code, body) = a.post("/auth/fake", json!({"sessionId": "web-1"}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["sessionId"], "web-1");

    // The URL arrives exactly, through the shim, and the browser is started with it.
    let s = a.wait_session("web-1", "URL from the shim", |s| s["urlSource"] == "shim");
    let url = s["oauthUrl"].as_str().unwrap().to_string();
    assert!(url.starts_with(&fake.authorize_url()), "{url}");
    assert!(
        url.contains("redirect_uri=http%3A%2F%2Flocalhost%3A"),
        "{url}"
    );
    let (code, u) = a.get("/oauth-url?sessionId=web-1");
    assert_eq!(code, 200);
    assert_eq!(u["oauthUrl"], url);

    // Chromium really loaded the login page...
    let start = std::time::Instant::now();
    let hit = loop {
        if let Some(h) = fake
            .seen()
            .into_iter()
            .find(|h| h.path.starts_with("/authorize?"))
        {
            break h;
        }
        let s = a.session("web-1");
        assert!(
            start.elapsed() < WAIT,
            "Chromium never requested the login page; session: {s:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        hit.user_agent.contains("Chrome/"),
        "the login page was not requested by Chromium: User-Agent {:?}",
        hit.user_agent
    );
    assert_eq!(url, format!("http://{}{}", fake.addr, hit.path));

    // ...followed the redirect to the CLI, which wrote the credentials.
    let s = a.wait_state("web-1", "authenticated");
    let states: Vec<&str> = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        vec!["starting", "url_ready", "awaiting_user", "authenticated"]
    );
    let browser_pid = s["browser"]["pid"].as_i64().expect("browser pid");
    assert!(s["browser"]["error"].is_null(), "{s}");

    let (code, st) = a.get("/credentials/status?sessionId=web-1");
    assert_eq!(code, 200);
    assert_eq!(st["authenticated"], true);
    let (code, c) = a.get("/credentials/get?sessionId=web-1");
    assert_eq!(code, 200, "{c}");
    assert_eq!(
        c["credentials"]["tokens"]["access_token"],
        format!("tok-{CODE}")
    );
    let (code, denied) = http(
        a.addr,
        "GET",
        "/credentials/get?sessionId=web-1",
        None,
        None,
    );
    assert_eq!(code, 401);
    assert!(!denied.to_string().contains("tok-"), "{denied}");

    // The session is over: the CLI exited, the browser is closed.
    let pid = s["pid"].as_i64().unwrap();
    wait_group_gone(pid);
    wait_group_gone(browser_pid);
    assert_eq!(a.oauth.active_sessions(), 0);
    if is_root() {
        // It ran as the login user, and so did the CLI (issue 12 item 2): checked from the
        // files they wrote, whose owner is who they ran as.
        use std::os::unix::fs::MetadataExt;
        let (uid, _) = ensure_login_user();
        let creds = std::fs::metadata(a.home().join(".fake/creds.json")).unwrap();
        assert_eq!(creds.uid(), uid, "the CLI did not run as {LOGIN_USER}");
        assert_eq!(creds.mode() & 0o777, 0o600);
        let prefs = std::fs::metadata(profile.path().join("Default")).unwrap();
        assert_eq!(prefs.uid(), uid, "Chromium did not run as {LOGIN_USER}");
    }
}
