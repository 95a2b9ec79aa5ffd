//! Firecracker's hybrid vsock handshake, host side (pure: no I/O).
//!
//! Firecracker (and rust-vmm's `vhost-device-vsock`) expose a VM's virtio-vsock device on the
//! host as one unix socket. A host process connects to it, writes `CONNECT <port>\n` naming
//! the guest port, and the device answers `OK <host_port>\n` once the guest accepted, or
//! closes the connection when nothing listens there. After the `OK` line the same stream
//! carries the guest's bytes.
//!
//! The reply is read from a socket, so it may come in pieces and must be bounded: the
//! [`ReplyDecoder`] is fed bytes as they arrive and says [`Step::NeedMore`], the host port,
//! or a [`HandshakeError`] naming what is wrong. Bytes after the newline belong to the guest
//! (HTTP) and are handed back untouched.

use std::fmt;

/// Longest reply line accepted, newline included. `OK 4294967295\n` is 14 bytes; anything
/// much longer is not Firecracker talking.
pub const MAX_REPLY_LINE: usize = 64;

/// The request line for guest `port`: `CONNECT <port>\n`.
pub fn connect_request(port: u32) -> String {
    format!("CONNECT {port}\n")
}

/// What the reply line was instead of `OK <port>\n`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The line does not start with `OK ` (the device's own error text, or garbage).
    #[error("the VM's device answered `{line}` instead of OK <port>")]
    NotOk { line: String },
    /// `OK ` followed by something that is not a port number.
    #[error("the VM's device answered `{line}`: `{field}` is not a port number (0-4294967295)")]
    BadPort { line: String, field: String },
    /// No newline within [`MAX_REPLY_LINE`] bytes.
    #[error(
        "the VM's device sent {len} bytes without a newline (at most {max} expected): `{start}`"
    )]
    TooLong {
        len: usize,
        max: usize,
        /// The start of what was sent (shown escaped).
        start: String,
    },
    /// The reply is not UTF-8 text.
    #[error("the VM's device answered bytes that are not text: `{start}`")]
    NotText { start: String },
}

/// One step of the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No full line yet: feed more bytes.
    NeedMore,
    /// `OK <host_port>` read; `rest` is what followed the newline (the guest's first bytes).
    Ok { host_port: u32, rest: Vec<u8> },
}

/// Incremental decoder of the `OK <n>\n` reply.
#[derive(Debug, Default, Clone)]
pub struct ReplyDecoder {
    buf: Vec<u8>,
}

impl ReplyDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes received so far that are not a full line yet (after `Ok`: the line).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Feeds the next bytes read from the socket. Once it returned `Ok` or `Err`, the decoder
    /// is done: feeding more is an error of the caller (it answers the same again).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Step, HandshakeError> {
        // What is buffered holds no newline (else an earlier call ended the handshake), and
        // is below the cap.
        let before = self.buf.len();
        let take = bytes.len().min(MAX_REPLY_LINE.saturating_sub(before) + 1);
        let nl = bytes[..take].iter().position(|&b| b == b'\n');
        // Keep what follows a newline whole (the guest's bytes); otherwise never more than
        // the cap plus one byte.
        match nl {
            Some(_) => self.buf.extend_from_slice(bytes),
            None => self.buf.extend_from_slice(&bytes[..take]),
        }
        let Some(nl) = nl.map(|i| i + before) else {
            if self.buf.len() >= MAX_REPLY_LINE {
                let len = before + bytes.len();
                self.buf.truncate(MAX_REPLY_LINE);
                return Err(HandshakeError::TooLong {
                    len,
                    max: MAX_REPLY_LINE,
                    start: shown(&self.buf),
                });
            }
            return Ok(Step::NeedMore);
        };
        if nl + 1 > MAX_REPLY_LINE {
            return Err(HandshakeError::TooLong {
                len: nl + 1,
                max: MAX_REPLY_LINE,
                start: shown(&self.buf[..MAX_REPLY_LINE]),
            });
        }
        let rest = self.buf[nl + 1..].to_vec();
        self.buf.truncate(nl + 1);
        let host_port = parse_reply(&self.buf[..nl])?;
        Ok(Step::Ok { host_port, rest })
    }
}

/// Parses one reply line without its `\n` (a `\r` before it is tolerated).
pub fn parse_reply(line: &[u8]) -> Result<u32, HandshakeError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text =
        std::str::from_utf8(line).map_err(|_| HandshakeError::NotText { start: shown(line) })?;
    let Some(field) = text.strip_prefix("OK ") else {
        return Err(HandshakeError::NotOk { line: shown(line) });
    };
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HandshakeError::BadPort {
            line: shown(line),
            field: shown(field.as_bytes()),
        });
    }
    field.parse::<u32>().map_err(|_| HandshakeError::BadPort {
        line: shown(line),
        field: shown(field.as_bytes()),
    })
}

