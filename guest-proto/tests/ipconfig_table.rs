//! Table tests for every `ip=` form: the parsed fields, and the text `Display` writes back.

use guest_proto::ipconfig::{Autoconf, IpConfig, IpForm, MacAddr};
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn mac(s: &str) -> MacAddr {
    s.parse().expect("test mac")
}

fn base(form: IpForm, autoconf: Autoconf) -> IpConfig {
    IpConfig::new(form, autoconf)
}

/// (input, expected value, expected Display text)
fn cases() -> Vec<(&'static str, IpConfig, &'static str)> {
    use Autoconf::*;
    use IpForm::*;
    let mut v = vec![];

    // --- bare words
    for a in Autoconf::ALL {
        let s: &'static str = a.as_str();
        v.push((s, base(Bare, a), s));
    }

    // --- kernel positional, all 10 fields
    v.push((
        "192.168.100.5:192.168.100.9:192.168.100.1:255.255.255.0:vm-1.example:eth0:off:8.8.8.8:1.1.1.1:192.168.100.2",
        IpConfig {
            client: Some(ip("192.168.100.5")),
            server: Some(ip("192.168.100.9")),
            gateway: Some(ip("192.168.100.1")),
            prefix_len: Some(24),
            hostname: Some("vm-1.example".into()),
            device: Some("eth0".into()),
            dns: vec![ip("8.8.8.8"), ip("1.1.1.1")],
            ntp: Some(ip("192.168.100.2")),
            ..base(Positional, Off)
        },
        "192.168.100.5:192.168.100.9:192.168.100.1:255.255.255.0:vm-1.example:eth0:off:8.8.8.8:1.1.1.1:192.168.100.2",
    ));
    // the old host's line, with a real gateway
    v.push((
        "192.168.100.5::192.168.100.1:255.255.255.0::eth0:off",
        IpConfig {
            client: Some(ip("192.168.100.5")),
            gateway: Some(ip("192.168.100.1")),
            prefix_len: Some(24),
            device: Some("eth0".into()),
            ..base(Positional, Off)
        },
        "192.168.100.5::192.168.100.1:255.255.255.0::eth0:off",
    ));
    // partial: trailing fields omitted; omitted autoconf with a client means static
    v.push((
        "10.0.0.2",
        IpConfig {
            client: Some(ip("10.0.0.2")),
            ..base(Positional, Off)
        },
        "10.0.0.2::::::off",
    ));
    v.push((
        "10.0.0.2::10.0.0.1:8",
        IpConfig {
            client: Some(ip("10.0.0.2")),
            gateway: Some(ip("10.0.0.1")),
            prefix_len: Some(8),
            prefix_written_as_len: true,
            ..base(Positional, Off)
        },
        "10.0.0.2::10.0.0.1:8:::off",
    ));
    // omitted autoconf without a client: "any" (nfsroot.rst's default)
    v.push((
        ":::::eth1",
        IpConfig {
            device: Some("eth1".into()),
            ..base(Positional, Any)
        },
        ":::::eth1:any",
    ));
    // all empty, autoconf given
    v.push(("::::::dhcp", base(Positional, Dhcp), "::::::dhcp"));
    // empty fields in the middle, hostname only
    v.push((
        "::::myhost::bootp",
        IpConfig {
            hostname: Some("myhost".into()),
            ..base(Positional, Bootp)
        },
        "::::myhost::bootp",
    ));
    // dns1 only (dns0 empty) normalises to one DNS server
    v.push((
        "10.0.0.2:::24::eth0:none::9.9.9.9",
        IpConfig {
            client: Some(ip("10.0.0.2")),
            prefix_len: Some(24),
            prefix_written_as_len: true,
            device: Some("eth0".into()),
            dns: vec![ip("9.9.9.9")],
            ..base(Positional, None)
        },
        "10.0.0.2:::24::eth0:none:9.9.9.9",
    ));
    // ntp only
    v.push((
        "10.0.0.2::::::off:::10.0.0.123",
        IpConfig {
            client: Some(ip("10.0.0.2")),
            ntp: Some(ip("10.0.0.123")),
            ..base(Positional, Off)
        },
        "10.0.0.2::::::off:::10.0.0.123",
    ));
    // trailing empty fields after autoconf
    v.push((
        "10.0.0.2::::::off::",
        IpConfig {
            client: Some(ip("10.0.0.2")),
            ..base(Positional, Off)
        },
        "10.0.0.2::::::off",
    ));
    // netmask /0 and /32
    v.push((
        "10.0.0.2:::0.0.0.0::eth0:off",
        IpConfig {
            client: Some(ip("10.0.0.2")),
            prefix_len: Some(0),
            device: Some("eth0".into()),
            ..base(Positional, Off)
        },
        "10.0.0.2:::0.0.0.0::eth0:off",
    ));
    v.push((
        "10.0.0.2:::255.255.255.255::eth0:off",
        IpConfig {
            client: Some(ip("10.0.0.2")),
            prefix_len: Some(32),
            device: Some("eth0".into()),
            ..base(Positional, Off)
        },
        "10.0.0.2:::255.255.255.255::eth0:off",
    ));
    v.push((
        "10.0.0.2:::32::eth0:off",
        IpConfig {
            client: Some(ip("10.0.0.2")),
            prefix_len: Some(32),
            prefix_written_as_len: true,
            device: Some("eth0".into()),
            ..base(Positional, Off)
        },
        "10.0.0.2:::32::eth0:off",
    ));
    v.push((
        "172.16.5.4:::255.255.240.0::eth0:off",
        IpConfig {
            client: Some(ip("172.16.5.4")),
            prefix_len: Some(20),
            device: Some("eth0".into()),
            ..base(Positional, Off)
        },
        "172.16.5.4:::255.255.240.0::eth0:off",
    ));

    // --- dracut <iface>:<autoconf>[:[<mtu>][:<mac>]]
    v.push((
        "eth0:dhcp",
        IpConfig {
            device: Some("eth0".into()),
            ..base(DeviceAutoconf, Dhcp)
        },
        "eth0:dhcp",
    ));
    v.push((
        "ens3:dhcp6",
        IpConfig {
            device: Some("ens3".into()),
            ..base(DeviceAutoconf, Dhcp6)
        },
        "ens3:dhcp6",
    ));
    v.push((
        "eth0:on:9000",
        IpConfig {
            device: Some("eth0".into()),
            mtu: Some(9000),
            ..base(DeviceAutoconf, On)
        },
        "eth0:on:9000",
    ));
    v.push((
        "eth0:dhcp:1500:52:54:00:12:34:56",
        IpConfig {
            device: Some("eth0".into()),
            mtu: Some(1500),
            mac: Some(mac("52:54:00:12:34:56")),
            ..base(DeviceAutoconf, Dhcp)
        },
        "eth0:dhcp:1500:52:54:00:12:34:56",
    ));
    // empty MTU, MAC uppercase and with dashes: normalised to lowercase colons
    v.push((
        "eth0.100:auto6::52-54-00-AB-CD-EF",
        IpConfig {
            device: Some("eth0.100".into()),
            mac: Some(mac("52:54:00:ab:cd:ef")),
            ..base(DeviceAutoconf, Auto6)
        },
        "eth0.100:auto6::52:54:00:ab:cd:ef",
    ));
    v.push((
        "enp0s3:either6:",
        IpConfig {
            device: Some("enp0s3".into()),
            ..base(DeviceAutoconf, Either6)
        },
        "enp0s3:either6",
    ));

    // --- dracut positional with <mtu> and <mac>
    v.push((
        "192.168.100.5::192.168.100.1:24:vm:eth0:none:1400:52:54:00:12:34:56",
        IpConfig {
            client: Some(ip("192.168.100.5")),
            gateway: Some(ip("192.168.100.1")),
            prefix_len: Some(24),
            prefix_written_as_len: true,
            hostname: Some("vm".into()),
            device: Some("eth0".into()),
            mtu: Some(1400),
            mac: Some(mac("52:54:00:12:34:56")),
            ..base(Positional, None)
        },
        "192.168.100.5::192.168.100.1:24:vm:eth0:none:1400:52:54:00:12:34:56",
    ));
    v.push((
        "192.168.100.5::192.168.100.1:24::eth0:off:1400",
        IpConfig {
            client: Some(ip("192.168.100.5")),
            gateway: Some(ip("192.168.100.1")),
            prefix_len: Some(24),
            prefix_written_as_len: true,
            device: Some("eth0".into()),
            mtu: Some(1400),
            ..base(Positional, Off)
        },
        "192.168.100.5::192.168.100.1:24::eth0:off:1400",
    ));
    v.push((
        "192.168.100.5:::::eth0:off::02:00:00:00:00:01",
        IpConfig {
            client: Some(ip("192.168.100.5")),
            device: Some("eth0".into()),
            mac: Some(mac("02:00:00:00:00:01")),
            ..base(Positional, Off)
        },
        "192.168.100.5:::::eth0:off::02:00:00:00:00:01",
    ));

    // --- dracut positional with <dns1>:<dns2>
    v.push((
        "192.168.100.5::192.168.100.1:255.255.255.0::eth0:off:192.168.100.1:8.8.4.4",
        IpConfig {
            client: Some(ip("192.168.100.5")),
            gateway: Some(ip("192.168.100.1")),
            prefix_len: Some(24),
            device: Some("eth0".into()),
            dns: vec![ip("192.168.100.1"), ip("8.8.4.4")],
            ..base(Positional, Off)
        },
        "192.168.100.5::192.168.100.1:255.255.255.0::eth0:off:192.168.100.1:8.8.4.4",
    ));

    // --- IPv6, bracketed, with prefix length
    v.push((
        "[2001:db8::2]::[2001:db8::1]:64:vm6:eth0:none",
        IpConfig {
            client: Some(ip("2001:db8::2")),
            gateway: Some(ip("2001:db8::1")),
            prefix_len: Some(64),
            prefix_written_as_len: true,
            hostname: Some("vm6".into()),
            device: Some("eth0".into()),
            ..base(Positional, None)
        },
        "[2001:db8::2]::[2001:db8::1]:64:vm6:eth0:none",
    ));
    v.push((
        "[2001:DB8:0:0::2]:[fe80::9]:[fe80::1]:128::eth0:off:[2001:4860:4860::8888]:[2001:4860:4860::8844]:[2001:db8::123]",
        IpConfig {
            client: Some(ip("2001:db8::2")),
            server: Some(ip("fe80::9")),
            gateway: Some(ip("fe80::1")),
            prefix_len: Some(128),
            prefix_written_as_len: true,
            device: Some("eth0".into()),
            dns: vec![ip("2001:4860:4860::8888"), ip("2001:4860:4860::8844")],
            ntp: Some(ip("2001:db8::123")),
            ..base(Positional, Off)
        },
        "[2001:db8::2]:[fe80::9]:[fe80::1]:128::eth0:off:[2001:4860:4860::8888]:[2001:4860:4860::8844]:[2001:db8::123]",
    ));
    v.push((
        "[2001:db8::2]::::::off:9000:52:54:00:12:34:56",
        IpConfig {
            client: Some(ip("2001:db8::2")),
            mtu: Some(9000),
            mac: Some(mac("52:54:00:12:34:56")),
            ..base(Positional, Off)
        },
        "[2001:db8::2]::::::off:9000:52:54:00:12:34:56",
    ));
    v.push((
        "[2001:db8::2]",
        IpConfig {
            client: Some(ip("2001:db8::2")),
            ..base(Positional, Off)
        },
        "[2001:db8::2]::::::off",
    ));
    // v6 client with v4 DNS is allowed (the resolver is reached however it is routed)
    v.push((
        "[2001:db8::2]::::::off:8.8.8.8",
        IpConfig {
            client: Some(ip("2001:db8::2")),
            dns: vec![ip("8.8.8.8")],
            ..base(Positional, Off)
        },
        "[2001:db8::2]::::::off:8.8.8.8",
    ));
    // MTU bounds
    v.push((
        "eth0:dhcp:68",
        IpConfig {
            device: Some("eth0".into()),
            mtu: Some(68),
            ..base(DeviceAutoconf, Dhcp)
        },
        "eth0:dhcp:68",
    ));
    v.push((
        "eth0:dhcp:65535",
        IpConfig {
            device: Some("eth0".into()),
            mtu: Some(65535),
            ..base(DeviceAutoconf, Dhcp)
        },
        "eth0:dhcp:65535",
    ));
    // 15-byte device name, 64-char hostname
    v.push((
        "10.1.1.1::::a23456789012345678901234567890123456789012345678901234567890.bcd:abcdefghijklmno:off",
        IpConfig {
            client: Some(ip("10.1.1.1")),
            hostname: Some(
                "a23456789012345678901234567890123456789012345678901234567890.bcd".into(),
            ),
            device: Some("abcdefghijklmno".into()),
            ..base(Positional, Off)
        },
        "10.1.1.1::::a23456789012345678901234567890123456789012345678901234567890.bcd:abcdefghijklmno:off",
    ));
    v
}

