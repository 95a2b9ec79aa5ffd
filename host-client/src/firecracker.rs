//! A whole Firecracker VM config (`--config-file`) from typed values: `boot-source` and
//! `network-interfaces` (from [`BootArgs::firecracker`]), `machine-config`, `drives` and
//! `vsock`, with Firecracker's API field names.
//!
//! The old fleet wrote these by hand per VM; the combinations that broke VMs are refused here
//! with an error naming the field: two VMs with one vsock CID (the second cannot start its
//! device), a CID the hypervisor reserves, 0 or too many vCPUs, less memory than the image
//! needs (failure F7), no root drive or two.

use crate::bootargs::{BootArgs, BootArgsError};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Firecracker's upper bound of vCPUs.
pub const MAX_VCPUS: u8 = 32;
/// The smallest guest CID (0, 1 and 2 are the hypervisor, local and host).
pub const MIN_GUEST_CID: u32 = 3;

/// `machine-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: u32,
}

/// One entry of `drives`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: String,
    pub is_root_device: bool,
    pub is_read_only: bool,
}

/// `vsock`: the guest's context id and the host unix socket of its device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vsock {
    pub guest_cid: u32,
    pub uds_path: String,
}

/// Everything one VM's config file holds.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub boot_args: BootArgs,
    pub kernel_image_path: String,
    /// The host TAP (`network-interfaces` only when the boot args have a client address).
    pub host_dev_name: String,
    pub machine: MachineConfig,
    pub drives: Vec<Drive>,
    pub vsock: Option<Vsock>,
    /// What the image needs to boot (the caller knows its image): `mem_size_mib` below it is
    /// refused.
    pub min_mem_mib: Option<u32>,
}

/// A config Firecracker would refuse, or that would boot a VM that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    BootArgs(#[from] BootArgsError),
    #[error("machine-config.vcpu_count: {0} is not 1-{MAX_VCPUS}")]
    VcpuCount(u8),
    #[error("machine-config.mem_size_mib: {got} MiB is below the {need} MiB the image needs")]
    MemoryTooSmall { got: u32, need: u32 },
    #[error("drives: no drive has is_root_device = true (the VM has no root filesystem)")]
    NoRootDrive,
    #[error("drives: `{first}` and `{second}` are both is_root_device = true")]
    TwoRootDrives { first: String, second: String },
    #[error("drives[{index}].{field}: {why}")]
    BadDrive {
        index: usize,
        field: &'static str,
        why: String,
    },
    #[error("vsock.guest_cid: {0} is reserved (0 hypervisor, 1 local, 2 host): a guest CID is 3 or more")]
    ReservedCid(u32),
    #[error("vsock.uds_path: {0}")]
    BadUdsPath(String),
    #[error("vsock.guest_cid: {cid} is used by both `{first}` and `{second}`")]
    DuplicateCid {
        cid: u32,
        first: String,
        second: String,
    },
}

impl VmConfig {
    /// Checks every field on its own (not against other VMs: see [`check_cids`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.machine;
        if m.vcpu_count == 0 || m.vcpu_count > MAX_VCPUS {
            return Err(ConfigError::VcpuCount(m.vcpu_count));
        }
        if let Some(need) = self.min_mem_mib {
            if m.mem_size_mib < need {
                return Err(ConfigError::MemoryTooSmall {
                    got: m.mem_size_mib,
                    need,
                });
            }
        }
        let mut root: Option<&Drive> = None;
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (index, d) in self.drives.iter().enumerate() {
            let bad = |field, why: String| ConfigError::BadDrive { index, field, why };
            if d.drive_id.is_empty()
                || !d
                    .drive_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(bad(
                    "drive_id",
                    format!("`{}` is not 1+ of A-Z a-z 0-9 _", d.drive_id),
                ));
            }
            if let Some(other) = ids.insert(&d.drive_id, index) {
                return Err(bad(
                    "drive_id",
                    format!("`{}` is also drives[{other}]'s id", d.drive_id),
                ));
            }
            if d.path_on_host.is_empty() || d.path_on_host.chars().any(char::is_control) {
                return Err(bad(
                    "path_on_host",
                    "empty or holds control characters".into(),
                ));
            }
            if d.is_root_device {
                if let Some(first) = root {
                    return Err(ConfigError::TwoRootDrives {
                        first: first.drive_id.clone(),
                        second: d.drive_id.clone(),
                    });
                }
                root = Some(d);
            }
        }
        if root.is_none() {
            return Err(ConfigError::NoRootDrive);
        }
        if let Some(v) = &self.vsock {
            if v.guest_cid < MIN_GUEST_CID || v.guest_cid == u32::MAX {
                return Err(ConfigError::ReservedCid(v.guest_cid));
            }
            if !v.uds_path.starts_with('/') || v.uds_path.chars().any(char::is_control) {
                return Err(ConfigError::BadUdsPath(format!(
                    "`{}` must be an absolute path without control characters",
                    v.uds_path.escape_debug()
                )));
            }
            // sun_path holds 108 bytes, and the host listens on `<uds_path>_<port>` too
            if v.uds_path.len() > 96 {
                return Err(ConfigError::BadUdsPath(format!(
                    "{} bytes: at most 96 (a unix socket path holds 108, and `_<port>` is added for guest-initiated connections)",
                    v.uds_path.len()
                )));
            }
        }
        Ok(())
    }

    /// The config file: one JSON document Firecracker's `--config-file` accepts.
    pub fn to_json(&self) -> Result<Value, ConfigError> {
        self.validate()?;
        let mut cfg = self
            .boot_args
            .firecracker(&self.kernel_image_path, &self.host_dev_name)?;
        cfg["machine-config"] = json!(self.machine);
        cfg["drives"] = json!(self.drives);
        if let Some(v) = &self.vsock {
            cfg["vsock"] = json!(v);
        }
        Ok(cfg)
    }
}

/// Refuses two VMs (named by the caller) with the same vsock CID: Firecracker would start
/// both, and the second VM's vsock device would fail to come up on a host with vhost-vsock.
pub fn check_cids<'a>(
    vms: impl IntoIterator<Item = (&'a str, &'a VmConfig)>,
) -> Result<(), ConfigError> {
    let mut seen: HashMap<u32, &str> = HashMap::new();
    for (name, vm) in vms {
        if let Some(v) = &vm.vsock {
            if let Some(first) = seen.insert(v.guest_cid, name) {
                return Err(ConfigError::DuplicateCid {
                    cid: v.guest_cid,
                    first: first.to_string(),
                    second: name.to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "firecracker_tests.rs"]
mod tests;
