//! The viewer → VM input format carried on the `input` data channel (binary, modelled on
//! neko's): a message is one or more events, each `type: u8, len: u16 BE` followed by `len`
//! payload bytes (big-endian fields). Unknown types are skipped by their length, so old
//! streamers accept newer viewers.
//!
//! | type | event        | payload                                        |
//! |------|--------------|------------------------------------------------|
//! | 0x01 | pointer move | `x: u16, y: u16` in video pixels               |
//! | 0x02 | wheel        | `dx: i16, dy: i16` in notches (+dy = down)     |
//! | 0x03 | key down     | `keysym: u32` (X11 keysym)                     |
//! | 0x04 | key up       | `keysym: u32`                                  |
//! | 0x05 | button down  | `button: u8` (X button: 1 left, 2 middle, 3 right) |
//! | 0x06 | button up    | `button: u8`                                   |
//! | 0x07 | release all  | empty (viewer lost focus)                      |
//! | 0x08 | clipboard set | UTF-8 text, at most [`MAX_CLIPBOARD`] bytes: the VM's CLIPBOARD and PRIMARY become it |
//! | 0x09 | clipboard get | empty: the streamer answers with a 0x80 message |
//! | 0x0a | cursor watch | `on: u8`: 1 = send this viewer the VM's pointer (0x81, 0x82) as it changes, 0 = stop |
//!
//! Streamer → viewer, on the same channel and in the same framing:
//!
//! | type | message        | payload                                       |
//! |------|----------------|-----------------------------------------------|
//! | 0x80 | clipboard text | `status: u8` then UTF-8 text: 0 text, 1 empty (no owner, no text), 2 over [`MAX_CLIPBOARD`], 3 failed (timeout, refused) |
//! | 0x81 | cursor shape   | `serial: u32, width: u16, height: u16, xhot: u16, yhot: u16`, then RGBA pixels (≤ 64x64; [`super::cursor_msg`]) |
//! | 0x82 | cursor position | `x: u16, y: u16` in video pixels, `serial: u32` of the shape shown |
//!
//! Cursor messages go only to a viewer that asked (0x0a), so a client that predates them never
//! gets one.
//!
//! A clipboard set longer than the bound, or not UTF-8, is refused (not truncated: a cut
//! password is worse than none) like any malformed event: the whole message is dropped and
//! counted.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEvent {
    Move { x: u16, y: u16 },
    Wheel { dx: i16, dy: i16 },
    KeyDown(u32),
    KeyUp(u32),
    ButtonDown(u8),
    ButtonUp(u8),
    ReleaseAll,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("event at byte {offset}: header needs 3 bytes, {left} left")]
    ShortHeader { offset: usize, left: usize },
    #[error("event at byte {offset}: length {len} runs past the message end ({left} left)")]
    ShortPayload {
        offset: usize,
        len: usize,
        left: usize,
    },
    #[error("event at byte {offset} (type {kind:#04x}): payload is {len} bytes, needs {need}")]
    BadLength {
        offset: usize,
        kind: u8,
        len: usize,
        need: usize,
    },
    #[error("event at byte {offset}: button {button} is not 1..=9")]
    BadButton { offset: usize, button: u8 },
    #[error("event at byte {offset}: clipboard text of {len} bytes is over the {max} byte bound")]
    ClipboardTooLarge {
        offset: usize,
        len: usize,
        max: usize,
    },
    #[error("event at byte {offset}: clipboard text is not UTF-8 (bad byte at {at})")]
    ClipboardNotUtf8 { offset: usize, at: usize },
    #[error("event at byte {offset}: cursor watch {value} is not 0 or 1")]
    BadCursorWatch { offset: usize, value: u8 },
    #[error("event at byte {offset}: more than {max} clipboard sets in one message")]
    TooManyClipboardSets { offset: usize, max: usize },
}

