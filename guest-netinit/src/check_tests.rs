use super::*;
use std::os::unix::fs::{symlink, PermissionsExt};

const KVER: &str = "6.1.0-13-cloud-amd64";
/// The start of a static ELF executable (no PT_INTERP): enough for `check`.
const STATIC_ELF: &str = "\x7fELF\x02\x01\x01 static";

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
}

fn exe(root: &Path, rel: &str) {
    write(root, rel, STATIC_ELF);
    let p = root.join(rel.trim_start_matches('/'));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn link(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

/// A rootfs that passes every rule.
fn healthy() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    let m = format!("lib/modules/{KVER}");
    for f in [
        "kernel/drivers/net/virtio_net.ko",
        "kernel/drivers/net/net_failover.ko",
        "kernel/net/core/failover.ko",
        "kernel/drivers/virtio/virtio_pci.ko",
        "kernel/drivers/virtio/virtio_mmio.ko",
        "kernel/drivers/block/virtio_blk.ko",
        "kernel/net/vmw_vsock/vsock.ko",
        "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
        "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
    ] {
        write(r, &format!("{m}/{f}"), "not really ELF");
    }
    write(
        r,
        &format!("{m}/modules.dep"),
        "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
         kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
         kernel/net/core/failover.ko:\n\
         kernel/drivers/virtio/virtio_pci.ko:\n\
         kernel/drivers/virtio/virtio_mmio.ko:\n\
         kernel/drivers/block/virtio_blk.ko:\n\
         kernel/net/vmw_vsock/vsock.ko:\n\
         kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko\n\
         kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko\n",
    );
    write(r, &format!("boot/vmlinuz-{KVER}"), "kernel");
    write(
        r,
        "etc/guest-netinit/eth0.network",
        "[Match]\nName=eth0\n[Network]\nAddress=__VM_IP__/__PREFIX__\nGateway=__GW__\nDNS=1.1.1.1\n",
    );
    write(
        r,
        "etc/systemd/system/guest-netinit.service",
        "[Service]\nType=oneshot\nExecStart=/sbin/guest-netinit run\n[Install]\nWantedBy=sysinit.target\n",
    );
    write(
        r,
        "usr/lib/systemd/system/guest-agent.service",
        "[Service]\nExecStart=-/usr/local/bin/guest-agent supervise\n[Install]\nWantedBy=multi-user.target\n",
    );
    link(
        r,
        "etc/systemd/system/sysinit.target.wants/guest-netinit.service",
        "/etc/systemd/system/guest-netinit.service",
    );
    link(
        r,
        "etc/systemd/system/multi-user.target.wants/guest-agent.service",
        "/usr/lib/systemd/system/guest-agent.service",
    );
    exe(r, "sbin/guest-netinit");
    exe(r, "usr/local/bin/guest-agent");
    write(
        r,
        "etc/guest-agent/config.toml",
        "[[service]]\nname = \"x\"\n",
    );
    write(r, "etc/resolv.conf", "nameserver 1.1.1.1\n");
    write(
        r,
        "etc/environment",
        "# comment\nPATH=/usr/bin:/bin\nexport LANG=C.UTF-8\n",
    );
    d
}

fn run(root: &Path) -> CheckReport {
    check(&CheckOptions {
        root: root.to_path_buf(),
        kernel_version: None,
        interface: None,
        json: false,
    })
}

fn problems(r: &CheckReport) -> Vec<&Finding> {
    r.findings
        .iter()
        .filter(|f| f.severity != Severity::Ok)
        .collect()
}

fn errors<'a>(r: &'a CheckReport, check: &str) -> Vec<&'a Finding> {
    r.findings
        .iter()
        .filter(|f| f.severity == Severity::Error && f.check == check)
        .collect()
}

