//! Nothing the guest wrote reaches the operator's terminal raw (issue 12 item 11): ESC, BEL,
//! C1 controls (U+009B is a one-character CSI for many terminals), DEL and bidi overrides in
//! console lines, in JSON strings from the agent (`\u001b` decoded), in HTTP error bodies and
//! in OAuth session fields come out of `guestctl` escaped, in human output and in `--json`.

mod common;

use common::{free_port, serve};
use guest_proto::oauth::{BrowserInfo, CredentialsResponse, SessionInfo, SessionState};
use guest_proto::{Component, ConsoleEvent, Event, FailureReport, Level};
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;

/// What a hostile guest puts in every string: clear screen, set the window title (OSC ... BEL),
/// a C1 CSI, DEL, a right-to-left override, a carriage return.
const NASTY: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{7f}\u{202e}evil\rX";

fn guestctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args(args)
        .env_remove("GUESTCTL_TOKEN")
        .output()
        .expect("run guestctl")
}

/// A character a terminal acts on instead of showing (or that reorders what it shows).
fn dangerous(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Both streams are free of terminal controls, and the guest's text is shown (escaped).
#[track_caller]
fn assert_clean(o: &Output, what: &str) {
    for (name, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        if let Some((at, c)) = text.char_indices().find(|(_, c)| dangerous(*c)) {
            let from = text[..at]
                .char_indices()
                .rev()
                .nth(60)
                .map_or(0, |(i, _)| i);
            panic!(
                "{what}: {name} has a raw {c:?} at byte {at}: {:?}",
                &text[from..(at + 10).min(text.len())]
            );
        }
    }
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(all.contains("pwned"), "{what}: the text is shown: {all}");
}

/// Runs `args` as is and with `--json`: both clean.
#[track_caller]
fn both(args: &[&str], what: &str) -> (Output, Output) {
    let human = guestctl(args);
    assert_clean(&human, what);
    let mut j = vec!["--json"];
    j.extend_from_slice(args);
    let json = guestctl(&j);
    assert_clean(&json, &format!("{what} --json"));
    // and it is still JSON (one document, or one per line), with the text in it
    let out = String::from_utf8_lossy(&json.stdout);
    if serde_json::from_str::<serde_json::Value>(&out).is_err() {
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            let v: Result<serde_json::Value, _> = serde_json::from_str(line);
            assert!(v.is_ok(), "{what} --json: not JSON: {line}");
        }
    }
    (human, json)
}

fn agent(script: impl Fn(&str, u32) -> (u16, String) + Send + Sync + 'static) -> SocketAddr {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        serve(l, Arc::new(script));
        a
    });
    // The runtime serves until the test process ends.
    std::mem::forget(rt);
    addr
}

fn hostile_health() -> String {
    serde_json::json!({
        "status": format!("degraded {NASTY}"),
        "timestamp": NASTY,
        "version": NASTY,
        "activeSessions": 0,
        "services": [{
            "name": format!("svc{NASTY}"), "state": "crash-loop", "required": true, "pid": null,
            "restarts": 3, "lastExit": NASTY, "since": "t", "rssBytes": null,
            "cpuSeconds": null, "message": NASTY
        }],
        "webrtc": {"state": "down", "viewers": 0, "fps": null, "error": NASTY}
    })
    .to_string()
}

#[test]
fn console_lines_and_event_strings_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.log");
    let failed = ConsoleEvent::new(
        Component::Agent,
        Level::Error,
        Event::Failed {
            failure: FailureReport {
                class: format!("bad-config{NASTY}"),
                message: NASTY.into(),
                exit_code: 2,
            },
        },
    );
    let warning = ConsoleEvent::new(
        Component::Netinit,
        Level::Warn,
        Event::Warning {
            message: NASTY.into(),
        },
    );
    let text = format!(
        "[    0.000000] Linux version 6.1\n[FAILED] Failed to start {NASTY}.service - x.\n{}\n{}\n",
        warning.to_line(),
        failed.to_line()
    );
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    let (human, _) = both(&["diagnose", p], "diagnose");
    assert_eq!(human.status.code(), Some(4));
    let closed = free_port().to_string();
    let (human, _) = both(
        &["wait", &closed, "--timeout", "2s", "--console", p],
        "wait",
    );
    assert_eq!(human.status.code(), Some(4), "the event is fatal");
}

