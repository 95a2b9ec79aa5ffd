//! Init mode's initramfs role: mount the real root disk and switch to it.
//!
//! The fleet boots one golden ext4 image on virtio-blk (`root=/dev/vda rw rootfstype=ext4`).
//! Firecracker's usual kernel has virtio-blk built in and boots the disk directly; Debian's
//! (and Ubuntu's generic) kernel has it as a module, so something must load it before the root
//! can be mounted. A distribution initramfs (dracut, initramfs-tools) brings a shell, udev and
//! tens of MB for that; here the same static binary that configures the network does it:
//! when init mode runs from an initramfs (`/` is rootfs/tmpfs) and the command line names a
//! `root=`, it loads the block driver and its dependencies, waits for the device node,
//! mounts it, moves `/dev` `/proc` `/sys` `/run` into it, makes it `/` and execs the real
//! init there (systemd), every step with its duration on the console. The network is then
//! configured by the root's own `guest-netinit.service`, exactly as with a built-in driver, so
//! both boot paths run the same units.
//!
//! Parameters: `root=/dev/NAME` (only device paths: there is no udev here to make
//! `/dev/disk/by-uuid`), `rootfstype=` (default ext4), `rootflags=`, `ro`/`rw` (the last one
//! wins; read-only by default, like the kernel), `guest_netinit.root_modules=` (comma list,
//! default `virtio_pci,virtio_blk`; `rd.driver.pre=` modules are loaded too), and
//! `guest_netinit.root_timeout=` (how long to wait for the device, default 30 s).

use super::{ms, Console, Level};
use guest_proto::KernelCmdline;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the root disk is mounted before it becomes `/`.
pub const NEW_ROOT: &str = "/newroot";
/// The drivers loaded by default: the virtio PCI transport (QEMU's `virtio-blk-pci`; the
/// block driver does not depend on it, it only binds through it) and virtio-blk (the
/// fleet's `/dev/vda`). Firecracker's virtio-mmio disks: `guest_netinit.root_modules=
/// virtio_mmio,virtio_blk` (its kernels usually have both built in and need no initramfs).
pub const DEFAULT_MODULES: [&str; 2] = ["virtio_pci", "virtio_blk"];
/// How long to wait for the root device by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Mounts carried over into the new root.
pub const MOVED: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];

/// What the command line asks of the root switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootParams {
    pub device: String,
    pub fstype: String,
    pub read_only: bool,
    pub options: String,
    pub modules: Vec<String>,
    pub timeout: Duration,
}

/// `root=` names something this role cannot find, or a setting is malformed. The message
/// names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct RootParamError {
    pub param: String,
    pub message: String,
}

impl RootParams {
    /// `None` without `root=` (the initramfs is the root: nothing to switch to).
    pub fn from_cmdline(cmd: &KernelCmdline) -> Result<Option<RootParams>, RootParamError> {
        let err = |param: &str, message: String| RootParamError {
            param: param.into(),
            message,
        };
        let mut device = None;
        let mut p = RootParams {
            device: String::new(),
            fstype: "ext4".into(),
            read_only: true,
            options: String::new(),
            modules: DEFAULT_MODULES.iter().map(|m| m.to_string()).collect(),
            timeout: DEFAULT_TIMEOUT,
        };
        for (k, v) in &cmd.params {
            let value = v.as_deref().unwrap_or("");
            match (k.as_str(), v) {
                ("root", Some(_)) => device = Some(value.to_string()),
                ("rootfstype", Some(_)) if !value.is_empty() => p.fstype = value.into(),
                ("rootflags", Some(_)) => p.options = value.into(),
                ("ro", None) => p.read_only = true,
                ("rw", None) => p.read_only = false,
                ("guest_netinit.root_modules", Some(_)) => {
                    p.modules = value
                        .split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .map(crate::modules::normalise)
                        .collect();
                }
                ("guest_netinit.root_timeout", Some(_)) => {
                    p.timeout = crate::cli::parse_duration(value)
                        .map_err(|e| err("guest_netinit.root_timeout", e))?;
                }
                _ => {}
            }
        }
        let Some(device) = device else {
            return Ok(None);
        };
        if !device.starts_with("/dev/") || device.contains("/../") || device.len() <= 5 {
            return Err(err(
                "root",
                format!(
                    "`{device}`: give the device path (e.g. root=/dev/vda); UUID=, LABEL= and \
                     PARTUUID= need udev, which guest-netinit's initramfs role does without"
                ),
            ));
        }
        p.device = device;
        Ok(Some(p))
    }

