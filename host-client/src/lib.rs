//! host-client: the crate a host controller links to drive guestkit VMs (DESIGN.md §5).
//! Boot arguments are built from `guest_proto::IpConfig`, so the host cannot emit a
//! malformed `ip=` (failure F3).

pub use guest_proto::IpConfig;
