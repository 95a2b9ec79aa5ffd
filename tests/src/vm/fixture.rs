//! What a VM test needs in one call: the kernel (cached), an image variant built into the
//! test's temp dir from the binaries under test, and a booted VM whose console log is kept
//! in that dir. Everything is removed when the [`TestVm`] drops (QEMU first, then the
//! namespace, then the files).

use super::boot::{BootSpec, Vm, DEFAULT_MEMORY_MIB};
use super::image::{self, Binaries, InitramfsSpec};
use super::kernel::{self, Kernel};
use crate::bins::search_dirs;
use std::path::PathBuf;
use std::time::SystemTime;
use tempfile::TempDir;

/// Long enough for a TCG boot on a loaded 2-core CI machine; a healthy boot takes ~5 s idle.
/// Not a timed assert: a VM that fails is diagnosed from its console long before this.
pub const TEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(240);

/// The cargo profile of the agent the images ship (`cargo xtask image` builds it: release
/// without LTO, static), whose build dir is searched too.
pub const AGENT_PROFILE: &str = "vmagent";

/// The newest `name` among the binary search dirs and the static and image-agent build dirs:
/// `cargo xtask test` rebuilds the debug binaries every run, while another build may be older.
fn newest(name: &str) -> PathBuf {
    let mut dirs = search_dirs();
    let cross = crate::bins::target_dir().join("x86_64-unknown-linux-gnu");
    dirs.push(cross.join("static"));
    dirs.push(cross.join(AGENT_PROFILE));
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for dir in dirs {
        let path = dir.join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _)| mtime > *t) {
            best = Some((mtime, path));
        }
    }
    match best {
        Some((_, p)) => p,
        // bin() panics with the full explanation.
        None => crate::bins::bin(name),
    }
}

/// Env vars that name the binary to put in the image instead of the built one (to boot a
/// candidate build without replacing the workspace's).
pub const NETINIT_OVERRIDE_ENV: &str = "GUESTKIT_VM_NETINIT";
pub const AGENT_OVERRIDE_ENV: &str = "GUESTKIT_VM_AGENT";
pub const STREAMER_OVERRIDE_ENV: &str = "GUESTKIT_VM_STREAMER";

/// The binaries under test (static when built so; a dynamic one brings its libraries): the
/// first guest-netinit of the search dirs, the newest guest-agent and guest-stream.
pub fn binaries() -> Binaries {
    let pick = |env: &str, name: &str| match std::env::var_os(env) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => newest(name),
    };
    let netinit = match std::env::var_os(NETINIT_OVERRIDE_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        // `cargo xtask test` rebuilds the static netinit first in GUESTKIT_BIN_DIR: the
        // binary that ships is the one PID 1 runs.
        _ => crate::bins::bin("guest-netinit"),
    };
    Binaries {
        netinit,
        agent: pick(AGENT_OVERRIDE_ENV, "guest-agent"),
        streamer: Some(pick(STREAMER_OVERRIDE_ENV, "guest-stream")),
    }
}

/// The cached kernel; panics with the reason when it cannot be fetched.
pub fn kernel() -> Kernel {
    kernel::ensure().unwrap_or_else(|e| panic!("guest kernel: {e}"))
}

/// A booted VM in a test, with its work dir (image, console log).
#[derive(Debug)]
pub struct TestVm {
    // Drop order: the VM (QEMU, then namespace), then the files.
    pub vm: Vm,
    pub cmdline: String,
    pub dir: TempDir,
}

impl TestVm {
    pub fn console_path(&self) -> PathBuf {
        self.dir.path().join("console.log")
    }
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct TestBoot {
    pub image: InitramfsSpec,
    pub cmdline: String,
    pub memory_mib: u32,
    pub nic: bool,
    /// A virtio-vsock device ([`super::vsock`]).
    pub vsock: bool,
}

impl TestBoot {
    /// The healthy image and command line.
    pub fn healthy() -> Self {
        Self {
            image: InitramfsSpec::default(),
            cmdline: super::boot::cmdline(&super::boot::default_boot_args(), &[])
                .unwrap_or_else(|e| panic!("{e}")),
            memory_mib: DEFAULT_MEMORY_MIB,
            nic: true,
            vsock: false,
        }
    }

    /// Builds the image from the binaries under test into a fresh temp dir and boots it.
    pub fn boot(&self) -> TestVm {
        self.boot_with(&binaries())
    }

