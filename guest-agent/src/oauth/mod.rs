//! OAuth sessions (DESIGN.md §4, issue 7): the host asks for a login with a provider; the
//! provider's CLI runs on a PTY ([`pty`]), its login URL is captured exactly through the
//! `BROWSER`/`xdg-open` shim ([`shim`]) or, failing that, by regex on its output
//! ([`output`]), and opened in the VM's browser ([`browser`]) where the user logs in
//! through the stream; the credentials the CLI writes are noticed with inotify and
//! checked ([`creds`]) and handed to the host over the token-guarded API ([`routes`]).
//!
//! [`OAuth`] owns the sessions: one live session per provider, a deadline for each,
//! cancel kills the CLI and what it started ([`procs`]). Each session's CLI is driven by a
//! task in [`runner`]; the record and its state machine are in [`session`]; providers are
//! data ([`provider`], overridable in [`config`]).
//!
//! The CLIs and the browser run as the login user ([`user`]), which can reach neither the
//! state directory (root, 0700) nor the token. What they need of the agent lives in the
//! *login directory*, a sibling of the state directory (`/run/guest-agent-login` for
//! `/run/guest-agent`), root-owned, 0750 with the login user's group: the shim's socket
//! (0660) and each session's shim scripts. Every session has a generation (`seq`): its
//! directory and records carry it, and a task touches its session only while the
//! generation matches, so a session started again with the same id is never torn down by
//! the old one (issue 12 item 6).

pub mod browser;
pub mod callback;
pub mod config;
pub mod creds;
pub mod firefox;
pub mod login_dir;
mod open;
pub mod output;
pub mod persist;
pub mod procs;
pub mod provider;
pub mod proxy;
pub mod pty;
pub mod routes;
mod runner;
pub mod session;
pub mod shim;
pub mod status;
pub mod user;

use config::OAuthConfig;
use guest_proto::oauth::{OpenUrlRequest, OpenUrlResponse, SessionInfo, SessionState};
use session::{Session, UrlSource};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, Notify};

/// How long a URL found by regex waits for the exact one from the shim before the
/// browser is opened with it.
const SHIM_GRACE: Duration = Duration::from_millis(1500);

/// Why a session could not be started or acted on.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("unknown provider `{name}` (known: {known})")]
    UnknownProvider { name: String, known: String },
    #[error("sessionId `{0}` is not 1-128 of [A-Za-z0-9_.-]")]
    BadSessionId(String),
    #[error("no session `{0}`")]
    NoSession(String),
    #[error("no live session to give the URL to (pass sessionId)")]
    NoLiveSession,
    #[error("session `{id}` is {state}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    NotLive {
        id: String,
        state: SessionState,
        reason: Option<String>,
    },
    #[error("url must be http(s): {0:?}")]
    BadUrl(String),
    #[error(
        "provider `{provider}`: credentials path {template:?} does not expand to an absolute path"
    )]
    CredentialPath { provider: String, template: String },
    #[error("cannot start `{command}`: {error}")]
    Spawn {
        command: String,
        error: String,
        session: Box<SessionInfo>,
    },
    #[error("writing to the CLI: {0}")]
    Write(String),
    #[error("{0}")]
    User(#[from] user::UserError),
    #[error("{0}")]
    Callback(callback::CallbackError),
    #[error("session `{0}` was started again; this request was for the earlier one")]
    Stale(String),
    #[error("{0}")]
    Io(String),
}

/// What a session's runner is told.
enum Control {
    Cancel(String),
    /// Text for the PTY; `secret`: a pasted code, never shown in the output.
    Write {
        text: String,
        secret: Option<String>,
        done: oneshot::Sender<Result<(), String>>,
    },
}

struct Entry {
    session: Session,
    seq: u64,
    ctl: Option<mpsc::UnboundedSender<Control>>,
    browser: Option<Arc<browser::Browser>>,
    /// The URL the browser was opened with.
    opened: Option<String>,
    /// Where the CLI waits for the redirect: port and path.
    callback: Option<(u16, String)>,
    /// The `state` parameter of the login URL: `/auth/callback` goes to the session whose
    /// `state` it carries.
    oauth_state: Option<String>,
    required_keys: Vec<String>,
    /// The proxy this login goes through ([`proxy`]), chosen when it started.
    proxy: Option<String>,
}

