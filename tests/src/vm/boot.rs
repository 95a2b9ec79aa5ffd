//! Booting a guestkit VM the way production does, inside a test namespace: a "host" namespace
//! with bridge `fcbr0` (192.168.100.1/24) and a TAP port, QEMU on that TAP, and host-client
//! waiting for the agent at 192.168.100.2:8080 from inside the same namespace (a thread that
//! `setns()`s, so no traffic ever leaves the test's namespace).

use super::image::AGENT_PATH;
use super::kernel::Kernel;
use super::qemu::{Nic, Qemu, QemuSpec};
use super::vsock::VsockDevice;
use super::VmError;
use crate::netns::Namespace;
use crate::topology::{GATEWAY, HOST_BRIDGE, SUBNET_PREFIX};
use guest_proto::api::HealthResponse;
use host_client::{
    wait_ready_with, BootArgs, ClientError, GuestClient, Milestone, Progress, Ready, WaitError,
    WaitOptions,
};
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The guest's address on the bridge.
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);
/// The agent's port.
pub const AGENT_PORT: u16 = 8080;
/// Memory of a normal VM.
pub const DEFAULT_MEMORY_MIB: u32 = 256;
/// The arguments the kernel passes to init (after `--`), which netinit hands on to the agent.
pub const INIT_ARGS: &[&str] = &["supervise"];

/// The API token of test VMs: the agent fails closed without one. The command line carries
/// only its hash ([`TEST_TOKEN_SHA256`], `guest_agent.token_sha256=`), the client the token.
pub const TEST_TOKEN: &str = "guestkit-vm-test-token";
/// `printf %s guestkit-vm-test-token | sha256sum`.
pub const TEST_TOKEN_SHA256: &str =
    "b3f6e5cc1e24e696265c41ced222ac3c849189b0bff12d351bc91e023ad58257";

/// The agent's address.
pub fn agent_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(GUEST_IP), AGENT_PORT)
}

/// The healthy command line, built from typed values with host-client's `BootArgs`: serial
/// console, static `ip=`, `panic=-1` (a panic ends QEMU at once: `-no-reboot`), and the agent
/// as the init netinit execs.
pub fn default_boot_args() -> BootArgs {
    let ip = host_client::bootargs::static_ip(
        &format!("{GUEST_IP}/{SUBNET_PREFIX}"),
        Some(IpAddr::V4(GATEWAY)),
        &[],
        Some("vm"),
        Some("eth0"),
    )
    .unwrap_or_else(|e| panic!("the built-in ip= is invalid: {e}"));
    BootArgs::new()
        .console("ttyS0")
        .ip(ip)
        .extra("panic", Some("-1".into()))
        .extra("guest_netinit.next", Some(AGENT_PATH.into()))
        .extra("guest_agent.token_sha256", Some(TEST_TOKEN_SHA256.into()))
}

/// The full kernel command line: `args`, then `raw` parameters taken as given (to play a
/// broken host that BootArgs would refuse), then `-- supervise` for init.
pub fn cmdline(args: &BootArgs, raw: &[&str]) -> Result<String, VmError> {
    let mut text = args
        .build()
        .map_err(|e| VmError::Other(format!("boot args: {e}")))?;
    for r in raw {
        text.push(' ');
        text.push_str(r);
    }
    text.push_str(" --");
    for a in INIT_ARGS {
        text.push(' ');
        text.push_str(a);
    }
    Ok(text)
}

/// The host side of one VM: namespace, bridge with the gateway address, TAP port.
#[derive(Debug)]
pub struct VmNet {
    pub ns: Namespace,
    pub tap: String,
}

