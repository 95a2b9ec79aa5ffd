//! The shared capture → convert → encode loop. One thread for all viewers: it runs only while
//! at least one viewer is subscribed, paces itself at the configured fps, skips frames whose
//! hash did not change (an idle screen costs one grab + one hash per tick), converts each
//! changed frame to I420 once, encodes it with one encoder per codec that has a viewer (H.264,
//! VP8: a viewer's codec is negotiated per offer), and broadcasts each codec's frames to that
//! codec's viewers. A keyframe of a codec is forced when one of its viewers joins or asks
//! (PLI/FIR); the other codec's viewers are not disturbed.

use super::encode::{ChangeDetector, Codec, Converter, EncoderSettings, VideoEncoder};
pub use super::pipeline_stats::{CodecStats, PipelineStats};
use super::pipeline_stats::{FrameRate, Latencies};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Where frames come from: the X display in production, synthetic frames in tests.
pub trait FrameSource: Send {
    /// One BGRA frame of the encoder's size.
    fn grab(&mut self) -> Result<&[u8], String>;
    /// Whether MIT-SHM is in use (shown in status).
    fn shm(&self) -> bool {
        false
    }
    /// Waits at most `timeout` for the picture to change; `true`: grab now. Sources that
    /// cannot tell say `true` at once and the loop's clock paces them.
    fn wait_change(&mut self, _timeout: Duration) -> Result<bool, String> {
        Ok(true)
    }
    /// Whether [`FrameSource::wait_change`] is driven by the display's damage reports.
    fn damage(&self) -> bool {
        false
    }
    /// How long ago the change the last `wait_change` reported was drawn (the display's
    /// clock), for the latency figures.
    fn change_age(&self) -> Option<Duration> {
        None
    }
}

/// Longest single wait for a change: the loop looks at viewers, keyframe requests and stop
/// at least this often.
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// A still screen is grabbed anyway this often (hash-skipped when unchanged), so a missed
/// damage report can never leave a viewer with a stale picture for long.
const LOOK_AGAIN: Duration = Duration::from_millis(500);

impl FrameSource for super::capture::Capturer {
    fn grab(&mut self) -> Result<&[u8], String> {
        self.capture().map_err(|e| e.to_string())
    }
    fn shm(&self) -> bool {
        self.uses_shm()
    }
    fn wait_change(&mut self, timeout: Duration) -> Result<bool, String> {
        super::capture::Capturer::wait_change(self, timeout).map_err(|e| e.to_string())
    }
    fn damage(&self) -> bool {
        self.uses_damage()
    }
    fn change_age(&self) -> Option<Duration> {
        self.damage_age()
    }
}

/// Opens a frame source; called again after a source error (X server restarted).
pub type SourceFactory = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, String> + Send>;

/// One encoded frame as sent to every viewer of its codec.
#[derive(Debug, Clone)]
pub struct Frame {
    pub data: Bytes,
    pub keyframe: bool,
    /// When the frame was grabbed (the RTP timestamp follows it).
    pub captured: Instant,
    /// The grab's number (the same for every codec's frame of one grab).
    pub seq: u64,
}

/// One codec's viewers, keyframe request and frames.
struct Lane {
    viewers: AtomicUsize,
    keyframe: AtomicBool,
    sent: AtomicU64,
    tx: broadcast::Sender<Arc<Frame>>,
}

impl Lane {
    fn new() -> Lane {
        Lane {
            viewers: AtomicUsize::new(0),
            keyframe: AtomicBool::new(true),
            sent: AtomicU64::new(0),
            tx: broadcast::channel(16).0,
        }
    }

    fn watched(&self) -> bool {
        self.viewers.load(Ordering::SeqCst) > 0
    }
}

struct Shared {
    /// Indexed by [`Codec::index`].
    lanes: [Lane; 2],
    stop: AtomicBool,
    stats: Mutex<PipelineStats>,
}

impl Shared {
    fn lane(&self, codec: Codec) -> &Lane {
        &self.lanes[codec.index()]
    }
}

/// Handle to the pipeline thread; clones share it.
#[derive(Clone)]
pub struct Pipeline {
    shared: Arc<Shared>,
}

