//! VP8 with libvpx, for viewers whose browser offers no usable H.264 (a Chromium built without
//! proprietary codecs, say). libvpx comes from Debian's libvpx-dev, linked statically, through
//! a C shim of our own (`csrc/vp8_shim.c`, built by build.rs) rather than a crate: the crates'
//! bindings mirror libvpx's structs for a fixed list of libvpx versions (env-libvpx-sys stops
//! at 1.13; Debian 13 ships 1.15) or need bindgen and libclang at build time (vpx-sys), and
//! the wrapper crate (vpx-encode) cannot force a keyframe or set the real-time knobs. The shim
//! is compiled against the installed headers, so Rust sees only an opaque pointer and a flat
//! struct of integers.
//!
//! Real time like the H.264 encoder: one pass CBR at the configured bitrate, no lag, rate
//! control drops frames (reported as `None`), error resilient, screen-content mode, the
//! fastest speed (`cpu-used` 16: 2.5-3.7 ms per 1280x720 frame on this machine, Y PSNR 43.5 dB
//! on a synthetic desktop, the same as the adaptive -6 at 20 % less time), one thread (two on
//! two shared cores stalled frames up to 180 ms), keyframes on the first frame and on request.

use super::encode::{Codec, EncodeError, EncodedFrame, EncoderGauge, EncoderSettings, I420};
use std::ffi::{c_char, c_int, c_uint, c_ulong, CStr};
use std::ptr::NonNull;
use std::time::Instant;

mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_ulong};

    /// `gk_vp8_params` of vp8_shim.c.
    #[repr(C)]
    pub struct Params {
        pub width: c_uint,
        pub height: c_uint,
        pub bitrate_kbps: c_uint,
        pub fps: c_uint,
        pub threads: c_uint,
        pub cpu_used: c_int,
        pub keyframe_interval: c_uint,
        pub drop_frame_thresh: c_uint,
        pub screen_content: c_uint,
        pub error_resilient: c_uint,
    }

    /// The shim's encoder (opaque).
    #[repr(C)]
    pub struct Enc {
        _opaque: [u8; 0],
    }

    extern "C" {
        pub fn gk_vp8_version() -> *const c_char;
        pub fn gk_vp8_new(p: *const Params, err: *mut c_char, errlen: usize) -> *mut Enc;
        pub fn gk_vp8_error(e: *const Enc) -> *const c_char;
        pub fn gk_vp8_encode(
            e: *mut Enc,
            y: *const u8,
            y_stride: c_int,
            u: *const u8,
            u_stride: c_int,
            v: *const u8,
            v_stride: c_int,
            pts_ms: i64,
            duration_ms: c_ulong,
            force_keyframe: c_int,
        ) -> c_int;
        pub fn gk_vp8_next_frame(
            e: *mut Enc,
            data: *mut *const u8,
            len: *mut usize,
            keyframe: *mut c_int,
        ) -> c_int;
        pub fn gk_vp8_free(e: *mut Enc);
    }
}

/// libvpx's version string (e.g. `v1.12.0`), for the status page.
pub fn libvpx_version() -> String {
    // SAFETY: libvpx returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::gk_vp8_version()) }
        .to_string_lossy()
        .into_owned()
}

/// `cpu-used`: libvpx's fastest real-time speed (see the module doc for the figures).
const CPU_USED: c_int = 16;
/// Frames are dropped when the rate control's buffer falls under this fullness (%): WebRTC's
/// value, the counterpart of openh264's frame skipping.
const DROP_FRAME_THRESH: c_uint = 30;

/// I420 frames in, VP8 frames out.
pub struct Vp8Encoder {
    enc: NonNull<ffi::Enc>,
    settings: EncoderSettings,
    force_keyframe: bool,
    /// The first frame's time: pts are milliseconds since it.
    start: Option<Instant>,
    last_pts: i64,
    _gauge: EncoderGauge,
}

// SAFETY: the libvpx context is owned by this value alone and used through `&mut self` only;
// libvpx keeps no thread-local state, so moving it to another thread is fine.
unsafe impl Send for Vp8Encoder {}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: `enc` came from gk_vp8_new and is freed once, here.
        unsafe { ffi::gk_vp8_free(self.enc.as_ptr()) }
    }
}

