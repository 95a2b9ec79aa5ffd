//! A real VM boots with guestkit inside (issue 5): Debian's cloud kernel under QEMU (TCG), the
//! initramfs image with guest-netinit as PID 1 in init mode and the agent as the next init, a
//! virtio-net NIC on a TAP in the test's bridge `fcbr0`. The host side is host-client only:
//! `wait_ready` following the console, then the agent's API.

use guest_proto::report::Outcome;
use guestkit_tests::vm::fixture::{TestBoot, TEST_DEADLINE};
use guestkit_tests::vm::image::{DEFAULT_AGENT_CONFIG, NETINIT_PATH};
use guestkit_tests::vm::GUEST_IP;
use host_client::Milestone;
use std::net::IpAddr;

/// The healthy image, plus a second, non-PID-1 run of guest-netinit started by the supervisor
/// once the agent runs: the network is already configured by then, so this is the re-run that
/// must succeed without changing anything (replace semantics, EEXIST is not an error).
fn healthy_with_rerun() -> TestBoot {
    let mut boot = TestBoot::healthy();
    boot.image.agent_config = format!(
        "{DEFAULT_AGENT_CONFIG}\n[services.netinit-again]\ncommand = [\"{NETINIT_PATH}\", \"--no-probe\"]\nrestart = \"never\"\n"
    );
    boot
}

#[test]
fn healthy_boot_is_ready_with_network_block_and_full_timeline_and_netinit_rerun_is_idempotent() {
    let t = healthy_with_rerun().boot();
    let report = match t.vm.wait(TEST_DEADLINE) {
        Ok(r) => r,
        Err(e) => panic!("VM not ready: {e}\n--- console ---\n{}", t.vm.console()),
    };

    // Every stage of the boot shows on the console, in order.
    let stages: Vec<Milestone> = report.ready.timeline.iter().map(|e| e.milestone).collect();
    for m in [
        Milestone::KernelStarted,
        Milestone::Userspace,
        Milestone::NetinitDone,
        Milestone::AgentListening,
    ] {
        assert!(
            stages.contains(&m),
            "timeline lacks {m}: {stages:?}\n{}",
            t.vm.console()
        );
    }
    let mut sorted = stages.clone();
    sorted.sort();
    assert_eq!(stages, sorted, "milestones out of order");
    // The agent (the initramfs's init, no journal) writes `listening` to the kernel log: it
    // has a kernel time, on the same clock as netinit's `done`, and not before it.
    let kernel_time = |m: Milestone| {
        report
            .ready
            .timeline
            .iter()
            .find(|e| e.milestone == m)
            .and_then(|e| e.kernel_time)
    };
    let (done, listening) = (
        kernel_time(Milestone::NetinitDone),
        kernel_time(Milestone::AgentListening),
    );
    assert!(
        matches!((done, listening), (Some(d), Some(l)) if l >= d),
        "netinit done {done:?}, agent listening {listening:?}: want both kernel times, in order\n{}",
        t.vm.console()
    );

    // /health carries netinit's report: eth0 configured from the cmdline.
    let health = t.vm.health().expect("GET /health");
    assert_eq!(health.status, "ok", "{health:?}");
    let net = health
        .network
        .as_ref()
        .expect("/health has no network block");
    assert_eq!(net.outcome, Outcome::Configured, "{net:?}");
    assert_eq!(net.interface.as_deref(), Some("eth0"));
    assert!(
        net.addresses
            .iter()
            .any(|a| a.address == IpAddr::V4(GUEST_IP) && a.prefix_len == 24),
        "{:?}",
        net.addresses
    );
    // PID 1 loaded the NIC's driver itself (F1): its load-modules step on the console. (The
    // state file, hence /health, may already be the second run's, which loads nothing.)
    let console = t.vm.console();
    assert!(
        console.lines().any(|l| l.contains("GUESTKIT:")
            && l.contains("\"step\":\"load-modules\"")
            && l.contains("\"ok\":true")
            && l.contains("virtio_net")),
        "no load-modules step naming virtio_net on the console:\n{console}"
    );
    let memory = health.memory.expect("/health has no memory block");
    assert!(memory.total_bytes > 100 << 20, "{memory:?}");

    // The second netinit run (not PID 1) exited 0: re-applying is not an error.
    let services =
        t.vm.client(|c| async move { c.services().await })
            .expect("namespace")
            .expect("GET /services");
    let rerun = services
        .iter()
        .find(|s| s.name == "netinit-again")
        .expect("netinit-again in /services");
    let exit = wait_for_exit(&t, "netinit-again", rerun.last_exit.clone());
    assert_eq!(exit.as_deref(), Some("exit 0"), "{services:?}");
}

/// The service's `last_exit`, polling `/services` while it has not exited yet (bounded).
fn wait_for_exit(
    t: &guestkit_tests::vm::fixture::TestVm,
    name: &'static str,
    first: Option<String>,
) -> Option<String> {
    let mut last = first;
    for _ in 0..100 {
        if last.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let services =
            t.vm.client(|c| async move { c.services().await })
                .expect("namespace")
                .expect("GET /services");
        last = services
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.last_exit.clone());
    }
    last
}
