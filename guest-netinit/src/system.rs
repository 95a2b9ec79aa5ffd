//! The side effects guest-netinit has on the system, behind small traits, so the run's
#![allow(async_fn_in_trait)] // static dispatch only; no Send bound needed on a current-thread runtime
//! logic (`run.rs`) is tested without root and the real implementations (`netlink.rs`,
//! `modules.rs`, `probe.rs`) are tested in network namespaces.

use crate::config::NetConfig;
use guest_proto::ProbeResult;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Failure talking to the kernel's network stack.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// One netlink request failed; `what` says which ("add address 192.168.100.2/24 to eth0").
    #[error("{what}: {message}")]
    Request { what: String, message: String },
}

/// Failure loading a kernel module.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The module file is not in the image (failure F1): the path that was looked for.
    #[error("kernel module {module} is missing: {path} does not exist")]
    Missing { module: String, path: String },
    /// The module directory for the running kernel is absent or empty (failure F1 exactly):
    /// `module` is what was asked for and `path` where its file would be, so the message says
    /// which file is missing, not only that a directory is empty.
    #[error(
        "{module}.ko missing at {path}: no modules for kernel {kernel} ({dir} is missing or empty)"
    )]
    NoModulesDir {
        kernel: String,
        dir: String,
        module: String,
        path: String,
    },
    #[error("loading {module} from {path}: {source}")]
    Load {
        module: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadModuleFile { path: String, message: String },
}

/// What `apply` changed, for the report (replace semantics: "already set" is not an error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplySummary {
    /// One short phrase per action: "mtu 1400", "address 192.168.100.2/24", "default via 192.168.100.1".
    pub actions: Vec<String>,
}

/// Finding interfaces. Implementations subscribe to link events *before* looking, so an
/// interface that appears between the look and the wait is not missed.
pub trait Links {
    /// Interface index if `name` exists now.
    async fn find(&mut self, name: &str) -> Result<Option<u32>, NetError>;
    /// Wait (event-driven, no polling loop) until `name` exists or `deadline` passes.
    async fn wait(&mut self, name: &str, deadline: Instant) -> Result<Option<u32>, NetError>;
}

/// Applying a `NetConfig` to an interface, idempotently: MTU, MAC, up, addresses, on-link
/// routes, gateway routes, default route. EEXIST is not an error.
pub trait Apply {
    async fn apply(&mut self, index: u32, cfg: &NetConfig) -> Result<ApplySummary, NetError>;
}

/// Kernel modules: is there a virtio-net device with no driver, and loading one module
/// with its dependencies.
pub trait Modules {
    /// A virtio network device exists (virtio bus device id 1, or PCI 1af4:1000/1041)
    /// and no driver is bound to it.
    fn virtio_net_without_driver(&self) -> bool;
    /// Load `name` and its dependencies (deepest first); returns the modules actually
    /// loaded (already-loaded ones are skipped, EEXIST is fine).
    fn load_with_deps(&self, name: &str) -> Result<Vec<String>, ModuleError>;
    /// The modules to load, in order, when `virtio_net_without_driver()`: `virtio_pci` first
    /// when a virtio PCI function has no driver (no virtio device exists before it binds),
    /// then `virtio_net`. The default is just `virtio_net`.
    fn modules_needed(&self) -> Vec<String> {
        vec!["virtio_net".to_string()]
    }
}

/// The gateway probe: one ARP request on the interface, bounded by `timeout`.
pub trait Prober {
    async fn probe(
        &mut self,
        index: u32,
        interface: &str,
        source: Ipv4Addr,
        target: Ipv4Addr,
        timeout: Duration,
    ) -> ProbeResult;
}
