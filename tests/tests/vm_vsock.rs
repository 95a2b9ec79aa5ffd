//! The agent reached without the network (issue 13), on real parts: the test VMs get a
//! virtio-vsock device from rust-vmm's `vhost-device-vsock`, which exposes the guest on a unix
//! socket with Firecracker's hybrid protocol, so host-client talks to it exactly as to a
//! Firecracker VM's `uds_path`. Healthy boots answer over both transports and push their
//! readiness; the old fleet's network faults (no NIC, `undefined` in `ip=`, no virtio_net
//! module) are diagnosed by the agent itself over vsock, in agreement with the console.

use guest_proto::readiness::AgentState;
use guestkit_tests::vm::fixture::{TestBoot, TestVm, TEST_DEADLINE};
use guestkit_tests::vm::image::ModuleSet;
use guestkit_tests::vm::vsock::READY_PORT;
use guestkit_tests::vm::{boot::agent_addr, boot::TEST_TOKEN, cmdline, default_boot_args};
use host_client::wait::ReadyVia;
use host_client::{
    diagnose, wait_ready_with, Cause, ClientError, Finding, GuestClient, Progress, WaitError,
    WaitOptions,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn boot(mut boot: TestBoot, extra: &[(&str, &str)]) -> TestVm {
    let mut args =
        default_boot_args().extra("guest_agent.ready_port", Some(READY_PORT.to_string()));
    for (k, v) in extra {
        args = args.extra(*k, Some(v.to_string()));
    }
    if boot.cmdline.contains("undefined") {
        // The raw fault text stays as the test put it.
        boot.cmdline = format!("{} guest_agent.ready_port={READY_PORT}", boot.cmdline);
    } else {
        boot.cmdline = cmdline(&args, &[]).expect("cmdline");
    }
    boot.vsock = true;
    boot.boot()
}

/// The healthy VM: ready is pushed (no polling: the TCP address given answers nothing), then
/// `/health` answers over vsock and TCP alike, and vsock enforces the token.
#[test]
fn a_healthy_vm_pushes_its_readiness_and_answers_over_vsock_with_the_token() {
    let t = boot(TestBoot::healthy(), &[]);
    let dev = t.vm.vsock.as_ref().expect("vsock device");
    let vsock = dev.agent_addr();
    // A port nobody listens on: only the pushed line can say ready.
    let silent = SocketAddr::new(agent_addr().ip(), 9);
    let opts = WaitOptions {
        deadline: TEST_DEADLINE,
        token: Some(TEST_TOKEN.into()),
        ready_socket: Some(dev.ready_socket()),
        ..WaitOptions::default()
    };
    let ready =
        t.vm.net
            .run(move || async move { wait_ready_with(silent, &opts, |_| {}).await })
            .expect("namespace")
            .unwrap_or_else(|e| {
                panic!(
                    "no pushed readiness: {e}\n--- console ---\n{}",
                    t.vm.console()
                )
            });
    let line = match &ready.via {
        ReadyVia::Pushed { line } => line.clone(),
        other => panic!("ready without a push: {other:?}"),
    };
    assert_eq!(line.state, AgentState::Ready, "{line:?}");
    assert!(line.services.iter().any(|s| s.name == "serve"), "{line:?}");
    // The agent logs the push after the write: the host may have the line first.
    let end = Instant::now() + Duration::from_secs(60);
    let console = loop {
        let console = t.vm.console();
        if console.contains("readiness pushed seq=") || Instant::now() > end {
            break console;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stamp = |needle: &str| {
        console
            .lines()
            .find(|l| l.contains(needle))
            .and_then(host_client::diagnose::kernel_timestamp)
    };
    let (ready_at, pushed_at) = (stamp(r#""step":"ready""#), stamp("readiness pushed seq="));
    assert!(
        ready_at.is_some() && pushed_at.is_some(),
        "no ready / readiness pushed events on the console:\n{console}"
    );
    eprintln!(
        "pushed readiness: written {:.2} ms after the agent's ready event (guest clock); the \
         host had it {:?} after its wait began",
        (pushed_at.unwrap_or(0.0) - ready_at.unwrap_or(0.0)) * 1000.0,
        ready.elapsed
    );

    // /health over vsock and over TCP: the same agent.
    let v = vsock.clone();
    let (over_vsock, over_tcp) =
        t.vm.net
            .run(move || async move {
                let started = Instant::now();
                let a = GuestClient::new(v).health().await;
                let vs = started.elapsed();
                let started = Instant::now();
                let b = GuestClient::new(agent_addr()).health().await;
                eprintln!(
                    "/health round trip: vsock {vs:?}, tcp {:?}",
                    started.elapsed()
                );
                (a, b)
            })
            .expect("namespace");
    let over_vsock = over_vsock.expect("/health over vsock");
    let over_tcp = over_tcp.expect("/health over TCP");
    assert_eq!(over_vsock.status, "ok", "{over_vsock:?}");
    assert_eq!(over_vsock.version, over_tcp.version);
    assert!(over_vsock.network.is_some(), "{over_vsock:?}");

    // The token over vsock: refused without, served with.
    let v = vsock.clone();
    let (without, with) =
        t.vm.net
            .run(move || async move {
                let a = GuestClient::new(v.clone()).services().await;
                let b = GuestClient::new(v)
                    .with_token(Some(TEST_TOKEN.into()))
                    .services()
                    .await;
                (a, b)
            })
            .expect("namespace");
    match without {
        Err(e @ ClientError::Status { .. }) => {
            assert_eq!(e.status().map(|s| s.as_u16()), Some(401), "{e}")
        }
        other => panic!("services over vsock without the token: {other:?}"),
    }
    let services = with.expect("services over vsock with the token");
    assert!(services.iter().any(|s| s.name == "serve"), "{services:?}");
}

/// Waits on the TCP address and vsock with no console (a host that cannot read it); expects
/// the agent's own diagnosis over vsock. Also checks that the console says the same, and
/// prints how long after the console showed netinit's failure the wait returned.
fn diagnosed_over_vsock(t: &TestVm) -> Vec<Finding> {
    let dev = t.vm.vsock.as_ref().expect("vsock device");
    let opts = WaitOptions {
        deadline: TEST_DEADLINE,
        token: Some(TEST_TOKEN.into()),
        vsock: Some(dev.agent_addr()),
        ..WaitOptions::default()
    };
    // The host's clock when the console first shows netinit's failure.
    let console_path = t.vm.qemu.console.clone();
    let seen: Arc<Mutex<Option<Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&console_path).unwrap_or_default();
                if diagnose(&text)
                    .iter()
                    .any(|f| f.cause == Cause::NetinitFailed)
                {
                    *seen.lock().unwrap() = Some(Instant::now());
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let result =
        t.vm.net
            .run(move || async move {
                let r = wait_ready_with(agent_addr(), &opts, |p: &Progress| {
                    if let Progress::AnsweringOver { .. } = p {
                        eprintln!("progress: {p:?}");
                    }
                })
                .await;
                (r, Instant::now())
            })
            .expect("namespace");
    let (result, returned) = result;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    let (seen_in, findings) = match result {
        Ok(r) => panic!(
            "the VM became ready but should not have: {:?}\n--- console ---\n{}",
            r.via,
            t.vm.console()
        ),
        Err(e) => match e {
            WaitError::Diagnosed {
                seen_in, findings, ..
            } => (seen_in, findings),
            other => panic!(
                "expected a diagnosis over vsock, got: {other}\n--- console ---\n{}",
                t.vm.console()
            ),
        },
    };
    assert!(
        seen_in.contains("vsock"),
        "diagnosed from {seen_in}: {findings:#?}"
    );
    match *seen.lock().unwrap() {
        Some(at) => eprintln!(
            "diagnosed over vsock {:?} after the console showed netinit's failure",
            returned.saturating_duration_since(at)
        ),
        None => eprintln!("(the console showed no netinit failure before the wait returned)"),
    }
    // The console, read afterwards, agrees on every network finding the agent gave.
    let console = diagnose(&t.vm.console());
    for f in findings.iter().filter(|f| {
        matches!(
            f.cause,
            Cause::NetinitFailed | Cause::NoNetworkDevice | Cause::ModuleMissing
        )
    }) {
        assert!(
            console
                .iter()
                .any(|c| c.cause == f.cause && c.subject == f.subject),
            "the console does not agree with the agent on {f}: {console:#?}"
        );
    }
    findings
}

fn has(findings: &[Finding], cause: Cause, subject: &str) -> bool {
    findings
        .iter()
        .any(|f| f.cause == cause && f.subject.as_deref() == Some(subject))
}

/// No NIC at all: the agent says so over vsock.
#[test]
fn no_nic_is_diagnosed_by_the_agent_over_vsock() {
    let mut b = TestBoot::healthy();
    b.nic = false;
    let t = boot(b, &[("guest_netinit.link_timeout", "3s")]);
    let findings = diagnosed_over_vsock(&t);
    assert!(
        has(&findings, Cause::NoNetworkDevice, "eth0"),
        "{findings:#?}"
    );
}

/// F3: `undefined` in `ip=`: the agent's diagnosis names the bad field.
#[test]
fn undefined_in_ip_is_diagnosed_by_the_agent_over_vsock() {
    let mut args = default_boot_args();
    args.ip = None;
    let mut b = TestBoot::healthy();
    b.cmdline =
        cmdline(&args, &["ip=192.168.100.2::undefined:undefined::eth0:off"]).expect("cmdline");
    let t = boot(b, &[]);
    let findings = diagnosed_over_vsock(&t);
    let failed = findings
        .iter()
        .find(|f| f.cause == Cause::NetinitFailed)
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(failed.subject.as_deref(), Some("bad-config"), "{failed}");
    assert!(failed.evidence.contains("undefined"), "{failed}");
}

/// F1: no virtio_net module in the image (the vsock transport is there): the agent names the
/// missing module.
#[test]
fn missing_virtio_net_is_diagnosed_by_the_agent_over_vsock() {
    let mut b = TestBoot::healthy();
    b.image.modules = ModuleSet::NoVirtioNet;
    let t = boot(b, &[]);
    let findings = diagnosed_over_vsock(&t);
    assert!(
        has(&findings, Cause::ModuleMissing, "virtio_net"),
        "{findings:#?}"
    );
}
