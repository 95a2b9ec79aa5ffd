//! Tools the tests need that Debian does not package, built from crates.io once and cached
//! under `target/vm-cache/tools` (a fresh clone pays for them once, a warm one never).
//!
//! rust-vmm's `vhost-device-vsock` is the virtio-vsock device of the VM tests: these machines
//! have no `/dev/vhost-vsock`, and it speaks exactly Firecracker's hybrid vsock protocol on its
//! unix socket (`CONNECT <port>` / `OK <n>`, guest connections to `<uds_path>_<port>`), so the
//! tests drive the agent the way a Firecracker host does.

use crate::sh::{banner, cargo, run, target_dir};
use anyhow::{bail, Result};
use std::path::PathBuf;

/// The pinned version: a new release is a deliberate change.
pub const VHOST_DEVICE_VSOCK: &str = "0.3.0";

/// Env var that tells the VM tests where the device binary is.
pub const VHOST_VSOCK_ENV: &str = "GUESTKIT_VHOST_VSOCK";

/// Installs `vhost-device-vsock` (pinned, `--locked`) unless that version is cached; returns
/// the binary's path.
pub fn vhost_device_vsock() -> Result<PathBuf> {
    let root = target_dir()
        .join("vm-cache/tools")
        .join(format!("vhost-device-vsock-{VHOST_DEVICE_VSOCK}"));
    let bin = root.join("bin/vhost-device-vsock");
    if bin.exists() {
        println!(
            "vhost-device-vsock {VHOST_DEVICE_VSOCK}: cached ({})",
            bin.display()
        );
        return Ok(bin);
    }
    banner(&format!(
        "vhost-device-vsock {VHOST_DEVICE_VSOCK} (cargo install, once)"
    ));
    run(cargo()
        .args([
            "install",
            "--locked",
            "--version",
            VHOST_DEVICE_VSOCK,
            "--root",
        ])
        .arg(&root)
        .arg("vhost-device-vsock"))?;
    if !bin.exists() {
        bail!("cargo install finished but {} is missing", bin.display());
    }
    Ok(bin)
}
