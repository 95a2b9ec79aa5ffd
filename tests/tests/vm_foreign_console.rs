//! Consoles guestkit did not write (issue 13): Debian's kernel with a busybox initramfs
//! running the old fleet's shell steps, no NIC. `diagnose` must name what went wrong from the
//! plain text alone (no `GUESTKIT:` line): the missing virtio_net.ko, the device `ip` cannot
//! find, udhcpc giving up, the unreachable network; and a boot that reached userspace with
//! no network ever configured is a finding, not "no problems found".
//!
//! The consoles are kept as fixtures in host-client/tests/fixtures/ (and unit-tested there);
//! `GUESTKIT_WRITE_FIXTURES=1` rewrites them from these boots.

use guestkit_tests::vm::busybox::{boot, FLEET_SCRIPT, SILENT_SCRIPT};
use guestkit_tests::vm::fixture::kernel;
use host_client::{analyze, Cause, Diagnosis, Severity};
use std::path::Path;
use std::time::Duration;

/// TCG boots of the cloud kernel take ~5-20 s here; generous for a loaded CI machine.
const LIMIT: Duration = Duration::from_secs(240);

fn boot_and_keep(script: &str, fixture: &str) -> (String, Diagnosis) {
    let dir = tempfile::tempdir().unwrap();
    let console = boot(&kernel(), script, dir.path(), LIMIT).unwrap_or_else(|e| panic!("{e}"));
    if std::env::var_os("GUESTKIT_WRITE_FIXTURES").is_some() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../host-client/tests/fixtures")
            .join(fixture);
        std::fs::write(&path, &console).unwrap();
        eprintln!("wrote {}", path.display());
    }
    let d = analyze(&console);
    (console, d)
}

fn has(d: &Diagnosis, cause: Cause, subject: Option<&str>) -> bool {
    d.findings
        .iter()
        .any(|f| f.cause == cause && (subject.is_none() || f.subject.as_deref() == subject))
}

#[test]
fn old_fleet_script_without_modules_or_nic_is_diagnosed() {
    let (console, d) = boot_and_keep(FLEET_SCRIPT, "busybox-fleet-no-nic.log");
    let shown = || format!("{:#?}\n--- console ---\n{console}", d.findings);
    assert!(console.contains("fleet-init: done"), "{}", shown());
    assert!(
        has(&d, Cause::ModuleMissing, Some("virtio_net")),
        "{}",
        shown()
    );
    let m = d
        .findings
        .iter()
        .find(|f| f.cause == Cause::ModuleMissing)
        .unwrap();
    assert!(m.evidence.contains("virtio_net.ko"), "{}", shown());
    assert!(has(&d, Cause::NoNetworkDevice, Some("eth0")), "{}", shown());
    assert!(has(&d, Cause::DhcpFailed, Some("udhcpc")), "{}", shown());
    assert!(has(&d, Cause::NetworkUnreachable, None), "{}", shown());
    assert!(
        d.findings.iter().any(|f| f.severity >= Severity::Error),
        "{}",
        shown()
    );
}

#[test]
fn a_boot_that_never_configures_the_network_is_a_finding() {
    let (console, d) = boot_and_keep(SILENT_SCRIPT, "busybox-silent-no-network.log");
    assert!(
        console.contains("app-init: application started"),
        "{console}"
    );
    assert!(
        has(&d, Cause::NoNetworkConfigured, None),
        "{:#?}\n--- console ---\n{console}",
        d.findings
    );
}
