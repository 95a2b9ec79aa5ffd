//! `Netlink` (Links + Apply) against real interfaces, inside namespaces this test creates.
//! Needs root (CI runs as root); nothing here touches the root namespace.

mod support;

use guest_netinit::config::{Address, NetConfig, Route};
use guest_netinit::netlink::Netlink;
use guest_netinit::system::{Apply, Links, NetError};
use guest_proto::report::ConfigSource;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use support::Netns;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn guest_config() -> NetConfig {
    NetConfig {
        interface: "eth0".into(),
        source: ConfigSource::Cmdline,
        mtu: Some(1400),
        mac: Some("02:00:00:aa:bb:01".parse().unwrap()),
        addresses: vec![Address {
            addr: ip("192.168.100.2"),
            prefix_len: 24,
        }],
        gateway: Some(ip("192.168.100.1")),
        routes: vec![
            Route {
                destination: ip("10.20.0.0"),
                prefix_len: 16,
                gateway: Some(ip("192.168.100.254")),
                metric: Some(100),
            },
            Route {
                destination: ip("172.16.0.0"),
                prefix_len: 12,
                gateway: None,
                metric: None,
            },
        ],
        dns: vec![],
        domains: vec![],
        hostname: None,
        dhcp: false,
    }
}

/// A guest namespace with `eth0`, its veth peer `gw0` (up) in a host namespace.
fn guest_with_eth0() -> (Netns, Netns) {
    let guest = Netns::new();
    let host = Netns::new();
    guest.veth_to("eth0", &host, "gw0");
    host.ip(&["link", "set", "gw0", "up"]);
    (guest, host)
}

#[test]
fn apply_sets_everything_and_reads_back() {
    let (guest, _host) = guest_with_eth0();
    let cfg = guest_config();
    let (summary, state, addrs, routes) = guest.block_on(move || async move {
        let mut nl = Netlink::connect().await.unwrap();
        let index = nl.find("eth0").await.unwrap().expect("eth0 exists");
        let summary = nl.apply(index, &cfg).await.unwrap();
        let state = nl.link_state(index).await.unwrap();
        let addrs = nl.addresses(index).await.unwrap();
        let routes = nl.routes(index).await.unwrap();
        (summary, state, addrs, routes)
    });
    assert_eq!(state.mtu, Some(1400));
    assert_eq!(state.mac, Some([0x02, 0, 0, 0xaa, 0xbb, 0x01]));
    assert!(state.up);
    assert!(addrs.contains(&Address {
        addr: ip("192.168.100.2"),
        prefix_len: 24
    }));
    let default = Route {
        destination: ip("0.0.0.0"),
        prefix_len: 0,
        gateway: Some(ip("192.168.100.1")),
        metric: None,
    };
    assert!(routes.contains(&default), "{routes:?}");
    assert!(routes.contains(&Route {
        destination: ip("10.20.0.0"),
        prefix_len: 16,
        gateway: Some(ip("192.168.100.254")),
        metric: Some(100),
    }));
    assert!(routes.contains(&Route {
        destination: ip("172.16.0.0"),
        prefix_len: 12,
        gateway: None,
        metric: None,
    }));
    assert_eq!(
        summary.actions,
        vec![
            "mtu 1400",
            "mac 02:00:00:aa:bb:01",
            "up",
            "address 192.168.100.2/24",
            "route 172.16.0.0/12 dev eth0",
            "route 10.20.0.0/16 via 192.168.100.254",
            "default via 192.168.100.1",
        ]
    );
    // `ip` agrees (a second, independent reader).
    let shown = guest.ip(&["route", "show", "default"]);
    assert!(shown.contains("via 192.168.100.1 dev eth0"), "{shown}");
}

