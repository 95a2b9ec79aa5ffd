//! Kernel modules in the image (failure F1: an empty `/lib/modules`, so `virtio_net` never
//! loaded and no eth0 appeared). For each kernel — the one given, or every
//! `/lib/modules/<v>` and `/boot/vmlinuz-<v>` — the virtio drivers must be loadable (their
//! files and dependencies present, resolved exactly as the boot-time loader in `modules.rs`
//! does) or built in (`modules.builtin`), and `modules.dep` present or regenerable.

use super::{shown, Finding, Severity};
use crate::modules::KernelModules;
use crate::system::ModuleError;
use std::path::Path;

/// Required: the network device, the PCI transport (QEMU, `virtio-net-pci`), the root disk.
pub const REQUIRED: [&str; 3] = ["virtio_net", "virtio_pci", "virtio_blk"];
/// Firecracker attaches its devices over virtio-mmio: a warning when absent.
pub const RECOMMENDED: [&str; 1] = ["virtio_mmio"];

/// Where depmod may be in the image (kmod provides it).
const DEPMOD: [&str; 4] = [
    "/sbin/depmod",
    "/usr/sbin/depmod",
    "/bin/kmod",
    "/usr/bin/kmod",
];

/// Checks every kernel; returns the kernel versions looked at.
pub fn check(root: &Path, only: Option<&str>, out: &mut Vec<Finding>) -> Vec<String> {
    let modules_dir = root.join("lib/modules");
    let kernels = match only {
        Some(v) => vec![v.to_string()],
        None => find_kernels(root),
    };
    if kernels.is_empty() {
        out.push(
            Finding::new(
                Severity::Error,
                "kernel",
                Some(shown(root, &modules_dir)),
                "no kernel modules in the image: /lib/modules is missing or empty and there is \
                 no /boot/vmlinuz-*; virtio_net cannot be loaded, the VM will have no eth0"
                    .into(),
            )
            .hint(
                "install the modules of the kernel the VMs boot into /lib/modules/<version> \
                 (e.g. the linux-modules / linux-image package), then run depmod",
            ),
        );
        return kernels;
    }
    for v in &kernels {
        check_kernel(root, v, out);
    }
    kernels
}