/// Up to [`MAX_REPLY_LINE`] bytes, control characters and non-ASCII escaped: the reply comes
/// from the guest's side and ends up in an operator's terminal.
fn shown(bytes: &[u8]) -> String {
    struct Esc<'a>(&'a [u8]);
    impl fmt::Display for Esc<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for &b in self.0.iter().take(MAX_REPLY_LINE) {
                match b {
                    b'\n' => f.write_str("\\n")?,
                    b'\r' => f.write_str("\\r")?,
                    b'\\' => f.write_str("\\\\")?,
                    b'`' => f.write_str("\\`")?,
                    0x20..=0x7e => write!(f, "{}", b as char)?,
                    _ => write!(f, "\\x{b:02x}")?,
                }
            }
            Ok(())
        }
    }
    Esc(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_all(chunks: &[&[u8]]) -> Result<Step, HandshakeError> {
        let mut d = ReplyDecoder::new();
        let mut last = Ok(Step::NeedMore);
        for c in chunks {
            last = d.feed(c);
            if !matches!(last, Ok(Step::NeedMore)) {
                break;
            }
        }
        last
    }

    #[test]
    fn request_line() {
        assert_eq!(connect_request(8080), "CONNECT 8080\n");
        assert_eq!(connect_request(u32::MAX), "CONNECT 4294967295\n");
    }

    #[test]
    fn ok_line_whole_and_in_pieces() {
        let want = Ok(Step::Ok {
            host_port: 1073741824,
            rest: vec![],
        });
        assert_eq!(feed_all(&[b"OK 1073741824\n"]), want);
        assert_eq!(feed_all(&[b"O", b"K 10737", b"41824", b"\n"]), want);
        assert_eq!(feed_all(&[b"OK 1073741824\r\n"]), want);
        let mut d = ReplyDecoder::new();
        assert_eq!(d.feed(b"OK 5"), Ok(Step::NeedMore));
        assert_eq!(d.pending(), b"OK 5");
    }

    #[test]
    fn bytes_after_the_line_are_handed_back() {
        assert_eq!(
            feed_all(&[b"OK 7\nHTTP/1.1 200 OK\r\n"]),
            Ok(Step::Ok {
                host_port: 7,
                rest: b"HTTP/1.1 200 OK\r\n".to_vec()
            })
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let e = feed_all(&[b"ERR no listener\n"]).unwrap_err();
        assert!(matches!(e, HandshakeError::NotOk { .. }));
        assert_eq!(
            e.to_string(),
            "the VM's device answered `ERR no listener` instead of OK <port>"
        );
        for (line, field) in [
            (&b"OK abc\n"[..], "abc"),
            (b"OK \n", ""),
            (b"OK -1\n", "-1"),
            (b"OK 4294967296\n", "4294967296"),
            (b"OK 12 34\n", "12 34"),
            (b"OK +5\n", "+5"),
        ] {
            match feed_all(&[line]) {
                Err(HandshakeError::BadPort { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{line:?}: {other:?}"),
            }
        }
        assert!(matches!(
            feed_all(&[b"ok 5\n"]),
            Err(HandshakeError::NotOk { .. })
        ));
        assert!(matches!(
            feed_all(&[b"\n"]),
            Err(HandshakeError::NotOk { .. })
        ));
        assert!(matches!(
            feed_all(&[b"OK \xff\n"]),
            Err(HandshakeError::NotText { .. })
        ));
    }

    #[test]
    fn a_line_without_newline_stops_at_the_cap() {
        let long = vec![b'O'; 40];
        let mut d = ReplyDecoder::new();
        assert_eq!(d.feed(&long), Ok(Step::NeedMore));
        let e = d.feed(&long).unwrap_err();
        assert!(
            matches!(
                e,
                HandshakeError::TooLong {
                    len: 80,
                    max: MAX_REPLY_LINE,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(d.pending().len() <= MAX_REPLY_LINE);
        // a newline past the cap in one read is still too long
        let mut line = b"OK ".to_vec();
        line.extend_from_slice(&[b'1'; 80]);
        line.push(b'\n');
        assert!(matches!(
            feed_all(&[&line]),
            Err(HandshakeError::TooLong { .. })
        ));
    }

    #[test]
    fn control_characters_are_escaped_in_errors() {
        let e = feed_all(&[b"\x1b[2J\x07boom\n"]).unwrap_err().to_string();
        assert!(!e.contains('\x1b') && !e.contains('\x07'), "{e}");
        assert!(e.contains("\\x1b[2J\\x07boom"), "{e}");
    }

    proptest! {
        /// Any split of a valid reply gives the same port and the same trailing bytes.
        #[test]
        fn any_split_of_a_valid_reply(port: u32, rest in proptest::collection::vec(any::<u8>(), 0..40),
                                      cuts in proptest::collection::vec(0usize..80, 0..6)) {
            let mut all = format!("OK {port}\n").into_bytes();
            all.extend_from_slice(&rest);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (all.len() + 1)).collect();
            cuts.sort();
            let mut d = ReplyDecoder::new();
            let mut prev = 0;
            let mut got = None;
            for c in cuts.into_iter().chain(std::iter::once(all.len())) {
                match d.feed(&all[prev..c]).unwrap() {
                    Step::NeedMore => {}
                    Step::Ok { host_port, rest: r } => {
                        let mut r = r;
                        r.extend_from_slice(&all[c..]);
                        got = Some((host_port, r));
                        break;
                    }
                }
                prev = c;
            }
            prop_assert_eq!(got, Some((port, rest)));
        }

        /// Arbitrary bytes never panic, never buffer past the cap, and an `Ok` is only
        /// ever given for a line that really is `OK <digits>`.
        #[test]
        fn arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..8)) {
            let mut d = ReplyDecoder::new();
            for c in &chunks {
                match d.feed(c) {
                    Ok(Step::NeedMore) => prop_assert!(d.pending().len() < MAX_REPLY_LINE),
                    Ok(Step::Ok { host_port, .. }) => {
                        let line = d.pending();
                        let text = std::str::from_utf8(line).unwrap();
                        let text = text.trim_end_matches('\n').trim_end_matches('\r');
                        prop_assert!(text.starts_with("OK "));
                        prop_assert_eq!(text[3..].parse::<u32>().unwrap(), host_port);
                        break;
                    }
                    Err(e) => {
                        let s = e.to_string();
                        prop_assert!(!s.bytes().any(|b| b < 0x20 || b == 0x7f));
                        break;
                    }
                }
            }
        }
    }
}
