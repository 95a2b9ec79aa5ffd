//! The pusher behind its [`Connector`]: a unix socket or an in-memory pipe stands in for the
//! host (this machine must never connect to a real CID 2).

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;

fn summary(state: AgentState) -> Summary {
    Summary {
        state,
        services: vec![ServiceSummary {
            name: "serve".into(),
            state: ServiceState::Running,
            required: true,
        }],
        network: None,
        reasons: vec![],
    }
}

/// Connects to a unix socket; counts attempts.
struct UnixConnector {
    path: std::path::PathBuf,
    attempts: Arc<AtomicUsize>,
}

impl Connector for UnixConnector {
    type Conn = tokio::net::UnixStream;
    fn connect(&self) -> Pin<Box<dyn Future<Output = std::io::Result<Self::Conn>> + Send + '_>> {
        self.attempts.fetch_add(1, SeqCst);
        Box::pin(tokio::net::UnixStream::connect(self.path.clone()))
    }
    fn describe(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

/// An in-memory pipe whose far end is never read and whose buffer is tiny: writes stall.
struct StallConnector(Mutex<Vec<tokio::io::DuplexStream>>);

impl Connector for StallConnector {
    type Conn = tokio::io::DuplexStream;
    fn connect(&self) -> Pin<Box<dyn Future<Output = std::io::Result<Self::Conn>> + Send + '_>> {
        let (a, b) = tokio::io::duplex(8);
        self.0.lock().unwrap().push(b);
        Box::pin(async { Ok(a) })
    }
    fn describe(&self) -> String {
        "pipe".into()
    }
}

/// A connect that never finishes.
struct HangConnector;

impl Connector for HangConnector {
    type Conn = tokio::io::DuplexStream;
    fn connect(&self) -> Pin<Box<dyn Future<Output = std::io::Result<Self::Conn>> + Send + '_>> {
        Box::pin(std::future::pending())
    }
    fn describe(&self) -> String {
        "hang".into()
    }
}

type Events = Arc<Mutex<Vec<(Level, Event)>>>;

fn recorder() -> (Events, impl Fn(Level, Event) + Send) {
    let ev: Events = Arc::default();
    let e2 = ev.clone();
    (ev, move |l, e| e2.lock().unwrap().push((l, e)))
}

async fn read_line(l: &tokio::net::UnixListener) -> ReadinessLine {
    let (mut s, _) = l.accept().await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1);
    ReadinessLine::parse(&buf).unwrap()
}

