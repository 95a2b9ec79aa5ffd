use super::*;

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (p, text) in files {
        let path = d.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    d
}

#[test]
fn empty_root_has_no_conflicts() {
    let d = tempfile::tempdir().unwrap();
    assert!(scan(d.path(), "eth0", &[], "cmdline ip=").is_empty());
}

#[test]
fn finds_each_kind_and_skips_unrelated_files() {
    let d = tree(&[
        (
            "etc/systemd/network/10-eth0.network",
            "[Match]\nName=eth0\n[Network]\nDHCP=yes\n",
        ),
        (
            "etc/systemd/network/20-wired.network",
            "[Match]\nName=en* eth*\n[Network]\nAddress=10.0.0.5/24\n",
        ),
        (
            "etc/systemd/network/30-other.network",
            "[Match]\nName=eth1\n[Network]\nDHCP=yes\n",
        ),
        (
            "etc/systemd/network/40-not.network",
            "[Match]\nName=!eth0\n",
        ),
        ("etc/systemd/network/50-notes.txt", "[Match]\nName=eth0\n"),
        (
            "etc/systemd/network/00-guest-netinit-eth0.network",
            "[Match]\nName=eth0\n",
        ),
        (
            "etc/netplan/50-cloud-init.yaml",
            "network:\n  ethernets:\n    eth0:\n      dhcp4: true\n",
        ),
        (
            "etc/netplan/60-other.yaml",
            "network:\n  ethernets:\n    eth01:\n      dhcp4: true\n",
        ),
        (
            "etc/network/interfaces",
            "auto lo\niface lo inet loopback\n",
        ),
        (
            "etc/network/interfaces.d/eth0",
            "auto eth0\niface eth0 inet dhcp\n",
        ),
        (
            "etc/NetworkManager/system-connections/Wired.nmconnection",
            "[connection]\nid=Wired\ninterface-name=eth0\n[ipv4]\nmethod=auto\n",
        ),
        (
            "etc/NetworkManager/system-connections/Other.nmconnection",
            "[connection]\ninterface-name=eth1\n",
        ),
    ]);
    let c = scan(d.path(), "eth0", &[], "cmdline ip=");
    let got: Vec<(&str, &str)> = c
        .iter()
        .map(|c| (c.source.as_str(), c.path.as_deref().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("networkd", "/etc/systemd/network/10-eth0.network"),
            ("networkd", "/etc/systemd/network/20-wired.network"),
            ("netplan", "/etc/netplan/50-cloud-init.yaml"),
            ("ifupdown", "/etc/network/interfaces.d/eth0"),
            (
                "network-manager",
                "/etc/NetworkManager/system-connections/Wired.nmconnection"
            ),
        ]
    );
    assert_eq!(c[0].detail, "matches eth0 (Name=eth0): DHCP=yes");
    assert!(
        c[0].resolution
            .starts_with("cmdline ip= wins; networkd uses our 00-guest-netinit-eth0.network"),
        "{}",
        c[0].resolution
    );
    assert_eq!(c[2].detail, "mentions eth0 with dhcp4: true");
    assert_eq!(c[3].detail, "`iface eth0 inet dhcp`");
    assert!(c[3].resolution.contains("NOT resolved"));
    assert_eq!(c[4].detail, "interface-name=eth0, method=auto");
}

#[test]
fn the_template_itself_is_not_a_conflict() {
    let d = tree(&[(
        "etc/systemd/network/10-eth0.network",
        "[Match]\nName=eth0\n",
    )]);
    let t = d.path().join("etc/systemd/network/10-eth0.network");
    assert!(scan(d.path(), "eth0", &[t.as_path()], "template").is_empty());
}

#[test]
fn netplan_for_network_manager_is_not_resolved() {
    let d = tree(&[(
        "etc/netplan/01.yaml",
        "network:\n  renderer: NetworkManager\n  ethernets:\n    eth0: {dhcp4: yes}\n",
    )]);
    let c = scan(d.path(), "eth0", &[], "template");
    assert!(c[0].resolution.contains("NOT resolved"), "{:?}", c);
}

#[test]
fn networkd_match_rules() {
    assert!(networkd_matches("[Match]\nName=eth0\n", "eth0").is_some());
    assert!(networkd_matches("[Match]\nName=e?h0\n", "eth0").is_some());
    assert!(networkd_matches("[Match]\nName=eth1\n", "eth0").is_none());
    assert!(networkd_matches("[Match]\nName=!eth1\n", "eth0").is_some());
    assert!(networkd_matches("[Match]\nName=!eth*\n", "eth0").is_none());
    assert!(networkd_matches("[Network]\nDHCP=yes\n", "eth0")
        .unwrap()
        .contains("every interface"));
    assert!(
        networkd_matches("[Match]\nType=ether\n[Network]\nDHCP=yes\n", "eth0")
            .unwrap()
            .contains("may match eth0 (matches by Type)")
    );
    assert!(!glob(b"eth", b"eth0"));
    assert!(glob(b"*", b"eth0"));
}

#[test]
fn word_mentions() {
    assert!(mentions_word("    eth0:\n", "eth0"));
    assert!(mentions_word("name: \"eth0\"", "eth0"));
    assert!(!mentions_word("veth0: {}", "eth0"));
    assert!(!mentions_word("eth01: {}", "eth0"));
}
