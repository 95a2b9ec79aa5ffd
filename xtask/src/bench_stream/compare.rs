//! The side-by-side table of `bench stream`: every screen × capture run, and the damage /
//! clock ratios per screen.

use crate::sh::banner;

/// One run's figures, for the side-by-side table.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub fps: f64,
    pub cpu: f64,
    pub mbps: f64,
    pub p50: f64,
    pub p95: f64,
    pub share_p50: f64,
    pub share_p95: f64,
}

/// Prints the runs (screen, capture, figures) and the ratios.
pub fn print(screens: &[&str], table: &[(&str, &str, Figures)]) {
    banner("bench stream: side by side (clock = grabbing on every tick, the way before; damage = on the X server's reports)");
    println!(
        "{:<6} {:<7} {:>6} {:>7} {:>8} {:>8} {:>8} {:>11} {:>11}",
        "screen",
        "capture",
        "fps",
        "CPU %",
        "Mbit/s",
        "g2g p50",
        "g2g p95",
        "share p50",
        "share p95"
    );
    for (screen, capture, f) in table {
        println!(
            "{screen:<6} {capture:<7} {:>6.1} {:>7.1} {:>8.2} {:>6.0} ms {:>6.0} ms {:>8.1} ms {:>8.1} ms",
            f.fps, f.cpu, f.mbps, f.p50, f.p95, f.share_p50, f.share_p95
        );
    }
    for screen in screens {
        let get = |c: &str| {
            table
                .iter()
                .find(|(s, k, _)| s == screen && *k == c)
                .map(|t| t.2.clone())
        };
        if let (Some(clock), Some(damage)) = (get("clock"), get("damage")) {
            println!(
                "{screen}: damage / clock  glass-to-glass p50 {:.2}x, streamer share p50 {:.2}x, CPU {:.2}x   (goals: share p50 <= 12 ms, g2g p50 <= 45 ms, CPU no higher)",
                damage.p50 / clock.p50,
                damage.share_p50 / clock.share_p50,
                damage.cpu / clock.cpu
            );
        }
    }
}
