//! PID 1 never returns (issue 12, item 9), on real VMs: the initramfs image runs guest-netinit
//! as PID 1, which execs the agent with the same PID. A PID 1 that exits makes the kernel panic
//! with "Attempted to kill init!" and nothing about why; here every way out ends in a console
//! message and a clean power-off, and stray words the kernel passes to init are ignored.

use guestkit_tests::vm::fixture::{TestBoot, TEST_DEADLINE};
use guestkit_tests::vm::{cmdline, default_boot_args};
use host_client::Cause;
use std::time::Duration;

/// Words of the kernel command line the kernel does not know are handed to init as
/// arguments. Before the fix `help` made guest-netinit print its usage and exit as PID 1 (a
/// kernel panic); now netinit passes them on and the agent drops them with a warning.
#[test]
fn stray_kernel_words_that_look_like_subcommands_do_not_stop_the_boot() {
    let mut boot = TestBoot::healthy();
    boot.cmdline = cmdline(&default_boot_args(), &["help", "-h", "run"]).expect("cmdline");
    let t = boot.boot();
    let report = match t.vm.wait(TEST_DEADLINE) {
        Ok(r) => r,
        Err(e) => panic!("VM not ready: {e}\n--- console ---\n{}", t.vm.console()),
    };
    assert!(report
        .ready
        .findings
        .iter()
        .all(|f| f.cause != Cause::KernelPanic));
    let console = t.vm.console();
    assert!(
        console.contains("ignoring init arguments that are not ours: help -h run"),
        "the agent should say which words it ignored:\n{console}"
    );
    assert!(!console.contains("Attempted to kill init"), "{console}");
}

/// The agent as PID 1 with a config it cannot read: the error is on the console (the config
/// file and the line named), then the machine powers off instead of panicking.
#[test]
fn agent_as_pid1_with_a_bad_config_says_why_and_powers_off() {
    let mut boot = TestBoot::healthy();
    boot.image.agent_config = "[services.serve]\ncommand = 42\n".into();
    let mut t = boot.boot();
    let status = t.vm.qemu.wait_exit(TEST_DEADLINE);
    let console = t.vm.console();
    assert!(
        status.is_some(),
        "the VM should have powered off:\n{console}"
    );
    assert!(
        console.contains("guest-agent (PID 1)") && console.contains("powering off"),
        "no PID 1 message on the console:\n{console}"
    );
    assert!(
        console.contains("/etc/guest-agent/config.toml"),
        "the message should name the config file:\n{console}"
    );
    assert!(console.contains("reboot: Power down"), "{console}");
    assert!(!console.contains("Attempted to kill init"), "{console}");
    assert!(!console.contains("Kernel panic"), "{console}");
    // host-client reads the same console and says what failed.
    let findings = host_client::diagnose(&console);
    assert!(
        findings
            .iter()
            .any(|f| f.cause == Cause::ComponentFailed && f.evidence.contains("powering off")),
        "{findings:#?}"
    );
    // Nothing is left running: QEMU is gone within the wait above.
    assert!(t.vm.qemu.wait_exit(Duration::from_millis(10)).is_some());
}
