//! BGRA → I420 (the `yuv` crate, BT.601 limited range as browsers assume for H.264 and VP8
//! without colour information), done once per captured frame whatever the codecs, then each
//! codec in use encodes the same I420 frame: H.264 with openh264 in screen-content real-time
//! mode (baseline profile, no B-frames, bitrate rate control with frame skipping, low
//! complexity, an infinite GOP unless a keyframe interval is configured), and VP8 with libvpx
//! ([`super::vp8`]) for browsers without H.264. Keyframes are forced on request (a new viewer,
//! PLI/FIR). Also the cheap change detector (xxh3 of the frame) that lets an idle screen cost
//! nothing.

use super::vp8::Vp8Encoder;
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
    #[error("libvpx: {0}")]
    Vp8(String),
}

/// The video codecs the streamer encodes, in the order it prefers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    H264,
    Vp8,
}

impl Codec {
    /// Every codec, preferred first (an offer with both gets H.264: hardware decoders).
    pub const ALL: [Codec; 2] = [Codec::H264, Codec::Vp8];

    /// Dense index for per-codec arrays.
    pub fn index(self) -> usize {
        match self {
            Codec::H264 => 0,
            Codec::Vp8 => 1,
        }
    }

    /// The SDP/RTP name (`a=rtpmap:` encoding name).
    pub fn sdp_name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::Vp8 => "VP8",
        }
    }

    /// The name in `/webrtc/status` (and the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Vp8 => "vp8",
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Codec::H264 => "H.264",
            Codec::Vp8 => "VP8",
        })
    }
}

/// Encoder settings; see `StreamConfig` for the user-facing defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub fps: f32,
    pub bitrate_bps: u32,
    /// Frames between forced keyframes; 0 = only on request.
    pub keyframe_interval: u32,
}

impl EncoderSettings {
    /// Both codecs need even sizes (4:2:0 chroma) of at least a macroblock.
    pub fn check(&self) -> Result<(), EncodeError> {
        for (field, value) in [("width", self.width), ("height", self.height)] {
            if value < 16 || value % 2 != 0 {
                return Err(EncodeError::Dimension { field, value });
            }
        }
        Ok(())
    }
}

/// One encoded frame: an H.264 access unit (Annex-B byte stream) or one VP8 frame.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// An I420 frame (tightly packed planes: strides are the width and half of it), what the
/// converter writes and every encoder reads.
pub struct I420 {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl I420 {
    /// A black (limited range) frame of an even size.
    pub fn new(width: u32, height: u32) -> I420 {
        let (w, h) = (width as usize, height as usize);
        I420 {
            width: w,
            height: h,
            y: vec![16; w * h],
            u: vec![128; w * h / 4],
            v: vec![128; w * h / 4],
        }
    }
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

/// BGRA → I420, once per captured frame, into a buffer it keeps.
pub struct Converter {
    width: u32,
    height: u32,
    planes: I420,
}

impl Converter {
    pub fn new(width: u32, height: u32) -> Converter {
        Converter {
            width,
            height,
            planes: I420::new(width, height),
        }
    }

    /// Converts one BGRA frame (`width * 4` bytes per row).
    pub fn convert(&mut self, bgra: &[u8]) -> Result<&I420, EncodeError> {
        let (w, h) = (self.width, self.height);
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
        .map_err(|e| EncodeError::Convert(e.to_string()))?;
        Ok(&self.planes)
    }
}

/// Encoders alive in this process, per codec. The pipeline runs at most one encoder per codec
/// however many viewers watch; these gauges are what `/webrtc/status` shows so a test can check
/// that structurally (they would read one per viewer if each viewer's peer had its own).
static LIVE_ENCODERS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// How many encoders (of any codec) exist right now in this process.
pub fn live_encoders() -> usize {
    Codec::ALL.iter().map(|c| live_encoders_of(*c)).sum()
}

/// How many encoders of `codec` exist right now in this process.
pub fn live_encoders_of(codec: Codec) -> usize {
    LIVE_ENCODERS[codec.index()].load(Ordering::SeqCst)
}

/// Counts one live encoder of a codec for as long as it is held.
pub struct EncoderGauge(Codec);

impl EncoderGauge {
    pub fn new(codec: Codec) -> EncoderGauge {
        LIVE_ENCODERS[codec.index()].fetch_add(1, Ordering::SeqCst);
        EncoderGauge(codec)
    }
}

impl Drop for EncoderGauge {
    fn drop(&mut self) {
        LIVE_ENCODERS[self.0.index()].fetch_sub(1, Ordering::SeqCst);
    }
}

/// I420 frames in, H.264 access units out.
pub struct H264Encoder {
    settings: EncoderSettings,
    enc: Encoder,
    force_keyframe: bool,
    _gauge: EncoderGauge,
}

impl H264Encoder {
    pub fn new(settings: EncoderSettings) -> Result<Self, EncodeError> {
        settings.check()?;
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
        Ok(H264Encoder {
            settings,
            enc,
            force_keyframe: true,
            _gauge: EncoderGauge::new(Codec::H264),
        })
    }

    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// The next encoded frame will be an IDR frame.
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Encodes one frame. Returns None when the rate control dropped it.
    pub fn encode(&mut self, frame: &I420) -> Result<Option<EncodedFrame>, EncodeError> {
        if self.force_keyframe {
            self.enc.force_intra_frame();
            self.force_keyframe = false;
        }
        let bs = self.enc.encode(frame)?;
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
}

/// One codec's encoder, as the pipeline holds them (openh264's state is large: boxed).
pub enum VideoEncoder {
    H264(Box<H264Encoder>),
    Vp8(Vp8Encoder),
}

impl VideoEncoder {
    pub fn new(codec: Codec, settings: EncoderSettings) -> Result<VideoEncoder, EncodeError> {
        Ok(match codec {
            Codec::H264 => VideoEncoder::H264(Box::new(H264Encoder::new(settings)?)),
            Codec::Vp8 => VideoEncoder::Vp8(Vp8Encoder::new(settings)?),
        })
    }

