//! Wire types shared by every side of guestkit. A type crosses a crate boundary only
//! through here, so the host that builds a kernel command line and the guest that
//! parses it cannot disagree about the grammar (failure F3 in DESIGN.md).
//!
//! Pure data and pure functions only: no I/O, no async, serde for the wire.

pub mod api;
pub mod cmdline;
pub mod envfile;
pub mod event;
pub mod ipconfig;
pub mod oauth;
pub mod readiness;
pub mod report;
pub mod stream;
pub mod vm_settings;
pub mod vsock;

pub use cmdline::{CmdlineError, KernelCmdline, RdRoute};
pub use event::{Component, ConsoleEvent, Event, Level, EVENT_PREFIX};
pub use ipconfig::{Autoconf, IpConfig, IpConfigError, IpForm, MacAddr};
pub use report::{
    AddressReport, ConfigSource, Conflict, DhcpLease, DhcpLeaseReport, FailureReport,
    NetinitReport, Outcome, ProbeResult, RouteReport, StepReport,
};