/// Largest clipboard text either way, in bytes. Below the u16 event length (65535), below
/// webrtc-rs' default SCTP message size (64 KiB) with the framing around it, and far below
/// the X server's maximum request size (256 KiB without BIG-REQUESTS), so the selection
/// owner answers with one property write and never needs INCR transfers.
pub const MAX_CLIPBOARD: usize = 60 * 1024;

/// Most clipboard sets one message may carry. Each is awaited (the X server must own the
/// text before the events after it go in), so a message of thousands of tiny sets would
/// cost thousands of X round trips; a person's paste is one set, a paste and Ctrl+V twice
/// over is two.
pub const MAX_CLIPBOARD_SETS: usize = 4;

/// Type of the streamer → viewer clipboard answer.
pub const CLIPBOARD_TEXT: u8 = 0x80;

/// One parsed viewer event: input for the injector, or a clipboard request (which has a
/// payload, so it is not in the `Copy` [`InputEvent`] the input queue coalesces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Input(InputEvent),
    ClipboardSet(String),
    ClipboardGet,
    /// Start (true) or stop sending this viewer the VM's pointer.
    CursorWatch(bool),
}

/// Parses one data-channel message. All-or-nothing: an error means no event is applied.
pub fn parse(msg: &[u8]) -> Result<Vec<Event>, InputError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < msg.len() {
        let left = msg.len() - off;
        if left < 3 {
            return Err(InputError::ShortHeader { offset: off, left });
        }
        let kind = msg[off];
        let len = u16::from_be_bytes([msg[off + 1], msg[off + 2]]) as usize;
        if len > left - 3 {
            return Err(InputError::ShortPayload {
                offset: off,
                len,
                left: left - 3,
            });
        }
        let p = &msg[off + 3..off + 3 + len];
        let need = |n: usize| {
            if len == n {
                Ok(())
            } else {
                Err(InputError::BadLength {
                    offset: off,
                    kind,
                    len,
                    need: n,
                })
            }
        };
        let be16 = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
        let be32 = || u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        let button = |b: u8| {
            if (1..=9).contains(&b) {
                Ok(b)
            } else {
                Err(InputError::BadButton {
                    offset: off,
                    button: b,
                })
            }
        };
        match kind {
            0x01 => {
                need(4)?;
                out.push(Event::Input(InputEvent::Move {
                    x: be16(0),
                    y: be16(2),
                }));
            }
            0x02 => {
                need(4)?;
                out.push(Event::Input(InputEvent::Wheel {
                    dx: be16(0) as i16,
                    dy: be16(2) as i16,
                }));
            }
            0x03 => {
                need(4)?;
                out.push(Event::Input(InputEvent::KeyDown(be32())));
            }
            0x04 => {
                need(4)?;
                out.push(Event::Input(InputEvent::KeyUp(be32())));
            }
            0x05 => {
                need(1)?;
                out.push(Event::Input(InputEvent::ButtonDown(button(p[0])?)));
            }
            0x06 => {
                need(1)?;
                out.push(Event::Input(InputEvent::ButtonUp(button(p[0])?)));
            }
            0x07 => {
                need(0)?;
                out.push(Event::Input(InputEvent::ReleaseAll));
            }
            0x08 => {
                if len > MAX_CLIPBOARD {
                    return Err(InputError::ClipboardTooLarge {
                        offset: off,
                        len,
                        max: MAX_CLIPBOARD,
                    });
                }
                let text = std::str::from_utf8(p).map_err(|e| InputError::ClipboardNotUtf8 {
                    offset: off,
                    at: e.valid_up_to(),
                })?;
                if out
                    .iter()
                    .filter(|e| matches!(e, Event::ClipboardSet(_)))
                    .count()
                    >= MAX_CLIPBOARD_SETS
                {
                    return Err(InputError::TooManyClipboardSets {
                        offset: off,
                        max: MAX_CLIPBOARD_SETS,
                    });
                }
                out.push(Event::ClipboardSet(text.to_owned()));
            }
            0x09 => {
                need(0)?;
                out.push(Event::ClipboardGet);
            }
            0x0a => {
                need(1)?;
                let on = match p[0] {
                    0 => false,
                    1 => true,
                    value => return Err(InputError::BadCursorWatch { offset: off, value }),
                };
                out.push(Event::CursorWatch(on));
            }
            _ => {} // unknown: skipped by length
        }
        off += 3 + len;
    }
    Ok(out)
}