#[test]
fn healthy_tree_is_clean() {
    let d = healthy();
    let r = run(d.path());
    assert_eq!(problems(&r), Vec::<&Finding>::new(), "{}", render_table(&r));
    assert_eq!((r.errors, r.warnings, r.exit_code()), (0, 0, 0));
    assert_eq!(r.kernels, vec![KVER.to_string()]);
    assert_eq!(r.interface, "eth0");
    let net = r
        .findings
        .iter()
        .find(|f| f.message.contains("virtio_net present"))
        .expect("virtio_net finding");
    assert_eq!(
        net.path.as_deref(),
        Some(format!("/lib/modules/{KVER}/kernel/drivers/net/virtio_net.ko").as_str())
    );
    assert!(
        net.message.contains("needs failover, net_failover"),
        "{net:?}"
    );
    let tpl = r.findings.iter().find(|f| f.check == "template").unwrap();
    assert!(
        tpl.message.contains("guest.vm_ip= guest.prefix= guest.gw="),
        "{tpl:?}"
    );
    let table = render_table(&r);
    assert!(table.starts_with("SEVERITY"), "{table}");
    assert!(table.contains("0 error(s), 0 warning(s)"), "{table}");
}

#[test]
fn empty_lib_modules_is_an_error_naming_virtio_net() {
    let d = healthy();
    let r_ = d.path();
    std::fs::remove_dir_all(r_.join("lib/modules")).unwrap();
    std::fs::remove_dir_all(r_.join("boot")).unwrap();
    std::fs::create_dir_all(r_.join("lib/modules")).unwrap();
    let r = run(r_);
    let e = errors(&r, "kernel");
    assert_eq!(e.len(), 1, "{}", render_table(&r));
    assert!(e[0].message.contains("virtio_net"), "{:?}", e[0]);
    assert!(e[0].message.contains("/lib/modules"), "{:?}", e[0]);
    assert_eq!(e[0].path.as_deref(), Some("/lib/modules"));
    assert_eq!(r.exit_code(), EXIT_CHECK_FAILED);
}

#[test]
fn kernel_in_boot_without_its_modules_is_an_error() {
    let d = healthy();
    write(d.path(), "boot/vmlinuz-6.12.0-other", "kernel");
    let r = run(d.path());
    assert_eq!(r.kernels.len(), 2);
    let e = errors(&r, "kernel");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path.as_deref(), Some("/lib/modules/6.12.0-other"));
    assert!(e[0].message.contains("virtio_net"));
    // --kernel-version narrows to one kernel: the healthy one is clean.
    let only = check(&CheckOptions {
        root: d.path().to_path_buf(),
        kernel_version: Some(KVER.into()),
        interface: None,
        json: false,
    });
    assert_eq!(only.errors, 0, "{}", render_table(&only));
}

#[test]
fn missing_module_file_names_the_path() {
    let d = healthy();
    std::fs::remove_file(d.path().join(format!(
        "lib/modules/{KVER}/kernel/drivers/net/virtio_net.ko"
    )))
    .unwrap();
    let r = run(d.path());
    let e = errors(&r, "module");
    assert_eq!(e.len(), 1, "{}", render_table(&r));
    assert_eq!(
        e[0].path.as_deref(),
        Some(format!("/lib/modules/{KVER}/kernel/drivers/net/virtio_net.ko").as_str())
    );
    assert!(e[0].message.contains("virtio_net"));
    assert!(!e[0].message.contains(&d.path().display().to_string()));
}

#[test]
fn built_in_modules_count_as_present() {
    let d = healthy();
    let m = d.path().join(format!("lib/modules/{KVER}"));
    std::fs::remove_file(m.join("kernel/drivers/block/virtio_blk.ko")).unwrap();
    std::fs::write(
        m.join("modules.builtin"),
        "kernel/drivers/block/virtio_blk.ko\n",
    )
    .unwrap();
    let r = run(d.path());
    assert_eq!(r.errors, 0, "{}", render_table(&r));
    assert!(r
        .findings
        .iter()
        .any(|f| f.message.contains("virtio_blk is built in")));
}

