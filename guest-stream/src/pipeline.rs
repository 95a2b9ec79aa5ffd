//! The shared capture → convert → encode loop. One thread for all viewers: it runs only while
//! at least one viewer is subscribed, paces itself at the configured fps, skips frames whose
//! hash did not change (an idle screen costs one grab + one hash per tick), and broadcasts
//! each encoded frame to every viewer's sender task. A keyframe is forced when a viewer joins
//! and when any viewer asks (PLI/FIR).

use super::encode::{ChangeDetector, EncoderSettings, H264Encoder};
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

/// One encoded frame as sent to every viewer.
#[derive(Debug, Clone)]
pub struct Frame {
    pub data: Bytes,
    pub keyframe: bool,
    /// When the frame was grabbed (the RTP timestamp follows it).
    pub captured: Instant,
    pub seq: u64,
}

/// Counters for /status, /health and the benchmark.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PipelineStats {
    pub running: bool,
    pub shm: bool,
    pub frames_grabbed: u64,
    pub frames_unchanged: u64,
    pub frames_encoded: u64,
    pub keyframes: u64,
    pub bytes_encoded: u64,
    pub grab_us_total: u64,
    pub encode_us_total: u64,
    /// Whether grabs follow the display's DAMAGE reports (else a clock at `fps`).
    pub damage: bool,
    /// Median over the last 256 encoded frames of screen drawn (the DAMAGE report's
    /// timestamp) → frame encoded, in ms: the streamer's share of the latency.
    pub damage_to_encoded_p50_ms: Option<f64>,
    /// The same, 95th percentile.
    pub damage_to_encoded_p95_ms: Option<f64>,
    /// Frames encoded per second over the last full second (0 while idle).
    pub fps: f32,
    /// Encoded frames written to viewers' tracks, summed over all viewers: with the shared
    /// encoder this grows by one per viewer for each `frames_encoded`.
    pub frames_sent: u64,
    /// H.264 encoders alive in the process ([`super::encode::live_encoders`]): at most 1
    /// however many viewers watch.
    pub encoders: usize,
    /// Viewers subscribed to the encoded frames.
    pub subscribers: usize,
    pub last_error: Option<String>,
}

struct Shared {
    viewers: AtomicUsize,
    keyframe: AtomicBool,
    stop: AtomicBool,
    sent: AtomicU64,
    tx: broadcast::Sender<Arc<Frame>>,
    stats: Mutex<PipelineStats>,
}

/// Handle to the pipeline thread; clones share it.
#[derive(Clone)]
pub struct Pipeline {
    shared: Arc<Shared>,
}

