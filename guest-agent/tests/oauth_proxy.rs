//! The per-VM proxy (issue 14 item 6) on real parts. The test thread gets a network
//! namespace of its own (the "VM") joined by a veth to a second one (the "host"), where a
//! real proxy (Debian's `tinyproxy`) and the provider listen, as the fleet's proxy and the
//! real provider sit across the TAP. `serve` runs in the VM side with
//! `GUESTKIT_PROXY_GATEWAY_PORT` (what the supervisor exports for the old controller's
//! `decodo_port=N`): the login page goes through the proxy (its log shows the request), the
//! redirect to the CLI's loopback callback does not (the login completes), and the CLI has
//! the proxy variables. Without a default route the gateway is unknown: the console says so
//! naming `decodo_port` and the login starts direct. Fails (never skips) without root,
//! tinyproxy, Xvfb or Chromium.

mod oauth_support;

use oauth_support::*;
use serde_json::json;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOST_IP: &str = "10.77.0.1";
const VM_IP: &str = "10.77.0.2";
const PROXY_PORT: u16 = 3128;

fn ip(args: &[&str]) {
    let st = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (iproute2)");
    assert!(st.success(), "ip {args:?}");
}

/// The host side: a process holding a second network namespace.
struct HostSide {
    holder: Child,
}

impl HostSide {
    fn ns(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.id())
    }

    /// `cmd` run inside the host side's namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.ns())).arg("--").arg(program);
        c
    }

    /// A listener on `addr` inside the host side (bound from a thread that joins it).
    fn listen(&self, addr: &str) -> std::net::TcpListener {
        let ns = self.ns();
        let addr = addr.to_string();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).expect("host ns");
            // SAFETY: setns of this short-lived thread only, with an fd held open.
            let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            std::net::TcpListener::bind(&addr).expect("bind in the host side")
        })
        .join()
        .expect("listener thread")
    }
}

impl Drop for HostSide {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// This thread (and what it starts from now on) in a new network namespace, joined to a
/// second one by a veth; `default_route`: the host side is its gateway.
fn two_sides(default_route: bool) -> HostSide {
    assert!(
        is_root(),
        "the proxy test builds two network namespaces joined by a veth: run as root"
    );
    // SAFETY: unshare(2) of this thread's network namespace; no memory involved.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
    ip(&["link", "set", "lo", "up"]);
    let holder = Command::new("unshare")
        .args(["--net", "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");
    let host = HostSide { holder };
    let pid = host.holder.id().to_string();
    // The holder's namespace exists once unshare has exec'd sleep.
    let start = Instant::now();
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| !p.to_string_lossy().ends_with("sleep"))
        .unwrap_or(true)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "unshare never ran sleep"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    ip(&[
        "link", "add", "gkp0", "type", "veth", "peer", "name", "gkp1", "netns", &pid,
    ]);
    ip(&["addr", "add", &format!("{VM_IP}/24"), "dev", "gkp0"]);
    ip(&["link", "set", "gkp0", "up"]);
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["addr", "add", "10.77.0.1/24", "dev", "gkp1"],
        vec!["link", "set", "gkp1", "up"],
    ] {
        let st = host.command("ip").args(&args).status().expect("nsenter");
        assert!(st.success(), "host side: ip {args:?}");
    }
    if default_route {
        ip(&["route", "add", "default", "via", HOST_IP]);
    }
    host
}