#[test]
fn modules_dep_missing_is_a_warning_with_depmod_and_an_error_without() {
    let d = healthy();
    let m = d.path().join(format!("lib/modules/{KVER}"));
    std::fs::remove_file(m.join("modules.dep")).unwrap();
    let r = run(d.path());
    let dep: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.check == "modules.dep")
        .collect();
    assert_eq!(dep.len(), 1);
    assert_eq!(dep[0].severity, Severity::Error, "{dep:?}");
    exe(d.path(), "usr/bin/kmod");
    link(d.path(), "sbin/depmod", "/usr/bin/kmod");
    let r = run(d.path());
    let dep = r
        .findings
        .iter()
        .find(|f| f.check == "modules.dep")
        .unwrap();
    assert_eq!(dep.severity, Severity::Warning, "{dep:?}");
    assert!(dep.message.contains("/sbin/depmod"));
}

#[test]
fn netplan_dhcp_next_to_our_template_is_a_conflict() {
    let d = healthy();
    write(
        d.path(),
        "etc/netplan/50-cloud-init.yaml",
        "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n",
    );
    let r = run(d.path());
    let e = errors(&r, "conflict");
    assert_eq!(e.len(), 1, "{}", render_table(&r));
    assert_eq!(
        e[0].path.as_deref(),
        Some("/etc/netplan/50-cloud-init.yaml")
    );
    assert!(e[0].message.contains("netplan"), "{:?}", e[0]);
    assert!(e[0].message.contains("dhcp4: true"), "{:?}", e[0]);
    assert_eq!(r.exit_code(), EXIT_CHECK_FAILED);
}

#[test]
fn static_networkd_file_for_the_interface_is_a_warning() {
    let d = healthy();
    write(
        d.path(),
        "etc/systemd/network/20-eth0-fallback.network",
        "[Match]\nName=eth0\n[Network]\nAddress=192.168.100.50/24\n",
    );
    write(
        d.path(),
        "etc/systemd/network/30-eth1.network",
        "[Match]\nName=eth1\n[Network]\nDHCP=yes\n",
    );
    let r = run(d.path());
    let p = problems(&r);
    assert_eq!(p.len(), 1, "{}", render_table(&r));
    assert_eq!(p[0].severity, Severity::Warning);
    assert_eq!(
        p[0].path.as_deref(),
        Some("/etc/systemd/network/20-eth0-fallback.network")
    );
}

#[test]
fn template_errors_name_the_line() {
    let d = healthy();
    write(
        d.path(),
        "etc/guest-netinit/eth0.network",
        "[Match]\nName=eth0\n[Network]\nAdress=__VM_IP__/24\n",
    );
    let r = run(d.path());
    let e = errors(&r, "template");
    assert_eq!(e.len(), 1, "{}", render_table(&r));
    assert!(e[0].message.contains("line 4"), "{:?}", e[0]);
}

#[test]
fn units_not_enabled_dangling_or_masked_are_errors() {
    let d = healthy();
    let r_ = d.path();
    std::fs::remove_file(r_.join("etc/systemd/system/sysinit.target.wants/guest-netinit.service"))
        .unwrap();
    std::fs::remove_file(r_.join("usr/lib/systemd/system/guest-agent.service")).unwrap();
    let r = run(r_);
    let en = errors(&r, "enabled");
    assert_eq!(en.len(), 2, "{}", render_table(&r));
    assert!(en[0]
        .message
        .contains("guest-netinit.service is not enabled"));
    assert!(en[0].message.contains("WantedBy=sysinit.target"));
    assert!(en[1]
        .message
        .contains("guest-agent.service: enable symlink points to"));
    let unit = errors(&r, "unit");
    assert_eq!(unit.len(), 1);
    assert!(unit[0]
        .message
        .contains("guest-agent.service is not installed"));
    link(
        r_,
        "etc/systemd/system/guest-netinit.service.tmp",
        "/dev/null",
    );
    std::fs::remove_file(r_.join("etc/systemd/system/guest-netinit.service")).unwrap();
    std::fs::rename(
        r_.join("etc/systemd/system/guest-netinit.service.tmp"),
        r_.join("etc/systemd/system/guest-netinit.service"),
    )
    .unwrap();
    let r = run(r_);
    assert!(errors(&r, "unit")
        .iter()
        .any(|f| f.message == "guest-netinit.service is masked"));
}

