//! The VM's pointer as streamer → viewer messages on the `input` data channel, in the framing
//! of [`super::input`] (`type: u8, len: u16 BE`, big-endian fields):
//!
//! | type | message         | payload |
//! |------|-----------------|---------|
//! | 0x81 | cursor shape    | `serial: u32, width: u16, height: u16, xhot: u16, yhot: u16`, then `width * height` RGBA pixels (straight alpha, rows top to bottom) |
//! | 0x82 | cursor position | `x: u16, y: u16` in video pixels, `serial: u32` of the shape shown there |
//!
//! A viewer asks for them with the 0x0a event (`on: u8`); nothing is sent unasked, so a
//! client that predates them never sees a message it does not know.
//!
//! Why shapes and positions are separate: a shape (at most [`MAX_SIDE`]² pixels, 16 KiB) is
//! sent to a viewer once per X cursor serial (once per picture: [`super::cursor`] gives a
//! new cursor with a known picture the old serial), and positions (12 bytes framed) name the serial
//! they show, so a pointer going back and forth between an arrow and an I-beam costs 12 bytes
//! per change, not a picture. A viewer keeps at least [`VIEWER_CACHE`] shapes (the oldest
//! received dropped first); the streamer resends a shape once it may have been dropped.
//!
//! Why straight RGBA and not PNG: the viewer page puts it into an `ImageData` as it comes,
//! and at ≤ 16 KiB once per shape, compression is not worth a dependency.

use std::collections::VecDeque;
use std::sync::Arc;

/// Type of the cursor shape message.
pub const CURSOR_SHAPE: u8 = 0x81;
/// Type of the cursor position message.
pub const CURSOR_POSITION: u8 = 0x82;
/// Largest shape side sent; bigger X cursors (HiDPI themes, app cursors up to 256 px) are
/// scaled down by a whole factor. 64 keeps a shape ≤ 16 KiB, under one SCTP message, and
/// under browsers' 128 px bound on CSS cursor images after the viewer scales it.
pub const MAX_SIDE: u16 = 64;
/// Shapes the viewer page keeps by serial; the streamer remembers at most this many as sent
/// per viewer and forgets all of them when full, so every serial it believes sent is still in
/// the viewer's cache (the viewer drops the oldest received first).
pub const VIEWER_CACHE: usize = 64;

/// One pointer image, ready to send: straight-alpha RGBA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorShape {
    /// The X server's cursor serial (XFixes): one per distinct cursor.
    pub serial: u32,
    pub width: u16,
    pub height: u16,
    pub xhot: u16,
    pub yhot: u16,
    /// `width * height * 4` bytes.
    pub rgba: Vec<u8>,
}

/// Straight-alpha RGBA of one premultiplied ARGB pixel (XFixes' format).
fn unpremultiply(p: u32) -> [u8; 4] {
    let [a, r, g, b] = p.to_be_bytes();
    if a == 0 {
        return [0; 4];
    }
    let un = |c: u8| ((u32::from(c) * 255 + u32::from(a) / 2) / u32::from(a)).min(255) as u8;
    [un(r), un(g), un(b), a]
}

impl CursorShape {
    /// From an XFixes cursor image: `argb` premultiplied, row-major `width * height` (missing
    /// pixels are transparent, extra ones ignored: the server's reply is outside input).
    /// Images over [`MAX_SIDE`] are box-filtered down by the smallest whole factor that fits
    /// (averaged while premultiplied, so edges do not darken), the hotspot with them.
    pub fn from_argb(
        serial: u32,
        width: u16,
        height: u16,
        xhot: u16,
        yhot: u16,
        argb: &[u32],
    ) -> Self {
        let (w, h) = (usize::from(width), usize::from(height));
        let f = w.max(h).div_ceil(usize::from(MAX_SIDE)).max(1);
        let (ow, oh) = (w.div_ceil(f), h.div_ceil(f));
        let mut rgba = Vec::with_capacity(ow * oh * 4);
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut sum, mut n) = ([0u32; 4], 0u32);
                for y in oy * f..((oy + 1) * f).min(h) {
                    for x in ox * f..((ox + 1) * f).min(w) {
                        let p = argb.get(y * w + x).copied().unwrap_or(0);
                        for (s, c) in sum.iter_mut().zip(p.to_be_bytes()) {
                            *s += u32::from(c);
                        }
                        n += 1;
                    }
                }
                let avg = |i: usize| (sum[i] + n / 2) / n.max(1);
                let p = u32::from_be_bytes([0, 1, 2, 3].map(|i| avg(i) as u8));
                rgba.extend_from_slice(&unpremultiply(p));
            }
        }
        let fit = |hot: u16, side: usize| (usize::from(hot) / f).min(side.saturating_sub(1)) as u16;
        CursorShape {
            serial,
            width: ow as u16,
            height: oh as u16,
            xhot: fit(xhot, ow),
            yhot: fit(yhot, oh),
            rgba,
        }
    }

    /// The same picture and hotspot, whatever the serial.
    pub fn same_picture(&self, o: &CursorShape) -> bool {
        (self.width, self.height, self.xhot, self.yhot) == (o.width, o.height, o.xhot, o.yhot)
            && self.rgba == o.rgba
    }

    /// The RGBA of pixel (x, y); None outside.
    pub fn pixel(&self, x: u16, y: u16) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (usize::from(y) * usize::from(self.width) + usize::from(x)) * 4;
        self.rgba.get(i..i + 4)?.try_into().ok()
    }
}

