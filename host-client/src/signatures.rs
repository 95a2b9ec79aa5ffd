//! Kernel and systemd console signatures: the plain-text lines a Linux guest prints when it
//! fails to boot, matched one line at a time.
//!
//! Kept apart from `diagnose` because this is the part that grows with every new incident
//! (the catalogue in DESIGN.md §1): one place lists which text means which cause. The texts
//! are the real ones from the kernel (`init/main.c`, `init/do_mounts.c`, `mm/oom_kill.c`,
//! `kernel/panic.c`) and systemd (`src/core/job.c`, `src/core/unit.c`); matching is on
//! substrings of a line with ANSI colour codes already removed.

use crate::diagnose::{Cause, Severity};

#[path = "signatures_net.rs"]
pub(crate) mod net;

/// What one line says, before it becomes a [`crate::Finding`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub cause: Cause,
    pub severity: Severity,
    /// The unit, module, device or panic message the line is about.
    pub subject: Option<String>,
}

impl Hit {
    fn new(cause: Cause, severity: Severity, subject: Option<String>) -> Self {
        Self {
            cause,
            severity,
            subject,
        }
    }
}

/// The text after `marker` in `line`, trimmed, `None` when the marker is absent.
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| line[at + marker.len()..].trim())
}

/// Kernel modules without which a virtio guest has no network.
const NETWORK_MODULES: [&str; 4] = ["virtio_net", "virtio_pci", "net_failover", "failover"];

fn module_hit(module: &str) -> Hit {
    let module = module.trim_matches(|c: char| c == '\'' || c == '"' || c == '.');
    let severity = if NETWORK_MODULES.contains(&module) {
        Severity::Error
    } else {
        Severity::Warning
    };
    Hit::new(Cause::ModuleMissing, severity, Some(module.to_string()))
}

/// `Failed to start X` subjects: `foo.service - Description.` → `foo.service`;
/// older systemd prints only the description (`Network Service.`).
fn unit_subject(rest: &str) -> String {
    let rest = rest.trim().trim_end_matches('.');
    match rest.split_once(" - ") {
        Some((unit, _)) if !unit.contains(' ') => unit.to_string(),
        _ => rest.to_string(),
    }
}

/// The panic line, classified: the message after `Kernel panic - not syncing:` names the
/// cause for the common fatal boots; anything else is a general panic.
fn panic_hit(message: &str) -> Hit {
    let message = message.trim().trim_end_matches("]---").trim();
    let subject = Some(message.to_string());
    let cause = if message.starts_with("VFS:") {
        Cause::RootfsMountFailed
    } else if message.contains("deadlocked on memory") || message.contains("Out of memory") {
        Cause::OutOfMemory
    } else if message.starts_with("No working init found")
        || (message.starts_with("Requested init") && message.contains("failed"))
    {
        Cause::NoInit
    } else if message.starts_with("Attempted to kill init") {
        Cause::InitExited
    } else {
        Cause::KernelPanic
    };
    Hit::new(cause, Severity::Fatal, subject)
}

