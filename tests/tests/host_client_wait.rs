//! host-client's `wait_ready` against the real `guest-agent serve`:
//! - in the Firecracker-like topology (host bridge fcbr0, guest eth0 over a veth): the wait
//!   runs in the host namespace while the guest has no address yet (probes time out), then the
//!   guest gets 192.168.100.9 and the agent starts late; the agent's stdout is the "console",
//!   so the wait also reports the agent's `listening` event;
//! - on loopback: a token-guarded agent (waiting needs no token, the other routes do), and an
//!   agent without a supervisor (503 until the deadline, the reason carried in the error).

use guestkit_tests::{bin, Namespace, Topology};
use host_client::wait::ReadyVia;
use host_client::{Milestone, Progress, Stage, WaitError, WaitOptions};
use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A state dir whose supervisor state says "ready" (no required service).
fn ready_state_dir(dir: &Path) {
    let state = serde_json::json!({
        "supervisorPid": std::process::id(),
        "startedAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-01-01T00:00:00Z",
        "ready": true,
        "services": [],
    });
    std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
}

fn serve_cmd(cmd: &mut Command, listen: &str, dir: &Path) {
    std::fs::write(dir.join("cmdline"), "console=ttyS0\n").unwrap();
    // An agent with no token warns on its console (and refuses guarded routes): give it one.
    if !dir.join("token").exists() {
        std::fs::write(dir.join("token"), "wait-test-token\n").unwrap();
    }
    // No vsock listener: this machine's vsock reaches its real host, and test agents running
    // side by side would fight over the port.
    cmd.args([
        "serve",
        "--listen",
        listen,
        "--vsock-port",
        "0",
        "--state-dir",
    ])
    .arg(dir)
    .arg("--token-file")
    .arg(dir.join("token"))
    .arg("--cmdline")
    .arg(dir.join("cmdline"))
    .arg("--netinit-state")
    .arg(dir.join("netinit.json"));
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_loopback() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs `f` on a thread that has joined `ns`'s network namespace.
fn in_namespace<T: Send>(ns: &Namespace, f: impl FnOnce() -> T + Send) -> T {
    let file = File::open(ns.path()).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a namespace fd we hold open; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

#[test]
fn waits_for_an_agent_that_starts_late_in_the_guest_namespace() {
    let topo = Topology::new();
    topo.attach_guest_nic("eth0");
    let dir = tempfile::tempdir().unwrap();
    ready_state_dir(dir.path());
    let console = dir.path().join("console.log");
    File::create(&console).unwrap();

    let opts = WaitOptions {
        deadline: Duration::from_secs(60),
        console: Some(console.clone()),
        ..Default::default()
    };
    let addr: SocketAddr = "192.168.100.9:8080".parse().unwrap();
    let mut seen = Vec::new();
    let (result, _agent) = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            in_namespace(&topo.host, || {
                block_on(host_client::wait_ready_with(addr, &opts, |p| {
                    seen.push(p.clone())
                }))
            })
        });
        // the "VM" boots: no address for a while (host probes go unanswered), then the
        // network comes up and the agent starts
        std::thread::sleep(Duration::from_millis(600));
        topo.guest
            .ip(["addr", "add", "192.168.100.9/24", "dev", "eth0"]);
        topo.guest.ip(["link", "set", "eth0", "up"]);
        let mut cmd = topo.guest.setns_command(bin("guest-agent"));
        serve_cmd(&mut cmd, "192.168.100.9:8080", dir.path());
        cmd.stdout(File::options().append(true).open(&console).unwrap())
            .stderr(Stdio::null());
        let agent = Killed(cmd.spawn().expect("start guest-agent serve"));
        (waiter.join().unwrap(), agent)
    });
    let ready = result.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(ready.via, ReadyVia::Ready { ref body } if body.ready),
        "{:?}",
        ready.via
    );
    assert!(ready.attempts > 1, "{}", ready.attempts);
    let milestones: Vec<_> = ready.timeline.iter().map(|e| e.milestone).collect();
    assert_eq!(
        milestones,
        [Milestone::AgentListening],
        "{:?}",
        ready.timeline
    );
    eprintln!(
        "ready after {:?} ({} attempts), progress: {}",
        ready.elapsed,
        ready.attempts,
        serde_json::to_string(&seen).unwrap()
    );
}

#[test]
fn token_guarded_agent() {
    let dir = tempfile::tempdir().unwrap();
    ready_state_dir(dir.path());
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let addr = free_loopback();
    let mut cmd = Command::new(bin("guest-agent"));
    serve_cmd(&mut cmd, &addr.to_string(), dir.path());
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let _agent = Killed(cmd.spawn().unwrap());

    // `/ready` is open like `/health` (the agent's choice); a token is not needed to wait
    let no_token = block_on(host_client::wait_ready(addr, Duration::from_secs(30), None)).unwrap();
    assert!(
        matches!(no_token.via, ReadyVia::Ready { .. }),
        "{:?}",
        no_token.via
    );
    let opts = WaitOptions {
        deadline: Duration::from_secs(30),
        token: Some("s3cret".into()),
        ..Default::default()
    };
    let with_token = block_on(host_client::wait_ready_with(addr, &opts, |_| {})).unwrap();
    assert!(
        matches!(with_token.via, ReadyVia::Ready { .. }),
        "{:?}",
        with_token.via
    );

    // the typed client on the other routes
    let client = host_client::GuestClient::new(addr).with_token(Some("s3cret".into()));
    let services = block_on(client.services()).unwrap();
    assert!(services.is_empty());
    let metrics = block_on(client.metrics()).unwrap();
    assert!(!metrics.is_empty());
    let denied = block_on(host_client::GuestClient::new(addr).services()).unwrap_err();
    assert_eq!(denied.status().map(|s| s.as_u16()), Some(401), "{denied}");
}

#[test]
fn agent_without_supervisor_times_out_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_loopback();
    let mut cmd = Command::new(bin("guest-agent"));
    serve_cmd(&mut cmd, &addr.to_string(), dir.path());
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let _agent = Killed(cmd.spawn().unwrap());
    let mut answering = Vec::new();
    let opts = WaitOptions {
        deadline: Duration::from_secs(3),
        ..Default::default()
    };
    let err = block_on(host_client::wait_ready_with(addr, &opts, |p| {
        if let Progress::Answering { status, .. } = p {
            answering.push(*status)
        }
    }))
    .unwrap_err();
    let WaitError::Timeout { last, stage, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*stage, Some(Stage::AgentAnswering));
    assert_eq!(last.as_ref().unwrap().status, Some(503));
    assert!(err.to_string().contains("no supervisor state"), "{err}");
    assert_eq!(answering, [503]);
}