/// tinyproxy on the host side, logging every request to `log`.
fn tinyproxy(host: &HostSide, dir: &std::path::Path) -> (Child, std::path::PathBuf) {
    let which = Command::new("sh")
        .args(["-c", "command -v tinyproxy"])
        .output()
        .expect("sh");
    assert!(
        which.status.success(),
        "tinyproxy is not installed: `apt-get install -y tinyproxy-bin` (cargo xtask test does)"
    );
    let log = dir.join("tinyproxy.log");
    std::fs::write(&log, "").unwrap();
    // tinyproxy drops to `nobody` as root; its log must stay writable.
    std::os::unix::fs::chown(&log, Some(65534), Some(65534)).unwrap();
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "User nobody\nGroup nogroup\nPort {PROXY_PORT}\nListen {HOST_IP}\nTimeout 30\n\
             LogFile \"{}\"\nLogLevel Info\nMaxClients 20\nAllow 10.77.0.0/24\n",
            log.display()
        ),
    )
    .unwrap();
    let child = host
        .command("tinyproxy")
        .args(["-d", "-c"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tinyproxy");
    // Listening once a connection from the VM side is accepted.
    let start = Instant::now();
    while std::net::TcpStream::connect((HOST_IP, PROXY_PORT)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "tinyproxy never listened; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, log)
}

fn environ(pid: u64) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn cmdline(pid: u64) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn config(browser: &[String], display: &str, authorize: &str) -> String {
    let browser: Vec<String> = browser.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"
home = "{{home}}"
display = "{display}"
browser = [{browser}]
shim_command = ["{{bin}}", "open-url"]
deadline_secs = 120

[providers.fake]
command = ["python3", "{{fixture}}", "--authorize", "{authorize}", "--creds", "~/.fake/creds.json"]
credential_paths = ["~/.fake/creds.json"]
required_keys = ["tokens"]
url_patterns = ['http://10\.77\.0\.1:\d+/authorize\?[^\s]+']
"#,
        browser = browser.join(", "),
    )
}

#[test]
fn the_login_page_goes_through_the_vms_proxy_and_the_callback_stays_direct() {
    let host = two_sides(true);
    let dir = test_dir();
    let (mut proxy, proxy_log) = tinyproxy(&host, dir.path());
    let fake = FakeOAuthServer::start_on(host.listen(&format!("{HOST_IP}:0")));
    let x = Xvfb::start();
    let profile = tempfile::tempdir().unwrap();
    give_to_login_user(profile.path());
    let s = RealServe::start_with(
        dir.path(),
        &config(&chromium(profile.path()), &x.display, &fake.authorize_url()),
        &[],
        &[(
            "GUESTKIT_PROXY_GATEWAY_PORT".to_string(),
            PROXY_PORT.to_string(),
        )],
    );
    let want = format!("http://{HOST_IP}:{PROXY_PORT}");
    let (code, body) = s.post("/auth/fake", json!({"sessionId": "px"}));
    assert_eq!(code, 200, "{body}");
    let started = s.wait_session("px", "awaiting_user", |v| {
        v["state"] == "awaiting_user" || v["state"] == "failed"
    });
    assert_eq!(
        started["state"],
        "awaiting_user",
        "{started:#}\n{}",
        s.log()
    );
    // The CLI has the proxy, with loopback direct.
    let cli = started["pid"].as_u64().expect("the CLI's pid");
    let env = environ(cli);
    for v in [
        format!("HTTP_PROXY={want}"),
        format!("https_proxy={want}"),
        "NO_PROXY=localhost,127.0.0.1,::1".to_string(),
    ] {
        assert!(
            env.contains(&v),
            "{v} not in the CLI's environment: {env:?}"
        );
    }
    // So has the browser, as a flag.
    let browser = started["browser"]["pid"].as_u64().expect("browser pid");
    let args = cmdline(browser);
    assert!(
        args.contains(&format!("--proxy-server={want}")),
        "browser {args:?}"
    );
    // The login completes: the page came through the proxy, the redirect to the CLI's
    // loopback callback went direct.
    let done = s.wait_session("px", "the end", |v| {
        v["state"] == "authenticated" || v["state"] == "failed" || v["state"] == "expired"
    });
    assert_eq!(done["state"], "authenticated", "{done:#}\n{}", s.log());
    let log = std::fs::read_to_string(&proxy_log).unwrap_or_default();
    let page = format!("GET {}?", fake.authorize_url());
    assert!(
        log.lines().any(|l| l.contains(&page)),
        "tinyproxy's log does not show the login page ({page}):\n{log}"
    );
    assert!(
        !log.contains("/callback?code="),
        "the callback went through the proxy:\n{log}"
    );
    assert!(
        fake.seen()
            .iter()
            .any(|h| h.path.starts_with("/authorize?")),
        "the provider never saw the page request"
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    eprintln!(
        "login through tinyproxy at {want}: {} proxied request(s)",
        log.matches("Request (file descriptor").count()
    );
}

#[test]
fn without_a_gateway_the_console_names_decodo_port_and_the_login_goes_direct() {
    let _host = two_sides(false);
    let dir = test_dir();
    let s = RealServe::start_with(
        dir.path(),
        &config(
            &[format!("{}/no-such-browser", dir.path().display())],
            ":4242",
            &format!("http://{HOST_IP}:9/authorize"),
        ),
        &[],
        &[(
            "GUESTKIT_PROXY_GATEWAY_PORT".to_string(),
            PROXY_PORT.to_string(),
        )],
    );
    let (code, body) = s.post("/auth/fake", json!({"sessionId": "direct"}));
    assert_eq!(code, 200, "{body}");
    let v = s.wait_session("direct", "a URL", |v| v["oauthUrl"].is_string());
    let env = environ(v["pid"].as_u64().expect("the CLI's pid"));
    assert!(!env.iter().any(|e| e.starts_with("HTTP_PROXY=")), "{env:?}");
    let log = s.log();
    assert!(
        log.contains(&format!(
            "proxy: decodo_port={PROXY_PORT}: there is no default route to take the gateway from; this login starts without a proxy"
        )),
        "{log}"
    );
}
