//! guest-netinit end to end: the built binary (the static one under `cargo xtask test`) runs
//! inside a test-made guest namespace with a kernel cmdline file, a temporary `--root` and an
//! `--events` file. Results are read back from the kernel with netlink, from the files it
//! wrote, from its exit code, its `state.json` and its console event lines.
//!
//! CLI and exit codes: `/work/notes/netinit-contract.md`; behaviour: DESIGN.md §3.

use guest_proto::{ConfigSource, ConsoleEvent, Event, Level, NetinitReport, Outcome};
use guestkit_tests::readback::Route;
use guestkit_tests::{NetinitOutcome, NetinitRun, Topology, GATEWAY, GUEST_NIC, HOST_BRIDGE};
use std::net::IpAddr;
use std::process::Command;

const STATIC_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 \
    ip=192.168.100.2::192.168.100.1:255.255.255.0:vm1:eth0:off:10.0.0.53";
const HANDOFF: &str = "run/systemd/network/00-guest-netinit-eth0.network";
const TEMPLATE: &str = "etc/guest-netinit/eth0.network";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address literal")
}

/// The IPv4 addresses of the guest NIC as `a.b.c.d/len` strings.
fn guest_addresses(topo: &Topology) -> Vec<String> {
    topo.guest
        .ipv4_addresses(GUEST_NIC)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Asserts the guest has exactly one default route, via the gateway, out of the guest NIC.
fn assert_default_route_via_gateway(topo: &Topology) -> Route {
    let index = topo.guest.expect_link(GUEST_NIC).index;
    let defaults = topo.guest.default_routes();
    assert_eq!(defaults.len(), 1, "default routes: {defaults:?}");
    assert_eq!(defaults[0].gateway, Some(GATEWAY), "{defaults:?}");
    assert_eq!(defaults[0].oif, Some(index), "{defaults:?}");
    defaults[0]
}

/// Asserts nothing was applied: no IPv4 address, no route, link still down.
fn assert_nothing_applied(topo: &Topology, out: &NetinitOutcome) {
    assert!(
        guest_addresses(topo).is_empty(),
        "addresses were applied: {:?}\n{}",
        guest_addresses(topo),
        out.describe()
    );
    assert!(
        topo.guest.routes_v4().is_empty(),
        "routes were applied: {:?}",
        topo.guest.routes_v4()
    );
    assert!(!topo.guest.expect_link(GUEST_NIC).up, "link was set up");
}

fn step_names(report: &NetinitReport) -> Vec<&str> {
    report.steps.iter().map(|s| s.name.as_str()).collect()
}

fn failed_event(out: &NetinitOutcome) -> &ConsoleEvent {
    let failed = out.events_where(|e| matches!(e, Event::Failed { .. }));
    assert_eq!(failed.len(), 1, "one `failed` event\n{}", out.describe());
    assert_eq!(failed[0].lvl, Level::Error);
    failed[0]
}

#[test]
fn static_ip_configures_address_route_dns_hostname_handoff_and_probes_gateway() {
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    let run = NetinitRun::new(STATIC_CMDLINE);
    let hostname_before = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();

    let out = run.run_in(&topo.guest);
    out.assert_exit(0);

    // The kernel's view.
    assert_eq!(
        guest_addresses(&topo),
        ["192.168.100.2/24"],
        "{}",
        out.describe()
    );
    assert!(topo.guest.expect_link(GUEST_NIC).up, "eth0 should be up");
    assert_default_route_via_gateway(&topo);
    assert!(topo.guest_reaches_gateway(), "gateway should answer a ping");

    // Files under --root.
    let resolv = run
        .root_file("etc/resolv.conf")
        .expect("etc/resolv.conf written");
    assert!(
        resolv.lines().any(|l| l.trim() == "nameserver 10.0.0.53"),
        "{resolv}"
    );
    let hostname = run.root_file("etc/hostname").expect("etc/hostname written");
    assert_eq!(hostname.trim(), "vm1");
    // With --root the machine's hostname is not touched.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        hostname_before
    );
    let handoff = run.root_file(HANDOFF).expect("networkd handoff written");
    assert!(
        handoff
            .lines()
            .any(|l| l.trim() == "Address=192.168.100.2/24"),
        "{handoff}"
    );
    assert!(
        handoff.lines().any(|l| l.trim() == "Gateway=192.168.100.1"),
        "{handoff}"
    );
    assert!(handoff.contains("KeepConfiguration="), "{handoff}");
    assert!(
        handoff.lines().any(|l| l.trim() == "Name=eth0"),
        "{handoff}"
    );

    // state.json.
    let report = out.report();
    assert_eq!(report.outcome, Outcome::Configured);
    assert_eq!(report.interface.as_deref(), Some(GUEST_NIC));
    assert_eq!(report.source, Some(ConfigSource::Cmdline));
    assert_eq!(report.addresses.len(), 1, "{report:?}");
    assert_eq!(report.addresses[0].address, ip("192.168.100.2"));
    assert_eq!(report.addresses[0].prefix_len, 24);
    assert_eq!(report.gateway, Some(ip("192.168.100.1")));
    assert_eq!(report.dns, [ip("10.0.0.53")]);
    assert_eq!(report.hostname.as_deref(), Some("vm1"));
    assert!(report.error.is_none(), "{:?}", report.error);
    assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
    assert!(
        report
            .handoff_path
            .as_deref()
            .is_some_and(|p| p.ends_with("00-guest-netinit-eth0.network")),
        "{:?}",
        report.handoff_path
    );
    for step in [
        "read-config",
        "find-link",
        "apply",
        "files",
        "handoff",
        "probe",
    ] {
        let s = report.steps.iter().find(|s| s.name == step);
        let s = s.unwrap_or_else(|| panic!("no step {step} in {:?}", step_names(report)));
        assert!(s.ok, "step {step} not ok: {s:?}");
    }
    // The probe reached the bridge: its MAC is the bridge's.
    let probe = report.probe.as_ref().expect("probe result");
    assert!(probe.ok, "{probe:?}");
    assert_eq!(probe.target, IpAddr::V4(GATEWAY));
    assert!(probe.rtt_us.is_some(), "{probe:?}");
    let bridge_mac = topo.host.expect_link(HOST_BRIDGE).mac.expect("bridge MAC");
    let probe_mac = probe.mac.expect("gateway MAC in probe");
    assert_eq!(probe_mac.to_string(), mac_text(&bridge_mac));

    // Console events: start first, done last, all parseable.
    assert!(out.bad_event_lines.is_empty(), "{:?}", out.bad_event_lines);
    assert!(
        matches!(
            out.events.first().map(|e| &e.event),
            Some(Event::Start { .. })
        ),
        "{}",
        out.describe()
    );
    match out.events.last().map(|e| &e.event) {
        Some(Event::Done {
            interface,
            addresses,
            ..
        }) => {
            assert_eq!(interface.as_deref(), Some(GUEST_NIC));
            assert_eq!(addresses, &["192.168.100.2/24"]);
        }
        other => panic!("last event should be done: {other:?}\n{}", out.describe()),
    }
    // A human line per step on stdout.
    for step in ["find-link", "apply", "probe"] {
        assert!(
            out.stdout.contains(step),
            "no `{step}` line\n{}",
            out.describe()
        );
    }
}

