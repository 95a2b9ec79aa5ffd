use super::*;
use crate::config::{Address, Route};
use guest_proto::ConfigSource;

fn cfg() -> NetConfig {
    NetConfig {
        interface: "eth0".into(),
        source: ConfigSource::Cmdline,
        mtu: Some(1400),
        mac: Some(guest_proto::MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56])),
        addresses: vec![Address {
            addr: "192.168.100.2".parse().unwrap(),
            prefix_len: 24,
        }],
        gateway: Some("192.168.100.1".parse().unwrap()),
        routes: vec![Route {
            destination: "10.1.0.0".parse().unwrap(),
            prefix_len: 16,
            gateway: Some("192.168.100.254".parse().unwrap()),
            metric: Some(100),
        }],
        dns: vec!["1.1.1.1".parse().unwrap(), "8.8.8.8".parse().unwrap()],
        domains: vec!["example.com".into(), "~corp".into()],
        hostname: Some("vm1".into()),
        dhcp: false,
    }
}

#[test]
fn handoff_content_is_exactly_what_was_applied() {
    assert_eq!(
        handoff(&cfg()),
        "# Written by guest-netinit: what it applied to eth0 at boot (source: kernel cmdline).\n\
         # Sorts before every other .network file, so systemd-networkd uses this one and keeps it.\n\
         [Match]\nName=eth0\n\n\
         [Link]\nMTUBytes=1400\nMACAddress=52:54:00:12:34:56\n\n\
         [Network]\nAddress=192.168.100.2/24\nGateway=192.168.100.1\nDNS=1.1.1.1\nDNS=8.8.8.8\n\
         Domains=example.com ~corp\nDHCP=no\nKeepConfiguration=static\nConfigureWithoutCarrier=yes\n\n\
         [Route]\nDestination=10.1.0.0/16\nGateway=192.168.100.254\nMetric=100\n"
    );
}

#[test]
fn resolv_conf_content_skips_routing_domains() {
    let text = resolv_conf(&cfg()).unwrap();
    assert!(
        text.ends_with("nameserver 1.1.1.1\nnameserver 8.8.8.8\nsearch example.com\n"),
        "{text}"
    );
    let mut none = cfg();
    none.dns.clear();
    none.domains = vec!["~corp".into()];
    assert_eq!(resolv_conf(&none), None);
}

#[test]
fn files_land_under_root_atomically() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    assert_eq!(
        write_resolv_conf(root, &cfg()).unwrap(),
        ResolvOutcome::Written
    );
    assert!(std::fs::read_to_string(root.join("etc/resolv.conf"))
        .unwrap()
        .contains("nameserver 8.8.8.8"));
    write_hostname(root, "vm1", false).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "vm1\n"
    );
    let shown = write_handoff(root, &cfg()).unwrap();
    assert_eq!(shown, "/run/systemd/network/00-guest-netinit-eth0.network");
    assert_eq!(
        std::fs::read_to_string(root.join(&shown[1..])).unwrap(),
        handoff(&cfg())
    );
    // no temp files left behind
    for dir in ["etc", "run/systemd/network"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(!name.starts_with('.'), "left {name} in {dir}");
        }
    }
}

#[test]
fn a_resolv_conf_symlink_is_left_alone() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc")).unwrap();
    std::os::unix::fs::symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        d.path().join("etc/resolv.conf"),
    )
    .unwrap();
    assert_eq!(
        write_resolv_conf(d.path(), &cfg()).unwrap(),
        ResolvOutcome::LeftSymlink("../run/systemd/resolve/stub-resolv.conf".into())
    );
    assert!(std::fs::symlink_metadata(d.path().join("etc/resolv.conf"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn write_errors_name_the_path() {
    let d = tempfile::tempdir().unwrap();
    // `etc` is a file, so etc/resolv.conf cannot be created
    std::fs::write(d.path().join("etc"), "").unwrap();
    let e = write_resolv_conf(d.path(), &cfg()).unwrap_err();
    assert!(
        e.to_string()
            .contains(&d.path().join("etc/resolv.conf").display().to_string()),
        "{e}"
    );
}

#[test]
fn identical_content_is_not_rewritten_but_changed_content_is() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("run/x");
    write_atomic(&p, b"one\n").unwrap();
    let ino = std::fs::metadata(&p).unwrap().ino();
    write_atomic(&p, b"one\n").unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().ino(),
        ino,
        "same content: no rename"
    );
    write_atomic(&p, b"two\n").unwrap();
    assert_ne!(
        std::fs::metadata(&p).unwrap().ino(),
        ino,
        "new content: replaced by rename"
    );
    assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
}
