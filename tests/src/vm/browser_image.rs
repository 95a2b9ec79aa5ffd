//! The browser VM's golden image (issue 11): what the fleet boots. A Debian rootfs made with
//! debootstrap (systemd, udev, kmod, Xvfb, openbox, Debian's chromium, a font), the kernel's
//! virtio modules with the image's own `depmod`, our binaries and units, the agent's config
//! (xvfb → openbox, webrtc; serve) and `oauth.toml` (the VM's Chromium in kiosk mode on that
//! display, run as the unprivileged login user). `guest-netinit check --root` lints the tree
//! and an error fails the build; then the tree becomes an **ext4 disk image** with
//! `mkfs.ext4 -d` (no loop mount), booted as Firecracker boots a rootfs: virtio-blk,
//! `root=/dev/vda rw rootfstype=ext4`.
//!
//! Debian's kernel has virtio-blk as a module, so a tiny initramfs comes with the disk:
//! guest-netinit as `/init` with the virtio block modules, whose init mode loads the driver,
//! mounts `/dev/vda` and switches to it (guest-netinit `init/root.rs`). A kernel with
//! virtio-blk built in boots the disk without it (`init=/lib/systemd/systemd`, no initrd).
//!
//! Nothing per VM is in the image: address, token, display size and the streamer's controller
//! come from the kernel command line. Every VM boots the same file unchanged (QEMU
//! `snapshot=on` here; a copy or overlay per VM in a fleet). Built images are cached under
//! `<target>/vm-images/browser-<key>/`, the key hashing every input (package list, binaries,
//! units, configs, extra files, kernel release), so a run pays for the build only when one
//! of them changed; the debootstrap tree itself is cached once per package list.

use super::image::{
    Binaries, ExtraFile, AGENT_CONFIG_PATH, AGENT_PATH, NETINIT_PATH, STREAMER_PATH,
};
use super::kernel::{Kernel, MODULE_INDEXES};
use super::systemd_image::{
    check_tree, ensure_rootfs_named, install, install_modules, SUITE, SYSTEM_UNITS, UNITS,
    VIRTIO_BLK,
};
use super::{cpio::Writer, run_checked, VmError};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Packages on top of `--variant=minbase`. `dbus-user-session` satisfies the session bus
/// chromium's dconf wants (debootstrap cannot pick among virtual packages itself);
/// python3-minimal runs the test variant's stand-in login CLI.
pub const INCLUDE: &str = "systemd,systemd-sysv,udev,kmod,dbus,dbus-user-session,xvfb,openbox,\
chromium,fonts-dejavu-core,python3-minimal";
/// The cached debootstrap tree's directory name.
pub const ROOTFS_NAME: &str = "rootfs-bookworm-browser";
/// Memory for the browser VM (Chromium under software emulation).
pub const MEMORY_MIB: u32 = 2048;
/// vCPUs (QEMU runs one host thread per vCPU under TCG).
pub const CPUS: u32 = 2;
/// The unprivileged user the login CLIs and the browser run as (`oauth.toml` `run_as`).
pub const LOGIN_USER: &str = "guestkit-login";
/// The X display of the image's Xvfb (the agent's OAuth default).
pub const DISPLAY: &str = ":99";
/// Bump when the build steps change in a way the inputs do not show.
const BUILD_VERSION: u32 = 2;
/// Units masked in the image.
pub const MASKED: &[&str] = &[
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
];
/// Where `oauth.toml` goes.
pub const OAUTH_CONFIG_PATH: &str = "/etc/guest-agent/oauth.toml";
/// Modules in the initramfs: what mounting `/dev/vda` needs.
pub const INITRD_MODULES: &[&str] = &[
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    VIRTIO_BLK,
];