#[test]
fn agent_json_strings_are_escaped() {
    let addr = agent(|path, _| match path {
        "/ready" => (
            503,
            serde_json::json!({"ready": false, "reasons": [NASTY]}).to_string(),
        ),
        _ => (200, hostile_health()),
    })
    .to_string();
    let (human, _) = both(&["health", &addr], "health");
    assert_eq!(human.status.code(), Some(6));
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, "").unwrap();
    both(
        &["diagnose", empty.to_str().unwrap(), "--addr", &addr],
        "diagnose --addr",
    );
    both(&["wait", &addr, "--timeout", "1s"], "wait (503 reasons)");

    // /ready unknown: the /health fallback reports the status it got
    let old = agent(|path, _| match path {
        "/ready" => (404, r#"{"error":"not found"}"#.into()),
        _ => (200, hostile_health()),
    })
    .to_string();
    both(&["wait", &old, "--timeout", "1s"], "wait (health status)");
}

#[test]
fn http_error_bodies_are_escaped() {
    let json_err =
        agent(|_, _| (500, serde_json::json!({ "error": NASTY }).to_string())).to_string();
    let (human, _) = both(&["health", &json_err], "health, JSON error body");
    assert_eq!(human.status.code(), Some(5));
    // not JSON at all: the raw body is quoted
    let raw = agent(|_, _| (502, format!("<html>{NASTY}</html>"))).to_string();
    both(&["health", &raw], "health, raw error body");
    both(
        &["oauth", "status", &raw, "s1"],
        "oauth status, raw error body",
    );
}

fn hostile_session(session_id: &str) -> SessionInfo {
    SessionInfo {
        session_id: session_id.into(),
        provider: NASTY.into(),
        state: SessionState::Failed,
        created_at: NASTY.into(),
        updated_at: NASTY.into(),
        deadline: NASTY.into(),
        oauth_url: Some(format!("https://x/{NASTY}")),
        url_source: Some(NASTY.into()),
        pid: Some(9),
        reason: Some(NASTY.into()),
        last_output: Some(format!("line1 {NASTY}\nline2 {NASTY}")),
        browser: Some(BrowserInfo {
            command: NASTY.into(),
            pid: None,
            error: Some(NASTY.into()),
        }),
        credentials_path: Some(NASTY.into()),
        history: vec![],
    }
}

#[test]
fn oauth_session_fields_are_escaped() {
    let addr = agent(|path, _| {
        let s = hostile_session(&format!("s1{NASTY}"));
        if path == "/v1/oauth/sessions" {
            (200, serde_json::json!({ "sessions": [s] }).to_string())
        } else if path.starts_with("/credentials/get") {
            let c = CredentialsResponse {
                success: true,
                provider: NASTY.into(),
                path: NASTY.into(),
                modified_at: NASTY.into(),
                credentials: serde_json::json!({ "token": NASTY }),
            };
            (200, serde_json::to_string(&c).unwrap())
        } else {
            (200, serde_json::to_string(&s).unwrap())
        }
    })
    .to_string();
    both(&["oauth", "status", &addr, "s1"], "oauth status ID");
    both(&["oauth", "status", &addr], "oauth status");
    both(&["oauth", "cancel", &addr, "s1"], "oauth cancel");
    // POST /v1/oauth/sessions answers one session (the stand-in does not see methods), whose
    // id is a good one (a hostile id is refused before it goes into a path: exit 2)
    let one =
        agent(|_, _| (200, serde_json::to_string(&hostile_session("s1")).unwrap())).to_string();
    let (human, _) = both(
        &[
            "oauth",
            "start",
            &one,
            "codex",
            "--wait",
            "--wait-timeout",
            "1s",
        ],
        "oauth start --wait",
    );
    assert_eq!(human.status.code(), Some(7), "failed session");
    both(&["oauth", "start", &one, "codex"], "oauth start");
    let o = guestctl(&["credentials", &addr, "s1"]);
    assert_clean(&o, "credentials");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["token"], NASTY, "the JSON still decodes to the same text");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("creds.json");
    let o = guestctl(&["credentials", &addr, "s1", "--out", out.to_str().unwrap()]);
    assert_clean(&o, "credentials --out");
}
