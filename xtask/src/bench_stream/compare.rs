//! The side-by-side table of `bench stream`: every screen × capture × codec run, then per
//! screen the damage / clock ratios and the VP8 / H.264 ratios (damage).

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

/// One run: what was measured and its figures.
#[derive(Debug, Clone)]
pub struct Run {
    pub screen: &'static str,
    pub capture: &'static str,
    pub codec: &'static str,
    pub figures: Figures,
}

/// Prints the runs and the ratios.
pub fn print(screens: &[&str], runs: &[Run]) {
    banner("bench stream: side by side (clock = grabbing on every tick, the way before; damage = on the X server's reports)");
    println!(
        "{:<6} {:<7} {:<5} {:>6} {:>7} {:>8} {:>8} {:>8} {:>11} {:>11}",
        "screen",
        "capture",
        "codec",
        "fps",
        "CPU %",
        "Mbit/s",
        "g2g p50",
        "g2g p95",
        "share p50",
        "share p95"
    );
    for r in runs {
        let f = &r.figures;
        println!(
            "{:<6} {:<7} {:<5} {:>6.1} {:>7.1} {:>8.2} {:>6.0} ms {:>6.0} ms {:>8.1} ms {:>8.1} ms",
            r.screen,
            r.capture,
            r.codec,
            f.fps,
            f.cpu,
            f.mbps,
            f.p50,
            f.p95,
            f.share_p50,
            f.share_p95
        );
    }
    for screen in screens {
        let get = |capture: &str, codec: &str| {
            runs.iter()
                .find(|r| r.screen == *screen && r.capture == capture && r.codec == codec)
                .map(|r| r.figures.clone())
        };
        for codec in ["h264", "vp8"] {
            if let (Some(clock), Some(damage)) = (get("clock", codec), get("damage", codec)) {
                println!(
                    "{screen}: damage / clock ({codec})  glass-to-glass p50 {:.2}x, streamer share p50 {:.2}x, CPU {:.2}x   (goals: share p50 <= 12 ms, g2g p50 <= 45 ms, CPU no higher)",
                    damage.p50 / clock.p50,
                    damage.share_p50 / clock.share_p50,
                    damage.cpu / clock.cpu
                );
            }
        }
        if let (Some(h264), Some(vp8)) = (get("damage", "h264"), get("damage", "vp8")) {
            println!(
                "{screen}: vp8 / h264 (damage)  fps {:.2}x, CPU {:.2}x, bitrate {:.2}x, glass-to-glass p50 {:.2}x p95 {:.2}x, streamer share p50 {:.2}x",
                vp8.fps / h264.fps,
                vp8.cpu / h264.cpu,
                vp8.mbps / h264.mbps,
                vp8.p50 / h264.p50,
                vp8.p95 / h264.p95,
                vp8.share_p50 / h264.share_p50
            );
        }
    }
}
