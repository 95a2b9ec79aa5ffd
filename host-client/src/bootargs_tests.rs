use super::*;
use guest_proto::Autoconf;
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn fleet_ip() -> IpConfig {
    static_ip(
        "192.168.100.9/24",
        Some("192.168.100.1".parse().unwrap()),
        &["1.1.1.1".parse().unwrap()],
        Some("vm-9"),
        Some("eth0"),
    )
    .unwrap()
}

#[test]
fn builds_the_fleet_cmdline() {
    let args = BootArgs::new()
        .console("ttyS0")
        .root("/dev/vda")
        .ip(fleet_ip())
        .extra("reboot", Some("k".into()))
        .extra("quiet", None);
    assert_eq!(
        args.build().unwrap(),
        "console=ttyS0 root=/dev/vda ip=192.168.100.9::192.168.100.1:255.255.255.0:vm-9:eth0:off:1.1.1.1 reboot=k quiet"
    );
}

#[test]
fn refuses_undefined_and_empty_values_naming_the_parameter() {
    let e = BootArgs::parse_extra("guest.vm_ip=undefined").unwrap_err();
    assert_eq!(
        e.to_string(),
        "guest.vm_ip: `undefined` contains a placeholder (`undefined`/`null`)"
    );
    let e = BootArgs::parse_extra("x=a:undefined:b").unwrap_err();
    assert!(e.to_string().starts_with("x: "), "{e}");
    assert!(BootArgs::parse_extra("guest.vm_ip=192.168.100.NaN").is_err());
    assert!(BootArgs::parse_extra("x=1,null").is_err());
    assert_eq!(
        BootArgs::parse_extra("log=/dev/null").unwrap(),
        ("log".to_string(), Some("/dev/null".to_string()))
    );
    let e = BootArgs::parse_extra("x=").unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let e = BootArgs::parse_extra("=v").unwrap_err();
    assert!(e.to_string().contains("key"), "{e}");
    let e = BootArgs::new()
        .extra("a b", Some("c".into()))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("whitespace"), "{e}");
    let e = BootArgs::new().console("").build().unwrap_err();
    assert!(e.to_string().starts_with("console:"), "{e}");
    let e = BootArgs::new().root("undefined").build().unwrap_err();
    assert!(e.to_string().starts_with("root:"), "{e}");
    let e = BootArgs::new()
        .extra("ip", Some("dhcp".into()))
        .build()
        .unwrap_err();
    assert_eq!(e, BootArgsError::TypedKey("ip".into()));
    let mut ip = fleet_ip();
    ip.hostname = Some("undefined".into());
    assert!(BootArgs::new().ip(ip).build().is_err());
}

#[test]
fn static_ip_errors() {
    for bad in [
        "192.168.100.9",
        "192.168.100.X/24",
        "192.168.100.9/33",
        "/24",
    ] {
        assert_eq!(
            static_ip(bad, None, &[], None, None).unwrap_err(),
            BootArgsError::BadCidr(bad.into())
        );
    }
    let dns: Vec<IpAddr> = vec!["1.1.1.1".parse().unwrap(); 3];
    assert_eq!(
        static_ip("10.0.0.2/8", None, &dns, None, None).unwrap_err(),
        BootArgsError::TooManyDns(3)
    );
}

#[test]
fn firecracker_fragment_has_the_derived_mac() {
    let args = BootArgs::new().console("ttyS0").ip(fleet_ip());
    let v = args.firecracker("/srv/vmlinux", "fcabc").unwrap();
    assert_eq!(v["boot-source"]["kernel_image_path"], "/srv/vmlinux");
    assert_eq!(v["boot-source"]["boot_args"], args.build().unwrap());
    let nic = &v["network-interfaces"][0];
    assert_eq!(nic["iface_id"], "eth0");
    assert_eq!(nic["host_dev_name"], "fcabc");
    assert_eq!(nic["guest_mac"], "06:00:C0:A8:64:09");
    let no_ip = BootArgs::new()
        .console("ttyS0")
        .firecracker("/k", "t")
        .unwrap();
    assert!(no_ip.get("network-interfaces").is_none());
}

#[test]
fn mac_is_derived_from_the_address() {
    assert_eq!(
        mac_for_ip(IpAddr::V4(Ipv4Addr::new(192, 168, 100, 9))),
        MacAddr([0x06, 0, 0xc0, 0xa8, 0x64, 0x09])
    );
}

fn arb_word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_./,-]{0,12}".prop_filter("no placeholders", |w| check_word("w", w).is_ok())
}

fn arb_ip() -> impl Strategy<Value = IpConfig> {
    (
        any::<[u8; 4]>(),
        0u8..=32,
        proptest::option::of(any::<[u8; 4]>()),
        proptest::collection::vec(any::<[u8; 4]>(), 0..=2),
        proptest::option::of("[a-z][a-z0-9-]{0,10}"),
        proptest::option::of("eth[0-9]"),
    )
        .prop_filter_map("valid static ip", |(c, len, gw, dns, host, dev)| {
            let cidr = format!("{}/{len}", Ipv4Addr::from(c));
            let dns: Vec<IpAddr> = dns.into_iter().map(|d| IpAddr::V4(d.into())).collect();
            static_ip(
                &cidr,
                gw.map(|g| IpAddr::V4(g.into())),
                &dns,
                host.as_deref(),
                dev.as_deref(),
            )
            .ok()
        })
}

proptest! {
    /// What BootArgs writes, guest-proto's parser (the one guest-netinit uses) reads back.
    #[test]
    fn round_trips_through_the_guest_parser(
        console in proptest::option::of(arb_word()),
        root in proptest::option::of(arb_word()),
        ip in proptest::option::of(arb_ip()),
        extra in proptest::collection::vec(
            ("[a-z][a-z0-9_.]{0,8}", proptest::option::of("[a-z0-9][a-z0-9 ,:/_.-]{0,12}")), 0..4),
    ) {
        let mut args = BootArgs { console, root, ip, extra: Vec::new() };
        for (k, v) in extra {
            if TYPED_KEYS.contains(&k.as_str()) || BootArgs::parse_extra(&k).is_err() {
                continue;
            }
            if let Some(v) = &v {
                if check_value(&k, v).is_err() { continue; }
            }
            args.extra.push((k, v));
        }
        let text = args.build().unwrap();
        let parsed = KernelCmdline::parse(&text);
        prop_assert_eq!(parsed.get("console"), args.console.as_deref());
        prop_assert_eq!(parsed.get("root"), args.root.as_deref());
        let ips = parsed.ip_configs().unwrap();
        prop_assert_eq!(ips.first(), args.ip.as_ref());
        if let Some(ip) = &args.ip {
            let back: IpConfig = ip.to_string().parse().unwrap();
            prop_assert_eq!(&back, ip);
            prop_assert_eq!(back.autoconf, Autoconf::Off);
        }
        let n_typed = [args.console.is_some(), args.root.is_some(), args.ip.is_some()]
            .iter().filter(|b| **b).count();
        prop_assert_eq!(&parsed.params[n_typed..], &args.extra[..]);
    }

    #[test]
    fn never_emits_a_placeholder(word in "(undefined|null|NaN|Undefined)") {
        let emitted = BootArgs::new().extra("guest.vm_ip", Some(format!("192.168.100.5:{word}"))).build();
        prop_assert!(emitted.is_err());
    }
}
