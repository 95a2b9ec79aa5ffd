use super::*;
use crate::config::NetConfig;
use guest_proto::ConfigSource;
use proptest::prelude::*;

fn vals(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const FULL: &str = "\
# guest-netinit template
; another comment: __NOT_A_PLACEHOLDER__ is fine here

[Match]
Name=eth0

[Link]
MTUBytes=1400
MACAddress=52:54:00:12:34:56

[Network]
Address=__VM_IP__/24
Address=fd00::2/64
Gateway=__GW__
DNS=1.1.1.1 8.8.8.8
DNS=9.9.9.9
Domains=example.com ~corp
DHCP=no

[Route]
Destination=10.1.0.0/16
Gateway=192.168.100.254
Metric=100

[Route]
Gateway=fd00::1
";

#[test]
fn full_template_with_placeholders() {
    let t = parse(
        FULL,
        &vals(&[("vm_ip", "192.168.100.7"), ("gw", "192.168.100.1")]),
    )
    .unwrap();
    assert_eq!(t.name.as_deref(), Some("eth0"));
    assert_eq!(t.mtu, Some(1400));
    assert_eq!(t.mac.unwrap().to_string(), "52:54:00:12:34:56");
    assert_eq!(
        t.addresses,
        vec![
            Address {
                addr: ip("192.168.100.7"),
                prefix_len: 24
            },
            Address {
                addr: ip("fd00::2"),
                prefix_len: 64
            }
        ]
    );
    assert_eq!(t.gateway, Some(ip("192.168.100.1")));
    assert_eq!(t.dns, vec![ip("1.1.1.1"), ip("8.8.8.8"), ip("9.9.9.9")]);
    assert_eq!(t.domains, vec!["example.com", "~corp"]);
    assert_eq!(t.dhcp, Dhcp::No);
    assert_eq!(
        t.routes,
        vec![
            Route {
                destination: ip("10.1.0.0"),
                prefix_len: 16,
                gateway: Some(ip("192.168.100.254")),
                metric: Some(100)
            },
            Route {
                destination: ip("::"),
                prefix_len: 0,
                gateway: Some(ip("fd00::1")),
                metric: None
            },
        ]
    );
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
}

#[test]
fn placeholders_match_case_insensitively() {
    let t = parse(
        "[Network]\nAddress=__VM_IP__/24\n",
        &vals(&[("VM_IP", "10.0.0.2")]),
    )
    .unwrap();
    assert_eq!(t.addresses[0].addr, ip("10.0.0.2"));
    let t = parse(
        "[Network]\nAddress=__vm_ip__/24\n",
        &vals(&[("vm_ip", "10.0.0.3")]),
    )
    .unwrap();
    assert_eq!(t.addresses[0].addr, ip("10.0.0.3"));
}

#[test]
fn unfilled_placeholder_names_itself_its_line_and_the_cmdline_key() {
    let e = parse(FULL, &vals(&[("vm_ip", "192.168.100.7")])).unwrap_err();
    assert_eq!(e.line, 14);
    assert_eq!(e.key.as_deref(), Some("Gateway"));
    let msg = e.to_string();
    assert!(
        msg.contains("__GW__")
            && msg.contains("guest.gw=")
            && msg.starts_with("line 14: Gateway=:"),
        "{msg}"
    );
}

#[test]
fn fill_rules() {
    let v: BTreeMap<String, &str> = [("a_b".to_string(), "X"), ("c".to_string(), "__c__")]
        .into_iter()
        .collect();
    assert_eq!(fill("__A_B__", &v).unwrap(), "X");
    assert_eq!(fill("p__A_B__q__A_B__", &v).unwrap(), "pXqX");
    // filled text is not scanned again
    assert_eq!(fill("__C__", &v).unwrap(), "__c__");
    // not placeholders: single underscores, empty name, trailing underscore in the name
    assert_eq!(fill("a_b __ ___ x__", &v).unwrap(), "a_b __ ___ x__");
    assert_eq!(fill("__A__B__", &v).unwrap_err(), "A");
    assert_eq!(fill("__MISSING__", &v).unwrap_err(), "MISSING");
}

#[test]
fn errors_name_line_and_key() {
    let cases: &[(&str, usize, Option<&str>, &str)] = &[
        (
            "[Network]\nAdress=10.0.0.2/24\n",
            2,
            Some("Adress"),
            "unknown key in [Network]",
        ),
        (
            "[Netwrok]\nAddress=10.0.0.2/24\n",
            1,
            None,
            "unknown section [Netwrok]",
        ),
        (
            "[Address]\nAddress=10.0.0.2/24\n",
            1,
            None,
            "unknown section [Address]",
        ),
        (
            "Address=10.0.0.2/24\n",
            1,
            Some("Address"),
            "outside of any section",
        ),
        (
            "[Network]\nAddress=10.0.0.2\n",
            2,
            Some("Address"),
            "no prefix length",
        ),
        (
            "[Network]\nAddress=10.0.0.2/33\n",
            2,
            Some("Address"),
            "prefix length `33`",
        ),
        (
            "[Network]\nAddress=10.0.0.x/24\n",
            2,
            Some("Address"),
            "`10.0.0.x` is not an IP address",
        ),
        (
            "[Network]\nAddress=0.0.0.0/24\n",
            2,
            Some("Address"),
            "pools",
        ),
        (
            "[Network]\nGateway=undefined\n",
            2,
            Some("Gateway"),
            "`undefined` is not an IP address",
        ),
        (
            "[Network]\nGateway=10.0.0.1\nGateway=10.0.0.254\n",
            3,
            Some("Gateway"),
            "second IPv4 gateway",
        ),
        ("[Network]\nDNS=1.1.1.1 nope\n", 2, Some("DNS"), "`nope`"),
        (
            "[Network]\nDomains=a b/c\n",
            2,
            Some("Domains"),
            "`b/c` is not a domain",
        ),
        ("[Network]\nDHCP=maybe\n", 2, Some("DHCP"), "`maybe`"),
        ("[Link]\nMTUBytes=12\n", 2, Some("MTUBytes"), "not an MTU"),
        ("[Link]\nMTUBytes=1.5K\n", 2, Some("MTUBytes"), "not an MTU"),
        (
            "[Link]\nMACAddress=52:54:00\n",
            2,
            Some("MACAddress"),
            "not a MAC",
        ),
        (
            "[Match]\nName=eth*\n",
            2,
            Some("Name"),
            "exactly one interface",
        ),
        ("[Match]\nName=eth0 eth1\n", 2, Some("Name"), "not a list"),
        (
            "[Match]\nName=averyveryverylongname\n",
            2,
            Some("Name"),
            "15 characters",
        ),
        ("[Network]\njust text\n", 2, None, "is not `Key=Value`"),
        ("[Network\n", 1, None, "must end with `]`"),
        (
            "[Route]\nMetric=5\n",
            1,
            None,
            "needs Destination= or Gateway=",
        ),
        (
            "[Route]\nDestination=10.0.0.0/8\nGateway=fd00::1\n",
            1,
            None,
            "different address families",
        ),
        (
            "[Route]\nDestination=10.1.2.3/16\n",
            1,
            None,
            "did you mean 10.1.0.0/16",
        ),
        (
            "[Route]\nMetric=-1\nGateway=10.0.0.1\n",
            2,
            Some("Metric"),
            "not a number",
        ),
        (
            "[Route]\nDestinaton=10.0.0.0/8\n",
            2,
            Some("Destinaton"),
            "unknown key in [Route]",
        ),
        (
            "[Match]\nName=eth0\n[Route]\nGateway=10.0.0.1\n[Route]\n[Network]\n",
            5,
            None,
            "needs Destination=",
        ),
    ];
    for (text, line, key, needle) in cases {
        let e = parse(text, &BTreeMap::new()).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (*line, *key), "{text:?}: {e}");
        assert!(
            e.to_string().contains(needle),
            "{text:?}: `{e}` lacks `{needle}`"
        );
        assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
    }
}

