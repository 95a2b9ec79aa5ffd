//! One QEMU process: `qemu-system-x86_64 -M q35` with software emulation (TCG: the KVM here
//! cannot run a stock kernel), the kernel and initramfs given directly, the serial console
//! written to a file, and a `virtio-net-pci` NIC on a TAP — started with `ip netns exec` so
//! it runs inside the test's host namespace, where the TAP is a port of the bridge.
//!
//! The process is killed when [`Qemu`] is dropped, also while a failing test unwinds.

use super::VmError;
use crate::netns::Namespace;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The QEMU binary (Debian package `qemu-system-x86`).
pub const QEMU: &str = "qemu-system-x86_64";

/// Installs `qemu-system-x86` with apt when QEMU is missing (a fresh CI machine).
pub fn ensure_installed() -> Result<(), VmError> {
    super::ensure_program(QEMU, "qemu-system-x86")
}

/// A VM's NIC: a TAP in the host namespace and the MAC the guest sees.
#[derive(Debug, Clone)]
pub struct Nic {
    pub tap: String,
    pub mac: String,
}

/// How to start one VM.
#[derive(Debug, Clone)]
pub struct QemuSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The kernel command line (`-append`).
    pub cmdline: String,
    pub memory_mib: u32,
    /// vCPUs (`-smp`; TCG runs one host thread per vCPU).
    pub cpus: u32,
    /// A root disk on virtio-blk (`/dev/vda`), opened with `snapshot=on`: the VM's writes go
    /// to a temporary file and the image stays the same for every VM.
    pub disk: Option<PathBuf>,
    /// `None`: no NIC at all (a fault variant).
    pub nic: Option<Nic>,
    /// Where the serial console goes.
    pub console: PathBuf,
    /// A virtio-vsock device: the vhost-user control socket of a running
    /// `vhost-device-vsock` ([`super::vsock`]). Guest memory is then a shared memfd, which
    /// a vhost-user backend needs to reach the rings.
    pub vsock: Option<PathBuf>,
    /// Without it, QEMU gets SIGKILL when the thread that started it dies (PR_SET_PDEATHSIG).
    pub keep_after_exit: bool,
}

impl QemuSpec {
    /// The QEMU arguments (after the program name).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-M",
            "q35",
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            &self.cpus.max(1).to_string(),
            "-display",
            "none",
            "-monitor",
            "none",
            "-nodefaults",
            "-no-reboot",
            "-serial",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("file:{}", self.console.display()));
        args.push("-kernel".into());
        args.push(self.kernel.display().to_string());
        args.push("-initrd".into());
        args.push(self.initrd.display().to_string());
        args.push("-append".into());
        args.push(self.cmdline.clone());
        if let Some(disk) = &self.disk {
            args.push("-drive".into());
            args.push(format!(
                "file={},if=virtio,format=raw,snapshot=on,cache=unsafe",
                disk.display().to_string().replace(',', ",,")
            ));
        }
        if let Some(sock) = &self.vsock {
            args.push("-object".into());
            args.push(format!(
                "memory-backend-memfd,id=mem0,size={}M,share=on",
                self.memory_mib
            ));
            args.push("-numa".into());
            args.push("node,memdev=mem0".into());
            args.push("-chardev".into());
            args.push(format!(
                "socket,id=vsock0,path={}",
                sock.display().to_string().replace(',', ",,")
            ));
            args.push("-device".into());
            args.push("vhost-user-vsock-pci,chardev=vsock0".into());
        }
        match &self.nic {
            Some(nic) => {
                args.push("-netdev".into());
                args.push(format!(
                    "tap,id=n0,ifname={},script=no,downscript=no",
                    nic.tap
                ));
                args.push("-device".into());
                args.push(format!("virtio-net-pci,netdev=n0,mac={}", nic.mac));
            }
            None => {
                args.push("-nic".into());
                args.push("none".into());
            }
        }
        args
    }
}

/// A running QEMU, killed on drop.
#[derive(Debug)]
pub struct Qemu {
    child: Child,
    /// When the process was spawned: t = 0 of the boot timeline.
    pub started: Instant,
    pub console: PathBuf,
    stderr_path: PathBuf,
}

impl Qemu {
    /// Starts QEMU inside `ns`. QEMU's own stderr goes to `<console>.qemu-stderr`.
    pub fn start(ns: &Namespace, spec: &QemuSpec) -> Result<Self, VmError> {
        ensure_installed()?;
        // A fresh empty console file: followers never read a previous boot's text.
        std::fs::write(&spec.console, b"").map_err(|e| VmError::io(&spec.console, e))?;
        let stderr_path = spec.console.with_extension("qemu-stderr");
        let stderr =
            std::fs::File::create(&stderr_path).map_err(|e| VmError::io(&stderr_path, e))?;
        let mut cmd: Command = ns.exec(QEMU);
        cmd.args(spec.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if !spec.keep_after_exit {
            // SAFETY: prctl only, between fork and exec; `ip netns exec` execs QEMU in the same
            // process, which keeps the death signal (not a set-uid program).
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let started = Instant::now();
        let child = cmd.spawn().map_err(|e| VmError::io(Path::new(QEMU), e))?;
        Ok(Self {
            child,
            started,
            console: spec.console.clone(),
            stderr_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if QEMU has exited (the guest powered off, or panicked with `panic=-1`).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for QEMU to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The console text so far.
    pub fn console_text(&self) -> String {
        std::fs::read(&self.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// What QEMU itself printed on stderr (bad arguments, TAP errors).
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Stops QEMU: SIGTERM (QEMU exits at once, as on a power cut), then SIGKILL.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: signalling our own child, whose pid is not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        if self.wait_exit(Duration::from_secs(3)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(nic: Option<Nic>) -> QemuSpec {
        QemuSpec {
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd.gz".into(),
            cmdline: "console=ttyS0 ip=off".into(),
            memory_mib: 96,
            cpus: 1,
            disk: None,
            nic,
            console: "/tmp/c.log".into(),
            vsock: None,
            keep_after_exit: false,
        }
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn args_put_the_nic_on_the_tap_and_never_ask_for_kvm() {
        let args = spec(Some(Nic {
            tap: "fcabc".into(),
            mac: "02:fc:c0:a8:64:02".into(),
        }))
        .args();
        assert_eq!(after(&args, "-M"), ["q35"]);
        assert_eq!(after(&args, "-m"), ["96"]);
        assert_eq!(after(&args, "-serial"), ["file:/tmp/c.log"]);
        assert_eq!(after(&args, "-append"), ["console=ttyS0 ip=off"]);
        assert_eq!(
            after(&args, "-netdev"),
            ["tap,id=n0,ifname=fcabc,script=no,downscript=no"]
        );
        assert_eq!(
            after(&args, "-device"),
            ["virtio-net-pci,netdev=n0,mac=02:fc:c0:a8:64:02"]
        );
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert!(!args.iter().any(|a| a.contains("kvm")), "{args:?}");
    }

    #[test]
    fn no_nic_means_none_at_all() {
        let args = spec(None).args();
        assert_eq!(after(&args, "-nic"), ["none"]);
        assert!(after(&args, "-netdev").is_empty());
        assert!(args.iter().any(|a| a == "-nodefaults"));
    }
}
