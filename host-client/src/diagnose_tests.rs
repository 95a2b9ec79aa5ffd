use super::*;
use guest_proto::{FailureReport, Level};
use proptest::prelude::*;

fn ev(src: Component, event: Event) -> String {
    ConsoleEvent::new(src, Level::Error, event).to_line()
}

#[test]
fn empty_console_means_no_console_configured() {
    for text in ["", "\n\n", "\r\n  \r\n"] {
        let f = diagnose(text);
        assert_eq!(f.len(), 1, "{text:?}: {f:?}");
        assert_eq!(f[0].cause, Cause::NoConsoleOutput);
        assert!(f[0].hint.contains("console=ttyS0"), "{}", f[0].hint);
    }
}

#[test]
fn evidence_carries_the_line_number_and_is_cleaned() {
    let text = "[    0.000000] Linux version 6.1.0\r\n\
                [\u{1b}[0;32m  OK  \u{1b}[0m] Started foo.service.\r\n\
                [\u{1b}[0;1;31mFAILED\u{1b}[0m] Failed to start guest-agent.service - guestkit agent.\r\n";
    let f = diagnose(text);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].cause, Cause::UnitFailed);
    assert_eq!(f[0].line, 3);
    assert_eq!(
        f[0].evidence,
        "[FAILED] Failed to start guest-agent.service - guestkit agent."
    );
    assert_eq!(f[0].subject.as_deref(), Some("guest-agent.service"));
}

#[test]
fn repeated_lines_merge_and_keep_the_most_severe_evidence() {
    let text = "[   10.0] node invoked oom-killer: gfp_mask=0x0\n\
                [   10.1] Out of memory: Killed process 612 (node) total-vm:1kB\n\
                [   11.0] node invoked oom-killer: gfp_mask=0x0\n\
                [   12.0] Kernel panic - not syncing: System is deadlocked on memory\n";
    let f = diagnose(text);
    let oom: Vec<_> = f.iter().filter(|f| f.cause == Cause::OutOfMemory).collect();
    // the victim-named line is a separate subject; the others merge
    assert!(oom.iter().any(|f| f.subject.as_deref() == Some("node")));
    let fatal = f.iter().find(|f| f.severity == Severity::Fatal).unwrap();
    assert_eq!(fatal.cause, Cause::OutOfMemory);
    assert_eq!(fatal.line, 4);
    assert!(fatal.hint.contains("mem_size_mib"));
    assert_eq!(
        analyze(text).worst().map(|f| f.line),
        Some(4),
        "worst is the panic"
    );
}

#[test]
fn guestkit_events_become_findings() {
    let text = [
        ev(
            Component::Netinit,
            Event::ModuleMissing {
                module: "virtio_net".into(),
                path: "/lib/modules/6.1.0-28-cloud-amd64/kernel/drivers/net/virtio_net.ko".into(),
            },
        ),
        ev(
            Component::Netinit,
            Event::NoDevice {
                interface: "eth0".into(),
                waited_ms: 30000,
            },
        ),
        ev(
            Component::Netinit,
            Event::Failed {
                failure: FailureReport {
                    class: "no-device".into(),
                    exit_code: 4,
                    message: "eth0 did not appear".into(),
                },
            },
        ),
    ]
    .join("\n");
    let f = diagnose(&text);
    let causes: Vec<_> = f.iter().map(|f| (f.cause, f.severity)).collect();
    assert_eq!(
        causes,
        vec![
            (Cause::ModuleMissing, Severity::Error),
            (Cause::NoNetworkDevice, Severity::Fatal),
            (Cause::NetinitFailed, Severity::Fatal),
        ]
    );
    assert!(f[0].hint.contains("virtio_net.ko"), "{}", f[0].hint);
    assert!(f[2].hint.contains("exit 4"), "{}", f[2].hint);
}

