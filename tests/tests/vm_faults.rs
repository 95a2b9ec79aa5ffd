//! The failure catalogue (DESIGN.md §1) replayed on real VMs: each test breaks one thing the
//! old fleet got wrong and asserts on what host-client says about it — the cause, the
//! subject and the evidence line from the serial console — never on timing.

use guestkit_tests::vm::fixture::{kernel, TestBoot, TestVm, TEST_DEADLINE};
use guestkit_tests::vm::image::{ExtraFile, ModuleSet, AGENT_PATH};
use guestkit_tests::vm::{cmdline, default_boot_args, Binaries};
use host_client::{Cause, Finding, WaitError};

/// Waits and expects host-client to stop early with a diagnosis; returns the fatal finding and
/// all findings. A VM that becomes ready, or a plain timeout, fails the test with the console.
fn diagnosed(t: &TestVm) -> (Finding, Vec<Finding>) {
    match t.vm.wait(TEST_DEADLINE) {
        Ok(r) => panic!(
            "the VM became ready but should not have: {:?}\n--- console ---\n{}",
            r.ready.via,
            t.vm.console()
        ),
        Err(e) => match *e {
            WaitError::Diagnosed {
                finding, findings, ..
            } => (*finding, findings),
            other => panic!(
                "expected a diagnosis, got: {other}\n--- console ---\n{}",
                t.vm.console()
            ),
        },
    }
}

fn has(findings: &[Finding], cause: Cause, subject: &str) -> bool {
    findings
        .iter()
        .any(|f| f.cause == cause && f.subject.as_deref() == Some(subject))
}

/// F1, literally: the golden image's /lib/modules/<release> is empty. The diagnosis says
/// virtio_net.ko is missing, with the path its file would have, and names the directory.
#[test]
fn image_with_empty_module_dir_is_diagnosed_as_missing_virtio_net_naming_the_file() {
    let mut boot = TestBoot::healthy();
    boot.image.modules = ModuleSet::Empty;
    let t = boot.boot();
    let (fatal, findings) = diagnosed(&t);
    let dir = format!("/lib/modules/{}", kernel().release);
    let file = format!("{dir}/kernel/drivers/net/virtio_net.ko");
    assert_eq!(fatal.cause, Cause::NetinitFailed, "{fatal}");
    assert_eq!(fatal.subject.as_deref(), Some("module-missing"), "{fatal}");
    assert!(
        fatal
            .evidence
            .contains(&format!("virtio_net.ko missing at {file}"))
            && fatal
                .evidence
                .contains(&format!("{dir} is missing or empty")),
        "{}",
        fatal.evidence
    );
    let missing = findings
        .iter()
        .find(|f| f.cause == Cause::ModuleMissing && f.subject.as_deref() == Some("virtio_net"))
        .unwrap_or_else(|| {
            panic!(
                "no module-missing finding for virtio_net: {findings:#?}\n{}",
                t.vm.console()
            )
        });
    assert!(missing.evidence.contains(&file), "{}", missing.evidence);
    assert!(missing.hint.contains(&file), "{}", missing.hint);
}

/// F1: the image has a module tree (with the virtio PCI transport) but no virtio_net: no
/// eth0. The diagnosis names virtio_net and the file looked for.
#[test]
fn image_without_virtio_net_is_diagnosed_as_missing_virtio_net_with_its_path() {
    let mut boot = TestBoot::healthy();
    boot.image.modules = ModuleSet::NoVirtioNet;
    let t = boot.boot();
    let (fatal, findings) = diagnosed(&t);
    let release = kernel().release;
    let missing = findings
        .iter()
        .find(|f| f.cause == Cause::ModuleMissing && f.subject.as_deref() == Some("virtio_net"))
        .unwrap_or_else(|| {
            panic!(
                "no module-missing finding for virtio_net: {findings:#?}\n{}",
                t.vm.console()
            )
        });
    let dir = format!("/lib/modules/{release}");
    assert!(
        missing.evidence.contains(&dir) && missing.evidence.contains("virtio_net.ko"),
        "the evidence should name the file looked for under {dir}: {}",
        missing.evidence
    );
    assert!(
        matches!(fatal.cause, Cause::ModuleMissing | Cause::NetinitFailed),
        "{fatal}"
    );
}

/// A VM started without a NIC: netinit waits for eth0, then says there is no device. The wait
/// is shortened from the built-in 30 s with `guest_netinit.link_timeout=` on the kernel
/// cmdline (the image is not changed), and the no-device event says how long it waited.
#[test]
fn vm_without_nic_is_diagnosed_as_no_network_device() {
    let mut boot = TestBoot::healthy();
    boot.nic = false;
    let args = default_boot_args().extra("guest_netinit.link_timeout", Some("3s".into()));
    boot.cmdline = cmdline(&args, &[]).expect("cmdline");
    let t = boot.boot();
    let (fatal, findings) = diagnosed(&t);
    assert!(
        has(&findings, Cause::NoNetworkDevice, "eth0"),
        "{findings:#?}\n{}",
        t.vm.console()
    );
    assert!(
        matches!(fatal.cause, Cause::NoNetworkDevice | Cause::NetinitFailed),
        "{fatal}"
    );
    let console = t.vm.console();
    assert!(
        console.contains("cmdline: link-timeout 3.00 s"),
        "the read-config step should show the cmdline tunable:\n{console}"
    );
}

