//! What each finding means for the operator: guestkit's own event lines turned into
//! findings, and the fix hint for each kernel/systemd cause. Kept apart from `diagnose`
//! (the reading) because this is the wording, which changes with every incident review.

use crate::diagnose::{Cause, Finding, Severity};
use crate::signatures::Hit;
use crate::text::{cap, MAX_EVIDENCE, MAX_HINT, MAX_SUBJECT};
use guest_proto::{Component, ConsoleEvent, Event};

/// A classified line plus its hint (events carry their own data for the hint).
pub(crate) struct Found {
    pub(crate) hit: Hit,
    pub(crate) hint: String,
}

pub(crate) fn found_to_finding(found: Found, line: usize, evidence: &str) -> Finding {
    Finding {
        cause: found.hit.cause,
        severity: found.hit.severity,
        subject: found.hit.subject.map(|s| cap(&s, MAX_SUBJECT)),
        line,
        evidence: cap(evidence, MAX_EVIDENCE),
        hint: cap(&found.hint, MAX_HINT),
        occurrences: 1,
    }
}

/// guestkit's own event lines.
pub(crate) fn event_hit(ev: &ConsoleEvent) -> Option<Found> {
    let (cause, severity, subject, hint_text) = match &ev.event {
        Event::Start { .. } | Event::Done { .. } | Event::Listening { .. } => return None,
        Event::Step { ok: true, .. } => return None,
        Event::Step { step, detail, .. } => (
            Cause::NetinitStepFailed,
            Severity::Error,
            Some(step.clone()),
            format!("guest-netinit step `{step}` failed: {detail}"),
        ),
        Event::Conflict {
            source,
            path,
            detail,
            resolution,
        } => {
            let remove = match path {
                Some(p) => format!("; remove {p} from the image to silence it"),
                None => String::new(),
            };
            (
                Cause::NetworkConflict,
                Severity::Warning,
                Some(source.clone()),
                format!("{source} also configures the interface ({detail}); guest-netinit resolved it: {resolution}{remove}"),
            )
        }
        Event::ModuleMissing { module, path } => (
            Cause::ModuleMissing,
            Severity::Error,
            Some(module.clone()),
            format!("{path} is not in the image: install the modules of the guest's kernel under /lib/modules/<version> (or build {module} in); `guest-netinit check --root` catches this when the image is built"),
        ),
        Event::NoDevice {
            interface,
            waited_ms,
        } => (
            Cause::NoNetworkDevice,
            Severity::Fatal,
            Some(interface.clone()),
            format!("{interface} did not appear in {waited_ms} ms: check that the VM config attaches a NIC (Firecracker network-interfaces, QEMU -device virtio-net-pci) and that virtio_net is in the image"),
        ),
        Event::Warning { message } => (
            Cause::NetinitWarning,
            Severity::Warning,
            None,
            message.clone(),
        ),
        Event::Failed { failure } => {
            let (cause, what) = match ev.src {
                Component::Netinit => (Cause::NetinitFailed, "guest-netinit"),
                Component::Agent => (Cause::ComponentFailed, "guest-agent"),
                Component::Webrtc => (Cause::ComponentFailed, "guest-agent webrtc"),
            };
            let advice = match failure.class.as_str() {
                "bad-config" => "; fix the ip= boot argument (build it with `guestctl bootargs`)",
                "no-device" => "; check the VM config attaches a NIC",
                "module-missing" | "module-load" => {
                    "; install the guest kernel's modules (virtio_net) in the image"
                }
                _ => "",
            };
            (
                cause,
                Severity::Fatal,
                Some(failure.class.clone()),
                format!(
                    "{what} failed ({}, exit {}): {}{advice}",
                    failure.class, failure.exit_code, failure.message
                ),
            )
        }
        Event::CrashLoop {
            service,
            restarts,
            last_exit,
        } => (
            Cause::ServiceCrashLoop,
            Severity::Fatal,
            Some(service.clone()),
            format!("service {service} keeps exiting ({last_exit}, {restarts} restarts): read its output with GET /services/{service}/logs or in the guest's journal"),
        ),
    };
    Some(Found {
        hit: Hit {
            cause,
            severity,
            subject,
        },
        hint: hint_text,
    })
}

