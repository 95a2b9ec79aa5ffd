//! Starting a session and the task that drives it: the CLI's output (answers to prompts,
//! the fallback URL), credential events, the deadline, cancel and pasted codes, the CLI's
//! exit. When the session ends, the CLI with what it started and the browser are closed.
//!
//! A task belongs to one generation (`seq`) of its session id: it reads and changes the
//! session only while the map holds that generation, and removes only its own shim
//! directory, so a session started again with the same id is never ended, written to or
//! left without its shim by the old one's teardown.

use super::session::{self, Session, UrlSource};
use super::user::LoginUser;
use super::{creds, provider, pty, shim, Control, Entry, OAuth, OAuthError};
use guest_proto::oauth::{OpenUrlRequest, SessionInfo, SessionState};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// How long an authenticated CLI may take to exit by itself before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(3);
/// Credential checks when inotify could not be set up.
const POLL: Duration = Duration::from_secs(2);
/// How often the screen is looked at without output (ignored answers, a stuck CLI).
const LOOK: Duration = Duration::from_secs(1);

pub(super) async fn start(
    oauth: &Arc<OAuth>,
    provider_name: &str,
    session_id: Option<String>,
) -> Result<SessionInfo, OAuthError> {
    let cfg = &oauth.cfg;
    let p = cfg
        .providers
        .get(provider_name)
        .ok_or_else(|| OAuthError::UnknownProvider {
            name: provider_name.to_string(),
            known: cfg.providers.keys().cloned().collect::<Vec<_>>().join(", "),
        })?
        .clone();
    let id = session_id.unwrap_or_else(session::new_id);
    if !session::valid_id(&id) {
        return Err(OAuthError::BadSessionId(id));
    }
    // Same id, still live, same provider: the host retried; answer with what there is.
    let replace: Vec<String> = {
        let map = oauth.lock();
        if let Some(e) = map.get(&id) {
            if e.session.is_live() && e.session.provider == p.name {
                return Ok(e.session.info());
            }
        }
        map.values()
            .filter(|e| e.session.is_live() && (e.session.provider == p.name || e.session.id == id))
            .map(|e| e.session.id.clone())
            .collect()
    };
    for old in &replace {
        let _ = oauth.cancel(old, &format!("replaced by session {id}"));
    }
    // Wait (bounded) for replaced sessions to end, so one provider never has two CLIs.
    for old in &replace {
        let mut n = 0;
        while oauth.lock().get(old).is_some_and(|e| e.session.is_live()) && n < 100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            n += 1;
        }
    }

    prune(oauth);
    let user = oauth.login_user()?;

    let seq = {
        let mut n = oauth.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n
    };
    let sdir = oauth.login_dir.join("s").join(format!("{id}.{seq}"));
    let bin = sdir.join("bin");
    let browser_shim = shim::install(&bin, &cfg.shim_command).map_err(|e| {
        OAuthError::Io(format!(
            "installing the browser shim in {}: {e}",
            bin.display()
        ))
    })?;
    let proxy = super::proxy::for_login(cfg.proxy.as_deref());
    let mut env = session_env(oauth, &p, (&id, seq), &user, &bin, &browser_shim);
    if let Some(url) = &proxy {
        // Before the provider's own variables, which may override them.
        let own: std::collections::BTreeSet<&String> = p.env.keys().collect();
        for (k, v) in super::proxy::env(url) {
            if !own.contains(&k) && !p.env_remove.contains(&k) {
                env.insert(k, v);
            }
        }
        tracing::info!(session = %id, proxy = %url, "the login goes through the proxy");
    }
    let cred_path = provider::credential_path(&p, &env)
        .filter(|path| provider::is_usable(path))
        .ok_or_else(|| {
            let _ = std::fs::remove_dir_all(&sdir);
            OAuthError::CredentialPath {
                provider: p.name.clone(),
                template: p.credential_paths.join(" | "),
            }
        })?;
    let baseline = creds::baseline(&cred_path, &cfg.home);
    let watch = match creds::watch(&cred_path, &cfg.home, &user) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "no inotify on the credentials directory; polling");
            None
        }
    };

    let now = SystemTime::now();
    let mut s = Session::new(&id, &p.name, now, cfg.deadline_for(&p.name));
    s.credentials_path = Some(cred_path.clone());
    // Unique (random part): the marker alone identifies this group's processes.
    let name = format!("{id}.{seq}.cli-{:016x}", fastrand::u64(..));
    let records = oauth.records_dir();
    let track = pty::Track {
        marker: &name,
        what: "cli",
        records: Some((&records, &name)),
    };
    let child = pty::spawn(&p.command, &env, &cfg.home, &user, &track);
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let mut entry = Entry {
        session: s,
        seq,
        ctl: None,
        browser: None,
        opened: None,
        callback: p
            .callback_ports
            .first()
            .map(|port| (*port, "/auth/callback".to_string())),
        oauth_state: None,
        required_keys: p.required_keys.clone(),
        proxy,
    };
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                format!("{}: not found on PATH", p.command[0])
            } else {
                e.to_string()
            };
            let _ = entry.session.transition(
                SessionState::Failed,
                SystemTime::now(),
                Some(format!("cannot start the CLI: {why}")),
            );
            let info = entry.session.info();
            oauth.lock().insert(id.clone(), entry);
            oauth.touched();
            let _ = std::fs::remove_dir_all(&sdir);
            return Err(OAuthError::Spawn {
                command: p.command[0].clone(),
                error: why,
                session: Box::new(info),
            });
        }
    };
    entry.session.pid = Some(child.pid);
    entry.ctl = Some(ctl_tx);
    let info = entry.session.info();
    oauth.lock().insert(id.clone(), entry);
    oauth.touched();
    tracing::info!(session = %id, provider = %p.name, pid = child.pid, user = %user.name,
        "OAuth session started");
    let task = Task {
        oauth: oauth.clone(),
        id,
        seq,
        home: cfg.home.clone(),
        output: super::output::Output::new(
            (pty::COLUMNS, pty::ROWS),
            &p.prompts,
            &p.url_patterns,
            &p.fail_on,
            std::time::Instant::now(),
        ),
        required: p.required_keys.clone(),
        cred_path,
        baseline,
        sdir,
        stuck_after: cfg.stuck_after,
    };
    let deadline = cfg.deadline_for(&p.name);
    tokio::spawn(task.run(child, watch, ctl_rx, deadline));
    Ok(info)
}

