//! Opens a URL in the VM's browser (Chromium by default) on the virtual display the user
//! watches through the stream. It renders arbitrary pages, so it runs as the login user
//! ([`super::user`]) with that user's HOME and the agent's environment scrubbed; it leads
//! its own session and is a [`ProcGroup`], so a session's end (or `serve`'s) closes it with
//! everything it forked. A browser that is not installed or dies at once is reported in the
//! session, never fatal to the agent.
//!
//! The display: Xvfb started without `-auth` (as the images and tests do) accepts local
//! clients of any user; an X server with a cookie file must also let the login user in
//! (`xhost +si:localuser:guestkit-login`).

use super::procs::{self, ProcGroup};
use super::pty::Track;
use super::user::LoginUser;
use guest_proto::oauth::BrowserInfo;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A started browser.
pub struct Browser {
    /// It and what it forked; dropping it kills what is left.
    pub group: ProcGroup,
    /// Set by the waiter thread when it exits: `"exit 21"`, `"signal 11"`.
    pub exit: Arc<Mutex<Option<String>>>,
}

/// Where and as whom a browser runs.
pub struct Launch<'a> {
    pub display: &'a str,
    pub user: &'a LoginUser,
    pub home: &'a Path,
    /// The session it is for (Firefox keeps one profile per session, [`super::firefox`]).
    pub session: &'a str,
    /// The proxy the page loads go through ([`super::proxy`]); `None`: direct.
    pub proxy: Option<&'a str>,
    pub track: Track<'a>,
}

/// Starts `command URL` with `DISPLAY=display`. `Err` is the reason for the session.
pub fn open(command: &[String], url: &str, l: &Launch) -> (BrowserInfo, Option<Browser>) {
    let name = command.first().cloned().unwrap_or_default();
    let mut env = super::user::child_env(l.user, l.home);
    let mut cmd = if super::firefox::is_firefox(command) {
        let plan = super::firefox::check_installed(command, env.get("PATH").map(String::as_str))
            .and_then(|()| super::firefox::prepare(l));
        match plan {
            Ok(plan) => {
                env.extend(plan.env().into_iter().map(|(k, v)| (k.to_string(), v)));
                plan.command(command)
            }
            Err(why) => {
                let info = BrowserInfo {
                    command: name,
                    pid: None,
                    error: Some(why),
                };
                return (info, None);
            }
        }
    } else {
        let mut cmd = Command::new(&name);
        cmd.args(&command[1.min(command.len())..]);
        cmd
    };
    if let Some(p) = l.proxy {
        env.extend(super::proxy::env(p));
        if super::proxy::is_chromium(command) {
            cmd.args(super::proxy::chromium_args(p));
        }
    }
    cmd.arg(url)
        .env_clear()
        .envs(env)
        .env("DISPLAY", l.display)
        .env(procs::MARK_ENV, l.track.marker)
        .current_dir(l.home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    l.user.apply(&mut cmd);
    procs::own_session_dying_with_us(&mut cmd);
    match procs::spawn(cmd) {
        Ok(mut child) => {
            let pid = child.id();
            let group = ProcGroup::adopt(
                pid,
                l.user.uid,
                l.track.marker,
                l.track.what,
                l.track.records,
            );
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
                Some(Browser { group, exit }),
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
        self.group.close(grace).await;
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
        let user = LoginUser::current();
        let l = Launch {
            display: ":99",
            user: &user,
            home: Path::new("/"),
            session: "s",
            proxy: None,
            track: Track {
                marker: "t",
                what: "browser",
                records: None,
            },
        };
        let (info, b) = open(&["/nonexistent/chromium".to_string()], "https://x/", &l);
        assert!(b.is_none());
        assert_eq!(
            info.error.as_deref(),
            Some("/nonexistent/chromium: not found (is the browser installed?)")
        );
    }
}
