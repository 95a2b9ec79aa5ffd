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
    // A connected viewer keeps its peer: the "offer again with the learned servers" rule
    // fires only for a peer that did not connect (within 5 s; a loaded machine may take
    // longer, then one re-offer is allowed, never more).
    wait_for(
        "the viewer's peer connected",
        Duration::from_secs(30),
        || (b.eval("viewer.pc.connectionState") == json!("connected")).then_some(()),
    );
    let connects = b.eval("viewer.connects").as_u64().unwrap_or(0);
    assert!((1..=2).contains(&connects), "{connects} connects");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(b.eval("viewer.connects"), json!(connects));
    assert_eq!(b.eval("viewer.pc.connectionState"), json!("connected"));
}

/// The first offer of a page is gathered without the servers (it learns them from that
/// answer). A viewer whose direct path does not work (here: the first offer and answer
/// stripped of their candidates) must not wait for ICE to give up (~30 s) before using them: 5 s
/// after the answer it offers again, gathered with the TURN server.
#[test]
fn a_first_peer_that_does_not_connect_is_offered_again_with_the_learned_servers() {
    let x = start_xvfb(320, 240);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ice.json");
    std::fs::write(
        &file,
        r#"{"iceServers": [{"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "c"}]}"#,
    )
    .expect("write");
    let streamer = start_streamer_with(
        &x.display,
        320,
        240,
        &[format!("--ice-servers-file={}", file.display())],
    );
    let url = format!("http://{}/viewer#token={TOKEN}", streamer.addr);
    let mut b = Browser::launch(&url);
    // The direct path blocked: the page's first offer and its answer lose their candidates
    // (neither side can reach the other), later ones are left alone.
    b.call("Page.enable", json!({}));
    b.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": BLOCK_FIRST_PATH}),
    );
    b.call("Page.reload", json!({}));
    wait_for(
        "the reloaded window.viewer",
        Duration::from_secs(30),
        || {
            (b.eval("typeof viewer === 'object' && window.blockedFirst === true") == json!(true))
                .then_some(())
        },
    );
    b.eval("viewer.ready.then(() => true)");
    let answered = std::time::Instant::now();
    // Not connected: no candidates either way.
    assert_ne!(b.eval("viewer.pc.connectionState"), json!("connected"));
    let second = wait_for("a second offer", Duration::from_secs(20), || {
        (b.eval("viewer.connects") == json!(2)).then(|| answered.elapsed())
    });
    assert!(
        second < Duration::from_secs(15),
        "offered again only after {second:?}"
    );
    // The second peer was built with the TURN server (its first gathering used it).
    let servers = b.eval("JSON.stringify(viewer.pc.getConfiguration().iceServers)");
    assert!(
        servers
            .as_str()
            .unwrap_or("")
            .contains("turn:127.0.0.1:3478"),
        "{servers}"
    );
    eprintln!(
        "ice: the blocked first peer was offered again {:.1} s after its answer",
        second.as_secs_f64()
    );
}

/// Strips `a=candidate` lines from the page's first WHEP offer and first answer.
const BLOCK_FIRST_PATH: &str = r#"(() => {
  const strip = (sdp) => sdp.split("\r\n").filter((l) => !l.startsWith("a=candidate")).join("\r\n");
  let offer = true, answer = true;
  const f = window.fetch;
  window.fetch = (u, o) => {
    if (offer && o && o.method === "POST" && typeof o.body === "string") {
      offer = false; window.blockedFirst = true; o = { ...o, body: strip(o.body) };
    }
    return f(u, o);
  };
  const srd = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = function (d) {
    if (answer && d && d.type === "answer") { answer = false; d = { type: "answer", sdp: strip(d.sdp) }; }
    return srd.call(this, d);
  };
})()"#;
