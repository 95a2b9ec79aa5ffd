//! OAuth from the host's side, all real binaries on loopback: `guest-agent serve` with an
//! oauth.toml naming the fake provider CLI (guest-agent/tests/fixtures), driven by
//! `guestctl oauth start|status|code|cancel` and `guestctl credentials`; `/health`
//! counts the live sessions. (The browser leg is guest-agent/tests/oauth_browser.rs.)

use guestkit_tests::bin;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "e2e-token";
const WAIT: Duration = Duration::from_secs(60);

struct Serve {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SIGTERM: serve cancels nothing itself, but its children are in their own groups;
        // the test ends every session it starts before this.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn fixture() -> PathBuf {
    guestkit_tests::bins::workspace_root().join("guest-agent/tests/fixtures/fake_login_cli.py")
}

/// What the images do: `useradd --system guestkit-login` (oauth.toml's default `run_as`).
fn ensure_login_user() {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    for _ in 0..50 {
        let known = std::fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("guestkit-login:"));
        if known {
            return;
        }
        // Other tests may hold /etc/passwd's lock: try again.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "guestkit-login",
            ])
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("cannot create the user guestkit-login with useradd");
}

fn start_serve() -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // As root the agent runs the CLIs as the login user (issue 12): it must exist, reach
    // HOME through this directory (0711) and not read the token (0600) or the state dir.
    ensure_login_user();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::write(d.join("token"), TOKEN).unwrap();
    std::fs::set_permissions(d.join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(d.join("cmdline"), "console=ttyS0\n").unwrap();
    let fx = fixture();
    let auth = "http://127.0.0.1:9/authorize"; // never contacted: no browser in this test
    std::fs::write(
        d.join("oauth.toml"),
        format!(
            r#"
home = "{home}"
display = ":4343"
browser = ["{d}/no-such-browser"]
shim_command = ["{agent}", "open-url"]
[providers.paste]
command = ["python3", "{fx}", "--paste", "--no-browser", "--authorize", "{auth}", "--creds", "~/.p/creds.json"]
credential_paths = ["~/.p/creds.json"]
required_keys = ["tokens"]
url_patterns = ['http://127\.0\.0\.1:\d+/authorize\?[^\s]+']
[providers.hanging]
command = ["python3", "{fx}", "--hang", "--no-browser", "--authorize", "{auth}", "--creds", "~/.h.json"]
credential_paths = ["~/.h.json"]
required_keys = ["tokens"]
[providers.failing]
command = ["python3", "{fx}", "--fail", "--authorize", "{auth}", "--creds", "~/.f.json"]
credential_paths = ["~/.f.json"]
required_keys = ["tokens"]
"#,
            home = d.join("home").display(),
            d = d.display(),
            agent = bin("guest-agent").display(),
            fx = fx.display(),
        ),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(bin("guest-agent"))
        .args(["serve", "--listen", &addr.to_string(), "--state-dir"])
        .arg(d.join("state"))
        .arg("--token-file")
        .arg(d.join("token"))
        .arg("--cmdline")
        .arg(d.join("cmdline"))
        .arg("--netinit-state")
        .arg(d.join("netinit.json"))
        .arg("--oauth-config")
        .arg(d.join("oauth.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let s = Serve { child, addr, dir };
    let start = Instant::now();
    while health(&s).is_none() {
        assert!(start.elapsed() < WAIT, "serve never answered /health");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

fn health(s: &Serve) -> Option<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let h = rt
        .block_on(host_client::GuestClient::new(s.addr).health())
        .ok()?;
    Some(serde_json::to_value(h).unwrap())
}

fn guestctl(s: &Serve, args: &[&str], token: bool) -> Output {
    let mut c = Command::new(bin("guestctl"));
    c.arg("--json").args(args);
    if token {
        c.arg("--token-file").arg(s.dir.path().join("token"));
    }
    c.env_remove("GUESTCTL_TOKEN");
    c.output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn status(s: &Serve, id: &str) -> serde_json::Value {
    let addr = s.addr.to_string();
    let o = guestctl(s, &["oauth", "status", &addr, id], true);
    assert!(o.status.success(), "{o:?}");
    json(&o)
}

fn wait_for(
    s: &Serve,
    id: &str,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = status(s, id);
        if f(&v) {
            return v;
        }
        assert!(start.elapsed() < WAIT, "waiting for {what}: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn guestctl_drives_an_oauth_login_end_to_end() {
    let s = start_serve();
    let addr = s.addr.to_string();
    assert_eq!(health(&s).unwrap()["activeSessions"], 0);

    // Without the token nothing starts.
    let o = guestctl(
        &s,
        &["oauth", "start", &addr, "paste", "--session-id", "e2e"],
        false,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("401"), "{o:?}");

    let o = guestctl(
        &s,
        &["oauth", "start", &addr, "paste", "--session-id", "e2e"],
        true,
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(json(&o)["sessionId"], "e2e");
    let v = wait_for(&s, "e2e", "the paste prompt", |v| {
        v["lastOutput"]
            .as_str()
            .is_some_and(|t| t.contains("Paste code here"))
    });
    assert!(v["oauthUrl"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:9/authorize?"));
    assert_eq!(health(&s).unwrap()["activeSessions"], 1);

    let o = guestctl(&s, &["oauth", "code", &addr, "e2e", "CODE-9"], true);
    assert!(o.status.success(), "{o:?}");
    wait_for(&s, "e2e", "authenticated", |v| {
        v["state"] == "authenticated"
    });
    assert_eq!(health(&s).unwrap()["activeSessions"], 0);

    let out = s.dir.path().join("creds-out.json");
    let o = guestctl(
        &s,
        &["credentials", &addr, "e2e", "--out", out.to_str().unwrap()],
        true,
    );
    assert!(o.status.success(), "{o:?}");
    let creds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(creds["tokens"]["access_token"], "tok-CODE-9");
    assert_eq!(mode(&out), 0o600);
    let o = guestctl(&s, &["credentials", &addr, "e2e"], false);
    assert!(!o.status.success());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("tok-CODE-9"));

    // Cancel: the session ends and says so.
    let o = guestctl(
        &s,
        &["oauth", "start", &addr, "hanging", "--session-id", "h1"],
        true,
    );
    assert!(o.status.success(), "{o:?}");
    let pid = json(&o)["pid"].as_i64().unwrap();
    let o = guestctl(&s, &["oauth", "cancel", &addr, "h1"], true);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(json(&o)["state"], "cancelled");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|st| st.contains(") Z "))
                .unwrap_or(true),
        "CLI {pid} still runs after cancel"
    );

    // A CLI that fails: `start --wait` exits 7 with the reason.
    let o = guestctl(
        &s,
        &[
            "oauth",
            "start",
            &addr,
            "failing",
            "--session-id",
            "f1",
            "--wait",
        ],
        true,
    );
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["state"], "failed");
    assert!(
        v["reason"].as_str().unwrap().contains("fake failure"),
        "{v}"
    );

    let o = guestctl(&s, &["oauth", "status", &addr], true);
    assert!(o.status.success());
    assert_eq!(json(&o)["sessions"].as_array().unwrap().len(), 3);
}
