//! The browser VM, whole (issue 11): the golden ext4 image (systemd, Xvfb, openbox, Chromium,
//! guestkit) booted from `/dev/vda` under QEMU on the fleet's network shape (TAP on `fcbr0`),
//! driven from the host side only. Software emulation is slow: everything here waits for
//! events and frames, never asserts on speed.

use guest_proto::api::ServiceState;
use guestkit_tests::vm::browser_image::{self, BrowserImageSpec};
use guestkit_tests::vm::fixture::{boot_browser, boot_browser_image, browser_boot_args};
use std::time::Duration;

/// Chromium and systemd under TCG on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(420);

#[test]
fn the_golden_image_boots_from_vda_and_runs_the_display_the_streamer_and_the_agent() {
    let spec = BrowserImageSpec::golden();
    let args = browser_boot_args(&[("guest_agent.display", "640x360")]);
    let (t, image) = boot_browser(&spec, &args);
    let before = browser_image::sha256(&image.disk).expect("sha256");
    let report = match t.vm.wait(DEADLINE) {
        Ok(r) => r,
        Err(e) => panic!(
            "browser VM not ready: {e}\n--- console ---\n{}",
            t.vm.console()
        ),
    };
    eprintln!("browser VM ready after {:?}", report.ready_after);
    let console = t.vm.console();
    assert!(
        console.contains("guest-netinit init: root: mounted /dev/vda (ext4, rw)"),
        "the initramfs role should have mounted the disk:\n{console}"
    );
    // Every service of the image runs.
    let want = ["xvfb", "openbox", "webrtc", "serve"];
    let end = std::time::Instant::now() + DEADLINE;
    let health = loop {
        let h = t.vm.health().expect("GET /health");
        let running = |name: &str| {
            h.services
                .iter()
                .any(|s| s.name == name && s.state == ServiceState::Running)
        };
        if want.iter().all(|n| running(n)) {
            break h;
        }
        assert!(
            std::time::Instant::now() < end,
            "services not all running: {:#?}\n--- console ---\n{}",
            h.services,
            t.vm.console()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "services: {:?}",
        health
            .services
            .iter()
            .map(|s| (&s.name, s.state))
            .collect::<Vec<_>>()
    );
    drop(t);
    // The VM wrote to its disk (journal, Chromium's profile), the golden file did not change.
    assert_eq!(browser_image::sha256(&image.disk).expect("sha256"), before);

    // A second VM with other per-VM settings boots the very same file; its bad display size
    // is said on the console naming the parameter, and Xvfb runs at the default size.
    let args = browser_boot_args(&[("guest_agent.display", "undefinedxundefined")]);
    let t2 = boot_browser_image(&image, &args);
    if let Err(e) = t2.vm.wait(DEADLINE) {
        panic!(
            "second VM not ready: {e}\n--- console ---\n{}",
            t2.vm.console()
        );
    }
    let end = std::time::Instant::now() + DEADLINE;
    while !t2
        .vm
        .console()
        .contains("guest_agent.display: `undefinedxundefined`")
    {
        assert!(
            std::time::Instant::now() < end,
            "no console error naming guest_agent.display:\n{}",
            t2.vm.console()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(t2);
    assert_eq!(browser_image::sha256(&image.disk).expect("sha256"), before);
    eprintln!(
        "golden image {} ({} bytes) sha256 {before}, the same after both VMs",
        image.disk.display(),
        image.disk_bytes
    );
}
