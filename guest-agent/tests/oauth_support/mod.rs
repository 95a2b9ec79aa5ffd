//! Harness for the OAuth tests: the agent's OAuth routes behind the real token middleware
//! on a loopback port (in a thread with its own runtime), the real `guest-agent open-url`
//! as the browser shim, a fake provider CLI (`fixtures/fake_login_cli.py`), a fake OAuth
//! server on 127.0.0.1 whose authorize page redirects to the CLI's callback, and Xvfb for
//! the tests that run Chromium. Everything on loopback. Waits poll with a generous bound
//! that only turns a hang into a failure; nothing asserts on speed.
//!
//! As root (CI), the agent runs the CLIs and the browser as the login user
//! (`guestkit-login`, created here with useradd when missing): the test directories are
//! made searchable (0711, the state directory inside stays 0700) and the fixture and the
//! agent binary are reached through paths that user can traverse ([`expose`]).
#![allow(dead_code)]

use guest_agent::oauth::{config::OAuthConfig, OAuth};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent binary under test. Empty when this harness is compiled into another crate's
/// tests (guest-stream's Firefox input test uses only its login-user helpers).
pub const BIN: &str = match option_env!("CARGO_BIN_EXE_guest-agent") {
    Some(b) => b,
    None => "",
};
pub const TOKEN: &str = "t0ken-oauth";
pub const WAIT: Duration = Duration::from_secs(60);

pub fn fixture() -> String {
    expose(Path::new(&format!(
        "{}/tests/fixtures/fake_login_cli.py",
        env!("CARGO_MANIFEST_DIR")
    )))
    .display()
    .to_string()
}

/// The login user the agent switches to when root.
pub const LOGIN_USER: &str = "guestkit-login";

pub fn is_root() -> bool {
    // SAFETY: plain getter.
    unsafe { libc::geteuid() == 0 }
}

/// `(uid, gid)` of a user in /etc/passwd.
pub fn passwd_ids(name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    guest_agent::oauth::user::lookup(&text, name)
}

/// As root: makes sure [`LOGIN_USER`] exists (what the images do with useradd), and
/// returns its ids. Not root: the current ids (the agent does not switch).
pub fn ensure_login_user() -> (u32, u32) {
    if !is_root() {
        // SAFETY: plain getters.
        return unsafe { (libc::getuid(), libc::getgid()) };
    }
    for _ in 0..50 {
        if let Some(ids) = passwd_ids(LOGIN_USER) {
            return ids;
        }
        // Tests run in parallel: useradd may find /etc/passwd locked by another one.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/var/lib/guestkit-login",
                "--shell",
                "/usr/sbin/nologin",
                LOGIN_USER,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("cannot create the user {LOGIN_USER} with useradd (the OAuth tests run the CLIs as it)");
}

/// Gives `path` to the login user (a browser profile, a directory it must write).
pub fn give_to_login_user(path: &Path) {
    let (uid, gid) = ensure_login_user();
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

/// A path to `file` the login user can traverse: itself when every parent is searchable
/// by others, else a hard link in a shared 0755 directory under /tmp.
pub fn expose(file: &Path) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let reachable = file
        .ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0));
    if reachable || !is_root() {
        return file.to_path_buf();
    }
    let dir = std::env::temp_dir().join(format!("guestkit-oauth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let to = dir.join(file.file_name().unwrap());
    if !to.exists() {
        std::fs::hard_link(file, &to)
            .or_else(|_| std::fs::copy(file, &to).map(|_| ()))
            .unwrap();
    }
    to
}

/// The agent binary, as the login user reaches it (the shim runs it).
pub fn agent_bin() -> String {
    expose(Path::new(BIN)).display().to_string()
}

/// A test directory the login user can traverse but not list (0711).
pub fn test_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

/// One request the fake OAuth server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub user_agent: String,
}

/// Authorize endpoint: `GET /authorize?redirect_uri=R&state=S` → 302 to `R?code=CODE&state=S`.
pub struct FakeOAuthServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

pub const CODE: &str = "c0de42";

impl FakeOAuthServer {
    pub fn start() -> FakeOAuthServer {
        Self::start_on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// On a listener bound elsewhere (another network namespace).
    pub fn start_on(l: TcpListener) -> FakeOAuthServer {
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let seen = s2.clone();
                std::thread::spawn(move || serve_one(conn, &seen));
            }
        });
        FakeOAuthServer { addr, seen }
    }

    pub fn authorize_url(&self) -> String {
        format!("http://{}/authorize", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_one(mut conn: TcpStream, seen: &Mutex<Vec<Seen>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut first = String::new();
    if r.read_line(&mut first).is_err() {
        return;
    }
    let mut ua = String::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("user-agent") {
                ua = v.trim().to_string();
            }
        }
    }
    let path = first.split(' ').nth(1).unwrap_or("").to_string();
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        user_agent: ua,
    });
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(guest_agent::oauth::callback::percent_decode)
    };
    let resp = match (path.starts_with("/authorize"), param("redirect_uri")) {
        (true, Some(redirect)) => format!(
            "HTTP/1.1 302 Found\r\nLocation: {redirect}?code={CODE}&state={}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            param("state").unwrap_or_default()
        ),
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    };
    let _ = conn.write_all(resp.as_bytes());
}

