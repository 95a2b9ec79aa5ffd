//! Network signatures of consoles guestkit did not write (issue 13): an old golden image's
//! shell init, a distro's own networking, a busybox script. Without a `GUESTKIT:` line, these
//! texts are all that says why the network never came up:
//! - module insertion failing (busybox and kmod `insmod`, busybox `modprobe`), naming the `.ko`;
//! - the NIC not found: `ip` (busybox `can't find device 'eth0'`, iproute2 and ifupdown
//!   `Cannot find device "eth0"`), nmcli, `ifconfig: SIOC..FLAGS: No such device`;
//! - `Network is unreachable` (no route: nothing configured an address);
//! - DHCP clients giving up: udhcpc, dhclient, systemd-networkd, NetworkManager;
//! - systemd units timing out (`Job X/start timed out`, `X: start operation timed out`).
//!
//! The busybox, iproute2 and systemd job texts are those of real boots (the fixtures in
//! tests/fixtures/ and tests/consoles/); the networkd and NetworkManager ones are from
//! their sources' log strings.
//!
//! [`configures_network`] recognises the lines that show a network being configured, so a
//! boot that reached userspace without any is a finding of its own.

use super::{module_hit, Hit};
use crate::diagnose::{Cause, Severity};

/// The `.ko` named in `line` (`/lib/modules/.../virtio_net.ko.xz`) as (module, path).
fn ko_in(line: &str) -> Option<(String, String)> {
    crate::health_diag::module_in(line)
}

/// The program that printed `line`: the first `word:` (no spaces), after any kernel
/// timestamp; `prog[pid]:` gives `prog`.
fn program(line: &str) -> Option<String> {
    let line = match crate::diagnose::kernel_timestamp(line) {
        Some(_) => line.split_once("] ").map(|(_, r)| r).unwrap_or(line),
        None => line,
    };
    let (word, _) = line.split_once(": ")?;
    let word = word.trim();
    if word.is_empty() || word.contains(' ') {
        return None;
    }
    let word = word.split('[').next().unwrap_or(word);
    Some(word.to_string())
}

/// Text after `start` up to `end` (exclusive).
fn between<'a>(line: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let at = line.find(start)? + start.len();
    let rest = &line[at..];
    Some(&rest[..rest.find(end)?])
}

/// Classifies one console line for the network signatures above.
pub fn match_line(line: &str) -> Option<Hit> {
    // insmod (busybox: `insmod: can't insert 'x.ko': ...`; kmod: `insmod: ERROR: could not
    // load module x.ko: ...`), modprobe run with a path
    if line.contains("insmod: ") || (line.contains("modprobe: ") && line.contains(".ko")) {
        if let Some((module, _path)) = ko_in(line) {
            return Some(module_hit(&module));
        }
    }
    // busybox modprobe
    if let Some(rest) = line.split("modprobe: module ").nth(1) {
        if rest.contains("not found") {
            let module = rest.split_whitespace().next().unwrap_or(rest);
            return Some(module_hit(module));
        }
    }
    if let Some(release) = between(line, "modprobe: can't change directory to '", "'") {
        // busybox modprobe chdirs to /lib/modules, then to the release: the tree is missing
        let dir = if release.starts_with('/') {
            release.to_string()
        } else {
            format!("/lib/modules/{release}")
        };
        return Some(Hit {
            cause: Cause::ModuleMissing,
            severity: Severity::Error,
            subject: Some(dir),
        });
    }
    let device = between(line, "can't find device '", "'")
        .or_else(|| between(line, "Cannot find device \"", "\""))
        .or_else(|| between(line, "Error: Device '", "' not found"));
    if let Some(dev) = device {
        return Some(Hit {
            cause: Cause::NoNetworkDevice,
            severity: Severity::Error,
            subject: Some(dev.to_string()),
        });
    }
    // busybox ip and ifconfig, net-tools ifconfig: the ioctl on a missing interface
    if line.contains("SIOCSIFFLAGS: No such device")
        || line.contains("SIOCGIFFLAGS: No such device")
        || line.contains("SIOCSIFADDR: No such device")
    {
        return Some(Hit {
            cause: Cause::NoNetworkDevice,
            severity: Severity::Error,
            subject: None,
        });
    }
    if line.contains("Network is unreachable") {
        return Some(Hit {
            cause: Cause::NetworkUnreachable,
            severity: Severity::Error,
            subject: program(line),
        });
    }
    if let Some(client) = dhcp_gave_up(line) {
        return Some(Hit {
            cause: Cause::DhcpFailed,
            severity: Severity::Error,
            subject: Some(client.to_string()),
        });
    }
    // systemd (src/core/job.c, unit.c): a job or a start that timed out
    if let Some(unit) = between(line, "Job ", "/start timed out") {
        return Some(Hit {
            cause: Cause::UnitFailed,
            severity: Severity::Error,
            subject: Some(unit.to_string()),
        });
    }
    if line.contains(": start operation timed out") {
        let unit = line
            .split(": ")
            .find(|part| part.contains('.') && !part.contains(' '))
            .map(str::to_string);
        return Some(Hit {
            cause: Cause::UnitFailed,
            severity: Severity::Error,
            subject: unit,
        });
    }
    None
}

