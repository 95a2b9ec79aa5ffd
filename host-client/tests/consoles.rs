//! The console-log table: every file in `tests/consoles/` with the cause `diagnose` must
//! report as the worst finding, the other causes it must also see, and the boot milestones.
//! Hand-written in the real kernel/systemd formats, plus `captured-*` logs from real boots
//! (more are added by the VM tests).

use host_client::{analyze, Cause, Milestone, Severity};
use std::path::Path;

struct Case {
    file: &'static str,
    worst: Option<(Cause, Severity)>,
    also: &'static [Cause],
    milestones: &'static [Milestone],
}

use Cause as C;
use Milestone as M;
use Severity as S;

const CASES: &[Case] = &[
    Case {
        file: "fc-rootfs-missing.log",
        worst: Some((C::RootfsMountFailed, S::Fatal)),
        also: &[],
        milestones: &[M::KernelStarted],
    },
    Case {
        file: "oom-deadlocked.log",
        worst: Some((C::OutOfMemory, S::Fatal)),
        also: &[],
        milestones: &[M::KernelStarted, M::Userspace],
    },
    Case {
        file: "no-init.log",
        worst: Some((C::NoInit, S::Fatal)),
        also: &[],
        milestones: &[M::KernelStarted, M::Userspace],
    },
    Case {
        file: "init-killed.log",
        worst: Some((C::NetinitFailed, S::Fatal)),
        also: &[C::InitExited],
        milestones: &[M::KernelStarted, M::Userspace, M::NetinitDone],
    },
    Case {
        file: "virtio-net-missing.log",
        worst: Some((C::NoNetworkDevice, S::Fatal)),
        also: &[C::ModuleMissing, C::NetinitFailed, C::UnitFailed],
        milestones: &[M::KernelStarted, M::Userspace],
    },
    Case {
        file: "bad-ip-undefined.log",
        worst: Some((C::NetinitFailed, S::Fatal)),
        also: &[C::NetinitStepFailed, C::UnitFailed],
        milestones: &[M::KernelStarted, M::Userspace],
    },
    Case {
        file: "networkd-conflict-ok.log",
        worst: Some((C::NetworkConflict, S::Warning)),
        also: &[],
        milestones: &[
            M::KernelStarted,
            M::Userspace,
            M::NetinitDone,
            M::AgentListening,
        ],
    },
    Case {
        file: "agent-crash-loop.log",
        worst: Some((C::ServiceCrashLoop, S::Fatal)),
        also: &[],
        milestones: &[M::KernelStarted, M::Userspace, M::NetinitDone],
    },
    Case {
        file: "empty.log",
        worst: Some((C::NoConsoleOutput, S::Error)),
        also: &[],
        milestones: &[],
    },
    Case {
        file: "healthy.log",
        worst: None,
        also: &[],
        milestones: &[
            M::KernelStarted,
            M::Userspace,
            M::NetinitDone,
            M::AgentListening,
        ],
    },
    Case {
        file: "old-script-failed.log",
        // the missing eth0 comes first and is the cause; the failed unit follows from it
        worst: Some((C::NoNetworkDevice, S::Error)),
        also: &[C::DependencyFailed, C::UnitFailed],
        milestones: &[M::KernelStarted, M::Userspace],
    },
    // Captured: QEMU q35 + Debian 6.1 cloud kernel booting the `cargo xtask demo` initramfs,
    // where `-- supervise` on the cmdline reached guest-netinit (PID 1) as an argument.
    Case {
        file: "captured-qemu-init-bad-argument.log",
        worst: Some((C::InitExited, S::Fatal)),
        also: &[],
        milestones: &[M::KernelStarted, M::Userspace],
    },
    // Captured: the tests' QEMU arguments (q35, -nodefaults, serial to a file), the Debian 6.1
    // cloud kernel and the demo initramfs with `-m 48` and `earlyprintk=serial,ttyS0,115200`:
    // the setup code prints, the kernel never does (QEMU exits at once, -no-reboot). Without
    // earlyprintk the file is empty, which is empty.log's case.
    Case {
        file: "captured-qemu-48mib-kernel-never-started.log",
        worst: Some((C::KernelNotStarted, S::Error)),
        also: &[],
        milestones: &[],
    },
    Case {
        file: "emergency-mode.log",
        worst: Some((C::EmergencyMode, S::Fatal)),
        also: &[C::DependencyFailed, C::UnitFailed],
        milestones: &[M::KernelStarted, M::Userspace],
    },
];

#[test]
fn every_console_log_gets_its_expected_diagnosis() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/consoles");
    let mut failures = Vec::new();
    for case in CASES {
        let text = std::fs::read_to_string(dir.join(case.file)).expect(case.file);
        let d = analyze(&text);
        let worst = d.worst().map(|f| (f.cause, f.severity));
        if worst != case.worst {
            failures.push(format!(
                "{}: worst {:?}, want {:?}\n{:#?}",
                case.file, worst, case.worst, d.findings
            ));
        }
        for cause in case.also {
            if !d.findings.iter().any(|f| f.cause == *cause) {
                failures.push(format!(
                    "{}: missing {cause:?} in {:#?}",
                    case.file, d.findings
                ));
            }
        }
        for f in &d.findings {
            if f.line > 0 {
                let line = text.split('\n').nth(f.line - 1).unwrap_or_default();
                if !line.contains(
                    f.evidence
                        .trim_start_matches("[FAILED] ")
                        .get(..10)
                        .unwrap_or(""),
                ) {
                    failures.push(format!(
                        "{}: evidence {:?} is not line {}",
                        case.file, f.evidence, f.line
                    ));
                }
            }
        }
        let got: Vec<_> = d.timeline.iter().map(|e| e.milestone).collect();
        if got != case.milestones {
            failures.push(format!(
                "{}: milestones {got:?}, want {:?}",
                case.file, case.milestones
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_file_in_the_directory_is_in_the_table() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/consoles");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            CASES.iter().any(|c| c.file == name),
            "{name} has no row in CASES"
        );
    }
}