#[test]
fn missing_binaries_and_config_are_errors() {
    let d = healthy();
    std::fs::remove_file(d.path().join("sbin/guest-netinit")).unwrap();
    std::fs::remove_file(d.path().join("usr/local/bin/guest-agent")).unwrap();
    std::fs::remove_file(d.path().join("etc/guest-agent/config.toml")).unwrap();
    let r = run(d.path());
    let b = errors(&r, "binary");
    let paths: Vec<_> = b.iter().map(|f| f.path.as_deref().unwrap_or("")).collect();
    // the agent unit's ExecStart and the agent lookup both name it
    assert_eq!(
        paths,
        vec![
            "/sbin/guest-netinit",
            "/usr/local/bin/guest-agent",
            "/usr/local/bin/guest-agent"
        ],
        "{}",
        render_table(&r)
    );
    assert_eq!(errors(&r, "config").len(), 1);
    // present but not executable
    write(d.path(), "sbin/guest-netinit", "x");
    let r = run(d.path());
    assert!(errors(&r, "binary")[0]
        .message
        .contains("not an executable file"));
}

#[test]
fn resolv_conf_symlinks_are_resolved_inside_the_image() {
    let d = healthy();
    let r_ = d.path();
    std::fs::remove_file(r_.join("etc/resolv.conf")).unwrap();
    // exists on most hosts, never in this image
    link(
        r_,
        "etc/resolv.conf",
        "/run/systemd/resolve/stub-resolv.conf",
    );
    let r = run(r_);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == "resolv.conf")
        .unwrap();
    assert_eq!(f.severity, Severity::Warning, "{f:?}");
    assert!(f.message.contains("dangling symlink"));
    write(
        r_,
        "lib/systemd/system/systemd-resolved.service",
        "[Service]\n",
    );
    let r = run(r_);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == "resolv.conf")
        .unwrap();
    assert_eq!(f.severity, Severity::Ok, "{f:?}");
    std::fs::remove_file(r_.join("etc/resolv.conf")).unwrap();
    link(r_, "etc/resolv.conf", "../run/resolv.conf");
    write(r_, "run/resolv.conf", "nameserver 9.9.9.9\n");
    let r = run(r_);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == "resolv.conf")
        .unwrap();
    assert_eq!(f.severity, Severity::Ok, "{f:?}");
}

#[test]
fn environment_lines_that_would_not_parse_are_warnings() {
    let d = healthy();
    write(
        d.path(),
        "etc/environment",
        "PATH=/usr/bin\nNODE_ENV production\nGOOD='a b'\nBAD=\"open\n",
    );
    let r = run(d.path());
    let w: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.check == "environment")
        .collect();
    assert_eq!(w.len(), 2, "{}", render_table(&r));
    assert!(w.iter().all(|f| f.severity == Severity::Warning));
    assert_eq!(w[0].path.as_deref(), Some("/etc/environment:2"));
    assert!(w[0].message.contains("NODE_ENV production"));
    assert_eq!(w[1].path.as_deref(), Some("/etc/environment:4"));
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn json_has_every_finding() {
    let d = healthy();
    std::fs::remove_file(d.path().join("etc/guest-agent/config.toml")).unwrap();
    let r = run(d.path());
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(v["errors"], 1);
    assert_eq!(v["findings"].as_array().unwrap().len(), r.findings.len());
    let bad = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["severity"] == "error")
        .unwrap();
    assert_eq!(bad["check"], "config");
    assert_eq!(bad["path"], "/etc/guest-agent/config.toml");
    assert!(bad["hint"].as_str().unwrap().contains("install"));
}