impl VmNet {
    /// Namespace `gk-<pid>-<n>-vm` with `fcbr0` 192.168.100.1/24 and a TAP named like
    /// host-client names them, enslaved and up.
    pub fn new() -> Self {
        let ns = Namespace::new("vm");
        ns.ip(["link", "add", HOST_BRIDGE, "type", "bridge"]);
        ns.ip([
            "addr",
            "add",
            &format!("{GATEWAY}/{SUBNET_PREFIX}"),
            "dev",
            HOST_BRIDGE,
        ]);
        ns.ip(["link", "set", HOST_BRIDGE, "up"]);
        let tap = host_client::tap::tap_name(ns.name());
        ns.ip(["tuntap", "add", &tap, "mode", "tap"]);
        ns.ip(["link", "set", &tap, "master", HOST_BRIDGE]);
        ns.ip(["link", "set", &tap, "up"]);
        Self { ns, tap }
    }

    /// Runs `make()`'s future on a thread inside the namespace (current-thread tokio
    /// runtime), so every socket it opens is the namespace's.
    pub fn run<T, F, Fut>(&self, make: F) -> Result<T, VmError>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        let path = self.ns.path();
        let worker = std::thread::spawn(move || -> Result<T, VmError> {
            let file = File::open(&path).map_err(|e| VmError::io(Path::new(&path), e))?;
            // SAFETY: setns on this thread only, with an fd we hold open.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(VmError::io(
                    Path::new(&path),
                    std::io::Error::last_os_error(),
                ));
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| VmError::Other(format!("tokio runtime: {e}")))?;
            Ok(rt.block_on(make()))
        });
        worker
            .join()
            .map_err(|_| VmError::Other("namespace worker thread panicked".into()))?
    }
}

impl Default for VmNet {
    fn default() -> Self {
        Self::new()
    }
}

/// How to boot one VM.
#[derive(Debug, Clone)]
pub struct BootSpec {
    pub kernel: Kernel,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// The root disk (`/dev/vda`, opened read-only for the VM: `snapshot=on`).
    pub disk: Option<PathBuf>,
    /// Attach the virtio-net NIC (false: the no-NIC fault).
    pub nic: bool,
    /// Where the console log goes.
    pub console: PathBuf,
    /// Give the VM a virtio-vsock device ([`super::vsock`]), its sockets next to the console.
    pub vsock: bool,
    /// Let QEMU outlive this process (`demo --keep`); otherwise it dies with its parent, so a
    /// killed test run leaves no VM behind.
    pub keep_after_exit: bool,
}

/// A booted VM with its network; QEMU is stopped and the namespace removed on drop.
#[derive(Debug)]
pub struct Vm {
    // Field order: QEMU goes before the namespace it runs in.
    pub qemu: Qemu,
    /// The vsock device (after QEMU: it outlives the VM attached to it).
    pub vsock: Option<VsockDevice>,
    pub net: VmNet,
}

/// A milestone as the host saw it: when the console line showed up, since QEMU started.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostMilestone {
    pub milestone: Milestone,
    #[serde(serialize_with = "secs")]
    pub host_elapsed: Duration,
    /// The kernel's own timestamp of that line, when it had one.
    pub kernel_time: Option<f64>,
}