/// `aa:bb:cc:dd:ee:ff`, the way guest_proto::MacAddr displays.
fn mac_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn template_placeholder_is_filled_from_the_cmdline() {
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    let run = NetinitRun::new("console=ttyS0 guest.vm_ip=192.168.100.7");
    run.write_root_file(
        TEMPLATE,
        "[Match]\nName=eth0\n\n[Network]\nAddress=__VM_IP__/24\nGateway=192.168.100.1\nDNS=10.0.0.53\n",
    );

    let out = run.run_in(&topo.guest);
    out.assert_exit(0);
    assert_eq!(
        guest_addresses(&topo),
        ["192.168.100.7/24"],
        "{}",
        out.describe()
    );
    assert_default_route_via_gateway(&topo);
    let report = out.report();
    assert_eq!(report.source, Some(ConfigSource::Template));
    assert_eq!(report.outcome, Outcome::Configured);
    assert!(
        report.probe.as_ref().is_some_and(|p| p.ok),
        "{:?}",
        report.probe
    );
    let handoff = run.root_file(HANDOFF).expect("handoff written");
    assert!(handoff.contains("Address=192.168.100.7/24"), "{handoff}");
    assert!(!handoff.contains("__VM_IP__"), "{handoff}");
}

#[test]
fn unfilled_placeholder_exits_3_naming_it_and_applies_nothing() {
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    let run = NetinitRun::new("console=ttyS0 guest.other=1");
    run.write_root_file(
        TEMPLATE,
        "[Match]\nName=eth0\n\n[Network]\nAddress=__VM_IP__/24\nGateway=192.168.100.1\n",
    );

    let out = run.run_in(&topo.guest);
    out.assert_exit(3);
    assert!(
        out.stderr.contains("__VM_IP__"),
        "stderr should name the placeholder\n{}",
        out.describe()
    );
    assert_nothing_applied(&topo, &out);

    let report = out.report();
    assert_eq!(report.outcome, Outcome::Failed);
    let error = report.error.as_ref().expect("error in the report");
    assert_eq!(error.exit_code, 3);
    assert_eq!(error.class, "bad-config");
    assert!(error.message.contains("__VM_IP__"), "{error:?}");
    match &failed_event(&out).event {
        Event::Failed { failure } => assert_eq!(failure.exit_code, 3),
        _ => unreachable!(),
    }
    // Nothing half-applied on disk either: only the template and the report.
    assert_eq!(
        run.root_files(),
        [
            TEMPLATE.to_string(),
            "run/guest-netinit/state.json".to_string()
        ]
    );
}