/// A virtual display; killed on drop.
pub struct Xvfb {
    pub display: String,
    child: Child,
}

impl Xvfb {
    /// Fails the test (does not skip) when Xvfb is not installed.
    ///
    /// Xvfb picks a free display number itself and prints it on `-displayfd` once it accepts
    /// connections: choosing the number here (first free socket/lock file) raced when two
    /// tests started at the same moment, both got the same number, and one test's browser
    /// died with the other test's Xvfb.
    pub fn start() -> Xvfb {
        let which = Command::new("sh")
            .args(["-c", "command -v Xvfb"])
            .output()
            .unwrap();
        assert!(
            which.status.success(),
            "Xvfb is not installed: `apt-get install -y xvfb` (the OAuth browser tests need a real display)"
        );
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x720x24",
                "-nolisten",
                "tcp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().expect("Xvfb stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).unwrap_or_default();
        match line.trim().parse::<u32>() {
            Ok(n) => Xvfb {
                display: format!(":{n}"),
                child,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("Xvfb did not print its display number within {WAIT:?} (got {line:?})");
            }
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium's command line for the tests; fails when chromium is not installed.
pub fn chromium(profile: &Path) -> Vec<String> {
    let which = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .unwrap();
    assert!(
        which.status.success(),
        "chromium is not installed: `apt-get install -y chromium` (the OAuth browser tests open the login page in it)"
    );
    [
        "chromium",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--password-store=basic",
        "--disable-dev-shm-usage",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// The agent's OAuth API on a loopback port.
pub struct Agent {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub oauth: Arc<OAuth>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `config` is oauth.toml; `{home}`, `{bin}`, `{fixture}`, `{dir}` are replaced.
    pub fn start(config: &str) -> Agent {
        ensure_login_user();
        let dir = test_dir();
        let text = config
            .replace("{home}", &dir.path().join("home").display().to_string())
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{bin}", &agent_bin())
            .replace("{fixture}", &fixture());
        let cfg = OAuthConfig::parse(&text, "oauth.toml").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let oauth = OAuth::new(cfg, &state);
                oauth.listen_shim().unwrap();
                let app = guest_agent::oauth::routes::router(oauth.clone())
                    .route_layer(axum::middleware::from_fn_with_state(
                        Arc::new(Some(TOKEN.to_string())),
                        guest_agent::serve::auth::require_token,
                    ))
                    .merge(guest_agent::oauth::routes::public(oauth.clone()));
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx
                    .send((l.local_addr().unwrap(), oauth.clone()))
                    .unwrap();
                axum::serve(l, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
                // Sessions still live are cancelled so no CLI outlives the test.
                for s in oauth.list() {
                    if !s.state.is_terminal() {
                        let _ = oauth.cancel(&s.session_id, "test over");
                    }
                }
                for _ in 0..100 {
                    if oauth.active_sessions() == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        });
        let (addr, oauth) = addr_rx.recv_timeout(WAIT).unwrap();
        Agent {
            addr,
            dir,
            oauth,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        http(self.addr, "GET", path, Some(TOKEN), None)
    }

    pub fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        http(self.addr, "POST", path, Some(TOKEN), Some(body))
    }

    pub fn session(&self, id: &str) -> serde_json::Value {
        let (code, v) = self.get(&format!("/v1/oauth/sessions/{id}"));
        assert_eq!(code, 200, "{v}");
        v
    }

    /// Polls the session until `pred` holds; panics with the session after [`WAIT`].
    pub fn wait_session(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let s = self.session(id);
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < WAIT,
                "waiting for {what}: session is {s:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_state(&self, id: &str, state: &str) -> serde_json::Value {
        self.wait_session(id, state, |s| s["state"] == state)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Plain HTTP/1.1 with an optional JSON body; returns status and JSON (or `{"text":…}`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{ctype}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (_, text) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let json = serde_json::from_str(text).unwrap_or_else(|_| serde_json::json!({ "text": text }));
    (status, json)
}

/// `true` while a process of group `pgid` is alive.
pub fn group_alive(pgid: i64) -> bool {
    guest_agent::oauth::pty::group_alive(pgid as i32)
}

/// Waits (bounded) until nothing of group `pgid` runs.
pub fn wait_group_gone(pgid: i64) {
    let start = Instant::now();
    while group_alive(pgid) {
        assert!(
            start.elapsed() < WAIT,
            "processes of group {pgid} still alive"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

mod serve;
#[allow(unused_imports)]
pub use serve::*;