/// The 0x81 message. The payload is ≤ 12 + 64·64·4 bytes for a shape made by
/// [`CursorShape::from_argb`]; a hand-made bigger one is sent as 0×0 (no cursor) rather than
/// framed wrong.
pub fn encode_shape(s: &CursorShape) -> Vec<u8> {
    let n = usize::from(s.width) * usize::from(s.height) * 4;
    let ok = s.rgba.len() == n && n + 12 <= usize::from(u16::MAX);
    let (w, h, pixels) = if ok {
        (s.width, s.height, &s.rgba[..])
    } else {
        (0, 0, &[][..])
    };
    let len = 12 + pixels.len();
    let mut v = Vec::with_capacity(3 + len);
    v.push(CURSOR_SHAPE);
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.extend_from_slice(&s.serial.to_be_bytes());
    for f in [w, h, s.xhot, s.yhot] {
        v.extend_from_slice(&f.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

/// The 0x82 message.
pub fn encode_position(x: u16, y: u16, serial: u32) -> Vec<u8> {
    let mut v = vec![CURSOR_POSITION, 0, 8];
    v.extend_from_slice(&x.to_be_bytes());
    v.extend_from_slice(&y.to_be_bytes());
    v.extend_from_slice(&serial.to_be_bytes());
    v
}

/// A cursor message as a viewer reads it (tests, non-browser clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorMsg {
    Shape(CursorShape),
    Position { x: u16, y: u16, serial: u32 },
}

/// Reads one 0x81 / 0x82 message; None when it is not one or is malformed.
pub fn parse_cursor(msg: &[u8]) -> Option<CursorMsg> {
    let (&kind, rest) = msg.split_first()?;
    let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let p = rest.get(2..)?;
    if p.len() != len {
        return None;
    }
    let be16 = |i: usize| Some(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]));
    let be32 = |i: usize| Some(u32::from_be_bytes(p.get(i..i + 4)?.try_into().ok()?));
    match kind {
        CURSOR_SHAPE => {
            let (width, height) = (be16(4)?, be16(6)?);
            let rgba = p.get(12..)?.to_vec();
            if rgba.len() != usize::from(width) * usize::from(height) * 4 {
                return None;
            }
            Some(CursorMsg::Shape(CursorShape {
                serial: be32(0)?,
                width,
                height,
                xhot: be16(8)?,
                yhot: be16(10)?,
                rgba,
            }))
        }
        CURSOR_POSITION if len == 8 => Some(CursorMsg::Position {
            x: be16(0)?,
            y: be16(2)?,
            serial: be32(4)?,
        }),
        _ => None,
    }
}

/// What the cursor thread publishes: the shape on screen and where the pointer is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CursorState {
    /// Bumped on every (re)connection to the X server: serials start again with a new server,
    /// so what a viewer was sent before means nothing.
    pub epoch: u64,
    pub shape: Option<Arc<CursorShape>>,
    /// Root-window coordinates: video pixels, as the capture grabs the root's top-left
    /// corner 1:1 (and input moves are injected there unscaled).
    pub pos: Option<(u16, u16)>,
}

/// What one viewer has been sent, so it is sent only what changed and each shape once.
#[derive(Debug, Default)]
pub struct ViewerFeed {
    epoch: u64,
    /// Serials sent, oldest first, at most [`VIEWER_CACHE`].
    sent: VecDeque<u32>,
    last: Option<(u16, u16, u32)>,
}

