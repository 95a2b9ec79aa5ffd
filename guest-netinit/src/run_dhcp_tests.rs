//! The run's DHCP paths with the fake system: lease applied and handed off, fallback applied
//! and reported, no fallback (exit 10), the old image's separate fallback file.

use super::*;

fn lease() -> crate::dhcp::Lease {
    crate::dhcp::Lease {
        address: "192.168.100.57".parse().unwrap(),
        prefix_len: 24,
        router: Some("192.168.100.1".parse().unwrap()),
        dns: vec!["192.168.100.1".parse().unwrap()],
        domain: None,
        hostname: None,
        mtu: Some(1400),
        lease_secs: Some(600),
        server: "192.168.100.1".parse().unwrap(),
        obtained_at_ms: 0,
    }
}

const FALLBACK_TEMPLATE: &str =
    "[Match]\nName=eth0\n[Network]\nDHCP=ipv4\nAddress=192.168.100.200/24\nGateway=192.168.100.1\n";

#[tokio::test]
async fn dhcp_lease_is_applied_and_handed_to_networkd() {
    let w = world(|w| w.lease = Some(lease()));
    let o = go(
        "ip=eth0:dhcp",
        &[("etc/guest-netinit/eth0.network", FALLBACK_TEMPLATE)],
        &w,
        |o| o.dhcp_timeout = Duration::from_secs(2),
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.human);
    let w = w.borrow();
    assert_eq!(w.dhcp_timeouts, vec![Duration::from_secs(2)]);
    // link settings first, then the lease
    assert_eq!(w.applied.len(), 2);
    assert!(w.applied[0].addresses.is_empty());
    assert_eq!(w.applied[1].addresses[0].to_string(), "192.168.100.57/24");
    assert_eq!(w.applied[1].mtu, Some(1400));
    assert_eq!(o.state.outcome, guest_proto::Outcome::Configured);
    assert_eq!(o.state.source, Some(ConfigSource::Dhcp));
    assert_eq!(o.state.addresses[0].address.to_string(), "192.168.100.57");
    assert!(step_names(&o.state).contains(&"dhcp"));
    assert!(
        o.human
            .contains("lease 192.168.100.57/24 from 192.168.100.1 for 600 s"),
        "{}",
        o.human
    );
    let handoff = std::fs::read_to_string(
        o.root
            .path()
            .join("run/systemd/network/00-guest-netinit-eth0.network"),
    )
    .unwrap();
    assert!(
        handoff.contains("DHCP=ipv4\nKeepConfiguration=dhcp\n"),
        "{handoff}"
    );
    assert!(handoff.contains("ClientIdentifier=mac"), "{handoff}");
    assert!(!handoff.contains("Address="), "{handoff}");
    // the gateway from the lease was probed
    assert_eq!(w.probes[0].1, "192.168.100.1".parse::<Ipv4Addr>().unwrap());
}

#[tokio::test]
async fn no_lease_applies_the_fallback_and_says_so() {
    let w = world(|_| {});
    let o = go(
        "quiet",
        &[("etc/guest-netinit/eth0.network", FALLBACK_TEMPLATE)],
        &w,
        |_| {},
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.human);
    assert_eq!(w.borrow().dhcp_timeouts, vec![Duration::from_secs(5)]);
    assert_eq!(o.state.outcome, guest_proto::Outcome::Fallback);
    assert_eq!(o.state.source, Some(ConfigSource::Fallback));
    assert_eq!(o.state.addresses[0].address.to_string(), "192.168.100.200");
    assert!(
        o.state
            .warnings
            .iter()
            .any(|w| w.contains("no DHCP server answered")),
        "{:?}",
        o.state.warnings
    );
    let handoff = std::fs::read_to_string(
        o.root
            .path()
            .join("run/systemd/network/00-guest-netinit-eth0.network"),
    )
    .unwrap();
    assert!(handoff.contains("Address=192.168.100.200/24"), "{handoff}");
    assert!(handoff.contains("DHCP=no"), "{handoff}");
}