/// The session manager (one per `serve`).
pub struct OAuth {
    cfg: OAuthConfig,
    /// The state directory (root only): the process records.
    dir: PathBuf,
    /// The login directory (see the module doc): `oauth.sock` and `s/<id>.<seq>/bin`.
    login_dir: PathBuf,
    sessions: Mutex<BTreeMap<String, Entry>>,
    next_seq: Mutex<u64>,
    /// Woken on every session change (for requests that wait for a URL).
    changed: Notify,
    /// One writer of the sessions file at a time, each writing the map as it is then.
    saving: Mutex<()>,
}

impl OAuth {
    /// `state_dir` holds the records of the sessions' processes; what an earlier `serve`
    /// left running (it crashed, was killed) is killed here, before any session starts,
    /// and its shim directories are removed. The state directory is made 0700.
    pub fn new(cfg: OAuthConfig, state_dir: &Path) -> Arc<OAuth> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir);
        if let Ok(m) = std::fs::symlink_metadata(state_dir) {
            // SAFETY: plain getter.
            if m.is_dir() && m.uid() == unsafe { libc::geteuid() } && m.mode() & 0o077 != 0 {
                let _ = std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700));
            }
        }
        let killed = procs::sweep(&state_dir.join(procs::RECORDS_DIR));
        let login_dir = login_dir::login_dir_of(state_dir);
        let _ = std::fs::remove_dir_all(login_dir.join("s"));
        if killed > 0 {
            tracing::warn!(
                killed,
                "OAuth: killed what an earlier serve's sessions left running"
            );
        }
        let (sessions, seq) = restore(state_dir);
        let oauth = Arc::new(OAuth {
            cfg,
            dir: state_dir.to_path_buf(),
            login_dir,
            sessions: Mutex::new(sessions),
            next_seq: Mutex::new(seq),
            changed: Notify::new(),
            saving: Mutex::new(()),
        });
        oauth.save();
        oauth
    }

    /// Every change: waiters woken, the sessions file written ([`persist`]).
    fn touched(&self) {
        self.changed.notify_waiters();
        self.save();
    }

    fn save(&self) {
        let _one = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let saved = self
            .lock()
            .values()
            .map(|e| persist::Saved {
                seq: e.seq,
                session: e.session.info(),
                required_keys: e.required_keys.clone(),
                oauth_state: e.oauth_state.clone(),
            })
            .collect();
        if let Err(e) = persist::save(&self.dir, saved) {
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "cannot record the OAuth sessions; a restart of serve will not know them");
        }
    }

    pub fn config(&self) -> &OAuthConfig {
        &self.cfg
    }

    /// The shim's socket.
    pub fn socket_path(&self) -> PathBuf {
        self.login_dir.join("oauth.sock")
    }

    /// Where the records of live sessions' processes are.
    pub fn records_dir(&self) -> PathBuf {
        self.dir.join(procs::RECORDS_DIR)
    }

    /// The user the CLIs and the browser run as, with their HOME and the login directory
    /// made ready for it. Fails closed (see [`user`]).
    pub fn login_user(&self) -> Result<user::LoginUser, OAuthError> {
        let u = user::LoginUser::resolve(&self.cfg.run_as)?;
        u.prepare_home(&self.cfg.home, &self.dir)?;
        self.prepare_login_dir(&u)
            .map_err(|e| OAuthError::Io(format!("{}: {e}", self.login_dir.display())))?;
        Ok(u)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Live sessions (`activeSessions` in `/health`).
    pub fn active_sessions(&self) -> u32 {
        self.lock().values().filter(|e| e.session.is_live()).count() as u32
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let mut map = self.lock();
        map.values_mut().for_each(note_browser_exit);
        let mut v: Vec<_> = map.values().collect();
        v.sort_by_key(|e| e.seq);
        v.into_iter().map(|e| e.session.info()).collect()
    }

    /// A session by id, or the newest one when `id` is `None`.
    pub fn get(&self, id: Option<&str>) -> Result<SessionInfo, OAuthError> {
        let mut map = self.lock();
        map.values_mut().for_each(note_browser_exit);
        match id {
            Some(id) => map
                .get(id)
                .map(|e| e.session.info())
                .ok_or_else(|| OAuthError::NoSession(id.to_string())),
            None => map
                .values()
                .max_by_key(|e| e.seq)
                .map(|e| e.session.info())
                .ok_or_else(|| OAuthError::NoSession("(none yet)".into())),
        }
    }

    /// Credentials of an authenticated session: re-read and re-checked now.
    pub fn credentials(&self, id: Option<&str>) -> Result<(SessionInfo, creds::Found), OAuthError> {
        let info = self.get(id)?;
        let keys = self
            .lock()
            .get(&info.session_id)
            .map(|e| e.required_keys.clone())
            .unwrap_or_default();
        if info.state != SessionState::Authenticated {
            return Err(OAuthError::NotLive {
                id: info.session_id,
                state: info.state,
                reason: Some("not authenticated".into()),
            });
        }
        let path = PathBuf::from(info.credentials_path.clone().unwrap_or_default());
        let found = creds::check(&path, &self.cfg.home, &keys)
            .map_err(|e| OAuthError::Io(e.to_string()))?;
        Ok((info, found))
    }

    /// Starts a session (see [`runner::start`]).
    pub async fn start(
        self: &Arc<Self>,
        provider: &str,
        session_id: Option<String>,
    ) -> Result<SessionInfo, OAuthError> {
        runner::start(self, provider, session_id).await
    }

    /// Waits until `id` has a URL or has ended, at most `max`.
    pub async fn wait_url(&self, id: &str, max: Duration) -> Option<SessionInfo> {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let info = self.get(Some(id)).ok()?;
            if info.oauth_url.is_some() || info.state.is_terminal() {
                return Some(info);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Some(info);
            }
        }
    }

    /// Cancels a live session (kills its CLI's process group).
    pub fn cancel(&self, id: &str, reason: &str) -> Result<SessionInfo, OAuthError> {
        let map = self.lock();
        let e = map
            .get(id)
            .ok_or_else(|| OAuthError::NoSession(id.to_string()))?;
        if !e.session.is_live() {
            return Err(not_live(&e.session));
        }
        if let Some(ctl) = &e.ctl {
            let _ = ctl.send(Control::Cancel(reason.to_string()));
        }
        Ok(e.session.info())
    }

    /// Types `code` (and Enter) into the CLI: the paste-code flow.
    pub async fn paste_code(&self, id: &str, code: &str) -> Result<SessionInfo, OAuthError> {
        if code.is_empty() || code.contains(['\r', '\n']) {
            return Err(OAuthError::Write(
                "code must be one non-empty line".to_string(),
            ));
        }
        let (tx, rx) = oneshot::channel();
        {
            let map = self.lock();
            let e = map
                .get(id)
                .ok_or_else(|| OAuthError::NoSession(id.to_string()))?;
            if !e.session.is_live() {
                return Err(not_live(&e.session));
            }
            let ctl = e.ctl.as_ref().ok_or_else(|| not_live(&e.session))?;
            ctl.send(Control::Write {
                text: format!("{code}\r"),
                secret: Some(code.to_string()),
                done: tx,
            })
            .map_err(|_| not_live(&e.session))?;
        }
        rx.await
            .map_err(|_| OAuthError::Write("the session ended".into()))?
            .map_err(OAuthError::Write)?;
        self.get(Some(id))
    }

    /// Records a URL for a session (the newest live one when `id` is `None`) and opens it
    /// in the browser when it is new.
    pub async fn open_url(
        self: &Arc<Self>,
        req: &OpenUrlRequest,
        source: UrlSource,
    ) -> Result<OpenUrlResponse, OAuthError> {
        self.open_url_for(req, source, None).await
    }

    /// [`Self::open_url`] for generation `seq` of the session only (from its runner or its
    /// shim), when given.
    async fn open_url_for(
        self: &Arc<Self>,
        req: &OpenUrlRequest,
        source: UrlSource,
        seq: Option<u64>,
    ) -> Result<OpenUrlResponse, OAuthError> {
        if !(req.url.starts_with("https://") || req.url.starts_with("http://")) {
            return Err(OAuthError::BadUrl(req.url.clone()));
        }
        let id = match &req.session_id {
            Some(id) => id.clone(),
            None => self
                .lock()
                .values()
                .filter(|e| e.session.is_live())
                .max_by_key(|e| e.seq)
                .map(|e| e.session.id.clone())
                .ok_or(OAuthError::NoLiveSession)?,
        };
        let (fresh, seq) = {
            let mut map = self.lock();
            let e = map
                .get_mut(&id)
                .ok_or_else(|| OAuthError::NoSession(id.clone()))?;
            if seq.is_some_and(|s| s != e.seq) {
                return Err(OAuthError::Stale(id));
            }
            if !e.session.is_live() {
                return Err(not_live(&e.session));
            }
            let fresh = e.session.record_url(&req.url, source, SystemTime::now());
            if fresh {
                e.callback = callback::target(&req.url).or_else(|| e.callback.clone());
                e.oauth_state = callback::url_param(&req.url, "state");
            }
            (fresh, e.seq)
        };
        self.touched();
        let mut resp = OpenUrlResponse {
            success: true,
            session_id: Some(id.clone()),
            opened: false,
            browser_error: None,
        };
        if fresh && source != UrlSource::Output {
            let info = self.open_in_browser(&id, seq, &req.url).await;
            resp.opened = info.error.is_none();
            resp.browser_error = info.error;
        } else if fresh {
            // A regex guess: give the shim a moment to send the exact URL.
            let me = self.clone();
            let url = req.url.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SHIM_GRACE).await;
                let still = me.lock().get(&id).is_some_and(|e| {
                    e.seq == seq
                        && e.session.is_live()
                        && e.session.url.as_deref() == Some(url.as_str())
                        && e.opened.is_none()
                });
                if still {
                    me.open_in_browser(&id, seq, &url).await;
                }
            });
        }
        Ok(resp)
    }

    /// The host fetched the URL: the user is now expected to act even if our browser failed.
    pub fn url_handed_out(&self, id: &str) {
        let moved = self.lock().get_mut(id).is_some_and(|e| {
            e.session.state == SessionState::UrlReady
                && e.session
                    .transition(SessionState::AwaitingUser, SystemTime::now(), None)
                    .is_ok()
        });
        if moved {
            self.touched();
        }
    }

    /// Where `GET /auth/callback?…&state=S` goes: the CLI callback of the live session
    /// whose login URL carried `state=S`, never a guess.
    pub fn callback_target(
        &self,
        query: Option<&str>,
    ) -> Result<(String, u16, String), OAuthError> {
        use callback::CallbackError;
        let state = query
            .and_then(|q| callback::query_param(q, "state"))
            .filter(|s| !s.is_empty())
            .ok_or(OAuthError::Callback(CallbackError::NoState))?;
        let map = self.lock();
        let ours = |e: &&Entry| e.oauth_state.as_deref() == Some(state.as_str());
        let e = match map.values().find(|e| e.session.is_live() && ours(e)) {
            Some(e) => e,
            None => {
                // The newest session that had it, to say it ended.
                let ended = map.values().filter(ours).max_by_key(|e| e.seq);
                return Err(OAuthError::Callback(match ended {
                    Some(e) => CallbackError::Ended {
                        state: e.session.state.to_string(),
                    },
                    None => CallbackError::NoMatch,
                }));
            }
        };
        let (port, path) = e
            .callback
            .clone()
            .ok_or_else(|| OAuthError::Callback(CallbackError::NoListener(e.session.id.clone())))?;
        Ok((e.session.id.clone(), port, path))
    }
}

