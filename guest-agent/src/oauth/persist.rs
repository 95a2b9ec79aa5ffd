//! Sessions outlive a `serve` restart (issue 14 item 4): every change is written to
//! `oauth-sessions.json` in the state directory (root, 0700; the file 0600, replaced whole
//! through a rename), and a new `serve` reads it back. A session that was live then has
//! lost its CLI (the sweep of [`super::procs`] killed what was left), so it comes back
//! ended, `failed` with the reason [`RESTARTED`]: the host asking for it gets that answer,
//! never a 404 that reads like a wrong id. Ended sessions come back as they were
//! (an authenticated one still hands out its credentials, re-read from the file).
//!
//! What is written is the wire form ([`SessionInfo`]: never credentials; `lastOutput` with
//! pasted codes already redacted) plus the generation, the required keys and the OAuth
//! `state` (so a late redirect for it is told the session ended).

use super::session::{Session, UrlSource};
use guest_proto::oauth::{SessionInfo, SessionState};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The file, in the state directory.
pub const FILE: &str = "oauth-sessions.json";
/// The reason of a session that was live when `serve` stopped.
pub const RESTARTED: &str = "the agent restarted";

/// One session as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    pub seq: u64,
    pub session: SessionInfo,
    #[serde(default)]
    pub required_keys: Vec<String>,
    #[serde(default)]
    pub oauth_state: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct File {
    sessions: Vec<Saved>,
}

/// Why the file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{file}: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}: not a sessions file: {error}")]
    Syntax { file: String, error: String },
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Writes `sessions` (0600, through a temporary file and a rename).
pub fn save(state_dir: &Path, sessions: Vec<Saved>) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let text = serde_json::to_vec(&File { sessions }).map_err(std::io::Error::other)?;
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(&text)?;
    drop(f);
    std::fs::rename(&tmp, path(state_dir))
}

/// Reads the file back; a missing file is no sessions.
pub fn load(state_dir: &Path) -> Result<Vec<Saved>, PersistError> {
    let p = path(state_dir);
    let file = p.display().to_string();
    let text = match std::fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(PersistError::Read { file, error }),
    };
    let f: File = serde_json::from_slice(&text).map_err(|e| PersistError::Syntax {
        file,
        error: e.to_string(),
    })?;
    Ok(f.sessions)
}

fn time(s: &str, or: SystemTime) -> SystemTime {
    humantime::parse_rfc3339_weak(s).unwrap_or(or)
}

/// The record of a saved session, ended with [`RESTARTED`] (at `now`) when it was live.
pub fn restore(info: &SessionInfo, now: SystemTime) -> Session {
    let created = time(&info.created_at, now);
    let mut s = Session::new(
        &info.session_id,
        &info.provider,
        created,
        Default::default(),
    );
    s.state = info.state;
    s.updated = time(&info.updated_at, now);
    s.deadline = time(&info.deadline, now);
    s.url = info.oauth_url.clone();
    s.url_source = info.url_source.as_deref().and_then(|u| match u {
        "shim" => Some(UrlSource::Shim),
        "output" => Some(UrlSource::Output),
        "api" => Some(UrlSource::Api),
        _ => None,
    });
    s.pid = info.pid;
    s.reason = info.reason.clone();
    s.last_output = info.last_output.clone().unwrap_or_default();
    s.browser = info.browser.clone();
    s.credentials_path = info.credentials_path.as_ref().map(PathBuf::from);
    s.history = info
        .history
        .iter()
        .map(|t| (t.state, time(&t.at, now)))
        .collect();
    if s.history.is_empty() {
        s.history.push((s.state, s.updated));
    }
    if !s.state.is_terminal() {
        // A "stuck: …" note of the live session is replaced by why it ended.
        s.reason = None;
        let _ = s.transition(SessionState::Failed, now, Some(RESTARTED.to_string()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn live_sessions_come_back_ended_and_ended_ones_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut live = Session::new("a", "codex", t, Duration::from_secs(60));
        live.record_url("https://x/?state=s1", UrlSource::Shim, t);
        let mut done = Session::new("b", "gemini_cli", t, Duration::from_secs(60));
        done.transition(SessionState::Authenticated, t, None)
            .unwrap();
        let saved = vec![
            Saved {
                seq: 3,
                session: live.info(),
                required_keys: vec!["tokens".into()],
                oauth_state: Some("s1".into()),
            },
            Saved {
                seq: 4,
                session: done.info(),
                required_keys: vec!["refresh_token".into()],
                oauth_state: None,
            },
        ];
        save(dir.path(), saved).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = load(dir.path()).unwrap();
        assert_eq!(back.len(), 2);
        let later = t + Duration::from_secs(30);
        let a = restore(&back[0].session, later);
        assert_eq!(a.state, SessionState::Failed);
        assert_eq!(a.reason.as_deref(), Some(RESTARTED));
        assert_eq!(a.url.as_deref(), Some("https://x/?state=s1"));
        assert_eq!(a.url_source, Some(UrlSource::Shim));
        let states: Vec<_> = a.history.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            states,
            vec![
                SessionState::Starting,
                SessionState::UrlReady,
                SessionState::Failed
            ]
        );
        assert_eq!(a.info().history[2].at, crate::state::rfc3339(later));
        assert_eq!(a.info().created_at, live.info().created_at);
        let b = restore(&back[1].session, later);
        assert_eq!(b.state, SessionState::Authenticated);
        assert_eq!(b.reason, None);
        assert_eq!(back[1].required_keys, vec!["refresh_token"]);
        // Missing: none; garbage: an error naming the file.
        let empty = tempfile::tempdir().unwrap();
        assert!(load(empty.path()).unwrap().is_empty());
        std::fs::write(path(empty.path()), "{oops").unwrap();
        let e = load(empty.path()).unwrap_err().to_string();
        assert!(e.contains(FILE), "{e}");
    }
}
