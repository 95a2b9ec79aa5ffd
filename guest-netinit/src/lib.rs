//! guest-netinit: configure the VM's network from the kernel command line or a template,
//! before anything else runs (DESIGN.md §3). The binary is `main.rs`; this library holds
//! the logic so tests and fuzz targets reach it.

pub mod config;
pub mod system;
pub mod netlink;
