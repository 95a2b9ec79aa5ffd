//! guest-agent: `supervise` and `serve` (DESIGN.md §4). Argument parsing, logging set-up
//! and the built-in `--dev` configuration; the work is in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use guest_agent::{config, serve, state, supervisor};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "guest-agent",
    version,
    about = "In-VM supervisor and HTTP agent"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run the configured services as children; restart, reap, publish their state.
    Supervise {
        /// Config file (default /etc/guest-agent/config.toml; built-in with --dev).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Developer mode: loopback only, temporary state dir, built-in config, no root.
        #[arg(long)]
        dev: bool,
        /// Where state.json and control.sock live.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// With --dev: also run the VM's screen — Xvfb at WxH (default 1280x720), openbox when
        /// installed, the streamer — and print the viewer URL.
        #[arg(long, requires = "dev", num_args = 0..=1, default_missing_value = "1280x720", value_name = "WxH")]
        display: Option<guest_proto::vm_settings::DisplaySize>,
    },
    /// The HTTP agent (:8080).
    Serve {
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        #[arg(long, env = state::STATE_DIR_ENV, default_value = state::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The API token in clear (root-only file). Without it: `guest_agent.token_sha256=` or
        /// `guest_agent.token=` from the kernel command line; without any, guarded routes
        /// refuse every request (503) unless --insecure-no-auth.
        #[arg(long, default_value = "/run/guest-agent/token")]
        token_file: PathBuf,
        /// Kernel command line to read `guest_agent.token_sha256=`, `guest_agent.token=`,
        /// `guest_agent.auth=none` and `guest_agent.allowed_hosts=` from.
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
        /// Serve the guarded routes to anyone, without a token (for a controller that has
        /// none). Reported in /health as `auth: "none"` and warned about on the console.
        #[arg(long)]
        insecure_no_auth: bool,
        /// A name the agent may be called by (Host header) besides this machine's addresses
        /// and localhost; repeatable. Other names are refused (DNS rebinding).
        #[arg(long = "allowed-host", value_name = "NAME")]
        allowed_hosts: Vec<String>,
        /// Most open connections; when full, the oldest connection of the peer holding the
        /// most is closed. Lowered to fit the open-file limit.
        #[arg(long, default_value_t = serve::listener::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        #[arg(long, default_value = "/run/guest-netinit/state.json")]
        netinit_state: PathBuf,
        /// OAuth settings and provider overrides (missing file: built-in providers).
        #[arg(long, default_value = guest_agent::oauth::config::DEFAULT_PATH)]
        oauth_config: PathBuf,
        /// AF_VSOCK port to serve the same routes on (0 = off; default 8080).
        /// `guest_agent.vsock_port=` on the kernel command line wins over it.
        #[arg(long, value_parser = vsock_port)]
        vsock_port: Option<u32>,
        /// Host port (CID 2) to push the readiness line to (0 = off, the default).
        /// `guest_agent.ready_port=` on the kernel command line wins over it.
        #[arg(long, value_parser = vsock_port)]
        ready_port: Option<u32>,
        /// The agent's config file; its `[serve]` table may set vsock_port and ready_port.
        #[arg(long, default_value = "/etc/guest-agent/config.toml")]
        config: PathBuf,
    },
    /// The BROWSER / xdg-open shim of OAuth sessions: hands the URL to the running agent.
    OpenUrl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The screen streamer, now its own binary: runs `guest-stream` with these arguments
    /// (kept so existing supervisor configs work).
    Webrtc {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = parse_cli();
    if let Role::OpenUrl { args } = &cli.role {
        // Run by a login CLI: no runtime, no logging set-up, xdg-open's exit status.
        return std::process::ExitCode::from(guest_agent::oauth::shim::open_url_main(args));
    }
    if let Role::Webrtc { args } = &cli.role {
        // Replaced by guest-stream; returns only when that cannot run.
        eprintln!(
            "guest-agent webrtc: {}",
            guest_agent::streamer::exec_streamer(args)
        );
        return std::process::ExitCode::FAILURE;
    }
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return guest_agent::pid1::end(&Err(anyhow::anyhow!("cannot start the runtime: {e}")));
        }
    };
    // As PID 1 (the initramfs image) `end` never returns: it says why and powers off.
    let outcome = rt.block_on(run(cli.role));
    guest_agent::pid1::end(&outcome)
}

