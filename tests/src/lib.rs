//! Shared harness for the integration tests in `tests/tests/` and for `cargo xtask bench`:
//! network namespaces that clean up after themselves, the standard Firecracker-like topology
//! (a "host" with bridge `fcbr0`, a "guest" with `eth0` over a veth), reading addresses and
//! routes back with netlink, locating the built binaries and running guest-netinit.
//!
//! Harness functions panic with a message saying what broke: in a test, a broken harness is a
//! failed test, never a skipped one (we are root, CI is root; see DESIGN.md §7).

pub mod bins;
pub mod cdp;
pub mod dnsmasq;
pub mod netinit;
pub mod netns;
pub mod ns_spawner;
pub mod readback;
pub mod topology;
pub mod vm;

pub use bins::bin;
pub use netinit::{NetinitOutcome, NetinitRun};
pub use netns::{require_netns_prerequisites, run_in, Namespace};
pub use ns_spawner::NsSpawner;
pub use readback::{Address, LinkInfo, Route};
pub use topology::{Topology, GATEWAY, GUEST_NIC, HOST_BRIDGE, SUBNET_PREFIX};