    /// [`TestBoot::boot`] with other binaries in the image.
    pub fn boot_with(&self, bins: &Binaries) -> TestVm {
        let dir = tempfile::Builder::new()
            .prefix("guestkit-vm-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let kernel = kernel();
        let initrd = dir.path().join("initramfs.cpio.gz");
        image::build(&kernel, bins, &self.image, &initrd)
            .unwrap_or_else(|e| panic!("building the image: {e}"));
        let spec = BootSpec {
            kernel,
            initrd,
            cmdline: self.cmdline.clone(),
            memory_mib: self.memory_mib,
            cpus: 1,
            disk: None,
            nic: self.nic,
            console: dir.path().join("console.log"),
            vsock: self.vsock,
            keep_after_exit: false,
        };
        let vm = Vm::boot(&spec).unwrap_or_else(|e| panic!("starting QEMU: {e}"));
        TestVm {
            vm,
            cmdline: self.cmdline.clone(),
            dir,
        }
    }
}

/// Builds the systemd image (from the cached debootstrap tree) into a fresh temp dir with
/// `agent_config`, and boots it with the systemd command line.
pub fn boot_systemd(agent_config: &str) -> (TestVm, super::systemd_image::SystemdImage) {
    let dir = tempfile::Builder::new()
        .prefix("guestkit-vm-systemd-")
        .tempdir()
        .unwrap_or_else(|e| panic!("temp dir: {e}"));
    let kernel = kernel();
    let initrd = dir.path().join("systemd.cpio.gz");
    let units = crate::bins::workspace_root().join("systemd-units");
    let image = super::systemd_image::build(
        &kernel,
        &binaries(),
        agent_config,
        &units,
        dir.path(),
        &initrd,
    )
    .unwrap_or_else(|e| panic!("building the systemd image: {e}"));
    // The unpacked tree is packed now: free the disk before booting.
    let _ = std::fs::remove_dir_all(dir.path().join("rootfs"));
    let cmdline = super::boot::systemd_boot_args()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = BootSpec {
        kernel,
        initrd,
        cmdline: cmdline.clone(),
        memory_mib: super::systemd_image::MEMORY_MIB,
        cpus: 1,
        disk: None,
        nic: true,
        console: dir.path().join("console.log"),
        vsock: false,
        keep_after_exit: false,
    };
    let vm = Vm::boot(&spec).unwrap_or_else(|e| panic!("starting QEMU: {e}"));
    (TestVm { vm, cmdline, dir }, image)
}

/// The browser image's boot args: [`super::boot::systemd_boot_args`] (console, `ip=`, the
/// test token's hash) plus the root disk (`root=/dev/vda rw rootfstype=ext4`) and `extra`
/// per-VM settings.
pub fn browser_boot_args(extra: &[(&str, &str)]) -> host_client::BootArgs {
    let mut args = super::boot::systemd_boot_args()
        .root("/dev/vda")
        .extra("rw", None)
        .extra("rootfstype", Some("ext4".into()));
    for (k, v) in extra {
        args = args.extra(*k, Some((*v).into()));
    }
    args
}

/// Builds (or takes from the cache) the browser image for `spec` and boots it with `args`:
/// the ext4 disk on virtio-blk (`snapshot=on`: the image file is never written), the small
/// initramfs that switches to it, 2 GiB and 2 vCPUs.
pub fn boot_browser(
    spec: &super::browser_image::BrowserImageSpec,
    args: &host_client::BootArgs,
) -> (TestVm, super::browser_image::BrowserImage) {
    let kernel = kernel();
    let units = crate::bins::workspace_root().join("systemd-units");
    let image =
        super::browser_image::build(&kernel, &binaries(), &units, spec, &super::images_dir())
            .unwrap_or_else(|e| panic!("building the browser image: {e}"));
    let t = boot_browser_image(&image, args);
    (t, image)
}

/// Boots an already built browser image with `args` (every VM of a fleet boots the same file).
pub fn boot_browser_image(
    image: &super::browser_image::BrowserImage,
    args: &host_client::BootArgs,
) -> TestVm {
    let dir = tempfile::Builder::new()
        .prefix("guestkit-vm-browser-")
        .tempdir()
        .unwrap_or_else(|e| panic!("temp dir: {e}"));
    let cmdline = args.build().unwrap_or_else(|e| panic!("{e}"));
    let spec = BootSpec {
        kernel: kernel(),
        initrd: image.initrd.clone(),
        cmdline: cmdline.clone(),
        memory_mib: super::browser_image::MEMORY_MIB,
        cpus: super::browser_image::CPUS,
        disk: Some(image.disk.clone()),
        nic: true,
        console: dir.path().join("console.log"),
        vsock: false,
        keep_after_exit: false,
    };
    let vm = Vm::boot(&spec).unwrap_or_else(|e| panic!("starting QEMU: {e}"));
    TestVm { vm, cmdline, dir }
}
