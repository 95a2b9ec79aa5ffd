//! The old system's whole flow on real parts, inside the browser VM (issue 11): boot the test
//! variant of the golden image (the golden image plus a stand-in provider CLI and its
//! `oauth.toml` entry), start a login from the host, see the provider's page — served from
//! the host side of the TAP, as the real provider is reached across the network — in the
//! WebRTC stream decoded by a headless Chromium on the host side, click its authorize button
//! through the stream's input channel, and get the credentials. Then a fault mid-login: Xvfb
//! killed (the supervisor starts it again, the waiting login's Chromium goes with the X server
//! and its session reports it, and the stream comes back to the viewer page after a
//! reconnect); last, a browser in the host's own namespace plays the screen through the
//! `demo --keep` forwarder. Everything waits for events and pixels, never for a time.

use guest_proto::api::ServiceState;
use guest_proto::oauth::SessionState;
use guestkit_tests::vm::browser_flow::{test_variant, Pixel, Viewer};
use guestkit_tests::vm::fixture::{boot_browser, browser_boot_args, TestVm};
use guestkit_tests::vm::forward::Forwarder;
use guestkit_tests::vm::provider::{self, FakeProvider};
use guestkit_tests::vm::{boot::agent_addr, GUEST_IP};
use host_client::oauth::OAuthClient;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const TOKEN: &str = guestkit_tests::vm::boot::TEST_TOKEN;
const DEADLINE: Duration = Duration::from_secs(420);
const WIDTH: u16 = 640;
const HEIGHT: u16 = 360;

fn oauth() -> OAuthClient {
    OAuthClient::new(agent_addr()).with_token(Some(TOKEN.into()))
}

fn session(t: &TestVm, id: &'static str) -> guest_proto::oauth::SessionInfo {
    t.vm.net
        .run(move || async move { oauth().session(id).await })
        .expect("namespace")
        .unwrap_or_else(|e| panic!("GET session {id}: {e}"))
}

