//! The whole login with Debian's Firefox ESR as the VM's browser (issue 14 item 5), like
//! `oauth_browser.rs` does with Chromium, under Xvfb, as the login user when root:
//!
//! 1. a first URL of the session (`POST /open-url`, before the CLI hands its own) starts
//!    Firefox in kiosk mode with the session's own profile (`<home>/.guestkit/firefox/
//!    session-<id>`, its `user.js` written by the agent, its `prefs.js` by Firefox, both the
//!    login user's); the fake OAuth server sees the page requested with Firefox's User-Agent;
//! 2. the CLI's URL (through the shim) goes into the *running* Firefox over its private
//!    D-Bus (same pid), which loads the authorize page and follows the redirect to the
//!    CLI's callback; the credentials arrive;
//! 3. the session over, Firefox and its bus are gone.
//!
//! Fails (does not skip) when Xvfb or firefox-esr is missing.

mod oauth_support;

use oauth_support::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// The CLI calls `$BROWSER` this long after it started: Firefox is up with the first URL
/// by then (it takes 2-5 s here), so the second one goes to a running instance.
const BROWSER_DELAY_SECS: u32 = 20;

fn firefox() -> String {
    let which = std::process::Command::new("sh")
        .args(["-c", "command -v firefox-esr"])
        .output()
        .unwrap();
    assert!(
        which.status.success(),
        "firefox-esr is not installed: `apt-get install -y --no-install-recommends firefox-esr` (the Firefox OAuth test opens the login page in it)"
    );
    String::from_utf8_lossy(&which.stdout).trim().to_string()
}

/// Pids of processes whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn login_through_firefox_on_a_virtual_display() {
    let ff = firefox();
    let x = Xvfb::start();
    let fake = FakeOAuthServer::start();
    let config = format!(
        r#"
home = "{{home}}"
display = "{display}"
browser = ["{ff}"]
shim_command = ["{{bin}}", "open-url"]
deadline_secs = 180

[providers.fake]
command = ["python3", "{{fixture}}", "--authorize", "{auth}", "--creds", "~/.fake/creds.json", "--browser-delay", "{BROWSER_DELAY_SECS}"]
credential_paths = ["~/.fake/creds.json"]
required_keys = ["tokens"]
url_patterns = ['http://never\.invalid/\S+']
"#,
        display = x.display,
        auth = fake.authorize_url(),
    );
    let a = Agent::start(&config);
    let (code, body) = a.post("/auth/fake", json!({"sessionId": "ff-1"}));
    assert_eq!(code, 200, "{body}");

    // 1. A first URL starts Firefox with the session's profile.
    let first = format!("http://{}/first-page", fake.addr);
    let started = Instant::now();
    let (code, r) = a.post("/open-url", json!({"sessionId": "ff-1", "url": first}));
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["opened"], true, "{r}");
    let hit = wait_seen(&fake, &a, "/first-page");
    let first_load = started.elapsed();
    assert!(
        hit.user_agent.contains("Firefox/"),
        "the first page was not requested by Firefox: User-Agent {:?}",
        hit.user_agent
    );
    let s = a.session("ff-1");
    assert_eq!(s["state"], "awaiting_user", "{s:#}");
    let pid = s["browser"]["pid"].as_i64().expect("browser pid");
    let profile = a.home().join(".guestkit/firefox/session-ff-1");
    let user_js = std::fs::read_to_string(profile.join("user.js")).unwrap();
    assert!(
        user_js.contains("user_pref(\"browser.shell.checkDefaultBrowser\", false);"),
        "{user_js}"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("--kiosk")
            && cmdline.contains(&format!("--profile {}", profile.display())),
        "{cmdline}"
    );
    if is_root() {
        use std::os::unix::fs::MetadataExt;
        let (uid, _) = ensure_login_user();
        for f in ["user.js", "prefs.js"] {
            let m = wait_file(&profile.join(f));
            assert_eq!(m.uid(), uid, "{f} is not {LOGIN_USER}'s");
        }
        assert_eq!(
            procs_uid(pid as i32),
            Some(uid),
            "Firefox did not run as {LOGIN_USER}"
        );
    }

    // 2. The CLI's URL goes into the running Firefox.
    let s = a.wait_session("ff-1", "URL from the shim", |s| s["urlSource"] == "shim");
    let shim_at = Instant::now();
    let url = s["oauthUrl"].as_str().unwrap().to_string();
    let hit = wait_seen(&fake, &a, "/authorize?");
    let handover = shim_at.elapsed();
    assert!(hit.user_agent.contains("Firefox/"), "{:?}", hit.user_agent);
    assert_eq!(url, format!("http://{}{}", fake.addr, hit.path));
    let s = a.wait_state("ff-1", "authenticated");
    assert_eq!(
        s["browser"]["pid"].as_i64(),
        Some(pid),
        "the second URL started another browser instead of going to the running one: {s:#}"
    );
    assert!(s["browser"]["error"].is_null(), "{s}");
    let (code, c) = a.get("/credentials/get?sessionId=ff-1");
    assert_eq!(code, 200, "{c}");
    assert_eq!(
        c["credentials"]["tokens"]["access_token"],
        format!("tok-{CODE}")
    );
    eprintln!(
        "firefox: first page requested {:.2} s after POST /open-url; the CLI's URL requested {:.3} s after the shim handed it over (same instance)",
        first_load.as_secs_f64(),
        handover.as_secs_f64()
    );

    // 3. Firefox and its private bus are gone with the session.
    wait_group_gone(pid);
    let bus = guest_agent::oauth::firefox::bus_address(&profile);
    let name = bus.trim_start_matches("unix:abstract=");
    let start = Instant::now();
    while !pids_with(name).is_empty() {
        assert!(
            start.elapsed() < WAIT,
            "the private bus {bus} outlived the session: pids {:?}",
            pids_with(name)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(a.oauth.active_sessions(), 0);
}

fn wait_seen(fake: &FakeOAuthServer, a: &Agent, prefix: &str) -> Seen {
    let start = Instant::now();
    loop {
        if let Some(h) = fake.seen().into_iter().find(|h| h.path.starts_with(prefix)) {
            return h;
        }
        let s = a.session("ff-1");
        assert!(
            start.elapsed() < WAIT,
            "Firefox never requested {prefix}; session: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_file(p: &std::path::Path) -> std::fs::Metadata {
    let start = Instant::now();
    loop {
        if let Ok(m) = std::fs::metadata(p) {
            return m;
        }
        assert!(start.elapsed() < WAIT, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn procs_uid(pid: i32) -> Option<u32> {
    guest_agent::oauth::procs::uid_of(pid)
}
