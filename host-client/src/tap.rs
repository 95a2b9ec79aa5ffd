//! TAP devices on the host: a collision-free name per VM, and finding and removing the ones
//! whose VMM is gone (failure F9: 63 dead TAPs left behind, names cut at 15 characters).
//!
//! Names: `fc` + 13 base32 characters of SHA-256(vm id) = 15 characters, the kernel's limit
//! (IFNAMSIZ 16 with the NUL). 13 characters carry 65 bits, so two different ids get the same
//! name with probability 2^-65, and among n VMs at once the chance of any clash is about
//! n²/2^66: 1.4e-12 for 10 000 VMs, 1.4e-8 for a million. Deterministic: the controller can
//! recompute a VM's TAP name from its id after a restart.
//!
//! Stale TAPs: a TAP is listed by `/sys/class/net/*/tun_flags`; its holders are the processes
//! with a `/dev/net/tun` descriptor whose `/proc/PID/fdinfo/FD` says `iff: NAME`. A TAP nobody
//! holds is stale. Names are matched across all network namespaces (fdinfo does not say which),
//! which errs on the side of keeping a device. A TAP created ahead of its VMM (`ip tuntap add`
//! before Firecracker starts) also has no holder for a moment: limit gc to our prefix and run it
//! when no VM is being started. Removal re-attaches to the device and clears its persist flag,
//! which the kernel refuses (EBUSY) if a process attached in the meantime.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Prefix of the names [`tap_name`] makes.
pub const TAP_PREFIX: &str = "fc";
/// Longest interface name the kernel takes.
pub const IFNAMSIZ_MAX: usize = 15;

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The TAP name for a VM id: `fc` + 13 base32 characters of its SHA-256 (see the module doc
/// for the collision probability).
pub fn tap_name(vm_id: &str) -> String {
    let digest = Sha256::digest(vm_id.as_bytes());
    // the first 65 bits, 5 at a time
    let bits = u128::from_be_bytes(digest[..16].try_into().unwrap_or([0; 16]));
    let mut name = String::from(TAP_PREFIX);
    for i in 0..(IFNAMSIZ_MAX - TAP_PREFIX.len()) {
        let idx = (bits >> (128 - 5 * (i + 1))) & 0x1f;
        name.push(BASE32[idx as usize] as char);
    }
    name
}

/// A process holding a TAP open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub comm: String,
}

/// One TUN/TAP device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TapDevice {
    pub name: String,
    /// `tap` or `tun`.
    pub kind: &'static str,
    /// `tun_flags` as read (hex).
    pub flags: u32,
    pub persistent: bool,
    /// The bridge it is enslaved to (`master`), e.g. `fcbr0`.
    pub master: Option<String>,
    pub holders: Vec<Holder>,
}

impl TapDevice {
    /// Nobody holds it open.
    pub fn is_stale(&self) -> bool {
        self.holders.is_empty()
    }
}

/// What `gc` found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub devices: Vec<TapDevice>,
    /// Stale devices (matching the prefix).
    pub stale: Vec<String>,
    /// Removed (only with `apply`).
    pub removed: Vec<String>,
    /// `(name, error)` for removals that failed.
    pub failed: Vec<(String, String)>,
    pub applied: bool,
}

/// A sysfs or procfs read that failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct TapError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn ctx(path: &Path) -> impl FnOnce(io::Error) -> TapError + '_ {
    move |source| TapError {
        path: path.to_path_buf(),
        source,
    }
}

