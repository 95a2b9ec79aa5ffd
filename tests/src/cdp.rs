//! Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
//! fd 3 carries commands in, fd 4 answers out, each message ending in a NUL byte). A pipe
//! crosses network namespaces, so the browser can run inside a test's namespace (the host
//! side of a VM's TAP) while the test drives it from anywhere: no DevTools port to reach.
//! Answers are read on a thread, so a hung browser is a timeout, not a hung test.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one CDP command may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A headless Chromium and a CDP session on its first page; killed on drop.
pub struct Chromium {
    child: Child,
    to_browser: std::fs::File,
    from_browser: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success; both are owned below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fds nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Chromium {
    /// Starts `chromium --headless=new ... URL` through `command` (e.g. a namespace's
    /// `ip netns exec NS chromium`, or plain `Command::new("chromium")`) and attaches to the
    /// page.
    pub fn launch(mut command: Command, url: &str) -> Result<Chromium, String> {
        let profile = tempfile::tempdir().map_err(|e| format!("profile dir: {e}"))?;
        let (cmd_r, cmd_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let (out_r, out_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let (r, w) = (cmd_r.as_raw_fd(), out_w.as_raw_fd());
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--window-size=1280,720",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: fcntl and dup2 only, between fork and exec; the fds stay open in the parent
        // until spawn returns. The ends are first copied above 10, so neither can be 3 or 4
        // already (dup2 onto itself would keep the close-on-exec flag, and one end could
        // overwrite the other).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                let r_high = libc::fcntl(r, libc::F_DUPFD, 10);
                let w_high = libc::fcntl(w, libc::F_DUPFD, 10);
                if r_high < 0
                    || w_high < 0
                    || libc::dup2(r_high, 3) < 0
                    || libc::dup2(w_high, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(r_high);
                libc::close(w_high);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("starting chromium: {e}"))?;
        drop((cmd_r, out_w));
        let (tx, rx) = mpsc::channel();
        let reader = std::fs::File::from(out_r);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let mut c = Chromium {
            child,
            to_browser: std::fs::File::from(cmd_w),
            from_browser: rx,
            next_id: 1,
            session: String::new(),
            _profile: profile,
        };
        let end = Instant::now() + Duration::from_secs(60);
        let target = loop {
            let targets = c.call_browser("Target.getTargets", json!({}))?;
            let page = targets["targetInfos"]
                .as_array()
                .and_then(|l| l.iter().find(|t| t["type"] == "page"))
                .and_then(|t| t["targetId"].as_str().map(str::to_string));
            if let Some(t) = page {
                break t;
            }
            if Instant::now() > end {
                return Err(format!("no page target: {targets}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let attached = c.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )?;
        c.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {attached}"))?
            .to_string();
        Ok(c)
    }

    fn send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .map_err(|e| format!("{method}: writing to chromium: {e}"))?;
        let end = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let v = self.from_browser.recv_timeout(left).map_err(|_| {
                format!("{method}: no answer from chromium within {CALL_TIMEOUT:?}")
            })?;
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    return Err(format!("{method}: {e}"));
                }
                return Ok(v["result"].clone());
            }
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.send(method, params, None)
    }

    /// A CDP command on the page.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    /// Evaluates `expr` in the page (promises awaited); a throw is an `Err` with its text.
    pub fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("JS threw: {e}"));
        }
        Ok(r["result"]["value"].clone())
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