#[test]
fn every_form_parses_to_its_fields_and_prints_back() {
    let cases = cases();
    assert!(cases.len() > 40, "table shrank: {}", cases.len());
    for (input, want, printed) in cases {
        let got: IpConfig = input
            .parse()
            .unwrap_or_else(|e| panic!("{input}: unexpected error {e}"));
        assert_eq!(got, want, "parsing {input}");
        assert_eq!(got.to_string(), printed, "printing {input}");
        let again: IpConfig = printed
            .parse()
            .unwrap_or_else(|e| panic!("{printed}: reparse failed: {e}"));
        assert_eq!(again, got, "round trip of {input}");
        assert_eq!(got.validate(), Ok(()), "validate {input}");
    }
}

#[test]
fn meaning_helpers_follow_the_autoconf_word() {
    let c: IpConfig = "192.168.100.5::192.168.100.1:24::eth0".parse().unwrap();
    assert!(c.autoconf.is_static());
    let c: IpConfig = ":::::eth0".parse().unwrap();
    assert!(c.autoconf.wants_dhcp4());
    let c: IpConfig = "eth0:dhcp6".parse().unwrap();
    assert!(!c.autoconf.wants_dhcp4() && !c.autoconf.is_static());
}

#[test]
fn serde_json_round_trips_a_parsed_value() {
    let c: IpConfig = "[2001:db8::2]::[2001:db8::1]:64:vm:eth0:none:1500:52:54:00:12:34:56"
        .parse()
        .unwrap();
    let json = serde_json::to_string(&c).unwrap();
    assert!(json.contains("\"mac\":\"52:54:00:12:34:56\""), "{json}");
    let back: IpConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
}