/// Subscription of one viewer; dropping it lets the loop idle when it was the last one.
pub struct Subscription {
    pub frames: broadcast::Receiver<Arc<Frame>>,
    shared: Arc<Shared>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.viewers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pipeline {
    /// Starts the (idle) loop thread.
    pub fn start(settings: EncoderSettings, source: SourceFactory) -> Pipeline {
        let (tx, _) = broadcast::channel(16);
        let shared = Arc::new(Shared {
            viewers: AtomicUsize::new(0),
            keyframe: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            tx,
            stats: Mutex::new(PipelineStats::default()),
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

    /// Adds a viewer: the loop runs and the next frame is a keyframe.
    pub fn subscribe(&self) -> Subscription {
        let frames = self.shared.tx.subscribe();
        self.shared.viewers.fetch_add(1, Ordering::SeqCst);
        self.request_keyframe();
        Subscription {
            frames,
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn request_keyframe(&self) {
        self.shared.keyframe.store(true, Ordering::SeqCst);
    }

    pub fn viewers(&self) -> usize {
        self.shared.viewers.load(Ordering::SeqCst)
    }

    /// Counts one frame written to a viewer's track (`frames_sent`).
    pub fn frame_sent(&self) {
        self.shared.sent.fetch_add(1, Ordering::SeqCst);
    }

    pub fn stats(&self) -> PipelineStats {
        let mut st = self
            .shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        st.frames_sent = self.shared.sent.load(Ordering::SeqCst);
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

fn run(shared: Arc<Shared>, settings: EncoderSettings, mut factory: SourceFactory) {
    let period = Duration::from_secs_f64(1.0 / f64::from(settings.fps.max(1.0)));
    let mut source: Option<Box<dyn FrameSource>> = None;
    let mut encoder: Option<H264Encoder> = None;
    let mut detector = ChangeDetector::default();
    let mut seq = 0u64;
    let mut next = Instant::now();
    let mut last_grab = Instant::now();
    let mut retry = false;
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
        if shared.viewers.load(Ordering::SeqCst) == 0 {
            // Idle: release the X connection's SHM segment and the encoder state.
            if source.take().is_some() {
                encoder = None;
                record(&shared, |s| {
                    s.running = false;
                    s.fps = 0.0;
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
                    shared.keyframe.store(true, Ordering::SeqCst);
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
        if encoder.is_none() {
            match H264Encoder::new(settings) {
                Ok(e) => encoder = Some(e),
                Err(e) => {
                    record(&shared, |st| st.last_error = Some(e.to_string()));
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
        }
        let (Some(src), Some(enc)) = (source.as_mut(), encoder.as_mut()) else {
            continue;
        };
        // Grab when the screen changed (DAMAGE), not at the next tick of a clock; a keyframe
        // request or a frame rate control dropped does not wait.
        // The latency figure counts only frames that followed a fresh report.
        let mut reported = false;
        if !retry && !shared.keyframe.load(Ordering::SeqCst) {
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
        retry = false;
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
        let want_key = shared.keyframe.swap(false, Ordering::SeqCst);
        if !changed && !want_key {
            record(&shared, |st| {
                st.frames_grabbed += 1;
                st.frames_unchanged += 1;
                st.grab_us_total += grab_us;
            });
            continue;
        }
        if want_key {
            enc.request_keyframe();
        }
        let t1 = Instant::now();
        let out = enc.encode(frame);
        let encode_us = t1.elapsed().as_micros() as u64;
        match out {
            Ok(Some(ef)) => {
                if let Some(age) = src.change_age().filter(|_| reported) {
                    latencies.push(age.as_secs_f64() * 1000.0);
                }
                seq += 1;
                rate.frames += 1;
                let len = ef.data.len() as u64;
                let key = ef.keyframe;
                let _ = shared.tx.send(Arc::new(Frame {
                    data: Bytes::from(ef.data),
                    keyframe: key,
                    captured: t0,
                    seq,
                }));
                record(&shared, |st| {
                    st.frames_grabbed += 1;
                    st.frames_encoded += 1;
                    st.keyframes += u64::from(key);
                    st.bytes_encoded += len;
                    st.grab_us_total += grab_us;
                    st.encode_us_total += encode_us;
                });
            }
            Ok(None) => {
                // Rate control dropped it: try again next tick even if the screen then
                // looks unchanged, or the viewer would keep a stale picture.
                detector.reset();
                retry = true;
                if want_key {
                    shared.keyframe.store(true, Ordering::SeqCst);
                }
                record(&shared, |st| st.frames_grabbed += 1);
            }
            Err(e) => {
                record(&shared, |st| st.last_error = Some(e.to_string()));
                encoder = None;
            }
        }
    }
}

/// The last 256 change → encoded latencies, in ms.
#[derive(Default)]
struct Latencies {
    ring: std::collections::VecDeque<f64>,
}

impl Latencies {
    fn push(&mut self, ms: f64) {
        if self.ring.len() == 256 {
            self.ring.pop_front();
        }
        self.ring.push_back(ms);
    }

    fn percentile(&self, p: f64) -> Option<f64> {
        let mut v: Vec<f64> = self.ring.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[((v.len() - 1) as f64 * p).round() as usize])
    }
}

/// Counts encoded frames per wall-clock second for the `fps` figure.
struct FrameRate {
    since: Instant,
    frames: u32,
}

impl FrameRate {
    fn new() -> Self {
        FrameRate {
            since: Instant::now(),
            frames: 0,
        }
    }

    /// The rate of the window just closed, once a second.
    fn tick(&mut self) -> Option<f32> {
        let dt = self.since.elapsed();
        if dt < Duration::from_secs(1) {
            return None;
        }
        let fps = self.frames as f32 / dt.as_secs_f32();
        *self = FrameRate::new();
        Some(fps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A 64x48 source whose colour changes only when `tick` changes.
    struct Synthetic {
        tick: Arc<AtomicU32>,
        buf: Vec<u8>,
    }

    impl FrameSource for Synthetic {
        fn grab(&mut self) -> Result<&[u8], String> {
            let t = self.tick.load(Ordering::SeqCst) as u8;
            for px in self.buf.chunks_mut(4) {
                px.copy_from_slice(&[t.wrapping_mul(50), 80, 160, 255]);
            }
            Ok(&self.buf)
        }
    }

    fn settings() -> EncoderSettings {
        EncoderSettings {
            width: 64,
            height: 48,
            fps: 200.0,
            bitrate_bps: 500_000,
            keyframe_interval: 0,
        }
    }

    fn start(tick: Arc<AtomicU32>) -> Pipeline {
        Pipeline::start(
            settings(),
            Box::new(move || {
                Ok(Box::new(Synthetic {
                    tick: Arc::clone(&tick),
                    buf: vec![0; 64 * 48 * 4],
                }) as Box<dyn FrameSource>)
            }),
        )
    }

    async fn next(sub: &mut Subscription) -> Arc<Frame> {
        loop {
            match sub.frames.recv().await {
                Ok(f) => return f,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("pipeline gone: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn joins_get_a_keyframe_unchanged_frames_are_skipped_changes_are_sent() {
        let tick = Arc::new(AtomicU32::new(0));
        let p = start(Arc::clone(&tick));
        assert_eq!(p.stats().frames_grabbed, 0, "idle without viewers");
        let mut sub = p.subscribe();
        let first = next(&mut sub).await;
        assert!(first.keyframe);
        // Static screen: wait until the loop has grabbed several unchanged frames.
        while p.stats().frames_unchanged < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            p.stats().frames_encoded,
            1,
            "unchanged frames are not encoded"
        );
        tick.store(1, Ordering::SeqCst);
        let second = next(&mut sub).await;
        assert!(!second.keyframe);
        assert!(second.seq > first.seq);
        // A PLI forces a keyframe even though nothing changed.
        p.request_keyframe();
        let third = next(&mut sub).await;
        assert!(third.keyframe);
        // A second viewer joining forces one too.
        let _sub2 = p.subscribe();
        assert_eq!(p.viewers(), 2);
        assert!(next(&mut sub).await.keyframe);
        drop(sub);
        assert_eq!(p.viewers(), 1);
        p.stop();
    }
}
