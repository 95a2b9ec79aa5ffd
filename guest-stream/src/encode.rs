//! BGRA → I420 (the `yuv` crate, BT.601 limited range as browsers assume for H.264 without VUI)
//! → H.264 with openh264 in screen-content real-time mode: baseline profile (no B-frames),
//! bitrate rate control with frame skipping, low complexity, and an infinite GOP unless a
//! keyframe interval is configured. Keyframes are forced on request (a new viewer, PLI/FIR).
//! Also the cheap change detector (xxh3 of the frame) that lets an idle screen cost nothing.

use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSource;
use openh264::OpenH264API;
use std::sync::atomic::{AtomicUsize, Ordering};
use yuv::{
    bgra_to_yuv420, BufferStoreMut, YuvConversionMode, YuvPlanarImageMut, YuvRange,
    YuvStandardMatrix,
};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{field} must be even and at least 16, got {value}")]
    Dimension { field: &'static str, value: u32 },
    #[error("frame has {got} bytes, expected {want} for {width}x{height} BGRA")]
    FrameSize {
        got: usize,
        want: usize,
        width: u32,
        height: u32,
    },
    #[error("colour conversion failed: {0}")]
    Convert(String),
    #[error("openh264: {0}")]
    Encoder(#[from] openh264::Error),
}

/// Encoder settings; see `StreamConfig` for the user-facing defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub fps: f32,
    pub bitrate_bps: u32,
    /// Frames between forced IDR frames; 0 = only on request.
    pub keyframe_interval: u32,
}

/// One encoded access unit (Annex-B byte stream).
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// I420 planes the converter writes and the encoder reads.
struct I420 {
    width: usize,
    height: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

impl YUVSource for I420 {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }
    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }
    fn y(&self) -> &[u8] {
        &self.y
    }
    fn u(&self) -> &[u8] {
        &self.u
    }
    fn v(&self) -> &[u8] {
        &self.v
    }
}

/// Encoders alive in this process. The pipeline shares one encoder between all viewers; this
/// gauge is what `/webrtc/status` shows so a test can check that structurally (it would read
/// one per viewer if each viewer's peer had its own).
static LIVE_ENCODERS: AtomicUsize = AtomicUsize::new(0);

/// How many [`H264Encoder`]s exist right now in this process.
pub fn live_encoders() -> usize {
    LIVE_ENCODERS.load(Ordering::SeqCst)
}

/// BGRA frames in, H.264 access units out.
pub struct H264Encoder {
    settings: EncoderSettings,
    enc: Encoder,
    planes: I420,
    force_keyframe: bool,
}

impl Drop for H264Encoder {
    fn drop(&mut self) {
        LIVE_ENCODERS.fetch_sub(1, Ordering::SeqCst);
    }
}

impl H264Encoder {
    pub fn new(settings: EncoderSettings) -> Result<Self, EncodeError> {
        for (field, value) in [("width", settings.width), ("height", settings.height)] {
            if value < 16 || value % 2 != 0 {
                return Err(EncodeError::Dimension { field, value });
            }
        }
        let period = if settings.keyframe_interval == 0 {
            // openh264 treats 0 as "no periodic IDR".
            IntraFramePeriod::from_num_frames(0)
        } else {
            IntraFramePeriod::from_num_frames(settings.keyframe_interval)
        };
        let config = EncoderConfig::new()
            .usage_type(UsageType::ScreenContentRealTime)
            .bitrate(BitRate::from_bps(settings.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(settings.fps))
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(true)
            .adaptive_quantization(false)
            .background_detection(false)
            .complexity(Complexity::Low)
            .intra_frame_period(period)
            .num_threads(1);
        let enc = Encoder::with_api_config(OpenH264API::from_source(), config)?;
        let (w, h) = (settings.width as usize, settings.height as usize);
        LIVE_ENCODERS.fetch_add(1, Ordering::SeqCst);
        Ok(H264Encoder {
            settings,
            enc,
            planes: I420 {
                width: w,
                height: h,
                y: vec![0; w * h],
                u: vec![128; w * h / 4],
                v: vec![128; w * h / 4],
            },
            force_keyframe: true,
        })
    }

    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// The next encoded frame will be an IDR frame.
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Converts and encodes one BGRA frame (`width * 4` bytes per row). Returns None when
    /// the rate control dropped the frame.
    pub fn encode(&mut self, bgra: &[u8]) -> Result<Option<EncodedFrame>, EncodeError> {
        self.convert(bgra)?;
        if self.force_keyframe {
            self.enc.force_intra_frame();
            self.force_keyframe = false;
        }
        let bs = self.enc.encode(&self.planes)?;
        let keyframe = matches!(bs.frame_type(), FrameType::IDR | FrameType::I);
        if matches!(bs.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let data = bs.to_vec();
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedFrame { data, keyframe }))
    }

