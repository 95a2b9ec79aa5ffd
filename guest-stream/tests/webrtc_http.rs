//! The streamer's HTTP surface without a browser: token, content type, bad SDP, unknown
//! viewer ids, and the status document. No X display is needed (capture starts only when a
//! viewer connects).

mod webrtc_common;

use webrtc_common::*;

#[test]
fn whep_rejects_bad_requests_by_name() {
    let s = start_streamer(":9999", 640, 480);
    let auth = format!("Bearer {TOKEN}");
    let a = [("Authorization", auth.as_str())];

    let (code, _) = http(s.addr, "GET", "/webrtc/status", &[], "");
    assert_eq!(code, 401, "status needs the token");
    let (code, body) = http(s.addr, "GET", "/webrtc/status", &a, "");
    assert_eq!(code, 200);
    assert!(body.contains("\"viewers\":0"), "{body}");
    assert!(
        body.contains("\"running\":false"),
        "idle without viewers: {body}"
    );

    let (code, body) = http(
        s.addr,
        "POST",
        "/webrtc/whep",
        &[a[0], ("Content-Type", "text/plain")],
        "v=0\r\n",
    );
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("application/sdp"), "{body}");

    let (code, body) = http(
        s.addr,
        "POST",
        "/webrtc/whep",
        &[a[0], ("Content-Type", "application/sdp")],
        "hello",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("v=0"), "{body}");

    let (code, body) = http(
        s.addr,
        "POST",
        "/webrtc/whep",
        &[a[0], ("Content-Type", "application/sdp")],
        "v=0\r\nthis is not sdp\r\n",
    );
    assert_eq!(code, 400, "{body}");

    // A well-formed offer with neither H.264 nor VP8 video is refused with what it offered,
    // not answered with a rejected video section and a black player.
    let neither = "v=0\r\no=- 46117314 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
        a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
        a=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
        a=rtpmap:96 AV1/90000\r\na=rtpmap:97 VP9/90000\r\n";
    let (code, body) = http(
        s.addr,
        "POST",
        "/webrtc/whep",
        &[a[0], ("Content-Type", "application/sdp")],
        neither,
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("no video codec this streamer encodes"),
        "{body}"
    );
    assert!(body.contains("offered: AV1, VP9"), "{body}");
    let (_, status) = http(s.addr, "GET", "/webrtc/status", &a, "");
    assert!(
        status.contains("\"viewers\":0"),
        "nothing half-made: {status}"
    );

    let (code, _) = http(s.addr, "DELETE", "/webrtc/whep/0123456789abcdef", &a, "");
    assert_eq!(code, 404);

    let (code, body) = http(s.addr, "GET", "/viewer", &[], "");
    assert_eq!(code, 200, "the page is public");
    assert!(body.contains("createDataChannel(\"input\""), "{body}");
}

/// openh264-sys2 silently drops its SIMD assembly when `nasm` is missing at build time and
/// the encoder is then 4-5x slower (DESIGN.md §6): CI must have it.
#[test]
fn nasm_is_installed_for_openh264s_assembly() {
    need("nasm", "nasm");
}