/// The agent's services in the golden image. Xvfb's size comes from the kernel command line
/// (`guest_agent.display=WxH`, exported by the supervisor as `GUESTKIT_DISPLAY_SIZE`).
pub fn agent_config() -> String {
    format!(
        r#"[supervisor]
stop_grace_ms = 3000

[services.xvfb]
command = ["/bin/sh", "-c", "exec /usr/bin/Xvfb {DISPLAY} -screen 0 ${{GUESTKIT_DISPLAY_SIZE:-1280x720}}x24 -nolisten tcp -noreset"]
required = true

[services.openbox]
command = ["/usr/bin/openbox"]
env = {{ DISPLAY = "{DISPLAY}" }}
depends_on = ["xvfb"]

[services.webrtc]
command = ["{STREAMER_PATH}", "--display", "{DISPLAY}"]
depends_on = ["xvfb"]
required = true

[services.serve]
command = ["{AGENT_PATH}", "serve", "--listen", "0.0.0.0:8080"]
required = true
"#
    )
}

/// `oauth.toml` of the golden image: Chromium in kiosk mode on the image's display, as the
/// login user, the flags a VM without a GPU or a route to Google needs.
pub fn oauth_config() -> String {
    format!(
        r#"run_as = "{LOGIN_USER}"
display = "{DISPLAY}"
browser = ["/usr/bin/chromium", "--kiosk", "--no-first-run", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--password-store=basic"]
shim_command = ["{AGENT_PATH}", "open-url"]
"#
    )
}

/// What goes into one browser image.
#[derive(Debug, Clone)]
pub struct BrowserImageSpec {
    pub agent_config: String,
    pub oauth_config: String,
    /// Added files (the test variant's stand-in CLI and its provider override).
    pub extra_files: Vec<ExtraFile>,
}

impl BrowserImageSpec {
    /// The golden image.
    pub fn golden() -> Self {
        Self {
            agent_config: agent_config(),
            oauth_config: oauth_config(),
            extra_files: Vec::new(),
        }
    }
}

/// A built (or cached) browser image.
#[derive(Debug, Clone)]
pub struct BrowserImage {
    /// The ext4 root disk (`/dev/vda`).
    pub disk: PathBuf,
    /// The initramfs that loads virtio-blk and switches to the disk.
    pub initrd: PathBuf,
    pub disk_bytes: u64,
    /// `guest-netinit check --root` output on the tree.
    pub check_report: String,
    /// Whether this call built it (false: from the cache).
    pub built: bool,
}

/// The kernel command line's root part for this image.
pub const ROOT_ARGS: &str = "root=/dev/vda rw rootfstype=ext4";

/// Builds the image into `<images>/browser-<key>/`, or returns the cached one.
pub fn build(
    kernel: &Kernel,
    bins: &Binaries,
    units_dir: &Path,
    spec: &BrowserImageSpec,
    images_dir: &Path,
) -> Result<BrowserImage, VmError> {
    let netinit = std::fs::read(&bins.netinit).map_err(|e| VmError::io(&bins.netinit, e))?;
    let agent = std::fs::read(&bins.agent).map_err(|e| VmError::io(&bins.agent, e))?;
    // The one image with a display carries the streamer.
    let streamer_path = bins.streamer.as_ref().ok_or_else(|| {
        VmError::Other("the browser image needs the streamer binary (guest-stream)".into())
    })?;
    let streamer = std::fs::read(streamer_path).map_err(|e| VmError::io(streamer_path, e))?;
    let mut units = Vec::new();
    for unit in UNITS {
        let src = units_dir.join(unit);
        units.push((
            *unit,
            std::fs::read(&src).map_err(|e| VmError::io(&src, e))?,
        ));
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        BUILD_VERSION,
        INCLUDE,
        &kernel.release,
        &netinit,
        &agent,
        &streamer,
        &units,
        super::kernel::NET_MODULES,
        super::kernel::VSOCK_MODULES,
    )
        .hash(&mut h);
    (&spec.agent_config, &spec.oauth_config).hash(&mut h);
    for f in &spec.extra_files {
        (&f.path, f.mode, &f.data).hash(&mut h);
    }
    let dir = images_dir.join(format!("browser-{:016x}", h.finish()));
    let disk = dir.join("rootfs.ext4");
    let initrd = dir.join("initrd.cpio.gz");
    let report_path = dir.join("check-report.txt");
    if dir.join(".complete").exists() {
        return Ok(BrowserImage {
            disk_bytes: std::fs::metadata(&disk).map(|m| m.len()).unwrap_or(0),
            disk,
            initrd,
            check_report: std::fs::read_to_string(&report_path).unwrap_or_default(),
            built: false,
        });
    }
    super::ensure_program("mkfs.ext4", "e2fsprogs")?;
    super::ensure_program("systemctl", "systemd")?;
    let cached = ensure_rootfs_named(ROOTFS_NAME, INCLUDE)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| VmError::io(&dir, e))?;
    let root = dir.join("tree");
    run_checked(Command::new("cp").arg("-a").arg(&cached).arg(&root))?;
    let _ = std::fs::remove_file(root.join(".complete"));

    install_modules(&root, kernel)?;
    install(&root, NETINIT_PATH, &netinit, 0o755)?;
    install(&root, AGENT_PATH, &agent, 0o755)?;
    install(&root, STREAMER_PATH, &streamer, 0o755)?;
    for lib in super::image::shared_libraries(&bins.netinit)?
        .into_iter()
        .chain(super::image::shared_libraries(&bins.agent)?)
        .chain(super::image::shared_libraries(streamer_path)?)
    {
        let dest = root.join(lib.strip_prefix("/").unwrap_or(&lib));
        if !dest.exists() {
            let data = std::fs::read(&lib).map_err(|e| VmError::io(&lib, e))?;
            install(&root, &lib.to_string_lossy(), &data, 0o755)?;
        }
    }
    install(
        &root,
        AGENT_CONFIG_PATH,
        spec.agent_config.as_bytes(),
        0o644,
    )?;
    install(
        &root,
        OAUTH_CONFIG_PATH,
        spec.oauth_config.as_bytes(),
        0o644,
    )?;
    for (unit, data) in &units {
        install(&root, &format!("/etc/systemd/system/{unit}"), data, 0o644)?;
    }
    run_checked(
        Command::new("systemctl")
            .arg(format!("--root={}", root.display()))
            .arg("enable")
            .args(UNITS)
            .args(SYSTEM_UNITS),
    )?;
    // What a VM of the fleet never needs, and what fails without its module (binfmt_misc):
    // no red FAILED lines on the console an operator reads.
    run_checked(
        Command::new("systemctl")
            .arg(format!("--root={}", root.display()))
            .arg("mask")
            .args(MASKED),
    )?;
    // The login CLIs and the browser run as this user: it cannot read the token or the
    // agent's state (issue 12).
    if !root.join("etc/passwd").exists()
        || !std::fs::read_to_string(root.join("etc/passwd"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{LOGIN_USER}:")))
    {
        run_checked(Command::new("chroot").arg(&root).args([
            "/usr/sbin/useradd",
            "--system",
            "--home-dir",
            "/var/lib/guestkit-login",
            "--shell",
            "/usr/sbin/nologin",
            LOGIN_USER,
        ]))?;
    }
    install(&root, "/etc/hostname", b"vm\n", 0o644)?;
    install(&root, "/etc/machine-id", b"", 0o444)?;
    for f in &spec.extra_files {
        install(&root, &f.path, &f.data, f.mode)?;
    }

    let check_report = check_tree(&bins.netinit, &root, kernel)?;
    std::fs::write(&report_path, &check_report).map_err(|e| VmError::io(&report_path, e))?;

    // The disk: the tree's size plus room for the VM's writes (Chromium's profile, logs).
    let used = tree_bytes(&root)?;
    let size_mib = used * 5 / 4 / (1 << 20) + 512;
    let partial = dir.join("rootfs.ext4.partial");
    run_checked(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "guestkit-root", "-d"])
            .arg(&root)
            .arg(&partial)
            .arg(format!("{size_mib}M")),
    )?;
    std::fs::rename(&partial, &disk).map_err(|e| VmError::io(&disk, e))?;
    let _ = std::fs::remove_dir_all(&root);
    write_initrd(kernel, &bins.netinit, &netinit, &initrd)?;
    std::fs::write(dir.join(".complete"), SUITE).map_err(|e| VmError::io(&dir, e))?;
    prune(images_dir, KEEP_IMAGES);
    Ok(BrowserImage {
        disk_bytes: std::fs::metadata(&disk).map(|m| m.len()).unwrap_or(0),
        disk,
        initrd,
        check_report,
        built: true,
    })
}