/// Appends one event's framing and payload (the payload must fit the u16 length).
fn frame(v: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let len = payload.len().min(usize::from(u16::MAX));
    v.push(kind);
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.extend_from_slice(&payload[..len]);
}

/// A clipboard set event (tests, non-browser clients); text over the u16 length is cut
/// there, so the parser refuses anything over [`MAX_CLIPBOARD`] it makes.
pub fn encode_clipboard_set(text: &str) -> Vec<u8> {
    let mut v = Vec::new();
    frame(&mut v, 0x08, text.as_bytes());
    v
}

pub fn encode_clipboard_get() -> Vec<u8> {
    vec![0x09, 0, 0]
}

pub fn encode_cursor_watch(on: bool) -> Vec<u8> {
    vec![0x0a, 0, 1, u8::from(on)]
}

/// What the streamer found in the VM's clipboard (0x80 `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClipboardReply {
    Text(String),
    Empty,
    TooLarge,
    Failed,
}

/// The streamer → viewer 0x80 message; text over [`MAX_CLIPBOARD`] is answered as
/// `TooLarge`, never sent.
pub fn encode_clipboard_reply(r: &ClipboardReply) -> Vec<u8> {
    let mut payload = Vec::new();
    match r {
        ClipboardReply::Text(t) if t.len() <= MAX_CLIPBOARD => {
            payload.push(0);
            payload.extend_from_slice(t.as_bytes());
        }
        ClipboardReply::Text(_) | ClipboardReply::TooLarge => payload.push(2),
        ClipboardReply::Empty => payload.push(1),
        ClipboardReply::Failed => payload.push(3),
    }
    let mut v = Vec::new();
    frame(&mut v, CLIPBOARD_TEXT, &payload);
    v
}

/// Reads a 0x80 message (tests, non-browser clients); None when it is not one.
pub fn parse_clipboard_reply(msg: &[u8]) -> Option<ClipboardReply> {
    let (&kind, rest) = msg.split_first()?;
    let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let p = rest.get(2..2 + len)?;
    if kind != CLIPBOARD_TEXT || 2 + len != rest.len() {
        return None;
    }
    let (&status, text) = p.split_first()?;
    match status {
        0 => Some(ClipboardReply::Text(
            std::str::from_utf8(text).ok()?.to_owned(),
        )),
        1 => Some(ClipboardReply::Empty),
        2 => Some(ClipboardReply::TooLarge),
        3 => Some(ClipboardReply::Failed),
        _ => None,
    }
}

