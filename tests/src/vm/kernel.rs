//! The guest kernel: Debian's cloud kernel (`linux-image-*-cloud-amd64`), like the Ubuntu
//! generic kernel of the old fleet in what matters here: virtio as modules, no `CONFIG_IP_PNP`.
//!
//! Fetched once with `apt-get download` into `<target>/vm-cache/` and unpacked with
//! `dpkg-deb -x`; later runs find the `.deb` and the unpacked tree there and touch neither
//! apt nor the network. Concurrent test processes take a file lock around the fetch.

use super::{run_checked, VmError};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The meta package whose dependency names the current kernel package.
pub const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// The network modules an image needs for a virtio-net NIC, relative to
/// `/lib/modules/<release>/`: the PCI transport and its helpers, the virtio core, virtio_net
/// and its failover dependencies (Debian ships them uncompressed, without `modules.dep`).
pub const NET_MODULES: &[&str] = &[
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
];

/// The virtio-vsock transport (guest-netinit's init mode loads it when the VM has the
/// device), copied with the network modules.
pub const VSOCK_MODULES: &[&str] = &[
    "kernel/net/vmw_vsock/vsock.ko",
    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
];

/// Index files copied next to the modules (`modules.order` lets netinit find a module by
/// name without walking the tree; `modules.builtin*` say what needs no file).
pub const MODULE_INDEXES: &[&str] = &[
    "modules.order",
    "modules.builtin",
    "modules.builtin.modinfo",
];

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r` of the guest, e.g. `6.1.0-48-cloud-amd64`.
    pub release: String,
    /// The bzImage QEMU loads with `-kernel`.
    pub vmlinuz: PathBuf,
    /// `<unpacked>/lib/modules/<release>`.
    pub modules_dir: PathBuf,
    /// The `.deb` it came from.
    pub deb: PathBuf,
}

/// `<target>/vm-cache`.
pub fn cache_dir() -> PathBuf {
    crate::bins::target_dir().join("vm-cache")
}

/// The kernel, fetched and unpacked when not cached yet.
pub fn ensure() -> Result<Kernel, VmError> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| VmError::io(&dir, e))?;
    let _lock = Lock::take(&dir.join(".lock"))?;
    let deb = match cached_deb(&dir) {
        Some(deb) => deb,
        None => download(&dir)?,
    };
    unpack(&dir, &deb)
}

/// The newest cached `linux-image-*-cloud-amd64_*.deb` (meta packages excluded).
fn cached_deb(dir: &Path) -> Option<PathBuf> {
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| {
                n.starts_with("linux-image-")
                    && n.contains("-cloud-amd64_")
                    && n.ends_with(".deb")
                    && !n.starts_with("linux-image-cloud-amd64_")
                    && !n.contains("-dbg_")
            })
        })
        .collect();
    debs.sort();
    debs.pop()
}

/// The versioned package the meta package depends on, e.g. `linux-image-6.1.0-48-cloud-amd64`.
pub fn resolve_package() -> Result<String, VmError> {
    let ask = || -> Result<Option<String>, VmError> {
        let out = run_checked(Command::new("apt-cache").args(["depends", META_PACKAGE]))?;
        Ok(out.lines().find_map(|l| {
            let dep = l.trim().strip_prefix("Depends:")?.trim();
            (dep.starts_with("linux-image-") && dep.ends_with("-cloud-amd64"))
                .then(|| dep.to_string())
        }))
    };
    if let Some(p) = ask().ok().flatten() {
        return Ok(p);
    }
    // A fresh machine has no package lists yet.
    run_checked(Command::new("apt-get").args(["-q", "update"]))?;
    ask()?.ok_or_else(|| {
        VmError::Other(format!(
            "`apt-cache depends {META_PACKAGE}` names no linux-image-*-cloud-amd64 package"
        ))
    })
}

fn download(dir: &Path) -> Result<PathBuf, VmError> {
    let package = resolve_package()?;
    eprintln!("vm: downloading {package} into {}", dir.display());
    run_checked(
        Command::new("apt-get")
            .args(["-q", "download", &package])
            .current_dir(dir),
    )?;
    cached_deb(dir).ok_or_else(|| {
        VmError::Other(format!(
            "apt-get download {package} left no .deb in {}",
            dir.display()
        ))
    })
}

fn unpack(dir: &Path, deb: &Path) -> Result<Kernel, VmError> {
    let stem = deb
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tree = dir.join(&stem);
    if !tree.join(".unpacked").exists() {
        let tmp = dir.join(format!("{stem}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        run_checked(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
        let _ = std::fs::remove_dir_all(&tree);
        std::fs::rename(&tmp, &tree).map_err(|e| VmError::io(&tree, e))?;
        std::fs::write(tree.join(".unpacked"), b"").map_err(|e| VmError::io(&tree, e))?;
    }
    let modules_root = tree.join("lib/modules");
    let release = std::fs::read_dir(&modules_root)
        .map_err(|e| VmError::io(&modules_root, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| VmError::Other(format!("{} is empty", modules_root.display())))?;
    let vmlinuz = tree.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        return Err(VmError::Other(format!("{} is missing", vmlinuz.display())));
    }
    Ok(Kernel {
        modules_dir: modules_root.join(&release),
        release,
        vmlinuz,
        deb: deb.to_path_buf(),
    })
}

/// An exclusive `flock` on a file, released on drop.
pub(crate) struct Lock(File);

impl Lock {
    pub(crate) fn take(path: &Path) -> Result<Self, VmError> {
        let file = File::create(path).map_err(|e| VmError::io(path, e))?;
        // SAFETY: flock on an fd we own; blocking is what we want.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(VmError::io(path, std::io::Error::last_os_error()));
        }
        Ok(Self(file))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own fd.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