#[test]
fn crash_loop_and_conflict() {
    let text = [
        ev(
            Component::Netinit,
            Event::Conflict {
                source: "netplan".into(),
                path: Some("/etc/netplan/50-cloud-init.yaml".into()),
                detail: "dhcp4: true for eth0".into(),
                resolution: "cmdline wins".into(),
            },
        ),
        ev(
            Component::Agent,
            Event::CrashLoop {
                service: "serve".into(),
                restarts: 7,
                last_exit: "exit 1".into(),
            },
        ),
    ]
    .join("\n");
    let f = diagnose(&text);
    assert_eq!(f[0].cause, Cause::NetworkConflict);
    assert_eq!(f[0].severity, Severity::Warning);
    assert!(f[0].hint.contains("50-cloud-init.yaml"));
    assert_eq!(f[1].cause, Cause::ServiceCrashLoop);
    assert_eq!(f[1].subject.as_deref(), Some("serve"));
}

#[test]
fn cut_event_line_is_reported_not_fatal() {
    let f = diagnose("[    3.1] GUESTKIT: {\"src\":\"netinit\",\"lvl\":\"err");
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].cause, f[0].severity),
        (Cause::MalformedEvent, Severity::Info)
    );
}

#[test]
fn timeline_has_the_milestones_with_kernel_times() {
    let done = ConsoleEvent::new(
        Component::Netinit,
        Level::Info,
        Event::Done {
            interface: Some("eth0".into()),
            addresses: vec!["192.168.100.9/24".into()],
            duration_us: 1830,
        },
    )
    .to_line();
    let listening = ConsoleEvent::new(
        Component::Agent,
        Level::Info,
        Event::Listening {
            addr: "0.0.0.0:8080".into(),
        },
    )
    .to_line();
    let text = format!(
        "[    0.000000] Linux version 6.1.0-28-cloud-amd64 (gcc-12)\n\
         [    0.000000] Command line: console=ttyS0\n\
         [    1.020304] Run /init as init process\n\
         [    1.100000] {done}\n\
         {listening}\n"
    );
    let t = timeline(&text);
    let got: Vec<_> = t
        .iter()
        .map(|e| (e.milestone, e.line, e.kernel_time))
        .collect();
    assert_eq!(
        got,
        vec![
            (Milestone::KernelStarted, 1, Some(0.0)),
            (Milestone::Userspace, 3, Some(1.020304)),
            (Milestone::NetinitDone, 4, Some(1.1)),
            (Milestone::AgentListening, 5, None),
        ]
    );
}

#[test]
fn kernel_timestamps() {
    assert_eq!(kernel_timestamp("[   12.500000] x"), Some(12.5));
    assert_eq!(kernel_timestamp("[FAILED] x"), None);
    assert_eq!(kernel_timestamp("[ TIME ] x"), None);
    assert_eq!(kernel_timestamp("[.5] x"), None);
    assert_eq!(kernel_timestamp("no"), None);
    // An event's stamp behind another writer's unfinished line (seen on a CI console).
    assert_eq!(
        event_kernel_timestamp(
            "exited service=x ran_ms=220[    2.815047] GUESTKIT: {\"src\":\"agent\"}"
        ),
        Some(2.815047)
    );
    assert_eq!(event_kernel_timestamp("[    1.5] GUESTKIT: {}"), Some(1.5));
    assert_eq!(event_kernel_timestamp("[x] GUESTKIT: {}"), None);
}

const PANIC: &str =
    "[    4.200000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009";

proptest! {
    #[test]
    fn never_panics(text in "\\PC*") {
        let d = analyze(&text);
        prop_assert!(d.findings.iter().all(|f| f.line <= d.lines));
    }

    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = analyze(&text);
    }

    #[test]
    fn finds_an_injected_panic_anywhere(
        lines in proptest::collection::vec("[^\n]{0,80}", 0..40),
        at in any::<prop::sample::Index>(),
    ) {
        let mut lines = lines;
        let pos = at.index(lines.len() + 1);
        lines.insert(pos, PANIC.to_string());
        let f = diagnose(&lines.join("\n"));
        let hit = f.iter().find(|f| f.cause == Cause::InitExited && f.severity == Severity::Fatal);
        prop_assert!(hit.is_some(), "{:?}", f);
        // the random lines may repeat the same panic text earlier; the evidence is the first fatal one
        prop_assert!(hit.unwrap().line <= pos + 1);
    }
}