#[test]
fn second_apply_is_idempotent() {
    let (guest, _host) = guest_with_eth0();
    let cfg = guest_config();
    let (second, addrs, defaults) = guest.block_on(move || async move {
        let mut nl = Netlink::connect().await.unwrap();
        let index = nl.find("eth0").await.unwrap().unwrap();
        nl.apply(index, &cfg).await.unwrap();
        let second = nl.apply(index, &cfg).await.unwrap();
        let addrs = nl.addresses(index).await.unwrap();
        let defaults = nl
            .routes(index)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.prefix_len == 0 && r.destination.is_ipv4())
            .count();
        (second, addrs, defaults)
    });
    assert_eq!(second.actions[0], "mtu 1400 (already set)");
    assert_eq!(second.actions[1], "mac 02:00:00:aa:bb:01 (already set)");
    assert_eq!(second.actions[2], "up (already up)");
    let v4: Vec<_> = addrs.iter().filter(|a| a.addr.is_ipv4()).collect();
    assert_eq!(v4.len(), 1, "{addrs:?}");
    assert_eq!(defaults, 1);
}

#[test]
fn kernel_applied_default_route_is_replaced_not_an_error() {
    let (guest, _host) = guest_with_eth0();
    // What CONFIG_IP_PNP leaves behind for `ip=`: address + default route, proto boot.
    guest.ip(&["addr", "add", "192.168.100.2/24", "dev", "eth0"]);
    guest.ip(&["link", "set", "eth0", "up"]);
    guest.ip(&[
        "route",
        "add",
        "default",
        "via",
        "192.168.100.1",
        "dev",
        "eth0",
        "proto",
        "boot",
    ]);
    let cfg = guest_config();
    let result = guest.block_on(move || async move {
        let mut nl = Netlink::connect().await.unwrap();
        let index = nl.find("eth0").await.unwrap().unwrap();
        nl.apply(index, &cfg).await
    });
    assert!(result.is_ok(), "{result:?}");
    let shown = guest.ip(&["route", "show", "default"]);
    assert_eq!(shown.lines().count(), 1, "{shown}");
    assert!(shown.contains("via 192.168.100.1 dev eth0"), "{shown}");
}

#[test]
fn gateway_outside_the_prefix_gets_an_onlink_route() {
    let (guest, _host) = guest_with_eth0();
    let mut cfg = guest_config();
    cfg.addresses[0].prefix_len = 32;
    cfg.routes.clear();
    let summary = guest.block_on(move || async move {
        let mut nl = Netlink::connect().await.unwrap();
        let index = nl.find("eth0").await.unwrap().unwrap();
        nl.apply(index, &cfg).await.unwrap()
    });
    assert_eq!(
        summary.actions.last().unwrap(),
        "default via 192.168.100.1 onlink"
    );
    let shown = guest.ip(&["route", "show", "default"]);
    assert!(shown.contains("onlink"), "{shown}");
}