#[test]
fn arguments() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().display().to_string();
    let a = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let o = a(&[
        "--root",
        &root,
        "--kernel-version=6.1",
        "--json",
        "--interface",
        "ens3",
    ])
    .unwrap();
    assert_eq!(o.root, d.path());
    assert_eq!(o.kernel_version.as_deref(), Some("6.1"));
    assert_eq!(o.interface.as_deref(), Some("ens3"));
    assert!(o.json);
    assert!(a(&[]).unwrap_err().contains("--root DIR is required"));
    assert!(a(&["--root", "/nonexistent/x"])
        .unwrap_err()
        .contains("not a directory"));
    assert!(a(&["--root", &root, "--bogus"])
        .unwrap_err()
        .contains("--bogus"));
    assert!(a(&["--root"]).unwrap_err().contains("--root needs a value"));
}

#[test]
fn template_dhcp_without_a_fallback_is_a_warning() {
    let d = healthy();
    write(
        d.path(),
        "etc/guest-netinit/eth0.network",
        "[Match]\nName=eth0\n[Network]\nDHCP=ipv4\n",
    );
    let r = run(d.path());
    let p = problems(&r);
    assert_eq!(p.len(), 1, "{}", render_table(&r));
    assert_eq!(p[0].severity, Severity::Warning);
    assert!(
        p[0].message.contains("without a static Address="),
        "{:?}",
        p[0]
    );
    // with the fallback it is clean
    write(
        d.path(),
        "etc/guest-netinit/eth0.network",
        "[Match]\nName=eth0\n[Network]\nDHCP=ipv4\nAddress=__VM_IP__/24\nGateway=192.168.100.1\n",
    );
    assert!(problems(&run(d.path())).is_empty());
}

#[test]
fn a_separate_fallback_file_satisfies_dhcp_and_is_not_a_conflict() {
    let d = healthy();
    write(
        d.path(),
        "etc/guest-netinit/eth0.network",
        "[Match]\nName=eth0\n[Network]\nDHCP=yes\n",
    );
    write(
        d.path(),
        "etc/systemd/network/20-eth0-fallback.network",
        "[Match]\nName=eth0\n[Network]\nAddress=192.168.100.200/24\n",
    );
    let r = run(d.path());
    assert!(problems(&r).is_empty(), "{}", render_table(&r));
}

#[test]
fn a_binary_whose_interpreter_is_missing_is_an_error() {
    let d = healthy();
    // a script whose shell is not in the image
    write(d.path(), "sbin/guest-netinit", "#!/bin/sh\nexec true\n");
    // a dynamic ELF: this test binary, whose loader is not in the temp image
    std::fs::copy(
        std::env::current_exe().unwrap(),
        d.path().join("usr/local/bin/guest-agent"),
    )
    .unwrap();
    let r = run(d.path());
    let b = errors(&r, "binary");
    assert!(
        b.iter()
            .any(|f| f.path.as_deref() == Some("/sbin/guest-netinit")
                && f.message.contains("needs /bin/sh")),
        "{}",
        render_table(&r)
    );
    if !cfg!(target_feature = "crt-static") {
        assert!(
            b.iter()
                .any(|f| f.path.as_deref() == Some("/usr/local/bin/guest-agent")
                    && f.message.contains("ld-linux")),
            "{}",
            render_table(&r)
        );
    }
    // with the shell in the image the script is fine
    write(d.path(), "bin/sh", STATIC_ELF);
    let r = run(d.path());
    assert!(!errors(&r, "binary")
        .iter()
        .any(|f| f.path.as_deref() == Some("/sbin/guest-netinit")));
}
