//! The playout-delay RTP header extension on every outgoing video packet, as an interceptor.
//!
//! min = max = 0 tells Chromium to show each frame as soon as it is decoded instead of holding
//! it in the jitter buffer and render queue for smooth playback: someone clicking through a
//! login page wants the screen now. The extension is libwebrtc's
//! (<http://www.webrtc.org/experiments/rtp-hdrext/playout-delay>) and is sent only when the
//! browser offered it.
//!
//! Why an interceptor rather than webrtc-rs' `SampleWriter::with_extension`: with that,
//! Chromium received no video at all (no inbound-rtp stats). The track is bound when it is
//! added, before the offer is applied, and looks the extension's id up in the parameters of
//! that moment, which need not be the id the browser negotiated (we did not confirm which id
//! it used). Interceptors are bound with the negotiated ids, as the TWCC sender is.

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtp::extension::playout_delay_extension::PlayoutDelayExtension;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::Marshal;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The extension's URI, as negotiated in SDP.
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";

/// Largest delay the extension can carry (12 bits of 10 ms).
pub const MAX_DELAY: Duration = Duration::from_millis(40_950);

/// Stamps the playout delay on the RTP packets of every local stream that negotiated it.
pub struct PlayoutDelay {
    /// The extension's 3 bytes.
    value: bytes::Bytes,
    /// SSRC → negotiated extension id.
    streams: HashMap<u32, u8>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl PlayoutDelay {
    /// min 0, max `max` (rounded down to 10 ms, capped at [`MAX_DELAY`]).
    pub fn new(max: Duration) -> PlayoutDelay {
        let units = (max.min(MAX_DELAY).as_millis() / 10) as u16;
        let value = PlayoutDelayExtension::new(0, units)
            .marshal()
            .map(|b| b.freeze())
            .unwrap_or_default();
        PlayoutDelay {
            value,
            streams: HashMap::new(),
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for PlayoutDelay {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(p) = &mut msg.message.packet {
            if let Some(&id) = self.streams.get(&p.header.ssrc) {
                if !self.value.is_empty() {
                    // Only fails for an id the one-byte form cannot carry; send it without.
                    let _ = p.header.set_extension(id, self.value.clone());
                }
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for PlayoutDelay {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(ext) = info
            .rtp_header_extensions
            .iter()
            .find(|e| e.uri == PLAYOUT_DELAY_URI)
        {
            if let Ok(id) = u8::try_from(ext.id) {
                self.streams.insert(info.ssrc, id);
            }
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::RTPHeaderExtension;
    use rtc::shared::marshal::Unmarshal;

    fn packet(ssrc: u32) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    version: 2,
                    ssrc,
                    ..Default::default()
                },
                payload: bytes::Bytes::from_static(&[1, 2, 3]),
            })
            .into(),
        }
    }

    fn extension(p: &TaggedPacket, id: u8) -> Option<PlayoutDelayExtension> {
        let Packet::Rtp(p) = &p.message.packet else {
            return None;
        };
        let mut b = p.header.get_extension(id)?;
        PlayoutDelayExtension::unmarshal(&mut b).ok()
    }

    #[test]
    fn stamps_the_negotiated_id_on_bound_streams_only() {
        let mut i = PlayoutDelay::new(Duration::from_millis(125));
        i.bind_local_stream(&StreamInfo {
            ssrc: 7,
            rtp_header_extensions: vec![
                RTPHeaderExtension {
                    uri: "urn:ietf:params:rtp-hdrext:sdes:mid".into(),
                    id: 9,
                },
                RTPHeaderExtension {
                    uri: PLAYOUT_DELAY_URI.into(),
                    id: 5,
                },
            ],
            ..Default::default()
        });
        i.bind_local_stream(&StreamInfo {
            ssrc: 8,
            ..Default::default()
        });
        i.handle_write(packet(7)).expect("write");
        i.handle_write(packet(8)).expect("write");
        let a = i.poll_write().expect("first");
        assert_eq!(
            extension(&a, 5),
            Some(PlayoutDelayExtension::new(0, 12)),
            "min 0, max 120 ms (10 ms units, rounded down)"
        );
        assert_eq!(extension(&a, 9), None, "the mid id is left alone");
        let b = i.poll_write().expect("second");
        let Packet::Rtp(b) = &b.message.packet else {
            panic!("not RTP")
        };
        assert!(!b.header.extension, "a stream without the extension");
    }

    #[test]
    fn zero_is_render_on_decode_and_large_values_cap() {
        let z = PlayoutDelay::new(Duration::ZERO);
        assert_eq!(&z.value[..], &[0, 0, 0]);
        let big = PlayoutDelay::new(Duration::from_secs(3600));
        assert_eq!(&big.value[..], &[0, 0x0f, 0xff]);
    }
}