#[test]
fn init_exit_decodes_the_status_and_quotes_inits_last_output() {
    let text = "[    4.053363] Run /init as init process\n\
                guest-netinit: unknown argument `supervise`\n\
                usage: guest-netinit [run] [--cmdline FILE]\n\
                [    4.378227] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200\n";
    let f = diagnose(text);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].cause, Cause::InitExited);
    assert!(
        f[0].hint
            .starts_with("PID 1 exited with status 2: read the lines"),
        "{}",
        f[0].hint
    );
    assert!(
        f[0].hint
            .contains("init's last output: `guest-netinit: unknown argument `supervise``"),
        "{}",
        f[0].hint
    );
    let killed =
        diagnose("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009");
    assert!(
        killed[0].hint.starts_with("PID 1 was killed by signal 9"),
        "{}",
        killed[0].hint
    );
}

#[test]
fn firmware_lines_without_a_kernel_mean_the_kernel_never_started() {
    // What QEMU q35 + the Debian cloud kernel print with 48 MiB and earlyprintk=serial.
    let d = analyze("Probing EDD (edd=off to disable)... ok\r\n");
    assert_eq!(d.findings.len(), 1, "{:?}", d.findings);
    let f = &d.findings[0];
    assert_eq!(
        (f.cause, f.severity, f.line),
        (Cause::KernelNotStarted, Severity::Error, 1)
    );
    assert_eq!(f.subject.as_deref(), Some("kernel setup ran"));
    assert!(f.hint.contains("memory"), "{}", f.hint);
    assert!(!f.hint.contains("add console=ttyS0"), "{}", f.hint);
    assert!(d.timeline.is_empty());

    // Firmware only: could be a kernel without console=, so the hint says both.
    let f = diagnose("SeaBIOS (version 1.16.2-debian-1.16.2-1)\n\nBooting from ROM...\n");
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].cause, Cause::KernelNotStarted);
    assert_eq!(f[0].subject.as_deref(), Some("firmware only"));
    assert_eq!(f[0].line, 3);
    assert!(
        f[0].hint.contains("memory") && f[0].hint.contains("console=ttyS0"),
        "{}",
        f[0].hint
    );
}

#[test]
fn firmware_lines_then_the_kernel_are_a_normal_boot() {
    let text = "SeaBIOS (version 1.16.2)\nBooting from ROM...\nProbing EDD (edd=off to disable)... ok\n\
                [    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)\n";
    assert_eq!(diagnose(text), vec![]);
    // Output only from init (no kernel timestamps, `quiet`): the kernel ran.
    let line = ev(
        Component::Netinit,
        Event::Start {
            version: "0.1.0".into(),
        },
    );
    assert_eq!(diagnose(&format!("Booting from ROM...\n{line}\n")), vec![]);
}

#[test]
fn while_following_a_boot_firmware_lines_are_not_a_finding() {
    let mut d = Diagnoser::new();
    assert!(d
        .push_line("Probing EDD (edd=off to disable)... ok")
        .is_none());
    assert!(d.findings().is_empty() && d.fatal().is_none());
    assert_eq!(
        d.snapshot().findings[0].cause,
        Cause::KernelNotStarted,
        "a timeout at this point says so"
    );
}

#[test]
fn nothing_printed_still_says_console_first() {
    let f = diagnose("");
    assert_eq!(f[0].cause, Cause::NoConsoleOutput);
    assert!(
        f[0].hint
            .starts_with("nothing printed: console not configured (add console=ttyS0"),
        "{}",
        f[0].hint
    );
    assert!(f[0].hint.contains("earlyprintk=serial"), "{}", f[0].hint);
}
