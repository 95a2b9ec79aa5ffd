//! Malformed `ip=` values: each must fail naming the field and quoting the bad text, and the
//! first error reported is the leftmost bad field.

use guest_proto::ipconfig::IpConfig;

/// (input, field, text, a phrase the reason must contain)
const BAD: &[(&str, &str, &str, &str)] = &[
    // the old host's line, and the same line with a good client
    (
        "192.168.100.X::undefined:undefined::eth0:off",
        "client",
        "192.168.100.X",
        "is not an IPv4 address",
    ),
    (
        "192.168.100.5::undefined:undefined::eth0:off",
        "gateway",
        "undefined",
        "is not an IPv4 address",
    ),
    (
        "192.168.100.5::192.168.100.1:undefined::eth0:off",
        "netmask",
        "undefined",
        "is not a netmask",
    ),
    // whole value
    ("", "ip", "", "is empty"),
    (
        "1.2.3.4::::::off:1.1.1.1:2.2.2.2:3.3.3.3:4.4.4.4",
        "ip",
        "1.2.3.4::::::off:1.1.1.1:2.2.2.2:3.3.3.3:4.4.4.4",
        "at most 10",
    ),
    // bare / autoconf words
    (
        "dchp",
        "autoconf",
        "dchp",
        "is not one of off, none, on, any, dhcp",
    ),
    ("DHCP", "autoconf", "DHCP", "single-dhcp"),
    ("eth0", "autoconf", "eth0", "is not one of"),
    ("eth0:dhcpv6", "autoconf", "dhcpv6", "is not one of"),
    (
        "10.0.0.2::::::static",
        "autoconf",
        "static",
        "is not one of",
    ),
    (
        "10.0.0.2:::24::eth0:dhcp,clientid",
        "autoconf",
        "dhcp,clientid",
        "is not one of",
    ),
    // client
    (
        "300.1.1.1::::::off",
        "client",
        "300.1.1.1",
        "is not an IPv4 address",
    ),
    (
        "10.0.0::::::off",
        "client",
        "10.0.0",
        "is not an IPv4 address",
    ),
    ("010.0.0.1", "client", "010.0.0.1", "is not an IPv4 address"),
    ("0.0.0.0::::::off", "client", "0.0.0.0", "unspecified"),
    ("[::]::::::off", "client", "[::]", "unspecified"),
    (
        "[2001:db8::2::::::off",
        "client",
        "[2001:db8::2::::::off",
        "missing the closing `]`",
    ),
    (
        "[2001:db8::zz]::::::off",
        "client",
        "[2001:db8::zz]",
        "is not an IPv6 address",
    ),
    (
        "[10.0.0.1]::::::off",
        "client",
        "[10.0.0.1]",
        "is not an IPv6 address",
    ),
    (
        "2001:db8::2::::::off",
        "client",
        "2001:db8::2",
        "without brackets",
    ),
    ("fe80::1", "client", "fe80::1", "without brackets"),
    ("eth0::::::off", "client", "eth0", "is not an IP address"),
    (
        " 10.0.0.2::::::off",
        "client",
        " 10.0.0.2",
        "is not an IP address",
    ),
    // server / gateway
    (
        "10.0.0.2:nfs-server:::::off",
        "server",
        "nfs-server",
        "is not an IPv4 address",
    ),
    (
        "10.0.0.2:[2001:db8::9]:::::off",
        "server",
        "[2001:db8::9]",
        "is an IPv6 address but the client is IPv4",
    ),
    (
        "10.0.0.2::[2001:db8::1]::::off",
        "gateway",
        "[2001:db8::1]",
        "is an IPv6 address but the client is IPv4",
    ),
    (
        "[2001:db8::2]::10.0.0.1::::off",
        "gateway",
        "10.0.0.1",
        "is an IPv4 address but the client is IPv6",
    ),
    (
        "[2001:db8::2]::gw6::::off",
        "gateway",
        "gw6",
        "is not a bracketed IPv6 address",
    ),
    (
        ":10.0.0.9:[2001:db8::1]::::dhcp",
        "gateway",
        "[2001:db8::1]",
        "but the server is IPv4",
    ),
    (
        "10.0.0.2::10.0.0.1.::::off",
        "gateway",
        "10.0.0.1.",
        "is not an IPv4 address",
    ),
    // netmask
    (
        "10.0.0.2:::255.0.255.0::eth0:off",
        "netmask",
        "255.0.255.0",
        "not a contiguous netmask",
    ),
    (
        "10.0.0.2:::255.255.255.1::eth0:off",
        "netmask",
        "255.255.255.1",
        "not a contiguous netmask",
    ),
    ("10.0.0.2:::33::eth0:off", "netmask", "33", "0..=32"),
    ("10.0.0.2:::0024::eth0:off", "netmask", "0024", "0..=32"),
    (
        "10.0.0.2:::-1::eth0:off",
        "netmask",
        "-1",
        "is not a netmask",
    ),
    (
        "10.0.0.2:::+24::eth0:off",
        "netmask",
        "+24",
        "is not a netmask",
    ),
    ("[2001:db8::2]:::129::eth0:off", "netmask", "129", "0..=128"),
    (
        "[2001:db8::2]:::255.255.255.0::eth0:off",
        "netmask",
        "255.255.255.0",
        "prefix length for IPv6",
    ),
    (":::24::eth0:off", "netmask", "24", "needs a client address"),
    (
        ":::255.255.255.0::eth0:dhcp",
        "netmask",
        "255.255.255.0",
        "needs a client address",
    ),
    // hostname
    (
        "10.0.0.2::::my_host::off",
        "hostname",
        "my_host",
        "only letters, digits",
    ),
    (
        "10.0.0.2::::-host::off",
        "hostname",
        "-host",
        "starting or ending with `-`",
    ),
    (
        "10.0.0.2::::host-::off",
        "hostname",
        "host-",
        "starting or ending with `-`",
    ),
    ("10.0.0.2::::a..b::off", "hostname", "a..b", "empty label"),
    ("10.0.0.2::::host.::off", "hostname", "host.", "empty label"),
    (
        "10.0.0.2::::a234567890123456789012345678901234567890123456789012345678901234567::off",
        "hostname",
        "a234567890123456789012345678901234567890123456789012345678901234567",
        "longer than 64",
    ),
    (
        "10.0.0.2::::aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa::off",
        "hostname",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "longer than 63",
    ),
    (
        "10.0.0.2::::hôte::off",
        "hostname",
        "hôte",
        "only letters, digits",
    ),
    // device
    (
        "10.0.0.2:::::abcdefghijklmnop:off",
        "device",
        "abcdefghijklmnop",
        "at most 15 bytes",
    ),
    ("10.0.0.2:::::eth/0:off", "device", "eth/0", "'/'"),
    ("10.0.0.2:::::eth 0:off", "device", "eth 0", "' '"),
    (
        "10.0.0.2:::::..:off",
        "device",
        "..",
        "is not an interface name",
    ),
    ("eth\u{0}0:dhcp", "device", "eth\u{0}0", "'\\0'"),
    ("10.0.0.2:::::eth[0]:off", "device", "eth[0]", "'['"),
    (
        "abcdefghijklmnop:dhcp",
        "device",
        "abcdefghijklmnop",
        "at most 15 bytes",
    ),
    // mtu
    ("eth0:dhcp:67", "mtu", "67", "68..=65535"),
    ("eth0:dhcp:65536", "mtu", "65536", "68..=65535"),
    ("eth0:dhcp:1500x", "mtu", "1500x", "68..=65535"),
    (
        "eth0:dhcp:99999999999999999999",
        "mtu",
        "99999999999999999999",
        "68..=65535",
    ),
    (
        "eth0:dhcp:52:54:00:12:34:56",
        "mtu",
        "52",
        "needs an empty MTU field",
    ),
    ("10.0.0.2:::::eth0:off:0", "mtu", "0", "68..=65535"),
    // mac
    (
        "eth0:dhcp:1500:52:54:00:12:34",
        "mac",
        "52:54:00:12:34",
        "is not a MAC address",
    ),
    (
        "eth0:dhcp:1500:52:54:00:12:34:56:78",
        "mac",
        "52:54:00:12:34:56:78",
        "is not a MAC address",
    ),
    (
        "eth0:dhcp::52:54:00:12:34:zz",
        "mac",
        "52:54:00:12:34:zz",
        "is not a MAC address",
    ),
    (
        "eth0:dhcp::+2:54:00:12:34:56",
        "mac",
        "+2:54:00:12:34:56",
        "is not a MAC address",
    ),
    (
        "10.0.0.2:::::eth0:off:1500:8.8.8.8",
        "mac",
        "8.8.8.8",
        "is not a MAC address",
    ),
    // dns / ntp
    (
        "10.0.0.2:::::eth0:off:8.8.8",
        "dns0",
        "8.8.8",
        "is not an IPv4 address",
    ),
    (
        "10.0.0.2:::::eth0:off:undefined",
        "dns0",
        "undefined",
        "is not an IP address",
    ),
    (
        "10.0.0.2:::::eth0:off:8.8.8.8:dns.example",
        "dns1",
        "dns.example",
        "is not an IP address",
    ),
    (
        "10.0.0.2:::::eth0:off::[2001:db8::53",
        "dns1",
        "[2001:db8::53",
        "missing the closing",
    ),
    (
        "10.0.0.2:::::eth0:off:8.8.8.8:8.8.4.4:ntp.example",
        "ntp0",
        "ntp.example",
        "is not an IP address",
    ),
];

