//! `ArpProber` on a veth pair between two namespaces this test creates: the "host" side
//! holds the gateway address and answers ARP; an absent gateway gets no answer.
//! Needs root; all traffic stays between the test namespaces.

mod support;

use guest_netinit::probe::ArpProber;
use guest_netinit::system::Prober;
use guest_proto::MacAddr;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use support::Netns;

const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);

/// guest: eth0 192.168.100.2/24 up; host: gw0 192.168.100.1/24 up, MAC 02:00:00:00:00:01,
/// behind a bridge `fcbr0` as on a Firecracker host.
fn topology() -> (Netns, Netns, u32) {
    let guest = Netns::new();
    let host = Netns::new();
    guest.veth_to("eth0", &host, "tap0");
    host.ip(&["link", "add", "fcbr0", "type", "bridge"]);
    host.ip(&["link", "set", "fcbr0", "address", "02:00:00:00:00:01"]);
    host.ip(&["link", "set", "tap0", "master", "fcbr0"]);
    host.ip(&["addr", "add", "192.168.100.1/24", "dev", "fcbr0"]);
    host.ip(&["link", "set", "tap0", "up"]);
    host.ip(&["link", "set", "fcbr0", "up"]);
    guest.ip(&["addr", "add", "192.168.100.2/24", "dev", "eth0"]);
    guest.ip(&["link", "set", "eth0", "up"]);
    let line = guest.ip(&["-o", "link", "show", "eth0"]);
    let index = line.split(':').next().unwrap().trim().parse().unwrap();
    (guest, host, index)
}

#[test]
fn gateway_answers() {
    let (guest, _host, index) = topology();
    let result = guest.block_on(move || async move {
        ArpProber
            .probe(index, "eth0", ME, GW, Duration::from_secs(2))
            .await
    });
    assert!(result.ok, "{result:?}");
    assert_eq!(result.target, IpAddr::V4(GW));
    assert_eq!(
        result.mac,
        Some("02:00:00:00:00:01".parse::<MacAddr>().unwrap())
    );
    assert!(result.rtt_us.is_some());
    assert_eq!(result.error, None);
}

#[test]
fn absent_gateway_is_a_failed_probe_not_an_error() {
    let (guest, _host, index) = topology();
    let absent = Ipv4Addr::new(192, 168, 100, 99);
    let result = guest.block_on(move || async move {
        ArpProber
            .probe(index, "eth0", ME, absent, Duration::from_millis(300))
            .await
    });
    assert!(!result.ok);
    assert_eq!(result.mac, None);
    assert_eq!(result.rtt_us, None);
    assert_eq!(
        result.error.as_deref(),
        Some("no ARP reply from 192.168.100.99 within 300 ms")
    );
}

#[test]
fn bad_interface_index_is_reported() {
    let guest = Netns::new();
    let result = guest.block_on(|| async {
        ArpProber
            .probe(4242, "eth7", ME, GW, Duration::from_millis(100))
            .await
    });
    assert!(!result.ok);
    let error = result.error.unwrap();
    assert!(
        error.starts_with("ARP probe of 192.168.100.1 on eth7: "),
        "{error}"
    );
}
