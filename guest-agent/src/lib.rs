//! guest-agent: the in-VM service supervisor (`supervise`) and the HTTP agent (`serve`),
//! see DESIGN.md §4. The binary in `main.rs` only parses arguments and calls in here.

pub mod backoff;
pub mod config;
pub mod console;
pub mod dev;
pub use guest_proto::envfile;
pub mod logs;
pub mod notify;
pub mod oauth;
pub mod pid1;
pub mod serve;
pub mod state;
pub mod streamer;
pub mod supervisor;
pub mod systemd;
