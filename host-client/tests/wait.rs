//! wait_ready against a stand-in agent on loopback: started late, never started, old agent
//! without `/ready`, not-ready answers, and a console log that gains a kernel panic.
//! (The real `guest-agent serve` and the netns blackhole cases are in `tests/tests/host_client_wait.rs`
//! and `wait_netns.rs`.)

mod common;

use common::{free_port, health, ready_ok, serve};
use host_client::wait::ReadyVia;
use host_client::{
    wait_ready, wait_ready_with, Cause, ErrorClass, Progress, Stage, WaitError, WaitOptions,
};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

#[tokio::test]
async fn succeeds_when_the_agent_binds_late() {
    let addr = free_port();
    let server = async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let l = TcpListener::bind(addr).await.unwrap();
        serve(l, Arc::new(ready_ok))
    };
    let (ready, count) = tokio::join!(wait_ready(addr, Duration::from_secs(20), None), server);
    let ready = ready.unwrap();
    assert!(
        matches!(ready.via, ReadyVia::Ready { .. }),
        "{:?}",
        ready.via
    );
    assert!(
        ready.attempts > 1,
        "the first attempts were refused: {}",
        ready.attempts
    );
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn never_started_times_out_with_refused() {
    let addr = free_port();
    let err = wait_ready(addr, Duration::from_millis(400), None)
        .await
        .unwrap_err();
    match &err {
        WaitError::Timeout {
            last,
            attempts,
            findings,
            ..
        } => {
            let last = last.as_ref().unwrap();
            assert_eq!(last.class, ErrorClass::Refused);
            assert!(*attempts > 2);
            assert!(findings.is_empty(), "no console given: {findings:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("refused"), "{err}");
}

#[tokio::test]
async fn old_agent_without_ready_is_ready_when_health_is_ok() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    serve(
        l,
        Arc::new(|path: &str, _| match path {
            "/health" => (200, health("ok")),
            _ => (404, "Cannot GET /ready".to_string()),
        }),
    );
    let ready = wait_ready(addr, Duration::from_secs(20), None)
        .await
        .unwrap();
    match ready.via {
        ReadyVia::Health { ready_status, body } => {
            assert_eq!(ready_status, 404);
            assert_eq!(body.status, "ok");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn not_ready_answers_are_progress_then_ready() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    serve(
        l,
        Arc::new(|_: &str, n| {
            if n < 3 {
                (
                    503,
                    r#"{"ready":false,"reasons":["required service xvfb is starting"]}"#.into(),
                )
            } else {
                (200, r#"{"ready":true,"reasons":[]}"#.into())
            }
        }),
    );
    let mut seen = Vec::new();
    let opts = WaitOptions {
        deadline: Duration::from_secs(20),
        ..Default::default()
    };
    let ready = wait_ready_with(addr, &opts, |p| seen.push(p.clone()))
        .await
        .unwrap();
    assert_eq!(ready.attempts, 4);
    let answering: Vec<_> = seen
        .iter()
        .filter_map(|p| match p {
            Progress::Answering { status, reasons } => Some((*status, reasons.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        answering,
        vec![(503, vec!["required service xvfb is starting".to_string()])]
    );
}

#[tokio::test]
async fn still_not_ready_at_the_deadline_says_why() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    serve(
        l,
        Arc::new(|_: &str, _| {
            (
                503,
                r#"{"ready":false,"reasons":["required service serve is crash-loop"]}"#.into(),
            )
        }),
    );
    let err = wait_ready(addr, Duration::from_millis(500), None)
        .await
        .unwrap_err();
    let WaitError::Timeout { last, stage, .. } = &err else {
        panic!("{err:?}")
    };
    let last = last.as_ref().unwrap();
    assert_eq!(
        (last.class, last.status),
        (ErrorClass::HttpStatus, Some(503))
    );
    assert_eq!(*stage, Some(Stage::AgentAnswering));
    assert!(err.to_string().contains("crash-loop"), "{err}");
}

#[tokio::test]
async fn console_panic_mid_wait_returns_the_finding() {
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    let addr = free_port();
    let path = console.clone();
    let writer = async move {
        // the VMM creates the log after the wait started, then the kernel boots and panics
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(
            f,
            "[    0.000000] Linux version 6.1.0-28-cloud-amd64 (gcc-12)"
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        writeln!(f, "[    0.900000] Run /init as init process").unwrap();
        writeln!(f, "[    1.200000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100").unwrap();
    };
    let mut stages = Vec::new();
    let opts = WaitOptions {
        deadline: Duration::from_secs(60),
        console: Some(console.clone()),
        ..Default::default()
    };
    let (res, ()) = tokio::join!(
        wait_ready_with(addr, &opts, |p| if let Progress::Milestone { entry } = p {
            stages.push(entry.milestone)
        }),
        writer
    );
    let err = res.unwrap_err();
    let WaitError::Diagnosed { finding, last, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(finding.cause, Cause::InitExited);
    assert_eq!(finding.line, 3);
    assert_eq!(last.as_ref().unwrap().class, ErrorClass::Refused);
    assert_eq!(
        stages,
        vec![
            host_client::Milestone::KernelStarted,
            host_client::Milestone::Userspace
        ]
    );
}

#[tokio::test]
async fn empty_console_at_timeout_says_console_not_configured() {
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    std::fs::File::create(&console).unwrap();
    let err = wait_ready(free_port(), Duration::from_millis(300), Some(&console))
        .await
        .unwrap_err();
    let causes: Vec<_> = err.findings().iter().map(|f| f.cause).collect();
    assert_eq!(causes, vec![Cause::NoConsoleOutput]);
}

#[tokio::test]
async fn a_console_warning_does_not_stop_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    std::fs::write(&console, "[FAILED] Failed to start foo.service - Foo.\n").unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    serve(l, Arc::new(ready_ok));
    let ready = wait_ready(addr, Duration::from_secs(20), Some(&console))
        .await
        .unwrap();
    let causes: Vec<_> = ready.findings.iter().map(|f| f.cause).collect();
    assert_eq!(causes, vec![Cause::UnitFailed]);
}

#[tokio::test]
async fn a_stale_panic_in_the_console_does_not_fail_a_ready_vm() {
    // the console file of a previous boot, not truncated; the VM is in fact up
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    std::fs::write(
        &console,
        "[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n",
    )
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    serve(l, Arc::new(ready_ok));
    let ready = wait_ready(addr, Duration::from_secs(20), Some(&console))
        .await
        .unwrap();
    assert!(matches!(ready.via, ReadyVia::Ready { .. }));
    assert_eq!(
        ready.findings[0].cause,
        Cause::RootfsMountFailed,
        "still reported"
    );
}