/// Classifies one console line (ANSI codes removed). `None` for the ordinary lines.
pub fn match_line(line: &str) -> Option<Hit> {
    // Kernel panics, including the closing `---[ end Kernel panic - not syncing: ... ]---`.
    if let Some(message) = after(line, "Kernel panic - not syncing:") {
        return Some(panic_hit(message));
    }
    if line.contains("VFS: Cannot open root device") || line.contains("VFS: Unable to mount root") {
        return Some(Hit::new(
            Cause::RootfsMountFailed,
            Severity::Error,
            after(line, "VFS:").map(str::to_string),
        ));
    }
    if line.contains("invoked oom-killer")
        || line.contains("Out of memory: Kill")
        || line.contains("Memory cgroup out of memory")
    {
        let subject = after(line, "Killed process ")
            .or_else(|| after(line, "Kill process "))
            .and_then(|rest| {
                let open = rest.find('(')?;
                let close = rest[open..].find(')')? + open;
                Some(rest[open + 1..close].to_string())
            });
        return Some(Hit::new(Cause::OutOfMemory, Severity::Error, subject));
    }
    if let Some(rest) = after(line, "Failed to execute ") {
        // `Failed to execute /init (error -2)`: the kernel then tries the next candidate.
        let path = rest.split_whitespace().next().unwrap_or(rest);
        return Some(Hit::new(
            Cause::NoInit,
            Severity::Warning,
            Some(path.to_string()),
        ));
    }
    // `traps: node[612] general protection fault ...` is a user process crashing, not the kernel
    let kernel_gpf = line.contains("general protection fault") && !line.contains("traps:");
    if line.contains("BUG: kernel NULL pointer dereference")
        || line.contains("BUG: unable to handle")
        || kernel_gpf
        || line.contains("Oops: ")
    {
        return Some(Hit::new(
            Cause::KernelBug,
            Severity::Error,
            after(line, "BUG:")
                .or_else(|| after(line, "Oops:"))
                .map(str::to_string),
        ));
    }
    if let Some(rest) = after(line, "modprobe: FATAL: Module ") {
        if let Some(module) = rest.split_whitespace().next() {
            if rest.contains("not found") {
                return Some(module_hit(module));
            }
        }
    }
    if let Some(rest) = after(line, "Failed to find module ") {
        return Some(module_hit(rest));
    }
    if let Some(rest) = after(line, "Timed out waiting for device ") {
        let dev = rest.split_whitespace().next().unwrap_or(rest);
        let dev = dev.trim_end_matches('.');
        let iface = dev
            .strip_prefix("sys-subsystem-net-devices-")
            .map(|d| d.trim_end_matches(".device"))
            .or_else(|| dev.strip_prefix("/sys/subsystem/net/devices/"));
        if let Some(iface) = iface {
            return Some(Hit::new(
                Cause::NoNetworkDevice,
                Severity::Error,
                Some(iface.to_string()),
            ));
        }
        return Some(Hit::new(
            Cause::UnitFailed,
            Severity::Error,
            Some(dev.to_string()),
        ));
    }
    if let Some(hit) = net::match_line(line) {
        return Some(hit);
    }
    if let Some(rest) = after(line, "Dependency failed for ") {
        return Some(Hit::new(
            Cause::DependencyFailed,
            Severity::Error,
            Some(unit_subject(rest)),
        ));
    }
    if let Some(rest) = after(line, "Failed to start ") {
        return Some(Hit::new(
            Cause::UnitFailed,
            Severity::Error,
            Some(unit_subject(rest)),
        ));
    }
    if line.contains("Failed with result '") {
        // `systemd[1]: foo.service: Failed with result 'exit-code'.`
        let unit = line
            .split(": ")
            .find(|part| part.contains('.') && !part.contains(' '))
            .map(str::to_string);
        return Some(Hit::new(Cause::UnitFailed, Severity::Error, unit));
    }
    if line.contains("You are in emergency mode")
        || line.contains("Welcome to emergency mode")
        || line.contains("Give root password for maintenance")
    {
        return Some(Hit::new(Cause::EmergencyMode, Severity::Fatal, None));
    }
    None
}

/// A line printed before the kernel proper runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PreKernel {
    /// The firmware (SeaBIOS, iPXE, the boot menu): printed whatever the kernel cmdline says.
    Firmware,
    /// The kernel's x86 setup code or decompressor (`Probing EDD`, `Decompressing Linux`,
    /// `early console in setup code`): the bootloader ran the kernel image, and a serial
    /// `console=`/`earlyprintk=` is on the cmdline (setup code prints on serial only then).
    KernelSetup,
}

/// Firmware and boot-stub texts (SeaBIOS `src/boot.c`, iPXE, Linux `arch/x86/boot/edd.c`,
/// `arch/x86/boot/compressed/misc.c` and `kaslr.c`). Only for lines without a kernel timestamp.
const FIRMWARE: [&str; 8] = [
    "SeaBIOS (version",
    "iPXE (",
    "Booting from ",
    "No bootable device",
    "Press ESC for boot menu",
    "Press F12 for boot menu",
    "Machine UUID ",
    "BdsDxe: ",
];
const KERNEL_SETUP: [&str; 9] = [
    "Probing EDD",
    "early console in setup code",
    "early console in extract_kernel",
    "Decompressing Linux",
    "Parsing ELF",
    "Booting the kernel",
    "KASLR using",
    "KASLR disabled",
    "input_data: 0x",
];

