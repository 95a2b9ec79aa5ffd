//! The vsock side of `serve`: which ports ([`VsockSettings`]) and the AF_VSOCK listener.
//!
//! vsock needs no network: a VM whose eth0 never appeared (F1, F3) still answers the host on
//! it, with the same routes and the same token rules as TCP (the accept loop in `listener.rs`,
//! with its cap and header timeout, serves both). Binding it is done in its own task after the
//! TCP listener is up, so it never delays TCP; a kernel without vsock (no `/dev/vsock`,
//! EAFNOSUPPORT, ENODEV) or a port already taken is one warning event, and TCP goes on.
//!
//! Ports, each `0` = off, from the first of these that gives a valid value:
//! 1. the kernel command line: `guest_agent.vsock_port=`, `guest_agent.ready_port=` (per boot,
//!    chosen by the host that starts the VM, so it wins over what the image says);
//! 2. `serve --vsock-port` / `--ready-port`;
//! 3. `/etc/guest-agent/config.toml`, table `[serve]`: `vsock_port`, `ready_port`;
//! 4. the defaults: [`DEFAULT_VSOCK_PORT`] (listening on) and no readiness push.
//!
//! A malformed value on the command line is a warning event naming the parameter and the
//! value, and the next source is used: the VM must not lose its control channel to a typo.

use crate::serve::listener::{Accept, Peer};
use guest_proto::{Event, KernelCmdline, Level};
use std::future::Future;
use std::path::Path;
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

/// Kernel parameter: the vsock port `serve` listens on (`0` = no vsock listener).
pub const VSOCK_PORT_PARAM: &str = "guest_agent.vsock_port";
/// Kernel parameter: the host port (CID 2) the readiness line is pushed to (`0` = off).
pub const READY_PORT_PARAM: &str = "guest_agent.ready_port";
/// Listening port when nothing says otherwise: the same number as TCP's 8080.
pub const DEFAULT_VSOCK_PORT: u32 = 8080;
/// The port a host conventionally listens on for readiness lines (Firecracker: the unix
/// socket `<uds_path>_8081`). Not on by default: see [`VsockSettings::ready_port`].
pub const CONVENTIONAL_READY_PORT: u32 = 8081;
/// The host's CID: where readiness lines go.
pub const HOST_CID: u32 = 2;

/// The two vsock ports of `serve`; `None` = off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VsockSettings {
    pub listen_port: Option<u32>,
    /// Off unless asked for (command line, flag or config): the host has to listen *before*
    /// the VM boots, so only the host knows whether a push can be taken, and says so on the
    /// command line it builds (`guest_agent.ready_port=8081`). Pushing uninvited would knock
    /// on a port of a host that never expected it, every boot, with retries.
    pub ready_port: Option<u32>,
}

/// Values given by the flags and the config file (before the command line is read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortChoices {
    pub vsock_port: Option<u32>,
    pub ready_port: Option<u32>,
}

impl VsockSettings {
    /// Resolves the ports from the command line text, then `flags`, then `file`, then the
    /// defaults. Returns the warnings to print (each names the parameter and its value).
    pub fn resolve(cmdline: &str, flags: PortChoices, file: PortChoices) -> (Self, Vec<String>) {
        let cmd = KernelCmdline::parse(cmdline);
        let mut warnings = Vec::new();
        let mut from_cmdline = |param: &str| -> Option<u32> {
            let raw = cmd.get(param)?;
            match parse_port(raw) {
                Ok(p) => Some(p),
                Err(why) => {
                    warnings.push(format!("{param}={raw:?} ignored: {why}"));
                    None
                }
            }
        };
        let listen = from_cmdline(VSOCK_PORT_PARAM)
            .or(flags.vsock_port)
            .or(file.vsock_port)
            .unwrap_or(DEFAULT_VSOCK_PORT);
        let ready = from_cmdline(READY_PORT_PARAM)
            .or(flags.ready_port)
            .or(file.ready_port)
            .unwrap_or(0);
        let on = |p: u32| (p != 0).then_some(p);
        (
            VsockSettings {
                listen_port: on(listen),
                ready_port: on(ready),
            },
            warnings,
        )
    }

    /// [`Self::resolve`] with the command line read from `path` (missing file: empty).
    pub fn load(path: &Path, flags: PortChoices, file: PortChoices) -> (Self, Vec<String>) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Self::resolve(&text, flags, file)
    }
}

/// A vsock port: decimal, `0..=4294967294` (`4294967295` is the kernel's "any port").
pub fn parse_port(raw: &str) -> Result<u32, String> {
    let p: u32 = raw
        .trim()
        .parse()
        .map_err(|_| "not a port number (0 = off, 1..4294967294)".to_string())?;
    if p == u32::MAX {
        return Err("4294967295 is VMADDR_PORT_ANY, not a port".into());
    }
    Ok(p)
}

/// `accept` on an AF_VSOCK listener, for the accept loop; the peer is keyed by its CID.
pub struct VsockAcceptor(pub VsockListener);