/// Kernel versions: directories in `/lib/modules`, and `/boot/vmlinuz-<v>`; sorted, unique.
pub fn find_kernels(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("lib/modules")) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                v.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(root.join("boot")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(ver) = name.strip_prefix("vmlinuz-") {
                if !ver.is_empty() {
                    v.push(ver.to_string());
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

fn check_kernel(root: &Path, version: &str, out: &mut Vec<Finding>) {
    let dir = root.join("lib/modules").join(version);
    let path = Some(shown(root, &dir));
    let empty = std::fs::read_dir(&dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if empty {
        out.push(
            Finding::new(
                Severity::Error,
                "kernel",
                path,
                format!(
                    "kernel {version}: {} is missing or empty: virtio_net (and virtio_pci, \
                     virtio_blk) cannot be loaded, the VM will have no eth0",
                    shown(root, &dir)
                ),
            )
            .hint(format!(
                "install the modules of kernel {version} into the image and run depmod {version}, \
                 or remove /boot/vmlinuz-{version} if the VMs boot another kernel"
            )),
        );
        return;
    }
    let sys = root.join(".guest-netinit-check-no-sysfs");
    let km = KernelModules::new(root, &sys, version.to_string());
    let dep = dir.join("modules.dep");
    if dep.is_file() {
        out.push(Finding::new(
            Severity::Ok,
            "modules.dep",
            Some(shown(root, &dep)),
            format!("kernel {version}: modules.dep present"),
        ));
    } else {
        let depmod = DEPMOD
            .iter()
            .find(|p| super::rootpath::resolve(root, p).is_some_and(|h| h.is_file()));
        let f = match depmod {
            Some(d) => Finding::new(
                Severity::Warning,
                "modules.dep",
                Some(shown(root, &dep)),
                format!(
                    "kernel {version}: no modules.dep; depmod is in the image ({d}), so the \
                     kernel package's postinst or `depmod {version}` can regenerate it"
                ),
            )
            .hint(format!(
                "run `depmod -b <rootfs> {version}` when building the image; until then \
                 guest-netinit reads dependencies from the modules' .modinfo (uncompressed only)"
            )),
            None => Finding::new(
                Severity::Error,
                "modules.dep",
                Some(shown(root, &dep)),
                format!(
                    "kernel {version}: no modules.dep and no depmod in the image to regenerate it"
                ),
            )
            .hint(format!(
                "run `depmod -b <rootfs> {version}` on the build host, or install kmod in the image"
            )),
        };
        out.push(f);
    }
    for (name, severity) in REQUIRED
        .iter()
        .map(|n| (*n, Severity::Error))
        .chain(RECOMMENDED.iter().map(|n| (*n, Severity::Warning)))
    {
        out.push(module_finding(root, &km, version, name, severity));
    }
    // The agent serves over vsock (and may push readiness): without the transport it is
    // reachable over the network only, which is what vsock is there to avoid needing.
    if super::vsock::wanted(root) {
        for name in super::vsock::MODULES {
            let mut f = module_finding(root, &km, version, name, Severity::Warning);
            if f.severity == Severity::Warning {
                f.message = f
                    .message
                    .replace(" (Firecracker's devices are virtio-mmio)", "")
                    + " (the agent's config asks for vsock: /etc/guest-agent/config.toml [serve]; \
                       the VM boots, but the host can reach the agent over the network only)";
            }
            out.push(f);
        }
    }
}

fn module_finding(
    root: &Path,
    km: &KernelModules,
    version: &str,
    name: &str,
    severity: Severity,
) -> Finding {
    match km
        .resolve(name)
        .map(|f| f.split_last().map(|(l, d)| (l.clone(), d.to_vec())))
    {
        Ok(None) => Finding::new(
            Severity::Ok,
            "module",
            Some(shown(root, &km.module_dir().join("modules.builtin"))),
            format!("kernel {version}: {name} is built in"),
        ),
        Ok(Some((last, deps))) => {
            let deps: Vec<&str> = deps.iter().map(|m| m.name.as_str()).collect();
            let with = if deps.is_empty() {
                String::new()
            } else {
                format!(" (needs {})", deps.join(", "))
            };
            Finding::new(
                Severity::Ok,
                "module",
                Some(shown(root, &last.path)),
                format!("kernel {version}: {name} present{with}"),
            )
        }
        Err(e) => {
            let (path, hint) = match &e {
                ModuleError::Missing { path, .. } => (
                    path.clone(),
                    format!(
                        "install {name}.ko for kernel {version} (with its dependencies) and run \
                         depmod, or use a kernel with it built in"
                    ),
                ),
                ModuleError::NoModulesDir { dir, .. } => {
                    (dir.clone(), format!("install the modules of kernel {version}"))
                }
                ModuleError::BadModuleFile { path, .. } | ModuleError::Load { path, .. } => (
                    path.clone(),
                    format!("regenerate modules.dep (`depmod -b <rootfs> {version}`) or replace the file"),
                ),
            };
            let path = Path::new(&path);
            let shown_path = if path.starts_with(root) {
                shown(root, path)
            } else {
                path.display().to_string()
            };
            let msg = if root == Path::new("/") {
                e.to_string()
            } else {
                e.to_string().replace(&root.display().to_string(), "")
            };
            let why = if severity == Severity::Warning {
                " (Firecracker's devices are virtio-mmio)"
            } else {
                ""
            };
            Finding::new(
                severity,
                "module",
                Some(shown_path),
                format!("kernel {version}: {name}: {msg}{why}"),
            )
            .hint(hint)
        }
    }
}
