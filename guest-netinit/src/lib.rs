//! guest-netinit: configure the VM's network from the kernel command line or a template,
//! before anything else runs (DESIGN.md §3). The binary is `main.rs`; this library holds
//! the logic so tests and fuzz targets reach it.
//!
//! Pure: `template` (the `.network` subset), `sources` (cmdline + template → one `NetConfig`),
//! `conflicts` (other configs of the interface in the image), `files` (file contents).
//! Effects: `system` (traits) implemented by `netlink`, `modules`, `probe`; `run` orchestrates,
//! `report` tells, `exit` maps failures to exit codes, `cli` reads the arguments, `tuning` the cmdline's
//! `guest_netinit.*` tunables;
//! `dhcp` gets a DHCPv4 lease (or decides the static fallback); `init` is PID 1 mode (mounts,
//! `lo`, modules, the run, exec of the next init); `check` lints a golden rootfs.

pub mod check;
pub mod cli;
pub mod config;
pub mod conflicts;
pub mod dhcp;
pub mod exit;
pub mod files;
pub mod init;
pub mod modules;
pub mod netlink;
pub(crate) mod packet_socket;
pub mod probe;
pub mod report;
pub mod run;
pub mod sources;
pub mod system;
pub mod template;
pub mod tuning;

#[cfg(test)]
mod test_support;
