//! The case VP8 exists for (issue 15): a Firefox without H.264 (Linux, its OpenH264 plugin
//! never downloaded: blocked, offline, or off) watches the stream. Xvfb with a window that
//! changes colour every frame, the streamer in-process, and Debian's Firefox ESR headless on
//! a fresh profile with the OpenH264 plugin disabled. The test's loopback server serves the
//! page at `/` and forwards WHEP (`POST /webrtc/whep`, `DELETE /webrtc/whep/{id}`) to the
//! streamer with the token, so the page does WHEP itself, same-origin, and reports what
//! happens to `/ev?k=v`: its offer's video codecs, the WHEP status, and the inbound-rtp
//! stats every 250 ms (codec mimeType through `codecId`, size, framesDecoded).
//!
//! Asserts: the offer has no H.264 (this Firefox really has none), the streamer answers 201,
//! Firefox decodes `video/VP8` at the configured size with framesDecoded rising, and
//! `/webrtc/status` counts the viewer under `vp8`; a DELETE through the page's origin ends it.
//! Fails (does not skip) when Xvfb or firefox-esr is missing.

mod webrtc_common;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use webrtc_common::*;

const W: u16 = 640;
const H: u16 = 360;

const PAGE: &str = r#"<!doctype html><html><head><title>vp8</title></head>
<body style="margin:0;background:#000">
<video id="v" autoplay muted playsinline style="width:100%;height:100%"></video>
<script>
const report = (k, v) => fetch('/ev?' + k + '=' + encodeURIComponent(v)).catch(() => {});
window.addEventListener('error', e => report('error', e.message));
(async () => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  const v = document.getElementById('v');
  pc.ontrack = e => {
    v.srcObject = e.streams[0] || new MediaStream([e.track]);
    v.play().catch(err => report('play_error', err.name + ': ' + err.message));
  };
  pc.onconnectionstatechange = () => report('state', pc.connectionState);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.addEventListener('icegatheringstatechange',
      () => pc.iceGatheringState === 'complete' && done());
    setTimeout(done, 5000);
  });
  const sdp = pc.localDescription.sdp;
  const codecs = [...new Set(sdp.split(/\r?\n/).filter(l => l.startsWith('a=rtpmap:'))
    .map(l => l.split(' ')[1].split('/')[0]))];
  report('offer_codecs', codecs.join(','));
  const r = await fetch('/webrtc/whep',
    { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: sdp });
  const answer = await r.text();
  report('whep_status', r.status);
  if (r.status !== 201) { report('whep_error', answer); return; }
  report('location', r.headers.get('Location') || '');
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  let first = false;
  setInterval(async () => {
    const s = await pc.getStats(); let x = null;
    s.forEach(y => { if (y.type === 'inbound-rtp' && y.kind === 'video') x = y; });
    const c = x && x.codecId ? s.get(x.codecId) : null;
    const o = { mimeType: c ? c.mimeType : null, framesDecoded: x ? (x.framesDecoded || 0) : 0,
                frameWidth: x ? (x.frameWidth || 0) : 0, frameHeight: x ? (x.frameHeight || 0) : 0,
                state: pc.connectionState, videoWidth: v.videoWidth, videoHeight: v.videoHeight };
    if (!first && o.framesDecoded > 0) {
      first = true;
      report('first_frame_ms', Math.round(performance.now()));
    }
    report('stats', JSON.stringify(o));
  }, 250);
})().catch(e => report('error', e.name + ': ' + e.message));
report('loaded', '1');
</script></body></html>"#;

/// The page's origin: serves [`PAGE`], records `/ev?k=v` reports (with the time they came)
/// and forwards WHEP to the streamer with the token.
struct PageServer {
    addr: SocketAddr,
    events: Arc<Mutex<Vec<(Instant, String, String)>>>,
    /// Status codes of the streamer's answers to forwarded `POST /webrtc/whep`s.
    whep_posts: Arc<Mutex<Vec<u16>>>,
}

