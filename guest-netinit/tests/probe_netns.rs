//! `ArpProber` (kernel neighbour resolution) and `PacketArpProber` (packet socket) on a veth
//! pair between two namespaces this test creates: the "host" side holds the gateway address
//! behind a bridge and answers ARP; an absent gateway gets no answer.
//! Needs root; all traffic stays between the test namespaces.

mod support;

use guest_netinit::probe::{ArpProber, PacketArpProber};
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

#[test]
fn cached_entry_is_not_taken_for_an_answer() {
    let (guest, host, index) = topology();
    let first = guest.block_on(move || async move {
        ArpProber
            .probe(index, "eth0", ME, GW, Duration::from_secs(2))
            .await
    });
    assert_eq!(first.mac, Some("02:00:00:00:00:01".parse().unwrap()));
    // The gateway changes its MAC: the second probe must ask again, not read the cache.
    host.ip(&["link", "set", "fcbr0", "address", "02:00:00:00:00:02"]);
    let second = guest.block_on(move || async move {
        ArpProber
            .probe(index, "eth0", ME, GW, Duration::from_secs(2))
            .await
    });
    assert!(second.ok, "{second:?}");
    assert_eq!(second.mac, Some("02:00:00:00:00:02".parse().unwrap()));
    // And the kernel's cache now holds the fresh answer.
    let neigh = guest.ip(&["neigh", "show", "192.168.100.1", "dev", "eth0"]);
    assert!(neigh.contains("lladdr 02:00:00:00:00:02"), "{neigh}");
}

#[test]
fn static_entry_is_probed_on_the_wire_and_left_alone() {
    let (guest, _host, index) = topology();
    guest.ip(&[
        "neigh",
        "add",
        "192.168.100.1",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    let result = guest.block_on(move || async move {
        ArpProber
            .probe(index, "eth0", ME, GW, Duration::from_secs(2))
            .await
    });
    assert!(result.ok, "{result:?}");
    assert_eq!(result.mac, Some("02:00:00:00:00:01".parse().unwrap()));
    let neigh = guest.ip(&["neigh", "show", "192.168.100.1", "dev", "eth0"]);
    assert!(
        neigh.contains("lladdr 02:00:00:00:00:99 PERMANENT"),
        "{neigh}"
    );
}

#[test]
fn packet_prober_answers_and_times_out() {
    let (guest, _host, index) = topology();
    let absent = Ipv4Addr::new(192, 168, 100, 99);
    let (ok, silent) = guest.block_on(move || async move {
        let ok = PacketArpProber
            .probe(index, "eth0", ME, GW, Duration::from_secs(2))
            .await;
        let silent = PacketArpProber
            .probe(index, "eth0", ME, absent, Duration::from_millis(200))
            .await;
        (ok, silent)
    });
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.mac, Some("02:00:00:00:00:01".parse().unwrap()));
    assert!(!silent.ok);
    assert_eq!(
        silent.error.as_deref(),
        Some("no ARP reply from 192.168.100.99 within 200 ms")
    );
}
