//! WHEP viewers get the configured ICE servers (issue 15 item 5): the streamer reads them from
//! `--ice-servers-file` (a file, so TURN credentials never show in process arguments) and
//! names them in `Link: <url>; rel="ice-server"` headers of every WHEP answer (RFC 9725
//! §4.6), credentials included for TURN, which `serve`'s proxy passes on; the real viewer
//! page, served by `serve` as in a VM, takes them into its peer connection. The servers are loopback addresses where nothing listens, so no traffic
//! leaves the machine.

mod webrtc_common;

use serde_json::json;
use std::time::Duration;
use webrtc_common::*;

#[test]
fn whep_answers_name_the_ice_servers_and_the_viewer_page_uses_them() {
    let x = start_xvfb(320, 240);
    let _window = start_window(&x.display);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ice.json");
    std::fs::write(
        &file,
        r#"{"iceServers": [
             {"urls": "stun:127.0.0.1:3478"},
             {"urls": ["turn:127.0.0.1:3478?transport=udp"], "username": "1700000000:vm-7", "credential": "s3cret"}
           ]}"#,
    )
    .expect("write");
    let streamer = start_streamer_with(
        &x.display,
        320,
        240,
        &[format!("--ice-servers-file={}", file.display())],
    );
    // Through `serve`, as in a VM: its proxy must carry the headers to the page.
    let serve = start_serve(&streamer.dir.path().join("webrtc.sock"));
    let url = format!("http://{}/viewer#token={TOKEN}", serve.addr);
    let mut b = Browser::launch(&url);
    wait_for("window.viewer", Duration::from_secs(30), || {
        (b.eval("typeof viewer") == json!("object")).then_some(())
    });
    b.eval("viewer.ready.then(() => true)");
    // The answer's Link headers, as a page of the same origin reads them.
    let seen = b.eval(&format!(
        r#"(async () => {{
  const pc = new RTCPeerConnection(); pc.addTransceiver("video", {{direction: "recvonly"}});
  await pc.setLocalDescription(await pc.createOffer());
  const auth = {{"Authorization": "Bearer {TOKEN}"}};
  const r = await fetch("/webrtc/whep", {{method: "POST",
    headers: {{...auth, "Content-Type": "application/sdp"}}, body: pc.localDescription.sdp}});
  const link = r.headers.get("Link");
  const loc = r.headers.get("Location");
  if (loc) await fetch(loc, {{method: "DELETE", headers: auth}});
  pc.close();
  return {{status: r.status, link}};
}})()"#
    ));
    assert_eq!(seen["status"], json!(201), "{seen}");
    let link = seen["link"].as_str().unwrap_or("");
    assert!(
        link.contains(r#"<stun:127.0.0.1:3478>; rel="ice-server""#),
        "{link}"
    );
    assert!(
        link.contains(r#"<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="1700000000:vm-7"; credential="s3cret"; credential-type="password""#),
        "{link}"
    );
    // The viewer page parsed them and its peer connection carries them.
    let servers = b.eval("JSON.stringify(viewer.pc.getConfiguration().iceServers)");
    let servers = servers.as_str().unwrap_or("");
    assert!(
        servers.contains("turn:127.0.0.1:3478?transport=udp"),
        "{servers}"
    );
    assert!(servers.contains("1700000000:vm-7"), "{servers}");
}