impl ViewerFeed {
    /// The messages that bring this viewer up to `st`, in order (a shape before the position
    /// that names it); empty when it has seen it all.
    pub fn update(&mut self, st: &CursorState) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if st.epoch != self.epoch {
            *self = ViewerFeed {
                epoch: st.epoch,
                ..Default::default()
            };
        }
        let (Some(shape), Some((x, y))) = (&st.shape, st.pos) else {
            return out;
        };
        if !self.sent.contains(&shape.serial) {
            if self.sent.len() >= VIEWER_CACHE {
                self.sent.clear();
            }
            self.sent.push_back(shape.serial);
            out.push(encode_shape(shape));
        }
        let now = (x, y, shape.serial);
        if self.last != Some(now) {
            self.last = Some(now);
            out.push(encode_position(x, y, shape.serial));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn argb(a: u8, r: u8, g: u8, b: u8) -> u32 {
        u32::from_be_bytes([a, r, g, b])
    }

    #[test]
    fn xfixes_pixels_become_straight_rgba() {
        // Opaque red, half-transparent white (premultiplied 128,128,128), transparent.
        let s = CursorShape::from_argb(
            7,
            3,
            1,
            1,
            0,
            &[argb(255, 255, 0, 0), argb(128, 128, 128, 128), 0],
        );
        assert_eq!((s.width, s.height, s.xhot, s.yhot), (3, 1, 1, 0));
        assert_eq!(s.pixel(0, 0), Some([255, 0, 0, 255]));
        assert_eq!(s.pixel(1, 0), Some([255, 255, 255, 128]));
        assert_eq!(s.pixel(2, 0), Some([0, 0, 0, 0]));
        assert_eq!(s.pixel(3, 0), None);
        // A short reply: the missing pixels are transparent, nothing panics.
        let s = CursorShape::from_argb(1, 2, 2, 9, 9, &[argb(255, 1, 2, 3)]);
        assert_eq!(s.rgba.len(), 16);
        assert_eq!((s.xhot, s.yhot), (1, 1), "hotspot kept inside");
        assert_eq!(s.pixel(1, 1), Some([0; 4]));
        let t = CursorShape {
            serial: 2,
            ..s.clone()
        };
        assert!(s.same_picture(&t));
        assert!(!s.same_picture(&CursorShape {
            xhot: 0,
            ..t.clone()
        }));
        assert!(!s.same_picture(&CursorShape {
            rgba: vec![0; 16],
            ..t
        }));
    }

    #[test]
    fn big_cursors_are_scaled_down_by_a_whole_factor() {
        // 130 x 40 → factor 3 → 44 x 14; left half opaque blue, right half transparent.
        let (w, h) = (130u16, 40u16);
        let px: Vec<u32> = (0..usize::from(w) * usize::from(h))
            .map(|i| {
                if i % 130 < 65 {
                    argb(255, 0, 0, 255)
                } else {
                    0
                }
            })
            .collect();
        let s = CursorShape::from_argb(3, w, h, 129, 39, &px);
        assert_eq!((s.width, s.height, s.xhot, s.yhot), (44, 14, 43, 13));
        assert_eq!(s.pixel(0, 0), Some([0, 0, 255, 255]));
        assert_eq!(s.pixel(43, 13), Some([0; 4]));
        // The block across the edge (x 63..66: two blue, one clear) is blue, 2/3 opaque.
        assert_eq!(s.pixel(21, 5), Some([0, 0, 255, 170]));
        assert!(encode_shape(&s).len() <= 3 + 12 + 64 * 64 * 4);
        let s = CursorShape::from_argb(3, 64, 64, 0, 0, &vec![argb(255, 9, 9, 9); 64 * 64]);
        assert_eq!((s.width, s.height), (64, 64), "64 is kept as it is");
    }

    #[test]
    fn wire_bytes_are_as_documented() {
        let s = CursorShape::from_argb(0x0102_0304, 1, 1, 0, 0, &[argb(255, 10, 20, 30)]);
        assert_eq!(
            encode_shape(&s),
            [0x81, 0, 16, 1, 2, 3, 4, 0, 1, 0, 1, 0, 0, 0, 0, 10, 20, 30, 255]
        );
        assert_eq!(
            encode_position(258, 3, 9),
            [0x82, 0, 8, 1, 2, 0, 3, 0, 0, 0, 9]
        );
        assert_eq!(
            parse_cursor(&encode_position(258, 3, 9)),
            Some(CursorMsg::Position {
                x: 258,
                y: 3,
                serial: 9
            })
        );
        assert_eq!(
            parse_cursor(&encode_shape(&s)),
            Some(CursorMsg::Shape(s.clone()))
        );
        // A hand-made shape whose pixels do not match its size goes out as "no cursor".
        let bad = CursorShape {
            rgba: vec![1, 2, 3],
            ..s
        };
        assert_eq!(
            encode_shape(&bad),
            [0x81, 0, 12, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(parse_cursor(&[0x82, 0, 7, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(
            parse_cursor(&[0x81, 0, 12, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0]),
            None
        );
        assert_eq!(parse_cursor(&[0x80, 0, 1, 1]), None);
    }

    fn state(epoch: u64, serial: u32, pos: (u16, u16)) -> CursorState {
        CursorState {
            epoch,
            shape: Some(Arc::new(CursorShape::from_argb(
                serial,
                1,
                1,
                0,
                0,
                &[argb(255, 1, 1, 1)],
            ))),
            pos: Some(pos),
        }
    }

    fn kinds(msgs: &[Vec<u8>]) -> Vec<u8> {
        msgs.iter().map(|m| m[0]).collect()
    }

    #[test]
    fn a_viewer_gets_each_shape_once_and_only_changes() {
        let mut f = ViewerFeed::default();
        assert!(
            f.update(&CursorState::default()).is_empty(),
            "nothing known yet"
        );
        assert_eq!(kinds(&f.update(&state(1, 5, (1, 2)))), [0x81, 0x82]);
        assert!(f.update(&state(1, 5, (1, 2))).is_empty());
        assert_eq!(kinds(&f.update(&state(1, 5, (3, 2)))), [0x82]);
        assert_eq!(kinds(&f.update(&state(1, 6, (3, 2)))), [0x81, 0x82]);
        // Back to a shape it has: only the position naming it.
        let m = f.update(&state(1, 5, (3, 2)));
        assert_eq!(m, [encode_position(3, 2, 5)]);
        // A new X server: serials mean nothing any more.
        assert_eq!(kinds(&f.update(&state(2, 5, (3, 2)))), [0x81, 0x82]);
    }

    #[test]
    fn the_sent_set_never_outgrows_the_viewer_cache() {
        let mut f = ViewerFeed::default();
        for serial in 0..(VIEWER_CACHE as u32 * 3) {
            assert_eq!(kinds(&f.update(&state(1, serial, (0, 0)))), [0x81, 0x82]);
            assert!(f.sent.len() <= VIEWER_CACHE);
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_cursor(&bytes);
        }

        /// Any X image round-trips through the wire within the bound, hotspot inside.
        #[test]
        fn shapes_round_trip_bounded(w in 0u16..200, h in 0u16..200, xhot: u16, yhot: u16, serial: u32, seed: u32) {
            let px: Vec<u32> = (0..u32::from(w) * u32::from(h)).map(|i| i.wrapping_mul(seed) | 0xff00_0000).collect();
            let s = CursorShape::from_argb(serial, w, h, xhot, yhot, &px);
            prop_assert!(s.width <= MAX_SIDE && s.height <= MAX_SIDE);
            prop_assert!(s.width == 0 || s.xhot < s.width);
            prop_assert!(s.height == 0 || s.yhot < s.height);
            prop_assert_eq!(parse_cursor(&encode_shape(&s)), Some(CursorMsg::Shape(s)));
        }

        /// Whatever order states come in, the viewer can draw every position it is sent:
        /// the shape it names was sent before and is still in a cache of VIEWER_CACHE.
        #[test]
        fn positions_only_name_shapes_the_viewer_has(steps in proptest::collection::vec((0u64..3, 0u32..150, 0u16..4), 1..400)) {
            let mut f = ViewerFeed::default();
            let mut cache: VecDeque<u32> = VecDeque::new();
            let mut epoch_seen = 0;
            for (epoch, serial, x) in steps {
                let epoch = epoch_seen.max(epoch);
                epoch_seen = epoch;
                for m in f.update(&state(epoch, serial, (x, 0))) {
                    match parse_cursor(&m) {
                        Some(CursorMsg::Shape(s)) => {
                            cache.retain(|&c| c != s.serial);
                            cache.push_back(s.serial);
                            if cache.len() > VIEWER_CACHE { cache.pop_front(); }
                        }
                        Some(CursorMsg::Position { serial, .. }) => prop_assert!(cache.contains(&serial)),
                        None => prop_assert!(false, "unparsable message"),
                    }
                }
            }
        }
    }
}
