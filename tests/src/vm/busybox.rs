//! A VM guestkit did not write: Debian's kernel with a busybox initramfs whose `/init` is a
//! shell script like the old fleet's (insmod the NIC driver, `ip link set eth0 up`, udhcpc),
//! to capture real consoles of boots whose network never came up (issue 13: `guestctl
//! diagnose` must recognise them without any `GUESTKIT:` line).
//!
//! No namespace and no TAP: these VMs have no NIC (`-nic none`), or nothing to talk to.
//! QEMU runs under TCG; the script ends with `poweroff -f`, so the boot ends by itself.

use super::cpio::Writer;
use super::kernel::Kernel;
use super::qemu::{QemuSpec, QEMU};
use super::VmError;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's statically linked busybox (package `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// The applets the scripts use, linked to busybox in `/bin`.
const APPLETS: &[&str] = &[
    "sh", "mount", "echo", "insmod", "modprobe", "ip", "ifconfig", "udhcpc", "ping", "sleep",
    "poweroff", "uname", "cat", "ls",
];

/// Installs `busybox-static` when missing, and refuses a dynamically linked busybox (the
/// initramfs has no libc).
pub fn ensure_busybox() -> Result<PathBuf, VmError> {
    if !Path::new(BUSYBOX).exists() {
        super::ensure_program("busybox", "busybox-static")?;
    }
    let bin = std::fs::read(BUSYBOX).map_err(|e| VmError::io(Path::new(BUSYBOX), e))?;
    let head = &bin[..bin.len().min(8192)];
    if head.windows(7).any(|w| w == b"ld-linu") {
        return Err(VmError::Other(format!(
            "{BUSYBOX} is dynamically linked (Debian package busybox): install busybox-static"
        )));
    }
    Ok(PathBuf::from(BUSYBOX))
}

/// An initramfs: busybox, its applets, `/init` = `script`.
pub fn initramfs(script: &str) -> Result<Vec<u8>, VmError> {
    let busybox = ensure_busybox()?;
    let bin = std::fs::read(&busybox).map_err(|e| VmError::io(&busybox, e))?;
    let io = |e| VmError::io(Path::new("<cpio>"), e);
    let mut w = Writer::new(Vec::new());
    w.dir("/", 0o755).map_err(io)?;
    for d in [
        "/bin",
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/lib",
        "/lib/modules",
    ] {
        w.dir(d, 0o755).map_err(io)?;
    }
    w.char_dev("/dev/console", 0o600, 5, 1).map_err(io)?;
    w.file("/bin/busybox", 0o755, &bin).map_err(io)?;
    for a in APPLETS {
        w.symlink(&format!("/bin/{a}"), "busybox").map_err(io)?;
    }
    w.file("/init", 0o755, script.as_bytes()).map_err(io)?;
    w.finish().map_err(io)
}

/// The old fleet's network steps, as its golden images ran them from a shell init: load the
/// NIC driver from the image's module tree (empty here, as in failure F1), bring eth0 up
/// (there is no NIC), give it the address and route, ask DHCP (on `lo`, where no server
/// answers: udhcpc gives up), then ping the controller (no route). (busybox-static's wget
/// segfaults resolving in an initramfs without /etc, hence ping.)
pub const FLEET_SCRIPT: &str = r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "fleet-init: loading the NIC driver"
insmod /lib/modules/$(uname -r)/kernel/drivers/net/virtio_net.ko
modprobe virtio_net
echo "fleet-init: configuring eth0"
ip link set eth0 up
ip addr add 192.168.100.9/24 dev eth0
ip route add default via 192.168.100.1
ifconfig eth0 up
echo "fleet-init: asking DHCP"
ip link set lo up
udhcpc -i lo -n -q -t 2 -T 1 -s /bin/true
echo "fleet-init: registering with the controller"
ping -c 1 -W 1 192.168.100.1
echo "fleet-init: done"
poweroff -f
"#;

/// A shell init that reaches userspace, never touches the network and says nothing about it:
/// the console of an image whose networking silently did nothing.
pub const SILENT_SCRIPT: &str = r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
echo "app-init: starting the application"
echo "app-init: application started"
poweroff -f
"#;

/// Boots `kernel` with `script` as `/init` and no NIC; returns the console once QEMU exits
/// (the script powers off) or after `limit` (QEMU is then killed).
pub fn boot(kernel: &Kernel, script: &str, dir: &Path, limit: Duration) -> Result<String, VmError> {
    super::qemu::ensure_installed()?;
    let initrd = dir.join("busybox.cpio");
    std::fs::write(&initrd, initramfs(script)?).map_err(|e| VmError::io(&initrd, e))?;
    let console = dir.join("console.log");
    std::fs::write(&console, b"").map_err(|e| VmError::io(&console, e))?;
    let spec = QemuSpec {
        kernel: kernel.vmlinuz.clone(),
        initrd,
        cmdline: "console=ttyS0 panic=-1 rdinit=/init".into(),
        memory_mib: 256,
        cpus: 1,
        disk: None,
        nic: None,
        console: console.clone(),
        vsock: None,
        keep_after_exit: false,
    };
    let mut cmd = Command::new(QEMU);
    cmd.args(spec.args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: prctl only, between fork and exec: QEMU dies with the test.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| VmError::io(Path::new(QEMU), e))?;
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .map_err(|e| VmError::io(Path::new(QEMU), e))?
        {
            break Some(s);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read(&console)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| VmError::io(&console, e))?;
    match status {
        Some(_) => Ok(text),
        None => Err(VmError::Other(format!(
            "the busybox VM did not power off within {limit:?}; console:\n{text}"
        ))),
    }
}