/// Which DHCP client gave up, if `line` says one did.
fn dhcp_gave_up(line: &str) -> Option<&'static str> {
    if line.contains("udhcpc") && line.contains("no lease, failing") {
        return Some("udhcpc");
    }
    if line.contains("No DHCPOFFERS received")
        || line.contains("No working leases in persistent database")
        || line.contains("Unable to obtain a lease on first try")
    {
        return Some("dhclient");
    }
    // systemd-networkd (src/network/networkd-dhcp4.c) and networkd-wait-online
    if ((line.contains("DHCPv4 client")
        || line.contains("DHCP4 client")
        || line.contains("DHCP: "))
        && (line.contains("timed out") || line.contains("No lease")))
        || line.contains("Could not acquire DHCPv4 lease")
    {
        return Some("systemd-networkd");
    }
    // NetworkManager (src/core/dhcp/nm-dhcp-client.c, devices/nm-device.c)
    if line.contains("dhcp4 (")
        && (line.contains("request timed out") || line.contains("state changed timeout"))
    {
        return Some("NetworkManager");
    }
    None
}

/// Whether `line` shows a network being configured: an address set or a lease bound.
pub fn configures_network(line: &str) -> bool {
    const MARKERS: [&str; 9] = [
        "udhcpc: lease of ",
        "IP-Config: Complete",
        "DHCPv4 address ",
        "Activation: successful",
        "dhcp4 (",
        "bound to ",
        "Configured with address",
        "network-online.target",
        "Reached target Network is Online",
    ];
    MARKERS.iter().any(|m| line.contains(m)) && !line.contains("timed out")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(line: &str) -> Hit {
        match_line(line).unwrap_or_else(|| panic!("no hit for {line:?}"))
    }

    #[test]
    fn module_insertion_failures_name_the_module() {
        for line in [
            "insmod: can't insert '/lib/modules/6.1.0-57-cloud-amd64/kernel/drivers/net/virtio_net.ko': No such file or directory",
            "insmod: ERROR: could not load module /lib/modules/6.1.0/kernel/drivers/net/virtio_net.ko.xz: No such file or directory",
            "modprobe: module virtio_net not found in modules.dep",
        ] {
            let h = hit(line);
            assert_eq!(
                (h.cause, h.severity, h.subject.as_deref()),
                (Cause::ModuleMissing, Severity::Error, Some("virtio_net")),
                "{line}"
            );
        }
        let h = hit(
            "modprobe: can't change directory to '6.1.0-57-cloud-amd64': No such file or directory",
        );
        assert_eq!(
            h.subject.as_deref(),
            Some("/lib/modules/6.1.0-57-cloud-amd64")
        );
    }

    #[test]
    fn missing_nics_unreachable_networks_and_dhcp() {
        for line in [
            "ip: can't find device 'eth0'",
            "Cannot find device \"eth0\"",
            "Error: Device 'eth0' not found.",
        ] {
            let h = hit(line);
            assert_eq!(
                (h.cause, h.subject.as_deref()),
                (Cause::NoNetworkDevice, Some("eth0")),
                "{line}"
            );
        }
        assert_eq!(
            hit("ifconfig: SIOCGIFFLAGS: No such device").cause,
            Cause::NoNetworkDevice
        );
        let h = hit("wget: can't connect to remote host (192.168.100.1): Network is unreachable");
        assert_eq!(
            (h.cause, h.subject.as_deref()),
            (Cause::NetworkUnreachable, Some("wget"))
        );
        assert_eq!(
            hit("ip: RTNETLINK answers: Network is unreachable")
                .subject
                .as_deref(),
            Some("ip")
        );
        for (line, client) in [
            ("udhcpc: no lease, failing", "udhcpc"),
            ("No DHCPOFFERS received.", "dhclient"),
            (
                "[   65.1] dhclient[301]: No working leases in persistent database - sleeping.",
                "dhclient",
            ),
            (
                "systemd-networkd[212]: eth0: DHCPv4 client: timed out",
                "systemd-networkd",
            ),
            (
                "NetworkManager[400]: <warn>  [1700000000.1] dhcp4 (eth0): request timed out",
                "NetworkManager",
            ),
        ] {
            let h = hit(line);
            assert_eq!(
                (h.cause, h.subject.as_deref()),
                (Cause::DhcpFailed, Some(client)),
                "{line}"
            );
        }
    }

    #[test]
    fn unit_timeouts() {
        let h = hit("[ TIME ] Job networking.service/start timed out.");
        assert_eq!(
            (h.cause, h.subject.as_deref()),
            (Cause::UnitFailed, Some("networking.service"))
        );
        let h = hit("systemd[1]: ifup@eth0.service: start operation timed out. Terminating.");
        assert_eq!(h.subject.as_deref(), Some("ifup@eth0.service"));
    }

    #[test]
    fn configured_networks_are_recognised() {
        for line in [
            "udhcpc: lease of 10.0.2.15 obtained from 10.0.2.2, lease time 86400",
            "[    1.2] IP-Config: Complete:",
            "systemd-networkd[212]: eth0: DHCPv4 address 10.0.2.15/24, gateway 10.0.2.2 acquired from 10.0.2.2",
            "bound to 10.0.2.15 -- renewal in 40000 seconds.",
        ] {
            assert!(configures_network(line), "{line}");
        }
        assert!(!configures_network("udhcpc: sending discover"));
        assert!(!configures_network("dhcp4 (eth0): request timed out"));
    }
}
