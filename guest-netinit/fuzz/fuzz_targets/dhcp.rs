//! What the DHCP client reads off the wire, from any host on the link: the IPv4/UDP framing and
//! the DHCP message. Never panics; a decoded message encodes and decodes back to itself; a
//! lease taken from it is usable and its config is well formed.
#![no_main]

use guest_netinit::config::NetConfig;
use guest_netinit::dhcp::msg::Message;
use guest_netinit::dhcp::{socket, usable, Lease};
use guest_proto::ConfigSource;
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let _ = socket::udp_payload(data, socket::CLIENT_PORT);
    let Ok(m) = Message::decode(data) else {
        return;
    };
    let again = Message::decode(&m.encode()).expect("an encoded message decodes");
    assert_eq!(again, m);
    let server = Ipv4Addr::new(192, 168, 100, 1);
    if let Some(lease) = Lease::from_ack(&m, &m, server) {
        assert!(usable(lease.address));
        assert!(lease.prefix_len <= 32);
        let base = NetConfig {
            interface: "eth0".into(),
            source: ConfigSource::Cmdline,
            mtu: None,
            mac: None,
            addresses: vec![],
            gateway: None,
            routes: vec![],
            dns: vec![],
            domains: vec![],
            hostname: None,
            dhcp: true,
        };
        let cfg = lease.to_config(&base);
        assert_eq!(cfg.addresses.len(), 1);
        assert!(cfg.mtu.is_none_or(|m| m >= 576));
    }
});
