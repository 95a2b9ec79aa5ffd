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

/// Xvfb on a display it picks itself (`-displayfd`): the two tests here start theirs at
/// the same moment, and `oauth_support::Xvfb` can hand both the same number when they race.
struct Display {
    display: String,
    child: std::process::Child,
}

impl Drop for Display {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn xvfb() -> Display {
    use std::io::BufRead;
    let mut child = std::process::Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1280x720x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("Xvfb is not installed: `apt-get install -y xvfb`");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let n: u32 = line
        .trim()
        .parse()
        .expect("Xvfb printed its display number");
    Display {
        display: format!(":{n}"),
        child,
    }
}

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
    let x = xvfb();
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

/// An HTTP proxy that answers every request with a small page and records the request
/// lines (`GET http://host/path HTTP/1.1`) with their User-Agent.
fn start_recording_proxy() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for mut conn in l.incoming().flatten() {
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            let mut ua = String::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("user-agent") {
                        ua = v.trim().to_string();
                    }
                }
            }
            s2.lock().unwrap().push(Seen {
                path: first.trim().to_string(),
                user_agent: ua,
            });
            let body = "<html><body>through the proxy</body></html>";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

/// The login's proxy (`proxy =` in oauth.toml here; the kernel command line's in a VM)
/// reaches Firefox through the profile's prefs: the login page goes through it, loopback
/// (the CLI's callback, the agent) stays direct.
#[test]
fn firefox_browses_through_the_logins_proxy() {
    let ff = firefox();
    let x = xvfb();
    let fake = FakeOAuthServer::start();
    let (proxy, through) = start_recording_proxy();
    let config = format!(
        r#"
home = "{{home}}"
display = "{display}"
browser = ["{ff}"]
shim_command = ["{{bin}}", "open-url"]
deadline_secs = 180
proxy = "http://{proxy}"

[providers.fake]
command = ["python3", "{{fixture}}", "--authorize", "{auth}", "--creds", "~/.fake/creds.json", "--hang"]
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
    let page = "http://login.example.test/authorize?client_id=fake";
    let (code, r) = a.post("/open-url", json!({"sessionId": "ff-1", "url": page}));
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["opened"], true, "{r}");
    let user_js =
        std::fs::read_to_string(a.home().join(".guestkit/firefox/session-ff-1/user.js")).unwrap();
    assert!(
        user_js.contains(&format!(
            "user_pref(\"network.proxy.http_port\", {});",
            proxy.port()
        )),
        "{user_js}"
    );
    let start = Instant::now();
    let hit = loop {
        if let Some(h) = through
            .lock()
            .unwrap()
            .iter()
            .find(|h| h.path.starts_with(&format!("GET {page} ")))
        {
            break h.clone();
        }
        assert!(
            start.elapsed() < WAIT,
            "the login page never went through the proxy; it saw {:?}; session {:#}",
            through.lock().unwrap(),
            a.session("ff-1")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(hit.user_agent.contains("Firefox/"), "{hit:?}");

    // Loopback goes direct (into the same Firefox).
    let direct = format!("http://127.0.0.1:{}/direct", fake.addr.port());
    let (code, r) = a.post("/open-url", json!({"sessionId": "ff-1", "url": direct}));
    assert_eq!(code, 200, "{r}");
    wait_seen(&fake, &a, "/direct");
    let proxied = through.lock().unwrap().clone();
    assert!(
        !proxied.iter().any(|h| h.path.contains("/direct")),
        "loopback went through the proxy: {proxied:?}"
    );
}

/// A Firefox that died (here: killed) is started again on the same profile for the next
/// URL of the session, and shows that URL at once (no restored tabs, no safe-mode offer).
#[test]
fn a_firefox_that_died_is_started_again_on_its_profile() {
    let ff = firefox();
    let x = xvfb();
    let fake = FakeOAuthServer::start();
    let config = format!(
        r#"
home = "{{home}}"
display = "{display}"
browser = ["{ff}"]
shim_command = ["{{bin}}", "open-url"]
deadline_secs = 180

[providers.fake]
command = ["python3", "{{fixture}}", "--authorize", "{auth}", "--creds", "~/.fake/creds.json", "--hang"]
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
    let (code, r) = a.post(
        "/open-url",
        json!({"sessionId": "ff-1", "url": format!("http://{}/one", fake.addr)}),
    );
    assert_eq!(code, 200, "{r}");
    wait_seen(&fake, &a, "/one");
    let first = a.session("ff-1")["browser"]["pid"].as_i64().unwrap();
    // SAFETY: plain kill(2) of the browser this test's agent started.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    wait_group_gone(first);

    let (code, r) = a.post(
        "/open-url",
        json!({"sessionId": "ff-1", "url": format!("http://{}/two", fake.addr)}),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["opened"], true, "{r}");
    wait_seen(&fake, &a, "/two");
    let s = a.session("ff-1");
    let second = s["browser"]["pid"].as_i64().unwrap();
    assert_ne!(second, first, "{s:#}");
    // Nothing of the killed session came back.
    std::thread::sleep(Duration::from_secs(2));
    let ones = fake.seen().iter().filter(|h| h.path == "/one").count();
    assert_eq!(
        ones,
        1,
        "the killed window's page was restored: {:?}",
        fake.seen()
    );
}
