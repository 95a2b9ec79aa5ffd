//! `guest-stream`: the screen streamer (DESIGN.md §6). Captures the X display (x11rb,
//! MIT-SHM, DAMAGE), converts BGRA → I420 (`yuv`), encodes H.264 (openh264, screen-content
//! real-time) or, for viewers whose browser has no H.264, VP8 (libvpx), one encoder per codec
//! in use, and sends it to each viewer's webrtc-rs peer; viewer input comes back on a data
//! channel ([`input`] documents the format) and is injected with XTEST; the same channel
//! carries the clipboard both ways and the VM's pointer to viewers that ask ([`cursor`]).
//!
//! A crate of its own, with its own binary: it is the part with the heavy dependencies
//! (webrtc-rs, openh264, X11) and its own failure domain. `guest-agent` (supervise, serve,
//! OAuth) builds and ships without any of them, so the supervisor that starts first execs a
//! small binary, and a VM without a display carries no streamer at all.
//!
//! The streamer runs as its own supervised process. Its HTTP surface ([`server`]) is on a
//! unix socket that `serve` proxies `/webrtc/*` to (the contract is in
//! [`guest_proto::stream`]), so a streamer crash leaves the agent's HTTP up; `--listen` adds
//! a TCP listener (development, tests).

pub mod auth;
pub mod capture;
pub mod clipboard;
pub mod controller;
pub mod cursor;
pub mod cursor_msg;
pub mod encode;
pub mod heap;
pub mod inject;
pub mod inject_thread;
pub mod input;
pub mod input_queue;
pub mod keycodes;
pub mod keyframe;
pub mod peer;
pub mod pipeline;
pub mod pipeline_stats;
pub mod playout;
pub mod sdp;
pub mod server;
pub mod vp8;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use guest_proto::stream::DEFAULT_SOCKET;

/// Command-line options of `guest-stream`.
#[derive(clap::Args, Debug, Clone)]
pub struct WebrtcArgs {
    /// X display to capture and inject into (default `$DISPLAY`).
    #[arg(long)]
    pub display: Option<String>,
    /// Encoded width (default: `guest_agent.display=` through the supervisor, else 1280).
    #[arg(long, env = "GUESTKIT_DISPLAY_WIDTH", default_value_t = 1280)]
    pub width: u16,
    #[arg(long, env = "GUESTKIT_DISPLAY_HEIGHT", default_value_t = 720)]
    pub height: u16,
    #[arg(long, default_value_t = 30.0)]
    pub fps: f32,
    /// Target bitrate in bits per second.
    #[arg(long, default_value_t = 2_000_000)]
    pub bitrate: u32,
    /// Frames between periodic keyframes; 0 = only on connect and PLI/FIR.
    #[arg(long, default_value_t = 0)]
    pub keyframe_interval: u32,
    /// Most the browser may delay a frame to smooth playback, in ms (playout-delay header
    /// extension; 0 = show every frame as soon as it is decoded, the lowest latency; raise it
    /// for viewers on jittery links).
    #[arg(long, default_value_t = 0)]
    pub playout_delay_max_ms: u32,
    /// Unix socket for `serve` to proxy to.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Also listen on this TCP address (development, tests).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address the ICE host candidates are gathered on (default: the address of the default
    /// route's interface, else 127.0.0.1).
    #[arg(long)]
    pub ice_ip: Option<IpAddr>,
    /// UDP port for ICE (0 = ephemeral per viewer).
    #[arg(long, default_value_t = 0)]
    pub ice_port: u16,
    #[arg(long, default_value = "/run/guest-agent/token")]
    pub token_file: PathBuf,
    #[arg(long, default_value = "/proc/cmdline")]
    pub cmdline: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub max_viewers: usize,
    /// When to grab: `damage` as soon as the X server reports the screen changed (capped at
    /// --fps), or `clock` at every tick of --fps (the old way; the benchmark's baseline).
    #[arg(long, value_enum, default_value_t = CaptureMode::Damage)]
    pub capture: CaptureMode,
    /// STUN/TURN servers for every viewer, and named to WHEP viewers in `Link` headers: a
    /// JSON file `{"iceServers": [{"urls": ..., "username"?, "credential"?}]}` (a file, so
    /// TURN credentials never show in process arguments). In controller mode the controller's
    /// list, fetched for each offer, replaces it.
    #[arg(long)]
    pub ice_servers_file: Option<PathBuf>,
    /// Controller-mode signaling: the host controller's base URL (http://host:port); per VM
    /// from `guest_agent.webrtc_controller=` through the supervisor.
    #[arg(long, env = "GUESTKIT_WEBRTC_CONTROLLER", requires = "session_id")]
    pub controller: Option<String>,
    /// Controller-mode session id (`guest_agent.webrtc_session=`).
    #[arg(long, env = "GUESTKIT_WEBRTC_SESSION", requires = "controller")]
    pub session_id: Option<String>,
}

/// `--capture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptureMode {
    Damage,
    Clock,
}

