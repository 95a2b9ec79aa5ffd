//! host-client: the crate a host controller links to drive guestkit VMs (DESIGN.md §5).
//!
//! - [`mod@diagnose`]: what a VM's console log says went wrong, and how far the boot got.
//! - [`client`]: typed calls to the agent's HTTP API, each with a timeout.
//! - [`transport`]: how the agent is reached: TCP, Firecracker's hybrid vsock, AF_VSOCK.
//! - [`wait`]: wait for a VM to be ready, failing fast on a fatal console finding.
//! - [`bootargs`]: kernel command line and Firecracker config from typed values (failure F3).
//! - [`tap`]: TAP device names and cleanup of stale ones (failure F9).

pub mod bootargs;
pub mod client;
pub mod console;
pub mod diagnose;
mod finding_set;
pub mod firecracker;
pub mod health_diag;
mod hints;
pub mod oauth;
pub mod ready_push;
mod signatures;
pub mod tap;
pub mod text;
pub mod transport;
pub mod wait;

pub use bootargs::{BootArgs, BootArgsError};
pub use client::{AgentAddr, ClientError, ErrorClass, GuestClient};
pub use diagnose::{
    analyze, diagnose, timeline, Cause, Diagnoser, Diagnosis, Finding, Milestone, Severity,
    TimelineEntry,
};
pub use guest_proto::IpConfig;
pub use wait::{wait_ready, wait_ready_with, Progress, Ready, Stage, WaitError, WaitOptions};