/// F3: the old host wrote `undefined` into ip=. BootArgs refuses to; here the raw text is put
/// on the command line as the old host did, and netinit's error names the field.
#[test]
fn ip_with_undefined_is_diagnosed_as_bad_config_naming_the_field() {
    let bad = "ip=192.168.100.2::undefined:undefined::eth0:off";
    assert!(
        host_client::BootArgs::parse_extra(bad).is_err(),
        "BootArgs must refuse what the old host wrote"
    );
    let mut boot = TestBoot::healthy();
    boot.cmdline = cmdline(&without_ip(), &[bad]).expect("cmdline");
    let t = boot.boot();
    let (fatal, findings) = diagnosed(&t);
    let failed = findings
        .iter()
        .find(|f| f.cause == Cause::NetinitFailed)
        .unwrap_or_else(|| panic!("no netinit failure: {findings:#?}\n{}", t.vm.console()));
    assert_eq!(failed.subject.as_deref(), Some("bad-config"), "{failed}");
    assert!(
        failed.evidence.contains("gateway") && failed.evidence.contains("undefined"),
        "the error should name the field and the bad text: {}",
        failed.evidence
    );
    assert_eq!(fatal.cause, Cause::NetinitFailed, "{fatal}");
}

fn without_ip() -> host_client::BootArgs {
    let mut args = default_boot_args();
    args.ip = None;
    args
}

/// F2: a template (one golden image for every VM, `__VM_IP__` from the cmdline) plus a
/// second `.network` asking DHCP for eth0. The VM is still reachable, and the conflict is
/// reported on the console and in /health.
#[test]
fn template_with_conflicting_network_file_is_reachable_and_reports_the_conflict() {
    let mut boot = TestBoot::healthy();
    boot.image.extra_files = vec![
        ExtraFile {
            path: "/etc/guest-netinit/eth0.network".into(),
            mode: 0o644,
            data: b"[Match]\nName=eth0\n[Network]\nAddress=__VM_IP__/24\nGateway=192.168.100.1\n"
                .to_vec(),
        },
        ExtraFile {
            path: "/etc/systemd/network/20-eth0-dhcp.network".into(),
            mode: 0o644,
            data: b"[Match]\nName=eth0\n[Network]\nDHCP=yes\n".to_vec(),
        },
    ];
    let mut args = without_ip();
    args = args.extra("guest.vm_ip", Some("192.168.100.2".into()));
    boot.cmdline = cmdline(&args, &[]).expect("cmdline");
    let t = boot.boot();
    let report = match t.vm.wait(TEST_DEADLINE) {
        Ok(r) => r,
        Err(e) => panic!("VM not ready: {e}\n--- console ---\n{}", t.vm.console()),
    };
    assert!(
        report
            .ready
            .findings
            .iter()
            .any(|f| f.cause == Cause::NetworkConflict),
        "no conflict finding: {:#?}\n{}",
        report.ready.findings,
        t.vm.console()
    );
    let health = t.vm.health().expect("GET /health");
    let net = health.network.expect("network block");
    assert!(
        net.conflicts
            .iter()
            .any(|c| c.path.as_deref() == Some("/etc/systemd/network/20-eth0-dhcp.network")),
        "{:#?}",
        net.conflicts
    );
}

/// F6/F8: the agent's HTTP server crashes at start, every time. The supervisor restarts it
/// with backoff, declares a crash loop, and host-client reports that instead of a timeout.
#[test]
fn agent_crashing_at_start_is_diagnosed_as_crash_loop() {
    let mut boot = TestBoot::healthy();
    boot.image.agent_config = format!(
        "[supervisor]\nbackoff_initial_ms = 20\nbackoff_max_ms = 100\ncrash_loop_failures = 3\n\n\
         [services.serve]\ncommand = [\"{AGENT_PATH}\", \"serve\", \"--listen\", \"not-an-address\"]\n\
         required = true\n"
    );
    let t = boot.boot();
    let (fatal, findings) = diagnosed(&t);
    assert!(
        has(&findings, Cause::ServiceCrashLoop, "serve"),
        "{findings:#?}\n{}",
        t.vm.console()
    );
    assert_eq!(fatal.cause, Cause::ServiceCrashLoop, "{fatal}");
}

/// F7: a VM too small for its image. The kernel's OOM killer finds nothing to kill while
/// unpacking the initramfs and panics "System is deadlocked on memory"; host-client says to
/// raise the memory. With this kernel on q35, 64 MiB or less does not even get the kernel
/// decompressed (nothing is printed), ~80 MiB boots the plain image; at 72 MiB, 24 MiB of
/// files cannot be unpacked. The binaries are never run here, so small stand-ins keep the
/// image's size (and so the outcome) the same whichever build of them exists.
#[test]
fn too_little_memory_is_diagnosed_as_out_of_memory() {
    let stand_ins = tempfile::tempdir().expect("temp dir");
    let stand_in = stand_ins.path().join("never-run");
    std::fs::write(&stand_in, b"#!/never-run: the kernel panics before init\n").expect("write");
    let bins = Binaries {
        netinit: stand_in.clone(),
        agent: stand_in,
        streamer: None,
    };
    let mut boot = TestBoot::healthy();
    boot.memory_mib = 72;
    boot.image.extra_files.push(ExtraFile {
        path: "/var/lib/filler".into(),
        mode: 0o644,
        data: vec![0u8; 24 << 20],
    });
    let t = boot.boot_with(&bins);
    let (fatal, findings) = diagnosed(&t);
    assert_eq!(
        fatal.cause,
        Cause::OutOfMemory,
        "{fatal}\n{findings:#?}\n{}",
        t.vm.console()
    );
    assert!(
        fatal.hint.contains("mem"),
        "the hint should say to give the VM more memory: {}",
        fatal.hint
    );
}
