//! Kernel command line: tokenising like `next_arg`, the parameters guestkit reads
//! (`ip=`, `nameserver=`, `rd.route=`, `guest.NAME=`), errors, and round trips.

use guest_proto::cmdline::{CmdlineError, KernelCmdline, RdRoute};
use guest_proto::ipconfig::{Autoconf, IpForm};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

type Params = Vec<(String, Option<String>)>;

fn params(line: &str) -> Params {
    KernelCmdline::parse(line).params
}

fn p(k: &str, v: Option<&str>) -> (String, Option<String>) {
    (k.to_string(), v.map(str::to_string))
}

#[test]
fn tokenises_like_the_kernel() {
    let cases: &[(&str, Params)] = &[
        ("", vec![]),
        ("   \t\n ", vec![]),
        (
            "console=ttyS0 reboot=k  panic=1\tquiet",
            vec![
                p("console", Some("ttyS0")),
                p("reboot", Some("k")),
                p("panic", Some("1")),
                p("quiet", None),
            ],
        ),
        ("k=", vec![p("k", Some(""))]),
        ("k=a=b", vec![p("k", Some("a=b"))]),
        ("=v", vec![p("", Some("v"))]),
        (r#"k="a b" x"#, vec![p("k", Some("a b")), p("x", None)]),
        (r#""k=a b" x"#, vec![p("k", Some("a b")), p("x", None)]),
        (r#""a b=c d""#, vec![p("a b", Some("c d"))]),
        (r#""quiet""#, vec![p("quiet", None)]),
        (r#""""#, vec![]),
        // an unterminated quote takes the rest of the line
        (r#"k="a b c"#, vec![p("k", Some("a b c"))]),
        // quotes inside a value are kept (the kernel only strips a leading one)
        (
            r#"k=a"b c"d e"#,
            vec![p("k", Some(r#"a"b c"d"#)), p("e", None)],
        ),
        (
            "init=/sbin/guest-netinit\x0bro",
            vec![p("init", Some("/sbin/guest-netinit")), p("ro", None)],
        ),
        (
            "ip=10.0.0.2::10.0.0.1:24::eth0:off ip=eth1:dhcp",
            vec![
                p("ip", Some("10.0.0.2::10.0.0.1:24::eth0:off")),
                p("ip", Some("eth1:dhcp")),
            ],
        ),
    ];
    for (line, want) in cases {
        assert_eq!(&params(line), want, "line {line:?}");
    }
}

#[test]
fn get_takes_the_last_occurrence_and_get_all_every_one() {
    let c = KernelCmdline::parse("a=1 b a=2 quiet a=3 a");
    assert_eq!(c.get("b"), None);
    assert!(c.contains("b") && c.contains("quiet") && !c.contains("c"));
    assert_eq!(c.get("nope"), None);
    // last occurrence is a flag: no value
    assert_eq!(c.get("a"), None);
    assert_eq!(c.get_all("a"), vec!["1", "2", "3"]);
    let c = KernelCmdline::parse("a=1 a=2");
    assert_eq!(c.get("a"), Some("2"));
}

#[test]
fn ip_configs_in_order() {
    let c = KernelCmdline::parse(
        "console=ttyS0 ip=192.168.100.5::192.168.100.1:255.255.255.0::eth0:off ip=eth1:dhcp:9000",
    );
    let ips = c.ip_configs().unwrap();
    assert_eq!(ips.len(), 2);
    assert_eq!(ips[0].client, Some(ip("192.168.100.5")));
    assert_eq!(ips[0].prefix_len, Some(24));
    assert_eq!(ips[1].form, IpForm::DeviceAutoconf);
    assert_eq!(ips[1].device.as_deref(), Some("eth1"));
    assert_eq!(ips[1].mtu, Some(9000));
    assert_eq!(ips[1].autoconf, Autoconf::Dhcp);
    assert!(KernelCmdline::parse("quiet")
        .ip_configs()
        .unwrap()
        .is_empty());
}

#[test]
fn ip_error_names_the_parameter_and_the_field() {
    let c = KernelCmdline::parse("quiet ip=192.168.100.5::undefined:undefined::eth0:off");
    let e = c.ip_configs().unwrap_err();
    assert_eq!(e.param, "ip");
    assert_eq!(e.error.field, "gateway");
    assert_eq!(
        e.to_string(),
        "ip=192.168.100.5::undefined:undefined::eth0:off: gateway: `undefined` is not an IPv4 address"
    );
    // a bare `ip` flag is reported, not ignored
    let e = KernelCmdline::parse("ip").ip_configs().unwrap_err();
    assert_eq!((e.param, e.error.field), ("ip", "ip"));
    // the first bad one is reported even after a good one
    let e = KernelCmdline::parse("ip=dhcp ip=eth0:dhcp:20")
        .ip_configs()
        .unwrap_err();
    assert_eq!((e.value.as_str(), e.error.field), ("eth0:dhcp:20", "mtu"));
}

#[test]
fn nameservers_v4_and_v6_with_or_without_brackets() {
    let c = KernelCmdline::parse(
        "nameserver=8.8.8.8 nameserver=[2001:4860:4860::8888] nameserver=2001:db8::53",
    );
    assert_eq!(
        c.nameservers().unwrap(),
        vec![
            ip("8.8.8.8"),
            ip("2001:4860:4860::8888"),
            ip("2001:db8::53")
        ]
    );
    for (bad, text) in [
        ("nameserver=undefined", "undefined"),
        ("nameserver=8.8.8", "8.8.8"),
        ("nameserver=[8.8.8.8]", "[8.8.8.8]"),
        ("nameserver", ""),
    ] {
        let e: CmdlineError = KernelCmdline::parse(bad).nameservers().unwrap_err();
        assert_eq!(e.param, "nameserver", "{bad}");
        assert_eq!(e.error.field, "nameserver", "{bad}");
        assert_eq!(e.error.text, text, "{bad}");
    }
}

#[test]
fn rd_routes_every_form() {
    let cases: &[(&str, RdRoute, &str)] = &[
        (
            "10.0.0.0/8:192.168.100.1",
            RdRoute {
                destination: ip("10.0.0.0"),
                prefix_len: 8,
                gateway: Some(ip("192.168.100.1")),
                device: None,
            },
            "10.0.0.0/8:192.168.100.1",
        ),
        (
            "10.0.0.0/255.255.0.0:192.168.100.1:eth0",
            RdRoute {
                destination: ip("10.0.0.0"),
                prefix_len: 16,
                gateway: Some(ip("192.168.100.1")),
                device: Some("eth0".into()),
            },
            "10.0.0.0/16:192.168.100.1:eth0",
        ),
        (
            "169.254.169.254/32::eth0",
            RdRoute {
                destination: ip("169.254.169.254"),
                prefix_len: 32,
                gateway: None,
                device: Some("eth0".into()),
            },
            "169.254.169.254/32::eth0",
        ),
        (
            "10.1.2.3",
            RdRoute {
                destination: ip("10.1.2.3"),
                prefix_len: 32,
                gateway: None,
                device: None,
            },
            "10.1.2.3/32",
        ),
        (
            "0.0.0.0/0:10.0.0.1",
            RdRoute {
                destination: ip("0.0.0.0"),
                prefix_len: 0,
                gateway: Some(ip("10.0.0.1")),
                device: None,
            },
            "0.0.0.0/0:10.0.0.1",
        ),
        (
            "[2001:DB8:3::/48]:[2001:DB8:2::1]:ens10",
            RdRoute {
                destination: ip("2001:db8:3::"),
                prefix_len: 48,
                gateway: Some(ip("2001:db8:2::1")),
                device: Some("ens10".into()),
            },
            "[2001:db8:3::/48]:[2001:db8:2::1]:ens10",
        ),
        (
            "[2001:db8:3::]/48:[fe80::1]",
            RdRoute {
                destination: ip("2001:db8:3::"),
                prefix_len: 48,
                gateway: Some(ip("fe80::1")),
                device: None,
            },
            "[2001:db8:3::/48]:[fe80::1]",
        ),
        (
            "[2001:db8::5]",
            RdRoute {
                destination: ip("2001:db8::5"),
                prefix_len: 128,
                gateway: None,
                device: None,
            },
            "[2001:db8::5/128]",
        ),
    ];
    for (text, want, printed) in cases {
        let got: RdRoute = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(&got, want, "{text}");
        assert_eq!(got.to_string(), *printed, "{text}");
        assert_eq!(printed.parse::<RdRoute>().as_ref(), Ok(&got));
    }
    let c = KernelCmdline::parse("rd.route=10.0.0.0/8:10.0.0.1 rd.route=[2001:db8::/32]::eth0");
    let routes = c.rd_routes().unwrap();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[1].device.as_deref(), Some("eth0"));
}

#[test]
fn bad_rd_routes_name_the_field() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("", "destination", "", "is empty"),
        (
            "10.0.0.1/8:10.0.0.254",
            "destination",
            "10.0.0.1/8",
            "host bits set (the network is 10.0.0.0/8)",
        ),
        ("10.0.0.0/33:10.0.0.1", "netmask", "33", "0..=32"),
        (
            "10.0.0.0/255.0.255.0:10.0.0.1",
            "netmask",
            "255.0.255.0",
            "contiguous",
        ),
        (
            "10.0.0.0/8:[fe80::1]",
            "gateway",
            "[fe80::1]",
            "is an IPv6 address but the destination is IPv4",
        ),
        (
            "[2001:db8::/32]:10.0.0.1",
            "gateway",
            "10.0.0.1",
            "is an IPv4 address but the destination is IPv6",
        ),
        (
            "net/8:10.0.0.1",
            "destination",
            "net/8",
            "is not an IP address",
        ),
        ("10.0.0.0/8:gw", "gateway", "gw", "is not an IPv4 address"),
        ("10.0.0.0/8:10.0.0.1:eth0/1", "device", "eth0/1", "'/'"),
        (
            "10.0.0.0/8:10.0.0.1:eth0:x",
            "rd.route",
            "10.0.0.0/8:10.0.0.1:eth0:x",
            "has 4 fields",
        ),
        (
            "[2001:db8::]x:10.0.0.1",
            "destination",
            "[2001:db8::]x",
            "after `]`",
        ),
        ("[2001:db8::/129]", "netmask", "129", "0..=128"),
    ];
    for (text, field, bad, reason) in cases {
        let e = text.parse::<RdRoute>().unwrap_err();
        assert_eq!((e.field, e.text.as_str()), (*field, *bad), "{text}: {e}");
        assert!(e.reason.contains(reason), "{text}: {e}");
    }
    let e = KernelCmdline::parse("rd.route=10.0.0.1/8:10.0.0.254")
        .rd_routes()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "rd.route=10.0.0.1/8:10.0.0.254: destination: `10.0.0.1/8` has host bits set (the network is 10.0.0.0/8)"
    );
}

#[test]
fn template_values_from_guest_params() {
    let c = KernelCmdline::parse(
        "guest.vm_ip=192.168.100.5 guest.GW=192.168.100.1 guest.vm_ip=192.168.100.6 guest. guest.flag guest.dns=\"1.1.1.1 8.8.8.8\" other.x=1",
    );
    let t = c.template_values();
    assert_eq!(t.get("VM_IP").map(String::as_str), Some("192.168.100.6"));
    assert_eq!(t.get("GW").map(String::as_str), Some("192.168.100.1"));
    assert_eq!(t.get("DNS").map(String::as_str), Some("1.1.1.1 8.8.8.8"));
    assert_eq!(t.len(), 3, "{t:?}");
}

#[test]
fn display_quotes_what_needs_quoting() {
    let c = KernelCmdline {
        params: vec![
            p("console", Some("ttyS0")),
            p("quiet", None),
            p("k", Some("a b")),
            p("a b", Some("c")),
            p("x y", None),
            p("e", Some("")),
        ],
    };
    assert!(c.can_display());
    let s = c.to_string();
    assert_eq!(s, r#"console=ttyS0 quiet k="a b" "a b=c" "x y" e="#);
    assert_eq!(KernelCmdline::parse(&s), c);
    let quoted = KernelCmdline {
        params: vec![p("k", Some("a\"b"))],
    };
    assert!(!quoted.can_display());
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_][a-z0-9._-]{0,12}",
        "[a-z]{1,3}[ \t][a-z]{1,3}",
        Just(String::new()),
    ]
}

fn value() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[ -!#-~\t\n]{0,16}")
}

fn cmdline() -> impl Strategy<Value = KernelCmdline> {
    proptest::collection::vec((key(), value()), 0..8).prop_map(|ps| KernelCmdline {
        params: ps
            .into_iter()
            .filter(|(k, v)| !(k.is_empty() && v.is_none()))
            .collect(),
    })
}

fn rd_route() -> impl Strategy<Value = RdRoute> {
    let v4 =
        (any::<u32>(), 0u8..=32, proptest::option::of(any::<u32>())).prop_map(|(n, len, gw)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            (
                IpAddr::V4(Ipv4Addr::from(n & mask)),
                len,
                gw.map(|g| IpAddr::V4(Ipv4Addr::from(g))),
            )
        });
    let v6 = (
        any::<u128>(),
        0u8..=128,
        proptest::option::of(any::<u128>()),
    )
        .prop_map(|(n, len, gw)| {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            (
                IpAddr::V6(Ipv6Addr::from(n & mask)),
                len,
                gw.map(|g| IpAddr::V6(Ipv6Addr::from(g))),
            )
        });
    (
        prop_oneof![v4, v6],
        proptest::option::of("[a-z][a-z0-9.@-]{0,14}"),
    )
        .prop_map(|((destination, prefix_len, gateway), device)| RdRoute {
            destination,
            prefix_len,
            gateway,
            device,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn cmdline_display_then_parse_gives_the_same_value(c in cmdline()) {
        prop_assert!(c.can_display());
        let text = c.to_string();
        prop_assert_eq!(KernelCmdline::parse(&text), c, "text {:?}", text);
    }

    #[test]
    fn arbitrary_cmdline_never_panics_and_displayable_ones_round_trip(s in ".{0,120}") {
        let c = KernelCmdline::parse(&s);
        let _ = (c.ip_configs(), c.nameservers(), c.rd_routes(), c.template_values());
        if c.can_display() {
            prop_assert_eq!(KernelCmdline::parse(&c.to_string()), c);
        }
    }

    #[test]
    fn quote_heavy_cmdline_never_panics(s in "[a-z= \"\t]{0,40}") {
        let c = KernelCmdline::parse(&s);
        if c.can_display() {
            prop_assert_eq!(KernelCmdline::parse(&c.to_string()), c, "from {:?}", s);
        }
    }

    #[test]
    fn rd_route_display_then_parse_gives_the_same_value(r in rd_route()) {
        let text = r.to_string();
        let back = text.parse::<RdRoute>();
        prop_assert_eq!(back.as_ref(), Ok(&r), "text {}", text);
    }

    #[test]
    fn arbitrary_rd_route_never_panics(s in "([0-9a-f]{1,4}|[:./\\[\\]]|eth0|255){0,20}") {
        if let Ok(r) = s.parse::<RdRoute>() {
            let back = r.to_string().parse::<RdRoute>();
            prop_assert_eq!(back.as_ref(), Ok(&r), "from {}", s);
        }
    }
}
