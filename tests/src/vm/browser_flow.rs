//! The browser VM's flow from the host side, shared by the end-to-end test, `cargo xtask demo
//! --image browser` and `cargo xtask bench boot --image browser`: the test variant of the
//! golden image (a stand-in provider CLI whose authorize page is served from the host side of
//! the TAP, [`super::provider`]), and a viewer — `/viewer` of the VM's agent played by a
//! headless Chromium inside the VM's namespace — whose decoded frames are sampled for pixels
//! and whose input channel clicks.

use super::boot::{VmNet, GUEST_IP, TEST_TOKEN};
use super::browser_image::BrowserImageSpec;
use super::image::ExtraFile;
use super::provider;
use crate::cdp::Chromium;
use std::time::{Duration, Instant};

/// Where the stand-in CLI goes in the test variant.
pub const CLI_PATH: &str = "/usr/local/lib/guestkit-test/fake_login_cli.py";
/// The provider name of the stand-in in `oauth.toml`.
pub const PROVIDER: &str = "fake";

/// The golden image plus the stand-in CLI and a `fake` provider whose authorize endpoint is
/// the host side of the TAP.
pub fn test_variant() -> Result<BrowserImageSpec, String> {
    let mut spec = BrowserImageSpec::golden();
    let cli = crate::bins::workspace_root().join("guest-agent/tests/fixtures/fake_login_cli.py");
    let data = std::fs::read(&cli).map_err(|e| format!("{}: {e}", cli.display()))?;
    spec.extra_files.push(ExtraFile {
        path: CLI_PATH.into(),
        mode: 0o755,
        data,
    });
    spec.oauth_config.push_str(&format!(
        r#"
[providers.{PROVIDER}]
command = ["/usr/bin/python3", "{CLI_PATH}", "--authorize", "http://192.168.100.1:{port}/authorize", "--creds", "~/.fake/creds.json"]
credential_paths = ["~/.fake/creds.json"]
required_keys = ["tokens"]
url_patterns = ['http://192\.168\.100\.1:{port}/authorize\?[^\s]+']
"#,
        port = provider::PORT
    ));
    Ok(spec)
}

/// One sample of the decoded stream.
#[derive(Debug, Clone, Copy)]
pub struct Pixel {
    pub r: u8,
    pub g: u8,
    pub b: u8,
    /// The decoded video's width.
    pub w: u64,
    /// Frames decoded so far.
    pub frames: u64,
}

impl Pixel {
    /// The provider page's colour, give or take the encoder.
    pub fn is_page_colour(&self) -> bool {
        let (r, g, b) = provider::PAGE_RGB;
        self.r.abs_diff(r) < 48 && self.g.abs_diff(g) < 48 && self.b.abs_diff(b) < 48
    }
}

/// The viewer page in a headless Chromium on the host side of the TAP.
pub struct Viewer {
    pub browser: Chromium,
}

impl Viewer {
    /// Opens `http://<VM>:8080/viewer#token=<test token>` inside the VM's namespace.
    pub fn open(net: &VmNet) -> Result<Viewer, String> {
        let url = format!("http://{GUEST_IP}:8080/viewer#token={TEST_TOKEN}");
        Self::open_url(net.ns.exec("chromium"), &url)
    }

    /// Opens `url` with `chromium` (a command that may enter a namespace first).
    pub fn open_url(chromium: std::process::Command, url: &str) -> Result<Viewer, String> {
        Ok(Viewer {
            browser: Chromium::launch(chromium, url)?,
        })
    }

    /// The colour at (x, y) of the current frame, or `None` before the first one.
    pub fn sample(&mut self, x: u16, y: u16) -> Option<Pixel> {
        let js = format!(
            r#"(async () => {{
  const v = viewer.video; if (!v.videoWidth) return null;
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  const d = g.getImageData({x}, {y}, 1, 1).data;
  let frames = 0; (await viewer.pc.getStats()).forEach(s => {{
    if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded || 0; }});
  return {{ r: d[0], g: d[1], b: d[2], w: v.videoWidth, frames }};
}})()"#
        );
        let p = self.browser.eval(&js).ok()?;
        Some(Pixel {
            r: p["r"].as_u64()? as u8,
            g: p["g"].as_u64()? as u8,
            b: p["b"].as_u64()? as u8,
            w: p["w"].as_u64()?,
            frames: p["frames"].as_u64()?,
        })
    }

    /// Samples (x, y) until `want` holds; `Err` with the last sample after `limit`.
    pub fn wait(
        &mut self,
        x: u16,
        y: u16,
        limit: Duration,
        want: impl Fn(&Pixel) -> bool,
    ) -> Result<Pixel, Option<Pixel>> {
        let end = Instant::now() + limit;
        let mut last = None;
        loop {
            if let Some(p) = self.sample(x, y) {
                if want(&p) {
                    return Ok(p);
                }
                last = Some(p);
            }
            if Instant::now() > end {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A left click at (x, y) through the stream's input channel, as a person makes it: the
    /// pointer arrives, rests a moment, the button goes down and up (Chromium in the VM was
    /// seen ignoring a press that came in the same instant as the pointer's jump to it); the
    /// channel's state.
    pub fn click(&mut self, x: u16, y: u16) -> Result<String, String> {
        let js = format!(
            "(async () => {{ const pause = (ms) => new Promise((r) => setTimeout(r, ms)); \
             viewer.send(viewer.enc.move({x}, {y})); await pause(400); \
             viewer.send(viewer.enc.buttonDown(1)); await pause(100); \
             viewer.send(viewer.enc.buttonUp(1)); return viewer.dc.readyState; }})()"
        );
        let v = self.browser.eval(&js)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// A key chord through the input channel: `keysyms` pressed in order, released in reverse
    /// (e.g. Alt+F4: `[0xffe9, 0xffc1]`).
    pub fn chord(&mut self, keysyms: &[u32]) -> Result<String, String> {
        let down: Vec<String> = keysyms
            .iter()
            .map(|k| format!("viewer.send(viewer.enc.keyDown({k}));"))
            .collect();
        let up: Vec<String> = keysyms
            .iter()
            .rev()
            .map(|k| format!("viewer.send(viewer.enc.keyUp({k}));"))
            .collect();
        let js = format!(
            "(() => {{ {} {} return viewer.dc.readyState; }})()",
            down.join(" "),
            up.join(" ")
        );
        let v = self.browser.eval(&js)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Reloads the viewer page (a reconnect).
    pub fn reload(&mut self) -> Result<(), String> {
        self.browser
            .call("Page.reload", serde_json::json!({}))
            .map(|_| ())
    }
}
