//! The VM's virtio-vsock device, as a Firecracker host has it: rust-vmm's `vhost-device-vsock`
//! (a vhost-user backend QEMU attaches with `vhost-user-vsock-pci`) exposing the guest on one
//! unix socket with Firecracker's hybrid protocol (`CONNECT <port>` → `OK <n>`), and delivering
//! the guest's connections to the host (CID 2) on `<uds_path>_<port>`.
//!
//! These machines have no `/dev/vhost-vsock`, so this is the only vsock a VM test can have; it
//! is also the closest to production: host-client talks to it exactly as to Firecracker.

use super::VmError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Env var naming the `vhost-device-vsock` binary (`cargo xtask test` installs and sets it).
pub const BINARY_ENV: &str = "GUESTKIT_VHOST_VSOCK";

/// The guest's CID in every test VM (each VM has its own device, so they never collide).
pub const GUEST_CID: u32 = 3;

/// The agent's vsock port (guest side) and the port it pushes readiness to (host side).
pub const AGENT_PORT: u32 = 8080;
pub const READY_PORT: u32 = 8081;

/// One running device, killed on drop.
#[derive(Debug)]
pub struct VsockDevice {
    child: Child,
    /// QEMU's vhost-user control socket.
    pub vhost_socket: PathBuf,
    /// The host side's hybrid-vsock socket (Firecracker's `uds_path`).
    pub uds_path: PathBuf,
}

/// The device binary: `GUESTKIT_VHOST_VSOCK`, else the copy `cargo xtask test` caches.
pub fn binary() -> Result<PathBuf, VmError> {
    if let Some(p) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let cached = super::kernel::cache_dir().join("tools");
    let found = std::fs::read_dir(&cached).ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| d.path().join("bin/vhost-device-vsock"))
            .find(|p| p.is_file())
    });
    found.ok_or_else(|| {
        VmError::Other(format!(
            "vhost-device-vsock not found: set {BINARY_ENV} or run `cargo xtask test`, which \
             installs it into {}",
            cached.display()
        ))
    })
}

impl VsockDevice {
    /// Starts the device with its sockets in `dir` and waits until QEMU can attach.
    pub fn start(dir: &Path) -> Result<Self, VmError> {
        let bin = binary()?;
        let vhost_socket = dir.join("vhost-vsock.sock");
        let uds_path = dir.join("v.sock");
        let log = dir.join("vhost-device-vsock.log");
        let log_file = std::fs::File::create(&log).map_err(|e| VmError::io(&log, e))?;
        let err_file = log_file.try_clone().map_err(|e| VmError::io(&log, e))?;
        let mut child = Command::new(&bin)
            .arg("--guest-cid")
            .arg(GUEST_CID.to_string())
            .arg("--socket")
            .arg(&vhost_socket)
            .arg("--uds-path")
            .arg(&uds_path)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| VmError::io(&bin, e))?;
        let end = Instant::now() + Duration::from_secs(20);
        while !vhost_socket.exists() {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(VmError::Other(format!(
                    "vhost-device-vsock exited ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )));
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VmError::Other(format!(
                    "vhost-device-vsock made no socket at {} in 20 s",
                    vhost_socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Self {
            child,
            vhost_socket,
            uds_path,
        })
    }

    /// The agent over the hybrid socket, as host-client and guestctl spell it.
    pub fn agent_addr(&self) -> host_client::AgentAddr {
        format!("vsock:{}:{AGENT_PORT}", self.uds_path.display())
            .parse()
            .unwrap_or_else(|e| panic!("vsock address of {}: {e}", self.uds_path.display()))
    }

    /// Where the guest's pushed readiness line arrives (`<uds_path>_<port>`).
    pub fn ready_socket(&self) -> PathBuf {
        host_client::ready_push::ready_socket_path(&self.uds_path, READY_PORT)
    }
}

impl Drop for VsockDevice {
    fn drop(&mut self) {
        // Our own child, by pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
