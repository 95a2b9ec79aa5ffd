//! Where the screen streamer is. It is its own binary, `guest-stream` (its own crate, with
//! webrtc-rs, openh264 and X11), so this agent builds and ships without them; images with a
//! display install it next to the agent, and `guest-agent webrtc` (the old way of running it)
//! still works by handing over to it.

use guest_proto::stream::STREAMER_BIN;
use std::path::{Path, PathBuf};

/// `guest-stream` next to our own binary (how the images and `target/<profile>/` lay them
/// out), else the first on `PATH`.
pub fn find() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(STREAMER_BIN)))
        .filter(|p| p.is_file());
    beside.or_else(|| on_path(STREAMER_BIN))
}

/// Where a program is on `PATH`, if it is.
pub fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|f| f.is_file())
    })
}

/// Why there is no streamer, for the error a user sees.
pub fn missing() -> String {
    format!(
        "the screen streamer `{STREAMER_BIN}` is neither next to guest-agent nor on PATH \
         (build it with `cargo build -p guest-stream`; images with a display install it)"
    )
}

/// `guest-agent webrtc ARGS…`: replaces this process with `guest-stream ARGS…`, so existing
/// supervisor configs keep working (same flags, same pid for the supervisor). Returns only
/// when it cannot, with the reason.
pub fn exec_streamer(args: &[String]) -> String {
    use std::os::unix::process::CommandExt;
    let Some(bin) = find() else {
        return missing();
    };
    let e = std::process::Command::new(&bin).args(args).exec();
    format!("cannot run {}: {e}", display(&bin))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
