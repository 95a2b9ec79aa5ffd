//! The systemd image: the golden-image path of production, booted the same way as the
//! initramfs image. A Debian rootfs made with `debootstrap` (systemd, udev, kmod), the
//! kernel's modules (with `modules.dep` from the image's own `depmod`), our binaries, and the
//! units from `systemd-units/` placed and enabled with `systemctl --root` next to
//! systemd-networkd. `guest-netinit check --root` lints the tree before it is packed; the
//! whole tree then becomes the initramfs, with `/init` being systemd (no root switch).
//!
//! The debootstrap tree is cached in `<target>/vm-cache/rootfs-<suite>/` (minutes the first
//! time, never again); each image is made from a copy of it.

use super::image::{self, Binaries, AGENT_CONFIG_PATH, AGENT_PATH, NETINIT_PATH};
use super::kernel::{cache_dir, Kernel, MODULE_INDEXES, NET_MODULES, VSOCK_MODULES};
use super::{cpio::Writer, run_checked, VmError};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian release of the rootfs (the host's).
pub const SUITE: &str = "bookworm";
/// Packages on top of `--variant=minbase`.
pub const INCLUDE: &str = "systemd,systemd-sysv,udev,kmod";
/// The units we install, from `systemd-units/`.
pub const UNITS: &[&str] = &["guest-netinit.service", "guest-agent.service"];
/// Enabled next to ours: the network manager netinit must come before.
pub const SYSTEM_UNITS: &[&str] = &["systemd-networkd.service"];
/// The block driver a disk-booted golden image needs (checked by `check --root`).
pub const VIRTIO_BLK: &str = "kernel/drivers/block/virtio_blk.ko";
/// Firecracker's transport (`check --root` warns without it).
pub const VIRTIO_MMIO: &str = "kernel/drivers/virtio/virtio_mmio.ko";
/// systemd loads it at start (automount units) and warns on the console when it is absent.
pub const AUTOFS4: &str = "kernel/fs/autofs/autofs4.ko";
/// Memory for the systemd image: the whole rootfs lives in RAM.
pub const MEMORY_MIB: u32 = 1024;

/// The Debian mirror this machine's apt uses (first `URIs:` / `deb` line for the suite), so
/// debootstrap reaches the same package registry apt does.
pub fn mirror() -> Result<String, VmError> {
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let name = p.to_string_lossy().into_owned();
            if name.ends_with(".sources") || name.ends_with(".list") {
                texts.push(std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    if let Some(uri) = texts.iter().find_map(|t| mirror_in(t)) {
        return Ok(uri);
    }
    Err(VmError::Other(
        "no Debian mirror found in /etc/apt/sources.list(.d): debootstrap needs one".into(),
    ))
}

/// The first Debian main archive URI in one apt sources file (deb822 `URIs:` or one-line
/// `deb URI SUITE ...`); security and other archives are skipped.
pub fn mirror_in(text: &str) -> Option<String> {
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let uri = if let Some(uris) = line.strip_prefix("URIs:") {
            uris.split_whitespace().find(|u| is_debian_main(u))
        } else if let Some(rest) = line.strip_prefix("deb ") {
            rest.split_whitespace()
                .find(|w| w.contains("://"))
                .filter(|u| is_debian_main(u))
        } else {
            None
        };
        if let Some(uri) = uri {
            return Some(uri.to_string());
        }
    }
    None
}

fn is_debian_main(uri: &str) -> bool {
    let u = uri.trim_end_matches('/');
    u.ends_with("/debian") && !u.contains("security")
}

/// The cached debootstrap tree, made when missing.
pub fn ensure_rootfs() -> Result<PathBuf, VmError> {
    ensure_rootfs_named(&format!("rootfs-{SUITE}"), INCLUDE)
}

/// A cached debootstrap tree `<cache>/NAME/` of `--variant=minbase` plus `include` (comma
/// list), made when missing or when it was made from another package list (`.complete`
/// holds the list).
pub fn ensure_rootfs_named(name: &str, include: &str) -> Result<PathBuf, VmError> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| VmError::io(&dir, e))?;
    let _lock = super::kernel::Lock::take(&dir.join(format!(".{name}-lock")))?;
    let tree = dir.join(name);
    let marker = tree.join(".complete");
    match std::fs::read_to_string(&marker) {
        // The systemd image's older marker is empty: its list is INCLUDE.
        Ok(list) if list == include || (list.is_empty() && include == INCLUDE) => return Ok(tree),
        _ => {}
    }
    super::ensure_program("debootstrap", "debootstrap")?;
    let partial = dir.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    let mirror = mirror()?;
    eprintln!(
        "vm: debootstrap {SUITE} ({include}) into {} (once)",
        partial.display()
    );
    run_checked(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={include}"), SUITE])
            .arg(&partial)
            .arg(&mirror),
    )?;
    // What a VM never needs: docs, manuals, locales, apt's caches.
    for sub in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
        "var/cache/apt",
        "var/lib/apt/lists",
    ] {
        let _ = std::fs::remove_dir_all(partial.join(sub));
    }
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::rename(&partial, &tree).map_err(|e| VmError::io(&tree, e))?;
    std::fs::write(&marker, include.as_bytes()).map_err(|e| VmError::io(&tree, e))?;
    Ok(tree)
}

