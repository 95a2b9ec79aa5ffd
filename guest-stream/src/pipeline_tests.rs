//! Tests of the pipeline loop ([`super`]) with a synthetic source: skipping, keyframes, and one
//! encoder per codec in use.

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
    let mut sub = p.subscribe(Codec::H264);
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
    p.request_keyframe(Codec::H264);
    let third = next(&mut sub).await;
    assert!(third.keyframe);
    // A second viewer joining forces one too.
    let _sub2 = p.subscribe(Codec::H264);
    assert_eq!(p.viewers(), 2);
    assert!(next(&mut sub).await.keyframe);
    drop(sub);
    assert_eq!(p.viewers(), 1);
    p.stop();
}

#[tokio::test]
async fn one_encoder_per_codec_in_use_fed_from_the_same_grabs() {
    let tick = Arc::new(AtomicU32::new(0));
    let p = start(Arc::clone(&tick));
    let mut h264 = p.subscribe(Codec::H264);
    let mut vp8 = p.subscribe(Codec::Vp8);
    let (a, b) = (next(&mut h264).await, next(&mut vp8).await);
    assert!(a.keyframe && b.keyframe);
    assert_eq!(&a.data[..4], &[0, 0, 0, 1], "H.264 Annex-B");
    assert_eq!(&b.data[3..6], &[0x9d, 0x01, 0x2a], "a VP8 keyframe");
    let st = p.stats();
    assert_eq!(st.encoders_in_use, vec![Codec::H264, Codec::Vp8]);
    assert_eq!(
        (p.viewers_of(Codec::H264), p.viewers_of(Codec::Vp8)),
        (1, 1)
    );
    // One change: one grab, a frame of each codec with the same grab number.
    tick.store(1, Ordering::SeqCst);
    let (a, b) = (next(&mut h264).await, next(&mut vp8).await);
    assert!(!a.keyframe && !b.keyframe);
    assert_eq!(a.seq, b.seq, "both codecs encode the same grab");
    // A VP8 keyframe request forces none on H.264.
    p.request_keyframe(Codec::Vp8);
    assert!(next(&mut vp8).await.keyframe);
    tick.store(2, Ordering::SeqCst);
    let a = next(&mut h264).await;
    assert!(!a.keyframe, "H.264 viewers are not disturbed by a VP8 PLI");
    // The last VP8 viewer leaves: its encoder goes, H.264 goes on.
    drop(vp8);
    for _ in 0..200 {
        if p.stats().encoders_in_use == vec![Codec::H264] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.stats().encoders_in_use, vec![Codec::H264]);
    tick.store(3, Ordering::SeqCst);
    next(&mut h264).await;
    p.stop();
}

/// A still screen with DAMAGE: never reports a change, counts the waits.
struct Still {
    waits: Arc<AtomicU32>,
    buf: Vec<u8>,
}

impl FrameSource for Still {
    fn grab(&mut self) -> Result<&[u8], String> {
        Ok(&self.buf)
    }
    fn wait_change(&mut self, timeout: Duration) -> Result<bool, String> {
        self.waits.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(timeout);
        Ok(false)
    }
    fn damage(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_codec_nobody_watches_does_not_keep_the_loop_grabbing() {
    // The VP8 lane's keyframe flag stays set while nobody watches VP8; it must not count as
    // owed, or an H.264 viewer's grabs would follow the clock instead of the damage reports.
    let waits = Arc::new(AtomicU32::new(0));
    let w = Arc::clone(&waits);
    let p = Pipeline::start(
        settings(),
        Box::new(move || {
            Ok(Box::new(Still {
                waits: Arc::clone(&w),
                buf: vec![0; 64 * 48 * 4],
            }) as Box<dyn FrameSource>)
        }),
    );
    let mut sub = p.subscribe(Codec::H264);
    assert!(next(&mut sub).await.keyframe);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = p.stats();
    assert!(
        waits.load(Ordering::SeqCst) >= 2,
        "the loop waits for damage: {st:?}"
    );
    assert!(
        st.frames_grabbed <= 3,
        "a still screen is not grabbed at the clock's pace (200 fps): {st:?}"
    );
    p.stop();
}
