//! wait_ready towards addresses that never answer, inside a namespace the test creates:
//! a subnet routed onto a veth whose peer has no such address (ARP unanswered: "timed out"), and `unreachable`,
//! `blackhole` and `prohibit` routes (the kernel refuses at once: "no route to host").

mod common;

use common::netns::{in_new_netns, ip};
use host_client::{wait_ready, ErrorClass, WaitError};
use std::net::SocketAddr;
use std::time::Duration;

fn wait_class(addr: &str) -> (ErrorClass, String) {
    let addr: SocketAddr = addr.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(wait_ready(addr, Duration::from_millis(700), None))
        .unwrap_err();
    let WaitError::Timeout { last, .. } = &err else {
        panic!("{err:?}")
    };
    (
        last.as_ref().expect("an attempt finished").class,
        err.to_string(),
    )
}

#[test]
fn blackholed_and_unreachable_addresses_are_classified() {
    let got = in_new_netns(|| {
        // (no `dummy` module on every kernel: a veth pair whose far end answers nothing)
        ip(&[
            "link", "add", "gkv0", "type", "veth", "peer", "name", "gkv1",
        ]);
        ip(&["link", "set", "gkv0", "up"]);
        ip(&["link", "set", "gkv1", "up"]);
        ip(&["addr", "add", "10.200.0.1/24", "dev", "gkv0"]);
        ip(&["route", "add", "192.168.100.0/24", "dev", "gkv0"]);
        ip(&["route", "add", "unreachable", "192.168.200.0/24"]);
        ip(&["route", "add", "blackhole", "192.168.201.0/24"]);
        ip(&["route", "add", "prohibit", "192.168.202.0/24"]);
        [
            wait_class("192.168.100.9:8080"),
            wait_class("192.168.200.9:8080"),
            wait_class("192.168.201.9:8080"),
            wait_class("192.168.202.9:8080"),
        ]
    });
    let [dummy, unreachable, blackhole, prohibit] = got;
    assert_eq!(dummy.0, ErrorClass::TimedOut, "{}", dummy.1);
    assert!(dummy.1.contains("timed out"), "{}", dummy.1);
    assert_eq!(unreachable.0, ErrorClass::NoRoute, "{}", unreachable.1);
    assert!(
        unreachable.1.contains("no route to host"),
        "{}",
        unreachable.1
    );
    assert_eq!(blackhole.0, ErrorClass::NoRoute, "{}", blackhole.1);
    assert_eq!(prohibit.0, ErrorClass::NoRoute, "{}", prohibit.1);
}