/// What [`build`] made.
#[derive(Debug, Clone)]
pub struct SystemdImage {
    pub path: PathBuf,
    pub bytes: u64,
    /// `guest-netinit check --root` output on the tree.
    pub check_report: String,
}

/// Builds the systemd image at `out` from a copy of the cached rootfs in `work`.
pub fn build(
    kernel: &Kernel,
    bins: &Binaries,
    agent_config: &str,
    units_dir: &Path,
    work: &Path,
    out: &Path,
) -> Result<SystemdImage, VmError> {
    super::ensure_program("systemctl", "systemd")?;
    let cached = ensure_rootfs()?;
    let root = work.join("rootfs");
    let _ = std::fs::remove_dir_all(&root);
    run_checked(Command::new("cp").arg("-a").arg(&cached).arg(&root))?;
    let _ = std::fs::remove_file(root.join(".complete"));

    // The virtio modules (network and block, what `check --root` asks for), with
    // modules.dep and modules.alias made by the image's own depmod, so udev can load them too.
    install_modules(&root, kernel)?;

    // Our binaries and the agent's config.
    install(
        &root,
        NETINIT_PATH,
        &std::fs::read(&bins.netinit).map_err(|e| VmError::io(&bins.netinit, e))?,
        0o755,
    )?;
    install(
        &root,
        AGENT_PATH,
        &std::fs::read(&bins.agent).map_err(|e| VmError::io(&bins.agent, e))?,
        0o755,
    )?;
    install(&root, AGENT_CONFIG_PATH, agent_config.as_bytes(), 0o644)?;
    for lib in image::shared_libraries(&bins.netinit)?
        .into_iter()
        .chain(image::shared_libraries(&bins.agent)?)
    {
        let dest = root.join(lib.strip_prefix("/").unwrap_or(&lib));
        if !dest.exists() {
            let data = std::fs::read(&lib).map_err(|e| VmError::io(&lib, e))?;
            install(&root, &lib.to_string_lossy(), &data, 0o755)?;
        }
    }

    // Units: placed, then enabled the way an admin would, offline.
    for unit in UNITS {
        let src = units_dir.join(unit);
        let data = std::fs::read(&src).map_err(|e| VmError::io(&src, e))?;
        install(&root, &format!("/etc/systemd/system/{unit}"), &data, 0o644)?;
    }
    run_checked(
        Command::new("systemctl")
            .arg(format!("--root={}", root.display()))
            .arg("enable")
            .args(UNITS)
            .args(SYSTEM_UNITS),
    )?;
    install(&root, "/etc/hostname", b"vm\n", 0o644)?;
    // systemd makes a machine id at boot when the file is empty.
    install(&root, "/etc/machine-id", b"", 0o444)?;

    // The golden-image lint, as part of the build.
    let check_report = check_tree(&bins.netinit, &root, kernel)?;

    // The kernel runs /init from the initramfs: systemd, as PID 1 of the unpacked tree.
    let _ = std::fs::remove_file(root.join("init"));
    std::os::unix::fs::symlink("lib/systemd/systemd", root.join("init"))
        .map_err(|e| VmError::io(&root.join("init"), e))?;
    let raw = pack_tree(&root)?;
    let gz = image::gzip(&raw)?;
    std::fs::write(out, &gz).map_err(|e| VmError::io(out, e))?;
    Ok(SystemdImage {
        path: out.to_path_buf(),
        bytes: gz.len() as u64,
        check_report,
    })
}