/// The arguments; as PID 1, words the kernel passed that are not ours are dropped (with a
/// console warning) instead of ending init with a usage error.
fn parse_cli() -> Cli {
    if !guest_agent::pid1::is_pid1() {
        return Cli::parse();
    }
    guest_agent::pid1::install_panic_hook();
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (args, dropped) =
        guest_agent::pid1::supervise_args(&args, |a| Cli::try_parse_from(a).is_ok());
    guest_agent::pid1::warn_dropped(&dropped);
    match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // supervise_args only returns parseable arguments or a bare `supervise`.
        Err(_) => Cli {
            role: Role::Supervise {
                config: None,
                dev: false,
                state_dir: None,
                display: None,
            },
        },
    }
}

async fn run(role: Role) -> anyhow::Result<()> {
    match role {
        Role::Serve {
            listen,
            state_dir,
            token_file,
            cmdline,
            netinit_state,
            oauth_config,
            insecure_no_auth,
            allowed_hosts,
            max_connections,
            vsock_port,
            ready_port,
            config,
        } => {
            serve::run(serve::ServeOptions {
                listen,
                state_dir,
                token_file,
                cmdline,
                netinit_state,
                oauth_config,
                insecure_no_auth,
                allowed_hosts,
                max_connections,
                vsock_flags: serve::vsock::PortChoices {
                    vsock_port,
                    ready_port,
                },
                config,
            })
            .await
        }
        // Handled in main() before the runtime starts.
        Role::OpenUrl { .. } | Role::Webrtc { .. } => Ok(()),
        Role::Supervise {
            config,
            dev,
            state_dir,
            display,
        } => {
            if dev {
                return supervise_dev(config, state_dir, display).await;
            }
            let path = config.unwrap_or_else(|| PathBuf::from("/etc/guest-agent/config.toml"));
            let cfg = config::load(&path)?;
            let state_dir = state_dir.unwrap_or_else(|| PathBuf::from(state::DEFAULT_STATE_DIR));
            supervisor::run(cfg, supervisor::Options { state_dir }).await
        }
    }
}

/// `supervise --dev`: serve on 127.0.0.1:8080 (or a free port), a temp state dir.
async fn supervise_dev(
    config: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    display: Option<guest_proto::vm_settings::DisplaySize>,
) -> anyhow::Result<()> {
    let (dir, temp) = match state_dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("guest-agent-dev-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let addr = free_loopback_addr()?;
    let screen = display.map(guest_agent::dev::screen).transpose()?;
    let cfg = match config {
        Some(p) => config::load(&p)?,
        None => {
            let exe = std::env::current_exe().context("locating our own binary")?;
            let text = guest_agent::dev::config(&exe, &dir, addr, screen.as_ref());
            config::parse(&text, "<built-in dev config>")?
        }
    };
    let token = dir.join("token");
    write_dev_token(&token)?;
    eprintln!(
        "guest-agent dev: http://{addr}/health  (state dir {})",
        dir.display()
    );
    eprintln!(
        "guest-agent dev: API token in {} (Authorization: Bearer <its contents>)",
        token.display()
    );
    if let Some(s) = &screen {
        eprintln!(
            "guest-agent dev: screen {} on display {}; viewer: {}",
            s.size,
            s.display,
            guest_agent::dev::viewer_url(addr, &token)
        );
    }
    let r = supervisor::run(
        cfg,
        supervisor::Options {
            state_dir: dir.clone(),
        },
    )
    .await;
    if temp {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("guest-agent dev: cannot remove {}: {e}", dir.display());
        }
    }
    r
}

/// A random token (0600) for the dev agent, unless the file already has one: the agent fails
/// closed without a token, and dev mode should not need `--insecure-no-auth`.
fn write_dev_token(path: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::read_to_string(path).is_ok_and(|t| !t.trim().is_empty()) {
        return Ok(());
    }
    let mut raw = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .context("reading /dev/urandom for the dev token")?;
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(hex.as_bytes()))
        .with_context(|| format!("writing the dev token to {}", path.display()))
}

/// clap's parser for the vsock port flags.
fn vsock_port(s: &str) -> Result<u32, String> {
    serve::vsock::parse_port(s)
}

/// 127.0.0.1:8080 when free, else any free loopback port.
fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:8080")
        .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))?;
    Ok(l.local_addr()?)
}

/// tracing to the journal when its socket exists, else plain stderr.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let level = tracing_subscriber::filter::LevelFilter::INFO;
    if Path::new(guest_agent::logs::JOURNAL_SOCKET).exists() {
        if let Ok(j) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(j.with_filter(level))
                .init();
            return;
        }
    }
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(level),
        )
        .init();
}
