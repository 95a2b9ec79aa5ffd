//! Init mode loads the vsock transport's modules, because nothing else will: there is no udev
//! to act on the virtio-vsock device's modalias, and `guest-agent serve` (vsock control
//! channel, readiness push; issue 13) needs them before it binds. Debian's kernel has them as
//! modules: `vsock`, `vmw_vsock_virtio_transport_common`, `vmw_vsock_virtio_transport`.
//!
//! Only when a virtio-vsock device is there (virtio bus device id 0x0013 — Firecracker's
//! virtio-mmio — or PCI 1af4:1053, QEMU's `vhost-(user-)vsock-pci`, with `virtio_pci` loaded
//! first when that function has no driver yet), and not when the kernel command line turns
//! vsock off (`guest_agent.vsock_port=0` without a `guest_agent.ready_port=`). Each step is a
//! console line; a missing module is a warning on the console and the boot goes on (the agent
//! then says "no vsock transport" and serves TCP only).

use super::{ms, Console, Level};
use crate::system::ModuleError;
use guest_proto::KernelCmdline;
use std::path::Path;
use std::time::Instant;

/// The transport's modules, dependencies first.
pub const MODULES: [&str; 3] = [
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

/// What to do about vsock at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The command line turns it off.
    Off,
    /// No virtio-vsock device.
    NoDevice,
    /// Load these, in order.
    Load(Vec<&'static str>),
}

/// Decides from sysfs (`sys` = `/sys`) and the command line.
pub fn plan(sys: &Path, cmd: &KernelCmdline) -> Plan {
    let port_off = |p: &str| cmd.get(p).map(|v| v.trim() == "0");
    let listen_off = port_off("guest_agent.vsock_port") == Some(true);
    let push_on = port_off("guest_agent.ready_port") == Some(false);
    if listen_off && !push_on {
        return Plan::Off;
    }
    let mut found = false;
    let mut pci_without_driver = false;
    for dev in list(&sys.join("bus/virtio/devices")) {
        if read(&dev.join("device")).as_deref() == Some("0x0013") {
            found = true;
        }
    }
    for dev in list(&sys.join("bus/pci/devices")) {
        if read(&dev.join("vendor")).as_deref() == Some("0x1af4")
            && read(&dev.join("device")).as_deref() == Some("0x1053")
        {
            found = true;
            pci_without_driver |= !dev.join("driver").exists();
        }
    }
    if !found {
        return Plan::NoDevice;
    }
    let mut v = Vec::new();
    if pci_without_driver {
        v.push("virtio_pci");
    }
    v.extend(MODULES);
    Plan::Load(v)
}

/// Carries out [`plan`] with `load` (the module loader with dependencies), saying each step.
pub(super) fn load(
    sys: &Path,
    cmd: &KernelCmdline,
    load: impl Fn(&str) -> Result<Vec<String>, ModuleError>,
    con: &mut Console,
) {
    let names = match plan(sys, cmd) {
        Plan::Off => {
            con.say(Level::Info, "vsock: off (guest_agent.vsock_port=0)");
            return;
        }
        Plan::NoDevice => {
            con.say(
                Level::Info,
                "vsock: no virtio-vsock device; modules not loaded",
            );
            return;
        }
        Plan::Load(n) => n,
    };
    for name in names {
        let t = Instant::now();
        match load(name) {
            Ok(l) if l.is_empty() => con.say(
                Level::Info,
                &format!(
                    "vsock: module {name}: already loaded or built in ({})",
                    ms(t)
                ),
            ),
            Ok(l) => con.say(
                Level::Info,
                &format!("vsock: module {name}: loaded {} ({})", l.join(", "), ms(t)),
            ),
            Err(e) => con.say(
                Level::Error,
                &format!(
                    "warning: vsock: module {name}: {e}; booting on without vsock (the agent \
                     serves TCP only)"
                ),
            ),
        }
    }
}

fn list(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|it| it.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(sys: &Path, bus: &str, name: &str, files: &[(&str, &str)]) {
        let d = sys.join("bus").join(bus).join("devices").join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (f, v) in files {
            if *f == "driver" {
                std::fs::create_dir_all(d.join("driver")).unwrap();
            } else {
                std::fs::write(d.join(f), format!("{v}\n")).unwrap();
            }
        }
    }

    #[test]
    fn mmio_device_loads_the_three_in_order() {
        let t = tempfile::tempdir().unwrap();
        dev(t.path(), "virtio", "virtio0", &[("device", "0x0001")]);
        dev(t.path(), "virtio", "virtio1", &[("device", "0x0013")]);
        let p = plan(t.path(), &KernelCmdline::parse("quiet"));
        assert_eq!(p, Plan::Load(MODULES.to_vec()));
    }

    #[test]
    fn a_driverless_pci_function_needs_virtio_pci_first() {
        let t = tempfile::tempdir().unwrap();
        dev(
            t.path(),
            "pci",
            "0000:00:04.0",
            &[("vendor", "0x1af4"), ("device", "0x1053")],
        );
        let Plan::Load(v) = plan(t.path(), &KernelCmdline::default()) else {
            panic!()
        };
        assert_eq!(v[0], "virtio_pci");
        assert_eq!(&v[1..], MODULES);
        dev(t.path(), "pci", "0000:00:04.0", &[("driver", "")]);
        assert_eq!(
            plan(t.path(), &KernelCmdline::default()),
            Plan::Load(MODULES.to_vec())
        );
    }

    #[test]
    fn no_device_or_turned_off_loads_nothing() {
        let t = tempfile::tempdir().unwrap();
        dev(t.path(), "virtio", "virtio0", &[("device", "0x0001")]);
        assert_eq!(plan(t.path(), &KernelCmdline::default()), Plan::NoDevice);
        dev(t.path(), "virtio", "virtio1", &[("device", "0x0013")]);
        let off = KernelCmdline::parse("guest_agent.vsock_port=0");
        assert_eq!(plan(t.path(), &off), Plan::Off);
        // Pushing readiness still needs the transport.
        let push = KernelCmdline::parse("guest_agent.vsock_port=0 guest_agent.ready_port=8081");
        assert_eq!(plan(t.path(), &push), Plan::Load(MODULES.to_vec()));
    }

    /// A missing module is a warning naming its path; the others are still loaded, in order.
    #[test]
    fn a_missing_module_is_a_warning_and_the_rest_load() {
        let t = tempfile::tempdir().unwrap();
        dev(t.path(), "virtio", "virtio1", &[("device", "0x0013")]);
        let mut con = Console {
            kmsg: t.path().join("kmsg"),
            console: t.path().join("console"),
        };
        let tried = std::cell::RefCell::new(Vec::new());
        load(
            t.path(),
            &KernelCmdline::default(),
            |name| {
                tried.borrow_mut().push(name.to_string());
                if name == "vmw_vsock_virtio_transport_common" {
                    return Err(ModuleError::Missing {
                        module: name.into(),
                        path: "/lib/modules/6.1.0/kernel/net/vmw_vsock/x.ko".into(),
                    });
                }
                Ok(vec![name.to_string()])
            },
            &mut con,
        );
        assert_eq!(*tried.borrow(), MODULES);
        let kmsg = std::fs::read_to_string(t.path().join("kmsg")).unwrap();
        assert!(
            kmsg.contains("<5>guest-netinit init: vsock: module vsock: loaded vsock"),
            "{kmsg}"
        );
        assert!(
            kmsg.contains("<3>guest-netinit init: warning: vsock: module vmw_vsock_virtio_transport_common: kernel module vmw_vsock_virtio_transport_common is missing: /lib/modules/6.1.0/kernel/net/vmw_vsock/x.ko"),
            "{kmsg}"
        );
        let console = std::fs::read_to_string(t.path().join("console")).unwrap();
        assert!(console.contains("booting on without vsock"), "{console}");
    }
}