/// The virtio modules (network, block and the vsock transport: what `check --root` asks
/// for) into `root`, with
/// modules.dep and modules.alias made by the image's own depmod, so udev can load them too.
pub(crate) fn install_modules(root: &Path, kernel: &Kernel) -> Result<(), VmError> {
    let modules = root.join("lib/modules").join(&kernel.release);
    for rel in NET_MODULES
        .iter()
        .chain(VSOCK_MODULES)
        .chain(MODULE_INDEXES)
        .chain(&[VIRTIO_BLK, VIRTIO_MMIO, AUTOFS4])
    {
        let src = kernel.modules_dir.join(rel);
        let data = std::fs::read(&src).map_err(|e| VmError::io(&src, e))?;
        install(&modules, rel, &data, 0o644)?;
    }
    run_checked(
        Command::new("chroot")
            .arg(root)
            .args(["/sbin/depmod", "-a", &kernel.release]),
    )?;
    Ok(())
}

/// `guest-netinit check --root` on the tree: its report, or an error (the image is not built)
/// with the report when it found errors.
pub(crate) fn check_tree(netinit: &Path, root: &Path, kernel: &Kernel) -> Result<String, VmError> {
    let check = Command::new(netinit)
        .arg("check")
        .arg("--root")
        .arg(root)
        .arg("--kernel-version")
        .arg(&kernel.release)
        .output()
        .map_err(|e| VmError::io(netinit, e))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    if !check.status.success() {
        return Err(VmError::Other(format!(
            "guest-netinit check --root {} failed ({}): the image is not built:\n{report}",
            root.display(),
            check.status
        )));
    }
    Ok(report)
}

pub(crate) fn install(root: &Path, path: &str, data: &[u8], mode: u32) -> Result<(), VmError> {
    let dest = root.join(path.trim_start_matches('/'));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| VmError::io(parent, e))?;
    }
    let _ = std::fs::remove_file(&dest);
    std::fs::write(&dest, data).map_err(|e| VmError::io(&dest, e))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
        .map_err(|e| VmError::io(&dest, e))
}

/// A directory tree as a newc archive (directories, files, symlinks; device nodes, sockets
/// and fifos are skipped: devtmpfs provides /dev).
pub fn pack_tree(root: &Path) -> Result<Vec<u8>, VmError> {
    let mut w = Writer::new(Vec::new());
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| VmError::io(&p, e)
    };
    w.dir("/", 0o755).map_err(io(root))?;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let name = format!("/{}", rel.display());
            let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            let mode = meta.mode() & 0o7777;
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = std::fs::read_link(&path).map_err(io(&path))?;
                w.symlink(&name, &target.to_string_lossy())
                    .map_err(io(&path))?;
            } else if ft.is_dir() {
                w.dir(&name, mode).map_err(io(&path))?;
                stack.push(path);
            } else if ft.is_file() {
                let data = std::fs::read(&path).map_err(io(&path))?;
                w.file(&name, mode, &data).map_err(io(&path))?;
            }
        }
    }
    w.finish().map_err(io(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822_and_one_line_sources_skipping_security_and_comments() {
        let deb822 = "Types: deb\n# URIs: http://old.example/debian\nURIs: http://mirror.example/debian\n\
                      Suites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let security_only = "URIs: http://mirror.example/debian-security\n";
        assert_eq!(mirror_in(security_only), None);
        let one_line = "deb [arch=amd64] http://m.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_in(one_line).as_deref(),
            Some("http://m.example/debian/")
        );
        assert_eq!(
            mirror_in("deb https://other.example/apt stable main\n"),
            None
        );
    }
}