/// A browser that ended while its session is live (crashed, no display) is said in the
/// session: the user cannot be looking at the login page.
fn note_browser_exit(e: &mut Entry) {
    if !e.session.is_live() {
        return;
    }
    if let (Some(b), Some(info)) = (&e.browser, e.session.browser.as_mut()) {
        if info.error.is_none() {
            if let Some(how) = b.exited() {
                info.error = Some(format!("{} ended ({how})", info.command));
            }
        }
    }
}

/// The sessions an earlier `serve` recorded (see [`persist`]) and the highest generation.
fn restore(state_dir: &Path) -> (BTreeMap<String, Entry>, u64) {
    let saved = persist::load(state_dir).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "OAuth: the earlier sessions cannot be read; starting without them");
        Vec::new()
    });
    let now = SystemTime::now();
    let mut map = BTreeMap::new();
    let mut seq = 0;
    let mut ended = 0;
    for s in saved {
        if !session::valid_id(&s.session.session_id) {
            continue;
        }
        ended += usize::from(!s.session.state.is_terminal());
        seq = seq.max(s.seq);
        let e = Entry {
            session: persist::restore(&s.session, now),
            seq: s.seq,
            ctl: None,
            browser: None,
            opened: None,
            callback: None,
            oauth_state: s.oauth_state,
            required_keys: s.required_keys,
            proxy: None,
        };
        map.insert(s.session.session_id, e);
    }
    if ended > 0 {
        tracing::warn!(
            sessions = ended,
            "OAuth: sessions live when serve stopped are ended: {}",
            persist::RESTARTED
        );
    }
    (map, seq)
}

fn not_live(s: &Session) -> OAuthError {
    OAuthError::NotLive {
        id: s.id.clone(),
        state: s.state,
        reason: s.reason.clone(),
    }
}
