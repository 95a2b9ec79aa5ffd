//! A session's record and its state machine: which state changes are allowed, with the
//! time of each and the reason for the ends. Pure (time is passed in), so the rules are
//! tested without processes.
//!
//! `starting → url_ready → awaiting_user → authenticated | failed | expired | cancelled`;
//! any live state may end; a new URL may come while `url_ready`/`awaiting_user` (the CLI
//! retried); nothing leaves an end state.

use guest_proto::oauth::{BrowserInfo, SessionInfo, SessionState, Transition};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Where the URL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlSource {
    /// The CLI ran `$BROWSER` / `xdg-open` (exact).
    Shim,
    /// Regex on the PTY output (fallback).
    Output,
    /// `POST /open-url` from the API.
    Api,
}

impl UrlSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UrlSource::Shim => "shim",
            UrlSource::Output => "output",
            UrlSource::Api => "api",
        }
    }
}

/// A state change the machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session {id}: cannot go from {from} to {to}")]
pub struct BadTransition {
    pub id: String,
    pub from: SessionState,
    pub to: SessionState,
}

/// One session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub provider: String,
    pub state: SessionState,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub deadline: SystemTime,
    pub url: Option<String>,
    pub url_source: Option<UrlSource>,
    pub pid: Option<u32>,
    pub reason: Option<String>,
    pub last_output: String,
    pub browser: Option<BrowserInfo>,
    pub credentials_path: Option<PathBuf>,
    /// mtime of the credentials file when authenticated.
    pub credentials_modified: Option<SystemTime>,
    pub history: Vec<(SessionState, SystemTime)>,
}

impl Session {
    pub fn new(id: &str, provider: &str, now: SystemTime, lifetime: Duration) -> Session {
        Session {
            id: id.to_string(),
            provider: provider.to_string(),
            state: SessionState::Starting,
            created: now,
            updated: now,
            deadline: now + lifetime,
            url: None,
            url_source: None,
            pid: None,
            reason: None,
            last_output: String::new(),
            browser: None,
            credentials_path: None,
            credentials_modified: None,
            history: vec![(SessionState::Starting, now)],
        }
    }

    pub fn is_live(&self) -> bool {
        !self.state.is_terminal()
    }

    /// Moves to `to` (a no-op when already there). Ends carry `reason`.
    pub fn transition(
        &mut self,
        to: SessionState,
        now: SystemTime,
        reason: Option<String>,
    ) -> Result<(), BadTransition> {
        use SessionState::*;
        if self.state == to {
            return Ok(());
        }
        let ok = match (self.state, to) {
            (from, _) if from.is_terminal() => false,
            (_, Authenticated | Failed | Expired | Cancelled) => true,
            (Starting, UrlReady) => true,
            (Starting | UrlReady, AwaitingUser) => true,
            (AwaitingUser, UrlReady) => true,
            _ => false,
        };
        if !ok {
            return Err(BadTransition {
                id: self.id.clone(),
                from: self.state,
                to,
            });
        }
        self.state = to;
        self.updated = now;
        if reason.is_some() {
            self.reason = reason;
        }
        self.history.push((to, now));
        Ok(())
    }

    /// Records a URL. Returns `true` when it is new (or better sourced) and should be
    /// opened in the browser; a live session only.
    pub fn record_url(&mut self, url: &str, source: UrlSource, now: SystemTime) -> bool {
        if !self.is_live() {
            return false;
        }
        let same = self.url.as_deref() == Some(url);
        // A URL from the shim is exact: it replaces the regex's guess.
        if same && !(source == UrlSource::Shim && self.url_source == Some(UrlSource::Output)) {
            return false;
        }
        self.url = Some(url.to_string());
        self.url_source = Some(source);
        self.updated = now;
        let _ = self.transition(SessionState::UrlReady, now, None);
        true
    }

    /// The wire form. `last_output` only for sessions that ended without credentials or
    /// are live (it is what the CLI showed, never the credentials file).
    pub fn info(&self) -> SessionInfo {
        use crate::state::rfc3339;
        SessionInfo {
            session_id: self.id.clone(),
            provider: self.provider.clone(),
            state: self.state,
            created_at: rfc3339(self.created),
            updated_at: rfc3339(self.updated),
            deadline: rfc3339(self.deadline),
            oauth_url: self.url.clone(),
            url_source: self.url_source.map(|s| s.as_str().to_string()),
            pid: self.pid,
            reason: self.reason.clone(),
            last_output: (!self.last_output.is_empty()).then(|| self.last_output.clone()),
            browser: self.browser.clone(),
            credentials_path: self
                .credentials_path
                .as_ref()
                .map(|p| p.display().to_string()),
            history: self
                .history
                .iter()
                .map(|(state, at)| Transition {
                    state: *state,
                    at: rfc3339(*at),
                })
                .collect(),
        }
    }
}

/// Session ids: what the host chose, `[A-Za-z0-9_.-]{1,128}`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A fresh id for a session the host did not name.
pub fn new_id() -> String {
    format!("s-{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionState::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn the_happy_path_records_every_step() {
        let mut s = Session::new("a", "codex", t(0), Duration::from_secs(60));
        assert!(s.record_url("https://x/1", UrlSource::Shim, t(1)));
        assert_eq!(s.state, UrlReady);
        s.transition(AwaitingUser, t(2), None).unwrap();
        s.transition(Authenticated, t(3), None).unwrap();
        let states: Vec<_> = s.history.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            states,
            vec![Starting, UrlReady, AwaitingUser, Authenticated]
        );
        assert_eq!(s.info().history[3].at, "1970-01-01T00:00:03.000Z");
        assert_eq!(s.info().deadline, "1970-01-01T00:01:00.000Z");
    }

    #[test]
    fn ends_are_final_and_backwards_steps_refused() {
        let mut s = Session::new("a", "codex", t(0), Duration::from_secs(60));
        assert!(s.transition(Starting, t(1), None).is_ok());
        s.transition(Failed, t(1), Some("exit 1".into())).unwrap();
        assert_eq!(s.reason.as_deref(), Some("exit 1"));
        let e = s.transition(Authenticated, t(2), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "session a: cannot go from failed to authenticated"
        );
        assert!(!s.record_url("https://x", UrlSource::Shim, t(3)));
        let mut s = Session::new("b", "codex", t(0), Duration::from_secs(60));
        s.record_url("https://x", UrlSource::Output, t(1));
        assert!(s.transition(Starting, t(2), None).is_err());
    }

    #[test]
    fn shim_url_replaces_a_regex_guess_once() {
        let mut s = Session::new("a", "codex", t(0), Duration::from_secs(60));
        assert!(s.record_url("https://x/1", UrlSource::Output, t(1)));
        assert!(!s.record_url("https://x/1", UrlSource::Output, t(1)));
        assert!(s.record_url("https://x/1", UrlSource::Shim, t(2)));
        assert_eq!(s.url_source, Some(UrlSource::Shim));
        assert!(!s.record_url("https://x/1", UrlSource::Shim, t(2)));
        s.transition(AwaitingUser, t(3), None).unwrap();
        assert!(s.record_url("https://x/2", UrlSource::Shim, t(4)));
        assert_eq!(s.state, UrlReady);
    }

    #[test]
    fn ids() {
        assert!(valid_id("sess-1_a.b"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(&"x".repeat(129)));
        assert!(valid_id(&new_id()));
    }
}