/// Built images kept (the golden image and the test variant, plus one); older ones go.
const KEEP_IMAGES: usize = 3;

/// Removes all but the `keep` most recent `browser-*` images (2 GB each).
fn prune(images_dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(images_dir) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("browser-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    for (_, old) in dirs.into_iter().skip(keep) {
        let _ = std::fs::remove_dir_all(old);
    }
}

/// Bytes in the tree's regular files (`du -sb` without the dependency).
fn tree_bytes(root: &Path) -> Result<u64, VmError> {
    let out = run_checked(Command::new("du").arg("-sb").arg(root))?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            VmError::Other(format!(
                "du -sb {}: unexpected output {out:?}",
                root.display()
            ))
        })
}

/// The initramfs: `/init` is guest-netinit (init mode, initramfs role), the virtio block
/// modules and the index files it resolves them with (and the loader and libraries of a
/// dynamic netinit, a developer's debug build: the shipped one is static).
fn write_initrd(
    kernel: &Kernel,
    netinit_path: &Path,
    netinit: &[u8],
    out: &Path,
) -> Result<(), VmError> {
    let io = |e| VmError::io(out, e);
    let mut w = Writer::new(Vec::new());
    for d in [
        "/",
        "/dev",
        "/proc",
        "/sys",
        "/run",
        "/sbin",
        "/newroot",
        "/lib",
        "/lib/modules",
    ] {
        w.dir(d, 0o755).map_err(io)?;
    }
    w.file(NETINIT_PATH, 0o755, netinit).map_err(io)?;
    w.symlink("/init", "sbin/guest-netinit").map_err(io)?;
    let mut made = std::collections::BTreeSet::new();
    for lib in super::image::shared_libraries(netinit_path)? {
        let mut parents: Vec<PathBuf> = lib.ancestors().skip(1).map(Path::to_path_buf).collect();
        parents.reverse();
        for p in parents {
            let name = p.display().to_string();
            if name != "/" && made.insert(name.clone()) && name != "/lib" {
                w.dir(&name, 0o755).map_err(io)?;
            }
        }
        let data = std::fs::read(&lib).map_err(|e| VmError::io(&lib, e))?;
        w.file(&lib.display().to_string(), 0o755, &data)
            .map_err(io)?;
    }
    let base = format!("/lib/modules/{}", kernel.release);
    w.dir(&base, 0o755).map_err(io)?;
    let mut dirs = std::collections::BTreeSet::new();
    for rel in INITRD_MODULES.iter().chain(MODULE_INDEXES) {
        let mut parent = Path::new(rel).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_path_buf());
            parent = p.parent();
        }
    }
    for d in &dirs {
        w.dir(&format!("{base}/{}", d.display()), 0o755)
            .map_err(io)?;
    }
    for rel in INITRD_MODULES.iter().chain(MODULE_INDEXES) {
        let src = kernel.modules_dir.join(rel);
        let data = std::fs::read(&src).map_err(|e| VmError::io(&src, e))?;
        w.file(&format!("{base}/{rel}"), 0o644, &data).map_err(io)?;
    }
    let raw = w.finish().map_err(io)?;
    let gz = super::image::gzip(&raw)?;
    std::fs::write(out, gz).map_err(io)
}

/// SHA-256 of a file, hex (`sha256sum`): the golden image is the same for every VM.
pub fn sha256(path: &Path) -> Result<String, VmError> {
    let out = run_checked(Command::new("sha256sum").arg(path))?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| VmError::Other(format!("sha256sum {}: no output", path.display())))
}
