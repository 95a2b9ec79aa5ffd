//! What a viewer's SDP offer says about video codecs, read before any peer is built: the
//! streamer encodes H.264 only, and a browser that offers no H.264 (a Chromium built without
//! proprietary codecs, say) would otherwise get an answer whose video is rejected and a black
//! player with no reason given. Pure text parsing of `m=video` and its `a=rtpmap:` lines.

/// The codec names (`H264`, `VP8`, ...) of every `m=video` section's `a=rtpmap:` lines, in
/// order, without duplicates and without the non-media ones (`rtx`, `red`, `ulpfec`).
pub fn offered_video_codecs(sdp: &str) -> Vec<String> {
    let mut in_video = false;
    let mut found: Vec<String> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(media) = line.strip_prefix("m=") {
            in_video = media.starts_with("video ");
            continue;
        }
        if !in_video {
            continue;
        }
        let Some(map) = line.strip_prefix("a=rtpmap:") else {
            continue;
        };
        // a=rtpmap:<pt> <name>/<clock>[/<channels>]
        let Some(name) = map
            .split_whitespace()
            .nth(1)
            .and_then(|enc| enc.split('/').next())
        else {
            continue;
        };
        let skip = ["rtx", "red", "ulpfec", "flexfec-03"];
        if skip.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            continue;
        }
        if !found.iter().any(|f| f.eq_ignore_ascii_case(name)) {
            found.push(name.to_string());
        }
    }
    found
}

/// Whether the offer has H.264 video.
pub fn offers_h264(sdp: &str) -> bool {
    offered_video_codecs(sdp)
        .iter()
        .any(|c| c.eq_ignore_ascii_case("H264"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROMIUM: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
        a=rtpmap:102 H264/90000\r\na=rtpmap:103 rtx/90000\r\na=rtpmap:45 AV1/90000\r\n\
        a=rtpmap:104 red/90000\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

    #[test]
    fn lists_video_codecs_only() {
        assert_eq!(offered_video_codecs(CHROMIUM), ["VP8", "H264", "AV1"]);
        assert!(offers_h264(CHROMIUM));
    }

    #[test]
    fn no_h264_is_seen_and_audio_does_not_count() {
        let vp8_only = CHROMIUM.replace("a=rtpmap:102 H264/90000\r\n", "");
        assert_eq!(offered_video_codecs(&vp8_only), ["VP8", "AV1"]);
        assert!(!offers_h264(&vp8_only));
        let audio_h264 = "m=audio 9 RTP 102\na=rtpmap:102 H264/90000\n";
        assert!(!offers_h264(audio_h264));
        assert!(offered_video_codecs("").is_empty());
        assert!(offered_video_codecs("garbage\nm=video\na=rtpmap:\na=rtpmap:1\n").is_empty());
    }
}
