//! Consoles guestkit did not write, captured from real boots by the VM test
//! tests/tests/vm_foreign_console.rs (Debian's kernel, a busybox initramfs running the old
//! fleet's shell steps, no NIC): `diagnose` names each failure from the plain text, and a
//! boot that never configured a network is a finding, not "no problems found".

use host_client::{analyze, Cause, Diagnosis, Severity};
use std::path::Path;
use std::process::Command;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn found(d: &Diagnosis, cause: Cause, subject: Option<&str>) -> bool {
    d.findings
        .iter()
        .any(|f| f.cause == cause && f.subject.as_deref() == subject)
}

#[test]
fn busybox_fleet_script_without_modules_or_nic() {
    let d = analyze(&fixture("busybox-fleet-no-nic.log"));
    let shown = format!("{:#?}", d.findings);
    assert!(
        found(&d, Cause::ModuleMissing, Some("virtio_net")),
        "{shown}"
    );
    let ko = d
        .findings
        .iter()
        .find(|f| f.subject.as_deref() == Some("virtio_net"))
        .unwrap();
    assert!(
        ko.evidence.contains("/kernel/drivers/net/virtio_net.ko"),
        "{shown}"
    );
    assert!(
        found(
            &d,
            Cause::ModuleMissing,
            Some("/lib/modules/6.1.0-57-cloud-amd64")
        ),
        "{shown}"
    );
    assert!(found(&d, Cause::NoNetworkDevice, Some("eth0")), "{shown}");
    assert!(found(&d, Cause::DhcpFailed, Some("udhcpc")), "{shown}");
    assert!(found(&d, Cause::NetworkUnreachable, Some("ip")), "{shown}");
    assert!(
        found(&d, Cause::NetworkUnreachable, Some("ping")),
        "{shown}"
    );
    // explained by the findings above: not also "no network configured"
    assert!(!found(&d, Cause::NoNetworkConfigured, None), "{shown}");
    assert_eq!(
        d.findings.iter().map(|f| f.severity).max(),
        Some(Severity::Error)
    );
}

#[test]
fn busybox_boot_that_never_configures_the_network() {
    let d = analyze(&fixture("busybox-silent-no-network.log"));
    assert_eq!(d.findings.len(), 1, "{:#?}", d.findings);
    let f = &d.findings[0];
    assert_eq!(
        (f.cause, f.severity),
        (Cause::NoNetworkConfigured, Severity::Warning)
    );
    assert!(f.evidence.contains("Run /init as init process"), "{f:?}");
}

#[test]
fn guestctl_diagnose_of_the_fleet_console_exits_4_and_never_says_no_problems() {
    for (name, code) in [
        ("busybox-fleet-no-nic.log", 4),
        ("busybox-silent-no-network.log", 0),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let o = Command::new(env!("CARGO_BIN_EXE_guestctl"))
            .arg("diagnose")
            .arg(&path)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(code), "{name}: {out}");
        assert!(!out.contains("no problems found"), "{name}: {out}");
    }
}
