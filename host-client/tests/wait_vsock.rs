//! wait_ready with a second transport (hybrid vsock, through the stand-in device of
//! tests/common/hybrid.rs) and the pushed readiness line: a VM whose network never came up
//! but whose agent answers over vsock ends the wait at once with the agent's diagnosis,
//! agreeing with the console's; ready on either transport; the pushed line ends the wait
//! without requests; lines the guest garbles are shown, not trusted.

mod common;

use common::hybrid::{device, Port};
use guest_proto::readiness::{AgentState, NetinitFailure, NetinitSummary, ReadinessLine};
use guest_proto::report::{FailureReport, NetinitReport, Outcome};
use host_client::ready_push::ready_socket_path;
use host_client::wait::ReadyVia;
use host_client::{wait_ready_with, AgentAddr, Cause, Progress, WaitError, WaitOptions};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixStream};

/// netinit's report as the VM of tests/consoles/virtio-net-missing.log wrote it.
fn failed_report() -> NetinitReport {
    NetinitReport {
        version: "0.1.0".into(),
        outcome: Outcome::Failed,
        started_at_ms: 0,
        duration_us: 30_000_000,
        interface: Some("eth0".into()),
        source: None,
        addresses: vec![],
        gateway: None,
        routes: vec![],
        dns: vec![],
        search_domains: vec![],
        mtu: None,
        mac: None,
        hostname: None,
        modules_loaded: vec![],
        conflicts: vec![],
        steps: vec![],
        probe: None,
        warnings: vec![],
        error: Some(FailureReport {
            class: "no-device".into(),
            exit_code: 4,
            message: "eth0 did not appear within 30000 ms; a virtio-net device has no driver and virtio_net.ko is missing".into(),
        }),
        handoff_path: None,
        dhcp: None,
    }
}

/// A stand-in agent on loopback (reached through the vsock device) whose `/health` carries
/// `network`; `/ready` answers `ready_status`.
async fn agent(network: Option<NetinitReport>, ready_status: u16) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let health = serde_json::json!({
        "status": "ok", "timestamp": "2026-11-21T23:00:00Z", "activeSessions": 0,
        "network": network,
    })
    .to_string();
    let script: Arc<common::Script> = Arc::new(move |path: &str, _n| match path {
        "/health" => (200, health.clone()),
        "/ready" if ready_status == 200 => (200, r#"{"ready":true,"reasons":[]}"#.into()),
        "/ready" => (
            503,
            r#"{"ready":false,"reasons":["xvfb is starting"]}"#.into(),
        ),
        _ => (404, r#"{"error":"not found"}"#.into()),
    });
    common::serve(l, script);
    addr
}

fn vsock(path: &Path) -> AgentAddr {
    format!("vsock:{}:8080", path.display()).parse().unwrap()
}

fn opts(deadline: Duration) -> WaitOptions {
    WaitOptions {
        deadline,
        ..WaitOptions::default()
    }
}

#[tokio::test]
async fn no_network_but_vsock_answers_ends_the_wait_with_the_agents_diagnosis() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(Some(failed_report()), 503).await;
    let dev = device(dir.path(), HashMap::from([(8080, Port::Agent(agent))]));
    let o = WaitOptions {
        vsock: Some(vsock(&dev.path)),
        ..opts(Duration::from_secs(20))
    };
    let t = Instant::now();
    // the TCP address never answers: the VM has no network
    let err = wait_ready_with(common::free_port(), &o, |_| {})
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let WaitError::Diagnosed {
        seen_in,
        finding,
        findings,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(seen_in.contains("over vsock:"), "{seen_in}");
    assert_eq!(finding.cause, Cause::NetinitFailed);
    assert_eq!(finding.subject.as_deref(), Some("no-device"));
    assert!(
        err.to_string().contains("the agent's /health over vsock:"),
        "{err}"
    );
    let vsock_view: Vec<_> = findings
        .iter()
        .map(|f| (f.cause, f.subject.clone()))
        .collect();
    // the console of the same boot says the same (cause, subject) for the network
    let console = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/consoles/virtio-net-missing.log"),
    )
    .unwrap();
    let console_view: Vec<_> = host_client::analyze(&console)
        .findings
        .into_iter()
        .filter(|f| {
            matches!(
                f.cause,
                Cause::NetinitFailed | Cause::NoNetworkDevice | Cause::ModuleMissing
            )
        })
        .map(|f| (f.cause, f.subject))
        .collect();
    assert!(!console_view.is_empty());
    for c in &console_view {
        assert!(
            vsock_view.contains(c),
            "console {c:?} not in vsock {vsock_view:?}"
        );
    }
}