#[test]
fn second_run_is_idempotent() {
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    let run = NetinitRun::new(STATIC_CMDLINE);

    let first = run.run_in(&topo.guest);
    first.assert_exit(0);
    let addresses = guest_addresses(&topo);
    let routes = topo.guest.routes_v4();
    let handoff = run.root_file(HANDOFF);
    let resolv = run.root_file("etc/resolv.conf");

    let second = run.run_in(&topo.guest);
    second.assert_exit(0);
    assert_eq!(guest_addresses(&topo), addresses, "{}", second.describe());
    assert_eq!(addresses, ["192.168.100.2/24"]);
    assert_eq!(topo.guest.routes_v4(), routes);
    assert_default_route_via_gateway(&topo);
    assert_eq!(run.root_file(HANDOFF), handoff);
    assert_eq!(run.root_file("etc/resolv.conf"), resolv);

    let (a, b) = (first.report(), second.report());
    assert_eq!(b.outcome, Outcome::Configured);
    assert!(b.error.is_none(), "{:?}", b.error);
    assert_eq!(
        (
            &a.addresses,
            &a.gateway,
            &a.routes,
            &a.dns,
            &a.hostname,
            &a.interface
        ),
        (
            &b.addresses,
            &b.gateway,
            &b.routes,
            &b.dns,
            &b.hostname,
            &b.interface
        )
    );
    assert!(topo.guest_reaches_gateway());
}

#[test]
fn interface_appearing_late_is_waited_for() {
    let topo = Topology::new();
    let mut run = NetinitRun::new(STATIC_CMDLINE);
    run.arg("--link-timeout").arg("20s");

    let mut child = run.spawn_in(&topo.guest);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let still_waiting = child.try_wait().expect("poll guest-netinit").is_none();
    topo.attach_guest_nic(GUEST_NIC);
    let out = run.finish(child);
    assert!(
        still_waiting,
        "guest-netinit exited before eth0 existed\n{}",
        out.describe()
    );

    out.assert_exit(0);
    assert_eq!(
        guest_addresses(&topo),
        ["192.168.100.2/24"],
        "{}",
        out.describe()
    );
    assert_default_route_via_gateway(&topo);
    let report = out.report();
    let find = report
        .steps
        .iter()
        .find(|s| s.name == "find-link")
        .expect("find-link step");
    assert!(find.ok, "{find:?}");
    assert_eq!(report.outcome, Outcome::Configured);
}

#[test]
fn interface_never_appearing_exits_4_naming_it() {
    let topo = Topology::new();
    let mut run = NetinitRun::new(STATIC_CMDLINE);
    run.arg("--link-timeout").arg("1s");

    let out = run.run_in(&topo.guest);
    out.assert_exit(4);
    assert!(
        out.stderr.contains("eth0"),
        "stderr should name eth0\n{}",
        out.describe()
    );
    let report = out.report();
    assert_eq!(report.outcome, Outcome::Failed);
    let error = report.error.as_ref().expect("error in the report");
    assert_eq!((error.exit_code, error.class.as_str()), (4, "no-device"));
    assert!(error.message.contains("eth0"), "{error:?}");
    let no_device = out.events_where(|e| matches!(e, Event::NoDevice { .. }));
    match no_device.first().map(|e| &e.event) {
        Some(Event::NoDevice {
            interface,
            waited_ms,
        }) => {
            assert_eq!(interface, GUEST_NIC);
            assert!(
                *waited_ms >= 1000,
                "waited only {waited_ms} ms of a 1 s timeout"
            );
        }
        _ => panic!("no `no-device` event\n{}", out.describe()),
    }
    failed_event(&out);
    assert!(
        run.root_file(HANDOFF).is_none(),
        "no handoff without a link"
    );
}