/// Whether `line` is firmware or kernel setup output (lines with a kernel timestamp never are).
pub fn pre_kernel(line: &str) -> Option<PreKernel> {
    if crate::diagnose::kernel_timestamp(line).is_some() {
        return None; // `[    0.000000] ...`: the kernel is running
    }
    if KERNEL_SETUP.iter().any(|m| line.contains(m)) {
        Some(PreKernel::KernelSetup)
    } else if FIRMWARE.iter().any(|m| line.contains(m)) {
        Some(PreKernel::Firmware)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_and_kernel_setup_lines() {
        for line in [
            "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
            "iPXE (http://ipxe.org) 00:02.0 C000 PCI2.10 PnP PMM+06FD3360+06F33360 C000",
            "Booting from ROM...",
            "Booting from Hard Disk...",
        ] {
            assert_eq!(pre_kernel(line), Some(PreKernel::Firmware), "{line}");
        }
        for line in [
            "Probing EDD (edd=off to disable)... ok",
            "early console in setup code",
            "Decompressing Linux... Parsing ELF... done.",
            "Booting the kernel.",
        ] {
            assert_eq!(pre_kernel(line), Some(PreKernel::KernelSetup), "{line}");
        }
        for line in [
            "[    0.000000] Linux version 6.1.0-28-cloud-amd64",
            "[    0.0] Booting from ROM is not a kernel line",
            "[netinit] init        mounted /proc /sys",
            "",
        ] {
            assert_eq!(pre_kernel(line), None, "{line}");
        }
    }

    fn hit(line: &str) -> Hit {
        match_line(line).unwrap_or_else(|| panic!("no hit for {line:?}"))
    }

    #[test]
    fn panics_are_classified_by_their_message() {
        let h = hit("[    1.612345] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)");
        assert_eq!(
            (h.cause, h.severity),
            (Cause::RootfsMountFailed, Severity::Fatal)
        );
        let h = hit("[   31.2] Kernel panic - not syncing: System is deadlocked on memory");
        assert_eq!(h.cause, Cause::OutOfMemory);
        let h = hit("[    2.1] Kernel panic - not syncing: No working init found.  Try passing init= option to kernel. See Linux Documentation/admin-guide/init.rst for guidance.");
        assert_eq!(h.cause, Cause::NoInit);
        let h = hit("[    2.1] Kernel panic - not syncing: Requested init /sbin/guest-netinit failed (error -2).");
        assert_eq!(h.cause, Cause::NoInit);
        let h = hit(
            "[    2.5] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
        );
        assert_eq!(h.cause, Cause::InitExited);
        let h = hit("[    0.9] Kernel panic - not syncing: Fatal exception in interrupt");
        assert_eq!(h.cause, Cause::KernelPanic);
        assert_eq!(h.subject.as_deref(), Some("Fatal exception in interrupt"));
        let h = hit("[    0.9] ---[ end Kernel panic - not syncing: Fatal exception ]---");
        assert_eq!(h.subject.as_deref(), Some("Fatal exception"));
    }

    #[test]
    fn oom_killer_names_the_victim() {
        let h = hit("[   12.403] Out of memory: Killed process 612 (node) total-vm:1095648kB, anon-rss:180236kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:2048kB oom_score_adj:0");
        assert_eq!((h.cause, h.severity), (Cause::OutOfMemory, Severity::Error));
        assert_eq!(h.subject.as_deref(), Some("node"));
        let h = hit("[   12.4] chromium invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=300");
        assert_eq!(h.cause, Cause::OutOfMemory);
    }

    #[test]
    fn systemd_unit_failures_name_the_unit() {
        let h = hit("[FAILED] Failed to start guest-agent.service - guestkit agent.");
        assert_eq!(h.cause, Cause::UnitFailed);
        assert_eq!(h.subject.as_deref(), Some("guest-agent.service"));
        let h = hit("[FAILED] Failed to start Network Configuration.");
        assert_eq!(h.subject.as_deref(), Some("Network Configuration"));
        let h = hit("[DEPEND] Dependency failed for Network Online.");
        assert_eq!(h.cause, Cause::DependencyFailed);
        let h = hit(
            "Nov 21 23:10:01 vm systemd[1]: guest-agent.service: Failed with result 'exit-code'.",
        );
        assert_eq!(h.subject.as_deref(), Some("guest-agent.service"));
    }

    #[test]
    fn missing_modules_and_devices() {
        let h = hit("modprobe: FATAL: Module virtio_net not found in directory /lib/modules/5.15.0-91-generic");
        assert_eq!(
            (h.cause, h.severity),
            (Cause::ModuleMissing, Severity::Error)
        );
        assert_eq!(h.subject.as_deref(), Some("virtio_net"));
        let h = hit("systemd-modules-load[201]: Failed to find module 'snd_hda_intel'");
        assert_eq!(
            (h.subject.as_deref(), h.severity),
            (Some("snd_hda_intel"), Severity::Warning)
        );
        let h = hit("[ TIME ] Timed out waiting for device sys-subsystem-net-devices-eth0.device - /sys/subsystem/net/devices/eth0.");
        assert_eq!(h.cause, Cause::NoNetworkDevice);
        assert_eq!(h.subject.as_deref(), Some("eth0"));
        let h = hit("Cannot find device \"eth0\"");
        assert_eq!(h.subject.as_deref(), Some("eth0"));
    }

    #[test]
    fn ordinary_lines_do_not_match() {
        for line in [
            "[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)",
            "[  OK  ] Started systemd-networkd.service - Network Configuration.",
            "[    1.1] Run /init as init process",
            "[   20.1] traps: node[612] general protection fault ip:55d0c3 sp:7ffd error:0 in node[55d0c0+1000]",
            "",
        ] {
            assert_eq!(match_line(line), None, "{line}");
        }
    }
}
