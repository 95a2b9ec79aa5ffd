//! What a viewer's SDP offer says about video codecs, read before any peer is built: the
//! streamer encodes H.264 (preferred) and VP8, picks one per viewer, and refuses an offer with
//! neither by name rather than answering with video the browser rejects (a black player with
//! no reason given). Pure text parsing of `m=video` and its `a=rtpmap:`/`a=fmtp:` lines.

use super::encode::Codec;

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

/// The `m=video` payload types as (encoding name, fmtp parameters) pairs.
fn video_formats(sdp: &str) -> Vec<(String, String)> {
    let mut in_video = false;
    let mut names: Vec<(String, String)> = Vec::new();
    let mut fmtps: Vec<(String, String)> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(media) = line.strip_prefix("m=") {
            in_video = media.starts_with("video ");
            continue;
        }
        if !in_video {
            continue;
        }
        if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let mut it = map.split_whitespace();
            if let (Some(pt), Some(enc)) = (it.next(), it.next()) {
                let name = enc.split('/').next().unwrap_or("");
                names.push((pt.to_string(), name.to_string()));
            }
        } else if let Some(f) = line.strip_prefix("a=fmtp:") {
            if let Some((pt, params)) = f.split_once(' ') {
                fmtps.push((pt.to_string(), params.trim().to_string()));
            }
        }
    }
    names
        .into_iter()
        .map(|(pt, name)| {
            let params = fmtps
                .iter()
                .find(|(p, _)| *p == pt)
                .map(|(_, f)| f.clone())
                .unwrap_or_default();
            (name, params)
        })
        .collect()
}

/// One `key=value` of an fmtp line (`;`-separated, keys case-insensitive).
fn fmtp_param<'a>(params: &'a str, key: &str) -> Option<&'a str> {
    params.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
    })
}

/// An H.264 format our encoder's stream fits and webrtc-rs will match: packetization-mode 1
/// (the only one it packetizes) and a constrained baseline profile-level-id (`42e0..`; webrtc-rs
/// compares the profile and constraint bytes, the level is free). Every Chromium and Firefox
/// offer has one; an H.264 offered only in other profiles or mode 0 would fail the answer.
fn usable_h264(params: &str) -> bool {
    fmtp_param(params, "packetization-mode") == Some("1")
        && fmtp_param(params, "profile-level-id")
            .is_some_and(|p| p.len() == 6 && p[..4].eq_ignore_ascii_case("42e0"))
}

/// Whether the offer has H.264 video the streamer can send.
pub fn offers_h264(sdp: &str) -> bool {
    video_formats(sdp)
        .iter()
        .any(|(name, params)| name.eq_ignore_ascii_case("H264") && usable_h264(params))
}

/// The codec for this offer's viewer: H.264 when the offer has a usable one, else VP8 when it
/// offers VP8, else the offered video codecs for the refusal.
pub fn choose_codec(sdp: &str) -> Result<Codec, Vec<String>> {
    let formats = video_formats(sdp);
    let has = |codec: Codec| {
        formats.iter().any(|(name, params)| {
            name.eq_ignore_ascii_case(codec.sdp_name())
                && (codec != Codec::H264 || usable_h264(params))
        })
    };
    Codec::ALL
        .into_iter()
        .find(|c| has(*c))
        .ok_or_else(|| offered_video_codecs(sdp))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROMIUM: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
        a=rtpmap:102 H264/90000\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=rtpmap:103 rtx/90000\r\na=rtpmap:45 AV1/90000\r\n\
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

    #[test]
    fn h264_when_usable_else_vp8_else_the_offered_list() {
        assert_eq!(choose_codec(CHROMIUM), Ok(Codec::H264));
        // setCodecPreferences([VP8]) leaves only VP8 (and rtx) in the offer.
        let vp8_only = CHROMIUM.replace("a=rtpmap:102 H264/90000\r\n", "");
        assert_eq!(choose_codec(&vp8_only), Ok(Codec::Vp8));
        // H.264 we cannot send (mode 0, or High profile only) falls back to VP8 too.
        for fmtp in [
            "packetization-mode=0;profile-level-id=42e01f",
            "packetization-mode=1;profile-level-id=640c1f",
            "profile-level-id=42e01f",
            "",
        ] {
            let sdp = CHROMIUM.replace(
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                fmtp,
            );
            assert!(!offers_h264(&sdp), "{fmtp}");
            assert_eq!(choose_codec(&sdp), Ok(Codec::Vp8), "{fmtp}");
        }
        // Upper-case hex and any level are fine.
        let sdp = CHROMIUM.replace("42e01f", "42E034");
        assert_eq!(choose_codec(&sdp), Ok(Codec::H264));
        // Neither: the refusal lists what was offered.
        let neither = vp8_only.replace("a=rtpmap:96 VP8/90000\r\n", "");
        assert_eq!(choose_codec(&neither), Err(vec!["AV1".to_string()]));
        assert_eq!(choose_codec(""), Err(vec![]));
    }
}