/// Subscription of one viewer to one codec; dropping it lets that codec's encoder go (and the
/// loop idle) when it was the last one.
pub struct Subscription {
    pub frames: broadcast::Receiver<Arc<Frame>>,
    codec: Codec,
    shared: Arc<Shared>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared
            .lane(self.codec)
            .viewers
            .fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pipeline {
    /// Starts the (idle) loop thread.
    pub fn start(settings: EncoderSettings, source: SourceFactory) -> Pipeline {
        let shared = Arc::new(Shared {
            lanes: [Lane::new(), Lane::new()],
            stop: AtomicBool::new(false),
            stats: Mutex::new(PipelineStats::new()),
        });
        let s = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("webrtc-pipeline".into())
            .spawn(move || run(s, settings, source))
            .map(|_| ())
            .unwrap_or_else(|e| {
                // Without the thread there is no video; say so where /status shows it.
                if let Ok(mut st) = shared.stats.lock() {
                    st.last_error = Some(format!("cannot start pipeline thread: {e}"));
                }
            });
        Pipeline { shared }
    }

    /// Adds a viewer of `codec`: the loop runs, with an encoder for that codec, and that
    /// codec's next frame is a keyframe.
    pub fn subscribe(&self, codec: Codec) -> Subscription {
        let lane = self.shared.lane(codec);
        let frames = lane.tx.subscribe();
        lane.viewers.fetch_add(1, Ordering::SeqCst);
        self.request_keyframe(codec);
        Subscription {
            frames,
            codec,
            shared: Arc::clone(&self.shared),
        }
    }

    /// The next frame of `codec` will be a keyframe.
    pub fn request_keyframe(&self, codec: Codec) {
        self.shared
            .lane(codec)
            .keyframe
            .store(true, Ordering::SeqCst);
    }

    /// Viewers of every codec.
    pub fn viewers(&self) -> usize {
        Codec::ALL.iter().map(|c| self.viewers_of(*c)).sum()
    }

    pub fn viewers_of(&self, codec: Codec) -> usize {
        self.shared.lane(codec).viewers.load(Ordering::SeqCst)
    }

    /// Counts one frame of `codec` written to a viewer's track (`frames_sent`).
    pub fn frame_sent(&self, codec: Codec) {
        self.shared.lane(codec).sent.fetch_add(1, Ordering::SeqCst);
    }

    pub fn stats(&self) -> PipelineStats {
        let mut st = self
            .shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| PipelineStats::new());
        st.frames_sent = 0;
        for c in Codec::ALL {
            let sent = self.shared.lane(c).sent.load(Ordering::SeqCst);
            st.frames_sent += sent;
            let subscribers = self.viewers_of(c);
            if let Some(cs) = st.codec_mut(c) {
                cs.frames_sent = sent;
                cs.subscribers = subscribers;
                cs.encoders = super::encode::live_encoders_of(c);
            }
        }
        st.encoders = super::encode::live_encoders();
        st.subscribers = self.viewers();
        st
    }

    /// Ends the loop thread (it exits at its next tick).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn record(shared: &Shared, f: impl FnOnce(&mut PipelineStats)) {
    if let Ok(mut s) = shared.stats.lock() {
        f(&mut s);
    }
}

fn record_codec(shared: &Shared, codec: Codec, f: impl FnOnce(&mut CodecStats)) {
    record(shared, |s| {
        if let Some(c) = s.codec_mut(codec) {
            f(c);
        }
    });
}

/// The loop thread's per-codec state.
#[derive(Default)]
struct CodecState {
    encoder: Option<VideoEncoder>,
    /// The rate control dropped this codec's last frame: encode the next grab even if the
    /// screen then looks unchanged, or its viewers would keep a stale picture.
    pending: bool,
    /// When to try again to make an encoder that failed.
    retry_at: Option<Instant>,
    latencies: Latencies,
    rate: FrameRate,
}

