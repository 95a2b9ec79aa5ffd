//! The DHCP client against a real dnsmasq (Debian's `dnsmasq-base`), as on the old host: a
//! "host" namespace with bridge `fcbr0` 192.168.100.1/24 runs dnsmasq, a "guest" namespace
//! has `eth0` over a veth. The lease is obtained on a packet socket, applied with netlink and
//! read back; with no server, the exchange times out at the deadline. Needs root and
//! dnsmasq; all traffic stays between the test namespaces.

mod support;

use guest_netinit::config::NetConfig;
use guest_netinit::dhcp::socket::PacketTransport;
use guest_netinit::dhcp::{self, DhcpOutcome, Transport};
use guest_netinit::netlink::Netlink;
use guest_netinit::system::Apply;
use guest_proto::ConfigSource;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::Netns;

/// dnsmasq serving fcbr0 in `host`, killed on drop.
pub struct Dnsmasq {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    pub fn start(host: &Netns, extra: &[&str]) -> Dnsmasq {
        let dir = tempfile::tempdir().unwrap();
        let leases = dir.path().join("leases");
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            host.name.clone(),
            "dnsmasq".into(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            "--user=root".into(),
            "--group=root".into(),
            "--interface=fcbr0".into(),
            "--bind-interfaces".into(),
            "--no-ping".into(),
            "--log-dhcp".into(),
            "--log-facility=-".into(),
            "--pid-file=".into(),
            format!("--dhcp-leasefile={}", leases.display()),
            "--dhcp-range=192.168.100.50,192.168.100.99,255.255.255.0,10m".into(),
            "--dhcp-option=option:router,192.168.100.1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base)");
        Dnsmasq { child, _dir: dir }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// guest eth0 (up, no address) — tap0 in fcbr0 (192.168.100.1/24) in host.
fn topology() -> (Netns, Netns, u32) {
    let guest = Netns::new();
    let host = Netns::new();
    guest.veth_to("eth0", &host, "tap0");
    host.ip(&["link", "add", "fcbr0", "type", "bridge"]);
    host.ip(&["link", "set", "tap0", "master", "fcbr0"]);
    host.ip(&["addr", "add", "192.168.100.1/24", "dev", "fcbr0"]);
    host.ip(&["link", "set", "tap0", "up"]);
    host.ip(&["link", "set", "fcbr0", "up"]);
    guest.ip(&["link", "set", "eth0", "up"]);
    let line = guest.ip(&["-o", "link", "show", "eth0"]);
    let index = line.split(':').next().unwrap().trim().parse().unwrap();
    (guest, host, index)
}

fn base() -> NetConfig {
    NetConfig {
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
    }
}

#[test]
fn lease_from_dnsmasq_is_obtained_and_applied_with_mtu_and_dns() {
    let (guest, host, index) = topology();
    let _d = Dnsmasq::start(
        &host,
        &[
            "--dhcp-option=option:dns-server,192.168.100.1,9.9.9.9",
            "--dhcp-option=option:mtu,1400",
            "--domain=vms.test",
        ],
    );
    let (outcome, applied) = guest.block_on(move || async move {
        let mut t = PacketTransport::open(index).expect("packet socket");
        let xid = dhcp::new_xid(t.mac());
        let outcome = dhcp::obtain(&mut t, Duration::from_secs(20), xid)
            .await
            .expect("dhcp exchange");
        let DhcpOutcome::Leased(lease) = &outcome else {
            return (outcome, None);
        };
        let cfg = lease.to_config(&base());
        let mut nl = Netlink::connect().await.expect("netlink");
        let summary = nl.apply(index, &cfg).await.expect("apply lease");
        (outcome, Some((cfg, summary)))
    });
    let DhcpOutcome::Leased(lease) = outcome else {
        panic!("no lease: {}", outcome.why())
    };
    let (cfg, _summary) = applied.unwrap();
    let octets = lease.address.octets();
    assert_eq!(&octets[..3], &[192, 168, 100], "{lease:?}");
    assert!((50..=99).contains(&octets[3]), "{lease:?}");
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.router, Some(Ipv4Addr::new(192, 168, 100, 1)));
    assert_eq!(
        lease.dns,
        vec![Ipv4Addr::new(192, 168, 100, 1), Ipv4Addr::new(9, 9, 9, 9)]
    );
    assert_eq!(lease.mtu, Some(1400));
    assert_eq!(lease.domain.as_deref(), Some("vms.test"));
    assert_eq!(lease.server, Ipv4Addr::new(192, 168, 100, 1));
    assert_eq!(lease.lease_secs, Some(600));
    assert_eq!(cfg.mtu, Some(1400));

    let addrs = guest.ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(
        addrs.contains(&format!("inet {}/24", lease.address)),
        "{addrs}"
    );
    let routes = guest.ip(&["-4", "route", "show", "default"]);
    assert!(
        routes.contains("default via 192.168.100.1 dev eth0"),
        "{routes}"
    );
    let link = guest.ip(&["link", "show", "eth0"]);
    assert!(link.contains("mtu 1400"), "{link}");
    // the address answers from the host side
    let ping = Command::new("ip")
        .args(["netns", "exec", &host.name, "ping", "-c1", "-W5"])
        .arg(lease.address.to_string())
        .status()
        .unwrap();
    assert!(ping.success(), "leased address does not answer ping");
}

#[test]
fn without_a_server_the_exchange_times_out_at_the_deadline() {
    let (guest, _host, index) = topology();
    let outcome = guest.block_on(move || async move {
        let mut t = PacketTransport::open(index).expect("packet socket");
        dhcp::obtain(&mut t, Duration::from_millis(1500), 9)
            .await
            .expect("dhcp exchange")
    });
    match outcome {
        DhcpOutcome::TimedOut {
            offers,
            naks,
            waited,
        } => {
            assert_eq!((offers, naks), (0, 0));
            assert!(waited >= Duration::from_millis(1500), "{waited:?}");
        }
        other => panic!("expected no lease, got {other:?}"),
    }
    let addrs = Command::new("ip")
        .args(["-n", &guest.name, "-o", "-4", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&addrs.stdout).trim().is_empty());
}
