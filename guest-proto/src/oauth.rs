//! Bodies of the agent's OAuth routes (DESIGN.md §4, issue 7), shared with host-client.
//!
//! Two families: the Node agent's routes (`/auth/:provider`, `/oauth-url`,
//! `/credentials/*`, `/open-url`), whose camelCase field names the existing host controller
//! reads and must keep, and the versioned `/v1/oauth/sessions` API with the full state.

use serde::{Deserialize, Serialize};

/// Where a session is. `starting → url_ready → awaiting_user →` one of the four ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// The CLI was started; no login URL seen yet.
    Starting,
    /// The login URL is known (from the browser shim or the CLI's output).
    UrlReady,
    /// The URL was opened in the VM's browser (or handed to the host): the user acts.
    AwaitingUser,
    /// The credentials file holds the required keys.
    Authenticated,
    /// The CLI exited, or could not be started, without credentials.
    Failed,
    /// The session's deadline passed.
    Expired,
    /// Cancelled through the API, or replaced by a newer session for the same provider.
    Cancelled,
}

impl SessionState {
    /// `true` for the four end states.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SessionState::Authenticated
                | SessionState::Failed
                | SessionState::Expired
                | SessionState::Cancelled
        )
    }

    /// The wire name (`"url_ready"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::UrlReady => "url_ready",
            SessionState::AwaitingUser => "awaiting_user",
            SessionState::Authenticated => "authenticated",
            SessionState::Failed => "failed",
            SessionState::Expired => "expired",
            SessionState::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /auth/:provider` body (Node agent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthRequest {
    /// Chosen by the host; the agent makes one up when absent.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// `POST /auth/:provider` answer (Node agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthResponse {
    pub success: bool,
    pub session_id: String,
    /// Present when the URL was already captured when the answer was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_url: Option<String>,
}

/// `GET /oauth-url?sessionId=`: 200 with the URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuthUrlResponse {
    pub oauth_url: String,
}

/// `GET /oauth-url` (202) and `GET /credentials/status` before a login: not yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    pub waiting: bool,
    /// The session's state, so a host can tell waiting from a dead session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SessionState>,
}

/// `GET /credentials/status?sessionId=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsStatus {
    pub authenticated: bool,
    /// `true` while the session may still authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<bool>,
    /// Credentials file (when authenticated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// RFC 3339 mtime of the credentials file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SessionState>,
    /// Why the session ended without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /credentials/get?sessionId=`: the credentials file's JSON, as the CLI wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsResponse {
    pub success: bool,
    pub provider: String,
    pub path: String,
    pub modified_at: String,
    pub credentials: serde_json::Value,
}

/// `POST /open-url` (what the browser shim sends; also accepted from the host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenUrlRequest {
    pub url: String,
    #[serde(default)]
    pub session_id: Option<String>,
}

/// `POST /open-url` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenUrlResponse {
    pub success: bool,
    /// The session the URL was recorded for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The browser was started (`false`: see `browserError`).
    pub opened: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_error: Option<String>,
}

/// `POST /v1/oauth/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartSession {
    pub provider: String,
    #[serde(default)]
    pub session_id: Option<String>,
}

/// `POST /v1/oauth/sessions/:id/code`: a code pasted by the user, for paste-code flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasteCode {
    pub code: String,
}

/// One state change, for the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub state: SessionState,
    /// RFC 3339.
    pub at: String,
}

/// The VM browser a session opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrowserInfo {
    /// The command line's first word (`chromium`).
    pub command: String,
    #[serde(default)]
    pub pid: Option<u32>,
    /// Why it could not be started (`chromium: not found`).
    #[serde(default)]
    pub error: Option<String>,
}

/// A session as `/v1/oauth/sessions` shows it. Never contains credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub session_id: String,
    pub provider: String,
    pub state: SessionState,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// When it expires if still live.
    pub deadline: String,
    #[serde(default)]
    pub oauth_url: Option<String>,
    /// `"shim"` (BROWSER/xdg-open), `"output"` (regex on the PTY) or `"api"` (`POST /open-url`).
    #[serde(default)]
    pub url_source: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    /// Why it failed, expired or was cancelled; while it is `starting`, `stuck: …` when
    /// its CLI showed no URL for a while after its start or the last prompt answered
    /// (`lastOutput` then shows the screen it sits at).
    #[serde(default)]
    pub reason: Option<String>,
    /// The CLI's screen as a person would see it (its PTY rendered by a terminal emulator,
    /// trailing blanks trimmed, pasted codes redacted, at most 8 KiB: the end).
    #[serde(default)]
    pub last_output: Option<String>,
    #[serde(default)]
    pub browser: Option<BrowserInfo>,
    /// Where credentials are expected (or were found).
    #[serde(default)]
    pub credentials_path: Option<String>,
    #[serde(default)]
    pub history: Vec<Transition>,
}

/// `GET /v1/oauth/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionsResponse {
    pub sessions: Vec<SessionInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_agent_field_names_are_kept() {
        let r = AuthResponse {
            success: true,
            session_id: "s1".into(),
            oauth_url: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"success":true,"sessionId":"s1"}"#
        );
        let w = Waiting {
            waiting: true,
            state: None,
        };
        assert_eq!(serde_json::to_string(&w).unwrap(), r#"{"waiting":true}"#);
        let q: AuthRequest = serde_json::from_str(r#"{"sessionId":"abc"}"#).unwrap();
        assert_eq!(q.session_id.as_deref(), Some("abc"));
        let o: OpenUrlRequest =
            serde_json::from_str(r#"{"url":"https://x/","sessionId":"abc"}"#).unwrap();
        assert_eq!(o.session_id.as_deref(), Some("abc"));
    }

    #[test]
    fn states_are_snake_case_and_terminal_ones_known() {
        assert_eq!(
            serde_json::to_string(&SessionState::AwaitingUser).unwrap(),
            r#""awaiting_user""#
        );
        assert!(SessionState::Expired.is_terminal());
        assert!(!SessionState::UrlReady.is_terminal());
    }
}