    /// `mount(2)` flags.
    pub fn flags(&self) -> libc::c_ulong {
        if self.read_only {
            libc::MS_RDONLY
        } else {
            0
        }
    }
}

/// Whether `/` is the initramfs (rootfs, ramfs or tmpfs): only then is there a root to
/// switch to. On a disk-booted system (`init=/sbin/guest-netinit` with a built-in driver),
/// `root=` was already mounted by the kernel.
pub fn in_initramfs() -> bool {
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(root) = CString::new("/") else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; the path is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(root.as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as i64;
    kind == RAMFS_MAGIC || kind == TMPFS_MAGIC
}

/// Loads the driver, mounts the root, switches to it and execs the next init; on a failure
/// says what and powers off (as for a missing next init). Never returns.
pub(super) fn switch(
    root: &RootParams,
    params: &super::InitParams,
    init_args: &[String],
    con: &mut Console,
) -> ! {
    let t0 = Instant::now();
    super::load_modules(&root.modules, con);
    let t = Instant::now();
    match wait_for_device(&root.device, root.timeout) {
        Ok(()) => con.say(
            Level::Info,
            &format!("root: {} appeared ({})", root.device, ms(t)),
        ),
        Err(waited) => fail(
            con,
            &format!(
                "root: {} did not appear within {:.1} s (modules {}: is the disk attached, and \
                 its driver in the initramfs?)",
                root.device,
                waited.as_secs_f64(),
                root.modules.join(",")
            ),
        ),
    }
    let t = Instant::now();
    if let Err(e) = mount_root(root) {
        fail(
            con,
            &format!(
                "root: mounting {} ({}, {}) on {NEW_ROOT}: {e}",
                root.device,
                root.fstype,
                if root.read_only { "ro" } else { "rw" }
            ),
        );
    }
    con.say(
        Level::Info,
        &format!(
            "root: mounted {} ({}, {}) ({})",
            root.device,
            root.fstype,
            if root.read_only { "ro" } else { "rw" },
            ms(t)
        ),
    );
    let candidates = params.next_candidates();
    let next_present = |c: &str| {
        Path::new(NEW_ROOT)
            .join(c.trim_start_matches('/'))
            .symlink_metadata()
            .is_ok()
    };
    if super::resolve_next(&candidates, next_present).is_none() {
        fail(
            con,
            &format!(
                "root: no init on {}: {} not found there (set guest_netinit.next=)",
                root.device,
                candidates.join(", ")
            ),
        );
    }
    let t = Instant::now();
    let freed = free_initramfs();
    if let Err(e) = enter(Path::new(NEW_ROOT)) {
        fail(con, &format!("root: switching to {}: {e}", root.device));
    }
    con.say(
        Level::Info,
        &format!(
            "root: switched to {} (initramfs freed: {freed} files; {}; {} since init started)",
            root.device,
            ms(t),
            ms(t0)
        ),
    );
    super::exec_next(params, init_args, con)
}

fn fail(con: &mut Console, msg: &str) -> ! {
    con.say(Level::Error, msg);
    super::power_off(con)
}

/// Polls for the device node (devtmpfs makes it when the driver binds the disk); `Err` with
/// the time waited.
fn wait_for_device(device: &str, timeout: Duration) -> Result<(), Duration> {
    let start = Instant::now();
    loop {
        if Path::new(device).exists() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn cstr(s: &str) -> std::io::Result<CString> {
    CString::new(s).map_err(|_| std::io::ErrorKind::InvalidInput.into())
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn mount_root(root: &RootParams) -> std::io::Result<()> {
    std::fs::create_dir_all(NEW_ROOT)?;
    let (dev, target, fs, data) = (
        cstr(&root.device)?,
        cstr(NEW_ROOT)?,
        cstr(&root.fstype)?,
        cstr(&root.options)?,
    );
    // SAFETY: valid C strings that outlive the call.
    check(unsafe {
        libc::mount(
            dev.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            root.flags(),
            data.as_ptr().cast(),
        )
    })
}

/// Moves the API filesystems into `new_root`, makes it `/` (`MS_MOVE` + `chroot`, what
/// `switch_root` does: `pivot_root` is not allowed on the initramfs) and changes into it.
fn enter(new_root: &Path) -> std::io::Result<()> {
    for m in MOVED {
        let target = new_root.join(m.trim_start_matches('/'));
        let _ = std::fs::create_dir_all(&target);
        let (src, dst) = (cstr(m)?, cstr(&target.to_string_lossy())?);
        // SAFETY: valid C strings; MS_MOVE takes no fstype or data.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(std::io::Error::new(e.kind(), format!("moving {m}: {e}")));
        }
    }
    std::env::set_current_dir(new_root)?;
    let (dot, slash) = (cstr(".")?, cstr("/")?);
    // SAFETY: valid C strings.
    check(unsafe {
        libc::mount(
            dot.as_ptr(),
            slash.as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        )
    })?;
    // SAFETY: valid C string.
    check(unsafe { libc::chroot(dot.as_ptr()) })?;
    std::env::set_current_dir("/")
}

/// Deletes the initramfs's files (they stay in RAM for the VM's life otherwise), staying on
/// its device: mount points (the new root, `/dev`, ...) are skipped. Returns how many went.
fn free_initramfs() -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(root_dev) = std::fs::symlink_metadata("/").map(|m| m.dev()) else {
        return 0;
    };
    fn walk(dir: &Path, dev: u64, count: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path: PathBuf = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.dev() != dev {
                continue;
            }
            if meta.is_dir() {
                walk(&path, dev, count);
                if std::fs::remove_dir(&path).is_ok() {
                    *count += 1;
                }
            } else if std::fs::remove_file(&path).is_ok() {
                *count += 1;
            }
        }
    }
    let mut count = 0;
    walk(Path::new("/"), root_dev, &mut count);
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Option<RootParams>, RootParamError> {
        RootParams::from_cmdline(&KernelCmdline::parse(text))
    }

    #[test]
    fn no_root_means_no_switch() {
        assert_eq!(p("console=ttyS0 ip=dhcp").unwrap(), None);
    }

    #[test]
    fn the_fleets_root_line() {
        let r = p("console=ttyS0 root=/dev/vda rw rootfstype=ext4")
            .unwrap()
            .unwrap();
        assert_eq!(r.device, "/dev/vda");
        assert_eq!(r.fstype, "ext4");
        assert!(!r.read_only);
        assert_eq!(r.flags(), 0);
        assert_eq!(
            r.modules,
            vec!["virtio_pci".to_string(), "virtio_blk".to_string()]
        );
        assert_eq!(r.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn read_only_by_default_and_the_last_of_ro_rw_wins() {
        assert!(p("root=/dev/vda").unwrap().unwrap().read_only);
        assert!(p("root=/dev/vda rw ro").unwrap().unwrap().read_only);
        assert!(!p("root=/dev/vda ro rw").unwrap().unwrap().read_only);
        assert_eq!(
            p("root=/dev/vda").unwrap().unwrap().flags(),
            libc::MS_RDONLY
        );
    }

    #[test]
    fn modules_timeout_and_flags_are_settable() {
        let r = p("root=/dev/sda rootflags=noatime guest_netinit.root_modules=virtio-scsi,sd_mod guest_netinit.root_timeout=5s")
            .unwrap()
            .unwrap();
        assert_eq!(r.options, "noatime");
        assert_eq!(
            r.modules,
            vec!["virtio_scsi".to_string(), "sd_mod".to_string()]
        );
        assert_eq!(r.timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (text, param) in [
            ("root=UUID=1234", "root"),
            ("root=LABEL=rootfs", "root"),
            ("root=vda", "root"),
            ("root=/dev/", "root"),
            ("root=", "root"),
            (
                "root=/dev/vda guest_netinit.root_timeout=soon",
                "guest_netinit.root_timeout",
            ),
        ] {
            let e = p(text).unwrap_err();
            assert_eq!(e.param, param, "{text}: {e}");
            assert!(e.to_string().starts_with(&format!("{param}: ")), "{e}");
        }
    }
}