/// What waiting for a VM found.
#[derive(Debug, serde::Serialize)]
pub struct BootReport {
    pub ready: Ready,
    /// Since QEMU was started.
    #[serde(serialize_with = "secs")]
    pub ready_after: Duration,
    pub milestones: Vec<HostMilestone>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Vm {
    /// Creates the namespace, bridge and TAP, and starts QEMU in it.
    pub fn boot(spec: &BootSpec) -> Result<Self, VmError> {
        let net = VmNet::new();
        let nic = spec.nic.then(|| Nic {
            tap: net.tap.clone(),
            mac: host_client::bootargs::mac_for_ip(IpAddr::V4(GUEST_IP)).to_string(),
        });
        let qspec = QemuSpec {
            kernel: spec.kernel.vmlinuz.clone(),
            initrd: spec.initrd.clone(),
            cmdline: spec.cmdline.clone(),
            memory_mib: spec.memory_mib,
            cpus: spec.cpus,
            disk: spec.disk.clone(),
            nic,
            console: spec.console.clone(),
            vsock: None,
            keep_after_exit: spec.keep_after_exit,
        };
        let vsock = match spec.vsock {
            true => {
                let dir = spec
                    .console
                    .parent()
                    .unwrap_or(std::path::Path::new("/tmp"));
                Some(VsockDevice::start(dir)?)
            }
            false => None,
        };
        let qspec = QemuSpec {
            vsock: vsock.as_ref().map(|v| v.vhost_socket.clone()),
            ..qspec
        };
        let qemu = Qemu::start(&net.ns, &qspec)?;
        Ok(Self { qemu, vsock, net })
    }

    /// host-client's `wait_ready` on the agent, following the console; the milestones are
    /// stamped with the host's clock as they appear.
    pub fn wait(&self, deadline: Duration) -> Result<BootReport, Box<WaitError>> {
        self.wait_polling(deadline, WaitOptions::default().console_poll)
    }

    /// [`Vm::wait`] reading the console every `console_poll` (the benchmark uses a few ms so
    /// the host-side stamps are that precise).
    pub fn wait_polling(
        &self,
        deadline: Duration,
        console_poll: Duration,
    ) -> Result<BootReport, Box<WaitError>> {
        self.wait_with(WaitOptions {
            deadline,
            console_poll,
            ..WaitOptions::default()
        })
    }

    /// [`Vm::wait`] with the caller's options (a vsock address, a readiness socket); the
    /// console is always followed.
    pub fn wait_with(&self, opts: WaitOptions) -> Result<BootReport, Box<WaitError>> {
        let opts = WaitOptions {
            console: Some(self.qemu.console.clone()),
            ..opts
        };
        let started = self.qemu.started;
        let outcome = self.net.run(move || async move {
            let mut seen = Vec::new();
            let result = wait_ready_with(agent_addr(), &opts, |p| {
                if let Progress::Milestone { entry } = p {
                    seen.push(HostMilestone {
                        milestone: entry.milestone,
                        host_elapsed: started.elapsed(),
                        kernel_time: entry.kernel_time,
                    });
                }
            })
            .await;
            (result, seen, started.elapsed())
        });
        let (result, milestones, ready_after) = match outcome {
            Ok(v) => v,
            Err(e) => panic!("cannot wait from inside the namespace: {e}"),
        };
        let ready = result.map_err(Box::new)?;
        Ok(BootReport {
            ready,
            ready_after,
            milestones,
        })
    }

    /// `GET /health` from inside the namespace.
    pub fn health(&self) -> Result<HealthResponse, VmError> {
        let r: Result<HealthResponse, ClientError> = self
            .net
            .run(|| async { GuestClient::new(agent_addr()).health().await })?;
        r.map_err(|e| VmError::Other(format!("GET /health: {e}")))
    }

    /// The same client, for other calls (services, logs), run inside the namespace.
    pub fn client<T, F, Fut>(&self, call: F) -> Result<T, VmError>
    where
        T: Send + 'static,
        F: FnOnce(GuestClient) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        self.net.run(move || async move {
            call(GuestClient::new(agent_addr()).with_token(Some(TEST_TOKEN.into()))).await
        })
    }

    /// The console log so far.
    pub fn console(&self) -> String {
        self.qemu.console_text()
    }

    /// Stops QEMU now (drop also does).
    pub fn stop(&mut self) {
        self.qemu.stop();
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.qemu.started)
    }
}

/// One row of the boot timeline a person reads: what happened and when, on the host's clock
/// (seconds since QEMU started) and, for console lines, the kernel's clock.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimelineRow {
    pub stage: String,
    pub host_s: f64,
    pub kernel_s: Option<f64>,
}

