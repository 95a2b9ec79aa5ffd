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