#[test]
fn refused_request_names_the_action() {
    let (guest, _host) = guest_with_eth0();
    let mut cfg = guest_config();
    cfg.mtu = Some(20); // below Ethernet's minimum: EINVAL
    let err = guest.block_on(move || async move {
        let mut nl = Netlink::connect().await.unwrap();
        let index = nl.find("eth0").await.unwrap().unwrap();
        nl.apply(index, &cfg).await.unwrap_err()
    });
    match err {
        NetError::Request { what, message } => {
            assert_eq!(what, "set mtu 20 on eth0");
            assert!(message.contains("Invalid argument"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Nothing after the failed step was applied.
    let addrs = guest.ip(&["-4", "addr", "show", "dev", "eth0"]);
    assert!(!addrs.contains("192.168.100.2"), "{addrs}");
}

#[test]
fn find_absent_is_none() {
    let guest = Netns::new();
    let found = guest.block_on(|| async {
        let mut nl = Netlink::connect().await.unwrap();
        nl.find("eth0").await.unwrap()
    });
    assert_eq!(found, None);
}

#[test]
fn wait_returns_when_the_link_appears_later() {
    let guest = Netns::new();
    let host = Netns::new();
    let guest_name = guest.name.clone();
    let host_name = host.name.clone();
    let (before, waited) = guest.block_on(move || async move {
        let mut nl = Netlink::connect().await.unwrap();
        let before = nl.find("eth0").await.unwrap();
        // Create unrelated links first, then eth0, from another process, while waiting.
        let creator = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(200));
            for (inner, outer) in [("eth9", "gw9"), ("eth0", "gw0")] {
                support::run(
                    "ip",
                    &[
                        "-n",
                        &guest_name,
                        "link",
                        "add",
                        inner,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        outer,
                        "netns",
                        &host_name,
                    ],
                );
            }
        });
        let waited = nl
            .wait("eth0", Instant::now() + Duration::from_secs(20))
            .await
            .unwrap();
        creator.await.unwrap();
        (before, waited)
    });
    assert_eq!(before, None);
    let index = waited.expect("eth0 appeared");
    let shown = guest.ip(&["-o", "link", "show", "eth0"]);
    assert!(shown.starts_with(&format!("{index}: eth0@")), "{shown}");
}

#[test]
fn wait_sees_a_link_created_between_connect_and_wait() {
    let (guest, host) = (Netns::new(), Netns::new());
    let (guest_name, host_name) = (guest.name.clone(), host.name.clone());
    let waited = guest.block_on(move || async move {
        let mut nl = Netlink::connect().await.unwrap();
        support::run(
            "ip",
            &[
                "-n",
                &guest_name,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                "gw0",
                "netns",
                &host_name,
            ],
        );
        nl.wait("eth0", Instant::now() + Duration::from_secs(20))
            .await
            .unwrap()
    });
    assert!(waited.is_some());
}

#[test]
fn wait_gives_up_at_the_deadline() {
    let guest = Netns::new();
    let host = Netns::new();
    // Another link appears meanwhile; it is not the one waited for.
    guest.veth_to("eth1", &host, "gw1");
    let waited = guest.block_on(|| async {
        let mut nl = Netlink::connect().await.unwrap();
        nl.wait("eth0", Instant::now() + Duration::from_millis(300))
            .await
            .unwrap()
    });
    assert_eq!(waited, None);
}

#[test]
fn ipv6_addresses_and_routes_twice() {
    let (guest, _host) = guest_with_eth0();
    let cfg = NetConfig {
        mtu: None,
        mac: None,
        addresses: vec![Address {
            addr: ip("fd00:100::2"),
            prefix_len: 64,
        }],
        gateway: Some(ip("fd00:100::1")),
        routes: vec![Route {
            destination: ip("fd00:200::"),
            prefix_len: 48,
            gateway: Some(ip("fd00:100::fe")),
            metric: None,
        }],
        ..guest_config()
    };
    let (first, second, addrs, routes) = guest.block_on(move || async move {
        let mut nl = Netlink::connect().await.unwrap();
        let index = nl.find("eth0").await.unwrap().unwrap();
        let first = nl.apply(index, &cfg).await.unwrap();
        let second = nl.apply(index, &cfg).await.unwrap();
        let addrs = nl.addresses(index).await.unwrap();
        let routes = nl.routes(index).await.unwrap();
        (first, second, addrs, routes)
    });
    assert_eq!(
        first.actions,
        [
            "up",
            "address fd00:100::2/64",
            "route fd00:200::/48 via fd00:100::fe",
            "default via fd00:100::1",
        ]
    );
    assert_eq!(second.actions[0], "up (already up)");
    assert!(addrs.contains(&Address {
        addr: ip("fd00:100::2"),
        prefix_len: 64
    }));
    let defaults: Vec<_> = routes
        .iter()
        .filter(|r| r.prefix_len == 0 && r.destination.is_ipv6())
        .collect();
    assert_eq!(defaults.len(), 1, "{routes:?}");
    assert_eq!(defaults[0].gateway, Some(ip("fd00:100::1")));
    assert!(routes
        .iter()
        .any(|r| r.destination == ip("fd00:200::") && r.gateway == Some(ip("fd00:100::fe"))));
}