#[test]
fn backoff_doubles_to_its_cap_and_resets() {
    let mut b = Backoff::new();
    let steps: Vec<u64> = (0..10).map(|_| b.step().as_millis() as u64).collect();
    assert_eq!(
        steps,
        [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
    );
    b.reset();
    assert_eq!(b.step(), Backoff::FIRST);
}

#[test]
fn seq_increases_and_summary_is_carried() {
    let mut p = Pusher::new(HangConnector, AuthMode::Token, Instant::now());
    let a = p.line(&summary(AgentState::Starting));
    let b = p.line(&summary(AgentState::Ready));
    assert_eq!((a.seq, b.seq), (1, 2));
    assert_eq!(b.state, AgentState::Ready);
    assert_eq!(b.auth, Some(AuthMode::Token));
    assert_eq!(b.services[0].name, "serve");
}

/// Nobody listening: one warning for the whole outage (not one per retry), retries with
/// backoff, and the line arrives once the host listens; a change made meanwhile is carried by
/// the next push (coalesced), not queued as one push each.
#[tokio::test]
async fn retries_quietly_until_the_host_listens_and_coalesces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ready.sock");
    let attempts = Arc::new(AtomicUsize::new(0));
    let conn = UnixConnector {
        path: path.clone(),
        attempts: attempts.clone(),
    };
    // A socket file nobody listens on: connect is refused, like vsock with no host listener.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let (tx, rx) = watch::channel(Some(summary(AgentState::Starting)));
    let (events, emit) = recorder();
    let task = tokio::spawn(Pusher::new(conn, AuthMode::Token, Instant::now()).run(rx, emit));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Two changes while the host is away: only the newest will be pushed.
    tx.send(Some(summary(AgentState::Degraded))).unwrap();
    tx.send(Some(summary(AgentState::Ready))).unwrap();
    let n = attempts.load(SeqCst);
    // 50 + 100 + 200 ms of pauses in 400 ms: 3-4 attempts, not a busy loop.
    assert!((2..=5).contains(&n), "{n} attempts in 400 ms");
    let warns: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, _)| *l == Level::Warn)
        .cloned()
        .collect();
    assert_eq!(warns.len(), 1, "{warns:?}");
    let Event::Warning { message } = &warns[0].1 else {
        panic!("{warns:?}")
    };
    assert!(message.contains("connection refused"), "{message}");
    std::fs::remove_file(&path).unwrap();
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(3), read_line(&l))
        .await
        .expect("pushed");
    assert_eq!(got.state, AgentState::Ready);
    assert_eq!(got.seq, n as u64 + 1, "one seq per line built");
    // No further push without a change.
    assert!(tokio::time::timeout(Duration::from_millis(300), l.accept())
        .await
        .is_err());
    // A change after success is pushed at once (no backoff left over), then shutting down ends it.
    let t = Instant::now();
    tx.send(Some(summary(AgentState::ShuttingDown))).unwrap();
    let got = read_line(&l).await;
    assert_eq!(got.state, AgentState::ShuttingDown);
    assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("ends after shutting_down")
        .unwrap();
    let ev = events.lock().unwrap();
    let pushed: Vec<_> = ev
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Step { detail, .. } => Some(detail.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(pushed.len(), 2, "{pushed:?}");
    assert!(
        pushed[0].starts_with(&format!("readiness pushed seq={}", n + 1)),
        "{pushed:?}"
    );
}

/// A connect that never completes and a host that never reads are each cut off by their
/// timeout, and each is reported once.
#[tokio::test]
async fn connect_and_write_are_bounded() {
    let p = Pusher::new(HangConnector, AuthMode::Token, Instant::now());
    let line = p.connector.describe(); // "hang"
    assert_eq!(p.push_once(&line).await, Err(FailureKind::ConnectTimeout));
    let p = Pusher::new(
        StallConnector(Mutex::default()),
        AuthMode::Token,
        Instant::now(),
    );
    let big = "x".repeat(64);
    assert_eq!(p.push_once(&big).await, Err(FailureKind::WriteTimeout));
    let mut p = p;
    assert!(p.note(1, Err(FailureKind::WriteTimeout)).is_some());
    assert!(p.note(2, Err(FailureKind::WriteTimeout)).is_none());
    assert!(p.note(3, Err(FailureKind::Refused)).is_some());
    assert!(matches!(p.note(4, Ok(())), Some((Level::Info, _))));
    assert!(
        p.note(5, Err(FailureKind::Refused)).is_some(),
        "reported again after a success"
    );
}

#[test]
fn summary_states() {
    use guest_proto::api::ServiceStatus;
    let svc = |state| ServiceStatus {
        name: "web".into(),
        state,
        required: true,
        pid: None,
        restarts: 0,
        last_exit: None,
        since: String::new(),
        rss_bytes: None,
        cpu_seconds: None,
        message: Some("changes every second".into()),
        systemd_unit: None,
    };
    let f = std::path::Path::new("/run/x/state.json");
    let s = summarize(Ok(Some(vec![svc(ServiceState::Starting)])), f, None, false);
    assert_eq!(s.state, AgentState::Starting);
    assert_eq!(s.reasons, ["required service web is starting"]);
    let s = summarize(Ok(Some(vec![svc(ServiceState::CrashLoop)])), f, None, true);
    assert_eq!(s.state, AgentState::Degraded);
    let s = summarize(Ok(Some(vec![svc(ServiceState::Running)])), f, None, false);
    assert_eq!(s.state, AgentState::Ready);
    let s = summarize(Ok(None), f, None, false);
    assert!(
        s.reasons[0].contains("/run/x/state.json"),
        "{:?}",
        s.reasons
    );
}