#[test]
fn networkd_keys_we_do_not_apply_are_warnings_with_lines() {
    let t = parse(
        "[Match]\nName=eth0\nDriver=virtio_net\n[Network]\nAddress=10.0.0.2/24\nLinkLocalAddressing=no\nIPv6AcceptRA=__X__\n[DHCPv4]\nUseDNS=__Y__\n",
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(t.addresses.len(), 1);
    assert_eq!(t.warnings.len(), 4, "{:?}", t.warnings);
    assert!(
        t.warnings[0].starts_with("line 3: Driver="),
        "{:?}",
        t.warnings
    );
    assert!(t.warnings[1].starts_with("line 6: LinkLocalAddressing="));
    assert!(t.warnings[3].contains("[DHCPv4]"));
}

#[test]
fn empty_assignment_resets_like_networkd() {
    let t = parse("[Network]\nDNS=1.1.1.1\nDNS=\nDNS=8.8.8.8\nAddress=10.0.0.2/24\nAddress=\nGateway=10.0.0.1\nGateway=\n", &BTreeMap::new()).unwrap();
    assert_eq!(t.dns, vec![ip("8.8.8.8")]);
    assert!(t.addresses.is_empty());
    assert_eq!(t.gateway, None);
}

#[test]
fn gateways_of_both_families() {
    let t = parse(
        "[Network]\nGateway=10.0.0.1\nGateway=fd00::1\n",
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(t.gateway, Some(ip("10.0.0.1")));
    assert_eq!(
        t.routes,
        vec![Route {
            destination: ip("::"),
            prefix_len: 0,
            gateway: Some(ip("fd00::1")),
            metric: None
        }]
    );
    let t = parse("[Network]\nDHCP=yes\n", &BTreeMap::new()).unwrap();
    assert_eq!(t.dhcp, Dhcp::Yes);
}

#[test]
fn crlf_and_whitespace_are_tolerated() {
    let t = parse(
        "[Network]\r\n  Address = 10.0.0.2/24  \r\n",
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(
        t.addresses[0],
        Address {
            addr: ip("10.0.0.2"),
            prefix_len: 24
        }
    );
}

// ---- properties ----

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from)
    ]
}

