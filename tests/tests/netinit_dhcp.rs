//! guest-netinit's DHCPv4 end to end (issue 6): the built binary in a test-made guest namespace,
//! dnsmasq (Debian's `dnsmasq-base`, the old host's DHCP server) on the host namespace's bridge
//! `fcbr0`. Lease obtained and applied (address, router, DNS, MTU option), handed to networkd;
//! with dnsmasq stopped, the template's static fallback is applied and reported; with no
//! fallback, exit 10. Results are read back from the kernel, the files and `state.json`.

use guest_proto::{ConfigSource, Outcome};
use guestkit_tests::dnsmasq::Dnsmasq;
use guestkit_tests::{NetinitRun, Topology, GATEWAY, GUEST_NIC};

const HANDOFF: &str = "run/systemd/network/00-guest-netinit-eth0.network";
const TEMPLATE: &str = "etc/guest-netinit/eth0.network";
const FALLBACK: &str = "[Match]\nName=eth0\n[Network]\nDHCP=ipv4\n\
    Address=192.168.100.200/24\nGateway=192.168.100.1\nDNS=192.168.100.1\n";

fn guest_v4(topo: &Topology) -> Vec<String> {
    topo.guest
        .ipv4_addresses(GUEST_NIC)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn lease_from_dnsmasq_with_mtu_and_dns_is_applied_and_handed_off() {
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    let _dnsmasq = Dnsmasq::start(
        &topo,
        &[
            "--dhcp-option=option:dns-server,192.168.100.1,9.9.9.9",
            "--dhcp-option=option:mtu,1400",
        ],
    );
    let mut run = NetinitRun::new("console=ttyS0 ip=eth0:dhcp");
    run.arg("--dhcp-timeout").arg("20s");
    let out = run.run_in(&topo.guest);
    out.assert_exit(0);

    let addrs = guest_v4(&topo);
    assert_eq!(addrs.len(), 1, "{addrs:?}\n{}", out.describe());
    let addr = addrs[0].clone();
    let last: u8 = addr
        .trim_start_matches("192.168.100.")
        .trim_end_matches("/24")
        .parse()
        .unwrap_or_else(|_| panic!("{addr} not in 192.168.100.0/24"));
    assert!((50..=99).contains(&last), "{addr} outside dnsmasq's range");
    let defaults = topo.guest.default_routes();
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    assert_eq!(defaults[0].gateway, Some(GATEWAY));
    let link = topo.guest.expect_link(GUEST_NIC);
    assert_eq!(link.mtu, Some(1400), "MTU option not honoured: {link:?}");
    assert!(topo.guest_reaches_gateway());

    let resolv = run.root_file("etc/resolv.conf").expect("resolv.conf");
    let ns: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .collect();
    assert_eq!(ns, ["192.168.100.1", "9.9.9.9"], "{resolv}");
    let handoff = run.root_file(HANDOFF).expect("handoff");
    assert!(handoff.contains("DHCP=ipv4\n"), "{handoff}");
    assert!(handoff.contains("KeepConfiguration=dhcp\n"), "{handoff}");

    let report = out.report();
    assert_eq!(report.outcome, Outcome::Configured);
    assert_eq!(report.source, Some(ConfigSource::Dhcp));
    assert_eq!(report.mtu, Some(1400));
    let dhcp = report
        .steps
        .iter()
        .find(|s| s.name == "dhcp")
        .expect("dhcp step");
    assert!(
        dhcp.detail.contains("from 192.168.100.1"),
        "{}",
        dhcp.detail
    );
    assert!(dhcp.detail.contains(&addr), "{}", dhcp.detail);

    // The lease itself, with its expiry, is in state.json (and so in the agent's /health).
    let lease = report
        .dhcp
        .as_ref()
        .and_then(|d| d.lease.as_ref())
        .expect("lease in state.json");
    assert_eq!(format!("{}/{}", lease.address, lease.prefix_len), addr);
    assert_eq!(lease.router, Some(GATEWAY));
    assert_eq!(lease.mtu, Some(1400));
    // The lease time given in --dhcp-range (10m).
    assert_eq!(lease.lease_secs, Some(600));
    assert_eq!(
        lease.expires_at_ms,
        Some(lease.obtained_at_ms + 600_000),
        "{lease:?}"
    );
}

#[test]
fn dnsmasq_stopped_gives_the_template_fallback() {
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    // It served once and is gone now, as when the host's dnsmasq dies.
    Dnsmasq::start(&topo, &[]).stop();
    let mut run = NetinitRun::new("console=ttyS0");
    run.write_root_file(TEMPLATE, FALLBACK);
    run.arg("--dhcp-timeout").arg("1500ms");
    let out = run.run_in(&topo.guest);
    out.assert_exit(0);

    assert_eq!(
        guest_v4(&topo),
        ["192.168.100.200/24"],
        "{}",
        out.describe()
    );
    assert_eq!(topo.guest.default_routes()[0].gateway, Some(GATEWAY));
    let report = out.report();
    assert_eq!(report.outcome, Outcome::Fallback);
    assert_eq!(report.source, Some(ConfigSource::Fallback));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("no DHCP server answered within")),
        "{:?}",
        report.warnings
    );
    let dhcp = report.dhcp.as_ref().expect("dhcp block in state.json");
    assert!(dhcp.lease.is_none(), "{dhcp:?}");
    assert!(
        dhcp.fallback_reason
            .as_deref()
            .is_some_and(|r| r.contains("no DHCP server answered within")),
        "{dhcp:?}"
    );
    let handoff = run.root_file(HANDOFF).expect("handoff");
    assert!(handoff.contains("Address=192.168.100.200/24"), "{handoff}");
}

#[test]
fn no_lease_and_no_fallback_exits_10() {
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    let mut run = NetinitRun::new("console=ttyS0 ip=dhcp");
    run.arg("--dhcp-timeout").arg("1s");
    let out = run.run_in(&topo.guest);
    out.assert_exit(10);
    assert!(guest_v4(&topo).is_empty());
    let err = out.report().error.clone().expect("error in state.json");
    assert_eq!(err.class, "dhcp");
    assert!(
        err.message.contains("no static fallback"),
        "{}",
        err.message
    );
}