    /// BGRA → I420 into the encoder's planes.
    pub fn convert(&mut self, bgra: &[u8]) -> Result<(), EncodeError> {
        let (w, h) = (self.settings.width, self.settings.height);
        let want = w as usize * h as usize * 4;
        if bgra.len() != want {
            return Err(EncodeError::FrameSize {
                got: bgra.len(),
                want,
                width: w,
                height: h,
            });
        }
        let mut img = YuvPlanarImageMut {
            y_plane: BufferStoreMut::Borrowed(&mut self.planes.y),
            y_stride: w,
            u_plane: BufferStoreMut::Borrowed(&mut self.planes.u),
            u_stride: w / 2,
            v_plane: BufferStoreMut::Borrowed(&mut self.planes.v),
            v_stride: w / 2,
            width: w,
            height: h,
        };
        bgra_to_yuv420(
            &mut img,
            bgra,
            w * 4,
            YuvRange::Limited,
            YuvStandardMatrix::Bt601,
            YuvConversionMode::Balanced,
        )
        .map_err(|e| EncodeError::Convert(e.to_string()))
    }

    /// The luma plane of the last converted frame (tests).
    pub fn luma(&self) -> &[u8] {
        &self.planes.y
    }
}

/// Remembers the last frame's hash so unchanged frames are not encoded again.
#[derive(Debug, Default)]
pub struct ChangeDetector {
    last: Option<u64>,
}

impl ChangeDetector {
    /// True when `frame` differs from the previous one (or is the first).
    pub fn changed(&mut self, frame: &[u8]) -> bool {
        let h = xxhash_rust::xxh3::xxh3_64(frame);
        let changed = self.last != Some(h);
        self.last = Some(h);
        changed
    }

    /// Forget the last frame (the next one counts as changed).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// Splits an Annex-B byte stream into NAL units (without start codes).
pub fn nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map(|n| n - 3).unwrap_or(stream.len());
        while end > s && stream[end - 1] == 0 && k + 1 < starts.len() {
            end -= 1;
        }
        out.push(&stream[s..end]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(w: u32, h: u32) -> EncoderSettings {
        EncoderSettings {
            width: w,
            height: h,
            fps: 30.0,
            bitrate_bps: 2_000_000,
            keyframe_interval: 0,
        }
    }

    fn frame(w: u32, h: u32, bgra: [u8; 4]) -> Vec<u8> {
        bgra.iter()
            .copied()
            .cycle()
            .take((w * h * 4) as usize)
            .collect()
    }

    fn nal_types(data: &[u8]) -> Vec<u8> {
        nal_units(data).iter().map(|n| n[0] & 0x1f).collect()
    }

    #[test]
    fn odd_dimensions_are_rejected_by_name() {
        let e = H264Encoder::new(settings(1279, 720))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("width must be even and at least 16, got 1279")
        );
        let e = H264Encoder::new(settings(64, 7))
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().starts_with("height"));
    }

    #[test]
    fn wrong_frame_size_is_an_error() {
        let mut enc = H264Encoder::new(settings(64, 48)).expect("encoder");
        let err = enc.encode(&[0; 10]).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("frame has 10 bytes, expected 12288 for 64x48 BGRA")
        );
    }

    #[test]
    fn conversion_gives_bt601_limited_luma() {
        let mut enc = H264Encoder::new(settings(64, 48)).expect("encoder");
        enc.convert(&frame(64, 48, [255, 255, 255, 255]))
            .expect("white");
        assert!(
            enc.luma().iter().all(|&y| (234..=236).contains(&y)),
            "white → 235"
        );
        enc.convert(&frame(64, 48, [0, 0, 0, 255])).expect("black");
        assert!(
            enc.luma().iter().all(|&y| (15..=17).contains(&y)),
            "black → 16"
        );
    }

    #[test]
    fn first_frame_is_idr_with_sps_pps_then_p_frames_until_requested() {
        let (w, h) = (320, 240);
        let mut enc = H264Encoder::new(settings(w, h)).expect("encoder");
        let first = enc
            .encode(&frame(w, h, [10, 20, 30, 255]))
            .expect("encode")
            .expect("a frame");
        assert!(first.keyframe);
        let types = nal_types(&first.data);
        assert!(
            types.contains(&7) && types.contains(&8) && types.contains(&5),
            "{types:?}"
        );

        let mut saw_p = false;
        for i in 0..5u8 {
            if let Some(f) = enc
                .encode(&frame(w, h, [i * 40, 20, 30, 255]))
                .expect("encode")
            {
                assert!(!f.keyframe, "frame {i} should not be a keyframe");
                assert!(!nal_types(&f.data).contains(&5));
                saw_p = true;
            }
        }
        assert!(saw_p, "no P frame came out");

        enc.request_keyframe();
        let forced = enc
            .encode(&frame(w, h, [200, 20, 30, 255]))
            .expect("encode")
            .expect("a frame");
        assert!(forced.keyframe);
        assert!(nal_types(&forced.data).contains(&5));
    }

    #[test]
    fn change_detector_skips_identical_frames() {
        let mut d = ChangeDetector::default();
        let a = frame(16, 16, [1, 2, 3, 4]);
        let mut b = a.clone();
        b[100] ^= 1;
        assert!(d.changed(&a));
        assert!(!d.changed(&a));
        assert!(d.changed(&b));
        assert!(!d.changed(&b));
        d.reset();
        assert!(d.changed(&b));
    }

    #[test]
    fn nal_splitter_handles_3_and_4_byte_start_codes() {
        let s = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 9,
        ];
        let units = nal_units(&s);
        assert_eq!(units, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 9]]);
    }
}
