//! The contract between `guest-agent serve` and the screen streamer (`guest-stream`), two
//! processes of two crates: where the streamer's HTTP socket is, and the viewer page.
//!
//! `serve` proxies `/webrtc/*` to the socket and serves `/viewer` itself, so a viewer page
//! stays reachable (and reconnects by itself) while the streamer restarts; the streamer also
//! serves the page on its own `--listen` address (development). The page is the client of
//! the streamer's data-channel format (guest-stream's `input` module documents it), so it
//! lives here once, next to the other wire types, and both binaries carry the same bytes.

/// Default unix socket of the streamer's HTTP surface (root-only, 0600).
pub const DEFAULT_SOCKET: &str = "/run/guest-agent/webrtc.sock";

/// Environment variable naming another socket (for `serve`; the streamer takes `--socket`).
pub const SOCKET_ENV: &str = "GUEST_AGENT_WEBRTC_SOCKET";

/// The viewer page (`GET /viewer`): static, no secret in it (the token arrives in the URL
/// fragment, which browsers never send).
pub const VIEWER_HTML: &str = include_str!("../assets/viewer.html");

/// The streamer's binary name; the images install it only where there is a display.
pub const STREAMER_BIN: &str = "guest-stream";
