//! `guest-agent serve` as a child of `supervise`, both real binaries, over loopback HTTP.

mod common;
use common::*;
use guest_proto::api::{
    HealthResponse, LogsResponse, ReadyResponse, RestartResponse, ServiceState, ServicesResponse,
};

/// The token the tests' agents are given unless a test says otherwise.
const TOKEN: &str = "s3cret-token";

/// serve on a free port (it prints the address), a chatty service, a token file.
fn agent_with(extra: &str, token: Option<&str>) -> (Agent, String) {
    let config = format!(
        r#"
[services.serve]
command = ["{{bin}}", "serve", "--listen", "127.0.0.1:0", "--token-file", "{{dir}}/token", "--cmdline", "{{dir}}/cmdline", "--netinit-state", "{{dir}}/netinit.json"]
required = true

[services.chatty]
command = ["sh", "-c", "echo hello from chatty; echo oops >&2; sleep 1000"]
{extra}
"#
    );
    let mut files = vec![("cmdline", "console=ttyS0 quiet\n")];
    if let Some(t) = token {
        files.push(("token", t));
    }
    let agent = Agent::start_with(&config, &[], &files);
    let addr = agent.listening_addr();
    (agent, addr)
}

#[test]
fn health_has_the_node_fields_and_ours() {
    let (agent, addr) = agent_with("", None);
    // Wait until the snapshot shows both services running.
    let body = agent.wait("healthy /health", |_| {
        let (code, body) = http(&addr, "GET", "/health", None).ok()?;
        assert_eq!(code, 200);
        let h: HealthResponse = serde_json::from_str(&body).unwrap();
        (h.services.len() == 2 && h.services.iter().all(|s| s.state == ServiceState::Running))
            .then_some(body)
    });
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    // The Node agent's three fields, exactly named.
    assert_eq!(v["status"], "ok");
    assert_eq!(v["activeSessions"], 0);
    let ts = v["timestamp"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(ts).is_ok() && ts.ends_with('Z'),
        "{ts}"
    );
    // Ours.
    assert!(v["uptimeSeconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["network"].is_null(), "no netinit state file here");
    assert!(v["memory"]["totalBytes"].as_u64().unwrap() > 0);
    assert!(v["memory"]["availableBytes"].as_u64().unwrap() > 0);
    let serve = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "serve")
        .unwrap();
    assert!(serve["rssBytes"].as_u64().unwrap() > 0, "{serve}");
    assert_eq!(serve["required"], true);

    let (code, body) = http(&addr, "GET", "/ready", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let r: ReadyResponse = serde_json::from_str(&body).unwrap();
    assert!(r.ready && r.reasons.is_empty());
}

#[test]
fn ready_is_503_with_the_reason_while_a_required_service_fails() {
    let (agent, addr) = agent_with(
        r#"
[services.broken]
command = ["sh", "-c", "exit 3"]
required = true
"#,
        None,
    );
    let (code, body) = agent.wait("503 naming broken", |_| {
        let (code, body) = http(&addr, "GET", "/ready", None).ok()?;
        // Before its first exit the reason says "starting"; wait for the exit to be known.
        (body.contains("required service broken") && body.contains("exit 3"))
            .then_some((code, body))
    });
    assert_eq!(code, 503);
    let r: ReadyResponse = serde_json::from_str(&body).unwrap();
    assert!(!r.ready);
    assert!(r.reasons.iter().any(|x| x.contains("exit 3")), "{r:?}");
    let (code, body) = http(&addr, "GET", "/health", None).unwrap();
    assert_eq!(code, 200);
    assert!(body.contains(r#""status":"degraded""#), "{body}");
}

#[test]
fn token_guards_everything_but_health_and_ready() {
    let (_agent, addr) = agent_with("", Some("s3cret-token\n"));
    for path in ["/services", "/metrics", "/services/chatty/logs"] {
        let (code, body) = http(&addr, "GET", path, None).unwrap();
        assert_eq!(code, 401, "{path}: {body}");
        assert!(body.contains("bearer token"), "{body}");
        let (code, _) = http(&addr, "GET", path, Some("wrong")).unwrap();
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, body) = http(&addr, "GET", path, Some("s3cret-token")).unwrap();
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, _) = http(&addr, "POST", "/services/chatty/restart", None).unwrap();
    assert_eq!(code, 401);
    assert_eq!(http(&addr, "GET", "/health", None).unwrap().0, 200);
    assert!(matches!(
        http(&addr, "GET", "/ready", None).unwrap().0,
        200 | 503
    ));
}

#[test]
fn logs_show_child_output_and_restart_works() {
    let (agent, addr) = agent_with("", Some(TOKEN));
    let t = Some(TOKEN);
    let logs: LogsResponse = agent.wait("chatty's lines", |_| {
        let (code, body) = http(&addr, "GET", "/services/chatty/logs?lines=10", t).ok()?;
        assert_eq!(code, 200, "{body}");
        let l: LogsResponse = serde_json::from_str(&body).unwrap();
        (l.lines.len() >= 2).then_some(l)
    });
    assert_eq!(logs.service, "chatty");
    let texts: Vec<&str> = logs.lines.iter().map(|l| l.line.as_str()).collect();
    assert!(texts.contains(&"hello from chatty"), "{texts:?}");
    assert!(
        logs.lines
            .iter()
            .any(|l| l.line == "oops" && l.stream == guest_proto::api::LogStream::Stderr),
        "{texts:?}"
    );
    let (code, _) = http(&addr, "GET", "/services/nope/logs", t).unwrap();
    assert_eq!(code, 404);

    let before = agent.wait("chatty pid", |a| a.service("chatty").and_then(|s| s.pid));
    let (code, body) = http(&addr, "POST", "/services/chatty/restart", t).unwrap();
    assert_eq!(code, 200, "{body}");
    let r: RestartResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(r.action, "restarted");
    let after = agent.wait("chatty restarted", |a| {
        a.service("chatty").filter(|s| {
            s.state == ServiceState::Running && s.pid.is_some() && s.pid != Some(before)
        })
    });
    assert_eq!(after.restarts, 1);
    assert_eq!(after.last_exit.as_deref(), Some("signal 15 (TERM)"));

    let (code, body) = http(&addr, "GET", "/services", t).unwrap();
    assert_eq!(code, 200);
    let s: ServicesResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(s.services.len(), 2);

    let (code, text) = http(&addr, "GET", "/metrics", t).unwrap();
    assert_eq!(code, 200);
    assert!(
        text.contains("guest_agent_service_restarts_total{service=\"chatty\"}"),
        "{text}"
    );
    assert!(
        text.contains(
            "guest_agent_http_requests_total{route=\"/services/{name}/logs\",code=\"2xx\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("guest_agent_service_rss_bytes{service=\"serve\"}"),
        "{text}"
    );
}

#[test]
fn serve_alone_answers_health_without_a_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path())
        .arg("--token-file")
        .arg(dir.path().join("token"))
        .arg("--cmdline")
        .arg(dir.path().join("none"))
        .arg("--netinit-state")
        .arg(dir.path().join("netinit.json"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let ev = guest_proto::ConsoleEvent::find_in_line(&line)
        .unwrap()
        .unwrap();
    let guest_proto::Event::Listening { addr } = ev.event else {
        panic!("{line}")
    };
    let (code, body) = http(&addr, "GET", "/health", None).unwrap();
    assert_eq!(code, 200);
    assert!(body.contains(r#""status":"ok""#), "{body}");
    let (code, body) = http(&addr, "GET", "/ready", None).unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("no supervisor state"), "{body}");
    let (code, body) = http(&addr, "GET", "/services/x/logs", Some(TOKEN)).unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("control"),
        "the supervisor is missing, not the token: {body}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn health_carries_the_netinit_report_when_present() {
    let report = serde_json::json!({
        "version": "0.1.0", "outcome": "configured", "started_at_ms": 1, "duration_us": 1830,
        "interface": "eth0", "source": null, "addresses": [], "gateway": "192.168.100.1",
        "routes": [], "dns": [], "search_domains": [], "mtu": null, "mac": null, "hostname": null,
        "modules_loaded": ["virtio_net"], "conflicts": [], "steps": [], "probe": null,
        "warnings": [], "error": null, "handoff_path": null
    });
    // Through the real type, so the file is what guest-netinit would write.
    let typed: guest_proto::NetinitReport = serde_json::from_value(report).unwrap();
    let text = serde_json::to_string(&typed).unwrap();
    let agent = Agent::start_with(
        r#"
[services.serve]
command = ["{bin}", "serve", "--listen", "127.0.0.1:0", "--token-file", "{dir}/none", "--cmdline", "{dir}/none", "--netinit-state", "{dir}/netinit.json"]
"#,
        &[],
        &[("netinit.json", &text)],
    );
    let addr = agent.listening_addr();
    let (code, body) = agent.wait("/health", |_| http(&addr, "GET", "/health", None).ok());
    assert_eq!(code, 200);
    let h: HealthResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(h.network, Some(typed));
}

#[test]
fn dev_mode_runs_serve_on_loopback_with_a_temp_state_dir() {
    let mut child = std::process::Command::new(BIN)
        .args(["supervise", "--dev"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).unwrap();
    // "guest-agent dev: http://127.0.0.1:PORT/health  (state dir DIR)"
    let state_dir = first
        .trim()
        .rsplit_once("(state dir ")
        .map(|(_, d)| d.trim_end_matches(')').to_string());
    let state_dir = std::path::PathBuf::from(state_dir.unwrap_or_else(|| panic!("{first}")));
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "no listening event"
        );
        if let Some(Ok(ev)) = guest_proto::ConsoleEvent::find_in_line(&line) {
            if let guest_proto::Event::Listening { addr } = ev.event {
                break addr;
            }
        }
    };
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert!(state_dir.join("state.json").exists());
    let probe = Agent::start(""); // only for its wait(); an empty config runs nothing
    let h: HealthResponse = probe.wait("dev services running", |_| {
        let (_, body) = http(&addr, "GET", "/health", None).ok()?;
        let h: HealthResponse = serde_json::from_str(&body).ok()?;
        (h.services.len() == 2 && h.services.iter().all(|s| s.state == ServiceState::Running))
            .then_some(h)
    });
    assert_eq!(h.status, "ok");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!state_dir.exists(), "temp state dir left behind");
}

/// `webrtc` in `/health`: `null` when the VM has no streamer (no `webrtc` service, nothing on
/// the socket); `down` when a required `webrtc` service runs but its socket never answers
/// (here a listener that accepts and stays silent), which makes `/health` degraded and
/// `/ready` say why — while `/health` itself keeps answering.
#[test]
fn health_webrtc_is_null_without_a_streamer_and_down_when_its_service_hangs() {
    const SERVE: &str = r#"
[services.serve]
command = ["{bin}", "serve", "--listen", "127.0.0.1:0", "--token-file", "{dir}/none", "--cmdline", "{dir}/none", "--netinit-state", "{dir}/netinit.json"]
env = { GUEST_AGENT_WEBRTC_SOCKET = "{dir}/webrtc.sock" }
required = true
"#;
    let agent = Agent::start(SERVE);
    let addr = agent.listening_addr();
    let v: serde_json::Value = agent.wait("serve running in /health", |_| {
        let (_, body) = http(&addr, "GET", "/health", None).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["services"][0]["state"] == "running").then_some(v)
    });
    assert!(v.get("webrtc").is_some_and(|w| w.is_null()), "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    drop(agent);

    let hung = format!(
        r#"{SERVE}
[services.webrtc]
command = ["python3", "-c", "import socket, time; s = socket.socket(socket.AF_UNIX); s.bind('{{dir}}/webrtc.sock'); s.listen(); c = s.accept(); time.sleep(1000)"]
required = true
"#
    );
    let agent = Agent::start(&hung);
    let addr = agent.listening_addr();
    let h: HealthResponse = agent.wait("webrtc down in /health", |_| {
        let (code, body) = http(&addr, "GET", "/health", None).ok()?;
        assert_eq!(code, 200, "{body}");
        let h: HealthResponse = serde_json::from_str(&body).unwrap();
        h.webrtc
            .as_ref()
            .is_some_and(|w| {
                w.state == guest_proto::api::WebrtcState::Down
                    && w.error.as_deref().is_some_and(|e| e.contains("no answer"))
            })
            .then_some(h)
    });
    let w = h.webrtc.as_ref().expect("webrtc");
    assert_eq!((w.viewers, w.fps), (0, None));
    let svc = h.services.iter().find(|s| s.name == "webrtc").expect("svc");
    assert_eq!(svc.state, ServiceState::Running, "the process itself runs");
    assert_eq!(h.status, "degraded", "{h:?}");
    let (code, body) = http(&addr, "GET", "/ready", None).unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("required service webrtc is running but the streamer is down"),
        "{body}"
    );
}
