//! Real microVMs on this machine (DESIGN.md §7, issue 5): Debian's cloud kernel, an initramfs
//! holding guestkit, QEMU on a TAP in a test namespace's bridge, host-client waiting.
//!
//! Shared by the VM tests (`tests/tests/vm_*.rs`) and by `cargo xtask image|demo|bench boot`:
//! - [`kernel`]: fetch and unpack the kernel once into `<target>/vm-cache/`;
//! - [`cpio`], [`image`]: the initramfs and its fault variants;
//! - [`qemu`]: one QEMU process, killed on drop;
//! - [`boot`]: namespace + bridge + TAP, boot, wait with host-client.

pub mod boot;
pub mod browser_flow;
pub mod browser_image;
pub mod busybox;
pub mod cpio;
pub mod fixture;
pub mod forward;
pub mod image;
pub mod kernel;
pub mod provider;
pub mod qemu;
pub mod systemd_image;
pub mod vsock;

pub use boot::{cmdline, default_boot_args, BootReport, BootSpec, Vm, VmNet, GUEST_IP};
pub use image::{Binaries, ExtraFile, ImageInfo, InitramfsSpec};
pub use kernel::Kernel;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What went wrong preparing or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Other(String),
}

impl VmError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Runs `cmd` (stdin closed) and returns its stdout; an error carries its stderr.
pub fn run_checked(cmd: &mut Command) -> Result<String, VmError> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Other(format!("cannot start {shown}: {e}")))?;
    if !out.status.success() {
        return Err(VmError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Installs Debian `package` with apt when `program` is not on PATH (a fresh CI machine),
/// once, under a lock shared by the test processes (dpkg allows one apt at a time).
pub fn ensure_program(program: &str, package: &str) -> Result<(), VmError> {
    if on_path(program) {
        return Ok(());
    }
    let dir = kernel::cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| VmError::io(&dir, e))?;
    let _lock = kernel::Lock::take(&dir.join(".apt-lock"))?;
    if on_path(program) {
        return Ok(());
    }
    eprintln!("vm: {program} missing: apt-get install {package}");
    let install = || {
        run_checked(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["-q", "install", "-y", "--no-install-recommends", package]),
        )
    };
    if install().is_err() {
        run_checked(Command::new("apt-get").args(["-q", "update"]))?;
        install()?;
    }
    if !on_path(program) {
        return Err(VmError::Other(format!(
            "apt-get installed {package} but {program} is still not on PATH"
        )));
    }
    Ok(())
}

/// `<target>/vm-images`: where built images are kept between runs.
pub fn images_dir() -> PathBuf {
    crate::bins::target_dir().join("vm-images")
}
