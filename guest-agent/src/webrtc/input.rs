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
}

/// Parses one data-channel message. All-or-nothing: an error means no event is applied.
pub fn parse(msg: &[u8]) -> Result<Vec<InputEvent>, InputError> {
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
                out.push(InputEvent::Move {
                    x: be16(0),
                    y: be16(2),
                });
            }
            0x02 => {
                need(4)?;
                out.push(InputEvent::Wheel {
                    dx: be16(0) as i16,
                    dy: be16(2) as i16,
                });
            }
            0x03 => {
                need(4)?;
                out.push(InputEvent::KeyDown(be32()));
            }
            0x04 => {
                need(4)?;
                out.push(InputEvent::KeyUp(be32()));
            }
            0x05 => {
                need(1)?;
                out.push(InputEvent::ButtonDown(button(p[0])?));
            }
            0x06 => {
                need(1)?;
                out.push(InputEvent::ButtonUp(button(p[0])?));
            }
            0x07 => {
                need(0)?;
                out.push(InputEvent::ReleaseAll);
            }
            _ => {} // unknown: skipped by length
        }
        off += 3 + len;
    }
    Ok(out)
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
        v.push(kind);
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        v.extend_from_slice(&payload);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert_eq!(parse(&encode(&evs)), Ok(evs));
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
    fn unknown_types_are_skipped() {
        let mut m = vec![0x42, 0, 2, 9, 9];
        m.extend(encode(&[InputEvent::KeyDown(0x62)]));
        assert_eq!(parse(&m), Ok(vec![InputEvent::KeyDown(0x62)]));
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
        }
    }
}