#[test]
fn validate_rejects_values_that_cannot_be_written() {
    let mut bare = IpConfig::new(IpForm::Bare, Autoconf::Dhcp);
    bare.client = Some(ip("10.0.0.1"));
    assert_eq!(bare.validate().unwrap_err().field, "client");

    let mut both = IpConfig::new(IpForm::Positional, Autoconf::Off);
    both.client = Some(ip("10.0.0.1"));
    both.mtu = Some(1500);
    both.dns = vec![ip("8.8.8.8")];
    assert_eq!(both.validate().unwrap_err().field, "dns0");

    let mut three = IpConfig::new(IpForm::Positional, Autoconf::Off);
    three.dns = vec![ip("8.8.8.8"), ip("8.8.4.4"), ip("1.1.1.1")];
    assert_eq!(three.validate().unwrap_err().field, "dns0");

    let mut bad_dev = IpConfig::new(IpForm::DeviceAutoconf, Autoconf::Dhcp);
    bad_dev.device = Some("eth0/1".into());
    assert_eq!(bad_dev.validate().unwrap_err().field, "device");

    let mut no_dev = IpConfig::new(IpForm::DeviceAutoconf, Autoconf::Dhcp);
    no_dev.device = None;
    assert!(no_dev.validate().is_err());

    let mut v6_dotted = IpConfig::new(IpForm::Positional, Autoconf::Off);
    v6_dotted.client = Some(ip("2001:db8::1"));
    v6_dotted.prefix_len = Some(64);
    assert_eq!(v6_dotted.validate().unwrap_err().field, "netmask");

    let mut mtu = IpConfig::new(IpForm::DeviceAutoconf, Autoconf::Dhcp);
    mtu.device = Some("eth0".into());
    mtu.mtu = Some(10);
    let e = mtu.validate().unwrap_err();
    assert_eq!((e.field, e.text.as_str()), ("mtu", "10"));
}