impl PageServer {
    fn start(streamer: SocketAddr) -> PageServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind page server");
        let addr = l.local_addr().expect("page server addr");
        let events = Arc::new(Mutex::new(Vec::new()));
        let whep_posts = Arc::new(Mutex::new(Vec::new()));
        let (ev, posts) = (events.clone(), whep_posts.clone());
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (ev, posts) = (ev.clone(), posts.clone());
                // One thread per exchange: a WHEP POST waits for the streamer's gathering
                // while the page's reports keep coming.
                std::thread::spawn(move || {
                    let _ = handle(conn, streamer, &ev, &posts);
                });
            }
        });
        PageServer {
            addr,
            events,
            whep_posts,
        }
    }

    fn get(&self, k: &str) -> Option<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(_, a, _)| a == k)
            .map(|(_, _, v)| v.clone())
    }

    /// The last `stats` report, parsed.
    fn stats(&self) -> Option<Value> {
        let e = self.events.lock().unwrap();
        let (_, _, v) = e.iter().rev().find(|(_, k, _)| k == "stats")?;
        serde_json::from_str(v).ok()
    }

    /// When `k` was first reported.
    fn first(&self, k: &str) -> Option<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(_, a, _)| a == k)
            .map(|(t, _, _)| *t)
    }

    /// Everything but the stats (for failure messages), with the last stats.
    fn summary(&self) -> String {
        let e = self.events.lock().unwrap();
        let mut s: Vec<String> = e
            .iter()
            .filter(|(_, k, _)| k != "stats")
            .map(|(_, k, v)| format!("{k}={v}"))
            .collect();
        if let Some((_, _, v)) = e.iter().rev().find(|(_, k, _)| k == "stats") {
            s.push(format!("last stats={v}"));
        }
        s.join("; ")
    }
}

