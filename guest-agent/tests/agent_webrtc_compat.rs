//! `guest-agent webrtc …` (how supervisor configs ran the streamer before it became its own
//! binary) hands over to `guest-stream` with the same arguments, and says so when it cannot.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_guest-agent");

#[test]
fn the_old_role_runs_guest_stream_with_the_same_arguments() {
    // guest-stream next to guest-agent (target/<profile>/), as `cargo build --workspace` and
    // the images lay them out.
    let beside = std::path::Path::new(BIN).with_file_name("guest-stream");
    assert!(
        beside.is_file(),
        "{} is not built: `cargo build --workspace --bins` (cargo xtask test does)",
        beside.display()
    );
    let out = Command::new(BIN)
        .args(["webrtc", "--fps", "0"])
        .output()
        .expect("run guest-agent webrtc");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // The streamer's own validation answered: the arguments reached it.
    assert!(
        err.contains("guest-stream: --fps: must be 1..=120, got 0"),
        "{err}"
    );
}

#[test]
fn without_the_streamer_the_old_role_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lone = dir.path().join("guest-agent");
    std::fs::copy(BIN, &lone).expect("copy the agent alone");
    let out = Command::new(&lone)
        .args(["webrtc", "--display", ":1"])
        .env("PATH", dir.path())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("`guest-stream` is neither next to guest-agent nor on PATH"),
        "{err}"
    );
}