/// The fix hint for a kernel/systemd signature.
pub fn hint(cause: Cause, subject: Option<&str>) -> String {
    let subject = subject.unwrap_or("?");
    match cause {
        Cause::NoConsoleOutput => "nothing printed: console not configured (add console=ttyS0 to the kernel boot args, and check the VMM writes the serial port to this file); if console=ttyS0 is there already, the kernel died before its first message (too little memory for it, or a broken image): add earlyprintk=serial,ttyS0 to see how far it got".into(),
        Cause::KernelNotStarted if subject == "kernel setup ran" => "the kernel never started: its setup code ran (console= is in effect) but `Linux version` never came, so it died decompressing or before its first message: give the VM more memory (this Debian kernel on QEMU q35 needs more than 64 MiB just to start), or check the kernel image is not truncated or built for another machine".into(),
        Cause::KernelNotStarted => "the kernel never printed: only the firmware did. With console=ttyS0 on the kernel boot args it never started (give the VM more memory, or check the kernel image is not broken); without it, add console=ttyS0".into(),
        Cause::RootfsMountFailed => "the kernel could not mount the root filesystem: check root= (Firecracker: root=/dev/vda with the rootfs drive is_root_device=true) and that the disk driver (virtio_blk) and filesystem (ext4) are built in or in the initramfs".into(),
        Cause::OutOfMemory => "the guest ran out of memory: raise mem_size_mib in the VM's machine-config (or run fewer services)".into(),
        Cause::NoInit => format!("no init could be run ({subject}): check init= and that the binary exists in the rootfs, is executable, and has its interpreter and libraries"),
        Cause::InitExited => "PID 1 ended: read the lines before this one; in init mode guest-netinit must exec the real init (check guest_netinit.next=)".into(),
        Cause::KernelPanic => format!("the kernel panicked ({subject}): read the lines just before the panic for the cause"),
        Cause::KernelBug => "a kernel oops: read the call trace that follows; try another kernel build".into(),
        Cause::ModuleMissing if subject.starts_with('/') => format!("the module tree {subject} is not in the image (no module of this kernel can load): install the modules of the guest's kernel there (or build the drivers in)"),
        Cause::NoNetworkDevice if subject == "?" => "a network tool found no interface: check the VM config attaches a NIC (Firecracker network-interfaces, QEMU -device virtio-net-pci) and that virtio_net is loaded".into(),
        Cause::ModuleMissing => format!("kernel module {subject} is not in the image: install the modules of the guest's kernel under /lib/modules/<version> (or build it in); `guest-netinit check --root` catches this when the image is built"),
        Cause::NoNetworkDevice => format!("no network interface {subject}: check the VM config attaches a NIC (Firecracker network-interfaces, QEMU -device virtio-net-pci) and that virtio_net is loaded"),
        Cause::NetworkUnreachable => format!("{subject} found no route: the guest's network was never configured (look above for the driver, the device or DHCP failing)"),
        Cause::DhcpFailed => format!("{subject} got no DHCP lease: no DHCP server answered on that link (check the host side serves DHCP there, or give the VM a static ip= built with `guestctl bootargs`)"),
        Cause::NoNetworkConfigured => "the boot reached userspace but nothing on the console shows a network being configured (no address, no lease, no guest-netinit): the image's networking did nothing or printed nothing; check its network config and that the NIC's driver is in the image".into(),
        Cause::UnitFailed => format!("systemd unit {subject} failed: read the lines around it, or `journalctl -b -u {subject}` in the guest"),
        Cause::DependencyFailed => format!("{subject} was not started because a unit it requires failed: look for the first `Failed to start` above it"),
        Cause::EmergencyMode => "systemd dropped to emergency mode: a unit needed for boot failed (often a mount in /etc/fstab); look for `Failed` lines above".into(),
        Cause::NetinitFailed | Cause::NetinitStepFailed | Cause::NetworkConflict | Cause::NetinitWarning
        | Cause::ServiceCrashLoop | Cause::ServiceDown | Cause::AgentUnreachable | Cause::ComponentFailed | Cause::MalformedEvent => format!("see the guestkit event ({subject})"),
        Cause::FindingsSuppressed => "the console is flooded (a unit failing in a loop, a chatty or hostile guest): read the log itself for the rest".into(),
    }
}

/// `Attempted to kill init! exitcode=0x00000200` → "PID 1 exited with status 2" (the value
/// is a wait status: exit code in bits 8-15, terminating signal in bits 0-6).
pub(crate) fn decode_exitcode(subject: &str) -> Option<String> {
    let hex = subject.split("exitcode=0x").nth(1)?;
    let hex: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
    let status = u32::from_str_radix(&hex, 16).ok()?;
    let signal = status & 0x7f;
    Some(if signal != 0 {
        format!("PID 1 was killed by signal {signal}")
    } else {
        format!("PID 1 exited with status {}", (status >> 8) & 0xff)
    })
}
