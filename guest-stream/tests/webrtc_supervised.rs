//! The streamer as a supervised service behind `serve`: the real binary runs `supervise` with
//! Xvfb, `serve` and `webrtc` as services; chromium opens serve's `/viewer`, WHEP goes through
//! serve's proxy to the streamer's unix socket; the streamer is killed mid-stream, serve stays
//! up, the supervisor restarts the streamer, the same viewer page reconnects by itself, and
//! `/health` shows it.

mod webrtc_common;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use webrtc_common::*;

/// `supervise` stopped with SIGTERM (so it stops its children) when the test ends.
struct Supervisor(std::process::Child);
impl Drop for Supervisor {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_display() -> u32 {
    (150..400)
        .find(|n| {
            !std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists()
                && !std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        })
        .expect("a free X display number")
}

fn service<'a>(health: &'a Value, name: &str) -> Option<&'a Value> {
    health["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

fn frames(b: &mut Browser, at_least: u64) -> Value {
    wait_for("decoded frames", Duration::from_secs(60), || {
        let s = b.eval(STATS_JS);
        (s["framesDecoded"].as_u64().unwrap_or(0) >= at_least).then_some(s)
    })
}

#[test]
fn streamer_behind_serve_survives_a_kill_and_takes_a_new_viewer() {
    need("Xvfb", "xvfb");
    need("chromium", "chromium");
    let exe = guestkit_tests::bins::bin("guest-agent");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("token"), TOKEN).expect("token");
    let n = free_display();
    let display = format!(":{n}");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let sock = d.join("webrtc.sock");
    let q = |s: &str| toml_str(s);
    let p = |p: &std::path::Path| toml_str(&p.display().to_string());
    let config = format!(
        r#"[supervisor]
stop_grace_ms = 2000

[services.xvfb]
command = ["Xvfb", {display}, "-screen", "0", "1280x720x24", "-nolisten", "tcp", "-noreset"]

[services.webrtc]
command = [{streamer}, "--display", {display}, "--socket", {sock}, "--ice-ip", "127.0.0.1", "--token-file", {token}, "--cmdline", {nocmd}]

[services.serve]
command = [{exe}, "serve", "--listen", {addr}, "--state-dir", {dir}, "--token-file", {token}, "--netinit-state", {net}]
env = {{ GUEST_AGENT_WEBRTC_SOCKET = {sock} }}
required = true
"#,
        display = q(&display),
        exe = p(&exe),
        streamer = q(env!("CARGO_BIN_EXE_guest-stream")),
        sock = p(&sock),
        token = p(&d.join("token")),
        nocmd = p(&d.join("no-cmdline")),
        addr = q(&addr.to_string()),
        dir = p(d),
        net = p(&d.join("netinit.json")),
    );
    std::fs::write(d.join("config.toml"), config).expect("config");
    let _sup = Supervisor(
        Command::new(&exe)
            .args(["supervise", "--config"])
            .arg(d.join("config.toml"))
            .arg("--state-dir")
            .arg(d)
            .spawn()
            .expect("spawn supervise"),
    );

    wait_for("serve's /health", Duration::from_secs(60), || health(addr));
    wait_for("Xvfb", Duration::from_secs(30), || {
        std::path::Path::new(&format!("/tmp/.X11-unix/X{n}"))
            .exists()
            .then_some(())
    });
    wait_for(
        "the X server to accept clients",
        Duration::from_secs(30),
        || x11rb::connect(Some(&display)).ok().map(|_| ()),
    );
    let _window = start_window(&display);
    let auth = format!("Bearer {TOKEN}");
    let status = |auth: &str| {
        http(
            addr,
            "GET",
            "/webrtc/status",
            &[("Authorization", auth)],
            "",
        )
        .0
    };
    assert_eq!(
        status("Bearer wrong"),
        401,
        "serve guards the proxied routes"
    );
    wait_for("the streamer behind serve", Duration::from_secs(30), || {
        (status(&auth) == 200).then_some(())
    });

    let url = format!("http://{addr}/viewer#token={TOKEN}");
    let mut b = Browser::launch(&url);
    wait_for("window.viewer", Duration::from_secs(30), || {
        (b.eval("typeof viewer") == json!("object")).then_some(())
    });
    b.eval("viewer.ready.then(() => true)");
    let s = frames(&mut b, 25);
    assert_eq!(s["frameWidth"], json!(1280));

    // Kill the streamer mid-stream.
    let h = health(addr).expect("health");
    let old = service(&h, "webrtc")
        .expect("webrtc service in /health")
        .clone();
    let pid = old["pid"].as_u64().expect("webrtc pid") as i32;
    let restarts = old["restarts"].as_u64().unwrap_or(0);
    // SAFETY: killing the streamer child the supervisor started for this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);

    // serve is untouched, the supervisor restarts the streamer.
    let h = wait_for("the streamer restarted", Duration::from_secs(60), || {
        let h = health(addr)?;
        let s = service(&h, "webrtc")?;
        (s["restarts"].as_u64().unwrap_or(0) > restarts
            && s["pid"].as_u64().is_some_and(|p| p as i32 != pid)
            && s["state"] == "running")
            .then_some(h)
    });
    let serve_restarts = service(&h, "serve").map(|s| s["restarts"].clone());
    assert_eq!(
        serve_restarts,
        Some(json!(0)),
        "serve was not restarted: {h}"
    );
    wait_for(
        "the restarted streamer behind serve",
        Duration::from_secs(30),
        || (status(&auth) == 200).then_some(()),
    );

    // The same page, not reloaded, reconnects by itself to the new streamer (issue 15
    // item 5): a new peer connection, frames again.
    let connects = wait_for(
        "the viewer page to reconnect by itself",
        Duration::from_secs(90),
        || {
            let n = b.try_eval("viewer.connects")?.as_u64()?;
            let state = b.try_eval("viewer.pc.connectionState")?;
            (n >= 2 && state == json!("connected")).then_some(n)
        },
    );
    let s = frames(&mut b, 25);
    assert_eq!(s["frameHeight"], json!(720));
    eprintln!("the page reconnected by itself after {connects} connects");
    // serve's /health hears the restarted streamer and its viewer.
    let h = wait_for("the viewer in /health", Duration::from_secs(30), || {
        health(addr).filter(|h| h["webrtc"]["viewers"] == json!(1))
    });
    assert_eq!(h["webrtc"]["state"], "running", "{h}");
}

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
