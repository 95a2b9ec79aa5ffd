//! `guest-netinit check --root DIR` as a command: exit codes, the table, `--json`, on rootfs
//! trees built here. (The rules themselves are tested in `src/check_tests.rs`.)

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// The start of a static ELF executable (no PT_INTERP): enough for `check`.
const STATIC_ELF: &str = "\x7fELF\x02\x01\x01 static";

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
}

fn healthy() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    let m = "lib/modules/6.1.0-test";
    for (f, deps) in [
        ("kernel/drivers/net/virtio_net.ko", ""),
        ("kernel/drivers/virtio/virtio_pci.ko", ""),
        ("kernel/drivers/virtio/virtio_mmio.ko", ""),
        ("kernel/drivers/block/virtio_blk.ko", ""),
        // The agent's config below does not turn vsock off: the image needs its transport.
        ("kernel/net/vmw_vsock/vsock.ko", ""),
        (
            "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
            "",
        ),
        ("kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko", ""),
    ] {
        write(r, &format!("{m}/{f}"), "ko");
        let dep = r.join(m).join("modules.dep");
        let mut text = std::fs::read_to_string(&dep).unwrap_or_default();
        text.push_str(&format!("{f}:{deps}\n"));
        std::fs::write(dep, text).unwrap();
    }
    write(
        r,
        "etc/systemd/system/guest-netinit.service",
        "[Service]\nExecStart=/sbin/guest-netinit run\n",
    );
    write(
        r,
        "etc/systemd/system/guest-agent.service",
        "[Service]\nExecStart=/usr/local/bin/guest-agent supervise\n",
    );
    for (wants, unit) in [
        ("sysinit.target.wants", "guest-netinit.service"),
        ("multi-user.target.wants", "guest-agent.service"),
    ] {
        std::fs::create_dir_all(r.join("etc/systemd/system").join(wants)).unwrap();
        symlink(
            format!("/etc/systemd/system/{unit}"),
            r.join("etc/systemd/system").join(wants).join(unit),
        )
        .unwrap();
    }
    for bin in ["sbin/guest-netinit", "usr/local/bin/guest-agent"] {
        write(r, bin, STATIC_ELF);
        std::fs::set_permissions(r.join(bin), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    write(r, "etc/guest-agent/config.toml", "x = 1\n");
    write(r, "etc/resolv.conf", "nameserver 192.168.100.1\n");
    d
}

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_guest-netinit"))
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn healthy_tree_exits_0() {
    let d = healthy();
    let (code, out, err) = check(&["--root", d.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("SEVERITY"), "{out}");
    assert!(out.contains("0 error(s), 0 warning(s)"), "{out}");
}

#[test]
fn empty_lib_modules_exits_9_naming_virtio_net() {
    let d = healthy();
    std::fs::remove_dir_all(d.path().join("lib/modules/6.1.0-test")).unwrap();
    let (code, out, _) = check(&["--root", d.path().to_str().unwrap()]);
    assert_eq!(code, 9, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("error"))
        .expect("an error row");
    assert!(line.contains("/lib/modules"), "{line}");
    assert!(line.contains("virtio_net"), "{line}");
}

#[test]
fn netplan_dhcp_with_our_template_is_a_conflict_in_json() {
    let d = healthy();
    write(
        d.path(),
        "etc/guest-netinit/eth0.network",
        "[Match]\nName=eth0\n[Network]\nAddress=__VM_IP__/24\nGateway=192.168.100.1\n",
    );
    write(
        d.path(),
        "etc/netplan/01-netcfg.yaml",
        "network:\n  ethernets:\n    eth0:\n      dhcp4: true\n",
    );
    let (code, out, err) = check(&["--root", d.path().to_str().unwrap(), "--json"]);
    assert_eq!(code, 9, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let errors: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{out}");
    assert_eq!(errors[0]["check"], "conflict");
    assert_eq!(errors[0]["path"], "/etc/netplan/01-netcfg.yaml");
    assert_eq!(v["errors"], 1);
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = check(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("--root DIR is required"), "{err}");
    let (code, _, err) = check(&["--root", "/nonexistent-guestkit"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a directory"), "{err}");
}