/// Ended sessions kept for status queries; older ones are forgotten.
const KEEP_ENDED: usize = 32;

fn prune(oauth: &OAuth) {
    let mut map = oauth.lock();
    let mut ended: Vec<(u64, String)> = map
        .values()
        .filter(|e| !e.session.is_live())
        .map(|e| (e.seq, e.session.id.clone()))
        .collect();
    if ended.len() > KEEP_ENDED {
        ended.sort();
        for (_, id) in ended.iter().take(ended.len() - KEEP_ENDED) {
            map.remove(id);
        }
    }
}

/// The CLI's environment: the agent's own (scrubbed: [`super::user::scrub_env`]), then
/// HOME/USER/TERM/DISPLAY/BROWSER/PATH and the shim's variables, then the provider's,
/// minus the provider's removals.
fn session_env(
    oauth: &OAuth,
    p: &provider::Provider,
    (id, seq): (&str, u64),
    user: &LoginUser,
    bin: &std::path::Path,
    browser_shim: &std::path::Path,
) -> BTreeMap<String, String> {
    let cfg = &oauth.cfg;
    let mut env = super::user::child_env(user, &cfg.home);
    let path = env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let set = |env: &mut BTreeMap<String, String>, k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set(&mut env, "TERM", "xterm-256color".into());
    set(&mut env, "COLUMNS", pty::COLUMNS.to_string());
    set(&mut env, "LINES", pty::ROWS.to_string());
    set(&mut env, "DISPLAY", cfg.display.clone());
    set(&mut env, "BROWSER", browser_shim.display().to_string());
    set(&mut env, "PATH", format!("{}:{path}", bin.display()));
    set(
        &mut env,
        shim::SOCKET_ENV,
        oauth.socket_path().display().to_string(),
    );
    set(&mut env, shim::SESSION_ENV, format!("{id}/{seq}"));
    for (k, v) in &p.env {
        env.insert(k.clone(), v.clone());
    }
    for k in &p.env_remove {
        env.remove(k);
    }
    env
}

struct Task {
    oauth: Arc<OAuth>,
    id: String,
    /// The generation of `id` this task drives.
    seq: u64,
    /// The login HOME (credentials are read below it without following symlinks).
    home: PathBuf,
    output: super::output::Output,
    required: Vec<String>,
    cred_path: PathBuf,
    baseline: Option<u64>,
    sdir: PathBuf,
    /// A screen unchanged this long without a URL is reported as stuck.
    stuck_after: Duration,
}