impl Accept for VsockAcceptor {
    type Stream = VsockStream;
    async fn accept(&self) -> std::io::Result<(VsockStream, Peer)> {
        let (stream, addr) = self.0.accept().await?;
        Ok((stream, Peer::Cid(addr.cid())))
    }
}

/// Binds `port` on any local CID.
pub fn bind(port: u32) -> std::io::Result<VsockAcceptor> {
    VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port)).map(VsockAcceptor)
}

/// What a failed bind means, in one sentence for the console.
pub fn describe_bind_error(port: u32, e: &std::io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT) | Some(libc::ENODEV) | Some(libc::ENOENT) => {
            "this kernel has no vsock transport (modules vsock, vmw_vsock_virtio_transport not \
             loaded, or no virtio-vsock device)"
        }
        Some(libc::EADDRINUSE) => "the port is already taken",
        Some(libc::EACCES) | Some(libc::EPERM) => "not permitted",
        _ => "bind failed",
    };
    format!("vsock: cannot listen on port {port}: {why} ({e}); serving on TCP only")
}

/// Binds with `bind_fn` and serves with `serve_fn`; a bind error is one warning event. Split
/// from the real socket calls so a test can inject the error a kernel without vsock gives.
pub async fn listen_and_serve<B, S, F>(port: u32, bind_fn: B, serve_fn: S)
where
    B: FnOnce(u32) -> std::io::Result<VsockAcceptor>,
    S: FnOnce(VsockAcceptor) -> F,
    F: Future<Output = std::io::Result<()>>,
{
    let listener = match bind_fn(port) {
        Ok(l) => l,
        Err(e) => {
            let message = describe_bind_error(port, &e);
            tracing::warn!("{message}");
            crate::console::emit(Level::Warn, Event::Warning { message });
            return;
        }
    };
    crate::console::emit(
        Level::Info,
        Event::Step {
            step: "vsock".into(),
            ok: true,
            duration_us: 0,
            detail: format!("vsock listening port={port}"),
        },
    );
    tracing::info!(port, "vsock listening");
    if let Err(e) = serve_fn(listener).await {
        tracing::error!(port, error = %e, "vsock listener stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(v: u32, r: u32) -> PortChoices {
        PortChoices {
            vsock_port: Some(v),
            ready_port: Some(r),
        }
    }

    #[test]
    fn defaults_listen_on_8080_and_push_nothing() {
        let (s, w) = VsockSettings::resolve(
            "quiet ip=dhcp",
            PortChoices::default(),
            PortChoices::default(),
        );
        assert_eq!(s.listen_port, Some(8080));
        assert_eq!(s.ready_port, None);
        assert!(w.is_empty());
    }

    #[test]
    fn command_line_beats_flag_beats_file() {
        let cmd = "guest_agent.vsock_port=1024 guest_agent.ready_port=8081";
        let (s, _) = VsockSettings::resolve(cmd, ports(5, 6), ports(7, 8));
        assert_eq!((s.listen_port, s.ready_port), (Some(1024), Some(8081)));
        let (s, _) = VsockSettings::resolve("", ports(5, 6), ports(7, 8));
        assert_eq!((s.listen_port, s.ready_port), (Some(5), Some(6)));
        let (s, _) = VsockSettings::resolve("", PortChoices::default(), ports(7, 8));
        assert_eq!((s.listen_port, s.ready_port), (Some(7), Some(8)));
        let (s, _) = VsockSettings::resolve("guest_agent.vsock_port=0", ports(5, 0), ports(7, 8));
        assert_eq!((s.listen_port, s.ready_port), (None, None));
    }

    #[test]
    fn a_bad_command_line_value_is_named_and_the_next_source_used() {
        let cmd = "guest_agent.vsock_port=undefined guest_agent.ready_port=4294967295";
        let (s, w) = VsockSettings::resolve(cmd, PortChoices::default(), ports(9, 0));
        assert_eq!((s.listen_port, s.ready_port), (Some(9), None));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("guest_agent.vsock_port=\"undefined\""),
            "{w:?}"
        );
        assert!(
            w[1].contains("guest_agent.ready_port=\"4294967295\""),
            "{w:?}"
        );
        assert!(w[1].contains("VMADDR_PORT_ANY"), "{w:?}");
    }

    #[test]
    fn bind_errors_say_what_they_mean() {
        let e = std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT);
        let m = describe_bind_error(8080, &e);
        assert!(
            m.contains("no vsock transport") && m.contains("TCP only"),
            "{m}"
        );
        let e = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert!(describe_bind_error(8080, &e).contains("already taken"));
    }

    /// A kernel without vsock: the bind error is reported and the task ends; nothing is
    /// served and nothing waits.
    #[tokio::test]
    async fn a_kernel_without_vsock_ends_the_task_at_once() {
        let served = std::sync::atomic::AtomicBool::new(false);
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            listen_and_serve(
                8080,
                |_| Err(std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
                |_l| {
                    served.store(true, std::sync::atomic::Ordering::SeqCst);
                    async { Ok(()) }
                },
            ),
        )
        .await
        .expect("returns at once");
        assert!(!served.load(std::sync::atomic::Ordering::SeqCst));
    }
}