fn arb_addr() -> impl Strategy<Value = Address> {
    arb_ip()
        .prop_filter("not unspecified", |a| !a.is_unspecified())
        .prop_flat_map(|addr| {
            let max = if addr.is_ipv4() { 32u8 } else { 128 };
            (Just(addr), 0..=max)
        })
        .prop_map(|(addr, prefix_len)| Address { addr, prefix_len })
}

fn arb_route() -> impl Strategy<Value = Route> {
    (
        arb_addr(),
        any::<bool>(),
        proptest::option::of(any::<u32>()),
        any::<[u8; 16]>(),
    )
        .prop_map(|(a, has_gw, metric, g)| {
            let gateway = has_gw.then(|| {
                if a.addr.is_ipv4() {
                    IpAddr::from([g[0], g[1], g[2], g[3]])
                } else {
                    IpAddr::from(g)
                }
            });
            Route {
                destination: network_of(a.addr, a.prefix_len),
                prefix_len: a.prefix_len,
                gateway,
                metric,
            }
        })
}

prop_compose! {
    fn arb_config()(
        interface in "[a-z][a-z0-9]{0,14}",
        mtu in proptest::option::of(68u32..=65535),
        mac in proptest::option::of(any::<[u8; 6]>()),
        addresses in proptest::collection::vec(arb_addr(), 0..4),
        gateway in proptest::option::of(arb_ip()),
        routes in proptest::collection::vec(arb_route(), 0..4),
        dns in proptest::collection::vec(arb_ip(), 0..4),
        domains in proptest::collection::vec("~?[a-z0-9][a-z0-9.-]{0,20}", 0..3),
    ) -> NetConfig {
        NetConfig {
            interface, source: ConfigSource::Cmdline, mtu, mac: mac.map(MacAddr), addresses, gateway,
            routes, dns, domains, hostname: None, dhcp: false,
        }
    }
}

proptest! {
    /// The networkd handoff is read back by our own parser as exactly what was applied
    /// (its KeepConfiguration= / ConfigureWithoutCarrier= lines are the only warnings).
    #[test]
    fn handoff_round_trips_through_the_parser(cfg in arb_config()) {
        let text = crate::files::handoff(&cfg);
        let t = parse(&text, &BTreeMap::new()).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(t.name.as_deref(), Some(cfg.interface.as_str()));
        prop_assert_eq!(t.mtu, cfg.mtu);
        prop_assert_eq!(t.mac, cfg.mac);
        prop_assert_eq!(&t.addresses, &cfg.addresses);
        prop_assert_eq!(t.gateway, cfg.gateway);
        prop_assert_eq!(&t.routes, &cfg.routes);
        prop_assert_eq!(&t.dns, &cfg.dns);
        prop_assert_eq!(&t.domains, &cfg.domains);
        prop_assert_eq!(t.dhcp, Dhcp::No);
        prop_assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
    }

    /// Any value without newlines fills a placeholder verbatim.
    #[test]
    fn placeholder_values_are_inserted_verbatim(name in "[A-Z][A-Z0-9]{0,5}(_[A-Z0-9]{1,4}){0,2}", value in "[^\r\n]{0,30}") {
        let v: BTreeMap<String, &str> = [(name.to_ascii_lowercase(), value.as_str())].into_iter().collect();
        prop_assert_eq!(fill(&format!("<__{name}__>"), &v).unwrap(), format!("<{value}>"));
    }

    /// The parser never panics, and every error names a line that exists.
    #[test]
    fn never_panics(text in "(\\[[A-Za-z]{0,8}\\]|[A-Za-z]{0,10}=[ -~]{0,20}|#.*|__[A-Z_]{0,6}__|[ -~]{0,20})(\n(\\[(Match|Link|Network|Route|X)\\]|(Name|Address|Gateway|DNS|Domains|DHCP|MTUBytes|MACAddress|Destination|Metric)=[ -~]{0,24}|[ -~]{0,20})){0,12}") {
        if let Err(e) = parse(&text, &vals(&[("a", "1")])) {
            prop_assert!(e.line >= 1 && e.line <= text.lines().count().max(1), "{}", e);
        }
    }
}