/// Every TUN/TAP device under `sys_class_net` (normally `/sys/class/net`, which shows the
/// namespace sysfs was mounted in) with its holders from `proc` (normally `/proc`).
pub fn list_taps(sys_class_net: &Path, proc: &Path) -> Result<Vec<TapDevice>, TapError> {
    let holders = tun_holders(proc);
    let mut out = Vec::new();
    for entry in fs::read_dir(sys_class_net).map_err(ctx(sys_class_net))? {
        let entry = entry.map_err(ctx(sys_class_net))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let flags_path = entry.path().join("tun_flags");
        let Ok(text) = fs::read_to_string(&flags_path) else {
            continue; // not a tun/tap device (or gone meanwhile)
        };
        let Some(flags) = parse_hex(text.trim()) else {
            continue;
        };
        let master = fs::read_link(entry.path().join("master"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let kind = if flags & libc::IFF_TAP as u32 != 0 {
            "tap"
        } else {
            "tun"
        };
        out.push(TapDevice {
            holders: holders
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, h)| h.clone())
                .collect(),
            name,
            kind,
            flags,
            persistent: flags & libc::IFF_PERSIST as u32 != 0,
            master,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn parse_hex(s: &str) -> Option<u32> {
    u32::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

/// `(interface name, holder)` for every tun descriptor of every process we can read.
/// Processes that exit or deny access while we look are skipped.
fn tun_holders(proc: &Path) -> Vec<(String, Holder)> {
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir(proc) else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(info) = fs::read_to_string(fd.path()) else {
                continue;
            };
            for line in info.lines() {
                if let Some(iff) = line.strip_prefix("iff:") {
                    let comm = fs::read_to_string(p.path().join("comm"))
                        .map(|c| c.trim().to_string())
                        .unwrap_or_default();
                    out.push((iff.trim().to_string(), Holder { pid, comm }));
                }
            }
        }
    }
    out
}

/// Lists TAPs, picks the stale ones whose name starts with `prefix`, and with `apply`
/// removes them. Dry run otherwise.
pub fn gc(
    sys_class_net: &Path,
    proc: &Path,
    prefix: &str,
    apply: bool,
) -> Result<GcReport, TapError> {
    let devices = list_taps(sys_class_net, proc)?;
    let stale: Vec<String> = devices
        .iter()
        .filter(|d| d.is_stale() && d.name.starts_with(prefix))
        .map(|d| d.name.clone())
        .collect();
    let mut report = GcReport {
        stale: stale.clone(),
        applied: apply,
        ..Default::default()
    };
    if apply {
        for d in devices.iter().filter(|d| stale.contains(&d.name)) {
            match remove_tap(&d.name, d.flags) {
                Ok(()) => report.removed.push(d.name.clone()),
                Err(e) => report.failed.push((d.name.clone(), e.to_string())),
            }
        }
    }
    report.devices = devices;
    Ok(report)
}

/// Opens `/dev/net/tun` attached to `name` in the calling thread's network namespace,
/// creating the device when it does not exist. `flags`: `IFF_TAP`/`IFF_TUN`, `IFF_NO_PI`,
/// `IFF_MULTI_QUEUE` as the device has them.
pub fn open_tun(name: &str, flags: u32) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() > IFNAMSIZ_MAX || name.contains(['/', ' ', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a valid interface name"),
        ));
    }
    // SAFETY: plain open(2) of a constant path; the result is checked.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let keep = (libc::IFF_TAP | libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE) as u32;
    req.ifr_ifru.ifru_flags = (flags & keep) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Sets or clears the persist flag of the device `fd` is attached to.
pub fn set_persist(fd: &OwnedFd, persist: bool) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes its argument by value.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETPERSIST,
            persist as libc::c_ulong,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes a persistent TAP nobody holds: attach, clear persist, close. The kernel refuses
/// the attach (EBUSY) if a VMM holds it, so a device in use is never removed.
pub fn remove_tap(name: &str, flags: u32) -> io::Result<()> {
    let fd = open_tun(name, flags)?;
    set_persist(&fd, false)?;
    drop(fd);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_prefixed_distinct_and_stable() {
        let a = tap_name("vm-0001");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("fc"));
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        assert_eq!(a, tap_name("vm-0001"));
        // a long id that the old `tap-<id>` scheme cut to the same 15 characters
        let long1 = "tap-customer-42-session-aaaa";
        let long2 = "tap-customer-42-session-bbbb";
        assert_ne!(tap_name(long1), tap_name(long2));
        let names: std::collections::HashSet<_> =
            (0..10_000).map(|i| tap_name(&format!("vm-{i}"))).collect();
        assert_eq!(names.len(), 10_000);
        // pinned: the controller recomputes names after upgrades
        assert_eq!(tap_name(""), "fc4oymiquy7qobj");
    }

    #[test]
    fn hex_flags() {
        assert_eq!(parse_hex("0x1002"), Some(0x1002));
        assert_eq!(parse_hex("zz"), None);
    }
}