#[tokio::test]
async fn no_lease_and_no_fallback_exits_10() {
    let w = world(|_| {});
    let o = go("ip=dhcp", &[], &w, |_| {}).await;
    assert_eq!(o.code, 10, "{}", o.human);
    let err = o.state.error.unwrap();
    assert_eq!(err.class, "dhcp");
    assert!(
        err.message.contains("no static fallback"),
        "{}",
        err.message
    );
    // only the link part was applied
    assert!(w.borrow().applied.iter().all(|c| c.addresses.is_empty()));
}

#[tokio::test]
async fn the_old_images_fallback_file_is_the_dhcp_fallback_and_not_a_conflict() {
    let w = world(|_| {});
    let o = go(
        "ip=dhcp guest.fb_ip=192.168.100.201",
        &[
            ("etc/systemd/network/10-eth0.network", "[Match]\nName=eth0\n[Network]\nDHCP=yes\n"),
            (
                "etc/systemd/network/20-eth0-fallback.network",
                "[Match]\nName=eth0\n[Network]\nAddress=__FB_IP__/24\nGateway=192.168.100.1\nDNS=1.1.1.1\n",
            ),
        ],
        &w,
        |_| {},
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.human);
    assert_eq!(o.state.outcome, guest_proto::Outcome::Fallback);
    assert_eq!(o.state.addresses[0].address.to_string(), "192.168.100.201");
    assert_eq!(o.state.dns[0].to_string(), "1.1.1.1");
    assert!(o.state.conflicts.is_empty(), "{:?}", o.state.conflicts);
}

/// `guest_netinit.dhcp_timeout=` and `guest_netinit.probe=0` on the kernel cmdline reach the
/// run; a flag given on guest-netinit's own command line wins over the cmdline.
#[tokio::test]
async fn cmdline_tunables_reach_the_run_and_flags_win() {
    let w = world(|w| w.lease = Some(lease()));
    let cmdline = "ip=eth0:dhcp guest_netinit.dhcp_timeout=1500ms guest_netinit.probe=0";
    let o = go(cmdline, &[], &w, |_| {}).await;
    assert_eq!(o.code, 0, "{}", o.human);
    assert_eq!(w.borrow().dhcp_timeouts, vec![Duration::from_millis(1500)]);
    assert!(w.borrow().probes.is_empty(), "guest_netinit.probe=0");
    let read = &o.state.steps[0];
    assert!(
        read.detail
            .contains("cmdline: dhcp-timeout 1.50 s, no probe"),
        "{}",
        read.detail
    );

    let w = world(|w| w.lease = Some(lease()));
    let o = go(cmdline, &[], &w, |o| {
        o.dhcp_timeout = Duration::from_secs(3);
        o.given.dhcp_timeout = true;
    })
    .await;
    assert_eq!(o.code, 0, "{}", o.human);
    assert_eq!(w.borrow().dhcp_timeouts, vec![Duration::from_secs(3)]);
    assert!(
        o.state.steps[0]
            .detail
            .contains("flags win over guest_netinit.dhcp_timeout=1500ms (--dhcp-timeout wins)"),
        "{}",
        o.state.steps[0].detail
    );
}

/// A malformed tunable stops the run in read-config (exit 3) before any netlink request.
#[tokio::test]
async fn malformed_cmdline_tunable_is_bad_config() {
    let w = world(|_| {});
    let o = go(
        &format!("{} guest_netinit.link_timeout=soon", STATIC.trim()),
        &[],
        &w,
        |_| {},
    )
    .await;
    assert_eq!(o.code, 3, "{}", o.human);
    assert!(
        o.state
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("guest_netinit.link_timeout: `soon`"),
        "{:?}",
        o.state.error
    );
    assert_eq!(w.borrow().connects, 0);
    assert!(w.borrow().applied.is_empty());
}