    pub fn codec(&self) -> Codec {
        match self {
            VideoEncoder::H264(_) => Codec::H264,
            VideoEncoder::Vp8(_) => Codec::Vp8,
        }
    }

    pub fn request_keyframe(&mut self) {
        match self {
            VideoEncoder::H264(e) => e.request_keyframe(),
            VideoEncoder::Vp8(e) => e.request_keyframe(),
        }
    }

    /// Encodes one frame; None when the rate control dropped it.
    pub fn encode(&mut self, frame: &I420) -> Result<Option<EncodedFrame>, EncodeError> {
        match self {
            VideoEncoder::H264(e) => e.encode(frame),
            VideoEncoder::Vp8(e) => e.encode(frame),
        }
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
        let mut conv = Converter::new(64, 48);
        let err = conv.convert(&[0; 10]).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("frame has 10 bytes, expected 12288 for 64x48 BGRA")
        );
    }

    #[test]
    fn conversion_gives_bt601_limited_luma() {
        let mut conv = Converter::new(64, 48);
        let white = conv
            .convert(&frame(64, 48, [255, 255, 255, 255]))
            .expect("white");
        assert!(
            white.y.iter().all(|&y| (234..=236).contains(&y)),
            "white → 235"
        );
        let black = conv.convert(&frame(64, 48, [0, 0, 0, 255])).expect("black");
        assert!(
            black.y.iter().all(|&y| (15..=17).contains(&y)),
            "black → 16"
        );
    }

    #[test]
    fn first_frame_is_idr_with_sps_pps_then_p_frames_until_requested() {
        let (w, h) = (320, 240);
        let mut enc = H264Encoder::new(settings(w, h)).expect("encoder");
        let mut conv = Converter::new(w, h);
        let mut i420 = |bgra: [u8; 4]| -> I420 {
            let f = conv.convert(&frame(w, h, bgra)).expect("convert");
            I420 {
                width: f.width,
                height: f.height,
                y: f.y.clone(),
                u: f.u.clone(),
                v: f.v.clone(),
            }
        };
        let first = enc
            .encode(&i420([10, 20, 30, 255]))
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
            if let Some(f) = enc.encode(&i420([i * 40, 20, 30, 255])).expect("encode") {
                assert!(!f.keyframe, "frame {i} should not be a keyframe");
                assert!(!nal_types(&f.data).contains(&5));
                saw_p = true;
            }
        }
        assert!(saw_p, "no P frame came out");

        enc.request_keyframe();
        let forced = enc
            .encode(&i420([200, 20, 30, 255]))
            .expect("encode")
            .expect("a frame");
        assert!(forced.keyframe);
        assert!(nal_types(&forced.data).contains(&5));
    }

    #[test]
    fn one_converted_frame_feeds_both_codecs_and_each_has_its_gauge() {
        let (w, h) = (160, 96);
        let mut h264 = VideoEncoder::new(Codec::H264, settings(w, h)).expect("h264");
        let mut vp8 = VideoEncoder::new(Codec::Vp8, settings(w, h)).expect("vp8");
        assert_eq!((h264.codec(), vp8.codec()), (Codec::H264, Codec::Vp8));
        // Other tests make and drop encoders concurrently: ours are counted while held.
        assert!(live_encoders_of(Codec::H264) >= 1 && live_encoders_of(Codec::Vp8) >= 1);
        let mut conv = Converter::new(w, h);
        let f = conv
            .convert(&frame(w, h, [40, 90, 200, 255]))
            .expect("convert");
        let a = h264.encode(f).expect("h264").expect("a frame");
        let b = vp8.encode(f).expect("vp8").expect("a frame");
        assert!(a.keyframe && b.keyframe);
        assert_eq!(&a.data[..4], &[0, 0, 0, 1], "Annex-B");
        assert_eq!(
            &b.data[3..6],
            &[0x9d, 0x01, 0x2a],
            "VP8 keyframe start code"
        );
    }

    #[test]
    fn codec_names() {
        assert_eq!(Codec::ALL, [Codec::H264, Codec::Vp8]);
        assert_eq!(Codec::Vp8.to_string(), "VP8");
        assert_eq!(Codec::H264.sdp_name(), "H264");
        assert_eq!(
            serde_json::to_string(&Codec::Vp8).ok().as_deref(),
            Some("\"vp8\"")
        );
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