#[tokio::test]
async fn ready_over_vsock_when_tcp_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(None, 200).await;
    let dev = device(dir.path(), HashMap::from([(8080, Port::Agent(agent))]));
    let o = WaitOptions {
        vsock: Some(vsock(&dev.path)),
        ..opts(Duration::from_secs(20))
    };
    let r = wait_ready_with(common::free_port(), &o, |_| {})
        .await
        .unwrap();
    assert_eq!(r.addr, vsock(&dev.path));
    assert!(matches!(r.via, ReadyVia::Ready { .. }));
}

#[tokio::test]
async fn a_failed_netinit_over_vsock_is_not_fatal_when_only_vsock_is_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(Some(failed_report()), 200).await;
    let dev = device(dir.path(), HashMap::from([(8080, Port::Agent(agent))]));
    let r = wait_ready_with(vsock(&dev.path), &opts(Duration::from_secs(5)), |_| {})
        .await
        .unwrap();
    assert!(matches!(r.via, ReadyVia::Ready { .. }));
}

fn line(state: AgentState, failure: Option<&str>) -> String {
    ReadinessLine {
        version: 1,
        seq: 1,
        state,
        agent_version: "0.1.0".into(),
        uptime_ms: 10,
        auth: None,
        services: vec![],
        services_omitted: 0,
        network: failure.map(|msg| NetinitSummary {
            outcome: Outcome::Failed,
            interface: Some("eth0".into()),
            source: None,
            addresses: vec![],
            failure: Some(NetinitFailure {
                class: "bad-config".into(),
                exit_code: 3,
                message: msg.into(),
            }),
        }),
        reasons: vec![],
    }
    .to_line()
    .unwrap()
}

async fn push(path: &Path, bytes: &[u8]) {
    let mut s = UnixStream::connect(path).await.unwrap();
    let _ = s.write_all(bytes).await;
}

#[tokio::test]
async fn the_pushed_line_ends_the_wait_and_garbage_is_shown_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let sock = ready_socket_path(&dir.path().join("v.sock"), 8081);
    assert!(sock.ends_with("v.sock_8081"));
    // a stale socket from an earlier run is replaced
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let o = WaitOptions {
        ready_socket: Some(sock.clone()),
        ..opts(Duration::from_secs(20))
    };
    let s = sock.clone();
    let pusher = async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        push(&s, b"\x1b[2J not json\n").await;
        push(&s, &vec![b'x'; 20 * 1024]).await;
        push(&s, line(AgentState::Starting, None).as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        push(&s, line(AgentState::Ready, None).as_bytes()).await;
        t
    };
    let mut seen = Vec::new();
    let (r, pushed_at) = tokio::join!(
        wait_ready_with(common::free_port(), &o, |p| seen.push(p.clone())),
        pusher
    );
    let lag = pushed_at.elapsed();
    let r = r.unwrap();
    assert!(matches!(r.via, ReadyVia::Pushed { .. }), "{:?}", r.via);
    assert!(lag < Duration::from_millis(100), "{lag:?}");
    let findings: Vec<String> = seen
        .iter()
        .filter_map(|p| match p {
            Progress::Finding { finding } => Some(finding.evidence.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert!(findings[0].contains("not valid JSON"), "{findings:?}");
    assert!(!findings[0].contains('\x1b'), "{findings:?}");
    assert!(
        findings[1].contains("more than 16384 bytes"),
        "{findings:?}"
    );
    assert!(seen
        .iter()
        .any(|p| matches!(p, Progress::Pushed { line } if line.state == AgentState::Starting)));
    // the socket is gone with the wait
    assert!(!sock.exists());
}

#[tokio::test]
async fn a_pushed_netinit_failure_is_the_diagnosis() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("v.sock_8081");
    let o = WaitOptions {
        ready_socket: Some(sock.clone()),
        ..opts(Duration::from_secs(20))
    };
    let s = sock.clone();
    let msg = "ip=: field 7 (autoconf): `undefined` is not off, none, on, any, dhcp";
    let pusher = async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        push(&s, line(AgentState::Ready, Some(msg)).as_bytes()).await;
    };
    let t = Instant::now();
    let (r, ()) = tokio::join!(wait_ready_with(common::free_port(), &o, |_| {}), pusher);
    assert!(t.elapsed() < Duration::from_secs(1));
    let err = r.unwrap_err();
    let WaitError::Diagnosed { finding, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(finding.subject.as_deref(), Some("bad-config"));
    assert!(finding.hint.contains("`undefined`"), "{}", finding.hint);
    assert!(
        err.to_string().contains("the pushed readiness line"),
        "{err}"
    );
}

#[tokio::test]
async fn a_socket_someone_listens_on_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("v.sock_8081");
    let _other = tokio::net::UnixListener::bind(&sock).unwrap();
    let o = WaitOptions {
        ready_socket: Some(sock.clone()),
        ..opts(Duration::from_secs(1))
    };
    let err = wait_ready_with(common::free_port(), &o, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::Push(_)), "{err:?}");
    assert!(
        err.to_string().contains("another process is listening"),
        "{err}"
    );
}