/// How the session ended, decided in the loop.
struct End {
    state: SessionState,
    reason: Option<String>,
    found: Option<creds::Found>,
}

impl Task {
    async fn run(
        mut self,
        mut child: pty::PtyChild,
        mut watch: Option<creds::CredsWatch>,
        mut ctl: mpsc::UnboundedReceiver<Control>,
        lifetime: Duration,
    ) {
        let deadline = tokio::time::sleep(lifetime);
        tokio::pin!(deadline);
        let mut poll = tokio::time::interval(POLL);
        let mut look = tokio::time::interval(LOOK);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut exited = false;
        let end = loop {
            tokio::select! {
                chunk = child.output.recv(), if !exited => match chunk {
                    Some(chunk) => {
                        if let Some(line) = self.on_output(&chunk, &child.writer).await {
                            break End {
                                state: SessionState::Failed,
                                reason: Some(format!("the CLI cannot log in: {line}")),
                                found: None,
                            };
                        }
                    }
                    None => { /* terminal closed; the exit status follows */ }
                },
                _ = look.tick(), if !exited => self.on_tick(&child.writer),
                st = &mut child.exited, if !exited => {
                    exited = true;
                    // What it printed last may still be in the channel; a screen that says
                    // why it cannot log in is the reason, as when seen before the exit.
                    let mut cannot = None;
                    while let Ok(Some(chunk)) =
                        tokio::time::timeout(Duration::from_millis(200), child.output.recv()).await
                    {
                        let f = self.on_output(&chunk, &child.writer).await;
                        cannot = cannot.or(f);
                    }
                    let how = match st {
                        Ok(Ok(s)) => describe(s),
                        Ok(Err(e)) => format!("wait failed: {e}"),
                        Err(_) => "ended".into(),
                    };
                    let success = how == "exit 0";
                    match creds::check(&self.cred_path, &self.home, &self.required) {
                        // A successful exit with a valid file is a login, even an old one
                        // ("already logged in").
                        Ok(f) if success || Some(f.digest) != self.baseline => {
                            break End { state: SessionState::Authenticated, reason: None, found: Some(f) };
                        }
                        _ if cannot.is_some() => {
                            let line = cannot.unwrap_or_default();
                            break End {
                                state: SessionState::Failed,
                                reason: Some(format!("the CLI cannot log in: {line}")),
                                found: None,
                            };
                        }
                        res => {
                            let last = self.output.tail();
                            let last_line = last.lines().last().unwrap_or("").trim().to_string();
                            let mut reason = format!("the CLI exited ({how}) without credentials");
                            if let Err(e) = res {
                                reason.push_str(&format!(" [{e}]"));
                            }
                            if !last_line.is_empty() {
                                reason.push_str(&format!("; last output: {last_line}"));
                            }
                            break End { state: SessionState::Failed, reason: Some(reason), found: None };
                        }
                    }
                },
                ev = async { match watch.as_mut() { Some(w) => w.events.recv().await, None => std::future::pending().await } } => {
                    if ev.is_none() { watch = None; }
                    if let Some(f) = self.fresh_credentials() {
                        break End { state: SessionState::Authenticated, reason: None, found: Some(f) };
                    }
                },
                _ = poll.tick(), if watch.is_none() => {
                    if let Some(f) = self.fresh_credentials() {
                        break End { state: SessionState::Authenticated, reason: None, found: Some(f) };
                    }
                },
                _ = &mut deadline => {
                    break End {
                        state: SessionState::Expired,
                        reason: Some(format!("not finished within {}s", lifetime.as_secs())),
                        found: None,
                    };
                },
                c = ctl.recv() => match c {
                    Some(Control::Cancel(why)) => {
                        break End { state: SessionState::Cancelled, reason: Some(why), found: None };
                    }
                    Some(Control::Write { text, secret, done }) => {
                        // Before it is typed: the echo may come at once.
                        if let Some(code) = &secret {
                            self.output.add_secret(code);
                        }
                        let _ = done.send(pty::write(&child.writer, &text).map_err(|e| e.to_string()));
                    }
                    None => {
                        break End { state: SessionState::Cancelled, reason: Some("agent shutting down".into()), found: None };
                    }
                },
            }
        };
        drop(watch);
        self.finish(end, child, exited).await;
    }

