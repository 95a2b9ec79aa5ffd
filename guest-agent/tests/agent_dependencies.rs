//! The agent ships without the streamer's dependencies (issue 15 item 6): webrtc-rs, openh264,
//! libvpx, X11 and the pixel converters belong to `guest-stream` only. The supervisor that
//! every VM starts first, and VMs without a display, must not carry them. This reads the real
//! dependency graph (`cargo tree`), so adding one of them back to guest-agent fails here.

use std::process::Command;

/// Crates that mean "the streamer got linked into the agent".
const STREAMER_ONLY: &[&str] = &[
    "webrtc",
    "rtc",
    "openh264",
    "openh264-sys2",
    "x11rb",
    "x11rb-protocol",
    "yuv",
    "guest-stream",
];

fn tree(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-p", package, "-e", "normal,build"])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_agent_links_none_of_the_streamers_dependencies() {
    let agent = tree("guest-agent");
    let stream = tree("guest-stream");
    // The check can fail: the streamer itself has every one of them but its own name.
    for c in STREAMER_ONLY.iter().filter(|c| **c != "guest-stream") {
        assert!(
            stream.contains(&c.to_string()),
            "guest-stream lost {c}? {stream:?}"
        );
    }
    let found: Vec<&&str> = STREAMER_ONLY
        .iter()
        .filter(|c| agent.contains(&c.to_string()))
        .collect();
    assert!(
        found.is_empty(),
        "guest-agent depends on {found:?}, which only the streamer (guest-stream) should"
    );
    assert!(
        agent.len() < stream.len(),
        "{} vs {}",
        agent.len(),
        stream.len()
    );
}
