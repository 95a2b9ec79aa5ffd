//! A provider's own "am I logged in?" command (`codex login status`), run on request
//! outside any session: as the login user ([`super::user`]), the agent's environment
//! (scrubbed) with the sessions' HOME and DISPLAY and the provider's variables, no
//! terminal, stdin closed, a time limit, its own session killed through pidfds when over.
//! What it prints is returned (the end of it), as a status CLI prints no secrets.

use super::config::OAuthConfig;
use super::procs::{self, ProcGroup};
use super::provider::Provider;
use super::user::LoginUser;
use std::process::Stdio;
use std::time::Duration;

/// Longest a status command may run.
pub const LIMIT: Duration = Duration::from_secs(15);
const SHOW: usize = 2048;

/// The answer of `GET /v1/oauth/providers/:name/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderStatus {
    pub provider: String,
    /// Exit status 0.
    pub logged_in: bool,
    /// `"exit 1"`, `"timed out after 15s"`, `"not found"`.
    pub outcome: String,
    pub output: String,
}

/// Runs `p`'s status command; `None` when it has none.
/// `user`'s HOME (`cfg.home`) must have been prepared.
pub async fn run(cfg: &OAuthConfig, p: &Provider, user: &LoginUser) -> Option<ProviderStatus> {
    let argv = p.status_command.as_ref()?;
    let (prog, args) = argv.split_first()?;
    let marker = format!("status-{:016x}", fastrand::u64(..));
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .env_clear()
        .envs(super::user::child_env(user, &cfg.home))
        .env("DISPLAY", &cfg.display)
        .envs(&p.env)
        .env(procs::MARK_ENV, &marker)
        .current_dir(&cfg.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    user.apply(&mut cmd);
    procs::own_session_dying_with_us(&mut cmd);
    for k in &p.env_remove {
        cmd.env_remove(k);
    }
    let status = |logged_in, outcome: String, output: String| ProviderStatus {
        provider: p.name.clone(),
        logged_in,
        outcome,
        output,
    };
    let child = match procs::spawn(cmd) {
        Ok(c) => c,
        Err(e) => return Some(status(false, format!("{prog}: {e}"), String::new())),
    };
    // Dropped at the end of this function: whatever it left running is killed.
    let group = ProcGroup::adopt(child.id(), user.uid, &marker, "status", None);
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(LIMIT, waited).await {
        Err(_) => {
            group.signal(libc::SIGKILL);
            Some(status(
                false,
                format!("timed out after {}s", LIMIT.as_secs()),
                String::new(),
            ))
        }
        Ok(Err(e)) => Some(status(false, e.to_string(), String::new())),
        Ok(Ok(Err(e))) => Some(status(false, e.to_string(), String::new())),
        Ok(Ok(Ok(out))) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let text = text.trim();
            let mut start = text.len().saturating_sub(SHOW);
            while !text.is_char_boundary(start) {
                start += 1;
            }
            let outcome = match out.status.code() {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".into(),
            };
            Some(status(
                out.status.success(),
                outcome,
                text[start..].to_string(),
            ))
        }
    }
}