#[test]
fn gateway_absent_is_a_warning_not_a_failure() {
    let topo = Topology::without_gateway();
    topo.attach_guest_nic(GUEST_NIC);
    let mut run = NetinitRun::new(STATIC_CMDLINE);
    run.arg("--probe-timeout").arg("500ms");

    let out = run.run_in(&topo.guest);
    out.assert_exit(0);
    assert_eq!(
        guest_addresses(&topo),
        ["192.168.100.2/24"],
        "{}",
        out.describe()
    );
    assert_default_route_via_gateway(&topo);
    let report = out.report();
    assert_eq!(report.outcome, Outcome::Configured);
    assert!(report.error.is_none());
    let probe = report.probe.as_ref().expect("probe result");
    assert!(!probe.ok, "nothing answers 192.168.100.1, yet: {probe:?}");
    assert!(probe.mac.is_none());
    assert!(
        report.warnings.iter().any(|w| w.contains("192.168.100.1")),
        "a warning should name the gateway: {:?}",
        report.warnings
    );
    let warnings = out.events_where(|e| matches!(e, Event::Warning { .. }));
    assert!(!warnings.is_empty(), "no warning event\n{}", out.describe());
    assert!(warnings.iter().all(|w| w.lvl == Level::Warn));
}

#[test]
fn cmdline_wins_over_a_conflicting_template_and_the_conflict_is_reported() {
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    let run =
        NetinitRun::new("console=ttyS0 ip=192.168.100.2::192.168.100.1:255.255.255.0::eth0:off");
    run.write_root_file(
        TEMPLATE,
        "[Match]\nName=eth0\n\n[Network]\nAddress=192.168.100.50/24\nGateway=192.168.100.1\n",
    );

    let out = run.run_in(&topo.guest);
    out.assert_exit(0);
    assert_eq!(
        guest_addresses(&topo),
        ["192.168.100.2/24"],
        "{}",
        out.describe()
    );
    let report = out.report();
    assert_eq!(report.source, Some(ConfigSource::Cmdline));
    let conflict = report
        .conflicts
        .iter()
        .find(|c| c.source == "template")
        .unwrap_or_else(|| panic!("no template conflict in {:?}", report.conflicts));
    assert!(conflict.resolution.contains("cmdline"), "{conflict:?}");
    let events =
        out.events_where(|e| matches!(e, Event::Conflict { source, .. } if source == "template"));
    assert_eq!(events.len(), 1, "{}", out.describe());

    let handoff = run.root_file(HANDOFF).expect("handoff written");
    assert!(
        handoff
            .lines()
            .any(|l| l.trim() == "Address=192.168.100.2/24"),
        "{handoff}"
    );
    assert!(!handoff.contains("192.168.100.50"), "{handoff}");
    assert!(handoff.contains("KeepConfiguration="), "{handoff}");
}

#[test]
fn bad_ip_field_exits_3_naming_the_field_and_applies_nothing() {
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    let run = NetinitRun::new("console=ttyS0 ip=192.168.100.2::undefined:undefined::eth0:off");

    let out = run.run_in(&topo.guest);
    out.assert_exit(3);
    assert!(
        out.stderr.contains("gateway") && out.stderr.contains("`undefined`"),
        "stderr should name the field and the bad text\n{}",
        out.describe()
    );
    assert_nothing_applied(&topo, &out);
    let error = out.report().error.clone().expect("error in the report");
    assert_eq!((error.exit_code, error.class.as_str()), (3, "bad-config"));
    assert!(run.root_file(HANDOFF).is_none());
    assert!(run.root_file("etc/resolv.conf").is_none());
}

#[test]
fn no_ip_and_no_template_is_nothing_to_do() {
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    let run = NetinitRun::new("console=ttyS0 quiet");

    let out = run.run_in(&topo.guest);
    out.assert_exit(0);
    assert_eq!(out.report().outcome, Outcome::NothingToDo);
    assert_nothing_applied(&topo, &out);
}

#[test]
fn parse_prints_json_or_names_the_bad_field() {
    let netinit = guestkit_tests::bin("guest-netinit");
    let ok = Command::new(&netinit)
        .args([
            "parse",
            "ip=192.168.100.2::192.168.100.1:255.255.255.0:vm1:eth0:off",
        ])
        .output()
        .expect("run guest-netinit parse");
    assert!(ok.status.success(), "{ok:?}");
    let json: serde_json::Value =
        serde_json::from_slice(&ok.stdout).expect("parse prints JSON on stdout");
    let text = json.to_string();
    assert!(
        text.contains("192.168.100.2") && text.contains("eth0"),
        "{text}"
    );

    let bad = Command::new(&netinit)
        .args(["parse", "ip=192.168.100.2::undefined:undefined::eth0:off"])
        .output()
        .expect("run guest-netinit parse");
    assert_eq!(bad.status.code(), Some(3), "{bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("gateway") && stderr.contains("undefined"),
        "{stderr}"
    );
}