impl Vp8Encoder {
    pub fn new(settings: EncoderSettings) -> Result<Self, EncodeError> {
        settings.check()?;
        let params = ffi::Params {
            width: settings.width,
            height: settings.height,
            bitrate_kbps: (settings.bitrate_bps / 1000).max(1),
            fps: settings.fps.round().max(1.0) as c_uint,
            threads: 1,
            cpu_used: CPU_USED,
            keyframe_interval: settings.keyframe_interval,
            drop_frame_thresh: DROP_FRAME_THRESH,
            screen_content: 1,
            error_resilient: 1,
        };
        let mut err = [0 as c_char; 256];
        // SAFETY: params outlives the call; err is a writable buffer of the length given.
        let enc = unsafe { ffi::gk_vp8_new(&params, err.as_mut_ptr(), err.len()) };
        let Some(enc) = NonNull::new(enc) else {
            // SAFETY: the shim wrote a NUL-terminated message into err (snprintf).
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
            return Err(EncodeError::Vp8(msg.to_string_lossy().into_owned()));
        };
        Ok(Vp8Encoder {
            enc,
            settings,
            force_keyframe: true,
            start: None,
            last_pts: -1,
            _gauge: EncoderGauge::new(Codec::Vp8),
        })
    }

    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// The next encoded frame will be a keyframe.
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Encodes one frame. Returns None when the rate control dropped it.
    pub fn encode(&mut self, frame: &I420) -> Result<Option<EncodedFrame>, EncodeError> {
        let (w, h) = (self.settings.width as usize, self.settings.height as usize);
        if frame.width != w || frame.height != h {
            return Err(EncodeError::Vp8(format!(
                "frame is {}x{}, the encoder {w}x{h}",
                frame.width, frame.height
            )));
        }
        // Rate control reads the pace from the timestamps, and capture follows the screen's
        // changes, not a clock: the real time since the first frame, strictly increasing.
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let pts = (now.duration_since(start).as_millis() as i64).max(self.last_pts + 1);
        self.last_pts = pts;
        let duration = (1000.0 / self.settings.fps.max(1.0)).round().max(1.0) as c_ulong;
        // libvpx reads w*h luma and (w/2)*(h/2) of each chroma plane through raw pointers: the
        // planes are public fields, so their sizes are checked here, not trusted.
        let chroma = (w / 2) * (h / 2);
        if frame.y.len() < w * h || frame.u.len() < chroma || frame.v.len() < chroma {
            return Err(EncodeError::Vp8(format!(
                "frame planes are {}/{}/{} bytes, {w}x{h} needs {}/{chroma}/{chroma}",
                frame.y.len(),
                frame.u.len(),
                frame.v.len(),
                w * h
            )));
        }
        let force = std::mem::take(&mut self.force_keyframe);
        // SAFETY: the planes hold at least the bytes the strides and size describe (checked
        // above), alive for the call; libvpx reads them during the call only.
        let rc = unsafe {
            ffi::gk_vp8_encode(
                self.enc.as_ptr(),
                frame.y.as_ptr(),
                w as c_int,
                frame.u.as_ptr(),
                (w / 2) as c_int,
                frame.v.as_ptr(),
                (w / 2) as c_int,
                pts,
                duration,
                c_int::from(force),
            )
        };
        if rc != 0 {
            // A failed forced keyframe must still come.
            self.force_keyframe |= force;
            // SAFETY: the shim's error buffer is NUL-terminated.
            let msg = unsafe { CStr::from_ptr(ffi::gk_vp8_error(self.enc.as_ptr())) };
            return Err(EncodeError::Vp8(msg.to_string_lossy().into_owned()));
        }
        let mut out: Option<EncodedFrame> = None;
        loop {
            let (mut data, mut len, mut key): (*const u8, usize, c_int) = (std::ptr::null(), 0, 0);
            // SAFETY: the out-pointers are valid; the packet data lives until the next call.
            if unsafe { ffi::gk_vp8_next_frame(self.enc.as_ptr(), &mut data, &mut len, &mut key) }
                == 0
            {
                break;
            }
            if data.is_null() || len == 0 {
                continue;
            }
            // SAFETY: libvpx gave `len` bytes at `data`, valid until the next shim call.
            let bytes = unsafe { std::slice::from_raw_parts(data, len) };
            // Without lag libvpx makes one frame packet per input (there are no hidden
            // alt-ref frames); anything after the first would be a second frame, and there is
            // none to take.
            if out.is_none() {
                out = Some(EncodedFrame {
                    data: bytes.to_vec(),
                    keyframe: key != 0,
                });
            }
        }
        if out.is_none() && force {
            // Dropped by the rate control: the keyframe is still owed.
            self.force_keyframe = true;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod dec {
        use std::ffi::c_uint;

        #[repr(C)]
        pub struct Dec {
            _opaque: [u8; 0],
        }

        extern "C" {
            pub fn gk_vp8_dec_new() -> *mut Dec;
            pub fn gk_vp8_dec_frame(
                d: *mut Dec,
                data: *const u8,
                len: usize,
                w: *mut c_uint,
                h: *mut c_uint,
                luma00: *mut u8,
            ) -> i32;
            pub fn gk_vp8_dec_free(d: *mut Dec);
        }
    }

    /// libvpx's own decoder, to check the frames.
    struct Decoder(*mut dec::Dec);

    impl Decoder {
        fn new() -> Decoder {
            // SAFETY: plain constructor; checked for NULL.
            let d = unsafe { dec::gk_vp8_dec_new() };
            assert!(!d.is_null(), "VP8 decoder");
            Decoder(d)
        }

        /// (width, height, top-left luma) of the decoded frame.
        fn decode(&mut self, data: &[u8]) -> (u32, u32, u8) {
            let (mut w, mut h, mut l) = (0, 0, 0);
            // SAFETY: data is a live slice; the out-pointers are valid.
            let rc = unsafe {
                dec::gk_vp8_dec_frame(self.0, data.as_ptr(), data.len(), &mut w, &mut h, &mut l)
            };
            assert_eq!(rc, 0, "libvpx could not decode our frame");
            (w, h, l)
        }
    }

    impl Drop for Decoder {
        fn drop(&mut self) {
            // SAFETY: freed once.
            unsafe { dec::gk_vp8_dec_free(self.0) }
        }
    }

    fn settings(w: u32, h: u32) -> EncoderSettings {
        EncoderSettings {
            width: w,
            height: h,
            fps: 30.0,
            bitrate_bps: 2_000_000,
            keyframe_interval: 0,
        }
    }

    fn grey(w: u32, h: u32, y: u8) -> I420 {
        let mut f = I420::new(w, h);
        f.y.fill(y);
        f
    }

    #[test]
    fn libvpx_is_linked() {
        assert!(libvpx_version().starts_with('v'), "{}", libvpx_version());
    }

    #[test]
    fn first_frame_is_a_keyframe_then_deltas_until_requested_and_all_decode() {
        let (w, h) = (320, 240);
        let mut enc = Vp8Encoder::new(settings(w, h)).expect("encoder");
        let mut dec = Decoder::new();
        let first = enc
            .encode(&grey(w, h, 100))
            .expect("encode")
            .expect("a frame");
        assert!(first.keyframe);
        // A VP8 keyframe starts with the frame tag then the start code 9d 01 2a.
        assert_eq!(&first.data[3..6], &[0x9d, 0x01, 0x2a]);
        let (dw, dh, l) = dec.decode(&first.data);
        assert_eq!((dw, dh), (w, h));
        assert!((98..=102).contains(&l), "luma {l}");
        let mut deltas = 0;
        for i in 0..6u8 {
            if let Some(f) = enc.encode(&grey(w, h, 60 + i * 20)).expect("encode") {
                assert!(!f.keyframe, "frame {i} should not be a keyframe");
                dec.decode(&f.data);
                deltas += 1;
            }
        }
        assert!(deltas > 0, "no delta frame came out");
        enc.request_keyframe();
        let forced = enc
            .encode(&grey(w, h, 30))
            .expect("encode")
            .expect("a frame");
        assert!(forced.keyframe);
        assert_eq!(dec.decode(&forced.data).0, w);
    }

    #[test]
    fn bad_sizes_are_errors_not_crashes() {
        let e = Vp8Encoder::new(settings(1279, 720))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("width must be even and at least 16, got 1279")
        );
        let mut enc = Vp8Encoder::new(settings(64, 48)).expect("encoder");
        let e = enc.encode(&grey(32, 32, 0)).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("libvpx: frame is 32x32, the encoder 64x48")
        );
        // Planes shorter than the size says: refused, never read past their end.
        let mut short = grey(64, 48, 0);
        short.y.truncate(64 * 48 - 1);
        let e = enc.encode(&short).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("libvpx: frame planes are 3071/768/768 bytes, 64x48 needs 3072/768/768")
        );
        let mut empty = grey(64, 48, 0);
        empty.v.clear();
        assert!(enc.encode(&empty).is_err());
    }
}