impl BootReport {
    /// QEMU start, each console milestone, then "host saw ready".
    pub fn timeline(&self) -> Vec<TimelineRow> {
        let mut rows = vec![TimelineRow {
            stage: "qemu started".into(),
            host_s: 0.0,
            kernel_s: None,
        }];
        for m in &self.milestones {
            rows.push(TimelineRow {
                stage: m.milestone.to_string(),
                host_s: m.host_elapsed.as_secs_f64(),
                kernel_s: m.kernel_time,
            });
        }
        rows.push(TimelineRow {
            stage: "host saw ready".into(),
            host_s: self.ready_after.as_secs_f64(),
            kernel_s: None,
        });
        rows
    }
}

/// What `cargo xtask demo --json` prints last: one object.
#[derive(Debug, serde::Serialize)]
pub struct BootSummary<'a> {
    pub image: &'a str,
    pub kernel: &'a str,
    pub cmdline: &'a str,
    pub console: &'a Path,
    pub timeline: Vec<TimelineRow>,
    pub ready_after_s: f64,
    pub ready: &'a Ready,
    pub health: &'a HealthResponse,
    /// The same `/health` fetched over the VM's vsock device (Firecracker's hybrid socket),
    /// or why it could not be.
    pub vsock: &'a VsockHealth,
}

/// `vsock` in [`BootSummary`].
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VsockHealth {
    Health {
        addr: String,
        health: Box<HealthResponse>,
    },
    Error {
        addr: String,
        error: String,
    },
}

impl Vm {
    /// `GET /health` over the VM's vsock device (no network involved).
    pub fn vsock_health(&self) -> VsockHealth {
        let Some(dev) = &self.vsock else {
            return VsockHealth::Error {
                addr: String::new(),
                error: "this VM has no vsock device".into(),
            };
        };
        let addr = dev.agent_addr();
        let shown = addr.to_string();
        let r = self
            .net
            .run(move || async move { GuestClient::new(addr).health().await });
        match r {
            Ok(Ok(h)) => VsockHealth::Health {
                addr: shown,
                health: Box::new(h),
            },
            Ok(Err(e)) => VsockHealth::Error {
                addr: shown,
                error: e.to_string(),
            },
            Err(e) => VsockHealth::Error {
                addr: shown,
                error: e.to_string(),
            },
        }
    }
}

impl BootSummary<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Pretty JSON of the health answer, for people.
pub fn pretty_health(health: &HealthResponse) -> String {
    serde_json::to_string_pretty(health).unwrap_or_else(|e| format!("<unprintable: {e}>"))
}

/// The systemd image's boot args: the same console and `ip=`, nothing for init (systemd is
/// /init; guest-netinit runs as its unit), and `net.ifnames=0` so udev keeps the name `eth0`
/// that `ip=` names (as on the fleet's kernels, where virtio-mmio devices are not renamed).
pub fn systemd_boot_args() -> BootArgs {
    let mut args = default_boot_args();
    args.extra.retain(|(k, _)| k != "guest_netinit.next");
    args.extra("net.ifnames", Some("0".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_proto::KernelCmdline;

    #[test]
    fn cmdline_has_typed_ip_raw_params_then_init_args_last() {
        let text = cmdline(&default_boot_args(), &["ip=raw:text"]).expect("cmdline");
        assert!(
            text.starts_with(
                "console=ttyS0 ip=192.168.100.2::192.168.100.1:255.255.255.0:vm:eth0:off"
            ),
            "{text}"
        );
        assert!(
            text.contains("guest_netinit.next=/sbin/guest-agent"),
            "{text}"
        );
        assert!(text.ends_with(" ip=raw:text -- supervise"), "{text}");
        let parsed = KernelCmdline::parse(&text);
        assert_eq!(parsed.get("panic"), Some("-1"));
    }

    #[test]
    fn systemd_args_drop_the_next_init_and_keep_eth0() {
        let text = systemd_boot_args().build().expect("build");
        assert!(!text.contains("guest_netinit.next"), "{text}");
        assert!(!text.contains(" -- "), "{text}");
        assert!(text.contains("net.ifnames=0"), "{text}");
    }
}