#[derive(Debug, thiserror::Error)]
pub enum WebrtcError {
    #[error("--{field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("cannot listen on {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
    #[error("controller signaling: {0}")]
    Controller(#[from] controller::ControllerError),
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

impl WebrtcArgs {
    /// Checks the values that would otherwise fail deep inside the encoder.
    pub fn validate(&self) -> Result<(), WebrtcError> {
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if v < 16 || v % 2 != 0 {
                return Err(WebrtcError::Config {
                    field,
                    reason: format!("must be even and at least 16, got {v}"),
                });
            }
        }
        if !(1.0..=120.0).contains(&self.fps) {
            return Err(WebrtcError::Config {
                field: "fps",
                reason: format!("must be 1..=120, got {}", self.fps),
            });
        }
        if !(50_000..=50_000_000).contains(&self.bitrate) {
            return Err(WebrtcError::Config {
                field: "bitrate",
                reason: format!("must be 50000..=50000000 bit/s, got {}", self.bitrate),
            });
        }
        if self.playout_delay_max_ms > 40_950 {
            return Err(WebrtcError::Config {
                field: "playout-delay-max-ms",
                reason: format!("must be 0..=40950, got {}", self.playout_delay_max_ms),
            });
        }
        if self.max_viewers == 0 {
            return Err(WebrtcError::Config {
                field: "max-viewers",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    pub fn encoder_settings(&self) -> encode::EncoderSettings {
        encode::EncoderSettings {
            width: u32::from(self.width),
            height: u32::from(self.height),
            fps: self.fps,
            bitrate_bps: self.bitrate,
            keyframe_interval: self.keyframe_interval,
        }
    }
}

/// The local address the kernel would use towards the outside (a UDP `connect` sends no
/// packet), else loopback.
pub fn default_ice_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The `--ice-servers-file` list; errors name the file and the bad entry.
fn read_ice_servers(path: &std::path::Path) -> Result<Vec<peer::IceServer>, WebrtcError> {
    let bad = |reason: String| WebrtcError::Config {
        field: "ice-servers-file",
        reason: format!("{}: {reason}", path.display()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    controller::parse_ice_servers(&v).map_err(bad)
}

/// Runs the streamer until the process is signalled.
pub async fn run(args: WebrtcArgs) -> Result<(), WebrtcError> {
    args.validate()?;
    let token = auth::load_token(&args.token_file, &args.cmdline);
    let settings = args.encoder_settings();
    let display = args.display.clone();
    let (w, h) = (args.width, args.height);
    let clock = args.capture == CaptureMode::Clock;
    let pipeline = pipeline::Pipeline::start(
        settings,
        Box::new(move || {
            capture::Capturer::connect(display.as_deref(), w, h)
                .map(|mut c| {
                    c.set_clock(clock);
                    Box::new(c) as Box<dyn pipeline::FrameSource>
                })
                .map_err(|e| e.to_string())
        }),
    );
    let ice_servers = match &args.ice_servers_file {
        Some(f) => read_ice_servers(f)?,
        None => Vec::new(),
    };
    let input = inject_thread::InputSink::start_with(args.display.clone(), args.fps);
    let peer = peer::PeerOptions {
        ice_ip: args.ice_ip.unwrap_or_else(default_ice_ip),
        ice_port: args.ice_port,
        ice_servers,
        gather_timeout: Duration::from_millis(2500),
        fps: args.fps,
        playout_delay_max: Duration::from_millis(u64::from(args.playout_delay_max_ms)),
        connect_timeout: Duration::from_secs(30),
    };
    tracing::info!(
        "webrtc streamer: {}x{}@{} {} bit/s, ICE on {}",
        args.width,
        args.height,
        args.fps,
        args.bitrate,
        peer.ice_ip
    );
    let streamer = server::Streamer::new(pipeline, input, peer, args.max_viewers);

    let mut tasks = tokio::task::JoinSet::new();
    // The unix socket is behind `serve`'s own token check, and only root can reach it.
    if let Some(dir) = args.socket.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(&args.socket);
    let unix =
        tokio::net::UnixListener::bind(&args.socket).map_err(|source| WebrtcError::Listen {
            what: args.socket.display().to_string(),
            source,
        })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&args.socket, std::fs::Permissions::from_mode(0o600));
    }
    let app = server::router(Arc::clone(&streamer), None);
    tasks.spawn(async move { axum::serve(unix, app).await });
    if let Some(addr) = args.listen {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| WebrtcError::Listen {
                what: addr.to_string(),
                source,
            })?;
        let app = server::router(Arc::clone(&streamer), token);
        tasks.spawn(async move { axum::serve(tcp, app).await });
    }
    tracing::info!("webrtc streamer listening on {}", args.socket.display());
    let signaling = async {
        match (&args.controller, &args.session_id) {
            (Some(base), Some(session)) => {
                let opts = controller::ControllerOptions {
                    base: base.clone(),
                    session: session.clone(),
                    poll_min: Duration::from_millis(25),
                    poll_max: Duration::from_millis(400),
                    request_timeout: controller::REQUEST_TIMEOUT,
                };
                controller::run(Arc::clone(&streamer), opts).await
            }
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        r = signaling => Err(r.err().map(WebrtcError::from).unwrap_or(WebrtcError::Serve(std::io::Error::other("controller loop ended")))),
        r = tasks.join_next() => match r {
            Some(Ok(Err(e))) => Err(WebrtcError::Serve(e)),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod ice_file_tests {
    use super::*;

    #[test]
    fn a_bad_ice_servers_file_names_the_file_and_the_entry() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("ice.json");
        std::fs::write(
            &f,
            r#"{"iceServers": [{"urls": "stun:a:1"}, {"url": "x"}]}"#,
        )
        .expect("write");
        let e = read_ice_servers(&f).expect_err("bad entry").to_string();
        assert!(e.starts_with("--ice-servers-file: "), "{e}");
        assert!(e.contains("ice.json: iceServers[1].urls: missing"), "{e}");
        std::fs::write(&f, "{").expect("write");
        let e = read_ice_servers(&f).expect_err("bad json").to_string();
        assert!(e.contains("ice.json: EOF"), "{e}");
        let e = read_ice_servers(&d.path().join("none.json"))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("none.json: No such file"), "{e}");
        std::fs::write(
            &f,
            r#"[{"urls": ["turn:t:3478"], "username": "u", "credential": "c"}]"#,
        )
        .expect("write");
        let s = read_ice_servers(&f).expect("good");
        assert_eq!(s[0].username.as_deref(), Some("u"));
    }
}