    /// Valid credentials that differ from what was there when the session started.
    fn fresh_credentials(&self) -> Option<creds::Found> {
        creds::check(&self.cred_path, &self.home, &self.required)
            .ok()
            .filter(|f| Some(f.digest) != self.baseline)
    }

    /// Output: answers, the screen into `lastOutput`, a URL. `Some(line)` when the screen
    /// says the login cannot go on (the provider's `fail_on`).
    async fn on_output(&mut self, chunk: &[u8], writer: &std::fs::File) -> Option<String> {
        let f = self.output.feed(chunk, Instant::now());
        self.answer(&f.answers, writer);
        self.show();
        if let Some(url) = f.url {
            let req = OpenUrlRequest {
                url,
                session_id: Some(self.id.clone()),
            };
            let _ = self
                .oauth
                .open_url_for(&req, UrlSource::Output, Some(self.seq))
                .await;
        }
        f.failure
    }

    fn answer(&self, answers: &[String], writer: &std::fs::File) {
        for a in answers {
            tracing::info!(session = %self.id, "answering a prompt of the CLI");
            if let Err(e) = pty::write(writer, a) {
                tracing::warn!(session = %self.id, error = %e, "cannot answer the CLI's prompt");
            }
        }
    }

    /// The screen into `lastOutput`; while there is no URL, a screen that has not changed
    /// for the stuck time is said in `reason` (cleared when it changes).
    fn show(&self) {
        let tail = self.output.tail();
        let stuck = self.output.stuck(Instant::now(), self.stuck_after);
        if let Some(e) = self.mine(&mut self.oauth.lock()) {
            e.session.last_output = tail;
            if e.session.state == SessionState::Starting {
                let was = e.session.reason.is_some();
                if was != stuck.is_some() {
                    if let Some(why) = &stuck {
                        tracing::warn!(session = %self.id, reason = %why, "OAuth session stuck");
                    }
                    e.session.reason = stuck;
                    e.session.updated = SystemTime::now();
                }
            }
        }
    }

    /// No output for a while: answers typed again, `lastOutput` and stuck.
    fn on_tick(&mut self, writer: &std::fs::File) {
        let f = self.output.tick(Instant::now());
        self.answer(&f.answers, writer);
        self.show();
    }

    /// This task's session in the map: only while it holds this task's generation.
    fn mine<'a>(&self, map: &'a mut BTreeMap<String, Entry>) -> Option<&'a mut Entry> {
        map.get_mut(&self.id).filter(|e| e.seq == self.seq)
    }

    async fn finish(self, end: End, child: pty::PtyChild, exited: bool) {
        let group = &child.group;
        if end.state != SessionState::Authenticated {
            // The state says "cancelled"/"expired"/"failed" only once nothing is left running.
            group.signal(libc::SIGKILL);
            group.wait_gone(Duration::from_secs(5)).await;
        }
        let now = SystemTime::now();
        let browser = {
            let mut map = self.oauth.lock();
            self.mine(&mut map).and_then(|e| {
                let _ = e.session.transition(end.state, now, end.reason.clone());
                if let Some(f) = &end.found {
                    e.session.credentials_modified = Some(f.modified);
                    e.session.credentials_path = Some(f.path.clone());
                }
                e.session.last_output = self.output.tail();
                e.ctl = None;
                e.browser.take()
            })
        };
        self.oauth.touched();
        match &end.reason {
            Some(r) => {
                tracing::info!(session = %self.id, state = %end.state, reason = %r, "OAuth session ended")
            }
            None => tracing::info!(session = %self.id, state = %end.state, "OAuth session ended"),
        }
        if !exited || group.alive() {
            if end.state == SessionState::Authenticated {
                // Let the CLI finish by itself first (it is still answering the browser's
                // redirect with its success page), then ask it to stop.
                group.wait_gone(EXIT_GRACE).await;
                group.close(Duration::from_secs(1)).await;
            }
            group.signal(libc::SIGKILL);
        }
        if let Some(b) = browser {
            b.close(Duration::from_secs(2)).await;
        }
        // This generation's directory only (`<id>.<seq>`).
        let _ = std::fs::remove_dir_all(&self.sdir);
        // Dropping `child` kills anything left and removes its record.
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