fn run(shared: Arc<Shared>, settings: EncoderSettings, mut factory: SourceFactory) {
    let period = Duration::from_secs_f64(1.0 / f64::from(settings.fps.max(1.0)));
    let mut source: Option<Box<dyn FrameSource>> = None;
    let mut converter = Converter::new(settings.width, settings.height);
    let mut codecs: [CodecState; 2] = Default::default();
    let mut detector = ChangeDetector::default();
    let mut seq = 0u64;
    let mut next = Instant::now();
    let mut last_grab = Instant::now();
    let mut latencies = Latencies::default();
    let mut rate = FrameRate::new();
    while !shared.stop.load(Ordering::SeqCst) {
        if let Some(fps) = rate.tick() {
            let (p50, p95) = (latencies.percentile(0.5), latencies.percentile(0.95));
            record(&shared, |s| {
                s.fps = fps;
                s.damage_to_encoded_p50_ms = p50;
                s.damage_to_encoded_p95_ms = p95;
            });
        }
        for c in Codec::ALL {
            let cs = &mut codecs[c.index()];
            if let Some(fps) = cs.rate.tick() {
                let (p50, p95) = (cs.latencies.percentile(0.5), cs.latencies.percentile(0.95));
                record_codec(&shared, c, |s| {
                    s.fps = fps;
                    s.damage_to_encoded_p50_ms = p50;
                    s.damage_to_encoded_p95_ms = p95;
                });
            }
        }
        // A codec nobody watches any more gives its encoder (and its state) back.
        let mut changed_set = false;
        for c in Codec::ALL {
            let cs = &mut codecs[c.index()];
            if !shared.lane(c).watched() && cs.encoder.is_some() {
                cs.encoder = None;
                cs.pending = false;
                changed_set = true;
                super::heap::trim();
            }
        }
        if !Codec::ALL.iter().any(|c| shared.lane(*c).watched()) {
            // Idle: release the X connection's SHM segment.
            if source.take().is_some() || changed_set {
                record(&shared, |s| {
                    s.running = false;
                    s.fps = 0.0;
                    s.encoders_in_use.clear();
                });
            }
            std::thread::sleep(Duration::from_millis(20));
            next = Instant::now();
            continue;
        }
        // The fps cap: never two grabs closer than `period`.
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        if source.is_none() {
            match factory() {
                Ok(s) => {
                    let (shm, damage) = (s.shm(), s.damage());
                    source = Some(s);
                    detector.reset();
                    for lane in &shared.lanes {
                        lane.keyframe.store(true, Ordering::SeqCst);
                    }
                    record(&shared, |st| {
                        st.running = true;
                        st.shm = shm;
                        st.damage = damage;
                        st.last_error = None;
                    });
                }
                Err(e) => {
                    record(&shared, |st| st.last_error = Some(e));
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            }
        }
        // An encoder for every codec with a viewer (a new one starts with a keyframe). One that
        // cannot be made is tried again a second later, without holding up the other codec.
        for c in Codec::ALL {
            let cs = &mut codecs[c.index()];
            if !shared.lane(c).watched()
                || cs.encoder.is_some()
                || cs.retry_at.is_some_and(|t| Instant::now() < t)
            {
                continue;
            }
            match VideoEncoder::new(c, settings) {
                Ok(e) => {
                    cs.encoder = Some(e);
                    cs.retry_at = None;
                    changed_set = true;
                }
                Err(e) => {
                    record(&shared, |st| st.last_error = Some(format!("{c}: {e}")));
                    cs.retry_at = Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
        if changed_set {
            let in_use: Vec<Codec> = Codec::ALL
                .into_iter()
                .filter(|c| codecs[c.index()].encoder.is_some())
                .collect();
            record(&shared, |st| st.encoders_in_use = in_use);
        }
        if codecs.iter().all(|c| c.encoder.is_none()) {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let Some(src) = source.as_mut() else {
            continue;
        };
        // Grab when the screen changed (DAMAGE), not at the next tick of a clock; a keyframe
        // request or a frame rate control dropped does not wait.
        // The latency figure counts only frames that followed a fresh report.
        let mut reported = false;
        // Only codecs being encoded count: an unwatched lane's keyframe flag stays set for its
        // next viewer and must not turn damage-driven grabs into clock-paced ones.
        let owed = Codec::ALL.iter().any(|c| {
            let cs = &codecs[c.index()];
            cs.encoder.is_some() && (cs.pending || shared.lane(*c).keyframe.load(Ordering::SeqCst))
        });
        if !owed {
            match src.wait_change(WAIT_SLICE) {
                Ok(true) => reported = true,
                Ok(false) if last_grab.elapsed() < LOOK_AGAIN => continue,
                Ok(false) => {}
                Err(e) => {
                    record(&shared, |st| st.last_error = Some(e));
                    source = None;
                    continue;
                }
            }
        }
        let t0 = Instant::now();
        last_grab = t0;
        next = t0 + period;
        let frame = match src.grab() {
            Ok(f) => f,
            Err(e) => {
                record(&shared, |st| st.last_error = Some(e));
                source = None;
                continue;
            }
        };
        let grab_us = t0.elapsed().as_micros() as u64;
        let changed = detector.changed(frame);
        // Which codecs encode this grab, and which of them owe a keyframe.
        let mut want_key = [false; 2];
        let mut todo = [false; 2];
        for c in Codec::ALL {
            let (i, cs) = (c.index(), &codecs[c.index()]);
            if cs.encoder.is_none() {
                continue;
            }
            want_key[i] = shared.lane(c).keyframe.swap(false, Ordering::SeqCst);
            todo[i] = changed || want_key[i] || cs.pending;
        }
        if !todo.iter().any(|t| *t) {
            record(&shared, |st| {
                st.frames_grabbed += 1;
                st.frames_unchanged += 1;
                st.grab_us_total += grab_us;
            });
            continue;
        }
        let t1 = Instant::now();
        let i420 = match converter.convert(frame) {
            Ok(f) => f,
            Err(e) => {
                // The source gave a frame of the wrong size: open it again.
                record(&shared, |st| st.last_error = Some(e.to_string()));
                source = None;
                continue;
            }
        };
        seq += 1;
        let mut any_sent = false;
        for c in Codec::ALL {
            let i = c.index();
            let cs = &mut codecs[i];
            let (true, Some(enc)) = (todo[i], cs.encoder.as_mut()) else {
                continue;
            };
            if want_key[i] {
                enc.request_keyframe();
            }
            let t = Instant::now();
            let out = enc.encode(i420);
            let encode_us = t.elapsed().as_micros() as u64;
            match out {
                Ok(Some(ef)) => {
                    cs.pending = false;
                    if let Some(age) = src.change_age().filter(|_| reported) {
                        cs.latencies.push(age.as_secs_f64() * 1000.0);
                    }
                    cs.rate.frames += 1;
                    any_sent = true;
                    let (len, key) = (ef.data.len() as u64, ef.keyframe);
                    let _ = shared.lane(c).tx.send(Arc::new(Frame {
                        data: Bytes::from(ef.data),
                        keyframe: key,
                        captured: t0,
                        seq,
                    }));
                    record(&shared, |st| {
                        st.frames_encoded += 1;
                        st.keyframes += u64::from(key);
                        st.bytes_encoded += len;
                        if let Some(s) = st.codec_mut(c) {
                            s.frames_encoded += 1;
                            s.keyframes += u64::from(key);
                            s.bytes_encoded += len;
                            s.encode_us_total += encode_us;
                        }
                    });
                }
                Ok(None) => {
                    // Rate control dropped it: encode the next grab for this codec even if
                    // the screen then looks unchanged.
                    cs.pending = true;
                    if want_key[i] {
                        shared.lane(c).keyframe.store(true, Ordering::SeqCst);
                    }
                    record_codec(&shared, c, |s| {
                        s.frames_dropped += 1;
                        s.encode_us_total += encode_us;
                    });
                }
                Err(e) => {
                    record(&shared, |st| st.last_error = Some(format!("{c}: {e}")));
                    // A new encoder (starting with a keyframe) a second later, as after a
                    // failed creation: an encoder that fails every frame must not be remade
                    // (~30 MiB for VP8) at every grab; its heap goes back at once.
                    cs.encoder = None;
                    cs.pending = false;
                    cs.retry_at = Some(Instant::now() + Duration::from_secs(1));
                    super::heap::trim();
                    record(&shared, |st| st.encoders_in_use.retain(|x| *x != c));
                }
            }
        }
        if any_sent {
            if let Some(age) = src.change_age().filter(|_| reported) {
                latencies.push(age.as_secs_f64() * 1000.0);
            }
            rate.frames += 1;
        }
        let convert_and_encode_us = t1.elapsed().as_micros() as u64;
        record(&shared, |st| {
            st.frames_grabbed += 1;
            st.grab_us_total += grab_us;
            st.encode_us_total += convert_and_encode_us;
        });
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
