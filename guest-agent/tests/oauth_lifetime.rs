//! The real `guest-agent serve` (issue 12): who the login CLI and the browser run as and
//! what they can read (item 2), that nothing they started outlives a `serve` killed with
//! SIGKILL (item 5), and that a pasted code never reaches serve's log (item 7).
//!
//! These need root (CI is root): they fail, not skip, without it.

mod oauth_support;

use oauth_support::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn need_root() {
    assert!(
        is_root(),
        "this test needs root (CI runs as root): it checks the switch to {LOGIN_USER}"
    );
}

const SPY: &str = r#"#!/bin/sh
# A stand-in login CLI that tries to read what it must not.
echo "token: $(cat "$1/state/token" 2>&1)"
echo "state: $(ls "$1/state" 2>&1)"
echo "user: $(id -un)"
echo "Open https://login.example/authorize?state=spy-state&x=1 now"
read code
echo "got $code"
exit 1
"#;

/// The CLI and the browser run as the login user: neither reads the token file nor the
/// state directory; a code pasted into the CLI is not in serve's log.
#[test]
fn the_cli_and_the_browser_run_as_the_login_user() {
    need_root();
    let dir = test_dir();
    let d = dir.path();
    std::fs::write(d.join("spy.sh"), SPY).unwrap();
    let config = r#"
display = ":4545"
browser = ["sh", "-c", 'id -un > "$HOME/browser-user"; cat {dir}/state/token > "$HOME/browser-token" 2>&1; sleep 100']
shim_command = ["{bin}", "open-url"]
home = "{home}"
[providers.spy]
command = ["sh", "{dir}/spy.sh", "{dir}"]
credential_paths = ["~/.spy.json"]
required_keys = ["x"]
url_patterns = ['https://login\.example/authorize\?[^\s]+']
"#;
    let s = RealServe::start(d, config);
    let (code, body) = s.post(
        "/v1/oauth/sessions",
        json!({"provider": "spy", "sessionId": "spy1"}),
    );
    assert_eq!(code, 201, "{body}");
    let pid = body["pid"].as_i64().unwrap();
    let info = s.wait_session("spy1", "the spy's report", |v| {
        v["lastOutput"]
            .as_str()
            .is_some_and(|o| o.contains("user:") && o.contains("Open https"))
    });
    let out = info["lastOutput"].as_str().unwrap();
    assert!(!out.contains(TOKEN), "the CLI read the token: {out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("token:").contains("Permission denied"), "{out}");
    assert!(line("state:").contains("Permission denied"), "{out}");
    assert_eq!(line("user:"), format!("user: {LOGIN_USER}"), "{out}");
    assert_eq!(ps_user(pid), LOGIN_USER);

    // The browser, opened with the URL the CLI printed.
    let home = d.join("home");
    let start = Instant::now();
    while !home.join("browser-token").exists() {
        assert!(
            start.elapsed() < WAIT,
            "the browser never ran; log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let who = std::fs::read_to_string(home.join("browser-user")).unwrap();
    assert_eq!(who.trim(), LOGIN_USER);
    let read = std::fs::read_to_string(home.join("browser-token")).unwrap();
    assert!(
        read.contains("Permission denied") && !read.contains(TOKEN),
        "{read}"
    );
    let info = s.wait_session("spy1", "the browser pid", |v| v["browser"]["pid"].is_i64());
    let bpid = info["browser"]["pid"].as_i64().unwrap();
    assert_eq!(ps_user(bpid), LOGIN_USER);

    // Item 7: the code the CLI echoes is neither in the session nor in serve's log.
    let (code, r) = s.post(
        "/v1/oauth/sessions/spy1/code",
        json!({"code": "L0G-SECRET-9"}),
    );
    assert_eq!(code, 200, "{r}");
    let info = s.wait_session("spy1", "the end", |v| v["state"] == "failed");
    let reason = info["reason"].as_str().unwrap();
    assert!(reason.ends_with("last output: got [redacted]"), "{reason}");
    let start = Instant::now();
    while !s.log().contains("OAuth session ended") {
        assert!(start.elapsed() < WAIT, "no end in the log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = s.log();
    assert!(log.contains("got [redacted]"), "{log}");
    assert!(!log.contains("L0G-SECRET-9"), "{log}");
    assert!(!info.to_string().contains("L0G-SECRET-9"), "{info}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kill -9 serve` during a login whose CLI forked a grandchild that holds a loopback port
/// and ignores SIGHUP/SIGTERM (codex's 1455): the CLI dies with serve (PDEATHSIG), the
/// grandchild is killed when serve starts again (the sweep of the recorded groups), the
/// port is free and a new login binds it. A recorded pid that now belongs to another
/// process (another start time) is left alone. A graceful stop (SIGTERM) also ends what
/// the live session started.
#[test]
fn what_a_killed_serve_left_is_swept_at_the_next_start() {
    need_root();
    let dir = test_dir();
    let d = dir.path();
    let port = free_port();
    let config = format!(
        r#"
display = ":4546"
browser = ["{{dir}}/no-such-browser"]
shim_command = ["{{bin}}", "open-url"]
home = "{{home}}"
[providers.holder]
command = ["python3", "{{fixture}}", "--hold-port", "{port}", "--authorize", "http://127.0.0.1:9/authorize", "--creds", "~/.h.json"]
credential_paths = ["~/.h.json"]
required_keys = ["tokens"]
"#
    );
    let s = RealServe::start(d, &config);
    let (code, body) = s.post(
        "/v1/oauth/sessions",
        json!({"provider": "holder", "sessionId": "h1"}),
    );
    assert_eq!(code, 201, "{body}");
    let cli = body["pid"].as_i64().unwrap();
    let info = s.wait_session("h1", "the port held", |v| {
        v["lastOutput"]
            .as_str()
            .is_some_and(|o| o.contains("holding port"))
    });
    let out = info["lastOutput"].as_str().unwrap();
    let grandchild: i64 = out
        .split("pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {out}"));
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());

    // A stranger whose pid a record names, but which started at another time.
    let mut stranger = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let spid = stranger.id() as i32;
    let sstat = guest_agent::oauth::procs::stat(spid).unwrap();
    let records = RealServe::state(d).join(guest_agent::oauth::procs::RECORDS_DIR);
    guest_agent::oauth::procs::Record {
        pid: spid,
        start: sstat.start.saturating_sub(1),
        boot: guest_agent::oauth::procs::boot_id(),
        uid: 0,
        marker: "stranger".into(),
        what: "cli".into(),
    }
    .write(&records, "stranger.1.cli")
    .unwrap();

    s.kill9();
    wait_until("the CLI to die with serve", || !pid_alive(cli));
    // What PDEATHSIG does not reach: only the sweep can.
    assert!(
        pid_alive(grandchild),
        "the grandchild died without the sweep"
    );

    let s = RealServe::start(d, &config);
    wait_until("the grandchild to be swept", || !pid_alive(grandchild));
    wait_until("the port to be free", || {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    });
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "a process whose pid was reused was killed"
    );
    let left: Vec<_> = std::fs::read_dir(&records).unwrap().flatten().collect();
    assert!(left.is_empty(), "records left: {left:?}");

    let (code, body) = s.post(
        "/v1/oauth/sessions",
        json!({"provider": "holder", "sessionId": "h2"}),
    );
    assert_eq!(code, 201, "{body}");
    let info = s.wait_session("h2", "the port held again", |v| {
        v["lastOutput"]
            .as_str()
            .is_some_and(|o| o.contains("holding port") || o.contains("could not hold"))
    });
    assert!(
        info["lastOutput"]
            .as_str()
            .unwrap()
            .contains(&format!("holding port {port}")),
        "{info}"
    );
    let out = info["lastOutput"].as_str().unwrap();
    let grandchild2: i64 = out
        .split("pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {out}"));
    // A graceful stop (SIGTERM) ends the live session's processes too, grandchild
    // included, and leaves no record behind.
    drop(s);
    wait_until("the grandchild to end with serve", || {
        !pid_alive(grandchild2)
    });
    let left: Vec<_> = std::fs::read_dir(&records).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "records left after a graceful stop: {left:?}"
    );
    let _ = stranger.kill();
    let _ = stranger.wait();
}