/// Encodes events in the wire format (tests, benchmarks, non-browser clients).
pub fn encode(events: &[InputEvent]) -> Vec<u8> {
    let mut v = Vec::new();
    for e in events {
        let (kind, payload): (u8, Vec<u8>) = match *e {
            InputEvent::Move { x, y } => (1, [x.to_be_bytes(), y.to_be_bytes()].concat()),
            InputEvent::Wheel { dx, dy } => (2, [dx.to_be_bytes(), dy.to_be_bytes()].concat()),
            InputEvent::KeyDown(k) => (3, k.to_be_bytes().to_vec()),
            InputEvent::KeyUp(k) => (4, k.to_be_bytes().to_vec()),
            InputEvent::ButtonDown(b) => (5, vec![b]),
            InputEvent::ButtonUp(b) => (6, vec![b]),
            InputEvent::ReleaseAll => (7, vec![]),
        };
        frame(&mut v, kind, &payload);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inputs(evs: &[InputEvent]) -> Vec<Event> {
        evs.iter().map(|&e| Event::Input(e)).collect()
    }

    #[test]
    fn clipboard_events_round_trip_with_input_around_them() {
        let mut m = encode(&[InputEvent::KeyDown(0xffe3)]);
        m.extend(encode_clipboard_set("pässwörd € 🔑"));
        m.extend(encode_clipboard_get());
        m.extend(encode(&[InputEvent::KeyUp(0xffe3)]));
        assert_eq!(
            parse(&m),
            Ok(vec![
                Event::Input(InputEvent::KeyDown(0xffe3)),
                Event::ClipboardSet("pässwörd € 🔑".into()),
                Event::ClipboardGet,
                Event::Input(InputEvent::KeyUp(0xffe3)),
            ])
        );
        assert_eq!(encode_clipboard_set("ab"), [8, 0, 2, b'a', b'b']);
        assert_eq!(
            parse(&[8, 0, 0]),
            Ok(vec![Event::ClipboardSet(String::new())])
        );
    }

    #[test]
    fn a_message_carries_at_most_four_clipboard_sets() {
        let set = encode_clipboard_set("");
        let four: Vec<u8> = set.repeat(MAX_CLIPBOARD_SETS);
        assert_eq!(parse(&four).map(|e| e.len()), Ok(MAX_CLIPBOARD_SETS));
        // Thousands of 3-byte sets in one message would be as many awaited X round trips.
        let many: Vec<u8> = set.repeat(20_000);
        assert_eq!(
            parse(&many),
            Err(InputError::TooManyClipboardSets {
                offset: 3 * MAX_CLIPBOARD_SETS,
                max: MAX_CLIPBOARD_SETS
            })
        );
    }

    #[test]
    fn clipboard_bounds_and_bad_text_are_refused_by_name() {
        let max = "x".repeat(MAX_CLIPBOARD);
        assert_eq!(
            parse(&encode_clipboard_set(&max)),
            Ok(vec![Event::ClipboardSet(max.clone())])
        );
        let over = "x".repeat(MAX_CLIPBOARD + 1);
        let mut m = encode(&[InputEvent::KeyDown(0x61)]);
        m.extend(encode_clipboard_set(&over));
        assert_eq!(
            parse(&m),
            Err(InputError::ClipboardTooLarge {
                offset: 7,
                len: MAX_CLIPBOARD + 1,
                max: MAX_CLIPBOARD
            })
        );
        assert_eq!(
            parse(&[8, 0, 3, b'a', 0xc3, 0x28]),
            Err(InputError::ClipboardNotUtf8 { offset: 0, at: 1 })
        );
        assert_eq!(
            parse(&[9, 0, 1, 0]),
            Err(InputError::BadLength {
                offset: 0,
                kind: 9,
                len: 1,
                need: 0
            })
        );
        let e = parse(&encode_clipboard_set(&over)).expect_err("too large");
        assert!(
            e.to_string().contains("clipboard text of 61441 bytes"),
            "{e}"
        );
    }

    #[test]
    fn clipboard_replies_round_trip() {
        for r in [
            ClipboardReply::Text("héllo\n".into()),
            ClipboardReply::Text(String::new()),
            ClipboardReply::Empty,
            ClipboardReply::TooLarge,
            ClipboardReply::Failed,
        ] {
            assert_eq!(parse_clipboard_reply(&encode_clipboard_reply(&r)), Some(r));
        }
        assert_eq!(
            encode_clipboard_reply(&ClipboardReply::Text("x".repeat(MAX_CLIPBOARD + 1))),
            [0x80, 0, 1, 2]
        );
        assert_eq!(
            encode_clipboard_reply(&ClipboardReply::Empty),
            [0x80, 0, 1, 1]
        );
        assert_eq!(parse_clipboard_reply(&[0x80, 0, 1, 9]), None);
        assert_eq!(parse_clipboard_reply(&[0x80, 0, 5, 0]), None);
        assert_eq!(parse_clipboard_reply(&[0x08, 0, 1, 0]), None);
    }

    #[test]
    fn parses_every_event_type() {
        let evs = vec![
            InputEvent::Move { x: 640, y: 360 },
            InputEvent::Wheel { dx: -1, dy: 3 },
            InputEvent::KeyDown(0x61),
            InputEvent::KeyUp(0xff0d),
            InputEvent::ButtonDown(1),
            InputEvent::ButtonUp(3),
            InputEvent::ReleaseAll,
        ];
        assert_eq!(parse(&encode(&evs)), Ok(inputs(&evs)));
    }

    #[test]
    fn wire_bytes_are_as_documented() {
        assert_eq!(
            encode(&[InputEvent::Move { x: 258, y: 3 }]),
            [1, 0, 4, 1, 2, 0, 3]
        );
        assert_eq!(encode(&[InputEvent::ButtonDown(1)]), [5, 0, 1, 1]);
    }

    #[test]
    fn cursor_watch_parses_and_refuses_other_values() {
        let mut m = encode_cursor_watch(true);
        m.extend(encode_cursor_watch(false));
        assert_eq!(
            parse(&m),
            Ok(vec![Event::CursorWatch(true), Event::CursorWatch(false)])
        );
        assert_eq!(encode_cursor_watch(true), [0x0a, 0, 1, 1]);
        assert_eq!(
            parse(&[0x0a, 0, 1, 2]),
            Err(InputError::BadCursorWatch {
                offset: 0,
                value: 2
            })
        );
        assert!(matches!(
            parse(&[0x0a, 0, 0]),
            Err(InputError::BadLength { need: 1, .. })
        ));
    }

    #[test]
    fn unknown_types_are_skipped() {
        let mut m = vec![0x42, 0, 2, 9, 9];
        m.extend(encode(&[InputEvent::KeyDown(0x62)]));
        assert_eq!(parse(&m), Ok(inputs(&[InputEvent::KeyDown(0x62)])));
    }

    #[test]
    fn errors_name_the_offset() {
        assert_eq!(
            parse(&[1, 0]),
            Err(InputError::ShortHeader { offset: 0, left: 2 })
        );
        assert_eq!(
            parse(&[7, 0, 0, 1, 0, 9, 1]),
            Err(InputError::ShortPayload {
                offset: 3,
                len: 9,
                left: 1
            })
        );
        assert_eq!(
            parse(&[3, 0, 2, 1, 2]),
            Err(InputError::BadLength {
                offset: 0,
                kind: 3,
                len: 2,
                need: 4
            })
        );
        assert_eq!(
            parse(&[5, 0, 1, 0]),
            Err(InputError::BadButton {
                offset: 0,
                button: 0
            })
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&bytes);
            let _ = parse_clipboard_reply(&bytes);
        }

        /// Any text within the bound comes back as sent, whatever surrounds it; anything
        /// the parser accepts as a clipboard set is UTF-8 within the bound.
        #[test]
        fn clipboard_text_round_trips(text in ".{0,200}", kind in 0u8..16, junk in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut m = encode_clipboard_set(&text);
            m.extend(encode(&[InputEvent::ReleaseAll]));
            prop_assert_eq!(
                parse(&m),
                Ok(vec![Event::ClipboardSet(text.clone()), Event::Input(InputEvent::ReleaseAll)])
            );
            let mut m = vec![kind, 0, junk.len() as u8];
            m.extend(&junk);
            if let Ok(evs) = parse(&m) {
                for e in evs {
                    if let Event::ClipboardSet(t) = e {
                        prop_assert!(t.len() <= MAX_CLIPBOARD && t.as_bytes() == junk.as_slice());
                    }
                }
            }
        }
    }
}
