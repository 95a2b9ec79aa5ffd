//! The pipeline's figures for `/webrtc/status`, `/health` and the benchmark, in total and per
//! codec, and the two small meters behind them (a latency ring, a frames-per-second window).

use super::encode::Codec;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Counters for /status, /health and the benchmark. The totals count every codec's encoder;
/// `codecs` splits them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PipelineStats {
    pub running: bool,
    pub shm: bool,
    pub frames_grabbed: u64,
    pub frames_unchanged: u64,
    /// Frames encoded, summed over the codecs (a grab encoded for H.264 and VP8 counts 2).
    pub frames_encoded: u64,
    pub keyframes: u64,
    pub bytes_encoded: u64,
    pub grab_us_total: u64,
    /// BGRA → I420 conversion (once per grab) plus every codec's encode.
    pub encode_us_total: u64,
    /// Whether grabs follow the display's DAMAGE reports (else a clock at `fps`).
    pub damage: bool,
    /// Median over the last 256 encoded grabs of screen drawn (the DAMAGE report's
    /// timestamp) → frame encoded (by every codec in use), in ms: the streamer's share of
    /// the latency.
    pub damage_to_encoded_p50_ms: Option<f64>,
    /// The same, 95th percentile.
    pub damage_to_encoded_p95_ms: Option<f64>,
    /// Grabs encoded per second over the last full second (0 while idle), whatever the
    /// number of codecs.
    pub fps: f32,
    /// Encoded frames written to viewers' tracks, summed over all viewers and codecs: with
    /// the shared encoders this grows by one per viewer of a codec for each frame of it.
    pub frames_sent: u64,
    /// Encoders alive in the process ([`super::encode::live_encoders`]): at most one per
    /// codec however many viewers watch.
    pub encoders: usize,
    /// The codecs this pipeline holds an encoder for (those with at least one viewer).
    pub encoders_in_use: Vec<Codec>,
    /// Viewers subscribed to the encoded frames, all codecs.
    pub subscribers: usize,
    /// Per codec, H.264 then VP8.
    pub codecs: Vec<CodecStats>,
    pub last_error: Option<String>,
}

/// One codec's share of [`PipelineStats`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct CodecStats {
    pub codec: Codec,
    /// Encoders of this codec alive in the process.
    pub encoders: usize,
    pub subscribers: usize,
    pub frames_encoded: u64,
    pub keyframes: u64,
    pub bytes_encoded: u64,
    /// This codec's encode time only (the conversion is shared).
    pub encode_us_total: u64,
    /// Frames the rate control dropped.
    pub frames_dropped: u64,
    pub frames_sent: u64,
    pub fps: f32,
    pub damage_to_encoded_p50_ms: Option<f64>,
    pub damage_to_encoded_p95_ms: Option<f64>,
}

impl CodecStats {
    pub fn new(codec: Codec) -> CodecStats {
        CodecStats {
            codec,
            encoders: 0,
            subscribers: 0,
            frames_encoded: 0,
            keyframes: 0,
            bytes_encoded: 0,
            encode_us_total: 0,
            frames_dropped: 0,
            frames_sent: 0,
            fps: 0.0,
            damage_to_encoded_p50_ms: None,
            damage_to_encoded_p95_ms: None,
        }
    }
}

impl PipelineStats {
    pub fn new() -> PipelineStats {
        PipelineStats {
            codecs: Codec::ALL.iter().map(|c| CodecStats::new(*c)).collect(),
            ..Default::default()
        }
    }

    /// The entry of `codec` (always there: [`PipelineStats::new`] makes one per codec).
    pub fn codec_mut(&mut self, codec: Codec) -> Option<&mut CodecStats> {
        self.codecs.iter_mut().find(|c| c.codec == codec)
    }
}

/// The last 256 change → encoded latencies, in ms.
#[derive(Default)]
pub struct Latencies {
    ring: VecDeque<f64>,
}

impl Latencies {
    pub fn push(&mut self, ms: f64) {
        if self.ring.len() == 256 {
            self.ring.pop_front();
        }
        self.ring.push_back(ms);
    }

    pub fn percentile(&self, p: f64) -> Option<f64> {
        let mut v: Vec<f64> = self.ring.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[((v.len() - 1) as f64 * p).round() as usize])
    }
}

/// Counts frames per wall-clock second for the `fps` figures.
pub struct FrameRate {
    since: Instant,
    pub frames: u32,
}

impl FrameRate {
    pub fn new() -> Self {
        FrameRate {
            since: Instant::now(),
            frames: 0,
        }
    }

    /// The rate of the window just closed, once a second.
    pub fn tick(&mut self) -> Option<f32> {
        let dt = self.since.elapsed();
        if dt < Duration::from_secs(1) {
            return None;
        }
        let fps = self.frames as f32 / dt.as_secs_f32();
        *self = FrameRate::new();
        Some(fps)
    }
}

impl Default for FrameRate {
    fn default() -> Self {
        FrameRate::new()
    }
}
