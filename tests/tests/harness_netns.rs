//! Tests of the netns harness itself: if these fail, every netns test's verdict is void.
//! The guest is configured here by hand with `ip`, then read back with netlink.

use guestkit_tests::netns::NETNS_DIR;
use guestkit_tests::{Namespace, Topology, GATEWAY, GUEST_NIC, HOST_BRIDGE};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

#[test]
fn namespace_is_deleted_on_drop_even_when_the_test_panics() {
    let ns = Namespace::new("drop");
    let path = format!("{NETNS_DIR}/{}", ns.name());
    assert!(Path::new(&path).exists(), "{path} should exist");
    let caught = std::panic::catch_unwind(move || {
        let _owned = ns;
        panic!("simulated test failure");
    });
    assert!(caught.is_err());
    assert!(!Path::new(&path).exists(), "{path} survived the panic");
}

#[test]
fn namespaces_get_unique_names() {
    let a = Namespace::new("same");
    let b = Namespace::new("same");
    assert_ne!(a.name(), b.name());
}

#[test]
fn topology_has_bridge_with_gateway_and_nic_only_when_attached() {
    let topo = Topology::new();
    let bridge = topo.host.expect_link(HOST_BRIDGE);
    assert!(bridge.up, "{HOST_BRIDGE} should be up: {bridge:?}");
    let addrs = topo.host.ipv4_addresses(HOST_BRIDGE);
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    assert_eq!(addrs[0].address, IpAddr::V4(GATEWAY));
    assert_eq!(addrs[0].prefix_len, 24);

    assert!(topo.guest.link(GUEST_NIC).is_none(), "NIC before attach");
    let port = topo.attach_guest_nic(GUEST_NIC);
    let nic = topo.guest.expect_link(GUEST_NIC);
    assert!(!nic.up, "a fresh NIC starts down: {nic:?}");
    assert_eq!(nic.mac.as_ref().map(Vec::len), Some(6));
    // The NIC is only in the guest namespace, the bridge port only in the host one, and the
    // port forwards before the guest does anything (like a Firecracker tap).
    assert!(topo.host.link(GUEST_NIC).is_none());
    assert!(topo.guest.link(&port).is_none());
    assert!(topo.host.expect_link(&port).up);
    let detail = topo.host.ip(["-d", "link", "show", &port]);
    assert!(detail.contains("state forwarding"), "{detail}");
}

#[test]
fn topology_without_gateway_has_no_address_on_the_bridge() {
    let topo = Topology::without_gateway();
    assert!(topo.host.expect_link(HOST_BRIDGE).up);
    assert!(topo.host.ipv4_addresses(HOST_BRIDGE).is_empty());
}

#[test]
fn readback_sees_hand_made_config_and_gateway_answers_ping() {
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    assert!(
        !topo.guest_reaches_gateway(),
        "no route yet, ping must fail"
    );

    topo.guest
        .ip(["addr", "add", "192.168.100.9/24", "dev", GUEST_NIC]);
    topo.guest.ip(["link", "set", GUEST_NIC, "up"]);
    topo.guest.ip([
        "route",
        "add",
        "default",
        "via",
        "192.168.100.1",
        "metric",
        "7",
    ]);

    let addrs = topo.guest.ipv4_addresses(GUEST_NIC);
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    assert_eq!(addrs[0].to_string(), "192.168.100.9/24");
    let index = topo.guest.expect_link(GUEST_NIC).index;
    let defaults = topo.guest.default_routes();
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    assert_eq!(defaults[0].gateway, Some(GATEWAY));
    assert_eq!(defaults[0].oif, Some(index));
    assert_eq!(defaults[0].metric, Some(7));
    assert!(!defaults[0].kernel);
    let subnet = topo
        .guest
        .routes_v4()
        .into_iter()
        .find(|r| r.destination == Ipv4Addr::new(192, 168, 100, 0) && r.prefix_len == 24)
        .expect("kernel prefix route for the address");
    assert!(subnet.kernel);

    assert!(topo.guest_reaches_gateway(), "gateway should answer");

    topo.reset_guest_nic(GUEST_NIC);
    assert!(topo.guest.ipv4_addresses(GUEST_NIC).is_empty());
    assert!(topo.guest.default_routes().is_empty());
    assert!(!topo.guest.expect_link(GUEST_NIC).up);
}

#[test]
fn run_in_executes_inside_the_namespace() {
    let topo = Topology::new();
    topo.attach_guest_nic("ens9");
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["-o", "link", "show"]);
    let out = guestkit_tests::run_in(&topo.guest, &cmd);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ens9"), "{text}");
    assert!(!text.contains(HOST_BRIDGE), "{text}");
}

#[test]
fn setns_command_sees_the_namespace_in_netlink_and_sysfs() {
    let topo = Topology::new();
    topo.attach_guest_nic("ens7");
    let out = topo
        .guest
        .setns_command("ls")
        .arg("/sys/class/net")
        .output()
        .expect("run ls in the guest namespace");
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut names: Vec<&str> = listing.split_whitespace().collect();
    names.sort();
    assert_eq!(
        names,
        ["ens7", "lo"],
        "sysfs must show only the guest's links"
    );

    let out = topo
        .guest
        .setns_command("ip")
        .args(["-o", "link", "show", "ens7"])
        .output()
        .expect("run ip in the guest namespace");
    assert!(out.status.success(), "{out:?}");
}
