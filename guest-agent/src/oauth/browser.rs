//! Opens a URL in the VM's browser (Chromium by default) on the virtual display the user
//! watches through the stream. The browser gets its own process group so a session's end
//! closes it with everything it forked. A browser that is not installed or dies at once is
//! reported in the session, never fatal to the agent.

use guest_proto::oauth::BrowserInfo;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A started browser.
pub struct Browser {
    pub pgid: i32,
    /// Set by the waiter thread when it exits: `"exit 21"`, `"signal 11"`.
    pub exit: Arc<Mutex<Option<String>>>,
}

/// Starts `command URL` with `DISPLAY=display`. `Err` is the reason for the session.
pub fn open(command: &[String], display: &str, url: &str) -> (BrowserInfo, Option<Browser>) {
    let name = command.first().cloned().unwrap_or_default();
    let mut cmd = Command::new(&name);
    cmd.args(&command[1.min(command.len())..])
        .arg(url)
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    match cmd.spawn() {
        Ok(mut child) => {
            let pid = child.id();
            let exit = Arc::new(Mutex::new(None));
            let e2 = exit.clone();
            let _ = std::thread::Builder::new()
                .name(format!("oauth-browser-{pid}"))
                .spawn(move || {
                    let text = match child.wait() {
                        Ok(st) => describe(st),
                        Err(e) => e.to_string(),
                    };
                    *e2.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
                });
            (
                BrowserInfo {
                    command: name,
                    pid: Some(pid),
                    error: None,
                },
                Some(Browser {
                    pgid: pid as i32,
                    exit,
                }),
            )
        }
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                format!("{name}: not found (is the browser installed?)")
            } else {
                format!("{name}: {e}")
            };
            (
                BrowserInfo {
                    command: name,
                    pid: None,
                    error: Some(why),
                },
                None,
            )
        }
    }
}

fn describe(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "ended".into(),
    }
}

impl Browser {
    /// Closes the browser and what it started: TERM, then KILL after `grace`.
    pub async fn close(&self, grace: Duration) {
        let _ = super::pty::kill_group(self.pgid, nix::sys::signal::Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while super::pty::group_alive(self.pgid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = super::pty::kill_group(self.pgid, nix::sys::signal::Signal::SIGKILL);
    }

    /// How it ended, when it has.
    pub fn exited(&self) -> Option<String> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_browser_is_a_reason_not_a_crash() {
        let (info, b) = open(&["/nonexistent/chromium".to_string()], ":99", "https://x/");
        assert!(b.is_none());
        assert_eq!(
            info.error.as_deref(),
            Some("/nonexistent/chromium: not found (is the browser installed?)")
        );
    }
}
