//! guest-agent: `supervise`, `serve` and `webrtc` roles (see DESIGN.md §4).
//! Not built yet: this binary only says so, and exits non-zero.

fn main() {
    eprintln!("guest-agent: not implemented yet (see the guest-agent issue)");
    std::process::exit(64);
}
