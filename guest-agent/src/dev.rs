//! `guest-agent supervise --dev`: the VM's service set on a developer's machine, without a VM.
//! Loopback only, a temporary state dir, a random token in a 0600 file, no root needed. With
//! `--display [WxH]` it also runs what the browser VM runs for its screen — Xvfb on a free
//! display, openbox when installed, the streamer — and prints the viewer URL to open.

use anyhow::Context;
use guest_proto::vm_settings::DisplaySize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::streamer::on_path as which;

/// The first display number from 90 up whose socket and lock file are free.
fn free_display() -> anyhow::Result<u32> {
    (90..190)
        .find(|n| {
            !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        })
        .context("no free X display number in :90..:189")
}

/// The screen services of `--display`, and the display they use.
pub struct Screen {
    pub display: String,
    pub size: DisplaySize,
    pub openbox: bool,
    /// The streamer binary (`guest-stream`).
    pub streamer: PathBuf,
}

/// Decides what `--display` can run here: Xvfb is required (an error naming the package when
/// missing), openbox is used when installed (said when not).
pub fn screen(size: DisplaySize) -> anyhow::Result<Screen> {
    if which("Xvfb").is_none() {
        anyhow::bail!("--display needs Xvfb on PATH (Debian: apt-get install xvfb)");
    }
    let openbox = which("openbox").is_some();
    if !openbox {
        eprintln!("guest-agent dev: openbox is not installed: the screen runs without a window manager (apt-get install openbox)");
    }
    let streamer = crate::streamer::find()
        .ok_or_else(|| anyhow::anyhow!("--display needs {}", crate::streamer::missing()))?;
    Ok(Screen {
        display: format!(":{}", free_display()?),
        size,
        openbox,
        streamer,
    })
}

/// The built-in config: `serve` on `addr` (and a ticker to watch in the logs); with a
/// screen, Xvfb, openbox and the streamer too, `serve` proxying to the streamer's socket.
/// No vsock listener: on a laptop that runs VMs, vsock would hand the agent to its guests.
pub fn config(exe: &Path, dir: &Path, addr: SocketAddr, screen: Option<&Screen>) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let p = |p: &Path| q(&p.display().to_string());
    let sock = dir.join("webrtc.sock");
    let mut text = format!(
        r#"[supervisor]
stop_grace_ms = 2000

[services.serve]
command = [{exe}, "serve", "--listen", {addr}, "--vsock-port", "0", "--state-dir", {dir}, "--token-file", {token}, "--netinit-state", {net}]
required = true
liveness = {{ http = {url}, interval_ms = 2000, timeout_ms = 1000, failures = 3, initial_delay_ms = 1000 }}
{serve_env}
[services.ticker]
command = ["sh", "-c", "while :; do echo tick; sleep 5; done"]
"#,
        exe = p(exe),
        addr = q(&addr.to_string()),
        dir = p(dir),
        token = p(&dir.join("token")),
        net = p(&dir.join("netinit-state.json")),
        url = q(&format!("http://{addr}/health")),
        serve_env = if screen.is_some() {
            format!("env = {{ GUEST_AGENT_WEBRTC_SOCKET = {} }}\n", p(&sock))
        } else {
            String::new()
        },
    );
    if let Some(s) = screen {
        let size = format!("{}x24", s.size);
        text.push_str(&format!(
            r#"
[services.xvfb]
command = ["Xvfb", {display}, "-screen", "0", {size}, "-nolisten", "tcp", "-noreset"]
required = true

[services.webrtc]
command = [{streamer}, "--display", {display}, "--width", {w}, "--height", {h}, "--socket", {sock}, "--ice-ip", "127.0.0.1", "--token-file", {token}, "--cmdline", {nocmd}]
depends_on = ["xvfb"]
required = true
"#,
            display = q(&s.display),
            size = q(&size),
            streamer = p(&s.streamer),
            w = q(&s.size.width.to_string()),
            h = q(&s.size.height.to_string()),
            sock = p(&sock),
            token = p(&dir.join("token")),
            nocmd = p(&dir.join("no-cmdline")),
        ));
        if s.openbox {
            text.push_str(&format!(
                "\n[services.openbox]\ncommand = [\"openbox\"]\nenv = {{ DISPLAY = {} }}\ndepends_on = [\"xvfb\"]\n",
                q(&s.display)
            ));
        }
    }
    text
}

/// The viewer URL a person opens (the token in the fragment: never sent to a server log).
pub fn viewer_url(addr: SocketAddr, token_file: &Path) -> String {
    let token = std::fs::read_to_string(token_file).unwrap_or_default();
    format!("http://{addr}/viewer#token={}", token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_services_parse_and_depend_on_xvfb() {
        let s = Screen {
            display: ":93".into(),
            size: DisplaySize {
                width: 640,
                height: 360,
            },
            openbox: true,
            streamer: PathBuf::from("/x/guest-stream"),
        };
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let text = config(
            Path::new("/x/guest-agent"),
            Path::new("/tmp/d"),
            addr,
            Some(&s),
        );
        let cfg = crate::config::parse(&text, "<dev>").expect("the dev config parses");
        let names: Vec<&str> = cfg.services.iter().map(|s| s.name.as_str()).collect();
        for n in ["serve", "ticker", "xvfb", "webrtc", "openbox"] {
            assert!(names.contains(&n), "{names:?}");
        }
        let webrtc = cfg.services.iter().find(|s| s.name == "webrtc").unwrap();
        assert_eq!(webrtc.depends_on, vec!["xvfb".to_string()]);
        assert!(
            text.contains(r#"command = ["/x/guest-stream", "--display", ":93""#),
            "{text}"
        );
        assert!(text.contains("\"640x360x24\""), "{text}");
        let plain = config(Path::new("/x/guest-agent"), Path::new("/tmp/d"), addr, None);
        let cfg = crate::config::parse(&plain, "<dev>").expect("parses");
        assert_eq!(cfg.services.len(), 2);
        assert!(plain.contains(r#""--vsock-port", "0""#), "{plain}");
    }
}