/// One HTTP/1.1 exchange (Connection: close).
fn handle(
    conn: TcpStream,
    streamer: SocketAddr,
    events: &Mutex<Vec<(Instant, String, String)>>,
    posts: &Mutex<Vec<u16>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    r.read_line(&mut first)?;
    let mut len = 0usize;
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 || l == "\r\n" {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut out = conn;
    let reply = |out: &mut TcpStream, code: &str, body: &str| {
        write!(
            out,
            "HTTP/1.1 {code}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // The streamer's whole response, passed on as it is (Location stays relative: same origin).
    let forward = |method: &str, path: &str, body: &[u8]| -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(streamer)?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {streamer}\r\nContent-Type: application/sdp\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        s.write_all(body)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        Ok(resp)
    };
    match (method, path) {
        ("GET", "/") => reply(&mut out, "200 OK", PAGE),
        ("GET", p) if p.starts_with("/ev?") => {
            if let Some((k, v)) = p["/ev?".len()..].split_once('=') {
                let v = guest_agent::oauth::callback::percent_decode(v);
                events
                    .lock()
                    .unwrap()
                    .push((Instant::now(), k.to_string(), v));
            }
            reply(&mut out, "200 OK", "")
        }
        ("POST", "/webrtc/whep") => {
            let resp = forward("POST", "/webrtc/whep", &body)?;
            let code = String::from_utf8_lossy(&resp)
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            posts.lock().unwrap().push(code);
            out.write_all(&resp)
        }
        ("DELETE", p) if p.starts_with("/webrtc/whep/") => {
            let resp = forward("DELETE", p, b"")?;
            out.write_all(&resp)
        }
        _ => reply(&mut out, "404 Not Found", "not found\n"),
    }
}

/// Firefox ESR headless in its own process group (its content processes with it), killed
/// as a group on drop, with its profile directory.
struct Firefox {
    pgid: i32,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Drop for Firefox {
    fn drop(&mut self) {
        // SAFETY: a plain kill(2) of the process group this test created for Firefox.
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
    }
}

/// A fresh profile: the agent's quiet prefs (no first-run, welcome or telemetry pages, no
/// updates) and those of this case: no OpenH264 plugin (disabled and never fetched, as for
/// an offline viewer), loopback ICE candidates, autoplay and media without prompts.
fn launch_firefox(url: &str) -> Firefox {
    use std::os::unix::process::CommandExt;
    need("firefox-esr", "firefox-esr");
    let dir = tempfile::tempdir().expect("firefox dir");
    let profile = dir.path().join("profile");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&profile).expect("profile dir");
    std::fs::create_dir_all(&home).expect("home dir");
    let mut prefs = guest_agent::oauth::firefox::user_js(None).expect("quiet prefs");
    for (k, v) in [
        ("media.gmp-gmpopenh264.enabled", "false"),
        ("media.gmp-gmpopenh264.autoupdate", "false"),
        ("media.gmp-manager.updateEnabled", "false"),
        ("media.peerconnection.ice.loopback", "true"),
        ("media.peerconnection.ice.obfuscate_host_addresses", "false"),
        ("media.autoplay.default", "0"),
        ("media.navigator.permission.disabled", "true"),
    ] {
        prefs.push_str(&format!("user_pref(\"{k}\", {v});\n"));
    }
    std::fs::write(profile.join("user.js"), prefs).expect("user.js");
    let child = Command::new("firefox-esr")
        .args(["--headless", "--no-remote", "--new-instance", "--profile"])
        .arg(&profile)
        .arg(url)
        .env("HOME", &home)
        .env("MOZ_HEADLESS", "1")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn firefox-esr");
    let pgid = child.id() as i32;
    Firefox {
        pgid,
        _proc: Proc(child),
        _dir: dir,
    }
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn firefox_without_openh264_gets_vp8() {
    need("firefox-esr", "firefox-esr");
    let x = start_xvfb(W, H);
    let _window = start_window(&x.display);
    let streamer = start_streamer(&x.display, W, H);
    wait_for("the streamer's status", Duration::from_secs(30), || {
        streamer_status(streamer.addr)
    });
    let page = PageServer::start(streamer.addr);

    let started = Instant::now();
    let _ff = launch_firefox(&format!("http://{}/", page.addr));
    let loaded = wait_for("Firefox to load the page", Duration::from_secs(90), || {
        page.first("loaded")
    });
    eprintln!(
        "firefox: page loaded {:.2} s after the start",
        (loaded - started).as_secs_f64()
    );

    // The scenario: this Firefox offers no H.264 at all, VP8 yes.
    let codecs = wait_for("the page's offer", Duration::from_secs(30), || {
        page.get("offer_codecs")
    });
    eprintln!("firefox: offered video codecs {codecs}");
    let list: Vec<&str> = codecs.split(',').collect();
    assert!(
        !list.iter().any(|c| c.eq_ignore_ascii_case("H264")),
        "this Firefox offers H.264 without OpenH264, so it is not the case under test: {codecs}"
    );
    assert!(list.contains(&"VP8"), "Firefox offers VP8: {codecs}");

    let status = wait_for("the WHEP answer", Duration::from_secs(30), || {
        page.get("whep_status")
    });
    assert_eq!(status, "201", "the streamer answers: {}", page.summary());
    assert_eq!(*page.whep_posts.lock().unwrap(), [201u16]);

    let first = wait_for("a decoded frame", Duration::from_secs(60), || {
        page.first("first_frame_ms")
    });
    let ms = page.get("first_frame_ms").unwrap_or_default();
    eprintln!(
        "firefox: first VP8 frame decoded {ms} ms after navigation start ({:.2} s after the \
         page's load report, {:.2} s after the start)",
        (first - loaded).as_secs_f64(),
        (first - started).as_secs_f64()
    );

    let s = wait_for("20 decoded frames", Duration::from_secs(60), || {
        page.stats().filter(|s| num(&s["framesDecoded"]) >= 20)
    });
    eprintln!("firefox: {s}");
    assert_eq!(s["mimeType"], json!("video/VP8"), "{}", page.summary());
    assert_eq!(s["frameWidth"], json!(W), "{}", page.summary());
    assert_eq!(s["frameHeight"], json!(H), "{}", page.summary());
    assert_eq!(s["state"], json!("connected"), "{}", page.summary());
    // And it keeps decoding.
    let n = num(&s["framesDecoded"]);
    let later = wait_for("20 more decoded frames", Duration::from_secs(60), || {
        page.stats().filter(|s| num(&s["framesDecoded"]) >= n + 20)
    });
    assert_eq!(later["mimeType"], json!("video/VP8"), "{later}");
    assert_eq!(
        (later["videoWidth"].clone(), later["videoHeight"].clone()),
        (json!(W), json!(H)),
        "the <video> plays it at its size: {later}"
    );

    let st = wait_for(
        "the viewer connected in status",
        Duration::from_secs(30),
        || {
            streamer_status(streamer.addr).filter(|s| {
                s["viewers"] == json!(1)
                    && s["viewer_stats"]
                        .as_array()
                        .is_some_and(|a| a.iter().all(|v| v["connected"] == json!(true)))
            })
        },
    );
    assert_eq!(st["viewer_stats"][0]["codec"], json!("vp8"), "{st}");
    assert_eq!(st["pipeline"]["encoders_in_use"], json!(["vp8"]), "{st}");

    // Ending the viewer through the page's origin (the forwarded DELETE) frees the encoder.
    let location = page.get("location").unwrap_or_default();
    assert!(location.starts_with("/webrtc/whep/"), "{}", page.summary());
    let (code, text) = http(page.addr, "DELETE", &location, &[], "");
    assert!((200..300).contains(&code), "DELETE {location}: {text}");
    wait_for("no viewer and no encoder", Duration::from_secs(30), || {
        streamer_status(streamer.addr)
            .filter(|s| s["viewers"] == json!(0) && s["pipeline"]["encoders_in_use"] == json!([]))
    });
}