/// Polls the session until `done` says so; the session at the end.
fn wait_session(
    t: &TestVm,
    id: &'static str,
    what: &str,
    done: impl Fn(&guest_proto::oauth::SessionInfo) -> bool,
) -> guest_proto::oauth::SessionInfo {
    let end = Instant::now() + DEADLINE;
    loop {
        let s = session(t, id);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "session {id}: gave up waiting for {what}: {s:#?}\n--- console ---\n{}",
            t.vm.console()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn login_in_the_browser_vm_seen_and_clicked_through_the_stream_from_the_host() {
    let display = format!("{WIDTH}x{HEIGHT}");
    let args = browser_boot_args(&[("guest_agent.display", &display)]);
    let (t, _image) = boot_browser(&test_variant().expect("test variant"), &args);
    let provider = FakeProvider::start(
        &t.vm.net.ns.path(),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 100, 1)), provider::PORT),
    )
    .expect("provider on the host side of the TAP");
    let booted = Instant::now();
    if let Err(e) = t.vm.wait(DEADLINE) {
        panic!(
            "browser VM not ready: {e}\n--- console ---\n{}",
            t.vm.console()
        );
    }

    // 1. A login: the CLI's URL reaches the VM's Chromium through the shim.
    let started = Instant::now();
    let s =
        t.vm.net
            .run(|| async { oauth().start("fake", Some("vm-login-1")).await })
            .expect("namespace")
            .expect("POST /v1/oauth/sessions");
    assert_eq!(s.session_id, "vm-login-1");
    let s = wait_session(&t, "vm-login-1", "awaiting_user", |s| {
        s.state == SessionState::AwaitingUser || s.state.is_terminal()
    });
    assert_eq!(s.state, SessionState::AwaitingUser, "{s:#?}");
    assert_eq!(s.url_source.as_deref(), Some("shim"), "{s:#?}");
    assert!(
        s.oauth_url
            .as_deref()
            .unwrap_or("")
            .starts_with(&provider.authorize_url()),
        "{s:#?}"
    );
    // The VM's Chromium asks the provider (across the TAP) for the page. The viewer joins
    // after that: under software emulation a streamer already capturing takes the CPU a
    // starting Chromium needs (seen: a blank window for minutes), and a user opens the
    // viewer before or after a login starts alike.
    let end = Instant::now() + DEADLINE;
    let hit = loop {
        if let Some(h) = provider
            .seen()
            .into_iter()
            .find(|h| h.path.starts_with("/authorize?"))
        {
            break h;
        }
        assert!(
            Instant::now() < end,
            "the VM's Chromium never requested the login page\n--- console ---\n{}",
            t.vm.console()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(hit.user_agent.contains("chrome/"), "{hit:?}");
    eprintln!(
        "login page requested by the VM's Chromium {:?} after the login started",
        started.elapsed()
    );

    // 2. The viewer on the host decodes the VM's screen at the size the command line set.
    let mut viewer = Viewer::open(&t.vm.net).expect("viewer chromium");
    let first = wait_pixel(&t, &mut viewer, "a first frame", |p| {
        p.frames > 0 && p.w > 0
    });
    eprintln!(
        "first frame on the host {:?} after ready; {first:?}",
        booted.elapsed()
    );
    assert_eq!(first.w, u64::from(WIDTH), "{first:?}");

    // 3. The provider's page is in the stream.
    let page = wait_pixel(&t, &mut viewer, "the provider's page", |p| {
        p.is_page_colour()
    });
    eprintln!(
        "login page visible in the stream {:?} after the login started: {page:?}",
        started.elapsed()
    );

    // 4. The user clicks "Authorize" in the stream; the CLI gets the callback. A person
    // whose click did nothing clicks again while the page is still there, and so does the
    // test (under software emulation a CI run once lost its only click); how many clicks it
    // took is printed.
    let mut clicks = 0;
    let s = loop {
        let state = viewer
            .click(WIDTH / 2, HEIGHT / 2)
            .expect("click through the input channel");
        assert_eq!(state, "open", "the input channel is not open");
        clicks += 1;
        let end = Instant::now() + Duration::from_secs(45);
        let s = loop {
            let s = session(&t, "vm-login-1");
            if s.state.is_terminal() || Instant::now() > end {
                break s;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let still_page = viewer
            .sample(WIDTH / 2, HEIGHT / 5)
            .is_some_and(|p| p.is_page_colour());
        // What the streamer injected, to tell a lost click from a page that ignored it.
        let (_, status) = http_get(&t, "/webrtc/status");
        let input = serde_json::from_str::<serde_json::Value>(&status)
            .map(|v| v["input"].to_string())
            .unwrap_or(status);
        eprintln!(
            "click {clicks}: session {:?}, page still shown: {still_page}, streamer input: {input}",
            s.state
        );
        if s.state.is_terminal() || !still_page || clicks == 5 {
            break wait_session(&t, "vm-login-1", "authenticated", |s| s.state.is_terminal());
        }
    };
    assert_eq!(s.state, SessionState::Authenticated, "{s:#?}");
    let creds =
        t.vm.net
            .run(|| async { oauth().credentials("vm-login-1").await })
            .expect("namespace")
            .expect("GET /credentials/get");
    let text = serde_json::to_string(&creds).expect("json");
    assert!(text.contains(&format!("tok-{}", provider::CODE)), "{text}");
    let (code, body) = http_get(&t, "/credentials/status?sessionId=vm-login-1");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"authenticated\":true"), "{body}");

    // 5. Mid-login (a second session waiting on its page), Xvfb is killed: the supervisor's
    // restart route ends it like a crash (the X server goes, its clients with it) and the
    // supervisor starts it again; openbox and the streamer come back.
    t.vm.net
        .run(|| async { oauth().start("fake", Some("vm-login-2")).await })
        .expect("namespace")
        .expect("second login");
    // Its Chromium is up (it asked for the page) before the X server goes: a Chromium still
    // starting under TCG would simply connect to the new X server and lose nothing.
    let end = Instant::now() + DEADLINE;
    while provider
        .seen()
        .iter()
        .filter(|h| h.path.starts_with("/authorize?"))
        .count()
        < 2
    {
        assert!(
            Instant::now() < end,
            "the second login's Chromium never requested the page\n--- console ---\n{}",
            t.vm.console()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_pixel(&t, &mut viewer, "the provider's page again", |p| {
        p.is_page_colour()
    });
    let xvfb_pid = service_pid(&t, "xvfb");
    t.vm.client(|c| async move {
        c.with_token(Some(TOKEN.into()))
            .restart_service("xvfb")
            .await
    })
    .expect("namespace")
    .expect("restart xvfb");
    wait_services(&t, |h| {
        let running = |n: &str| {
            h.services
                .iter()
                .any(|s| s.name == n && s.state == ServiceState::Running)
        };
        let pid = h
            .services
            .iter()
            .find(|s| s.name == "xvfb")
            .and_then(|s| s.pid);
        pid.is_some() && pid != Some(xvfb_pid) && running("webrtc") && running("openbox")
    });
    // The VM's Chromium of the waiting login went with the X server: the session says so
    // (the user is no longer looking at the login page), while it stays live.
    let gone = wait_session(&t, "vm-login-2", "its browser reported gone", |s| {
        s.browser.as_ref().is_some_and(|b| b.error.is_some()) || s.state.is_terminal()
    });
    let why = gone
        .browser
        .as_ref()
        .and_then(|b| b.error.clone())
        .unwrap_or_default();
    assert!(
        why.contains("chromium ended ("),
        "the session should report its browser gone: {gone:#?}"
    );
    eprintln!(
        "session vm-login-2 after Xvfb went: browser error {why:?}, state {:?}",
        gone.state
    );
    // The stream comes back to the same viewer page after a reconnect.
    let reconnected = Instant::now();
    viewer.reload().expect("reload the viewer");
    let back = wait_pixel(&t, &mut viewer, "frames after Xvfb came back", |p| {
        p.frames > 0
    });
    eprintln!(
        "stream back {:?} after the viewer reconnected: {back:?}",
        reconnected.elapsed()
    );

    // 6. The viewer a person opens on the host itself (`cargo xtask demo --keep`): a browser
    // in the host's own namespace, which cannot route to the VM's bridge, plays the screen
    // through the forwarder (HTTP, and the stream's UDP relayed from loopback ports).
    let fwd = Forwarder::start(
        std::path::Path::new(&t.vm.net.ns.path()),
        SocketAddr::new(IpAddr::V4(GUEST_IP), 8080),
        0,
    )
    .expect("forwarder");
    let url = format!("http://127.0.0.1:{}/viewer#token={TOKEN}", fwd.port);
    let opened = Instant::now();
    let mut host_viewer =
        Viewer::open_url(std::process::Command::new("chromium"), &url).expect("host chromium");
    let on_host = host_viewer
        .wait(WIDTH / 2, HEIGHT / 5, DEADLINE, |p| p.frames > 0 && p.w > 0)
        .unwrap_or_else(|last| {
            panic!(
                "the host's own browser never decoded a frame through the forwarder; last \
                 sample {last:?}\n--- console ---\n{}",
                t.vm.console()
            )
        });
    assert_eq!(on_host.w, u64::from(WIDTH), "{on_host:?}");
    eprintln!(
        "a browser in the host's namespace decoded frames through the forwarder {:?} after \
         it opened {url}: {on_host:?}",
        opened.elapsed()
    );
}

/// Samples the stream above the page's centred title until `want` holds.
fn wait_pixel(t: &TestVm, v: &mut Viewer, what: &str, want: impl Fn(&Pixel) -> bool) -> Pixel {
    v.wait(WIDTH / 2, HEIGHT / 5, DEADLINE, want)
        .unwrap_or_else(|last| {
            panic!(
                "the stream never showed {what}; last sample {last:?}\n--- console ---\n{}",
                t.vm.console()
            )
        })
}

fn service_pid(t: &TestVm, name: &str) -> u32 {
    let h = t.vm.health().expect("GET /health");
    h.services
        .iter()
        .find(|s| s.name == name && s.state == ServiceState::Running)
        .and_then(|s| s.pid)
        .unwrap_or_else(|| panic!("{name} not running: {:#?}", h.services))
}

fn wait_services(t: &TestVm, ok: impl Fn(&guest_proto::api::HealthResponse) -> bool) {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Ok(h) = t.vm.health() {
            if ok(&h) {
                return;
            }
        }
        assert!(
            Instant::now() < end,
            "services never got there:\n{}",
            t.vm.console()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A plain GET of the agent with the token, from the host side (the old controller's routes).
fn http_get(t: &TestVm, path: &'static str) -> (u16, String) {
    t.vm.net
        .run(move || async move {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(agent_addr()).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {GUEST_IP}:8080\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
            )
            .expect("send");
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            let code = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
            (code, body)
        })
        .expect("namespace")
}