#[test]
fn malformed_values_name_the_field_and_quote_the_text() {
    assert!(BAD.len() >= 40, "only {} malformed cases", BAD.len());
    let mut failures = vec![];
    for (input, field, text, reason) in BAD {
        match input.parse::<IpConfig>() {
            Ok(v) => failures.push(format!("{input:?}: parsed as {v:?}")),
            Err(e) => {
                if e.field != *field || e.text != *text || !e.reason.contains(reason) {
                    failures.push(format!(
                        "{input:?}: got {:?} `{}` {:?}, want {field:?} `{text}` ~{reason:?}",
                        e.field, e.text, e.reason
                    ));
                }
                let shown = e.to_string();
                assert!(
                    shown.starts_with(&format!("{field}: `{text}` ")),
                    "display {shown:?}"
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_issue_examples_have_the_exact_messages() {
    let e = "192.168.100.5::undefined:undefined::eth0:off"
        .parse::<IpConfig>()
        .unwrap_err();
    assert_eq!(e.to_string(), "gateway: `undefined` is not an IPv4 address");
    let e = "192.168.100.X::undefined:undefined::eth0:off"
        .parse::<IpConfig>()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "client: `192.168.100.X` is not an IPv4 address"
    );
}

#[test]
fn unknown_autoconf_lists_every_valid_word() {
    let e = "eth0:bogus".parse::<IpConfig>().unwrap_err();
    for a in guest_proto::Autoconf::ALL {
        assert!(
            e.reason.contains(a.as_str()),
            "{} missing in {}",
            a,
            e.reason
        );
    }
}
