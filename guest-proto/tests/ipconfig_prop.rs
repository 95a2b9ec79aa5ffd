//! Property tests: every valid `IpConfig` prints to text that parses back to it, and no input
//! makes the parser panic (and whatever it accepts also round-trips).

use guest_proto::ipconfig::{Autoconf, IpConfig, IpForm, MacAddr};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy)]
enum Fam {
    V4,
    V6,
}

fn fam() -> impl Strategy<Value = Fam> {
    prop_oneof![Just(Fam::V4), Just(Fam::V6)]
}

fn addr(f: Fam) -> BoxedStrategy<IpAddr> {
    match f {
        Fam::V4 => any::<u32>()
            .prop_map(|n| IpAddr::V4(Ipv4Addr::from(n)))
            .boxed(),
        Fam::V6 => prop_oneof![
            any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
            // short forms with `::` and v4-mapped tails
            (any::<u16>(), any::<u16>())
                .prop_map(|(a, b)| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, a, b))),
            any::<u32>().prop_map(|n| IpAddr::V6(Ipv4Addr::from(n).to_ipv6_mapped())),
        ]
        .boxed(),
    }
}

fn any_addr() -> BoxedStrategy<IpAddr> {
    fam().prop_flat_map(addr).boxed()
}

fn autoconf() -> impl Strategy<Value = Autoconf> {
    prop::sample::select(Autoconf::ALL.to_vec())
}

fn hostname() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?){0,3}"
}

fn device() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._@#%+=-]{1,15}".prop_filter("not . or ..", |d| d != "." && d != "..")
}

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

fn mtu() -> impl Strategy<Value = u32> {
    68u32..=65535
}

fn bare() -> impl Strategy<Value = IpConfig> {
    autoconf().prop_map(|a| IpConfig::new(IpForm::Bare, a))
}

fn device_autoconf() -> impl Strategy<Value = IpConfig> {
    // A device that looks like an address (`1.2`) would make the text positional.
    let dev = device().prop_filter("a word, not an address", |d| {
        !(d.starts_with(|c: char| c.is_ascii_digit()) && d.contains('.'))
    });
    (
        dev,
        autoconf(),
        proptest::option::of(mtu()),
        proptest::option::of(mac()),
    )
        .prop_map(|(d, a, mtu, mac)| IpConfig {
            device: Some(d),
            mtu,
            mac,
            ..IpConfig::new(IpForm::DeviceAutoconf, a)
        })
}

fn positional() -> impl Strategy<Value = IpConfig> {
    fam().prop_flat_map(|f| {
        let client =
            proptest::option::of(addr(f).prop_filter("specified", |a| !a.is_unspecified()));
        let max = match f {
            Fam::V4 => 32u8,
            Fam::V6 => 128,
        };
        let prefix = proptest::option::of((0..=max, any::<bool>()));
        let tail = prop_oneof![
            (proptest::option::of(mtu()), proptest::option::of(mac())).prop_map(|(m, a)| (
                m,
                a,
                vec![],
                None
            )),
            (
                proptest::collection::vec(any_addr(), 0..=2),
                proptest::option::of(any_addr())
            )
                .prop_map(|(d, n)| (None, None, d, n)),
        ];
        (
            client,
            proptest::option::of(addr(f)),
            proptest::option::of(addr(f)),
            prefix,
            proptest::option::of(hostname()),
            proptest::option::of(device()),
            autoconf(),
            tail,
        )
            .prop_map(
                move |(client, server, gateway, prefix, hostname, device, a, tail)| {
                    let (prefix_len, as_len) = match (client, prefix) {
                        (Some(c), Some((len, as_len))) => (Some(len), as_len || c.is_ipv6()),
                        _ => (None, false),
                    };
                    IpConfig {
                        client,
                        server,
                        gateway,
                        prefix_len,
                        prefix_written_as_len: as_len,
                        hostname,
                        device,
                        mtu: tail.0,
                        mac: tail.1,
                        dns: tail.2,
                        ntp: tail.3,
                        ..IpConfig::new(IpForm::Positional, a)
                    }
                },
            )
    })
}

fn ip_config() -> impl Strategy<Value = IpConfig> {
    prop_oneof![bare(), device_autoconf(), positional()]
}

/// Text made mostly of the grammar's own characters, so the parser's branches get exercised.
fn grammar_soup() -> impl Strategy<Value = String> {
    "([0-9]{1,3}|[0-9a-f]{1,4}|[:.\\[\\]/ -]|eth0|dhcp|off|on|none|dhcp6|255|24|1500|52){0,30}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn display_then_parse_gives_the_same_value(x in ip_config()) {
        let text = x.to_string();
        let back: IpConfig = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&back, &x, "text {}", text);
        prop_assert_eq!(x.validate(), Ok(()));
    }

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,80}") {
        if let Ok(x) = s.parse::<IpConfig>() {
            let text = x.to_string();
            let back = text.parse::<IpConfig>();
            prop_assert_eq!(back.as_ref(), Ok(&x), "{} -> {}", s, text);
        }
    }

    #[test]
    fn grammar_like_text_never_panics_and_accepted_text_round_trips(s in grammar_soup()) {
        match s.parse::<IpConfig>() {
            Ok(x) => {
                let text = x.to_string();
                let back = text.parse::<IpConfig>();
                prop_assert_eq!(back.as_ref(), Ok(&x), "{} -> {}", s, text);
            }
            Err(e) => {
                // the error quotes text that is really in the input (or the whole of it)
                prop_assert!(s.contains(&e.text), "{:?} not in {:?}", e.text, s);
            }
        }
    }

    #[test]
    fn positional_prefix_is_written_as_it_was_read(len in 0u8..=32, as_len in any::<bool>()) {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let field = if as_len { len.to_string() } else { Ipv4Addr::from(mask).to_string() };
        let text = format!("10.0.0.1:::{field}::eth0:off");
        let x: IpConfig = text.parse().unwrap();
        prop_assert_eq!(x.prefix_len, Some(len));
        prop_assert_eq!(x.prefix_written_as_len, as_len);
        prop_assert_eq!(x.to_string(), text);
    }
}
