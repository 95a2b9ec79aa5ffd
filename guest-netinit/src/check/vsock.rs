//! Whether the image's agent wants vsock (issue 13), so `check` asks for the vsock transport's
//! modules. guest-agent `serve` listens on vsock port 8080 by default; its config file's
//! `[serve]` table can turn that off (`vsock_port = 0`) or add the readiness push
//! (`ready_port = N`). No TOML parser here (guest-netinit stays small): a line scan of the
//! `[serve]` table for those two `key = integer` lines, which is all guest-agent accepts there.
//! The kernel command line can still turn vsock on or off per boot; `check` sees the image only.

use super::rootpath::resolve;
use super::units::AGENT_CONFIG;
use std::path::Path;

/// The vsock transport's modules, dependencies first.
pub const MODULES: [&str; 3] = [
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

/// True when the image has the agent's config and it does not turn vsock off.
pub fn wanted(root: &Path) -> bool {
    resolve(root, AGENT_CONFIG)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|text| wanted_by(&text))
}

/// The decision on the config text: listening (default on) or pushing readiness.
pub fn wanted_by(config: &str) -> bool {
    let (mut listen, mut push) = (None, None);
    let mut in_serve = false;
    for line in config.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_serve = line == "[serve]";
            continue;
        }
        if !in_serve {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().parse::<u64>().ok();
        match k.trim() {
            "vsock_port" => listen = v,
            "ready_port" => push = v,
            _ => {}
        }
    }
    listen != Some(0) || push.is_some_and(|p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_on_off_only_when_both_are_off() {
        assert!(wanted_by("[services.serve]\ncommand = [\"x\"]\n"));
        assert!(!wanted_by("[serve]\nvsock_port = 0 # no vsock\n"));
        assert!(wanted_by("[serve]\nvsock_port = 0\nready_port = 8081\n"));
        assert!(wanted_by("[serve]\nvsock_port = 1024\n"));
        // A key of another table does not count.
        assert!(wanted_by("[other]\nvsock_port = 0\n[serve]\n"));
    }

    /// An image whose agent serves vsock but has no vsock modules: one warning per module,
    /// naming the path looked for; with `vsock_port = 0` in `[serve]`, none.
    #[test]
    fn check_reports_missing_vsock_modules_only_when_the_agent_wants_vsock() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let m = r.join("lib/modules/6.1.0-13-cloud-amd64");
        std::fs::create_dir_all(m.join("kernel")).unwrap();
        std::fs::write(m.join("modules.dep"), "").unwrap();
        std::fs::create_dir_all(r.join("etc/guest-agent")).unwrap();
        let cfg = r.join("etc/guest-agent/config.toml");
        let vsock_findings = |text: &str| {
            std::fs::write(&cfg, text).unwrap();
            let rep = crate::check::check(&crate::check::CheckOptions {
                root: r.to_path_buf(),
                kernel_version: None,
                interface: None,
                json: false,
            });
            rep.findings
                .into_iter()
                .filter(|f| f.message.contains("vsock"))
                .collect::<Vec<_>>()
        };
        let f = vsock_findings("[services.serve]\ncommand = [\"x\"]\n");
        assert_eq!(f.len(), 3, "{f:#?}");
        for (f, name) in f.iter().zip(MODULES) {
            assert_eq!(f.severity, super::super::Severity::Warning, "{f:?}");
            assert!(
                f.message.contains(name) && f.message.contains("asks for vsock"),
                "{f:?}"
            );
            assert!(!f.message.contains("Firecracker"), "{f:?}");
        }
        assert!(
            f[2].path
                .as_deref()
                .unwrap_or("")
                .contains("vmw_vsock_virtio_transport"),
            "{f:?}"
        );
        assert!(vsock_findings("[serve]\nvsock_port = 0\n").is_empty());
    }
}
