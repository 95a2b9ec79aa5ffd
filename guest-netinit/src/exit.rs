//! Failure classes and their exit codes (the netinit contract, `notes/netinit-contract.md`).
//! Every error guest-netinit can stop with is a [`RunError`]; its class fixes the exit code,
//! the `class` string in `state.json` and in the `failed` console event.
//!
//! | code | class            | meaning                                                           |
//! |------|------------------|-------------------------------------------------------------------|
//! | 0    | -                | configured, or nothing to do (warnings are still 0)               |
//! | 1    | `internal`       | a bug                                                             |
//! | 2    | `usage`          | bad command-line flags                                            |
//! | 3    | `bad-config`     | `ip=` / `nameserver=` / `rd.route=` / template malformed, DHCPv6 asked |
//! | 4    | `no-device`      | the interface did not appear before `--link-timeout`              |
//! | 5    | `module-missing` | virtio-net device present but the module file is not in the image |
//! | 6    | `module-load`    | `finit_module` refused it (or a module file is corrupt)           |
//! | 7    | `apply`          | a netlink request failed                                          |
//! | 8    | `files`          | writing resolv.conf / hostname / handoff / state failed           |
//! | 9    | `check-failed`   | `guest-netinit check` found an error (`check.rs`, not a run)      |
//! | 10   | `dhcp`           | DHCP asked, no lease in time and no static fallback, or its socket failed |

use crate::dhcp::step::DhcpStepError;
use crate::files::FilesError;
use crate::sources::ConfigError;
use crate::system::{ModuleError, NetError};

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("interface {interface} did not appear within {waited_ms} ms")]
    NoDevice { interface: String, waited_ms: u64 },
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error(transparent)]
    Apply(#[from] NetError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(transparent)]
    Dhcp(#[from] DhcpStepError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl RunError {
    /// The class name, as in `state.json`'s `error.class`.
    pub fn class(&self) -> &'static str {
        match self {
            RunError::Usage(_) => "usage",
            RunError::Config(_) => "bad-config",
            RunError::NoDevice { .. } => "no-device",
            RunError::Module(ModuleError::Missing { .. } | ModuleError::NoModulesDir { .. }) => {
                "module-missing"
            }
            RunError::Module(ModuleError::Load { .. } | ModuleError::BadModuleFile { .. }) => {
                "module-load"
            }
            RunError::Apply(_) => "apply",
            RunError::Files(_) => "files",
            RunError::Dhcp(DhcpStepError::Apply(_)) => "apply",
            RunError::Dhcp(_) => "dhcp",
            RunError::Internal(_) => "internal",
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self.class() {
            "usage" => 2,
            "bad-config" => 3,
            "no-device" => 4,
            "module-missing" => 5,
            "module-load" => 6,
            "apply" => 7,
            "files" => 8,
            "dhcp" => 10,
            _ => 1,
        }
    }

    pub fn to_failure(&self) -> guest_proto::FailureReport {
        guest_proto::FailureReport {
            class: self.class().into(),
            exit_code: self.exit_code(),
            message: self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_documented_code() {
        let io = || std::io::Error::from_raw_os_error(libc::EPERM);
        let cases: Vec<(RunError, &str, i32)> = vec![
            (RunError::Usage("x".into()), "usage", 2),
            (
                RunError::Config(ConfigError::Cmdline("gateway".into())),
                "bad-config",
                3,
            ),
            (
                RunError::NoDevice {
                    interface: "eth0".into(),
                    waited_ms: 5,
                },
                "no-device",
                4,
            ),
            (
                RunError::Module(ModuleError::Missing {
                    module: "virtio_net".into(),
                    path: "/lib/x.ko".into(),
                }),
                "module-missing",
                5,
            ),
            (
                RunError::Module(ModuleError::NoModulesDir {
                    kernel: "6.1".into(),
                    dir: "/lib/modules/6.1".into(),
                    module: "virtio_net".into(),
                    path: "/lib/modules/6.1/kernel/drivers/net/virtio_net.ko".into(),
                }),
                "module-missing",
                5,
            ),
            (
                RunError::Module(ModuleError::Load {
                    module: "m".into(),
                    path: "p".into(),
                    source: io(),
                }),
                "module-load",
                6,
            ),
            (
                RunError::Apply(NetError::Request {
                    what: "add".into(),
                    message: "EPERM".into(),
                }),
                "apply",
                7,
            ),
            (
                RunError::Files(FilesError::Write {
                    path: "/etc/x".into(),
                    source: io(),
                }),
                "files",
                8,
            ),
            (
                RunError::Dhcp(DhcpStepError::NoLease {
                    interface: "eth0".into(),
                    reason: "no DHCP server answered within 5.00 s".into(),
                }),
                "dhcp",
                10,
            ),
            (
                RunError::Dhcp(DhcpStepError::Apply(NetError::Request {
                    what: "set eth0 up".into(),
                    message: "EPERM".into(),
                })),
                "apply",
                7,
            ),
            (RunError::Internal("bug".into()), "internal", 1),
        ];
        for (err, class, code) in cases {
            assert_eq!(err.class(), class, "{err}");
            assert_eq!(err.exit_code(), code, "{err}");
            let f = err.to_failure();
            assert_eq!((f.class.as_str(), f.exit_code), (class, code));
        }
    }

    #[test]
    fn module_missing_message_names_the_path() {
        let e = RunError::Module(ModuleError::Missing {
            module: "virtio_net".into(),
            path: "/lib/modules/6.1.0/kernel/drivers/net/virtio_net.ko".into(),
        });
        assert!(
            e.to_string()
                .contains("/lib/modules/6.1.0/kernel/drivers/net/virtio_net.ko"),
            "{e}"
        );
        // F1 exactly: an empty module dir still names the file the device needs.
        let e = RunError::Module(ModuleError::NoModulesDir {
            kernel: "6.1.0".into(),
            dir: "/lib/modules/6.1.0".into(),
            module: "virtio_net".into(),
            path: "/lib/modules/6.1.0/kernel/drivers/net/virtio_net.ko".into(),
        });
        assert_eq!(
            e.to_string(),
            "virtio_net.ko missing at /lib/modules/6.1.0/kernel/drivers/net/virtio_net.ko: \
             no modules for kernel 6.1.0 (/lib/modules/6.1.0 is missing or empty)"
        );
    }
}
