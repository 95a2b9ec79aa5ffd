//! `guest-stream`: the screen streamer as its own process (DESIGN.md §6); the work is in the
//! library. Run by the supervisor as a service that depends on Xvfb.

use clap::Parser;
use std::path::Path;

/// Where journald listens; logging goes there when it exists (as for guest-agent).
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

#[derive(Parser)]
#[command(
    name = "guest-stream",
    version,
    about = "Screen streamer: X display -> H.264 or VP8 -> WebRTC viewers, input back through XTEST"
)]
struct Cli {
    #[command(flatten)]
    args: guest_stream::WebrtcArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Before the runtime's threads: dropped encoders' memory must go back (see heap.rs).
    guest_stream::heap::use_one_arena();
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("guest-stream: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(guest_stream::run(cli.args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guest-stream: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// tracing to the journal when its socket exists, else plain stderr (which the supervisor
/// captures per service).
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let level = tracing_subscriber::filter::LevelFilter::INFO;
    if Path::new(JOURNAL_SOCKET).exists() {
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
